//! coturn on one machine (feature `calls`): the settings Kubernetes passes as arguments
//! (`mxstack_topology::coturn`), written as its config file. The file holds the TURN secret, so
//! it is mode 0600, as every secret file of the local stack.

use mxstack_topology::coturn::{settings, Setting};
use mxstack_topology::registry as reg;
use mxstack_topology::Addressing;

use mxstack_spec::SecretName;

use crate::parts::{file, Out, Parts, Readiness, Service};

/// Adds coturn's config file and process.
pub(crate) fn part(c: &Parts, out: &mut Out) {
    let Some(turnserver) = c.programs.turnserver.clone() else {
        // `up` refuses to start without it (runtime:calls in scripts/deps.txt).
        return;
    };
    let turn = c.addr.turn(c.config);
    let dir = c.layout.root.join("coturn");
    let mut text = String::from(
        "# Written by `mxstack up`: the settings the Kubernetes coturn gets as arguments.\n",
    );
    for s in settings(c.t, &turn) {
        text += &match s {
            Setting::Flag(k) => k.to_string(),
            Setting::Value(k, v) => format!("{k}={v}"),
            Setting::Secret(k) => {
                // During a rotation coturn accepts the old secret too (it checks every
                // static-auth-secret line), so credentials Synapse handed out stay valid.
                let mut line = format!("{k}={}", c.secrets.get(SecretName::TurnSharedSecret));
                if let Some(old) = c.secrets.previous(SecretName::TurnSharedSecret) {
                    line += &format!("\n{k}={old}");
                }
                line
            }
        };
        text.push('\n');
    }
    // The process model: its user database (unused with REST credentials, but always opened)
    // and pid file under the state directory instead of /var.
    text += &format!(
        "userdb={}\npidfile={}\nsimple-log\n",
        dir.join("turndb").display(),
        dir.join("turnserver.pid").display()
    );
    let conf = dir.join("turnserver.conf");
    out.files.push(file(conf.clone(), text, 0o600));
    let port = turn.public.port;
    out.services.push(
        Service::process(
            reg::coturn::COMPONENT.name().into(),
            turnserver,
            vec!["-c".into(), conf.display().to_string()],
            Readiness::Tcp { port },
        )
        .shown_port(port),
    );
}

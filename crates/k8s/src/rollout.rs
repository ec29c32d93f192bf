//! Pods restart when a secret they read changes (`mxstack rotate --kubernetes`, then `deploy`):
//! every pod template carries `mxstack.io/secrets-hash`, a hash over the values of the secrets its
//! registry component declares it reads (`reads`), so rotating one secret changes the template of
//! exactly the workloads that read it, and Kubernetes rolls those and no other. The annotation
//! holds a hash, never a value.

use mxstack_spec::Secrets;
use mxstack_topology::registry::{self, Component, Selector};
use serde_json::Value;

use crate::RenderedObject;
use sha2::{Digest, Sha256};

pub const SECRETS_HASH: &str = "mxstack.io/secrets-hash";

/// The registry component whose pods these are: the most specific selector wins (Synapse's main
/// over Synapse), as `tests/secrets_read.rs` decides it.
pub fn component_of(labels: &Value) -> Option<&'static Component> {
    let name = labels["app.kubernetes.io/name"].as_str()?;
    let group = labels["mxstack.io/group"].as_str();
    let specific = registry::ALL.iter().copied().find(|c| {
        matches!(c.selector, Selector::SynapseGroup(g)
            if name == registry::synapse::COMPONENT.name() && group == Some(g))
    });
    specific.or_else(|| {
        registry::ALL
            .iter()
            .copied()
            .find(|c| c.selector == Selector::Name && c.name() == name)
    })
}

/// The pod template of a workload object, if it has one.
fn template(o: &mut Value) -> Option<&mut Value> {
    let t = match o["kind"].as_str()? {
        "Deployment" | "StatefulSet" | "DaemonSet" | "Job" => &mut o["spec"]["template"],
        "CronJob" => &mut o["spec"]["jobTemplate"]["spec"]["template"],
        _ => return None,
    };
    t.is_object().then_some(t)
}

/// The hash of the values of every secret `c` reads (empty when it reads none).
pub fn secrets_hash(c: &Component, secrets: &Secrets) -> Option<String> {
    if c.reads.is_empty() {
        return None;
    }
    // SHA-256, not the configs' FNV fingerprint: the input is secret, the output is public.
    let mut h = Sha256::new();
    for n in c.reads {
        h.update(n.key().as_bytes());
        h.update([0]);
        // The side that accepts two values renders the set it accepts: it rolls when the new
        // value comes and when the old one goes, not when its readers switch (the same set);
        // its readers roll once, at the switch (docs/ROTATION.md).
        let mut values = if c.accepts_previous.contains(n) {
            secrets.accepted(*n)
        } else {
            vec![secrets.get(*n)]
        };
        values.sort_unstable();
        for v in values {
            h.update(v.as_bytes());
            h.update([0]);
        }
    }
    let digest = h.finalize();
    Some(digest[..12].iter().map(|b| format!("{b:02x}")).collect())
}

/// Adds the annotation to every pod template whose component reads a secret.
pub fn annotate(objects: &mut [RenderedObject], secrets: &Secrets) {
    for o in objects {
        let Some(t) = template(&mut o.value) else {
            continue;
        };
        let Some(c) = component_of(&t["metadata"]["labels"]) else {
            continue;
        };
        let Some(hash) = secrets_hash(c, secrets) else {
            continue;
        };
        let meta = &mut t["metadata"];
        if !meta["annotations"].is_object() {
            meta["annotations"] = Value::Object(Default::default());
        }
        meta["annotations"][SECRETS_HASH] = Value::String(hash);
    }
}

//! `mxstack verify`: builds the verify target (a local stack from its state, or `--url`) from
//! the model and prints the report (crates/verify).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use mxstack_local::{StackStatus, StateLayout};
use mxstack_spec::{Config, SecretName, Secrets};
use mxstack_topology::registry::{self as reg, Scrape};
use mxstack_topology::{coturn, Addressing};
use mxstack_verify::{Endpoint, LocalEndpoints, Secret, Target};

type CmdResult = Result<ExitCode, String>;

/// `mxstack verify`'s options (docs/VERIFY.md).
#[derive(clap::Args)]
pub struct Args {
    /// The deployment's mxstack.yaml (the model: what to check).
    #[arg(long)]
    pub config: PathBuf,
    /// The deployment's client URL (e.g. https://matrix.acme.eu) [default: the local stack
    /// `mxstack up` started for this config].
    #[arg(long)]
    pub url: Option<String>,
    /// The local stack's state directory [default: .mxstack-state next to the config].
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Secrets file, for the registration shared secret [default: secrets.yaml next to the
    /// config].
    #[arg(long)]
    pub secrets: Option<PathBuf>,
    /// An extra trusted CA certificate (PEM), e.g. a private CA; repeatable.
    #[arg(long)]
    pub ca: Vec<PathBuf>,
    /// Send every hostname of the deployment to this IP address instead of resolving it
    /// (before DNS points at the edge, or to test one edge replica).
    #[arg(long, value_name = "IP")]
    pub connect_to: Option<IpAddr>,
    /// Prometheus' URL, to check its scrape targets (a cluster; e.g. through kubectl
    /// port-forward).
    #[arg(long, value_name = "URL")]
    pub prometheus: Option<String>,
    /// li-sync's URL, to check the LI replica's lag (a cluster; e.g. through kubectl
    /// port-forward).
    #[arg(long, value_name = "URL")]
    pub li_sync: Option<String>,
    #[arg(long)]
    pub json: bool,
}

pub fn verify(a: &Args) -> CmdResult {
    let (config, _) = Config::load(&a.config).map_err(|e| e.to_string())?;
    let secrets_path = a.secrets.clone().unwrap_or_else(|| {
        a.config
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .join("secrets.yaml")
    });
    let registration_secret = match Secrets::load(&secrets_path) {
        Ok(s) => Some(Secret::new(s.get(SecretName::RegistrationSharedSecret))),
        Err(_) if a.secrets.is_none() && !secrets_path.exists() => None,
        Err(e) => return Err(e.to_string()),
    };
    let mut extra_ca = Vec::new();
    for p in &a.ca {
        extra_ca
            .push(std::fs::read(p).map_err(|e| format!("cannot read --ca {}: {e}", p.display()))?);
    }
    let (client_url, local, turn_uris) = match &a.url {
        Some(url) => {
            let k8s = mxstack_k8s::KubernetesAddressing::new(&config);
            (
                url.trim_end_matches('/').to_string(),
                None,
                coturn::uris(&k8s.turn(&config)),
            )
        }
        None => local_target(&config, &a.config, a.state.as_deref())?,
    };
    let target = Target {
        config,
        client_url,
        turn_uris,
        local,
        registration_secret,
        prometheus: a.prometheus.clone(),
        li_sync: a.li_sync.clone(),
        extra_ca,
        connect_to: a.connect_to,
    };
    let start = Instant::now();
    let report = mxstack_verify::verify(&target, &mut |r| {
        eprintln!(
            "[{:>4}s] {} {:<4} {}",
            start.elapsed().as_secs(),
            r.id,
            r.status.as_str(),
            r.title
        );
    })
    .map_err(|e| e.to_string())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("report"));
    } else {
        print!("{}", report.table());
    }
    Ok(ExitCode::from(report.exit_code()))
}

/// The stack `mxstack up` started for this config: its client URL from its state, and the
/// addresses of what Prometheus would scrape from the same allocation `up` made.
fn local_target(
    config: &Config,
    path: &Path,
    state: Option<&Path>,
) -> Result<(String, Option<LocalEndpoints>, Vec<String>), String> {
    let layout = StateLayout::for_config(path, state);
    let status = StackStatus::load(&layout.status_file())
        .filter(|s| s.phase == "ready")
        .ok_or_else(|| format!("no running local stack for {} (start it with `mxstack up`, or give --url for a deployment elsewhere)", path.display()))?;
    let shape = layout.shape().ok_or(
        "no record of how the stack was started (up-args.json): start it with `mxstack up`",
    )?;
    let names: Vec<&str> = status.processes.iter().map(|p| p.name.as_str()).collect();
    let (t, addr) = mxstack_local::plan::local_topology(config, &layout, &shape);
    let processes = t.processes();
    let url = |hp: mxstack_topology::HostPort, path: &str| {
        format!("http://{}:{}{path}", hp.host, hp.port)
    };
    let scrape_path = |c: &reg::Component| match c.scrape {
        Some(Scrape::Service { path, .. }) => path,
        _ => "/metrics",
    };
    let mut local = LocalEndpoints::default();
    for p in &processes {
        if !names.contains(&p.name.as_str()) {
            return Err(format!(
                "the running stack has no {} (was it started from another config?)",
                p.name
            ));
        }
        local.synapse_metrics.push(Endpoint {
            name: p.name.clone(),
            url: url(addr.metrics(p), scrape_path(&reg::synapse::COMPONENT)),
        });
    }
    if names.contains(&"content-scanner") {
        let c = &reg::content_scanner::COMPONENT;
        local.scanner_metrics = Some(Endpoint {
            name: "content-scanner".into(),
            url: url(addr.content_scanner(), scrape_path(c)),
        });
        let ready = c.health.map(|h| h.ready).unwrap_or("/ready");
        local.scanner_ready = Some(Endpoint {
            name: "content-scanner".into(),
            url: url(addr.content_scanner(), ready),
        });
    }
    if names.contains(&"prometheus") {
        local.prometheus = Some(Endpoint {
            name: "prometheus".into(),
            url: url(addr.prometheus(), ""),
        });
    }
    if names.contains(&"li-sync") {
        local.li_sync_status = Some(Endpoint {
            name: "li-sync".into(),
            url: url(addr.li_sync(), "/status"),
        });
    }
    Ok((
        status.client_url,
        Some(local),
        coturn::uris(&addr.turn(config)),
    ))
}

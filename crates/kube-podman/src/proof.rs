//! A whole run-proof: the rendered objects' workloads started in waves (each wave ready before
//! the next, as `deploy` waits between phases), with the CloudNativePG stand-in for every
//! `Cluster`, on a network and DNS of the proof's own.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::cluster::{Cluster, Pod};
use crate::cnpg_standin;
use crate::run::{Harness, RunError};
use crate::translate::{self, Options, PodRun};
use crate::Error;

/// The application layer of the run-proof (issue 18), wave by wave.
pub const APPLICATION_WAVES: &[&[&str]] = &[
    &["valkey", "clamav", "seaweedfs-master"],
    &[
        "valkey-master",
        "seaweedfs-volume",
        "seaweedfs-filer",
        "li-prepare-main",
    ],
    &["seaweedfs-buckets"],
    &["synapse-main"],
    &[
        "synapse-synchrotron",
        "synapse-generic",
        "synapse-media",
        "synapse-event-persister",
        "synapse-pusher",
        "synapse-background",
        "synapse-stream-writer",
    ],
    &[
        "content-scanner",
        "synapse-router",
        "li-sync",
        "key-vault",
        "li-console",
    ],
];

#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error(transparent)]
    Translate(#[from] Error),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("workload `{0}` is not among the rendered objects")]
    NoWorkload(String),
}

#[derive(Debug, Clone)]
pub struct ProofOptions {
    pub namespace: String,
    /// The /24 the proof's network uses (`a.b.c.0`).
    pub subnet: Ipv4Addr,
    pub network: String,
    pub work: PathBuf,
    pub prefix: String,
    /// Image as rendered -> image built here.
    pub images: BTreeMap<String, String>,
    pub postgres_image: String,
    /// Workload names, wave by wave.
    pub waves: Vec<Vec<String>>,
    /// How long one wave may take to become ready.
    pub wave_limit: Duration,
    /// Files an operator puts into claims before the pods start (claim -> file -> content),
    /// e.g. the antivirus signatures of an air-gapped site.
    pub seed_claims: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

/// A running proof; dropping it removes everything it started.
pub struct Proof {
    pub harness: Harness,
    pub cluster: Cluster,
    pub pods: Vec<Pod>,
    pub runs: BTreeMap<String, PodRun>,
}

fn random_password() -> String {
    let mut bytes = [0u8; 18];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("/dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Proof {
    /// Starts everything `o.waves` names; `progress` hears each step.
    pub fn up(
        objects: &[Value],
        o: &ProofOptions,
        progress: &dyn Fn(&str),
    ) -> Result<Proof, ProofError> {
        let mut cluster = Cluster::from_objects(&o.namespace, objects)?;
        let wanted: Vec<&String> = o.waves.iter().flatten().collect();
        for w in &wanted {
            if !cluster.workloads.iter().any(|x| &&x.name == w) {
                return Err(ProofError::NoWorkload((*w).clone()));
            }
        }
        let s = o.subnet.octets();
        let at = |n: u8| Ipv4Addr::new(s[0], s[1], s[2], n);
        let pods = cluster.pods(at(20), |w| wanted.contains(&&w.name));
        cluster.check_service_ports(&pods)?;
        let opts = Options {
            network: o.network.clone(),
            dns: at(1),
            host_ip: at(1),
            work: o.work.clone(),
            prefix: o.prefix.clone(),
            images: o.images.clone(),
            nofile: translate::hard_nofile(),
        };
        // The stand-ins first: their superuser Secrets are what CloudNativePG would create.
        let mut standins = Vec::new();
        let mut records = BTreeMap::new();
        for (i, pg) in cnpg_standin::clusters(objects).into_iter().enumerate() {
            let password = random_password();
            if let Some((name, data)) = pg.superuser_secret(&password) {
                cluster.secrets.insert(name, data);
            }
            let ip = at(2 + i as u8);
            for n in pg.service_names(&o.namespace) {
                records.insert(n, vec![ip]);
            }
            standins.push(pg.pod(&cluster, ip, &o.postgres_image, &password, &opts));
        }
        records.extend(cluster.dns(&pods));
        // A proof starts from nothing: claims of an earlier run would hide a missing step.
        let _ = std::fs::remove_dir_all(&o.work);
        let mut harness = Harness::new(opts.clone(), o.subnet)?;
        for (claim, files) in &o.seed_claims {
            let dir = o.work.join("claims").join(claim);
            for (name, bytes) in files {
                let path = dir.join(name);
                std::fs::create_dir_all(&dir)
                    .and_then(|_| std::fs::write(&path, bytes))
                    .map_err(|source| RunError::Io { path, source })?;
            }
        }
        harness.serve_dns(&records)?;
        for run in &standins {
            progress(&format!("starting {} (CloudNativePG stand-in)", run.name));
            harness.start(run)?;
        }
        for run in &standins {
            harness.wait_ready(run, o.wave_limit)?;
        }
        let mut runs = BTreeMap::new();
        for wave in &o.waves {
            let mut started = Vec::new();
            for p in pods.iter().filter(|p| wave.contains(&p.workload.name)) {
                let run = translate::pod(&cluster, p, &opts)?;
                if p.workload.kind == "Job" {
                    progress(&format!("running job {}", p.name));
                    harness.run_job(&run, 10)?;
                } else {
                    progress(&format!("starting {}", p.name));
                    harness.start(&run)?;
                    started.push(run.clone());
                }
                runs.insert(p.name.clone(), run);
            }
            for run in &started {
                harness.wait_ready(run, o.wave_limit)?;
                progress(&format!("ready {}", run.name));
            }
        }
        Ok(Proof {
            harness,
            cluster,
            pods,
            runs,
        })
    }

    /// A pod's address.
    pub fn ip(&self, pod: &str) -> Option<Ipv4Addr> {
        self.pods.iter().find(|p| p.name == pod).map(|p| p.ip)
    }
}

/// Rendered image -> the image built here for the same `images.<field>` of the config.
pub fn images_from_lock(
    images: &mxstack_spec::Images,
    lock: &mxstack_images::Lock,
) -> BTreeMap<String, String> {
    let fields = serde_json::to_value(images).expect("images serialise");
    lock.images
        .values()
        .filter_map(|e| {
            let rendered = fields[e.serves.as_str()].as_str()?;
            Some((rendered.to_string(), e.reference.clone()))
        })
        .collect()
}

//! `mxstack-run-proof`: renders a site and runs its application layer as podman containers
//! (see README.md). Prints one JSON line when everything is ready (the pods' addresses), then
//! keeps it running until its standard input closes, and removes everything it started.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use mxstack_kube_podman::cnpg_standin;
use mxstack_kube_podman::proof::{self, Proof, ProofOptions, APPLICATION_WAVES};
use mxstack_spec::{Config, Secrets};
use mxstack_topology::{antivirus, Topology};
use serde_json::json;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    config: PathBuf,
    /// [default: secrets.yaml next to the config]
    #[arg(long)]
    secrets: Option<PathBuf>,
    /// Scratch directory (volume files, claims): emptied first.
    #[arg(long)]
    work: PathBuf,
    /// The /24 of the proof's own network, e.g. 10.89.7.0.
    #[arg(long)]
    subnet: Ipv4Addr,
    /// Prefix of every podman object it makes.
    #[arg(long, default_value = "rp-")]
    prefix: String,
    /// The lock `mxstack images build` wrote: each image the config names runs as the one
    /// built here for the same `images.<field>`.
    #[arg(long)]
    lock: PathBuf,
    /// RENDERED=LOCAL: also run LOCAL where the manifests name RENDERED (repeatable).
    #[arg(long = "image")]
    images: Vec<String>,
    /// Seconds one wave may take to become ready.
    #[arg(long, default_value_t = 300)]
    wave_limit: u64,
}

fn main() {
    let a = Args::parse();
    let result = run(&a);
    if let Err(e) = result {
        println!("{}", json!({ "ready": false, "error": e }));
        std::process::exit(1);
    }
}

fn run(a: &Args) -> Result<(), String> {
    let (config, _) = Config::load(&a.config).map_err(|e| e.to_string())?;
    let secrets_path = a
        .secrets
        .clone()
        .unwrap_or_else(|| a.config.with_file_name("secrets.yaml"));
    let secrets = Secrets::load(&secrets_path).map_err(|e| e.to_string())?;
    let objects: Vec<_> = mxstack_k8s::render(&Topology::build(&config), &secrets)
        .objects
        .into_iter()
        .map(|o| o.value)
        .collect();
    let lock = mxstack_images::Lock::load(&a.lock).map_err(|e| e.to_string())?;
    let mut images = proof::images_from_lock(&config.images, &lock);
    for s in &a.images {
        let (r, l) = s
            .split_once('=')
            .ok_or_else(|| format!("--image {s}: write RENDERED=LOCAL"))?;
        images.insert(r.into(), l.into());
    }
    let base = lock
        .base
        .as_ref()
        .ok_or("the lock names no base image: run `mxstack images build` first")?;
    let postgres_image = cnpg_standin::image(&base.reference).map_err(|e| e.to_string())?;
    let o = ProofOptions {
        namespace: config.namespace.clone(),
        subnet: a.subnet,
        network: format!("{}net", a.prefix),
        work: a.work.clone(),
        prefix: a.prefix.clone(),
        images,
        postgres_image,
        waves: APPLICATION_WAVES
            .iter()
            .map(|w| w.iter().map(|s| s.to_string()).collect())
            .collect(),
        wave_limit: Duration::from_secs(a.wave_limit),
        // An air-gapped site's operator copies the signatures into the claim; here they are
        // the test signature set the local stack uses (EICAR).
        seed_claims: [(
            "clamav-signatures".to_string(),
            [(
                antivirus::TEST_SIGNATURE_FILE.to_string(),
                antivirus::EICAR_TEST_SIGNATURE.as_bytes().to_vec(),
            )]
            .into(),
        )]
        .into(),
    };
    let proof = Proof::up(&objects, &o, &|step| eprintln!("run-proof: {step}"))
        .map_err(|e| e.to_string())?;
    let pods: BTreeMap<&str, String> = proof
        .pods
        .iter()
        .map(|p| (p.name.as_str(), p.ip.to_string()))
        .collect();
    let port = mxstack_topology::registry::router::HTTP.number;
    let router = proof
        .ip("synapse-router-0")
        .map(|ip| format!("http://{ip}:{port}"));
    println!(
        "{}",
        json!({ "ready": true, "router": router, "pods": pods })
    );
    // Runs until whoever started it closes our standard input (or dies).
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(proof);
    Ok(())
}

//! Renders a sample deployment into a directory: `cargo run -p mxstack-k8s --example render -- <dir> [tier]`.

use mxstack_spec::{Config, Feature, Secrets, Tier};
use mxstack_topology::Topology;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "rendered".into());
    let tier: Tier = args
        .next()
        .as_deref()
        .unwrap_or("1k")
        .parse()
        .expect("tier");
    let config = Config::new("acme.test", tier, Feature::ALL.into_iter().collect());
    let secrets = Secrets::generate_all().expect("randomness");
    let rendered = mxstack_k8s::render(&Topology::build(&config), &secrets);
    for (path, text) in &rendered.files {
        let p = std::path::Path::new(&dir).join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
    }
    println!(
        "{} objects, {} files in {dir}",
        rendered.objects.len(),
        rendered.files.len()
    );
}

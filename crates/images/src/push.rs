//! Why: the site's cluster pulls from the site's registry, not from this machine. `images push`
//! copies each locked OCI archive there with skopeo, keeping the manifest byte for byte
//! (--preserve-digests) so the digest `render --pin` writes is the one the registry serves; it
//! checks that against the lock and prints the `images:` settings that point mxstack.yaml at it.

use std::path::PathBuf;

use serde::Serialize;

use crate::lock::{Lock, LOCK_FILE};
use crate::tools::{self, Tools};
use crate::Error;

#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// The directory `images build` wrote (archives and images.lock).
    pub dir: PathBuf,
    /// `REGISTRY[/PATH]` (pushed as docker://REGISTRY/PATH/NAME:TAG), or a local destination:
    /// `oci:DIR` (an OCI layout, NAME-TAG as its reference) or `dir:DIR` (one directory per image).
    pub registry: String,
    pub only: Option<Vec<String>>,
    /// Verify the registry's TLS certificate (off only for a plain-HTTP test registry).
    pub tls_verify: bool,
    pub progress: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Pushed {
    pub name: String,
    /// skopeo's destination.
    pub destination: String,
    pub digest: String,
    /// The `images.<field>` of mxstack.yaml it serves.
    pub serves: String,
    /// What to set that field to (registry destinations only), pinned by digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_value: Option<String>,
}

/// skopeo's destination for one image, and the config value it gives (registries only).
pub fn destination(registry: &str, name: &str, tag: &str) -> (String, Option<String>) {
    if let Some(dir) = registry.strip_prefix("oci:") {
        (format!("oci:{dir}:{name}-{tag}"), None)
    } else if let Some(dir) = registry.strip_prefix("dir:") {
        (format!("dir:{}/{name}", dir.trim_end_matches('/')), None)
    } else {
        let r = registry
            .trim_start_matches("docker://")
            .trim_end_matches('/');
        (
            format!("docker://{r}/{name}:{tag}"),
            Some(format!("{r}/{name}:{tag}")),
        )
    }
}

/// Copies every locked image (or `only`) to `registry`; fails if a digest changes on the way.
pub fn push(opts: &PushOptions) -> Result<Vec<Pushed>, Error> {
    tools::require(&[tools::SKOPEO])?;
    let lock = Lock::load(&opts.dir.join(LOCK_FILE))?;
    if let Some(only) = &opts.only {
        for n in only {
            if !lock.images.contains_key(n) {
                return Err(Error::UnknownImage(
                    n.clone(),
                    lock.images.keys().cloned().collect::<Vec<_>>().join(", "),
                ));
            }
        }
    }
    if lock.images.is_empty() {
        return Err(Error::Usage(format!(
            "{} lists no image; run `mxstack images build` first",
            opts.dir.join(LOCK_FILE).display()
        )));
    }
    let tools = Tools::in_dir(&opts.dir)?;
    let mut pushed = Vec::new();
    for (name, e) in &lock.images {
        if opts.only.as_ref().is_some_and(|o| !o.contains(name)) {
            continue;
        }
        let (dest, config) = destination(&opts.registry, name, &e.tag);
        if let Some(dir) = dest
            .strip_prefix("dir:")
            .or_else(|| dest.strip_prefix("oci:").and_then(|d| d.split(':').next()))
        {
            std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        }
        if opts.progress {
            eprintln!("images: {name}: skopeo copy to {dest}");
        }
        let digest_file = opts.dir.join(format!(".{name}.pushed-digest"));
        let _ = std::fs::remove_file(&digest_file);
        let mut cmd = tools.command("skopeo");
        cmd.args(["copy", "-q", "--preserve-digests"])
            .arg("--digestfile")
            .arg(&digest_file);
        if !opts.tls_verify && dest.starts_with("docker://") {
            cmd.arg("--dest-tls-verify=false");
        }
        cmd.arg(format!(
            "oci-archive:{}",
            opts.dir.join(&e.archive).display()
        ))
        .arg(&dest);
        tools.run(cmd, &format!("skopeo copy of {name} to {dest}"), None)?;
        let got = std::fs::read_to_string(&digest_file)
            .map_err(Error::io(&digest_file))?
            .trim()
            .to_string();
        let _ = std::fs::remove_file(&digest_file);
        if got != e.digest {
            return Err(Error::Failed {
                what: format!("push of {name}"),
                status: format!("the destination has digest {got}, the lock {}", e.digest),
                log: String::new(),
            });
        }
        pushed.push(Pushed {
            name: name.clone(),
            destination: dest,
            digest: got.clone(),
            serves: e.serves.clone(),
            config_value: config.map(|c| format!("{c}@{got}")),
        });
    }
    Ok(pushed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        assert_eq!(
            destination("registry.acme.eu/mxstack/", "synapse", "1.163.2"),
            (
                "docker://registry.acme.eu/mxstack/synapse:1.163.2".into(),
                Some("registry.acme.eu/mxstack/synapse:1.163.2".into())
            )
        );
        assert_eq!(
            destination("oci:/srv/mirror", "haproxy", "2.6-bookworm").0,
            "oci:/srv/mirror:haproxy-2.6-bookworm"
        );
        assert_eq!(
            destination("dir:/srv/m/", "coturn", "4.6-bookworm").0,
            "dir:/srv/m/coturn"
        );
    }

    #[test]
    fn pushing_without_a_lock_says_so() {
        let d = tempfile::tempdir().unwrap();
        if tools::which("skopeo").is_none() {
            return;
        }
        let e = push(&PushOptions {
            dir: d.path().into(),
            registry: "dir:/nonexistent".into(),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("images.lock"), "{e}");
    }
}

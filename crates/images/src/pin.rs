//! Why: a manifest that names an image by tag runs whatever the registry serves under that tag
//! today. `render --pin LOCK` instead names every image mxstack built by its digest. That is a
//! change to the config's `images` section before rendering (the renderer stays unaware of
//! locks): a reference that points at a locked image (same image name and tag) gets `@sha256:`
//! appended, keeping its repository, so the site's registry and the version checks still apply.
//! A lock whose recipe no longer matches this mxstack's is refused, naming the image.

use mxstack_spec::Images;

use crate::catalog;
use crate::lock::Lock;

/// One config image that was pinned.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Pinned {
    /// The `images.<field>`.
    pub field: String,
    pub from: String,
    pub to: String,
}

/// A lock entry that no longer describes what `images build` would build.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stale {
    pub image: String,
    pub reason: String,
}

/// An image reference split into repository, tag and digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reference<'a> {
    pub repository: &'a str,
    pub tag: Option<&'a str>,
    pub digest: Option<&'a str>,
}

impl<'a> Reference<'a> {
    pub fn parse(s: &'a str) -> Reference<'a> {
        let (name, digest) = match s.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (s, None),
        };
        // A ':' after the last '/' starts the tag (before it, it is a registry's port).
        let slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (repository, tag) = match name[slash..].find(':') {
            Some(i) => (&name[..slash + i], Some(&name[slash + i + 1..])),
            None => (name, None),
        };
        Reference {
            repository,
            tag,
            digest,
        }
    }

    /// The last path component of the repository (`synapse` for `ghcr.io/mxstack/synapse`).
    pub fn image_name(&self) -> &'a str {
        self.repository
            .rsplit('/')
            .next()
            .unwrap_or(self.repository)
    }
}

/// Every lock entry whose recipe differs from this binary's catalog (the Containerfile, its
/// context, build arguments or tag changed after locking), or that names an image this mxstack
/// does not build, or whose mxstack image holds another mxstack version.
pub fn stale(lock: &Lock) -> Vec<Stale> {
    let mut out = Vec::new();
    for (name, entry) in &lock.images {
        let Some(def) = catalog::find(name) else {
            out.push(Stale {
                image: name.clone(),
                reason: format!("this mxstack does not build an image {name:?}"),
            });
            continue;
        };
        if entry.recipe != def.recipe_hash() {
            out.push(Stale {
                image: name.clone(),
                reason: format!(
                    "{}/Containerfile, its build context or its version changed after it was built",
                    def.dir
                ),
            });
        } else if def.needs_binary && entry.mxstack_version != env!("CARGO_PKG_VERSION") {
            out.push(Stale {
                image: name.clone(),
                reason: format!(
                    "it holds mxstack {}, this is mxstack {}",
                    entry.mxstack_version,
                    env!("CARGO_PKG_VERSION")
                ),
            });
        }
    }
    out
}

/// Pins every config image that refers to a locked image; refuses a stale lock.
pub fn pin(images: &mut Images, lock: &Lock) -> Result<Vec<Pinned>, Vec<Stale>> {
    let stale = stale(lock);
    if !stale.is_empty() {
        return Err(stale);
    }
    let mut value = serde_json::to_value(&*images).expect("images serialize");
    let map = value.as_object_mut().expect("images is an object");
    let mut pinned = Vec::new();
    for (field, v) in map.iter_mut() {
        let Some(current) = v.as_str() else { continue };
        let Some(entry) = lock_entry_for(lock, field, current) else {
            continue;
        };
        let r = Reference::parse(current);
        let to = format!(
            "{}:{}@{}",
            r.repository,
            r.tag.unwrap_or(&entry.tag),
            entry.digest
        );
        if to != current {
            pinned.push(Pinned {
                field: field.clone(),
                from: current.to_string(),
                to: to.clone(),
            });
            *v = serde_json::Value::String(to);
        }
    }
    *images = serde_json::from_value(value).expect("images deserialize");
    Ok(pinned)
}

/// The lock entry `images.<field> = reference` refers to: one that serves the field, with the
/// same image name and tag, and not the upstream image it replaces.
pub fn lock_entry_for<'l>(
    lock: &'l Lock,
    field: &str,
    reference: &str,
) -> Option<&'l crate::lock::LockEntry> {
    let r = Reference::parse(reference);
    lock.images.iter().find_map(|(name, e)| {
        let def = catalog::find(name)?;
        let ours = e.serves == field
            && r.image_name() == name.as_str()
            && r.tag == Some(e.tag.as_str())
            && def.upstream != Some(r.repository);
        ours.then_some(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::sample_entry;

    fn lock_with(names: &[&str]) -> Lock {
        let mut lock = Lock::default();
        for n in names {
            lock.images.insert(n.to_string(), sample_entry(n));
        }
        lock
    }

    #[test]
    fn references_split_at_the_right_colon() {
        let r = Reference::parse("registry.acme.eu:5000/mxstack/synapse:1.163.2@sha256:ab");
        assert_eq!(r.repository, "registry.acme.eu:5000/mxstack/synapse");
        assert_eq!(r.tag, Some("1.163.2"));
        assert_eq!(r.digest, Some("sha256:ab"));
        assert_eq!(r.image_name(), "synapse");
        let r = Reference::parse("registry.acme.eu:5000/haproxy");
        assert_eq!(
            (r.repository, r.tag),
            ("registry.acme.eu:5000/haproxy", None)
        );
    }

    #[test]
    fn pins_our_images_by_digest_keeping_repository_and_tag() {
        let lock = lock_with(&["synapse", "mxstack", "haproxy"]);
        let mut images = Images {
            haproxy: "registry.acme.eu/mxstack/haproxy:2.6-bookworm".into(),
            ..Images::default()
        };
        let pinned = pin(&mut images, &lock).unwrap();
        let syn = &lock.images["synapse"].digest;
        assert_eq!(
            images.synapse,
            format!("ghcr.io/mxstack/synapse:1.163.2@{syn}")
        );
        assert!(images.mxstack.ends_with(&lock.images["mxstack"].digest));
        assert_eq!(
            images.haproxy,
            format!(
                "registry.acme.eu/mxstack/haproxy:2.6-bookworm@{}",
                lock.images["haproxy"].digest
            )
        );
        assert_eq!(pinned.len(), 3);
        // The upstream images and everything the lock lacks are left as they are.
        assert_eq!(images.postgres, Images::default().postgres);
        // Pinning twice changes nothing; an old digest is replaced.
        let mut again = images.clone();
        assert!(pin(&mut again, &lock).unwrap().is_empty());
        let mut old = images.clone();
        old.synapse = "ghcr.io/mxstack/synapse:1.163.2@sha256:0000".into();
        pin(&mut old, &lock).unwrap();
        assert_eq!(old.synapse, images.synapse);
    }

    #[test]
    fn the_upstream_image_or_another_tag_is_not_ours() {
        let lock = lock_with(&["haproxy", "synapse"]);
        let mut images = Images {
            haproxy: "docker.io/library/haproxy:2.6-bookworm".into(),
            synapse: "ghcr.io/mxstack/synapse:1.160.0".into(),
            ..Images::default()
        };
        let before = images.clone();
        assert!(pin(&mut images, &lock).unwrap().is_empty());
        assert_eq!(images, before);
    }

    #[test]
    fn a_changed_recipe_is_refused_naming_the_image() {
        let mut lock = lock_with(&["synapse", "coturn"]);
        lock.images.get_mut("coturn").unwrap().recipe = "0".repeat(64);
        let mut images = Images::default();
        let err = pin(&mut images, &lock).unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].image, "coturn");
        assert!(err[0].reason.contains("images/coturn/Containerfile"));
        assert_eq!(images, Images::default(), "nothing pinned");
    }

    #[test]
    fn an_unknown_image_or_another_mxstack_is_stale() {
        let mut lock = lock_with(&["mxstack"]);
        lock.images.get_mut("mxstack").unwrap().mxstack_version = "0.0.1".into();
        let mut other = sample_entry("coturn");
        other.serves = "nginx".into();
        lock.images.insert("nginx".into(), other);
        let s = stale(&lock);
        assert_eq!(
            s.iter().map(|s| s.image.as_str()).collect::<Vec<_>>(),
            ["mxstack", "nginx"]
        );
        assert!(s[0].reason.contains("0.0.1"));
    }
}

//! Why: the lock file is the hand-off between building and deploying. `images build` writes it
//! next to the OCI archives (name -> digest, size, what it was built from); `render --pin` reads
//! it to put digests into the manifests; `images push` reads it to know what to copy and checks
//! the registry kept each digest. Recording the inputs' hashes lets a second build reuse what is
//! still current and lets `render --pin` refuse a lock whose recipe has changed since.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::Error;

/// The lock's file name in the output directory.
pub const LOCK_FILE: &str = "images.lock";
/// The format this code writes and reads.
pub const LOCK_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    pub version: u32,
    /// The Debian base the images were built from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseEntry>,
    /// Built images by name.
    #[serde(default)]
    pub images: BTreeMap<String, LockEntry>,
}

impl Default for Lock {
    fn default() -> Self {
        Lock {
            version: LOCK_VERSION,
            base: None,
            images: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseEntry {
    /// Its name in podman's storage (`localhost/mxstack-base:bookworm-<hash>`).
    pub reference: String,
    pub suite: String,
    /// Hash of how it was made (mmdebstrap's options).
    pub recipe: String,
    /// The root filesystem archive mmdebstrap wrote, relative to the lock's directory.
    pub archive: String,
    /// SHA-256 of that archive: the base's identity in every image's inputs.
    pub archive_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockEntry {
    /// The `images.<field>` of mxstack.yaml it can be used for.
    pub serves: String,
    /// Its name in podman's storage and in the archive.
    pub reference: String,
    pub tag: String,
    /// The manifest digest (`sha256:...`), the same in the archive and after `images push`.
    pub digest: String,
    /// Uncompressed size in bytes (what `podman images` shows).
    pub size: u64,
    /// The OCI archive, relative to the lock's directory.
    pub archive: String,
    /// The archive's size in bytes (compressed layers: about what a registry stores).
    pub archive_bytes: u64,
    /// Hash of the recipe (Containerfile, context files, build arguments, tag).
    pub recipe: String,
    /// Hash of everything the build read: the recipe, the base and the binary, if any.
    pub inputs: String,
    /// SHA-256 of the mxstack binary copied in (the mxstack image only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_sha256: Option<String>,
    /// The mxstack version that built the lock entry.
    pub mxstack_version: String,
}

impl Lock {
    /// Reads a lock file.
    pub fn load(path: &Path) -> Result<Lock, Error> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        let lock: Lock = serde_json::from_str(&text).map_err(|e| Error::BadLock {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if lock.version != LOCK_VERSION {
            return Err(Error::BadLock {
                path: path.to_path_buf(),
                message: format!(
                    "format version {} (this mxstack reads {LOCK_VERSION}); build again with `mxstack images build`",
                    lock.version
                ),
            });
        }
        Ok(lock)
    }

    /// Reads the lock in `dir`, or an empty one when there is none.
    pub fn load_or_default(dir: &Path) -> Result<Lock, Error> {
        let path = dir.join(LOCK_FILE);
        if path.exists() {
            Lock::load(&path)
        } else {
            Ok(Lock::default())
        }
    }

    /// Writes it atomically (a temporary file renamed over the old one).
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let mut text = serde_json::to_string_pretty(self).expect("lock serializes");
        text.push('\n');
        let tmp = path.with_extension("lock.tmp");
        std::fs::write(&tmp, text).map_err(Error::io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(Error::io(path))
    }
}

#[cfg(test)]
pub(crate) fn sample_entry(name: &str) -> LockEntry {
    let def = crate::catalog::find(name).expect("known image");
    LockEntry {
        serves: def.serves.into(),
        reference: def.local_reference(),
        tag: def.tag.into(),
        digest: format!("sha256:{}", crate::sha256_hex(name.as_bytes())),
        size: 1000,
        archive: def.archive_name(),
        archive_bytes: 500,
        recipe: def.recipe_hash(),
        inputs: "i".repeat(64),
        binary_sha256: None,
        mxstack_version: env!("CARGO_PKG_VERSION").into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_and_load_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let mut lock = Lock::default();
        lock.images
            .insert("synapse".into(), sample_entry("synapse"));
        let p = d.path().join(LOCK_FILE);
        lock.save(&p).unwrap();
        assert_eq!(Lock::load(&p).unwrap(), lock);
        assert_eq!(Lock::load_or_default(d.path()).unwrap(), lock);
        assert_eq!(
            Lock::load_or_default(&d.path().join("none")).unwrap(),
            Lock::default()
        );
    }

    #[test]
    fn a_foreign_file_is_not_a_lock() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(LOCK_FILE);
        std::fs::write(&p, "{\"images\": 3}").unwrap();
        let e = Lock::load(&p).unwrap_err().to_string();
        assert!(e.contains("not a lock file"), "{e}");
        std::fs::write(&p, "{\"version\": 9}").unwrap();
        let e = Lock::load(&p).unwrap_err().to_string();
        assert!(e.contains("format version 9"), "{e}");
    }
}

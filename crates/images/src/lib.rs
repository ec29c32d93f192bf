//! Why this crate: the rendered manifests reference images, and a cluster can only run them if
//! they exist. This crate owns the images mxstack can build (a table, `catalog`), builds them
//! with podman from a Debian base made by mmdebstrap (no image registry needed), writes each as
//! an OCI archive plus a lock file of `name -> digest` (`build`, `lock`), pins a config's image
//! references to those digests before rendering (`pin`), lists every image a render references
//! for mirroring (`list`) and pushes the archives to a site's registry with skopeo (`push`).
//!
//! It knows nothing about Kubernetes objects: callers hand it the config's `images` section and
//! the image strings a render produced.

pub mod build;
pub mod catalog;
pub mod list;
pub mod lock;
pub mod pin;
pub mod push;
pub mod tools;

pub use build::{build, BuildOptions, BuildReport, Built, Status};
pub use catalog::{ImageDef, BASE, IMAGES};
pub use list::{list, Listed};
pub use lock::{Lock, LockEntry, LOCK_FILE};
pub use pin::{pin, Pinned, Stale};
pub use push::{push, PushOptions, Pushed};

use std::path::PathBuf;

/// Everything that can go wrong building, reading a lock or pushing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A program the step needs is not installed.
    #[error("{program} is not installed; install the Debian package: apt-get install {package}")]
    MissingTool {
        program: &'static str,
        package: &'static str,
    },
    /// A program ran and failed; `log` holds its output (or where it is).
    #[error("{what} failed ({status}){log}")]
    Failed {
        what: String,
        status: String,
        log: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a lock file written by `mxstack images build`: {message}")]
    BadLock { path: PathBuf, message: String },
    #[error("unknown image {0:?}; mxstack builds: {1}")]
    UnknownImage(String, String),
    #[error("{0}")]
    Usage(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

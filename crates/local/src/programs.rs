//! The programs a local stack runs, found on this machine (Debian packages and the venv).

use std::path::PathBuf;

use mxstack_spec::Config;

use crate::runtime;

/// Programs the plan runs, found on this machine.
#[derive(Debug, Clone)]
pub struct Programs {
    pub python: PathBuf,
    pub weed: PathBuf,
    pub pg_bin: PathBuf,
    pub redis_server: PathBuf,
    pub haproxy: PathBuf,
    /// clamd (feature `antivirus`).
    pub clamd: Option<PathBuf>,
    /// coturn's server (feature `calls`).
    pub turnserver: Option<PathBuf>,
    /// This binary: it serves the content scanner (`mxstack serve content-scanner`).
    pub mxstack: PathBuf,
}

impl Programs {
    /// Finds the venv ([`runtime::find_venv`]) and the Debian packages' binaries for what
    /// `config` enables; an error names the first missing piece and its fix (`mxstack setup`;
    /// `mxstack doctor` lists all).
    pub fn discover_for(config: &Config) -> Result<Programs, String> {
        if let Some(p) = runtime::first_problem(config) {
            return Err(p);
        }
        let (venv, _) = runtime::find_venv().ok_or("no venv")?;
        let pg_bin = ["15", "16", "17"]
            .iter()
            .map(|v| PathBuf::from(format!("/usr/lib/postgresql/{v}/bin")))
            .find(|p| p.join("postgres").exists())
            .ok_or("PostgreSQL server binaries not found: run `mxstack setup`")?;
        let find = |name: &str| -> Result<PathBuf, String> {
            runtime::find_program(name).ok_or(format!("`{name}` not found: run `mxstack setup`"))
        };
        Ok(Programs {
            python: venv.join("bin/python"),
            weed: venv.join("bin/weed"),
            pg_bin,
            redis_server: find("redis-server")?,
            haproxy: find("haproxy")?,
            clamd: runtime::find_program("clamd"),
            turnserver: runtime::find_program("turnserver"),
            mxstack: std::env::current_exe()
                .map_err(|e| format!("cannot find the mxstack binary: {e}"))?,
        })
    }

    /// The programs at Debian's paths and a venv at /venv, not looked up: for a plan that is
    /// built to be read, never run (tests, comparisons between targets).
    pub fn at_debian_paths() -> Programs {
        Programs {
            python: "/venv/bin/python".into(),
            weed: "/venv/bin/weed".into(),
            pg_bin: "/usr/lib/postgresql/15/bin".into(),
            redis_server: "/usr/bin/redis-server".into(),
            haproxy: "/usr/sbin/haproxy".into(),
            clamd: Some("/usr/sbin/clamd".into()),
            turnserver: Some("/usr/bin/turnserver".into()),
            mxstack: "/usr/bin/mxstack".into(),
        }
    }
}

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
    /// Prometheus, Alertmanager and the exporters (feature `monitoring`).
    pub monitoring: Option<MonitoringPrograms>,
    /// barman-cloud's directory (Debian's barman-cli-cloud): WAL archiving, backups, restore.
    pub barman_bin: PathBuf,
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
            monitoring: MonitoringPrograms::find(),
            barman_bin: find("barman-cloud-wal-archive")?
                .parent()
                .map(PathBuf::from)
                .unwrap_or_default(),
            mxstack: std::env::current_exe()
                .map_err(|e| format!("cannot find the mxstack binary: {e}"))?,
        })
    }

    /// [`Programs::discover_for`], with Synapse from the venv `mxstack upgrade` pinned the stack
    /// in `layout` to, if any.
    pub fn for_stack(config: &Config, layout: &crate::StateLayout) -> Result<Programs, String> {
        let mut p = Programs::discover_for(config)?;
        if let Some(venv) = crate::synapse_version::pinned(layout) {
            p.python = venv.join("bin/python");
        }
        Ok(p)
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
            monitoring: Some(MonitoringPrograms {
                prometheus: "/usr/bin/prometheus".into(),
                alertmanager: "/usr/bin/prometheus-alertmanager".into(),
                postgres_exporter: "/usr/bin/prometheus-postgres-exporter".into(),
                redis_exporter: "/usr/bin/prometheus-redis-exporter".into(),
            }),
            barman_bin: "/usr/bin".into(),
            mxstack: "/usr/bin/mxstack".into(),
        }
    }
}

/// Debian's Prometheus, Alertmanager and exporters.
#[derive(Debug, Clone)]
pub struct MonitoringPrograms {
    pub prometheus: PathBuf,
    pub alertmanager: PathBuf,
    pub postgres_exporter: PathBuf,
    pub redis_exporter: PathBuf,
}

impl MonitoringPrograms {
    /// All four, or None (then `doctor` names what is missing).
    fn find() -> Option<MonitoringPrograms> {
        Some(MonitoringPrograms {
            prometheus: runtime::find_program("prometheus")?,
            alertmanager: runtime::find_program("prometheus-alertmanager")?,
            postgres_exporter: runtime::find_program("prometheus-postgres-exporter")?,
            redis_exporter: runtime::find_program("prometheus-redis-exporter")?,
        })
    }
}

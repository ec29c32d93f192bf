//! Backups of the local PostgreSQL with barman-cloud (Debian's `barman-cli-cloud`), in the same
//! layout the CloudNativePG Barman Cloud plugin writes: `s3://<backup.bucket>/<cluster>` with
//! server name `<cluster>` (`base/` for base backups, `wals/` for the WAL archive), on the local
//! SeaweedFS. This module builds the commands and settings and reads barman's answers; the CLI
//! runs them. S3 credentials only ever travel in the environment ([`credentials_env`]).

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use mxstack_spec::{Config, Feature, SecretName, Secrets};
use mxstack_topology::registry as reg;
use mxstack_topology::Addressing;
use serde::Serialize;

use crate::addressing::LocalAddressing;
use crate::layout::StateLayout;

/// Seconds after which PostgreSQL switches to a new WAL segment even if it is not full, so the
/// archive (and with it point-in-time recovery) is never further behind than this.
pub const ARCHIVE_TIMEOUT_SECS: u32 = 60;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BackupError {
    #[error("`{0}` is not a restore target: give `latest` or an RFC 3339 time such as 2026-05-01T12:00:00Z ({1})")]
    BadTarget(String, String),
    #[error("there is no backup to restore from in {0}: take one with `mxstack backup now`")]
    NoBackup(String),
    #[error("no backup was complete at {target}: the oldest restorable time is {oldest} (backup {backup}); pick a time at or after it, or `latest`")]
    BeforeOldest {
        target: String,
        oldest: String,
        backup: String,
    },
    #[error("{target} is in the future (now {now}): use `latest` for everything archived")]
    InFuture { target: String, now: String },
    #[error("`{0}` is not a cluster: give `main` or `li`")]
    BadCluster(String),
    #[error("cannot read barman-cloud-backup-list's answer: {0}")]
    BadList(String),
}

/// A PostgreSQL cluster of the local stack that is backed up: main, and with feature li the LI
/// cluster (its own bucket and S3 identity: `mxstack_topology::backup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cluster {
    Main,
    Li,
}

impl Cluster {
    /// `--cluster main|li`.
    pub fn parse(s: &str) -> Result<Cluster, BackupError> {
        match s {
            "main" => Ok(Cluster::Main),
            "li" => Ok(Cluster::Li),
            _ => Err(BackupError::BadCluster(s.into())),
        }
    }

    /// The clusters `config` runs, main first.
    pub fn all(config: &Config) -> Vec<Cluster> {
        if config.features.contains(&Feature::Li) {
            vec![Cluster::Main, Cluster::Li]
        } else {
            vec![Cluster::Main]
        }
    }

    /// Its name, as CloudNativePG's cluster and barman's server name.
    pub fn name(self) -> &'static str {
        match self {
            Cluster::Main => reg::postgres::CLUSTER,
            Cluster::Li => reg::li_postgres::CLUSTER,
        }
    }

    /// The local plan's service that runs it.
    pub fn service(self) -> &'static str {
        match self {
            Cluster::Main => "postgres",
            Cluster::Li => "postgres-li",
        }
    }

    pub fn data_dir(self, layout: &StateLayout) -> PathBuf {
        match self {
            Cluster::Main => layout.postgres_data(),
            Cluster::Li => layout.li_postgres_data(),
        }
    }

    fn bucket(self, config: &Config) -> String {
        match self {
            Cluster::Main => config.backup.bucket.clone(),
            Cluster::Li => config.backup.li_bucket_name(),
        }
    }

    /// The secrets holding the S3 key pair its archiver writes with.
    pub fn credentials(self) -> [SecretName; 2] {
        match self {
            Cluster::Main => [SecretName::S3AccessKey, SecretName::S3SecretKey],
            Cluster::Li => [
                SecretName::LiBackupS3AccessKey,
                SecretName::LiBackupS3SecretKey,
            ],
        }
    }

    /// Its archive on the local SeaweedFS.
    pub fn archive(self, config: &Config, addr: &LocalAddressing, bin: &Path) -> Archive {
        Archive {
            bin: bin.to_path_buf(),
            endpoint: addr.s3_endpoint(),
            url: format!("s3://{}/{}", self.bucket(config), self.name()),
            server: self.name().into(),
        }
    }
}

/// Where a cluster's backups live and how barman-cloud reaches them.
#[derive(Debug, Clone, PartialEq)]
pub struct Archive {
    /// The barman-cloud programs' directory (Debian: /usr/bin).
    pub bin: PathBuf,
    pub endpoint: String,
    /// `s3://<bucket>/<cluster>`, as the ObjectStore's destinationPath.
    pub url: String,
    /// barman's server name (the cluster's name, as CloudNativePG uses it).
    pub server: String,
}

impl Archive {
    pub fn program(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    fn endpoint_args(&self) -> Vec<String> {
        vec!["--endpoint-url".into(), self.endpoint.clone()]
    }

    /// PostgreSQL's `archive_command`: gzip, as the ObjectStore's `wal.compression`.
    pub fn archive_command(&self) -> String {
        format!(
            "{} --endpoint-url {} -z {} {} %p",
            self.program("barman-cloud-wal-archive").display(),
            self.endpoint,
            self.url,
            self.server
        )
    }

    /// PostgreSQL's `restore_command` during recovery.
    pub fn restore_command(&self) -> String {
        format!(
            "{} --endpoint-url {} {} {} %f %p",
            self.program("barman-cloud-wal-restore").display(),
            self.endpoint,
            self.url,
            self.server
        )
    }

    /// `barman-cloud-backup` of the server listening on `socket_dir`/`port`, as `postgres`.
    pub fn backup_args(&self, socket_dir: &Path, port: u16) -> Vec<String> {
        let mut a = self.endpoint_args();
        a.extend([
            "-z".into(),
            "--immediate-checkpoint".into(),
            "-h".into(),
            socket_dir.display().to_string(),
            "-p".into(),
            port.to_string(),
            "-U".into(),
            "postgres".into(),
            "-d".into(),
            "postgres".into(),
            self.url.clone(),
            self.server.clone(),
        ]);
        a
    }

    pub fn list_args(&self) -> Vec<String> {
        let mut a = self.endpoint_args();
        a.extend([
            "--format".into(),
            "json".into(),
            self.url.clone(),
            self.server.clone(),
        ]);
        a
    }

    pub fn restore_args(&self, backup_id: &str, dir: &Path) -> Vec<String> {
        let mut a = self.endpoint_args();
        a.extend([
            self.url.clone(),
            self.server.clone(),
            backup_id.into(),
            dir.display().to_string(),
        ]);
        a
    }
}

/// The S3 credentials barman-cloud (boto3) reads from its environment, for `cluster`'s archive.
pub fn credentials_env(
    cluster: Cluster,
    config: &Config,
    secrets: &Secrets,
) -> Vec<(String, String)> {
    let [access, secret] = cluster.credentials();
    vec![
        ("AWS_ACCESS_KEY_ID".into(), secrets.get(access).into()),
        ("AWS_SECRET_ACCESS_KEY".into(), secrets.get(secret).into()),
        ("AWS_DEFAULT_REGION".into(), config.media.region.clone()),
    ]
}

/// `cluster`'s S3 credentials as boto3's shared credentials file (`[default]` profile).
pub fn credentials_file(cluster: Cluster, secrets: &Secrets) -> String {
    let [access, secret] = cluster.credentials();
    format!(
        "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
        secrets.get(access),
        secrets.get(secret)
    )
}

/// The environment of a process whose barman-cloud commands read the credentials from `file`
/// (written by [`credentials_file`]) each time they run, instead of holding them.
pub fn credentials_file_env(config: &Config, file: &Path) -> Vec<(String, String)> {
    vec![
        (
            "AWS_SHARED_CREDENTIALS_FILE".into(),
            file.display().to_string(),
        ),
        ("AWS_DEFAULT_REGION".into(), config.media.region.clone()),
    ]
}

/// What `mxstack restore --to` asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RestoreTarget {
    /// Everything the archive holds.
    Latest,
    /// The last transaction committed at or before this time.
    Time(Timestamp),
}

impl RestoreTarget {
    pub fn parse(s: &str) -> Result<RestoreTarget, BackupError> {
        if s == "latest" {
            return Ok(RestoreTarget::Latest);
        }
        s.parse::<Timestamp>()
            .map(RestoreTarget::Time)
            .map_err(|e| BackupError::BadTarget(s.into(), e.to_string()))
    }

    /// PostgreSQL's recovery settings (`-c` pairs) for this target: WAL from the archive,
    /// the newest timeline, and promotion when the target is reached.
    pub fn recovery_settings(&self, archive: &Archive) -> Vec<String> {
        let mut s = vec![
            format!("restore_command={}", archive.restore_command()),
            "recovery_target_timeline=latest".into(),
            "recovery_target_action=promote".into(),
        ];
        if let RestoreTarget::Time(t) = self {
            s.push(format!("recovery_target_time={}", pg_time(*t)));
        }
        s
    }
}

/// A timestamp as PostgreSQL's `timestamptz` input reads it, in UTC, to the microsecond.
fn pg_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S%.6f+00").to_string()
}

/// One base backup in the archive.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupInfo {
    pub id: String,
    pub name: Option<String>,
    pub status: String,
    pub begin: Timestamp,
    /// The backup is consistent from here: the earliest time it can restore to.
    pub end: Timestamp,
    pub timeline: Option<u64>,
}

/// Reads `barman-cloud-backup-list --format json`: `{"backups_list": [{backup_id, status,
/// begin_time, end_time, timeline, ...}]}`. Barman 3.4 prints times as `ctime` (`Sat Dec  5
/// 16:27:21 2026`, whole seconds, the server's time zone: the local PostgreSQL runs in UTC);
/// newer versions add `*_iso`, which is read when present. The end is rounded up to the next
/// second, so the oldest restorable time named is never before the backup is consistent.
pub fn parse_backup_list(json: &str) -> Result<Vec<BackupInfo>, BackupError> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| BackupError::BadList(e.to_string()))?;
    let list = v["backups_list"]
        .as_array()
        .ok_or_else(|| BackupError::BadList("no `backups_list`".into()))?;
    let mut out = Vec::new();
    for b in list {
        let end = backup_time(b, "end_time")?;
        out.push(BackupInfo {
            id: b["backup_id"].as_str().unwrap_or_default().into(),
            name: b["backup_name"].as_str().map(str::to_owned),
            status: b["status"].as_str().unwrap_or_default().into(),
            begin: backup_time(b, "begin_time")?,
            end: if end.subsec_nanosecond() == 0 {
                end + jiff::SignedDuration::from_secs(1)
            } else {
                end
            },
            timeline: b["timeline"].as_u64(),
        });
    }
    out.sort_by_key(|b| b.end);
    Ok(out)
}

/// A backup's `key` time: `<key>_iso` (RFC 3339) when barman gives it, else its `ctime` in UTC.
fn backup_time(b: &serde_json::Value, key: &str) -> Result<Timestamp, BackupError> {
    if let Some(iso) = b[format!("{key}_iso")].as_str() {
        return iso
            .parse::<Timestamp>()
            .map_err(|e| BackupError::BadList(format!("{key}_iso `{iso}`: {e}")));
    }
    let text = b[key]
        .as_str()
        .ok_or_else(|| BackupError::BadList(format!("a backup without {key}")))?;
    let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
    jiff::civil::DateTime::strptime("%a %b %d %H:%M:%S %Y", &words)
        .and_then(|t| t.to_zoned(jiff::tz::TimeZone::UTC))
        .map(|z| z.timestamp())
        .map_err(|e| BackupError::BadList(format!("{key} `{text}`: {e}")))
}

/// The backup to restore `target` from: the newest complete one that ended at or before it.
/// A target before every backup names the oldest restorable time.
pub fn choose_backup<'a>(
    backups: &'a [BackupInfo],
    target: RestoreTarget,
    now: Timestamp,
    where_: &str,
) -> Result<&'a BackupInfo, BackupError> {
    let done: Vec<&BackupInfo> = backups.iter().filter(|b| b.status == "DONE").collect();
    let oldest = *done
        .first()
        .ok_or_else(|| BackupError::NoBackup(where_.into()))?;
    let t = match target {
        RestoreTarget::Latest => return Ok(done.last().expect("not empty")),
        RestoreTarget::Time(t) => t,
    };
    if t > now {
        return Err(BackupError::InFuture {
            target: t.to_string(),
            now: now.to_string(),
        });
    }
    done.iter()
        .rev()
        .find(|b| b.end <= t)
        .copied()
        .ok_or_else(|| BackupError::BeforeOldest {
            target: t.to_string(),
            oldest: oldest.end.to_string(),
            backup: oldest.id.clone(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive() -> Archive {
        Archive {
            bin: "/usr/bin".into(),
            endpoint: "http://127.0.0.1:23010".into(),
            url: "s3://pg-backups/main-pg".into(),
            server: "main-pg".into(),
        }
    }

    const LIST: &str = r#"{"backups_list": [
      {"backup_id": "20261205T161000", "status": "DONE", "timeline": 1,
       "begin_time": "Sat Dec  5 16:10:00 2026", "end_time": "Sat Dec  5 16:10:05 2026"},
      {"backup_id": "20261205T170000", "backup_name": "before-upgrade", "status": "DONE", "timeline": 1,
       "begin_time_iso": "2026-12-05T17:00:00+00:00", "end_time_iso": "2026-12-05T17:00:03.5+00:00"},
      {"backup_id": "20261205T180000", "status": "FAILED", "timeline": 1,
       "begin_time": "Sat Dec  5 18:00:00 2026", "end_time": "Sat Dec 5 18:00:03 2026"}
    ]}"#;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn commands_name_the_archive_and_never_a_credential() {
        let a = archive();
        assert_eq!(
            a.archive_command(),
            "/usr/bin/barman-cloud-wal-archive --endpoint-url http://127.0.0.1:23010 -z s3://pg-backups/main-pg main-pg %p"
        );
        assert!(a.restore_command().ends_with("main-pg main-pg %f %p"));
        let b = a.backup_args(Path::new("/s/run"), 23005);
        assert_eq!(b[b.len() - 2..], ["s3://pg-backups/main-pg", "main-pg"]);
        assert!(b.windows(2).any(|w| w == ["-h", "/s/run"]));
        assert!(!b.join(" ").contains("AWS"));
        assert_eq!(
            a.restore_args("20261205T161000", Path::new("/s/pg"))[2..],
            [
                "s3://pg-backups/main-pg",
                "main-pg",
                "20261205T161000",
                "/s/pg"
            ]
        );
    }

    #[test]
    fn the_li_cluster_has_its_own_archive_and_credentials() {
        let config = Config::new("acme.test", mxstack_spec::Tier::T1k, [Feature::Li].into());
        let secrets = Secrets::generate_all().unwrap();
        let layout = StateLayout::for_config(Path::new("/srv/mx/mxstack.yaml"), None);
        let plan = crate::LocalPlan::build(
            &config,
            &secrets,
            &layout,
            &crate::Shape::new(20000, 0),
            &crate::plan::Programs::at_debian_paths(),
        );
        assert_eq!(Cluster::all(&config), [Cluster::Main, Cluster::Li]);
        let li = Cluster::Li.archive(&config, &plan.addressing, Path::new("/usr/bin"));
        assert_eq!(li.url, "s3://pg-backups-li/li-pg");
        assert_eq!(li.server, "li-pg");
        let main = Cluster::Main.archive(&config, &plan.addressing, Path::new("/usr/bin"));
        assert_eq!(main.url, "s3://pg-backups/main-pg");
        let env = credentials_env(Cluster::Li, &config, &secrets);
        assert_eq!(env[0].1, secrets.get(SecretName::LiBackupS3AccessKey));
        assert_ne!(env[0].1, secrets.get(SecretName::S3AccessKey));
        assert_eq!(
            Cluster::Li.data_dir(&layout),
            Path::new("/srv/mx/.mxstack-state/postgres/li-data")
        );
        assert!(Cluster::parse("backup").is_err());
        // The LI PostgreSQL archives to its own archive, with its own identity in a credentials
        // file barman-cloud reads at each run (a rotation restarts nothing), never main's.
        let pg = plan.service("postgres-li").unwrap();
        assert!(pg
            .args
            .contains(&format!("archive_command={}", li.archive_command())));
        let file = pg
            .env
            .iter()
            .find(|(k, _)| k == "AWS_SHARED_CREDENTIALS_FILE")
            .map(|(_, v)| v.clone())
            .expect("a credentials file");
        let creds = plan
            .files
            .iter()
            .find(|f| f.path == Path::new(&file))
            .expect("the file is generated");
        assert!(creds
            .content
            .contains(secrets.get(SecretName::LiBackupS3SecretKey)));
        assert!(!creds.content.contains(secrets.get(SecretName::S3SecretKey)));
        assert!(pg
            .env
            .iter()
            .all(|(_, v)| !v.contains(secrets.get(SecretName::LiBackupS3SecretKey))));
        // SeaweedFS: the LI backup identity reaches its bucket only, main's identity never it.
        let s3 = plan
            .files
            .iter()
            .find(|f| f.path.ends_with("seaweedfs/s3.json"))
            .expect("s3.json");
        let ids: serde_json::Value = serde_json::from_str(&s3.content).unwrap();
        let actions = |name: &str| {
            ids["identities"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["name"] == name)
                .unwrap()["actions"]
                .clone()
        };
        assert_eq!(
            actions("li-pg-backup"),
            serde_json::json!([
                "Read:pg-backups-li",
                "List:pg-backups-li",
                "Write:pg-backups-li"
            ])
        );
        let main = actions("mxstack").to_string();
        assert!(
            !main.contains("pg-backups-li") && !main.contains("\"Admin\""),
            "{main}"
        );
    }

    #[test]
    fn targets_parse_as_latest_or_rfc3339() {
        assert_eq!(RestoreTarget::parse("latest"), Ok(RestoreTarget::Latest));
        assert_eq!(
            RestoreTarget::parse("2026-12-05T17:30:00+01:00"),
            Ok(RestoreTarget::Time(ts("2026-12-05T16:30:00Z")))
        );
        let e = RestoreTarget::parse("yesterday").unwrap_err().to_string();
        assert!(e.contains("`latest` or an RFC 3339 time"), "{e}");
        assert!(RestoreTarget::parse("2026-12-05 17:30").is_err());
    }

    #[test]
    fn recovery_settings_promote_at_the_target() {
        let latest = RestoreTarget::Latest.recovery_settings(&archive());
        assert!(latest[0].starts_with("restore_command=/usr/bin/barman-cloud-wal-restore "));
        assert!(latest.contains(&"recovery_target_action=promote".to_string()));
        assert!(!latest
            .iter()
            .any(|s| s.starts_with("recovery_target_time=")));
        let t = RestoreTarget::Time(ts("2026-12-05T16:30:00.25Z")).recovery_settings(&archive());
        assert!(t.contains(&"recovery_target_time=2026-12-05 16:30:00.250000+00".to_string()));
    }

    #[test]
    fn the_list_is_read_and_sorted_by_end() {
        let l = parse_backup_list(LIST).unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].id, "20261205T161000");
        // Whole seconds from ctime: rounded up to the next second.
        assert_eq!(l[0].end, ts("2026-12-05T16:10:06Z"));
        assert_eq!(l[1].end, ts("2026-12-05T17:00:03.5Z"));
        assert_eq!(l[1].name.as_deref(), Some("before-upgrade"));
        assert_eq!(l[2].begin, ts("2026-12-05T18:00:00Z"));
        assert!(parse_backup_list(r#"{"backups_list": []}"#)
            .unwrap()
            .is_empty());
        assert!(parse_backup_list("{}").is_err());
        assert!(parse_backup_list("nope").is_err());
    }

    #[test]
    fn the_newest_done_backup_before_the_target_is_chosen() {
        let l = parse_backup_list(LIST).unwrap();
        let now = ts("2026-12-06T00:00:00Z");
        let pick = |t| {
            choose_backup(&l, t, now, "s3://x")
                .map(|b| b.id.clone())
                .map_err(|e| e.to_string())
        };
        assert_eq!(pick(RestoreTarget::Latest).unwrap(), "20261205T170000");
        let at = |s| RestoreTarget::Time(ts(s));
        assert_eq!(pick(at("2026-12-05T16:30:00Z")).unwrap(), "20261205T161000");
        assert_eq!(pick(at("2026-12-05T16:10:06Z")).unwrap(), "20261205T161000");
        assert_eq!(pick(at("2026-12-05T19:00:00Z")).unwrap(), "20261205T170000");
        let e = pick(at("2026-12-05T16:10:01Z")).unwrap_err();
        assert!(
            e.contains("oldest restorable time is 2026-12-05T16:10:06Z"),
            "{e}"
        );
        let e = pick(at("2026-12-07T00:00:00Z")).unwrap_err();
        assert!(e.contains("in the future"), "{e}");
        assert!(choose_backup(&[], RestoreTarget::Latest, now, "s3://x")
            .unwrap_err()
            .to_string()
            .contains("mxstack backup now"));
    }
}

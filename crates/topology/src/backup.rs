//! The S3 rights backups depend on, shared by both targets (the local SeaweedFS's `s3.json` and
//! the Kubernetes `seaweedfs-s3-config` Secret).
//!
//! The LI PostgreSQL's backups are evidence: they go to a bucket of their own
//! (`backup.li_bucket`, default `<backup.bucket>-li`), written by an identity of their own
//! ([`LI_BACKUP_IDENTITY`], secrets `li_backup_s3_*`) that only the LI cluster's archiver holds.
//! Main's identity holds every main credential's reach (Synapse's media, main's archive); with
//! feature li it is limited to its own buckets, so nothing holding a main credential can read,
//! overwrite or delete the LI backups (or the LI media copy). The LI backup identity can reach
//! nothing else: a compromised LI archiver can neither read main's media nor touch main's
//! archive.

use mxstack_spec::{Config, Feature};

/// SeaweedFS's name of main's identity (Synapse, main's archiver, the test tools).
pub const MAIN_IDENTITY: &str = "mxstack";
/// SeaweedFS's name of the LI backups' identity.
pub const LI_BACKUP_IDENTITY: &str = "li-pg-backup";

/// Main's identity's SeaweedFS actions: every bucket without feature li (as before); with it,
/// the media and backup buckets only.
pub fn main_identity_actions(config: &Config) -> Vec<String> {
    const ACTIONS: [&str; 5] = ["Admin", "Read", "List", "Tagging", "Write"];
    if !config.features.contains(&Feature::Li) {
        return ACTIONS.map(String::from).to_vec();
    }
    [&config.media.bucket, &config.backup.bucket]
        .iter()
        .flat_map(|b| ACTIONS.iter().map(move |a| format!("{a}:{b}")))
        .collect()
}

/// The LI backup identity's actions: read, list and write (barman writes WAL and base backups;
/// its retention deletes, which SeaweedFS's `Write` covers) in the LI backup bucket, nothing
/// else.
pub fn li_backup_identity_actions(config: &Config) -> Vec<String> {
    let b = config.backup.li_bucket_name();
    vec![
        format!("Read:{b}"),
        format!("List:{b}"),
        format!("Write:{b}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use mxstack_spec::Tier;

    #[test]
    fn with_li_main_reaches_only_its_own_buckets_and_li_backups_only_theirs() {
        let plain = Config::new("acme.test", Tier::T1k, [].into());
        assert_eq!(main_identity_actions(&plain)[0], "Admin");
        let li = Config::new("acme.test", Tier::T1k, [Feature::Li].into());
        let main = main_identity_actions(&li);
        assert!(main.contains(&"Admin:synapse-media".to_string()));
        assert!(main.contains(&"Write:pg-backups".to_string()));
        assert!(main.iter().all(|a| a.contains(':')), "{main:?}");
        assert!(!main.iter().any(|a| a.ends_with("-li")), "{main:?}");
        assert_eq!(
            li_backup_identity_actions(&li),
            [
                "Read:pg-backups-li",
                "List:pg-backups-li",
                "Write:pg-backups-li"
            ]
        );
    }
}

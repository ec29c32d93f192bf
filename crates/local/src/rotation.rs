//! Secret rotation on the running local stack (`mxstack rotate`): the phases, what the
//! supervisor does in each, and the journal that makes an interrupted rotation resumable.
//!
//! Every rotation runs the same four phases over its set of secrets, so several secrets share
//! one rolling restart of Synapse:
//!
//! 1. **stage**: secrets.yaml gets the new value, the old one kept as `previous.<name>`;
//! 2. **accept**: the components that can hold two values accept the new one besides the old
//!    (Valkey ACL, coturn's second `static-auth-secret`, SeaweedFS's second credential of an S3
//!    identity, the key vault's second API key), PostgreSQL's roles get the new password;
//! 3. **switch**: every process that reads the secret restarts, one at a time in start order;
//! 4. **retire**: `previous.<name>` is dropped; the accepting sides stop accepting the old value.
//!
//! The journal records the phase reached; each phase is idempotent, so a re-run redoes the
//! phase it stopped in and goes on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mxstack_spec::{SecretName, Secrets};
use serde::{Deserialize, Serialize};

use crate::control::Action;
use crate::layout::StateLayout;
use crate::plan::LocalPlan;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Stage,
    Accept,
    Switch,
    Retire,
    Done,
}

impl Phase {
    pub const ORDER: [Phase; 5] = [
        Phase::Stage,
        Phase::Accept,
        Phase::Switch,
        Phase::Retire,
        Phase::Done,
    ];

    pub fn next(self) -> Phase {
        let i = Phase::ORDER.iter().position(|p| *p == self).unwrap_or(4);
        Phase::ORDER[(i + 1).min(4)]
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Stage => "stage",
            Phase::Accept => "accept",
            Phase::Switch => "switch",
            Phase::Retire => "retire",
            Phase::Done => "done",
        }
    }
}

/// How the side that checks a secret takes a new value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acceptor {
    /// Only readers: they switch when they restart.
    None,
    /// coturn checks every `static-auth-secret` it is given: restarted with both, then the new.
    Coturn,
    /// Valkey's ACL holds several passwords of `default`; set at runtime, no restart.
    ValkeyAcl,
    /// PostgreSQL holds one password per role: set by re-running this setup task.
    PostgresRole(&'static str),
    /// SeaweedFS lists several credentials per S3 identity and re-reads s3.json on SIGHUP: no
    /// restart, no request refused.
    SeaweedS3,
    /// The key vault checks the current and the previous API key: restarted with both (the
    /// escrow module retries once across the restart), then with the new one only.
    KeyVault,
}

pub fn acceptor(name: SecretName) -> Acceptor {
    use SecretName::*;
    match name {
        TurnSharedSecret => Acceptor::Coturn,
        RedisPassword => Acceptor::ValkeyAcl,
        SynapseDbPassword => Acceptor::PostgresRole(POSTGRES_SETUP),
        // li_replicator lives on main; li-sync's restart moves the subscription to it.
        LiReplicationPassword => Acceptor::PostgresRole(LI_PREPARE_MAIN),
        LiDbPassword | LiWorkingCopyDbPassword | LiConsoleDbPassword => {
            Acceptor::PostgresRole(POSTGRES_LI_SETUP)
        }
        S3AccessKey
        | S3SecretKey
        | LiS3AccessKey
        | LiS3SecretKey
        | LiBrowsingS3AccessKey
        | LiBrowsingS3SecretKey
        | LiBackupS3AccessKey
        | LiBackupS3SecretKey => Acceptor::SeaweedS3,
        KeyVaultStoreApiKey | KeyVaultRetrievalApiKey => Acceptor::KeyVault,
        _ => Acceptor::None,
    }
}

const COTURN: &str = "coturn";
const POSTGRES_SETUP: &str = "postgres-setup";
const LI_PREPARE_MAIN: &str = "li-prepare-main";
const POSTGRES_LI_SETUP: &str = "postgres-li-setup";
const SEAWEEDFS: &str = "seaweedfs";
const KEY_VAULT: &str = "key-vault";

/// Whether `service` is the accepting side of `name` (handled in accept/retire, not switch).
fn accepts(name: SecretName, service: &str) -> bool {
    match acceptor(name) {
        Acceptor::Coturn => service == COTURN,
        Acceptor::ValkeyAcl => {
            service.starts_with("valkey-") && service != "valkey-master"
                || service.starts_with("sentinel-")
        }
        Acceptor::SeaweedS3 => service == SEAWEEDFS,
        Acceptor::KeyVault => service == KEY_VAULT,
        _ => false,
    }
}

/// The supervisor's actions for `phase` of rotating `names`, given the plan built from the
/// staged secrets (so the readers are those of the new values). Stage has none: the CLI
/// writes secrets.yaml.
pub fn actions(phase: Phase, names: &[SecretName], plan: &LocalPlan, s: &Secrets) -> Vec<Action> {
    let kinds: Vec<Acceptor> = names.iter().map(|n| acceptor(*n)).collect();
    let mut out = Vec::new();
    match phase {
        Phase::Stage | Phase::Done => {}
        Phase::Accept | Phase::Retire => {
            out.push(Action::Reload);
            out.extend(acceptor_actions(phase, &kinds, plan));
        }
        Phase::Switch => {
            out.push(Action::Reload);
            let restart = switch_restarts(names, plan, s);
            if !restart.is_empty() {
                out.push(Action::Restart(restart));
            }
        }
    }
    out
}

/// What the accepting sides do after the reload of accept (take the new value besides the old)
/// or retire (keep the new only). Each runs only where its component runs.
fn acceptor_actions(phase: Phase, kinds: &[Acceptor], plan: &LocalPlan) -> Vec<Action> {
    let mut out = Vec::new();
    let runs = |name: &str| plan.service(name).is_some();
    // S3 first: the new credentials must work before anything else that might use them.
    if kinds.contains(&Acceptor::SeaweedS3) && runs(SEAWEEDFS) {
        out.push(Action::Hup(vec![SEAWEEDFS.into()]));
    }
    let mut restart: Vec<String> = Vec::new();
    if kinds.contains(&Acceptor::Coturn) && runs(COTURN) {
        restart.push(COTURN.into());
    }
    if kinds.contains(&Acceptor::KeyVault) && runs(KEY_VAULT) {
        restart.push(KEY_VAULT.into());
    }
    if !restart.is_empty() {
        out.push(Action::Restart(restart));
    }
    if kinds.contains(&Acceptor::ValkeyAcl) {
        out.push(if phase == Phase::Accept {
            Action::ValkeyAccept
        } else {
            Action::ValkeyRetire
        });
    }
    if phase == Phase::Accept {
        let mut tasks: Vec<String> = Vec::new();
        for k in kinds {
            if let Acceptor::PostgresRole(task) = k {
                if runs(task) && !tasks.iter().any(|t| t == task) {
                    tasks.push(task.to_string());
                }
            }
        }
        if !tasks.is_empty() {
            out.push(Action::Run(tasks));
        }
    }
    out
}

/// The long-running processes that read any of `names` and do not accept it: in start order.
pub fn switch_restarts(names: &[SecretName], plan: &LocalPlan, s: &Secrets) -> Vec<String> {
    let mut restart: Vec<String> = Vec::new();
    for svc in plan.start_order() {
        let reads = names.iter().any(|n| {
            !accepts(*n, &svc.name)
                && plan
                    .readers_of(s.get(*n))
                    .iter()
                    .any(|r| r.name == svc.name)
        });
        if reads && !svc.one_shot && !restart.contains(&svc.name) {
            restart.push(svc.name.clone());
        }
    }
    restart
}

/// The record of a rotation in progress: `rotation.json` in the state directory, mode 0600.
/// It holds the new values only while the stage phase may need them again (until secrets.yaml
/// holds them), never afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// secrets.yaml names being rotated.
    pub names: Vec<String>,
    /// The phase to do next (a phase is recorded once it is complete).
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub staged: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot read the rotation journal {0}: {1}")]
    Read(PathBuf, String),
    #[error("cannot write the rotation journal {0}: {1}")]
    Write(PathBuf, std::io::Error),
}

pub fn journal_file(layout: &StateLayout) -> PathBuf {
    layout.root.join("rotation.json")
}

impl Journal {
    /// A new rotation of `names` with freshly generated values.
    pub fn start(names: &[SecretName]) -> Result<Journal, getrandom::Error> {
        let mut staged = BTreeMap::new();
        for n in names {
            staged.insert(n.key().to_string(), mxstack_spec::generate(n.shape())?);
        }
        Ok(Journal {
            names: names.iter().map(|n| n.key().to_string()).collect(),
            phase: Phase::Stage,
            staged,
        })
    }

    pub fn secret_names(&self) -> Vec<SecretName> {
        self.names
            .iter()
            .filter_map(|k| SecretName::from_key(k))
            .collect()
    }

    /// Stage: secrets.yaml gets the journal's new values, keeping the old as `previous.`.
    /// Idempotent: a value already in place is left, with its previous value.
    pub fn stage(&self, secrets: &mut Secrets) {
        for n in self.secret_names() {
            if let Some(v) = self.staged.get(n.key()) {
                secrets.replace_keeping_previous(n, v);
            }
        }
    }

    /// Retire, in secrets.yaml: the previous values are forgotten.
    pub fn retire(&self, secrets: &mut Secrets) {
        for n in self.secret_names() {
            secrets.drop_previous(n);
        }
    }

    /// Records that `done` is complete; past stage the new values leave the journal.
    pub fn advance(&mut self, done: Phase) {
        self.phase = done.next();
        if self.phase > Phase::Stage {
            self.staged.clear();
        }
    }

    pub fn load(path: &Path) -> Result<Option<Journal>, JournalError> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| JournalError::Read(path.into(), e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(JournalError::Read(path.into(), e.to_string())),
        }
    }

    /// Atomic, created 0600 (it may hold new values during stage).
    pub fn save(&self, path: &Path) -> Result<(), JournalError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(self).expect("journal serializes"))?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| JournalError::Write(path.into(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Programs;
    use mxstack_spec::{Config, Feature, Tier};

    fn plan(secrets: &Secrets) -> LocalPlan {
        let config = Config::new(
            "acme.test",
            Tier::T1k,
            [Feature::Calls, Feature::Antivirus].into(),
        );
        let layout = StateLayout::for_config(Path::new("/srv/mx/mxstack.yaml"), None);
        LocalPlan::build(
            &config,
            secrets,
            &layout,
            &crate::Shape::new(20000, 1),
            &Programs::at_debian_paths(),
        )
    }

    #[test]
    fn phases_run_in_order_and_end() {
        let mut p = Phase::Stage;
        let mut seen = vec![p];
        while p != Phase::Done {
            p = p.next();
            seen.push(p);
        }
        assert_eq!(seen, Phase::ORDER);
        assert_eq!(Phase::Done.next(), Phase::Done);
    }

    #[test]
    fn a_resumed_journal_stages_the_same_values_and_forgets_them_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rotation.json");
        let names = [SecretName::FormSecret, SecretName::TurnSharedSecret];
        let j = Journal::start(&names).unwrap();
        j.save(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let mut secrets = Secrets::generate_all().unwrap();
        let old = secrets.get(SecretName::FormSecret).to_string();
        // Interrupted after staging once: the re-run loads the journal and stages again.
        j.stage(&mut secrets);
        let mut again = Journal::load(&path).unwrap().unwrap();
        again.stage(&mut secrets);
        assert_eq!(secrets.get(SecretName::FormSecret), j.staged["form_secret"]);
        assert_eq!(secrets.previous(SecretName::FormSecret), Some(old.as_str()));
        again.advance(Phase::Stage);
        assert_eq!(again.phase, Phase::Accept);
        again.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(secrets.get(SecretName::FormSecret)),
            "{text}"
        );
        again.retire(&mut secrets);
        assert_eq!(secrets.previous(SecretName::FormSecret), None);
    }

    #[test]
    fn turn_is_accepted_by_coturn_first_and_synapse_switches_in_start_order() {
        let mut secrets = Secrets::generate_all().unwrap();
        let j = Journal::start(&[SecretName::TurnSharedSecret]).unwrap();
        j.stage(&mut secrets);
        let p = plan(&secrets);
        let names = j.secret_names();
        let accept = actions(Phase::Accept, &names, &p, &secrets);
        assert_eq!(
            accept,
            vec![Action::Reload, Action::Restart(vec!["coturn".into()])]
        );
        let coturn = p.files.iter().find(|f| f.path.ends_with("turnserver.conf"));
        let conf = &coturn.unwrap().content;
        assert_eq!(conf.matches("static-auth-secret=").count(), 2);
        let switch = switch_restarts(&names, &p, &secrets);
        assert_eq!(switch.first().map(String::as_str), Some("synapse-main"));
        assert!(!switch.contains(&"coturn".to_string()));
        assert!(
            switch.iter().all(|n| n.starts_with("synapse-")),
            "{switch:?}"
        );
    }

    #[test]
    fn redis_switches_its_clients_and_not_valkey_itself() {
        let mut secrets = Secrets::generate_all().unwrap();
        let j = Journal::start(&[SecretName::RedisPassword]).unwrap();
        j.stage(&mut secrets);
        let p = plan(&secrets);
        let names = j.secret_names();
        let switch = switch_restarts(&names, &p, &secrets);
        assert!(switch.contains(&"valkey-master".to_string()), "{switch:?}");
        assert!(switch.contains(&"synapse-main".to_string()));
        assert!(!switch
            .iter()
            .any(|n| n.starts_with("sentinel-") || n == "valkey-0"));
        assert_eq!(
            actions(Phase::Retire, &names, &p, &secrets),
            vec![Action::Reload, Action::ValkeyRetire]
        );
    }

    #[test]
    fn the_database_password_is_set_on_the_role_before_synapse_switches() {
        let mut secrets = Secrets::generate_all().unwrap();
        let names = [SecretName::SynapseDbPassword];
        Journal::start(&names).unwrap().stage(&mut secrets);
        let p = plan(&secrets);
        assert_eq!(
            actions(Phase::Accept, &names, &p, &secrets),
            vec![Action::Reload, Action::Run(vec!["postgres-setup".into()])]
        );
        let switch = switch_restarts(&names, &p, &secrets);
        assert!(
            switch.iter().all(|n| n.starts_with("synapse-")),
            "{switch:?}"
        );
        assert!(!switch.is_empty());
    }

    fn li_plan(secrets: &Secrets) -> LocalPlan {
        let config = Config::new("acme.test", Tier::T1k, [Feature::Calls, Feature::Li].into());
        let layout = StateLayout::for_config(Path::new("/srv/mx/mxstack.yaml"), None);
        LocalPlan::build(
            &config,
            secrets,
            &layout,
            &crate::Shape::new(20000, 1),
            &Programs::at_debian_paths(),
        )
    }

    fn staged(names: &[SecretName]) -> (Secrets, LocalPlan) {
        let mut secrets = Secrets::generate_all().unwrap();
        Journal::start(names).unwrap().stage(&mut secrets);
        let p = li_plan(&secrets);
        (secrets, p)
    }

    #[test]
    fn s3_keys_are_accepted_by_seaweedfs_without_a_restart_and_then_every_client_switches() {
        let names = [
            SecretName::S3AccessKey,
            SecretName::S3SecretKey,
            SecretName::LiS3AccessKey,
            SecretName::LiS3SecretKey,
        ];
        let (secrets, p) = staged(&names);
        let accept = actions(Phase::Accept, &names, &p, &secrets);
        assert_eq!(
            accept,
            vec![Action::Reload, Action::Hup(vec!["seaweedfs".into()])]
        );
        // While both are accepted, s3.json lists both pairs of each rotated identity.
        let s3 = p
            .files
            .iter()
            .find(|f| f.path.ends_with("s3.json"))
            .unwrap();
        for n in names {
            assert!(s3.content.contains(secrets.get(n)), "{n:?}");
            assert!(s3.content.contains(secrets.previous(n).unwrap()), "{n:?}");
        }
        let switch = switch_restarts(&names, &p, &secrets);
        assert!(!switch.contains(&"seaweedfs".to_string()), "{switch:?}");
        // PostgreSQL archives through barman, which reads its credentials file at each run.
        assert!(!switch.contains(&"postgres".to_string()), "{switch:?}");
        assert_eq!(switch.first().map(String::as_str), Some("synapse-main"));
        assert!(switch.contains(&"li-sync".to_string()), "{switch:?}");
        assert!(!switch.contains(&"li-console".to_string()), "{switch:?}");
        assert_eq!(
            actions(Phase::Retire, &names, &p, &secrets),
            vec![Action::Reload, Action::Hup(vec!["seaweedfs".into()])]
        );
        let creds = p
            .files
            .iter()
            .find(|f| f.path.ends_with("postgres/s3-credentials"))
            .unwrap();
        assert!(creds.per_use && creds.owner == Some("postgres"));
        assert!(creds.content.contains(secrets.get(SecretName::S3SecretKey)));
    }

    #[test]
    fn the_vault_accepts_both_keys_before_main_and_the_console_switch() {
        let names = [
            SecretName::KeyVaultStoreApiKey,
            SecretName::KeyVaultRetrievalApiKey,
        ];
        let (secrets, p) = staged(&names);
        assert_eq!(
            actions(Phase::Accept, &names, &p, &secrets),
            vec![Action::Reload, Action::Restart(vec!["key-vault".into()])]
        );
        let vault = p.service("key-vault").unwrap();
        let env: BTreeMap<_, _> = vault.env.iter().cloned().collect();
        let prev = mxstack_topology::escrow::other_env(mxstack_topology::escrow::ENV_STORE_API_KEY);
        assert_eq!(
            env.get(&prev).map(String::as_str),
            secrets.previous(SecretName::KeyVaultStoreApiKey)
        );
        assert!(vault.secret_env.contains(&prev));
        // Main's escrow module reads its key file at each request: no Synapse restart; the
        // console restarts for the retrieval key.
        assert_eq!(
            switch_restarts(&names, &p, &secrets),
            vec!["li-console".to_string()]
        );
        assert_eq!(
            actions(Phase::Retire, &names, &p, &secrets),
            vec![Action::Reload, Action::Restart(vec!["key-vault".into()])]
        );
        let mut retired = secrets.clone();
        retired.drop_previous(SecretName::KeyVaultStoreApiKey);
        retired.drop_previous(SecretName::KeyVaultRetrievalApiKey);
        let p = li_plan(&retired);
        assert!(!p
            .service("key-vault")
            .unwrap()
            .env
            .iter()
            .any(|(k, _)| k.ends_with("_OTHER")));
    }

    #[test]
    fn li_passwords_are_set_on_their_roles_then_their_readers_restart() {
        let names = [
            SecretName::LiReplicationPassword,
            SecretName::LiDbPassword,
            SecretName::LiWorkingCopyDbPassword,
            SecretName::LiConsoleDbPassword,
        ];
        let (secrets, p) = staged(&names);
        assert_eq!(
            actions(Phase::Accept, &names, &p, &secrets),
            vec![
                Action::Reload,
                Action::Run(vec!["li-prepare-main".into(), "postgres-li-setup".into()])
            ]
        );
        assert_eq!(
            switch_restarts(&names, &p, &secrets),
            vec![
                "li-sync".to_string(),
                "li-console".to_string(),
                "synapse-li".to_string()
            ]
        );
        assert_eq!(
            actions(Phase::Retire, &names, &p, &secrets),
            vec![Action::Reload]
        );
    }

    #[test]
    fn livekit_keys_restart_rtc_auth_only_and_the_gate_password_nothing() {
        let names = [SecretName::LivekitApiKey, SecretName::LivekitApiSecret];
        let (secrets, p) = staged(&names);
        assert_eq!(
            switch_restarts(&names, &p, &secrets),
            vec!["rtc-auth".to_string()]
        );
        let names = [SecretName::LiGatePassword];
        let (secrets, p) = staged(&names);
        assert!(switch_restarts(&names, &p, &secrets).is_empty());
        assert_eq!(
            actions(Phase::Accept, &names, &p, &secrets),
            vec![Action::Reload]
        );
    }

    #[test]
    fn the_scanner_secret_restarts_the_scanner_only() {
        let secrets = Secrets::generate_all().unwrap();
        let p = plan(&secrets);
        let names = [SecretName::ContentScannerRequestSecret];
        assert_eq!(
            switch_restarts(&names, &p, &secrets),
            vec!["content-scanner".to_string()]
        );
    }
}

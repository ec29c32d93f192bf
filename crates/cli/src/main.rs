//! `mxstack`: a thin command-line layer over the spec, topology, checks and target crates.

mod backup;
mod cluster;
mod commands;
mod escrow;
mod images;
mod li;
mod li_console;
mod loadtest;
mod local;
mod rotate;
mod runtime;
mod scale;
mod schema_doc;
mod upgrade;
mod upgrade_k8s;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

type CmdResult = Result<ExitCode, String>;

#[derive(Parser)]
#[command(
    name = "mxstack",
    version,
    about = "One config file to a complete, correct Matrix/Synapse deployment"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write DIR/mxstack.yaml (the config) and DIR/secrets.yaml (every secret, mode 0600).
    /// Re-running keeps existing secrets and the existing config.
    Init {
        /// The Matrix server name (user IDs look like @alice:DOMAIN).
        #[arg(long)]
        domain: String,
        /// Concurrent users: 100, 1k, 5k, 10k or 20k.
        #[arg(long)]
        scale: String,
        /// Comma list of federation, li, antivirus, calls, push, monitoring
        /// [default: li,antivirus,calls,monitoring].
        #[arg(long)]
        features: Option<String>,
        /// Mailbox for the Let's Encrypt account [default: postmaster@DOMAIN].
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Sizing report for the config's tier: nodes, resources, replicas, connection budget, and
    /// the network flows the NetworkPolicies allow.
    Plan {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
        /// Print the network flows as the Markdown table of docs/NETWORK.md.
        #[arg(long)]
        network_markdown: bool,
        /// Print the alerts (meaning, fix, expression) as docs/MONITORING.md.
        #[arg(long)]
        alerts_markdown: bool,
        /// Instead of the sizing: what moving a running deployment from this config to
        /// --config takes (live, rolling restart, coordinated restart of every Synapse process,
        /// new nodes), in the order to carry them out (docs/SCALING.md).
        #[arg(long)]
        from: Option<PathBuf>,
    },
    /// Write Kubernetes manifests into OUT as ordered phase folders with kustomizations.
    Render {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Secrets file [default: secrets.yaml next to the config].
        #[arg(long)]
        secrets: Option<PathBuf>,
        /// Name every image `mxstack images build` built by its digest from this images.lock
        /// (refused if the lock is stale; images it lacks are reported).
        #[arg(long, value_name = "LOCK")]
        pin: Option<PathBuf>,
        /// Also write 05-operators: the operators the config needs, from the pinned upstream
        /// release manifests built in (off: for clusters that manage their operators themselves).
        #[arg(long)]
        with_operators: bool,
        #[arg(long)]
        json: bool,
    },
    /// Validate the config and the rendered topology; exit 1 on any error. With --cluster, also
    /// the live cluster: Kubernetes version, operators and their CRDs, the StorageClass, nodes for
    /// each node role, a CNI that enforces NetworkPolicies.
    Check {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        secrets: Option<PathBuf>,
        /// Also check the cluster of the kubeconfig's current context (read-only).
        #[arg(long)]
        cluster: bool,
        /// [default: KUBECONFIG, ~/.kube/config, or in-cluster]
        #[arg(long, requires = "cluster")]
        kubeconfig: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Apply the rendered manifests to the cluster phase by phase (server-side apply, field
    /// manager `mxstack`), waiting between phases for what the next needs: the database Ready,
    /// certificates issued, workloads rolled out, jobs complete. Idempotent. Secrets are applied,
    /// never printed. Exit 1 when a phase stops (it says which and how to resume).
    Deploy {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        secrets: Option<PathBuf>,
        /// [default: KUBECONFIG, ~/.kube/config, or in-cluster]
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// Server-side dry run: change nothing, show each object's diff.
        #[arg(long)]
        dry_run: bool,
        /// Delete this instance's objects that left the render (only objects with its ApplySet
        /// label and mxstack's managed-by label; never the operators).
        #[arg(long)]
        prune: bool,
        /// Take over fields another field manager owns instead of stopping on the conflict.
        #[arg(long)]
        force_conflicts: bool,
        /// Stop every Synapse process before any starts, main first: for a Synapse release that
        /// changes the database schema (`mxstack upgrade --kubernetes` says when). Done without
        /// asking when the stream writers or sharded instances change (docs/SCALING.md).
        #[arg(long)]
        coordinated: bool,
        /// Also apply the vendored operator releases the config needs (the 05-operators phase of
        /// `render --with-operators`), after 00-namespace; never pruned. Operators that are not
        /// vendored are named, to be installed first.
        #[arg(long)]
        with_operators: bool,
        /// Longest wait for one object to become ready: seconds, or 90s, 10m, 1h.
        #[arg(long, default_value = "10m")]
        timeout: String,
        /// One JSON event per line on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of mxstack.yaml (`--markdown`: the reference in docs/CONFIG.md).
    Schema {
        #[arg(long)]
        markdown: bool,
    },
    /// List every check rule (id, title, the seed defect it covers, fix).
    Rules {
        #[arg(long)]
        json: bool,
    },
    /// Install what a local stack (`mxstack up`) needs: the Debian packages (as root) and a
    /// Python venv with Synapse, its S3 storage provider and SeaweedFS, into the runtime's home
    /// (MXSTACK_HOME, else /opt/mxstack as root, else ~/.local/share/mxstack), where `up` finds
    /// it from any directory. Idempotent.
    Setup {
        /// The runtime's home [default: MXSTACK_HOME, /opt/mxstack as root, else
        /// ~/.local/share/mxstack]. `up` looks there only by default or with MXSTACK_HOME set.
        #[arg(long)]
        home: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Report what `mxstack up` needs (with --config: for that config's features), what is
    /// present and what is missing, with the fix for each. Exit 1 when anything is missing.
    Doctor {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Start the whole main instance on this machine and return once every process is healthy
    /// (a supervisor keeps running in the background). Running it twice is harmless.
    Up {
        #[arg(long)]
        config: PathBuf,
        /// Runtime state directory [default: .mxstack-state next to the config].
        #[arg(long)]
        state: Option<PathBuf>,
        /// Processes per worker group (single-writer streams stay at one); 0 runs Synapse as a
        /// single process with no workers (the router sends everything to main).
        #[arg(long, default_value_t = 1)]
        replicas: u32,
        /// First port of the block the stack uses on 127.0.0.1.
        #[arg(long, default_value_t = 18000)]
        base_port: u16,
        /// Keep the supervisor attached to this terminal (Ctrl-C stops the stack).
        #[arg(long)]
        foreground: bool,
        #[arg(long)]
        secrets: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// One row per process: name, pid, state, restarts, port.
    Status {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        state: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Print a process's log (all processes when none is named).
    Logs {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        state: Option<PathBuf>,
        process: Option<String>,
        #[arg(long)]
        follow: bool,
    },
    /// Stop everything cleanly (data is kept unless --purge).
    Down {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        state: Option<PathBuf>,
        /// Also delete all local data (database, media, logs).
        #[arg(long)]
        purge: bool,
        /// One JSON object on stdout: {"stopped": bool, "deleted": path or null}.
        #[arg(long)]
        json: bool,
    },
    /// Upgrade the local stack's Synapse: installs VERSION beside the current one, proves every
    /// process's config loads in it, checks the database's schema against it and prints the plan;
    /// with --apply stops the stack, lets main migrate once before any worker starts, starts it
    /// again and waits for LI to absorb the new schema. Exit 1 when refused (docs/UPGRADE.md)
    Upgrade {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        state: Option<PathBuf>,
        #[arg(long)]
        secrets: Option<PathBuf>,
        /// The Synapse version, e.g. 1.163.2.
        #[arg(long)]
        synapse: String,
        /// Carry the plan out (without it, only the plan is printed). With --kubernetes: set
        /// images.synapse in mxstack.yaml; `render` and `deploy` (with `--coordinated` when the
        /// plan says so) then roll it out.
        #[arg(long)]
        apply: bool,
        #[arg(long)]
        json: bool,
        /// Plan for a Kubernetes deployment: from the version images.synapse names, rolling or
        /// coordinated (docs/UPGRADE.md).
        #[arg(long)]
        kubernetes: bool,
        /// Locally: stop every Synapse process before any starts on the new version even when
        /// a rolling restart would do (what a schema change gets anyway).
        #[arg(long, conflicts_with = "kubernetes")]
        coordinated: bool,
    },
    /// Change the worker layout of the running local stack, e.g. `synchrotron=2
    /// event-persister=2` (groups: synchrotron, generic, media-repository, event-persister,
    /// federation-sender, pusher; 1 to 8 processes each). More or fewer synchrotrons or generic
    /// workers is live: only they start or stop, the router reloads in place. A change of the
    /// stream writers or sharded instances is a coordinated restart: every Synapse process stops
    /// before any starts with the new lists; refused unless every Synapse process is ready. The
    /// shape is kept across `down`/`up` with the same --replicas. An interrupted scale re-run
    /// finishes (docs/SCALING.md).
    Scale {
        /// GROUP=N changes.
        changes: Vec<String>,
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        state: Option<PathBuf>,
        #[arg(long)]
        secrets: Option<PathBuf>,
        /// Print what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Replace secrets without losing a request: the new value is accepted before the old one
    /// is dropped wherever the component allows it (docs/ROTATION.md). Locally it is applied to
    /// the running stack (phases stage, accept, switch, retire; an interrupted run re-run resumes
    /// at the recorded phase). With --kubernetes it replaces the value in secrets.yaml; `render`
    /// and `deploy` then roll exactly the workloads that read it. Where a component accepts two
    /// values (SeaweedFS: the S3 keys, LiveKit: its keys, the key vault: its API keys) that takes
    /// three deploys: NAME --kubernetes (the new value accepted), --kubernetes --switch (the
    /// readers use it), --kubernetes --retire (the old one refused).
    ///
    /// Rotatable: synapse_db_password, redis_password, macaroon_secret_key (logs out guests
    /// only), form_secret, registration_shared_secret, worker_replication_secret,
    /// turn_shared_secret, content_scanner_request_secret; the S3 keys (s3_*, li_s3_*,
    /// li_browsing_s3_*: SeaweedFS holds both pairs, no restart), the key vault API keys (the
    /// vault accepts both while Synapse and the LI console switch), the LI passwords
    /// (li_replication_password also moves li-sync's subscription; li_gate_password: investigators
    /// type the new one) and the LiveKit keys. An access key and its secret key (and the LiveKit
    /// key and secret) always rotate together. Never: synapse_signing_key,
    /// key_vault_age_identity, li_console_signing_key (the command says why).
    Rotate {
        /// secrets.yaml names of the secrets to rotate.
        names: Vec<String>,
        /// Every rotatable secret, with one rolling restart.
        #[arg(long, conflicts_with = "names")]
        all_rotatable: bool,
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        state: Option<PathBuf>,
        #[arg(long)]
        secrets: Option<PathBuf>,
        /// Change secrets.yaml for a Kubernetes deployment instead of the local stack.
        #[arg(long)]
        kubernetes: bool,
        /// With --kubernetes, the second step of a rotation whose accepting side holds two
        /// values (SeaweedFS, LiveKit, the key vault), after the deploy that made it accept the
        /// new one: the readers switch to it on the next deploy.
        #[arg(long, requires = "kubernetes", conflicts_with_all = ["names", "all_rotatable", "retire"])]
        switch: bool,
        /// With --kubernetes, the third step, after the readers' deploy: the old values are
        /// dropped; the next deploy rolls the accepting side alone.
        #[arg(long, requires = "kubernetes", conflicts_with_all = ["names", "all_rotatable"])]
        retire: bool,
    },
    /// PostgreSQL backups of the local stack (barman-cloud into the backup bucket, the layout
    /// CloudNativePG's Barman Cloud plugin writes) and the offline export of secrets.yaml
    /// (docs/BACKUP.md).
    Backup {
        #[command(subcommand)]
        action: BackupAction,
    },
    /// Restore the local stack's PostgreSQL to a point in time: the target is checked against
    /// every archive before anything stops; the stack is stopped, the data directories moved
    /// aside (never deleted), the newest base backup before the target restored, the archived
    /// WAL replayed to the target (the LI cluster: to the end of its archive), the LI
    /// subscription re-attached to main, and the stack started again. With --kubernetes, print
    /// the CloudNativePG recovery Clusters instead (docs/BACKUP.md).
    Restore {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        state: Option<PathBuf>,
        #[arg(long)]
        secrets: Option<PathBuf>,
        /// `latest` (everything archived) or an RFC 3339 time, e.g. 2026-05-01T12:00:00Z.
        #[arg(long)]
        to: String,
        /// Print the CloudNativePG recovery (a new Cluster bootstrapped from the Barman Cloud
        /// plugin's ObjectStore, its ScheduledBackup, the switch-over Service) as YAML.
        #[arg(long)]
        kubernetes: bool,
        /// The recovered cluster's name (CloudNativePG recovers into a new cluster).
        #[arg(long, default_value = "main-pg-restore", requires = "kubernetes")]
        name: String,
        /// The recovered LI cluster's name (feature li).
        #[arg(long, default_value = "li-pg-restore", requires = "kubernetes")]
        li_name: String,
        /// Restore `main` or `li` only [default: every cluster]. The LI cluster is always
        /// restored to the end of its archive.
        #[arg(long, conflicts_with = "kubernetes")]
        cluster: Option<String>,
        #[arg(long, conflicts_with = "kubernetes")]
        json: bool,
    },
    /// Verify a running deployment (local or a cluster): every check PASS, WARN, FAIL or SKIP
    /// with a fix; exit 1 on any FAIL (docs/VERIFY.md).
    Verify(verify::Args),
    /// Load a deployment as the seed sizes its tier (CCU with /sync long-polls, messages,
    /// uploads, typing, receipts) and say whether the tier's promise holds: p99 delivery and
    /// error rate within the SLO, nothing acknowledged lost. Exit 0 pass, 1 fail, 2 bad input,
    /// 3 generator-limited (docs/LOADTEST.md).
    Loadtest(loadtest::Args),
    /// Manage users of the local stack.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// The lawful-intercept data path: status, schema upgrades, preparing main.
    Li {
        #[command(subcommand)]
        action: LiAction,
    },
    /// Escrow your E2EE key with your organisation's key vault, through the homeserver's
    /// escrow endpoint (feature li; docs/ESCROW.md). The server checks it against your current
    /// key backup and refuses a key that does not open it.
    Escrow {
        /// The homeserver's base URL (http://; e.g. the router of a local stack).
        #[arg(long)]
        homeserver: String,
        /// File holding your access token [default: the MXSTACK_ACCESS_TOKEN variable].
        #[arg(long)]
        access_token_file: Option<PathBuf>,
        /// backup_key (the base64 key backup private key) or recovery_key (the secret-storage
        /// recovery key, `EsT...`).
        #[arg(long, value_parser = ["backup_key", "recovery_key"])]
        kind: String,
        /// File holding the key (never pass a key on the command line).
        #[arg(long)]
        key_file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Container images: build mxstack's (OCI archives + images.lock, no registry needed), list
    /// every image a config's render references, push the built ones to a registry
    /// (images/README.md).
    Images {
        #[command(subcommand)]
        action: ImagesAction,
    },
    /// Run one of mxstack's services (what the pods and `mxstack up` start).
    Serve {
        #[command(subcommand)]
        service: ServeService,
    },
    /// Run the supervisor (started by `up`; not for direct use).
    #[command(hide = true)]
    Supervise {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        state: Option<PathBuf>,
        #[arg(long)]
        replicas: u32,
        #[arg(long)]
        base_port: u16,
        #[arg(long)]
        secrets: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum BackupAction {
    /// Take a base backup of the running local PostgreSQL clusters now (barman-cloud-backup):
    /// main, and with feature li the LI cluster, each to its own archive.
    Now {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        state: Option<PathBuf>,
        #[arg(long)]
        secrets: Option<PathBuf>,
        /// `main` or `li` [default: every cluster].
        #[arg(long)]
        cluster: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List each cluster's base backups and its oldest restorable time.
    List {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        state: Option<PathBuf>,
        #[arg(long)]
        secrets: Option<PathBuf>,
        /// `main` or `li` [default: every cluster].
        #[arg(long)]
        cluster: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Encrypt secrets.yaml (Synapse's signing key and every generated secret) with age to one or
    /// more recipients, for offline storage. Decrypt with `age -d -i KEY FILE`.
    ExportSecrets {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        secrets: Option<PathBuf>,
        /// An age public key (age1...); repeat for several.
        #[arg(long, required = true)]
        recipient: Vec<String>,
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing --out file.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ImagesAction {
    /// Build the images (rebuilding only those whose inputs changed) into OCI archives and
    /// DIR/images.lock. Needs podman, runc, skopeo and mmdebstrap (Debian packages).
    Build {
        #[arg(long, default_value = "mxstack-images")]
        out: PathBuf,
        /// Comma list of images [default: all: synapse, mxstack, haproxy, valkey, clamav, coturn].
        #[arg(long)]
        only: Option<String>,
        /// The mxstack binary for the mxstack image [default: cargo build --release in the
        /// checkout around the current directory].
        #[arg(long)]
        binary: Option<PathBuf>,
        /// CA bundle the builds trust for PyPI [default: SSL_CERT_FILE, else Debian's bundle].
        #[arg(long)]
        ca_bundle: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Every image the config's render references (for mirroring): the images.<field> that sets
    /// it, whether mxstack builds it, and its digest (with --lock) or tag.
    List {
        #[arg(long)]
        config: PathBuf,
        /// An images.lock to show digests from.
        #[arg(long)]
        lock: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Copy the built images to a registry with skopeo, digests unchanged
    /// (REGISTRY[/PATH]/NAME:TAG), and print the images: settings for mxstack.yaml.
    Push {
        /// REGISTRY[/PATH], or oci:DIR / dir:DIR for a local copy.
        #[arg(long)]
        registry: String,
        /// The directory `images build` wrote.
        #[arg(long, default_value = "mxstack-images")]
        dir: PathBuf,
        #[arg(long)]
        only: Option<String>,
        /// Push over plain HTTP / without verifying the registry's certificate (test registries).
        #[arg(long)]
        insecure: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ServeService {
    /// The content scanner: media downloads through clamd, the matrix-content-scanner API, and
    /// upload scans for Synapse (crates/content-scanner/README.md).
    ContentScanner {
        /// The scanner's config file (rendered by `mxstack render`, written by `mxstack up`).
        #[arg(long)]
        config: PathBuf,
        /// Worker threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// The MatrixRTC authorization service: exchanges our users' OpenID tokens for LiveKit
    /// tokens, for Element Call (crates/rtc-auth/README.md).
    RtcAuth {
        /// Its config file (the LiveKit keys come from the environment variable it names).
        #[arg(long)]
        config: PathBuf,
    },
    /// li-sync: keeps the LI replica's schema, subscription and history, copies media, serves
    /// /status and /metrics (crates/li-sync/README.md).
    LiSync {
        /// li-sync's config file (rendered by `mxstack render`, written by `mxstack up`).
        #[arg(long)]
        config: PathBuf,
    },
    /// The key vault: escrow of users' E2EE recovery keys, age-encrypted to the LI side's key,
    /// append-only, retrievals recorded with their warrant (crates/key-vault/README.md).
    KeyVault {
        /// The vault's config file (API keys and database password come from the environment
        /// variables it names).
        #[arg(long)]
        config: PathBuf,
    },
    /// The LI console: warrant-scoped, audited pages over the LI replica with E2EE recovery from
    /// escrowed keys (crates/li-console/README.md).
    LiConsole {
        /// The console's config file (credentials come from the environment variables it names).
        #[arg(long)]
        config: PathBuf,
    },
}

/// Where an LI console command finds the console's database.
#[derive(clap::Args)]
struct ConsoleSource {
    /// The stack's config (a stack started with `mxstack up`).
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    state: Option<PathBuf>,
    /// The console's own config file (inside its pod).
    #[arg(long, conflicts_with = "config")]
    console_config: Option<PathBuf>,
    /// The console's SQLite file itself.
    #[arg(long, conflicts_with_all = ["config", "console_config"])]
    database: Option<PathBuf>,
}

impl ConsoleSource {
    fn source(self) -> li_console::ConsoleSource {
        li_console::ConsoleSource {
            config: self.config,
            state: self.state,
            console_config: self.console_config,
            database: self.database,
        }
    }
}

#[derive(Subcommand)]
enum ConsoleAction {
    /// Create a console account (roles: investigator, supervisor, auditor). Prints the TOTP
    /// secret (and the password, when generated) once. On Kubernetes run it in the console's pod:
    /// `kubectl exec deploy/li-console -- mxstack li console add-user --console-config
    /// /etc/mxstack/li-console.yaml NAME --role ROLE`.
    AddUser {
        #[command(flatten)]
        source: ConsoleSource,
        username: String,
        #[arg(long)]
        role: String,
        /// Read the password from stdin instead of generating one.
        #[arg(long)]
        password_stdin: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AuditAction {
    /// Check the console's hash-chained audit log: every row's hash, every link, no gaps. Exit 2
    /// names the first row that was changed or removed. `--expect-head` (the last hash the console
    /// logged) also detects removal of the newest rows.
    Verify {
        #[command(flatten)]
        source: ConsoleSource,
        #[arg(long)]
        expect_head: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ExportAction {
    /// Check an evidence package from the console: the manifest's Ed25519 signature, every file's
    /// SHA-256 and size, nothing unlisted. Exit 2 when it does not verify.
    Verify {
        /// The package (`evidence-warrant-N-T.tar`).
        file: PathBuf,
        /// The console's public key (base64, shown on every warrant page).
        #[arg(long)]
        public_key: Option<String>,
        /// A local stack: use its console's key.
        #[arg(long, conflicts_with = "public_key")]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

/// Where an `mxstack li` command finds li-sync's config and credentials.
#[derive(clap::Args)]
struct LiSource {
    /// The stack's config (a stack started with `mxstack up`).
    #[arg(long, required_unless_present = "li_sync_config")]
    config: Option<PathBuf>,
    #[arg(long)]
    state: Option<PathBuf>,
    #[arg(long)]
    secrets: Option<PathBuf>,
    /// li-sync's own config file (inside a pod; credentials from the environment).
    #[arg(long, conflicts_with = "config")]
    li_sync_config: Option<PathBuf>,
}

impl LiSource {
    fn target(self) -> li::LiTarget {
        li::LiTarget {
            config: self.config,
            state: self.state,
            secrets: self.secrets,
            li_sync_config: self.li_sync_config,
        }
    }
}

#[derive(Subcommand)]
enum LiAction {
    /// Subscription state, lag, apply errors, slot retention, schema, history, last media pass
    /// and a row-count comparison of the main tables. Exit 2 when something needs attention.
    Status {
        #[command(flatten)]
        source: LiSource,
        #[arg(long)]
        json: bool,
    },
    /// Apply main's additive schema difference to the replica and refresh the subscription now
    /// (li-sync also does this on its own within seconds of a Synapse migration).
    UpgradeSchema {
        #[command(flatten)]
        source: LiSource,
        #[arg(long)]
        json: bool,
    },
    /// Dump mode (`li.sync: dump`): copy a consistent snapshot of main into the replica now, in
    /// one transaction, keeping every row the previous copy had and main no longer has
    /// (history operation REMOVED). Holds a lock (a second run is refused) and records the run
    /// (`li status` shows it). Progress per table on stderr. The Kubernetes CronJob runs it.
    Dump {
        #[command(flatten)]
        source: LiSource,
        #[arg(long)]
        json: bool,
    },
    /// Refresh the browsing stack's working copy (Synapse LI's database) from the replica: one
    /// snapshot, one transaction, sequences set, main's access tokens removed. With --config (a
    /// local stack) it then restarts `synapse-li`, which caches, and waits until it is ready; on
    /// Kubernetes the `li-working-copy` CronJob runs it on `li.working_copy_schedule` and restarts
    /// the Deployment.
    RefreshWorkingCopy {
        #[command(flatten)]
        source: LiSource,
        #[arg(long)]
        json: bool,
    },
    /// After a restore of main (or of the LI cluster): attach the subscription to main again.
    /// Run it while nothing writes to main (`mxstack restore` does, with the stack down; on
    /// Kubernetes with Synapse scaled to 0). The slot is created anew, main's present state is
    /// absorbed (rows the LI side has and main no longer has are kept in history as REMOVED),
    /// the subscription resumes from the new slot (docs/BACKUP.md).
    Reattach {
        #[command(flatten)]
        source: LiSource,
        #[arg(long)]
        json: bool,
    },
    /// Prepare main for logical replication as its superuser (replica identities, event trigger,
    /// read-only replication role grants, publication). Idempotent; the Kubernetes Job runs it.
    /// The superuser comes from MXSTACK_LI_MAIN_ADMIN_USER / MXSTACK_LI_MAIN_ADMIN_PASSWORD.
    PrepareMain {
        #[arg(long)]
        li_sync_config: PathBuf,
    },
    /// Print a new age X25519 key pair for the key vault: the public key (`age1...`) goes in the
    /// vault's config (`recipients.vault`, or `recipients.break_glass` for an offline key); the
    /// private key (`AGE-SECRET-KEY-1...`) goes only into the LI console's Secret (or offline
    /// storage for break-glass), never to the vault. Text output is an age identity file.
    VaultKeygen {
        #[arg(long)]
        json: bool,
    },
    /// The LI console's accounts.
    Console {
        #[command(subcommand)]
        action: ConsoleAction,
    },
    /// The LI console's audit log.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Evidence packages exported by the LI console.
    Export {
        #[command(subcommand)]
        action: ExportAction,
    },
}

#[derive(Subcommand)]
enum UserAction {
    /// Create a user through Synapse's shared-secret registration; prints user_id, password, token.
    Add {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        state: Option<PathBuf>,
        name: String,
        #[arg(long)]
        admin: bool,
        /// Password [default: generated].
        #[arg(long)]
        password: Option<String>,
        #[arg(long)]
        secrets: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> CmdResult {
    match command {
        Command::Init {
            domain,
            scale,
            features,
            email,
            dir,
            json,
        } => commands::init(
            &domain,
            &scale,
            features.as_deref(),
            email.as_deref(),
            &dir,
            json,
        ),
        Command::Plan {
            config,
            json,
            network_markdown,
            alerts_markdown,
            from: Some(from),
        } if !network_markdown && !alerts_markdown => commands::change_plan(&from, &config, json),
        Command::Plan {
            config,
            json,
            network_markdown,
            alerts_markdown,
            ..
        } => commands::plan(&config, json, network_markdown, alerts_markdown),
        Command::Render {
            config,
            out,
            secrets,
            pin,
            with_operators,
            json,
        } => commands::render(
            &config,
            secrets.as_deref(),
            &out,
            pin.as_deref(),
            with_operators,
            json,
        ),
        Command::Check {
            config,
            secrets,
            cluster,
            kubeconfig,
            json,
        } => commands::check(
            &config,
            secrets.as_deref(),
            cluster,
            kubeconfig.as_deref(),
            json,
        ),
        Command::Deploy {
            config,
            secrets,
            kubeconfig,
            dry_run,
            prune,
            force_conflicts,
            coordinated,
            with_operators,
            timeout,
            json,
        } => cluster::parse_timeout(&timeout).and_then(|timeout| {
            cluster::deploy(cluster::DeployArgs {
                config: &config,
                secrets: secrets.as_deref(),
                kubeconfig: kubeconfig.as_deref(),
                dry_run,
                prune,
                force_conflicts,
                coordinated,
                with_operators,
                timeout,
                json,
            })
        }),
        Command::Schema { markdown } => commands::schema(markdown),
        Command::Rules { json } => commands::rules(json),
        Command::Setup { home, json } => runtime::setup(home.as_deref(), json),
        Command::Doctor { config, json } => runtime::doctor(config.as_deref(), json),
        Command::Up {
            config,
            state,
            replicas,
            base_port,
            foreground,
            secrets,
            json,
        } => local::up(
            &local::Target::new(&config, state.as_deref(), secrets.as_deref()),
            replicas,
            base_port,
            foreground,
            json,
            true,
        ),
        Command::Status {
            config,
            state,
            json,
        } => local::status(&local::Target::new(&config, state.as_deref(), None), json),
        Command::Logs {
            config,
            state,
            process,
            follow,
        } => local::logs(
            &local::Target::new(&config, state.as_deref(), None),
            process.as_deref(),
            follow,
        ),
        Command::Down {
            config,
            state,
            purge,
            json,
        } => local::down(
            &local::Target::new(&config, state.as_deref(), None),
            purge,
            json,
        ),
        Command::Upgrade {
            config,
            state,
            secrets,
            synapse,
            apply,
            coordinated,
            json,
            kubernetes,
        } => {
            let t = local::Target::new(&config, state.as_deref(), secrets.as_deref());
            if kubernetes {
                upgrade_k8s::upgrade_kubernetes(&t, &synapse, apply, json)
            } else {
                upgrade::upgrade(&t, &synapse, apply, coordinated, json)
            }
        }
        Command::User {
            action:
                UserAction::Add {
                    config,
                    state,
                    name,
                    admin,
                    password,
                    secrets,
                    json,
                },
        } => local::user_add(
            &local::Target::new(&config, state.as_deref(), secrets.as_deref()),
            &name,
            admin,
            password.as_deref(),
            json,
        ),
        Command::Scale {
            changes,
            config,
            state,
            secrets,
            dry_run,
            json,
        } => scale::scale(
            &local::Target::new(&config, state.as_deref(), secrets.as_deref()),
            &changes,
            dry_run,
            json,
        ),
        Command::Rotate {
            names,
            all_rotatable,
            config,
            state,
            secrets,
            kubernetes,
            switch,
            retire,
        } => {
            let t = local::Target::new(&config, state.as_deref(), secrets.as_deref());
            if switch {
                rotate::switch_kubernetes(&t)
            } else if retire {
                rotate::retire_kubernetes(&t)
            } else {
                rotate::rotate(&t, &names, all_rotatable, kubernetes)
            }
        }
        Command::Backup { action } => backup_command(action),
        Command::Restore {
            config,
            state,
            secrets,
            to,
            kubernetes,
            name,
            li_name,
            cluster,
            json,
        } => {
            let t = local::Target::new(&config, state.as_deref(), secrets.as_deref());
            if kubernetes {
                backup::kubernetes(&t, &to, &name, &li_name)
            } else {
                backup::restore(&t, &to, cluster.as_deref(), json)
            }
        }
        Command::Verify(args) => verify::verify(&args),
        Command::Loadtest(args) => loadtest::loadtest(args),
        Command::Escrow {
            homeserver,
            access_token_file,
            kind,
            key_file,
            json,
        } => escrow::escrow(
            &homeserver,
            access_token_file.as_deref(),
            &kind,
            &key_file,
            json,
        ),
        Command::Images { action } => images_command(action),
        Command::Serve { service } => serve_command(service),
        Command::Li { action } => li_command(action),
        Command::Supervise {
            config,
            state,
            replicas,
            base_port,
            secrets,
        } => local::supervise(
            &local::Target::new(&config, state.as_deref(), secrets.as_deref()),
            replicas,
            base_port,
        ),
    }
}

fn backup_command(action: BackupAction) -> CmdResult {
    match action {
        BackupAction::Now {
            config,
            state,
            secrets,
            cluster,
            json,
        } => backup::now(
            &local::Target::new(&config, state.as_deref(), secrets.as_deref()),
            cluster.as_deref(),
            json,
        ),
        BackupAction::List {
            config,
            state,
            secrets,
            cluster,
            json,
        } => backup::list(
            &local::Target::new(&config, state.as_deref(), secrets.as_deref()),
            cluster.as_deref(),
            json,
        ),
        BackupAction::ExportSecrets {
            config,
            secrets,
            recipient,
            out,
            force,
            json,
        } => backup::export_secrets(
            &local::Target::new(&config, None, secrets.as_deref()),
            &recipient,
            &out,
            force,
            json,
        ),
    }
}

fn images_command(action: ImagesAction) -> CmdResult {
    match action {
        ImagesAction::Build {
            out,
            only,
            binary,
            ca_bundle,
            json,
        } => images::build(images::BuildArgs {
            out,
            only,
            binary,
            ca_bundle,
            json,
        }),
        ImagesAction::List { config, lock, json } => images::list(&config, lock.as_deref(), json),
        ImagesAction::Push {
            registry,
            dir,
            only,
            insecure,
            json,
        } => images::push(&dir, &registry, only.as_deref(), !insecure, json),
    }
}

fn serve_command(service: ServeService) -> CmdResult {
    match service {
        ServeService::ContentScanner { config, threads } => {
            mxstack_content_scanner::run(&config, threads).map(|()| ExitCode::SUCCESS)
        }
        ServeService::RtcAuth { config } => mxstack_rtc_auth::run(&config)
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| e.to_string()),
        ServeService::LiSync { config } => {
            mxstack_li_sync::serve(&config).map(|()| ExitCode::SUCCESS)
        }
        ServeService::KeyVault { config } => {
            mxstack_key_vault::run(&config).map(|()| ExitCode::SUCCESS)
        }
        ServeService::LiConsole { config } => {
            mxstack_li_console::run(&config).map(|()| ExitCode::SUCCESS)
        }
    }
}

fn li_command(action: LiAction) -> CmdResult {
    match action {
        LiAction::Status { source, json } => li::status(&source.target(), json),
        LiAction::UpgradeSchema { source, json } => li::upgrade_schema(&source.target(), json),
        LiAction::Reattach { source, json } => li::reattach(&source.target(), json),
        LiAction::Dump { source, json } => li::dump(&source.target(), json),
        LiAction::RefreshWorkingCopy { source, json } => {
            li::refresh_working_copy(&source.target(), json)
        }
        LiAction::PrepareMain { li_sync_config } => li::prepare_main(&li_sync_config),
        LiAction::VaultKeygen { json } => li::vault_keygen(json),
        LiAction::Console {
            action:
                ConsoleAction::AddUser {
                    source,
                    username,
                    role,
                    password_stdin,
                    json,
                },
        } => li_console::add_user(&source.source(), &username, &role, password_stdin, json),
        LiAction::Audit {
            action:
                AuditAction::Verify {
                    source,
                    expect_head,
                    json,
                },
        } => li_console::audit_verify(&source.source(), expect_head.as_deref(), json),
        LiAction::Export {
            action:
                ExportAction::Verify {
                    file,
                    public_key,
                    config,
                    json,
                },
        } => li_console::export_verify(&file, public_key.as_deref(), config.as_deref(), json),
    }
}

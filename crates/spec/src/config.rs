//! The typed model of `mxstack.yaml`. Defaults live here and nowhere else.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{SpecError, YamlLocator, PUSH_CREDENTIAL_PREFIX};

pub const SYNAPSE_VERSION: &str = "1.163.2";

/// The whole deployment, as the operator describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The Matrix server name (Synapse `server_name`): the part after the colon in user IDs.
    pub domain: String,
    /// Concurrent-user tier the deployment is sized for.
    pub scale: Tier,
    /// Optional components. Default: li, antivirus, calls, monitoring.
    #[serde(default = "default_features")]
    pub features: BTreeSet<Feature>,
    /// Public hostnames; each defaults to a name under `domain`.
    #[serde(default, skip_serializing_if = "Hostnames::is_empty")]
    pub hostnames: Hostnames,
    /// Kubernetes namespace everything is deployed into.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// StorageClass for every PersistentVolumeClaim; omitted means the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    #[serde(default)]
    pub ingress: Ingress,
    #[serde(default)]
    pub tls: Tls,
    #[serde(default)]
    pub media: Media,
    #[serde(default)]
    pub synapse: SynapseSettings,
    #[serde(default)]
    pub backup: Backup,
    #[serde(default)]
    pub li: LawfulIntercept,
    #[serde(default)]
    pub monitoring: Monitoring,
    #[serde(default)]
    pub antivirus: Antivirus,
    #[serde(default)]
    pub calls: Calls,
    #[serde(default, skip_serializing_if = "Push::is_empty")]
    pub push: Push,
    #[serde(default)]
    pub images: Images,
    /// Per-component replica and resource overrides, keyed by component name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub overrides: BTreeMap<Component, ComponentOverride>,
}

fn default_namespace() -> String {
    "matrix".into()
}

pub fn default_features() -> BTreeSet<Feature> {
    [
        Feature::Li,
        Feature::Antivirus,
        Feature::Calls,
        Feature::Monitoring,
    ]
    .into_iter()
    .collect()
}

/// Concurrent users the deployment is sized for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    T100,
    T1k,
    T5k,
    T10k,
    T20k,
}

impl Tier {
    pub const ALL: [Tier; 5] = [Tier::T100, Tier::T1k, Tier::T5k, Tier::T10k, Tier::T20k];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::T100 => "100",
            Tier::T1k => "1k",
            Tier::T5k => "5k",
            Tier::T10k => "10k",
            Tier::T20k => "20k",
        }
    }

    pub fn concurrent_users(self) -> u32 {
        match self {
            Tier::T100 => 100,
            Tier::T1k => 1_000,
            Tier::T5k => 5_000,
            Tier::T10k => 10_000,
            Tier::T20k => 20_000,
        }
    }
}

impl std::str::FromStr for Tier {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "100" => Ok(Tier::T100),
            "1k" | "1000" => Ok(Tier::T1k),
            "5k" | "5000" => Ok(Tier::T5k),
            "10k" | "10000" => Ok(Tier::T10k),
            "20k" | "20000" => Ok(Tier::T20k),
            other => Err(format!(
                "unknown scale tier `{other}`: use one of 100, 1k, 5k, 10k, 20k"
            )),
        }
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Tier {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Tier {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Tier;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("one of 100, 1k, 5k, 10k, 20k")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Tier, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Tier, E> {
                v.to_string().parse().map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Tier, E> {
                v.to_string().parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Tier {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Tier".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Concurrent-user tier: 100, 1k, 5k, 10k or 20k.",
            "oneOf": [
                {"type": "string", "enum": ["100", "1k", "5k", "10k", "20k"]},
                {"type": "integer", "enum": [100, 1000, 5000, 10000, 20000]}
            ]
        })
    }
}

/// Optional parts of the system.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Feature {
    /// Server-to-server federation with other Matrix homeservers (egress to the internet).
    Federation,
    /// Lawful-intercept instance: read-only replica, LI browsing stack, key vault.
    Li,
    /// ClamAV scanning of every media file.
    Antivirus,
    /// Voice/video: coturn and LiveKit.
    Calls,
    /// Push notifications to mobile apps through Sygnal.
    Push,
    /// Prometheus ServiceMonitors, alert rules and dashboards.
    Monitoring,
}

impl Feature {
    pub const ALL: [Feature; 6] = [
        Feature::Federation,
        Feature::Li,
        Feature::Antivirus,
        Feature::Calls,
        Feature::Push,
        Feature::Monitoring,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Feature::Federation => "federation",
            Feature::Li => "li",
            Feature::Antivirus => "antivirus",
            Feature::Calls => "calls",
            Feature::Push => "push",
            Feature::Monitoring => "monitoring",
        }
    }
}

impl std::str::FromStr for Feature {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Feature::ALL
            .into_iter()
            .find(|f| f.as_str() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| format!("unknown feature `{s}`: use federation, li, antivirus, calls, push or monitoring"))
    }
}

/// Hostname overrides. Unset names are derived from `domain`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Hostnames {
    /// Client and federation API (default `matrix.<domain>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matrix: Option<String>,
    /// Element Web (default `chat.<domain>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub element: Option<String>,
    /// TURN/STUN (default `turn.<domain>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<String>,
    /// LiveKit SFU signalling (default `livekit.<domain>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub livekit: Option<String>,
    /// MatrixRTC authorization service, which hands out LiveKit tokens (default
    /// `livekit-jwt.<domain>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub livekit_jwt: Option<String>,
    /// Synapse LI client API (default `matrix-li.<domain>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matrix_li: Option<String>,
    /// Element Web LI (default `chat-li.<domain>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub element_li: Option<String>,
    /// Synapse Admin LI (default `admin-li.<domain>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_li: Option<String>,
    /// LI console (default `console-li.<domain>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub li_console: Option<String>,
    /// Key vault (default `keyvault.<domain>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyvault: Option<String>,
}

impl Hostnames {
    pub fn is_empty(&self) -> bool {
        *self == Hostnames::default()
    }
}

/// Hostnames after defaults are applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvedHostnames {
    pub matrix: String,
    pub element: String,
    pub turn: String,
    pub livekit: String,
    pub livekit_jwt: String,
    pub matrix_li: String,
    pub element_li: String,
    pub admin_li: String,
    pub li_console: String,
    pub keyvault: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ingress {
    /// `gateway` (Gateway API, default) or `ingress` (networking.k8s.io Ingress).
    #[serde(default)]
    pub mode: IngressMode,
    /// GatewayClass the Gateway uses (gateway mode).
    #[serde(default = "default_gateway_class")]
    pub gateway_class: String,
    /// IngressClass for Ingress objects (ingress mode); omitted means the cluster default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_class: Option<String>,
}

impl Default for Ingress {
    fn default() -> Self {
        Ingress {
            mode: IngressMode::Gateway,
            gateway_class: default_gateway_class(),
            ingress_class: None,
        }
    }
}

fn default_gateway_class() -> String {
    "envoy-gateway".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum IngressMode {
    #[default]
    Gateway,
    Ingress,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Certificate issuer: `letsencrypt`, `letsencrypt-staging`, or `selfsigned` (air-gapped sites).
    #[serde(default)]
    pub issuer: TlsIssuer,
    /// The operator's e-mail for the ACME account (required for Let's Encrypt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme_email: Option<String>,
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            issuer: TlsIssuer::Letsencrypt,
            acme_email: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TlsIssuer {
    #[default]
    Letsencrypt,
    LetsencryptStaging,
    Selfsigned,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Media {
    /// `seaweedfs` (bundled S3 server, default), `s3` (an external S3 endpoint), or `minio-legacy`
    /// (a MinIO Tenant; MinIO's community edition is unmaintained).
    #[serde(default)]
    pub backend: MediaBackend,
    /// Bucket for Synapse media.
    #[serde(default = "default_bucket")]
    pub bucket: String,
    /// External S3 endpoint URL (backend `s3` only), e.g. `https://s3.eu-west-1.amazonaws.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// S3 region.
    #[serde(default = "default_region")]
    pub region: String,
    /// Storage size for the bundled object store's volumes, e.g. `500Gi`; default from sizing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_size: Option<String>,
}

impl Default for Media {
    fn default() -> Self {
        Media {
            backend: MediaBackend::Seaweedfs,
            bucket: default_bucket(),
            endpoint: None,
            region: default_region(),
            volume_size: None,
        }
    }
}

fn default_bucket() -> String {
    "synapse-media".into()
}
fn default_region() -> String {
    "us-east-1".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MediaBackend {
    #[default]
    Seaweedfs,
    S3,
    MinioLegacy,
}

/// Homeserver behaviour an operator commonly changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SynapseSettings {
    /// Largest upload accepted, e.g. `100M`.
    #[serde(default = "default_upload")]
    pub max_upload_size: String,
    /// Open self-registration (off: accounts are made by admins).
    #[serde(default)]
    pub enable_registration: bool,
    /// Generate URL previews (makes outbound HTTP requests from the media workers).
    #[serde(default)]
    pub url_previews: bool,
    /// Presence (online, idle, last active) shown next to each user. Every change of one
    /// user's presence wakes the sync of everyone who shares a room with them, so it costs
    /// delivery latency under load (docs/BENCHMARKS.md measures how much); off, clients show
    /// no presence.
    #[serde(default = "default_true")]
    pub presence: bool,
    /// How long remote media is cached, e.g. `90d`.
    #[serde(default = "default_remote_media_retention")]
    pub remote_media_retention: String,
    /// How long main keeps a redacted event's original content before Synapse censors it
    /// (prunes it in `event_json`): a Synapse duration such as `7d` (Synapse's default), `12h`,
    /// `30s`. `null` (never censor) is refused: main censors like any Synapse, and with feature
    /// `li` the LI replica keeps every original (docs/LI.md).
    #[serde(
        default = "default_redaction_retention_period",
        deserialize_with = "never_null"
    )]
    pub redaction_retention_period: String,
    /// Element Web features that call outside services, enabled explicitly (default none).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub element_external_services: BTreeSet<ElementExternalService>,
}

impl Default for SynapseSettings {
    fn default() -> Self {
        SynapseSettings {
            max_upload_size: default_upload(),
            enable_registration: false,
            url_previews: false,
            presence: true,
            remote_media_retention: default_remote_media_retention(),
            redaction_retention_period: default_redaction_retention_period(),
            element_external_services: BTreeSet::new(),
        }
    }
}

fn default_upload() -> String {
    "100M".into()
}
fn default_remote_media_retention() -> String {
    "90d".into()
}
/// Synapse's own default (`synapse/config/server.py`).
fn default_redaction_retention_period() -> String {
    "7d".into()
}

/// A string that may not be written as `null` (which Synapse would read as "never censor").
fn never_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Option::<String>::deserialize(d)?.ok_or_else(|| {
        serde::de::Error::custom(
            "redaction_retention_period: null (never censor redacted events) is not supported: \
             main censors like any Synapse and the LI replica keeps the originals (docs/LI.md); \
             write a duration such as 7d",
        )
    })
}

/// Outside services Element Web may reference (seed 004 issue 6.3): all off unless listed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum ElementExternalService {
    IdentityServer,
    Integrations,
    BugReports,
    PublicRoomDirectory,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Backup {
    /// Cron schedule (6 fields, seconds first, as CloudNativePG expects) of the base backup.
    #[serde(default = "default_backup_schedule")]
    pub schedule: String,
    /// How long backups are kept, e.g. `30d`.
    #[serde(default = "default_retention")]
    pub retention: String,
    /// Bucket for PostgreSQL backups (WAL archive and base backups) on the media S3 backend.
    #[serde(default = "default_backup_bucket")]
    pub bucket: String,
    /// Bucket for the LI PostgreSQL's backups (feature li; default `<bucket>-li`). Only the LI
    /// backup identity can write or delete in it: main's S3 identity has no access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub li_bucket: Option<String>,
}

impl Backup {
    /// The LI backup bucket after defaults.
    pub fn li_bucket_name(&self) -> String {
        self.li_bucket
            .clone()
            .unwrap_or_else(|| format!("{}-li", self.bucket))
    }
}

impl Default for Backup {
    fn default() -> Self {
        Backup {
            schedule: default_backup_schedule(),
            retention: default_retention(),
            bucket: default_backup_bucket(),
            li_bucket: None,
        }
    }
}

fn default_backup_schedule() -> String {
    "0 0 2 * * *".into()
}
fn default_retention() -> String {
    "30d".into()
}
fn default_backup_bucket() -> String {
    "pg-backups".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LawfulIntercept {
    /// Node label (`key=value`) of the nodes reserved for LI workloads.
    #[serde(default = "default_li_label")]
    pub node_label: String,
    /// Client CIDRs allowed to reach the LI hostnames.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_cidrs: Vec<String>,
    /// How the LI replica is kept: `logical` (PostgreSQL logical replication, seconds behind, every
    /// deleted or rewritten row kept in history) or `dump` (a periodic pg_dump/pg_restore, for sites
    /// that forbid logical replication; hours behind, no row history between runs).
    #[serde(default)]
    pub sync: LiSyncMode,
    /// Cron schedule of dump-mode syncs (only with `sync: dump`).
    #[serde(default = "default_li_dump_schedule")]
    pub dump_schedule: String,
    /// Cron schedule on which the LI browsing stack's working copy is refreshed from the replica.
    #[serde(default = "default_li_working_copy_schedule")]
    pub working_copy_schedule: String,
    /// S3 bucket that receives a copy of every media object (default `<media.bucket>-li`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_bucket: Option<String>,
    /// Days Loki keeps the LI console's audit anchors (its `audit` stream, with feature
    /// `monitoring`), at least 1. Ten years by default: set it to what your warrant records
    /// must be kept for (docs/LOGS.md).
    #[serde(default = "default_audit_log_retention_days")]
    pub audit_log_retention_days: NonZeroU32,
}

/// How the LI database follows main.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LiSyncMode {
    /// Logical replication with replica identities, an event trigger and history triggers.
    #[default]
    Logical,
    /// pg_dump of main restored into a staging database, then swapped in.
    Dump,
}

impl LiSyncMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LiSyncMode::Logical => "logical",
            LiSyncMode::Dump => "dump",
        }
    }
}

impl Default for LawfulIntercept {
    fn default() -> Self {
        LawfulIntercept {
            node_label: default_li_label(),
            allowed_cidrs: Vec::new(),
            sync: LiSyncMode::default(),
            dump_schedule: default_li_dump_schedule(),
            working_copy_schedule: default_li_working_copy_schedule(),
            media_bucket: None,
            audit_log_retention_days: default_audit_log_retention_days(),
        }
    }
}

impl Config {
    /// Every bucket the deployment uses (both targets create them): media, main's backups, and
    /// with feature li the LI media copy and the LI backups.
    pub fn buckets(&self) -> Vec<String> {
        let mut b = vec![self.media.bucket.clone(), self.backup.bucket.clone()];
        if self.features.contains(&Feature::Li) {
            b.push(self.li.media_bucket(&self.media));
            b.push(self.backup.li_bucket_name());
        }
        b
    }

    /// The buckets whose objects are versioned on SeaweedFS (both targets): the media (and LI's
    /// copy with feature li). A deleted or overwritten file stays recoverable as a noncurrent
    /// version. Not the backup bucket: barman's retention deletes from it on purpose.
    /// docs/BACKUP.md says why versioning rather than replication.
    pub fn versioned_buckets(&self) -> Vec<String> {
        let mut b = vec![self.media.bucket.clone()];
        if self.features.contains(&Feature::Li) {
            b.push(self.li.media_bucket(&self.media));
        }
        b
    }
}

impl LawfulIntercept {
    /// The LI media bucket after defaults.
    pub fn media_bucket(&self, media: &Media) -> String {
        self.media_bucket
            .clone()
            .unwrap_or_else(|| format!("{}-li", media.bucket))
    }
}

fn default_li_dump_schedule() -> String {
    "0 */6 * * *".into()
}
fn default_li_working_copy_schedule() -> String {
    "30 * * * *".into()
}

fn default_li_label() -> String {
    "mxstack.io/role=li".into()
}

fn default_audit_log_retention_days() -> NonZeroU32 {
    NonZeroU32::new(3650).expect("non-zero")
}

/// The log pipeline (feature `monitoring`): Loki and its collector (docs/LOGS.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Monitoring {
    /// Days Loki keeps pod logs, at least 1 (the LI audit stream has its own,
    /// `li.audit_log_retention_days`).
    #[serde(default = "default_log_retention_days")]
    pub log_retention_days: NonZeroU32,
}

impl Default for Monitoring {
    fn default() -> Self {
        Monitoring {
            log_retention_days: default_log_retention_days(),
        }
    }
}

fn default_log_retention_days() -> NonZeroU32 {
    NonZeroU32::new(30).expect("non-zero")
}

/// ClamAV and the content scanner (feature `antivirus`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Antivirus {
    /// Where freshclam downloads signatures: the official CDN, or a mirror inside your network
    /// (a private mirror or a cvdupdate host).
    #[serde(default = "default_signature_mirror")]
    pub signature_mirror: String,
    /// Run freshclam to keep signatures current. Off for air-gapped sites: the signature files
    /// are then copied into the clamav-signatures volume by the operator (see docs/ANTIVIRUS.md).
    #[serde(default = "default_true")]
    pub signature_updates: bool,
    /// Scan verdicts kept in each scanner's cache (keyed by media and content hash).
    #[serde(default = "default_verdict_cache")]
    pub verdict_cache_entries: u32,
}

impl Default for Antivirus {
    fn default() -> Self {
        Antivirus {
            signature_mirror: default_signature_mirror(),
            signature_updates: true,
            verdict_cache_entries: default_verdict_cache(),
        }
    }
}

fn default_signature_mirror() -> String {
    "https://database.clamav.net".into()
}

fn default_true() -> bool {
    true
}

fn default_verdict_cache() -> u32 {
    100_000
}

/// Voice and video (feature `calls`): coturn's public address and relay ports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Calls {
    /// The public IPv4 address coturn gives clients in relayed candidates. Unset: the address
    /// of the node coturn runs on (schedule it on `calls` nodes with public addresses). Never
    /// looked up on the internet (seed 004 issue 6.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_ip: Option<std::net::Ipv4Addr>,
    /// First UDP port coturn relays call media on (each relayed call leg uses one).
    #[serde(default = "default_relay_first")]
    pub relay_port_first: u16,
    /// Last relay port. A LoadBalancer Service lists every port, so the range stays small (at
    /// most 200 ports: 100 relayed two-party calls).
    #[serde(default = "default_relay_last")]
    pub relay_port_last: u16,
    /// The cluster's pod and service networks (CIDRs). coturn refuses to relay to them, as to
    /// every private, loopback and link-local range; list them when they lie outside those
    /// (pods on public address space), or to be explicit. `check --cluster` compares them with
    /// the nodes' pod CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_cidrs: Vec<String>,
    /// Addresses (or CIDRs) coturn may relay to although a denied range covers them (coturn's
    /// `allowed-peer-ip`), e.g. an internal media server. Each one is a hole in the wall that
    /// keeps TURN from reaching inside the network: keep it empty unless you know why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_peer_ips: Vec<String>,
}

impl Default for Calls {
    fn default() -> Self {
        Calls {
            external_ip: None,
            relay_port_first: default_relay_first(),
            relay_port_last: default_relay_last(),
            cluster_cidrs: Vec::new(),
            allowed_peer_ips: Vec::new(),
        }
    }
}

fn default_relay_first() -> u16 {
    49152
}

fn default_relay_last() -> u16 {
    49183
}

/// Push notifications (feature `push`): the gateway Synapse's pushers may send to, and the mobile
/// apps Sygnal relays for. docs/PUSH.md.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Push {
    /// The one push gateway URL pushers may use (`data.url` of `POST /pushers/set`); any other is
    /// refused. Its path must be `/_matrix/push/v1/notify`. Unset: our own Sygnal inside the
    /// cluster, `http://sygnal.<namespace>.svc.cluster.local:5000/_matrix/push/v1/notify` (build
    /// your apps with this URL: only the homeserver ever calls it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_url: Option<String>,
    /// The addresses the gateway URL resolves to, as CIDRs, when they are private (Synapse
    /// refuses private, loopback and link-local addresses for outbound requests): in Kubernetes
    /// your cluster's Service CIDR (e.g. `10.96.0.0/12`), locally `127.0.0.1/32`. They become
    /// Synapse's `ip_range_whitelist`, which federation shares: keep them narrow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateway_ip_ranges: Vec<String>,
    /// One entry per mobile app Sygnal delivers to. Each app's credential (APNs `.p8` key or FCM
    /// service-account JSON) goes into secrets.yaml as `push_credential.<id>`, never here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<PushApp>,
}

impl Push {
    pub fn is_empty(&self) -> bool {
        *self == Push::default()
    }
}

/// The path every push gateway serves (Matrix Push Gateway API); Synapse refuses any other.
pub const PUSH_NOTIFY_PATH: &str = "/_matrix/push/v1/notify";

impl Config {
    /// The push gateway URL pushers may use: `push.gateway_url`, else our Sygnal's in-cluster URL.
    pub fn push_gateway_url(&self) -> String {
        self.push.gateway_url.clone().unwrap_or_else(|| {
            format!(
                "http://sygnal.{}.svc.cluster.local:5000{PUSH_NOTIFY_PATH}",
                self.namespace
            )
        })
    }
}

/// One mobile app: its app id (what the app sends as `app_id` when it registers a pusher) and how
/// Sygnal reaches its platform's push service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PushApp {
    /// The app id, reverse-DNS style (e.g. `im.acme.app.ios`), at most 64 characters.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: PushAppKind,
    /// APNs: `production` or `sandbox` (development builds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<ApnsPlatform>,
    /// APNs: the app's bundle id, the topic of its notifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// APNs: the Apple developer team id (10 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    /// APNs: the id of the `.p8` signing key (10 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// FCM: the Firebase project id (FCM HTTP v1 API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
}

/// The push service an app is delivered through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PushAppKind {
    /// Apple Push Notification service, token (`.p8` key) authentication.
    Apns,
    /// Firebase Cloud Messaging, HTTP v1 API with a service account.
    Fcm,
}

/// Which APNs environment an app's device tokens belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ApnsPlatform {
    Production,
    Sandbox,
}

impl PushApp {
    /// The secrets.yaml name of this app's credential.
    pub fn credential_key(&self) -> String {
        format!("{PUSH_CREDENTIAL_PREFIX}{}", self.id)
    }

    /// The credential's file name where Sygnal reads it (`<id>.p8` or `<id>.json`).
    pub fn credential_file(&self) -> String {
        match self.kind {
            PushAppKind::Apns => format!("{}.p8", self.id),
            PushAppKind::Fcm => format!("{}.json", self.id),
        }
    }
}

/// Pinned container images. A tag of `latest` is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Images {
    /// Synapse with synapse-s3-storage-provider baked in, built from images/synapse/Containerfile.
    pub synapse: String,
    pub haproxy: String,
    pub valkey: String,
    pub postgres: String,
    pub seaweedfs: String,
    pub minio: String,
    pub element: String,
    pub coturn: String,
    pub livekit: String,
    pub sygnal: String,
    pub clamav: String,
    /// Synapse Admin, the LI browsing stack's admin UI (static files served by the image's nginx).
    pub synapse_admin: String,
    /// mxstack's own services (content scanner), built from images/mxstack/Containerfile.
    pub mxstack: String,
    /// kubectl, with which the LI working-copy CronJob restarts Synapse LI after each refresh.
    /// The default is the Kubernetes project's own image (registry.k8s.io); air-gapped sites
    /// mirror it. kubectl supports API servers one minor version either side of its own: 1.34
    /// covers 1.33 to 1.35; pick the cluster's minor otherwise. Any image with `kubectl` on its
    /// PATH will do (no shell is needed).
    pub kubectl: String,
    /// Grafana Loki, the log store (feature `monitoring`; docs/LOGS.md).
    pub loki: String,
    /// Grafana Alloy, which collects pod logs for Loki (feature `monitoring`).
    pub alloy: String,
}

impl Default for Images {
    fn default() -> Self {
        Images {
            synapse: format!("ghcr.io/mxstack/synapse:{SYNAPSE_VERSION}"),
            haproxy: "docker.io/library/haproxy:3.2.7".into(),
            valkey: "docker.io/valkey/valkey:8.1.4".into(),
            postgres: "ghcr.io/cloudnative-pg/postgresql:17.6".into(),
            seaweedfs: "docker.io/chrislusf/seaweedfs:3.97".into(),
            minio: "quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z".into(),
            element: "docker.io/vectorim/element-web:v1.12.2".into(),
            coturn: "docker.io/coturn/coturn:4.7.0".into(),
            livekit: "docker.io/livekit/livekit-server:v1.13.5".into(),
            sygnal: "docker.io/matrixdotorg/sygnal:v0.17.0".into(),
            clamav: "docker.io/clamav/clamav:1.4.3".into(),
            synapse_admin: "docker.io/awesometechnologies/synapse-admin:0.11.4".into(),
            mxstack: format!("ghcr.io/mxstack/mxstack:{}", env!("CARGO_PKG_VERSION")),
            kubectl: "registry.k8s.io/kubectl:v1.34.5".into(),
            loki: "docker.io/grafana/loki:3.7.8".into(),
            alloy: "docker.io/grafana/alloy:v1.21.2".into(),
        }
    }
}

/// Everything that can be overridden per component.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Component {
    SynapseMain,
    Synchrotron,
    Generic,
    MediaRepository,
    EventPersister,
    FederationSender,
    Pusher,
    Background,
    StreamWriter,
    Haproxy,
    Postgres,
    Valkey,
    Seaweedfs,
    Element,
    Coturn,
    Livekit,
    Sygnal,
    ContentScanner,
    Clamav,
    RtcAuth,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ComponentOverride {
    /// Replicas (for autoscaled workers: the minimum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// Autoscaler maximum (synchrotron and generic workers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<u32>,
    /// CPU request, e.g. `500m` or `2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Memory request and limit, e.g. `2Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

impl Config {
    /// A new config for `domain` at `scale` with the given features; everything else at defaults.
    pub fn new(domain: &str, scale: Tier, features: BTreeSet<Feature>) -> Config {
        Config {
            domain: domain.to_string(),
            scale,
            features,
            hostnames: Hostnames::default(),
            namespace: default_namespace(),
            storage_class: None,
            ingress: Ingress::default(),
            tls: Tls {
                issuer: TlsIssuer::Letsencrypt,
                acme_email: Some(format!("postmaster@{domain}")),
            },
            media: Media::default(),
            synapse: SynapseSettings::default(),
            backup: Backup::default(),
            li: LawfulIntercept::default(),
            monitoring: Monitoring::default(),
            antivirus: Antivirus::default(),
            calls: Calls::default(),
            push: Push::default(),
            images: Images::default(),
            overrides: BTreeMap::new(),
        }
    }

    pub fn has(&self, f: Feature) -> bool {
        self.features.contains(&f)
    }

    pub fn hostnames(&self) -> ResolvedHostnames {
        let d = &self.domain;
        let h = &self.hostnames;
        let or =
            |o: &Option<String>, prefix: &str| o.clone().unwrap_or_else(|| format!("{prefix}.{d}"));
        ResolvedHostnames {
            matrix: or(&h.matrix, "matrix"),
            element: or(&h.element, "chat"),
            turn: or(&h.turn, "turn"),
            livekit: or(&h.livekit, "livekit"),
            livekit_jwt: or(&h.livekit_jwt, "livekit-jwt"),
            matrix_li: or(&h.matrix_li, "matrix-li"),
            element_li: or(&h.element_li, "chat-li"),
            admin_li: or(&h.admin_li, "admin-li"),
            li_console: or(&h.li_console, "console-li"),
            keyvault: or(&h.keyvault, "keyvault"),
        }
    }

    pub fn override_for(&self, c: Component) -> ComponentOverride {
        self.overrides.get(&c).cloned().unwrap_or_default()
    }

    /// Parses config text; `file` is only used in error locations.
    pub fn from_yaml(file: &str, text: &str) -> Result<(Config, YamlLocator), SpecError> {
        let locator = YamlLocator::new(file, text);
        match serde_saphyr::from_str::<Config>(text) {
            Ok(c) => Ok((c, locator)),
            Err(e) => Err(yaml_error(&locator, &e)),
        }
    }

    pub fn load(path: &Path) -> Result<(Config, YamlLocator), SpecError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| SpecError {
            location: crate::SourceLocation {
                file: file.clone(),
                line: 0,
                column: 0,
            },
            message: format!("cannot read the config file: {e}"),
            fix: "pass the path of an mxstack.yaml (create one with `mxstack init`)".into(),
        })?;
        Config::from_yaml(&file, &text)
    }

    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).expect("config serializes")
    }

    /// The JSON Schema of the config file.
    pub fn json_schema() -> serde_json::Value {
        let schema = schemars::schema_for!(Config);
        serde_json::to_value(schema).expect("schema serializes")
    }
}

/// Turns a serde-saphyr error into a located error with a fix hint.
pub(crate) fn yaml_error(locator: &YamlLocator, e: &serde_saphyr::Error) -> SpecError {
    let (line, column) = e
        .location()
        .map(|l| (l.line() as usize, l.column() as usize))
        .unwrap_or((1, 1));
    let full = e.to_string();
    // The crate renders a code snippet after the first line; keep the first line as the message.
    let message = full.lines().next().unwrap_or(&full).trim().to_string();
    let fix = if message.contains("unknown field") {
        let allowed = message
            .split("expected")
            .nth(1)
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        if allowed.is_empty() {
            "remove the key or correct its spelling (`mxstack schema` lists every key)".to_string()
        } else {
            format!("remove the key or correct its spelling; allowed here: {allowed}")
        }
    } else if message.contains("unknown variant") {
        "use one of the values the message lists".to_string()
    } else if message.contains("missing field") {
        "add the missing key (`mxstack schema` describes it)".to_string()
    } else {
        "correct the value to the type `mxstack schema` describes".to_string()
    };
    SpecError {
        location: locator.at(line, column),
        message,
        fix,
    }
}

/// Why a value looks like a placeholder rather than a real setting, if it does.
pub fn placeholder_reason(value: &str) -> Option<&'static str> {
    let v = value.trim();
    let lower = v.to_ascii_lowercase();
    if v.is_empty() {
        return Some("it is empty");
    }
    if lower.contains("changeme") || lower.contains("change_me") || lower.contains("change-me") {
        return Some("it contains CHANGEME");
    }
    let host = lower.rsplit('@').next().unwrap_or(&lower);
    for reserved in ["example.com", "example.org", "example.net"] {
        if host == reserved
            || host.ends_with(&format!(".{reserved}"))
            || lower.contains(&format!("{reserved}/"))
        {
            return Some("it uses a reserved example domain");
        }
    }
    if lower.contains("your-domain")
        || lower.contains("your_domain")
        || lower == "todo"
        || lower == "xxx"
    {
        return Some("it is a template value");
    }
    if v.starts_with('<') && v.ends_with('>') {
        return Some("it is an unfilled <placeholder>");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_gets_defaults() {
        let (c, _) = Config::from_yaml("m.yaml", "domain: acme.test\nscale: 1k\n").unwrap();
        assert_eq!(c.scale, Tier::T1k);
        assert_eq!(c.features, default_features());
        assert_eq!(c.hostnames().element_li, "chat-li.acme.test");
        assert_eq!(c.hostnames().li_console, "console-li.acme.test");
        assert_eq!(c.namespace, "matrix");
    }

    #[test]
    fn the_li_console_hostname_can_be_overridden() {
        let (c, _) = Config::from_yaml(
            "m.yaml",
            "domain: acme.test\nscale: 1k\nhostnames:\n  li_console: evidence.acme.test\n",
        )
        .unwrap();
        assert_eq!(c.hostnames().li_console, "evidence.acme.test");
        assert_eq!(c.hostnames().admin_li, "admin-li.acme.test");
    }

    #[test]
    fn numeric_tier_is_accepted() {
        let (c, _) = Config::from_yaml("m.yaml", "domain: acme.test\nscale: 100\n").unwrap();
        assert_eq!(c.scale, Tier::T100);
    }

    #[test]
    fn unknown_key_is_located() {
        let err = Config::from_yaml(
            "m.yaml",
            "domain: acme.test\nscale: 1k\nhostnames:\n  matrx: a.acme.test\n",
        )
        .unwrap_err();
        assert_eq!(err.location.line, 4, "{err}");
        assert!(err.message.contains("matrx"), "{err}");
        assert!(err.fix.contains("spelling"), "{err}");
    }

    #[test]
    fn bad_tier_is_located() {
        let err = Config::from_yaml("m.yaml", "domain: acme.test\nscale: 3k\n").unwrap_err();
        assert_eq!(err.location.line, 2, "{err}");
    }

    #[test]
    fn redaction_retention_period_defaults_to_synapses_and_refuses_null() {
        let (c, _) = Config::from_yaml("m.yaml", "domain: acme.test\nscale: 1k\n").unwrap();
        assert_eq!(c.synapse.redaction_retention_period, "7d");
        let (c, _) = Config::from_yaml(
            "m.yaml",
            "domain: acme.test\nscale: 1k\nsynapse:\n  redaction_retention_period: 30s\n",
        )
        .unwrap();
        assert_eq!(c.synapse.redaction_retention_period, "30s");
        for null in ["null", "~", ""] {
            let err = Config::from_yaml(
                "m.yaml",
                &format!("domain: acme.test\nscale: 1k\nsynapse:\n  redaction_retention_period: {null}\n"),
            )
            .unwrap_err();
            assert_eq!(err.location.line, 4, "{err}");
            assert!(err.message.contains("never censor"), "{err}");
        }
    }

    #[test]
    fn log_retention_defaults_and_refuses_zero() {
        let (c, _) = Config::from_yaml("m.yaml", "domain: acme.test\nscale: 1k\n").unwrap();
        assert_eq!(c.monitoring.log_retention_days.get(), 30);
        assert_eq!(c.li.audit_log_retention_days.get(), 3650);
        let (c, _) = Config::from_yaml(
            "m.yaml",
            "domain: acme.test\nscale: 1k\nmonitoring:\n  log_retention_days: 7\nli:\n  audit_log_retention_days: 2555\n",
        )
        .unwrap();
        assert_eq!(c.monitoring.log_retention_days.get(), 7);
        assert_eq!(c.li.audit_log_retention_days.get(), 2555);
        for (text, line) in [
            ("monitoring:\n  log_retention_days: 0\n", 4),
            ("li:\n  audit_log_retention_days: 0\n", 4),
            ("monitoring:\n  log_retention_days: -3\n", 4),
        ] {
            let err = Config::from_yaml("m.yaml", &format!("domain: acme.test\nscale: 1k\n{text}"))
                .unwrap_err();
            assert_eq!(err.location.line, line, "{err}");
        }
        // The schema says so too: editors refuse 0 before the parser does.
        let schema = Config::json_schema().to_string();
        assert!(schema.contains("log_retention_days") && schema.contains("\"minimum\":1"));
    }

    #[test]
    fn roundtrip() {
        let c = Config::new("acme.test", Tier::T5k, default_features());
        let (back, _) = Config::from_yaml("x", &c.to_yaml()).unwrap();
        assert_eq!(c, back);
    }

    #[test]
    fn placeholders() {
        assert!(placeholder_reason("CHANGEME_DB").is_some());
        assert!(placeholder_reason("matrix.example.com").is_some());
        assert!(placeholder_reason("ops@example.org").is_some());
        assert!(placeholder_reason("").is_some());
        assert!(placeholder_reason("acme.test").is_none());
        assert!(placeholder_reason("examples.com.au").is_none());
    }
}

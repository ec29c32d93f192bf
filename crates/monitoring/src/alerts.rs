//! The alerts (feature `monitoring`), each with what to do about it and the unit test promtool
//! runs for it (`crates/k8s/tests/alerts.rs`): series on which it fires, with the labels it
//! fires with, and series of a healthy system, on which it stays silent. An alert cannot be
//! declared without its test.
//!
//! Label conventions are prometheus-operator's: `namespace`, `service`, `pod` on every target.

use std::borrow::Cow;

use mxstack_spec::{Config, Feature};
use mxstack_topology::registry as reg;

/// One input series of a promtool test: `metric{labels}` and its values (`0x30`, `0+1x30`).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub series: String,
    pub values: Cow<'static, str>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub name: &'static str,
    pub expr: String,
    pub for_: &'static str,
    pub severity: &'static str,
    pub summary: Cow<'static, str>,
    /// What to do (the `description` annotation).
    pub fix: &'static str,
    /// Series on which it fires, 60 minutes of them at one sample a minute...
    pub firing: Vec<Series>,
    /// ...and the labels (besides `severity`) it then fires with.
    pub fires_with: Vec<(&'static str, String)>,
    /// Series of a healthy system: it stays silent.
    pub healthy: Vec<Series>,
}

pub(crate) fn s(series: String, values: impl Into<Cow<'static, str>>) -> Series {
    Series {
        series,
        values: values.into(),
    }
}

pub(crate) struct A {
    name: &'static str,
    expr: String,
    for_: &'static str,
    severity: &'static str,
    summary: Cow<'static, str>,
    fix: &'static str,
}

impl A {
    pub(crate) fn test(
        self,
        firing: Vec<Series>,
        fires_with: Vec<(&'static str, String)>,
        healthy: Vec<Series>,
    ) -> Alert {
        Alert {
            name: self.name,
            expr: self.expr,
            for_: self.for_,
            severity: self.severity,
            summary: self.summary,
            fix: self.fix,
            firing,
            fires_with,
            healthy,
        }
    }
}

pub(crate) fn a(
    name: &'static str,
    expr: String,
    for_: &'static str,
    severity: &'static str,
    summary: impl Into<Cow<'static, str>>,
    fix: &'static str,
) -> A {
    A {
        name,
        expr,
        for_,
        severity,
        summary: summary.into(),
        fix,
    }
}

/// Every alert of the config's features (with `monitoring`; the caller checks that).
pub fn alerts(cfg: &Config) -> Vec<Alert> {
    let ns = cfg.namespace.as_str();
    let mut out = core(ns);
    out.extend(synapse(ns));
    if cfg.has(Feature::Federation) {
        out.extend(federation(ns));
    }
    if cfg.has(Feature::Push) {
        out.extend(push(ns));
    }
    out.extend(router(ns));
    out.extend(postgres(ns));
    out.extend(valkey(ns));
    out.extend(certificates(ns));
    if cfg.has(Feature::Li) {
        out.extend(li(ns));
    }
    if cfg.has(Feature::Antivirus) {
        out.extend(antivirus(ns));
    }
    out.extend(crate::alerts_more::synapse_runtime(ns));
    out.extend(crate::alerts_more::storage(ns, &cfg.backup.schedule));
    if cfg.has(Feature::Calls) {
        out.extend(crate::alerts_more::calls(ns));
    }
    if cfg.media.backend == mxstack_spec::MediaBackend::Seaweedfs {
        out.extend(crate::alerts_more::media_s3(ns));
    }
    out
}

fn core(ns: &str) -> Vec<Alert> {
    let metrics = reg::synapse::METRICS_SERVICE;
    let main_pod = format!("{}-0", mxstack_topology::workers::MAIN_PROCESS);
    let up = |pod: &str| format!("up{{namespace=\"{ns}\", service=\"{metrics}\", pod=\"{pod}\"}}");
    let l = |k: &'static str, v: &str| (k, v.to_string());
    let scanner = reg::content_scanner::COMPONENT.name();
    vec![
        a("SynapseDown",
          format!("up{{namespace=\"{ns}\", service=\"{metrics}\"}} == 0"),
          // Long enough for a rolling restart, short enough that a worker stuck in a crash loop
          // is noticed before users report it.
          "2m", "critical",
          "A Synapse process is not answering on its metrics port.",
          "`kubectl -n NAMESPACE describe pod POD` and its logs: crash-looping (config, database), OOM-killed (raise its memory in overrides) or stuck in scheduling. Locally: `mxstack status`, `mxstack logs PROCESS`.")
            .test(vec![s(up("synapse-generic-0"), "0x60")],
                  vec![l("namespace", ns), l("service", metrics), l("pod", "synapse-generic-0")],
                  vec![s(up("synapse-generic-0"), "1x60")]),
        a("SynapseMainMissing",
          format!("absent(up{{namespace=\"{ns}\", service=\"{metrics}\", pod=\"{main_pod}\"}} == 1)"),
          "5m", "critical",
          "The Synapse main process is down: replication and admin are unavailable.",
          "Synapse main must run for workers to replicate: look at pod synapse-main-0's events and logs; a failed database migration or an unreachable PostgreSQL are the usual causes.")
            .test(vec![s(up(&main_pod), "0x60")],
                  vec![],
                  vec![s(up(&main_pod), "1x60")]),
        a("RouterBackendDown",
          // The content-scanner backend has no fallback: ContentScannerDown covers it.
          format!("max by (proxy) (haproxy_backend_active_servers{{namespace=\"{ns}\", proxy!~\"stats|matrix|{scanner}\"}}) == 0"),
          "5m", "warning",
          "An HAProxy backend has no healthy worker; its requests fall back to main.",
          "The worker group named in `proxy` has no ready process: see SynapseDown for which pods, and the router's stats page.")
            .test(vec![s(format!("haproxy_backend_active_servers{{namespace=\"{ns}\", proxy=\"synchrotron\"}}"), "0x60")],
                  vec![l("proxy", "synchrotron")],
                  vec![s(format!("haproxy_backend_active_servers{{namespace=\"{ns}\", proxy=\"synchrotron\"}}"), "2x60")]),
        a("PostgresNotReady",
          format!("max by (pod) (cnpg_collector_up{{namespace=\"{ns}\"}}) == 0"),
          "5m", "critical",
          "A PostgreSQL instance reports it is not up.",
          "`kubectl cnpg status CLUSTER -n NAMESPACE` and the instance's log: storage full, a failed switchover, or a broken replica that needs re-cloning.")
            .test(vec![s(format!("cnpg_collector_up{{namespace=\"{ns}\", pod=\"main-pg-1\"}}"), "0x60")],
                  vec![l("pod", "main-pg-1")],
                  vec![s(format!("cnpg_collector_up{{namespace=\"{ns}\", pod=\"main-pg-1\"}}"), "1x60")]),
        a("PostgresReplicationLag",
          format!("max by (pod) (cnpg_pg_replication_lag{{namespace=\"{ns}\"}}) > 60"),
          "10m", "warning",
          "A PostgreSQL standby is more than a minute behind the primary.",
          "Check the standby's disk and CPU and the network between the instances; a standby that never catches up is re-cloned by deleting its PVC and pod (CloudNativePG recreates it).")
            .test(vec![s(format!("cnpg_pg_replication_lag{{namespace=\"{ns}\", pod=\"main-pg-2\"}}"), "120x60")],
                  vec![l("pod", "main-pg-2")],
                  vec![s(format!("cnpg_pg_replication_lag{{namespace=\"{ns}\", pod=\"main-pg-2\"}}"), "1x60")]),
        a("ValkeyNoMaster",
          // `or vector(0)`: with no master at all, count() has no series and `!= 1` would be
          // silent. Pods, not series: a restarted Valkey has a new `run_id`, and its old series
          // lingers for the lookback when no staleness marker was written (Prometheus restarted).
          format!("(count(max by (pod) (redis_instance_info{{namespace=\"{ns}\", role=\"master\"}})) or vector(0)) != 1"),
          "2m", "critical",
          "Valkey does not have exactly one master: Synapse replication is at risk.",
          "Ask Sentinel: `valkey-cli -p 26379 sentinel get-master-addr-by-name mxstack`; with no quorum, check that the Sentinel pods run on different nodes and can reach each other.")
            .test(vec![s(format!("redis_instance_info{{namespace=\"{ns}\", role=\"slave\", pod=\"valkey-1\"}}"), "1x60")],
                  vec![],
                  vec![s(format!("redis_instance_info{{namespace=\"{ns}\", role=\"master\", pod=\"valkey-0\"}}"), "1x60")]),
    ]
}

/// The LI data path (li-sync's metrics, crates/li-sync/src/status.rs) and the LI console.
fn li(ns: &str) -> Vec<Alert> {
    let m = |metric: &str| format!("{metric}{{namespace=\"{ns}\"}}");
    let sync = reg::li_sync::COMPONENT.name();
    let up_sync = format!("up{{namespace=\"{ns}\", service=\"{sync}\"}}");
    let status = "`mxstack li status` (or li-sync's /status) and li-sync's log say why; docs/LI.md, Operations.";
    vec![
        a("LiSyncDown",
          // Also fires when li-sync is not scraped at all.
          format!("absent({up_sync} == 1)"),
          "5m", "critical",
          "li-sync is down: the LI replica's schema, history and media copy are not kept.",
          "Look at the li-sync pod's events and log; it needs main's and the LI replica's databases and both buckets.")
            .test(vec![s(up_sync.clone(), "0x60")], vec![], vec![s(up_sync, "1x60")]),
        a("LiDatabasesUnreachable",
          format!("max({}) == 0", m("mxstack_li_up")),
          "5m", "critical",
          "li-sync cannot read main or the LI replica.",
          status)
            .test(vec![s(m("mxstack_li_up"), "0x60")], vec![], vec![s(m("mxstack_li_up"), "1x60")]),
        a("LiReplicaLagging",
          format!("max({}) > 5", m("mxstack_li_lag_seconds")),
          "5m", "critical",
          "The LI replica is more than 5 seconds behind main.",
          status)
            .test(vec![s(m("mxstack_li_lag_seconds"), "30x60")], vec![], vec![s(m("mxstack_li_lag_seconds"), "0x60")]),
        a("LiSubscriptionDisabled",
          // li-sync pauses it for a moment while new tables join and resumes it at its next
          // schema check at the latest; minutes disabled means it cannot.
          format!("min({}) == 0", m("mxstack_li_subscription_enabled")),
          "5m", "critical",
          "The LI subscription is disabled: nothing from main reaches the replica. `mxstack li status` and li-sync's log say why; `mxstack li upgrade-schema` resumes it.",
          "`mxstack li status` names the cause; after a schema change on main, `mxstack li upgrade-schema` resumes it.")
            .test(vec![s(m("mxstack_li_subscription_enabled"), "0x60")], vec![], vec![s(m("mxstack_li_subscription_enabled"), "1x60")]),
        a("LiInitialCopyStalled",
          format!("max({}) == 1", m("mxstack_li_initial_copy_stalled")),
          "10m", "critical",
          "Tables of the LI replica's initial copy are not being copied (no worker runs for them): `mxstack li status` names the cause.",
          status)
            .test(vec![s(m("mxstack_li_initial_copy_stalled"), "1x60")], vec![], vec![s(m("mxstack_li_initial_copy_stalled"), "0x60")]),
        a("LiApplyErrors",
          format!("sum(increase({}[10m])) > 0", m("mxstack_li_apply_errors_total")),
          "1m", "critical",
          "The LI subscription fails to apply changes from main.",
          status)
            .test(vec![s(m("mxstack_li_apply_errors_total"), "0+1x60")], vec![], vec![s(m("mxstack_li_apply_errors_total"), "3x60")]),
        a("LiSlotRetainsTooMuchWal",
          format!("max({}) > {}", m("mxstack_li_slot_retained_bytes"), 10u64 << 30),
          "10m", "critical",
          "Main keeps more than 10 GiB of WAL for the LI slot: its disk fills while the replica is behind.",
          "Bring the LI replica back (LiReplicaLagging, LiSubscriptionDisabled); if it cannot catch up, drop and rebuild it (docs/LI.md) before main's disk fills.")
            .test(vec![s(m("mxstack_li_slot_retained_bytes"), "20000000000x60")], vec![], vec![s(m("mxstack_li_slot_retained_bytes"), "1000000x60")]),
        a("LiMediaBacklogNotShrinking",
          format!("(max({b}) > 0) and (max(delta({b}[30m])) >= 0)", b = m("mxstack_li_media_backlog_objects")),
          "30m", "warning",
          "Media objects wait to be copied to the LI bucket and the backlog has not shrunk in 30 minutes.",
          status)
            .test(vec![s(m("mxstack_li_media_backlog_objects"), "5+1x60")], vec![], vec![s(m("mxstack_li_media_backlog_objects"), "0x60")]),
        a("LiMediaCopyErrors",
          format!("sum(increase({}[30m])) > 0", m("mxstack_li_media_copy_errors_total")),
          "15m", "warning",
          "li-sync fails to copy or verify media objects into the LI bucket.",
          "li-sync's log names the objects; check the LI bucket's credentials and free space.")
            .test(vec![s(m("mxstack_li_media_copy_errors_total"), "0+1x60")], vec![], vec![s(m("mxstack_li_media_copy_errors_total"), "2x60")]),
        a("LiConsoleAuditWriteFailures",
          format!("sum(increase({}[10m])) > 0", m("mxstack_li_console_audit_write_failures_total")),
          "1m", "critical",
          "The LI console cannot write its audit log: it refuses to show anything until it can.",
          "Check the console's database (the LI replica's `li_console` database): reachable, disk not full; the console's log names the error.")
            .test(vec![s(m("mxstack_li_console_audit_write_failures_total"), "0+1x60")], vec![], vec![s(m("mxstack_li_console_audit_write_failures_total"), "0x60")]),
        a("LiConsoleLoginsRefused",
          format!("sum(increase({}[15m])) > 20", m("mxstack_li_console_logins_refused_total")),
          "1m", "warning",
          "More than 20 refused logins at the LI console in 15 minutes (guessing, or a locked-out colleague).",
          "The console's audit log lists the accounts and addresses; lock or reset accounts with `mxstack li console`.")
            .test(vec![s(m("mxstack_li_console_logins_refused_total"), "0+5x60")], vec![], vec![s(m("mxstack_li_console_logins_refused_total"), "0+1x60")]),
        a("LiTablesWithoutReplicaIdentity",
          format!("max({}) > 0", m("mxstack_li_tables_without_identity")),
          "5m", "critical",
          "Tables on main have no usable replica identity: UPDATE and DELETE on them fail on main.",
          "`mxstack li status` lists them; li-sync sets REPLICA IDENTITY FULL at its next schema check, or run `mxstack li upgrade-schema`.")
            .test(vec![s(m("mxstack_li_tables_without_identity"), "2x60")], vec![], vec![s(m("mxstack_li_tables_without_identity"), "0x60")]),
    ]
}

fn antivirus(ns: &str) -> Vec<Alert> {
    let scanner = reg::content_scanner::COMPONENT.name();
    let up = format!("up{{namespace=\"{ns}\", service=\"{scanner}\"}}");
    let errors = format!("mxstack_scanner_clamd_errors_total{{namespace=\"{ns}\"}}");
    let clamd_up = format!("mxstack_scanner_clamd_up{{namespace=\"{ns}\"}}");
    let infected =
        format!("mxstack_scanner_verdicts_total{{namespace=\"{ns}\", verdict=\"infected\"}}");
    vec![
        a("ContentScannerDown",
          // Also fires when no scanner pod is scraped at all.
          format!("absent({up} == 1)"),
          "5m", "critical",
          "No content scanner answers: media downloads and uploads fail (fail closed).",
          "Look at the content-scanner pods' events and logs (docs/ANTIVIRUS.md); media stays unavailable until one is ready.")
            .test(vec![s(up.clone(), "0x60")], vec![], vec![s(up, "1x60")]),
        a("ClamdUnavailable",
          // The gauge needs no scan to fail; the errors also catch a clamd that answers PING only.
          format!("(min({clamd_up}) == 0) or (sum(rate({errors}[5m])) > 0)"),
          "2m", "critical",
          "The content scanner cannot get verdicts from clamd: media requests get 503.",
          "Check the clamav pods (their signature database must load: freshclam's log) and that the scanner reaches clamd on 3310. Locally: `mxstack status` and `mxstack logs clamd`.")
            .test(vec![s(clamd_up.clone(), "0x60"), s(errors.clone(), "4x60")], vec![],
                  vec![s(clamd_up, "1x60"), s(errors, "4x60")]),
        a("MalwareRefused",
          format!("sum(increase({infected}[15m])) > 0"),
          "1m", "warning",
          "The content scanner refused infected media.",
          "Nothing is broken: the scanner's log names the media and the uploader; follow your malware-handling procedure.")
            .test(vec![s(infected.clone(), "0+1x60")], vec![], vec![s(infected, "0x60")]),
    ]
}

/// Synapse beyond up/down (metric names from Synapse 1.163's source).
fn synapse(ns: &str) -> Vec<Alert> {
    let status = |pod: &str| {
        format!("synapse_background_update_status{{namespace=\"{ns}\", pod=\"{pod}\", database_name=\"master\"}}")
    };
    let txns = |pod: &str| {
        format!("synapse_background_process_db_txn_count_total{{namespace=\"{ns}\", pod=\"{pod}\", name=\"background_updates\"}}")
    };
    let l = |k: &'static str, v: &str| (k, v.to_string());
    vec![
        a("SynapseBackgroundUpdateAborted",
          format!("min by (pod) (synapse_background_update_status{{namespace=\"{ns}\"}}) < 0"),
          "5m", "critical",
          "Synapse aborted a background database update: features that depend on it stay unavailable.",
          "Synapse main's log names the update and its error (often a database constraint or disk space); fix the cause and restart main, which resumes the update.")
            .test(vec![s(status("synapse-main-0"), "-1x60")], vec![l("pod", "synapse-main-0")], vec![s(status("synapse-main-0"), "3x60")]),
        // Running (2) but its background process ran no database transaction for 30 minutes:
        // an update that makes no progress (a lock, a batch that never finishes).
        a("SynapseBackgroundUpdateStuck",
          format!("(max by (pod) (synapse_background_update_status{{namespace=\"{ns}\"}}) == 2) unless on (pod) (sum by (pod) (rate(synapse_background_process_db_txn_count_total{{namespace=\"{ns}\", name=\"background_updates\"}}[30m])) > 0)"),
          "30m", "warning",
          "A Synapse background database update is running but has made no database progress for 30 minutes.",
          "Synapse main's log names the running update; look for a lock it waits on in PostgreSQL (`pg_stat_activity`, `pg_locks`) or a batch that keeps timing out. Restarting main resumes the update from its last batch.")
            .test(vec![s(status("synapse-main-0"), "2x60"), s(txns("synapse-main-0"), "100x60")],
                  vec![l("pod", "synapse-main-0")],
                  vec![s(status("synapse-main-0"), "2x60"), s(txns("synapse-main-0"), "0+50x60")]),
    ]
}

fn federation(ns: &str) -> Vec<Alert> {
    let pending = |pod: &str| {
        format!("synapse_federation_transaction_queue_pending_pdus{{namespace=\"{ns}\", pod=\"{pod}\"}}")
    };
    vec![
        a("SynapseFederationQueueGrowing",
          // A long queue, or one that keeps growing before it is long.
          format!("max by (pod) ({p}) > 1000 or (max by (pod) ({p}) > 100 and max by (pod) (deriv({p}[30m])) > 0)",
                  p = format!("synapse_federation_transaction_queue_pending_pdus{{namespace=\"{ns}\"}}")),
          "15m", "warning",
          "More than 1000 events wait to be sent to other servers, or more than 100 and the queue keeps growing.",
          "Usually one unreachable or slow remote server: the federation sender's log names the destinations it backs off from. If every destination is slow, check the sender's CPU and egress.")
            // Growing by 15 a minute: 900 at 60m, under the 1000 of a long queue.
            .test(vec![s(pending("synapse-federation-sender-0"), "0+15x60")],
                  vec![("pod", "synapse-federation-sender-0".to_string())],
                  vec![s(pending("synapse-federation-sender-0"), "500x60")]),
    ]
}

fn push(ns: &str) -> Vec<Alert> {
    let failed = format!("synapse_http_httppusher_http_pushes_failed_total{{namespace=\"{ns}\"}}");
    vec![
        a("SynapsePushesFailing",
          format!("sum(rate({failed}[10m])) > 0.1"),
          "15m", "warning",
          "Push notifications to the push gateway keep failing: phones are not notified.",
          "The pusher worker's log names the gateway's answer; check Sygnal (its log, its APNs/FCM credentials: docs/PUSH.md) and that the pusher can reach it.")
            .test(vec![s(failed.clone(), "0+10x60")], vec![], vec![s(failed, "0x60")]),
    ]
}

/// The router (HAProxy's own exporter).
fn router(ns: &str) -> Vec<Alert> {
    let resp = |code: &str| {
        format!("haproxy_backend_http_responses_total{{namespace=\"{ns}\", proxy=\"synchrotron\", code=\"{code}\"}}")
    };
    let queue =
        format!("haproxy_backend_current_queue{{namespace=\"{ns}\", proxy=\"synchrotron\"}}");
    vec![
        a("RouterErrorRate",
          format!("sum by (proxy) (rate(haproxy_backend_http_responses_total{{namespace=\"{ns}\", code=\"5xx\"}}[5m])) / sum by (proxy) (rate(haproxy_backend_http_responses_total{{namespace=\"{ns}\"}}[5m])) > 0.05"),
          "10m", "warning",
          "More than 5% of a worker group's responses are server errors.",
          "The group named in `proxy`: its workers' logs show the errors (database timeouts, a failing dependency); SynapseDown and PostgresNotReady point at the usual causes.")
            .test(vec![s(resp("5xx"), "0+10x60"), s(resp("2xx"), "0+10x60")],
                  vec![("proxy", "synchrotron".to_string())],
                  vec![s(resp("5xx"), "0x60"), s(resp("2xx"), "0+100x60")]),
        a("RouterQueueing",
          format!("max by (proxy) (haproxy_backend_current_queue{{namespace=\"{ns}\"}}) > 10"),
          "5m", "warning",
          "Requests queue in the router because a worker group is at its connection limit.",
          "The group named in `proxy` is saturated: add replicas (overrides) or check why its workers answer slowly (database, CPU).")
            .test(vec![s(queue.clone(), "50x60")], vec![("proxy", "synchrotron".to_string())], vec![s(queue, "0x60")]),
    ]
}

/// PostgreSQL (CloudNativePG's default monitoring queries, release 1.30).
fn postgres(ns: &str) -> Vec<Alert> {
    let failed =
        format!("cnpg_pg_stat_archiver_failed_count{{namespace=\"{ns}\", pod=\"main-pg-1\"}}");
    let backends = format!("cnpg_backends_total{{namespace=\"{ns}\", pod=\"main-pg-1\", datname=\"synapse\", state=\"idle\"}}");
    let max = format!("cnpg_pg_settings_setting{{namespace=\"{ns}\", pod=\"main-pg-1\", name=\"max_connections\"}}");
    let pod = || vec![("pod", "main-pg-1".to_string())];
    vec![
        a("PostgresWalArchivingFailing",
          format!("sum by (pod) (increase(cnpg_pg_stat_archiver_failed_count{{namespace=\"{ns}\"}}[10m])) > 0"),
          "15m", "critical",
          "WAL archiving to the backup bucket keeps failing: point-in-time recovery is falling behind and WAL piles up on disk.",
          "The instance's log and the ObjectStore's credentials and endpoint (Barman Cloud plugin); the bucket must exist and be writable.")
            .test(vec![s(failed.clone(), "0+1x60")], pod(), vec![s(failed, "3x60")]),
        a("PostgresConnectionsNearMax",
          format!("sum by (pod) (cnpg_backends_total{{namespace=\"{ns}\"}}) / on (pod) max by (pod) (cnpg_pg_settings_setting{{namespace=\"{ns}\", name=\"max_connections\"}}) > 0.85"),
          "5m", "warning",
          "A PostgreSQL instance uses more than 85% of max_connections (the connection budget's runtime twin).",
          "More processes than the budget planned (`mxstack plan` shows it), or connections leaking: raise postgres max_connections or lower worker replicas; `mxstack check` recomputes the budget.")
            .test(vec![s(backends.clone(), "90x60"), s(max.clone(), "100x60")], pod(), vec![s(backends, "10x60"), s(max, "100x60")]),
    ]
}

/// Valkey (redis_exporter's metrics).
fn valkey(ns: &str) -> Vec<Alert> {
    let used = format!("redis_memory_used_bytes{{namespace=\"{ns}\", pod=\"valkey-0\"}}");
    let max = format!("redis_memory_max_bytes{{namespace=\"{ns}\", pod=\"valkey-0\"}}");
    vec![
        a("ValkeyMemoryNearMax",
          format!("max by (pod) (redis_memory_used_bytes{{namespace=\"{ns}\"}} / (redis_memory_max_bytes{{namespace=\"{ns}\"}} > 0)) > 0.9"),
          "10m", "warning",
          "A Valkey instance uses more than 90% of its maxmemory: it starts evicting Synapse's replication data.",
          "Raise Valkey's memory (overrides) or find what grows (`valkey-cli info memory`, `--bigkeys`).")
            .test(vec![s(used.clone(), "950x60"), s(max.clone(), "1000x60")],
                  vec![("pod", "valkey-0".to_string())],
                  vec![s(used, "100x60"), s(max, "1000x60")]),
    ]
}

/// TLS certificates (cert-manager's metrics; its own ServiceMonitor must be on: Helm
/// `prometheus.servicemonitor.enabled=true`). Scraped from cert-manager's namespace, the
/// certificate's own namespace label arrives as `exported_namespace`.
fn certificates(ns: &str) -> Vec<Alert> {
    let exp = |name: &str| {
        format!("certmanager_certificate_expiration_timestamp_seconds{{exported_namespace=\"{ns}\", name=\"{name}\"}}")
    };
    vec![
        a("CertificateExpiringSoon",
          format!("min by (name) (certmanager_certificate_expiration_timestamp_seconds{{exported_namespace=\"{ns}\"}} - time()) < 14 * 86400"),
          "1h", "warning",
          "A TLS certificate of the deployment expires in less than 14 days: cert-manager has not renewed it.",
          "`kubectl describe certificate NAME -n NAMESPACE` and cert-manager's log: the ACME challenge failing (DNS, the HTTP-01 route) is the usual cause.")
            // At the test's evaluation time (1h) a day left fires; decades left stay silent.
            .test(vec![s(exp("tls-matrix"), "90000x60")],
                  vec![("name", "tls-matrix".to_string())],
                  vec![s(exp("tls-matrix"), "2000000000x60")]),
    ]
}

//! Alerts on how Synapse runs (latency, database, caches, replication, event persistence), on
//! storage (backups, volumes, Valkey replicas) and on calls. Same shape as `alerts.rs`: each
//! carries the promtool test that shows it firing and staying silent.

use mxstack_topology::registry as reg;

use crate::alerts::{a, s, Alert};

/// Servlets that hold a request open on purpose (long polls): their latency is not slowness.
const LONG_POLLS: &str = "SyncRestServlet|EventStreamRestServlet|SlidingSyncRestServlet";

fn hist(metric: &str, labels: &str, le: &str) -> String {
    format!("{metric}{{{labels}, le=\"{le}\"}}")
}

pub(crate) fn synapse_runtime(ns: &str) -> Vec<Alert> {
    let svc = reg::synapse::METRICS_SERVICE;
    let base = format!("namespace=\"{ns}\", service=\"{svc}\"");
    let bucket = "synapse_http_server_response_time_seconds_bucket";
    let generic =
        format!("{base}, pod=\"synapse-generic-0\", servlet=\"RoomSendEventRestServlet\"");
    let persister = format!(
        "{base}, pod=\"synapse-event-persister-0\", servlet=\"ReplicationSendEventsRestServlet\""
    );
    let txn = |m: &str, pod: &str| format!("{m}{{{base}, pod=\"{pod}\"}}");
    let conns = |pod: &str| txn("synapse_replication_tcp_resource_total_connections", pod);
    let evicted = format!("synapse_util_caches_cache_evicted_size{{{base}, pod=\"synapse-generic-0\", name=\"*getEvent*\", reason=\"size\"}}");
    let l = |k: &'static str, v: &str| (k, v.to_string());
    vec![
        a("SynapseSlowRequests",
          // The route family is the worker group, taken from the pod name (StatefulSet
          // `synapse-GROUP-N` or Deployment `synapse-GROUP-HASH-ID`).
          format!("histogram_quantile(0.95, sum by (le, group) (label_replace(rate({bucket}{{{base}, servlet!~\"{LONG_POLLS}\"}}[5m]), \"group\", \"$1\", \"pod\", \"synapse-(.+?)-([0-9]+|[a-z0-9]{{5,10}}-[a-z0-9]{{5}})\"))) > 3"),
          "10m", "warning",
          "p95 latency of a worker group's requests (long polls excluded) is above 3 s.",
          "The Synapse dashboard's row for `group` shows whether the database (time per second), CPU or one servlet is the cause; scale the group (overrides.<group>.replicas) or look at PostgreSQL.")
            .test(vec![s(hist(bucket, &generic, "1"), "0x60"), s(hist(bucket, &generic, "5"), "0x60"), s(hist(bucket, &generic, "+Inf"), "0+10x60")],
                  vec![l("group", "generic")],
                  vec![s(hist(bucket, &generic, "1"), "0+10x60"), s(hist(bucket, &generic, "5"), "0+10x60"), s(hist(bucket, &generic, "+Inf"), "0+10x60")]),
        a("SynapseEventPersisterSlow",
          format!("histogram_quantile(0.95, sum by (le, pod) (rate({bucket}{{{base}, servlet=\"ReplicationSendEventsRestServlet\"}}[5m]))) > 2"),
          "10m", "warning",
          "The event persister takes more than 2 s (p95) to persist events: sending messages is slow everywhere.",
          "The persister waits on PostgreSQL: see PostgresConnectionsNearMax, replication lag and the PostgreSQL dashboard's longest transaction; a room with many forward extremities also slows it (Synapse admin API).")
            .test(vec![s(hist(bucket, &persister, "1"), "0x60"), s(hist(bucket, &persister, "5"), "0x60"), s(hist(bucket, &persister, "+Inf"), "0+10x60")],
                  vec![l("pod", "synapse-event-persister-0")],
                  vec![s(hist(bucket, &persister, "1"), "0+10x60"), s(hist(bucket, &persister, "+Inf"), "0+10x60")]),
        a("SynapseDatabaseTransactionsSlow",
          format!("sum by (pod) (rate(synapse_storage_transaction_time_sum_total{{{base}}}[5m])) / sum by (pod) (rate(synapse_storage_transaction_time_count_total{{{base}}}[5m])) > 0.5"),
          "10m", "warning",
          "A Synapse process's database transactions take more than 0.5 s on average.",
          "Look at PostgreSQL: CPU, locks (cnpg_backends_waiting_total), the longest transaction and autovacuum; the process's connection pool (`plan` shows cp_max) may also be too small for its load.")
            .test(vec![s(txn("synapse_storage_transaction_time_sum_total", "synapse-main-0"), "0+60x60"), s(txn("synapse_storage_transaction_time_count_total", "synapse-main-0"), "0+60x60")],
                  vec![l("pod", "synapse-main-0")],
                  vec![s(txn("synapse_storage_transaction_time_sum_total", "synapse-main-0"), "0+1x60"), s(txn("synapse_storage_transaction_time_count_total", "synapse-main-0"), "0+100x60")]),
        a("SynapseCacheEvictionStorm",
          format!("sum by (pod) (rate(synapse_util_caches_cache_evicted_size{{{base}, reason=\"size\"}}[5m])) > 100"),
          "15m", "warning",
          "A Synapse process evicts more than 100 cache entries a second for lack of room.",
          "Its caches are too small for its load: raise `synapse.cache_factor` (or the process's memory with it) and render again.")
            .test(vec![s(evicted.clone(), "0+60000x60")], vec![l("pod", "synapse-generic-0")], vec![s(evicted, "0+60x60")]),
        a("SynapseReplicationDisconnected",
          format!("min by (pod) (synapse_replication_tcp_resource_total_connections{{{base}}}) == 0"),
          "2m", "critical",
          "A Synapse process lost its replication connection (Redis/Valkey): it serves stale data and cannot hand work to others.",
          "Check Valkey (ValkeyNoMaster, the sentinels) and that the process reaches valkey-master; the process reconnects by itself once Valkey answers.")
            .test(vec![s(conns("synapse-generic-0"), "0x60")], vec![l("pod", "synapse-generic-0")], vec![s(conns("synapse-generic-0"), "1x60")]),
    ]
}

/// The longest gap between two runs of a CloudNativePG backup schedule (6 fields, seconds
/// first), in seconds: hourly, every N hours, at listed hours, weekly on listed days, monthly.
/// What it cannot read counts as daily, the default schedule's interval.
pub fn backup_interval_seconds(schedule: &str) -> u64 {
    const HOUR: u64 = 3600;
    const DAY: u64 = 24 * HOUR;
    let f: Vec<&str> = schedule.split_whitespace().collect();
    let [_, minute, hour, dom, month, dow] = f[..] else {
        return DAY;
    };
    // The largest gap between listed values on a cycle of `period` units.
    let max_gap = |field: &str, period: u64| -> Option<u64> {
        if let Some(step) = field.strip_prefix("*/") {
            return step.parse::<u64>().ok().filter(|s| *s > 0);
        }
        let mut v: Vec<u64> = field
            .split(',')
            .map(|x| x.parse::<u64>().ok())
            .collect::<Option<_>>()?;
        v.sort_unstable();
        v.dedup();
        let wrap = v.first()? + period - v.last()?;
        Some(v.windows(2).map(|w| w[1] - w[0]).fold(wrap, u64::max))
    };
    if month != "*" || dom != "*" {
        return 31 * DAY;
    }
    if dow != "*" && dow != "?" {
        return max_gap(dow, 7).map_or(7 * DAY, |d| d * DAY);
    }
    if hour == "*" {
        return if minute == "*" { 60 } else { HOUR };
    }
    max_gap(hour, 24).map_or(DAY, |h| h * HOUR)
}

pub(crate) fn storage(ns: &str, backup_schedule: &str) -> Vec<Alert> {
    // Two missed runs: one late or failed backup is not yet an emergency.
    let too_old = 2 * backup_interval_seconds(backup_schedule);
    let backup = format!(
        "cnpg_collector_last_available_backup_timestamp{{namespace=\"{ns}\", pod=\"main-pg-1\"}}"
    );
    let vol = |m: &str| format!("{m}{{namespace=\"{ns}\", persistentvolumeclaim=\"main-pg-1\"}}");
    let slaves = format!("redis_connected_slaves{{namespace=\"{ns}\", pod=\"valkey-0\"}}");
    let redis_up = |pod: &str| format!("redis_up{{namespace=\"{ns}\", pod=\"{pod}\"}}");
    let l = |k: &'static str, v: &str| (k, v.to_string());
    vec![
        a("PostgresBackupTooOld",
          // 0 (no backup yet) is oldest of all.
          format!("time() - max(cnpg_collector_last_available_backup_timestamp{{namespace=\"{ns}\"}}) > {too_old}"),
          "30m", "critical",
          format!("The newest PostgreSQL backup is older than two intervals of the backup schedule (`{backup_schedule}`: {} h).", too_old / 3600),
          "`kubectl -n NAMESPACE get backups` and the failing Backup's status; usually the object store (credentials, bucket, network) or the Barman Cloud plugin. A point-in-time restore can only reach back to the last backup.")
            // promtool's clock starts at 0: at 60m a backup at -N s is N + 3600 s old.
            .test(vec![s(backup.clone(), format!("-{too_old}x60"))], vec![], vec![s(backup, "3000x60")]),
        a("PersistentVolumeFilling",
          format!("min by (persistentvolumeclaim) (kubelet_volume_stats_available_bytes{{namespace=\"{ns}\"}} / kubelet_volume_stats_capacity_bytes{{namespace=\"{ns}\"}}) < 0.15"),
          "10m", "warning",
          "A volume (database, Valkey, media) has less than 15 % free.",
          "Grow the PVC (the StorageClass must allow expansion) or free space: for PostgreSQL, check WAL retained by a replication slot (LiSlotRetainsTooMuchWal) and archiving (PostgresWalArchivingFailing) first.")
            .test(vec![s(vol("kubelet_volume_stats_available_bytes"), "5x60"), s(vol("kubelet_volume_stats_capacity_bytes"), "100x60")],
                  vec![l("persistentvolumeclaim", "main-pg-1")],
                  vec![s(vol("kubelet_volume_stats_available_bytes"), "50x60"), s(vol("kubelet_volume_stats_capacity_bytes"), "100x60")]),
        a("ValkeyReplicasDisconnected",
          format!("max(redis_connected_slaves{{namespace=\"{ns}\"}}) < count(redis_up{{namespace=\"{ns}\"}}) - 1"),
          "5m", "warning",
          "The Valkey master has fewer replicas than there are Valkey instances: a failover could lose data.",
          "Look at the disconnected replica's log (`master_link_status` in INFO replication): a full resync that keeps failing usually means too little memory or `client-output-buffer-limit`.")
            .test(vec![s(slaves.clone(), "1x60"), s(redis_up("valkey-0"), "1x60"), s(redis_up("valkey-1"), "1x60"), s(redis_up("valkey-2"), "1x60")], vec![],
                  vec![s(slaves, "2x60"), s(redis_up("valkey-0"), "1x60"), s(redis_up("valkey-1"), "1x60"), s(redis_up("valkey-2"), "1x60")]),
    ]
}

/// The media store (SeaweedFS's S3 gateway; an external S3 or MinIO is watched by its provider).
pub(crate) fn media_s3(ns: &str) -> Vec<Alert> {
    let req = |code: &str| {
        format!("SeaweedFS_s3_request_total{{namespace=\"{ns}\", pod=\"seaweedfs-filer-0\", type=\"PUT\", code=\"{code}\", bucket=\"media\"}}")
    };
    let b =
        format!("namespace=\"{ns}\", pod=\"seaweedfs-filer-0\", type=\"GET\", bucket=\"media\"");
    let bucket = "SeaweedFS_s3_request_seconds_bucket";
    vec![
        a("MediaStorageErrors",
          format!("sum(rate(SeaweedFS_s3_request_total{{namespace=\"{ns}\", code=~\"5..\"}}[5m])) / sum(rate(SeaweedFS_s3_request_total{{namespace=\"{ns}\"}}[5m])) > 0.05"),
          "10m", "critical",
          "More than 5 % of media store (S3) requests fail: uploads and downloads of media fail.",
          "Look at the SeaweedFS filers' and volume servers' logs: a full volume (PersistentVolumeFilling), a lost master quorum or an unreachable volume server are the usual causes.")
            .test(vec![s(req("500"), "0+30x60"), s(req("200"), "0+60x60")], vec![],
                  vec![s(req("500"), "0x60"), s(req("200"), "0+60x60")]),
        a("MediaStorageSlow",
          format!("histogram_quantile(0.95, sum by (le) (rate({bucket}{{namespace=\"{ns}\"}}[5m]))) > 2"),
          "15m", "warning",
          "The media store (S3) answers 5 % of requests slower than 2 s.",
          "Volume servers' disks or network: the SeaweedFS volume pods' CPU and IO, and the number of volume servers (`media.volume_size`, storage nodes in `plan`).")
            .test(vec![s(hist(bucket, &b, "1"), "0x60"), s(hist(bucket, &b, "5"), "0x60"), s(hist(bucket, &b, "+Inf"), "0+10x60")], vec![],
                  vec![s(hist(bucket, &b, "1"), "0+10x60"), s(hist(bucket, &b, "+Inf"), "0+10x60")]),
    ]
}

/// coturn has no exporter in Debian's build (docs/CALLS.md), and LiveKit is not scraped: their
/// Deployments' availability comes from kube-state-metrics.
pub(crate) fn calls(ns: &str) -> Vec<Alert> {
    let mut out = Vec::new();
    for c in [&reg::coturn::COMPONENT, &reg::livekit::COMPONENT] {
        let name = c.name();
        let avail = format!("kube_deployment_status_replicas_available{{namespace=\"{ns}\", deployment=\"{name}\"}}");
        let (alert, summary, fix) = match c.id {
            mxstack_topology::party::Party::Coturn => ("CoturnUnavailable",
                "No coturn replica is available: calls between users behind NAT fail.",
                "`kubectl -n NAMESPACE describe deployment coturn`; coturn needs its LoadBalancer address and the TURN secret (docs/CALLS.md)."),
            _ => ("LivekitUnavailable",
                "No LiveKit replica is available: group calls (Element Call) fail.",
                "`kubectl -n NAMESPACE describe deployment livekit` and its log; LiveKit needs its UDP ports reachable and its API key from rtc-auth's Secret (docs/CALLS.md)."),
        };
        out.push(
            a(
                alert,
                format!("max({avail}) == 0"),
                "5m",
                "critical",
                summary,
                fix,
            )
            .test(
                vec![s(avail.clone(), "0x60")],
                vec![],
                vec![s(avail, "1x60")],
            ),
        );
    }
    out
}

//! What each exporter of the deployment exposes: the metric names an alert or a dashboard may
//! use. An expression naming any other metric is refused (MX-OUT-021), because a rule on a
//! metric nobody exports is an alert that can never fire.
//!
//! The lists are checked against the real exporters: the e2e test `test_monitoring.py` scrapes a
//! live local stack and fails on a listed metric of a locally running exporter that is missing
//! (except the `lazy` ones, which appear only once something happened).

use std::collections::BTreeSet;
use std::sync::OnceLock;

use mxstack_topology::party::Party;

/// Where an exporter's metrics come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The ServiceMonitor or PodMonitor rendered for one of these components.
    Components(&'static [Party]),
    /// Prometheus itself (`up`, `ALERTS`).
    Prometheus,
    /// What the platform brings, not mxstack: kube-prometheus-stack's kubelet and
    /// kube-state-metrics, cert-manager's own monitor. Named for the docs.
    Platform(&'static str),
}

#[derive(Debug, Clone, Copy)]
pub struct Exporter {
    pub name: &'static str,
    pub source: Source,
    /// `mxstack up` runs it (its metrics exist on the local stack).
    pub local: bool,
    pub metrics: &'static [&'static str],
    /// Metrics that appear only once something happened: a push sent, a federation peer, a
    /// failed backup. Valid in expressions; the live test does not require them.
    pub lazy: &'static [&'static str],
    /// Also every `cnpg_<query>_<column>` of CloudNativePG's default monitoring queries.
    pub cnpg_queries: bool,
}

impl Exporter {
    /// Every metric name it exposes.
    pub fn all_metrics(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .metrics
            .iter()
            .chain(self.lazy)
            .map(|m| m.to_string())
            .collect();
        if self.cnpg_queries {
            v.extend(cnpg_query_metrics().iter().cloned());
        }
        v
    }
}

/// CloudNativePG's default monitoring queries (vendored verbatim; see the file's header).
pub const CNPG_DEFAULT_QUERIES: &str =
    include_str!("../vendor/cnpg-1.30.0-default-monitoring.yaml");

/// `cnpg_<query>_<column>` for every GAUGE or COUNTER column of the default queries.
pub fn cnpg_query_metrics() -> &'static BTreeSet<String> {
    static NAMES: OnceLock<BTreeSet<String>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let queries: serde_json::Value =
            serde_saphyr::from_str(CNPG_DEFAULT_QUERIES).expect("the vendored queries parse");
        let mut names = BTreeSet::new();
        for (query, q) in queries.as_object().expect("a map of queries") {
            for column in q["metrics"].as_array().into_iter().flatten() {
                for (col, def) in column.as_object().into_iter().flatten() {
                    if matches!(def["usage"].as_str(), Some("GAUGE" | "COUNTER")) {
                        names.insert(format!("cnpg_{query}_{col}"));
                    }
                }
            }
        }
        names
    })
}

const SYNAPSE: &[Party] = &[Party::Synapse];

/// Every exporter mxstack renders or relies on.
pub const EXPORTERS: &[Exporter] = &[
    Exporter {
        name: "Prometheus",
        source: Source::Prometheus,
        local: true,
        metrics: &["up", "ALERTS"],
        lazy: &[],
        cnpg_queries: false,
    },
    Exporter {
        name: "Synapse",
        source: Source::Components(SYNAPSE),
        local: true,
        metrics: &[
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "synapse_http_server_requests_received_total",
            "synapse_http_server_responses_total",
            "synapse_http_server_response_time_seconds_bucket",
            "synapse_http_server_response_time_seconds_count",
            "synapse_http_server_response_time_seconds_sum",
            "synapse_storage_transaction_time_sum_total",
            "synapse_storage_transaction_time_count_total",
            "synapse_util_caches_cache_evicted_size",
            "synapse_util_caches_cache_hits",
            "synapse_util_caches_cache",
            "synapse_util_caches_cache_size",
            "synapse_replication_tcp_resource_total_connections",
            "synapse_notifier_listeners",
        ],
        lazy: &[
            // Main only, once a background update ran.
            "synapse_background_update_status",
            // Once a background process (e.g. background_updates) ran a transaction.
            "synapse_background_process_db_txn_count_total",
            // Event persisters, once events were persisted.
            "synapse_storage_events_persisted_events_total",
            "synapse_event_persisted_position",
            // The federation sender (feature federation).
            "synapse_federation_transaction_queue_pending_pdus",
            // Pushers, once a push was sent.
            "synapse_http_httppusher_http_pushes_processed_total",
            "synapse_http_httppusher_http_pushes_failed_total",
        ],
        cnpg_queries: false,
    },
    Exporter {
        name: "HAProxy (router)",
        source: Source::Components(&[Party::Router]),
        local: true,
        metrics: &[
            "haproxy_backend_active_servers",
            "haproxy_backend_current_queue",
            "haproxy_backend_http_responses_total",
            "haproxy_backend_http_requests_total",
            "haproxy_backend_response_time_average_seconds",
            "haproxy_backend_queue_time_average_seconds",
            "haproxy_backend_status",
            "haproxy_server_status",
            "haproxy_frontend_http_requests_total",
            "haproxy_frontend_current_sessions",
        ],
        lazy: &[],
        cnpg_queries: false,
    },
    Exporter {
        name: "PostgreSQL (CloudNativePG's exporter; postgres_exporter with its queries locally)",
        source: Source::Components(&[Party::Postgres, Party::LiPostgres]),
        local: true,
        metrics: &[],
        lazy: &[],
        cnpg_queries: true,
    },
    Exporter {
        name: "CloudNativePG instance manager",
        source: Source::Components(&[Party::Postgres, Party::LiPostgres]),
        local: false,
        metrics: &[
            "cnpg_collector_up",
            "cnpg_collector_pg_wal_archive_status",
            "cnpg_collector_last_available_backup_timestamp",
            "cnpg_collector_last_failed_backup_timestamp",
        ],
        lazy: &[],
        cnpg_queries: false,
    },
    Exporter {
        name: "Valkey (redis_exporter)",
        source: Source::Components(&[Party::Valkey]),
        local: true,
        metrics: &[
            "redis_up",
            "redis_instance_info",
            "redis_memory_used_bytes",
            "redis_memory_max_bytes",
            "redis_connected_slaves",
            "redis_connected_clients",
            "redis_commands_processed_total",
        ],
        // Replicas only.
        lazy: &["redis_master_link_up"],
        cnpg_queries: false,
    },
    Exporter {
        name: "SeaweedFS (the filers' S3 gateway)",
        source: Source::Components(&[Party::Seaweedfs]),
        local: true,
        metrics: &[
            "SeaweedFS_s3_request_total",
            "SeaweedFS_s3_request_seconds_bucket",
        ],
        lazy: &[],
        cnpg_queries: false,
    },
    Exporter {
        name: "content scanner",
        source: Source::Components(&[Party::ContentScanner]),
        local: true,
        metrics: &[
            "mxstack_scanner_clamd_up",
            "mxstack_scanner_clamd_errors_total",
            "mxstack_scanner_upstream_errors_total",
            "mxstack_scanner_requests_total",
            "mxstack_scanner_scan_seconds_bucket",
            "mxstack_scanner_cache_hits_total",
            "mxstack_scanner_cache_misses_total",
            "mxstack_scanner_scanned_bytes_total",
            "mxstack_scanner_verdicts_total",
        ],
        lazy: &[],
        cnpg_queries: false,
    },
    Exporter {
        name: "li-sync",
        source: Source::Components(&[Party::LiSync]),
        local: true,
        metrics: &[
            "mxstack_li_up",
            "mxstack_li_lag_seconds",
            "mxstack_li_lag_bytes",
            "mxstack_li_subscription_enabled",
            "mxstack_li_initial_copy_stalled",
            "mxstack_li_apply_errors_total",
            "mxstack_li_slot_retained_bytes",
            "mxstack_li_media_backlog_objects",
            "mxstack_li_media_copied_total",
            "mxstack_li_media_copy_errors_total",
            "mxstack_li_tables_without_identity",
            "mxstack_li_history_rows",
        ],
        lazy: &[],
        cnpg_queries: false,
    },
    Exporter {
        name: "LI console",
        source: Source::Components(&[Party::LiConsole]),
        local: true,
        metrics: &[
            "mxstack_li_console_audit_entries",
            "mxstack_li_console_audit_write_failures_total",
            "mxstack_li_console_logins_refused_total",
            "mxstack_li_console_warrants",
        ],
        lazy: &[],
        cnpg_queries: false,
    },
    Exporter {
        name: "key vault",
        source: Source::Components(&[Party::KeyVault]),
        local: true,
        metrics: &[
            "mxstack_keyvault_keys_stored_total",
            "mxstack_keyvault_retrievals_total",
            "mxstack_keyvault_errors_total",
        ],
        lazy: &[],
        cnpg_queries: false,
    },
    Exporter {
        name: "rtc-auth",
        source: Source::Components(&[Party::RtcAuth]),
        local: true,
        metrics: &[
            "mxstack_rtc_auth_tokens_issued_total",
            "mxstack_rtc_auth_refused_total",
            "mxstack_rtc_auth_homeserver_errors_total",
        ],
        lazy: &[],
        cnpg_queries: false,
    },
    Exporter {
        name: "kubelet",
        source: Source::Platform("kube-prometheus-stack's kubelet ServiceMonitor"),
        local: false,
        metrics: &[
            "kubelet_volume_stats_available_bytes",
            "kubelet_volume_stats_capacity_bytes",
        ],
        lazy: &[],
        cnpg_queries: false,
    },
    Exporter {
        name: "kube-state-metrics",
        source: Source::Platform("kube-prometheus-stack's kube-state-metrics"),
        local: false,
        metrics: &[
            "kube_deployment_status_replicas_available",
            "kube_deployment_spec_replicas",
            "kube_pod_container_status_restarts_total",
        ],
        lazy: &[],
        cnpg_queries: false,
    },
    Exporter {
        name: "cert-manager",
        source: Source::Platform("cert-manager's controller (its Helm chart's ServiceMonitor)"),
        local: false,
        metrics: &["certmanager_certificate_expiration_timestamp_seconds"],
        lazy: &[],
        cnpg_queries: false,
    },
];

/// The metrics of the exporters `present` accepts.
pub fn exposed(present: impl Fn(&Exporter) -> bool) -> BTreeSet<String> {
    EXPORTERS
        .iter()
        .filter(|e| present(e))
        .flat_map(|e| e.all_metrics())
        .collect()
}

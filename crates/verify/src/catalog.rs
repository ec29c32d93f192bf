//! The checks as data: id, title, what a PASS proves, and the fix when it fails. `docs/VERIFY.md`
//! lists the same table; a test holds the two together.

/// One check of the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    pub id: &'static str,
    pub title: &'static str,
    /// What a PASS proves.
    pub proves: &'static str,
    /// What to do when it fails.
    pub fix: &'static str,
}

macro_rules! check {
    ($name:ident, $id:literal, $title:literal, $proves:literal, $fix:literal) => {
        pub const $name: Check = Check {
            id: $id,
            title: $title,
            proves: $proves,
            fix: $fix,
        };
    };
}

check!(CLIENT_API, "MX-VERIFY-001", "client API answers",
    "GET /_matrix/client/versions through the public client URL returns Synapse's versions",
    "check that the router and Synapse main are running (`mxstack status`, `kubectl get pods -l app.kubernetes.io/name=synapse-router`) and that --url / DNS point at the edge");
check!(WELL_KNOWN_CLIENT, "MX-VERIFY-002", "client .well-known",
    "https://<domain>/.well-known/matrix/client names the public client URL (https://<hostnames.matrix>), so clients find the homeserver from a user ID",
    "serve /.well-known/matrix/client on the server name's host (the Element pods do: `mxstack render` phase edge); its m.homeserver.base_url must be https://<hostnames.matrix>");
check!(WELL_KNOWN_SERVER, "MX-VERIFY-003", "server .well-known (federation delegation)",
    "with federation, https://<domain>/.well-known/matrix/server delegates to <hostnames.matrix>:443",
    "serve /.well-known/matrix/server on the server name's host with {\"m.server\": \"<hostnames.matrix>:443\"} (rendered with feature federation)");
check!(TLS, "MX-VERIFY-004", "TLS certificate (chain, names, expiry)",
    "the client host's certificate chains to a trusted CA, names the host, and is valid for more than 14 days",
    "check the Certificate and its issuer (`kubectl describe certificate -A`, cert-manager's logs); for a private CA pass it with --ca FILE");
check!(FEDERATION, "MX-VERIFY-005", "federation: server keys",
    "with federation, GET /_matrix/key/v2/server on the federation endpoint returns this server's signing keys for <domain>",
    "route /_matrix/key and /_matrix/federation to Synapse on the delegated host and port; check the Gateway listener and /.well-known/matrix/server");
check!(ADMIN_USER, "MX-VERIFY-006", "throwaway user via the admin API",
    "shared-secret registration (/_synapse/admin/v1/register, HMAC) creates a user and returns an access token",
    "check registration_shared_secret in secrets.yaml matches the deployment's Secret, and that /_synapse/admin reaches Synapse main from where verify runs");
check!(MESSAGING, "MX-VERIFY-007", "create a room, send and receive",
    "a room is created, a message sent to it, and /sync returns that message (room, event-persister, synchrotron and stream-writer paths through the router)",
    "check the Synapse workers named in the detail (`mxstack status` / `kubectl get pods`), their logs, and the router's backends");
check!(MEDIA, "MX-VERIFY-008", "upload and download media",
    "a clean file is uploaded (scanned on the way in when antivirus is on) and downloaded byte for byte through the authenticated media API",
    "check the media worker, the S3 backend, and with antivirus the content scanner and clamd (`mxstack logs content-scanner`)");
check!(ANTIVIRUS, "MX-VERIFY-009", "EICAR refused (antivirus)",
    "uploading the EICAR test file is refused as infected (400/403), not for an error, while the scanner reports clamd ready",
    "check clamd and the content scanner (`mxstack status`, `mxstack logs clamd`, `kubectl logs deploy/content-scanner`): the scanner must reach clamd, whose database must hold signatures");
check!(TURN, "MX-VERIFY-010", "TURN credentials issued (calls)",
    "GET /_matrix/client/v3/voip/turnServer returns a username, a password and the TURN URIs of the deployment",
    "check turn_uris and turn_shared_secret in Synapse's config (feature calls) and that coturn shares the secret");
check!(LI_LAG, "MX-VERIFY-011", "LI replica lag",
    "li-sync's status is fresh and shows the subscription enabled, the apply worker running, and the replica at most 5 s behind main",
    "check the LI PostgreSQL and li-sync (`mxstack li status`, `mxstack logs li-sync`, `mxstack logs postgres-li`); on a cluster pass --li-sync URL (e.g. via `kubectl port-forward svc/li-sync 8091`)");
check!(LI_GATE, "MX-VERIFY-012", "LI hosts refuse outside li.allowed_cidrs",
    "each LI hostname answers 403 to this machine, which is outside li.allowed_cidrs",
    "render with li.allowed_cidrs set and a Gateway implementation that enforces the SecurityPolicy / ipAllowList; run verify from outside the allowed networks");
check!(SYNAPSE_METRICS, "MX-VERIFY-013", "Synapse metrics scraped",
    "every Synapse process's metrics endpoint answers with Synapse metrics (on a cluster: Prometheus reports every synapse target up)",
    "check the Synapse process named in the detail (stopped, hung or crash-looping: `mxstack status`, `mxstack logs <process>`), and the ServiceMonitors (feature monitoring)");
check!(SCANNER_METRICS, "MX-VERIFY-014", "content scanner metrics scraped",
    "the content scanner's metrics endpoint answers with its metrics (on a cluster: Prometheus reports the content-scanner target up)",
    "check the content scanner (`mxstack logs content-scanner`, `kubectl logs deploy/content-scanner`) and its ServiceMonitor");
check!(CLEANUP, "MX-VERIFY-015", "throwaway data removed",
    "the room verify made is deleted and purged, its media deleted, and its user deactivated and erased",
    "delete what the detail names by hand with the admin API (DELETE /_synapse/admin/v2/rooms/<id> with purge, POST /_synapse/admin/v1/deactivate/<user> with erase)");

check!(DASHBOARDS, "MX-VERIFY-016", "every dashboard panel returns data",
    "Prometheus returns at least one series for every panel of every rendered dashboard (locally: every panel whose exporters `up` runs)",
    "the detail names the empty panels: check that their exporter is scraped (Prometheus' targets page, `mxstack status`), and that the component they show has seen traffic");
check!(METRIC_CATALOG, "MX-VERIFY-017", "exporters expose the catalog's metrics",
    "every metric crates/monitoring/src/catalog.rs lists for a running exporter is known to Prometheus, so no alert waits on a metric that never arrives",
    "an exporter's version changed the metric's name or it is not scraped: fix the catalog and the alerts using the metric, or the scrape");

/// Every check, in the order they run and are reported.
pub const ALL: [Check; 17] = [
    CLIENT_API,
    WELL_KNOWN_CLIENT,
    WELL_KNOWN_SERVER,
    TLS,
    FEDERATION,
    ADMIN_USER,
    MESSAGING,
    MEDIA,
    ANTIVIRUS,
    TURN,
    LI_LAG,
    LI_GATE,
    SYNAPSE_METRICS,
    SCANNER_METRICS,
    CLEANUP,
    DASHBOARDS,
    METRIC_CATALOG,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_numbered_in_order() {
        for (i, c) in ALL.iter().enumerate() {
            assert_eq!(c.id, format!("MX-VERIFY-{:03}", i + 1), "{}", c.title);
            assert!(!c.fix.is_empty() && !c.proves.is_empty());
        }
    }

    #[test]
    fn docs_verify_md_lists_every_check_with_its_title() {
        let doc = include_str!("../../../docs/VERIFY.md");
        for c in ALL {
            let row = doc
                .lines()
                .find(|l| l.starts_with(&format!("| {} |", c.id)))
                .unwrap_or_else(|| panic!("docs/VERIFY.md has no row for {}", c.id));
            assert!(
                row.contains(c.title),
                "{}: title differs in docs/VERIFY.md",
                c.id
            );
        }
    }
}

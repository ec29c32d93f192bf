//! The rule catalogue. Seed references: "004 N.M" is issue N.M of the review in
//! shared/seeds/004; "002 ..." is a checklist item of seed 002.

use crate::Severity;

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Rule {
    pub id: &'static str,
    pub title: &'static str,
    /// The seed defect or checklist item this rule exists for.
    pub covers: &'static str,
    pub severity: Severity,
    pub fix: &'static str,
}

const fn r(
    id: &'static str,
    title: &'static str,
    covers: &'static str,
    severity: Severity,
    fix: &'static str,
) -> Rule {
    Rule {
        id,
        title,
        covers,
        severity,
        fix,
    }
}

use Severity::{Error, Warning};

pub static RULES: &[Rule] = &[
    // --- the config as written
    r("MX-CFG-000", "config file does not load", "003 step 6 (hand-edited YAML)", Error,
      "correct the YAML at the location shown (`mxstack schema` describes every key)"),
    r("MX-CFG-001", "value is a placeholder", "004 3.1; 003 CHANGEME and example.com edits", Error,
      "replace it with the real value for your site"),
    r("MX-CFG-002", "not a valid DNS name", "003 step 3 (85 domain edits)", Error,
      "use a fully qualified lower-case DNS name such as matrix.your-org.eu"),
    r("MX-CFG-003", "ACME e-mail missing or invalid", "002 TLS checklist", Error,
      "set tls.acme_email to a mailbox the operator reads, or use tls.issuer: selfsigned for air-gapped sites"),
    r("MX-CFG-004", "external S3 endpoint missing or invalid", "003 media storage", Error,
      "set media.endpoint to the https:// URL of your S3 service, or use media.backend: seaweedfs"),
    r("MX-CFG-005", "MinIO community edition is unmaintained", "FACTS: MinIO end of maintenance", Warning,
      "use media.backend: seaweedfs (bundled) or s3 (external)"),
    r("MX-CFG-006", "image not pinned", "003 image versions", Error,
      "pin a version tag or digest; `latest` and untagged images change under you"),
    r("MX-CFG-007", "autoscaling asked for a process that cannot scale without restarts", "004 5.3", Error,
      "remove max_replicas: only synchrotron and generic workers may autoscale"),
    r("MX-CFG-008", "invalid resource quantity", "003 step 7 resource sizes", Error,
      "use Kubernetes quantities: cpu like 500m or 2, memory like 512Mi or 4Gi"),
    r("MX-CFG-009", "LI access not restricted", "004 3.4; 002 LI IP allow-listing", Warning,
      "list the investigators' networks in li.allowed_cidrs (e.g. 198.51.100.0/24); until then the LI hostnames serve nobody"),
    r("MX-CFG-010", "invalid CIDR", "002 LI IP allow-listing", Error,
      "write an IPv4 or IPv6 network such as 198.51.100.0/24"),
    r("MX-CFG-011", "single-writer stream sharded", "004 2.5", Error,
      "remove replicas from stream-writer: Synapse allows exactly one writer for typing, to_device, account_data, presence and push_rules"),
    r("MX-CFG-012", "Synapse image is not the supported version", "003 pinned Synapse version", Warning,
      "use the image built from images/synapse/Containerfile for Synapse 1.163.2"),
    r("MX-CFG-013", "LI node label is not a Kubernetes label", "001 LI network isolation", Error,
      "write li.node_label as key=value, e.g. mxstack.io/role=li, and label (and taint) the LI nodes with it"),
    r("MX-CFG-014", "not a Synapse duration", "003 step 6 (hand-edited YAML)", Error,
      "write a number with one of the suffixes s, m, h, d, w, y (e.g. 7d); without a suffix Synapse reads milliseconds"),
    r("MX-CFG-015", "TURN relay port range unusable", "004 6.4 (coturn behind a LoadBalancer)", Error,
      "set calls.relay_port_first <= calls.relay_port_last, both 1024 or above, at most 200 ports apart (a LoadBalancer lists each port)"),
    r("MX-CFG-016", "TURN may relay to internal addresses", "004 6.4; issue 20: TURN as a door into the network", Warning,
      "remove calls.allowed_peer_ips unless a media server inside the network must be reachable through TURN, and then list only its address"),
    r("MX-CFG-020", "push app unusable", "issue 20 (push): Sygnal rendered with no apps", Error,
      "give every push.apps entry a unique reverse-DNS id of at most 64 characters; apns needs topic, team_id and key_id, fcm needs project_id"),
    r("MX-CFG-021", "push gateway URL unusable", "issue 20 (push): pushers send anywhere", Error,
      "set push.gateway_url to an http(s) URL with the path /_matrix/push/v1/notify; a private IP address in it must be covered by push.gateway_ip_ranges (Synapse refuses private addresses otherwise)"),
    r("MX-CFG-022", "push gateway's addresses not allowed", "issue 20 (push): Synapse blocks private addresses", Warning,
      "list the addresses the gateway's host resolves to in push.gateway_ip_ranges (for the in-cluster Sygnal: your cluster's Service CIDR, e.g. 10.96.0.0/12); until then Synapse refuses to send any push"),
    // --- the derived topology
    r("MX-TOP-001", "database connection budget exceeded", "004 2.3", Error,
      "lower worker maxima or raise PostgreSQL max_connections so sum(cp_max) stays within 85%"),
    r("MX-TOP-002", "stream writer not reachable", "004 2.5", Error,
      "every stream writer needs an instance_map entry and a replication listener"),
    r("MX-TOP-003", "federation senders disagree with the worker list", "004 2.6", Error,
      "derive federation_sender_instances from the federation-sender workers"),
    r("MX-TOP-004", "media repository on main while media workers exist", "004 2.7", Error,
      "set enable_media_repo: false on main and name one media worker in media_instance_running_background_jobs"),
    r("MX-TOP-005", "single point of failure", "004 2.1, 2.2", Error,
      "run at least two replicas of the router and of every stateless worker type"),
    r("MX-TOP-006", "Valkey/Redis not highly available", "004 1.2, 1.3", Error,
      "three instances with Sentinel quorum 2 and a role:master endpoint for Synapse"),
    r("MX-TOP-007", "duty assigned to a process that does not exist", "004 2.5-2.7", Error,
      "run_background_tasks_on, pusher_instances and media_instance_running_background_jobs must name existing workers"),
    r("MX-TOP-008", "media bypasses the antivirus scanner", "004 2.10", Error,
      "route every media download and thumbnail to the content scanner and load the upload-scan module on the media workers (feature antivirus)"),
    // --- the rendered output
    r("MX-OUT-001", "secret outside a Secret object", "004 3.1; 002 secrets checklist", Error,
      "keep the value in a Secret and reference it (file mount or secretKeyRef)"),
    r("MX-OUT-002", "placeholder in rendered output", "004 3.1", Error,
      "fix the config value it comes from; the renderer never writes placeholders"),
    r("MX-OUT-003", "Service selects no pods", "003 verification: services without endpoints", Error,
      "make the Service selector match the workload's pod labels"),
    r("MX-OUT-004", "reference to a missing Secret, ConfigMap or key", "004 1.1, 1.7", Error,
      "render the referenced object, or reference one that exists"),
    r("MX-OUT-005", "hard-coded DNS resolver", "004 1.8", Error,
      "resolve through the pod's resolv.conf (HAProxy `parse-resolv-conf`)"),
    r("MX-OUT-006", "deprecated in-tree Barman backup", "FACTS: CloudNativePG 1.30", Error,
      "use the Barman Cloud plugin (ObjectStore + spec.plugins)"),
    r("MX-OUT-007", "no default-deny NetworkPolicy", "004 3.5", Error,
      "deny all ingress and egress by default and allow each needed flow explicitly"),
    r("MX-OUT-008", "config templated at pod start", "004 6.1", Error,
      "mount generated files and use Synapse's *_path options; no envsubst or sed in init containers"),
    r("MX-OUT-009", "Element Web references an outside service", "004 6.3", Error,
      "remove the URL, or list the service in synapse.element_external_services"),
    r("MX-OUT-010", "HPA on a process that needs a restart to scale", "004 5.3", Error,
      "autoscale only synchrotron and generic workers"),
    r("MX-OUT-011", "a config path is not mounted", "004 6.1, 1.1", Error,
      "mount the Secret or ConfigMap that holds the file at the path the config names"),
    r("MX-OUT-012", "LI workload not isolated from main", "004 3.3, 3.5, 1.7", Error,
      "run LI workloads only on the LI nodes (nodeSelector) and give them LI credentials only: never main's superuser or the synapse database password, nor an automatically mounted service account token (automountServiceAccountToken: false)"),
    r("MX-OUT-013", "E2EE key recovery chain does not hold together", "004 2.8, 4.3", Error,
      "render again from one mxstack.yaml and secrets.yaml: Synapse main's escrow module, the key vault, and the LI console's identity, signing key and vault URL must all come from the same secrets"),
    r("MX-OUT-014", "NetworkPolicy port not served by the pods it allows", "004 3.5; 000 common issue: NetworkPolicy blocking traffic", Error,
      "allow the port the pods declare (containerPort, by number or name), or declare it in their containers"),
    r("MX-OUT-015", "Service targetPort not declared by its pods", "003 verification: services without endpoints", Error,
      "declare the targetPort as a containerPort (same name or number, same protocol) in every pod the Service selects"),
    r("MX-OUT-020", "push app credential missing", "issue 20 (push): credentials as Secrets", Error,
      "put the app's APNs .p8 key or FCM service-account JSON into secrets.yaml as `push_credential.<app id>: |` (multi-line); it is rendered into the Secret sygnal-credentials only"),
    r("MX-OUT-021", "alert or dashboard on a metric no rendered exporter exposes", "issue 21 (monitoring): an alert that can never fire", Error,
      "use a metric of an exporter the deployment renders (crates/monitoring/src/catalog.rs lists them), or turn on the feature that renders its exporter"),
    // --- images pinned by digest (`render --pin LOCK`, crates/images)
    r("MX-IMG-001", "image not pinned by digest", "issue 18: manifests name images by tag, nothing proves what runs", Warning,
      "build it (`mxstack images build`, then push it and point images.<field> at it) or mirror it, and set images.<field> to REPO:TAG@sha256:DIGEST"),
    r("MX-IMG-002", "image lock is stale", "issue 18: an image changed after it was locked", Error,
      "run `mxstack images build` again (it rebuilds only what changed), push what it rebuilt, and render with the new images.lock"),
    // --- a live cluster (`check --cluster`, crates/deploy)
    r("MX-CLU-001", "Kubernetes too old", "003 Prerequisites (cluster version)", Error,
      "upgrade the cluster to Kubernetes 1.30 or later (the oldest CloudNativePG 1.26 supports)"),
    r("MX-CLU-002", "operator missing: its custom kinds are not served", "003 Phase 1 (operators installed by hand before anything applies)", Error,
      "install the operator named (version shown), or render with --with-operators and deploy that phase"),
    r("MX-CLU-003", "operator older than mxstack needs", "003 Phase 1 (operator versions)", Error,
      "upgrade the operator to the minimum shown (docs/DEPLOY.md: upgrading operators)"),
    r("MX-CLU-004", "operator version unknown", "003 Phase 1 (operator versions)", Warning,
      "make sure the operator's version is at least the minimum shown (`mxstack plan` lists them); a controller image pinned by digest alone hides its version"),
    r("MX-CLU-005", "StorageClass missing", "001 5. Storage Class Configuration; 003 Step 4", Error,
      "set storage_class in mxstack.yaml to a class `kubectl get storageclass` lists, or mark one as the default"),
    r("MX-CLU-006", "no schedulable node for a node role", "001 6. Node Labeling Requirements", Error,
      "label (and taint) the nodes of that role as shown"),
    r("MX-CLU-007", "a dedicated node role's nodes are not tainted", "001 6. Node Labeling Requirements (taint)", Warning,
      "taint the nodes as shown so only that role's pods run there"),
    r("MX-CLU-008", "cert-manager without Gateway API support", "003 Phase 1 (cert-manager values)", Warning,
      "run cert-manager with Gateway API support: Helm --set config.enableGatewayAPI=true (1.15+), or the flag --enable-gateway-api"),
    r("MX-CLU-010", "coturn could relay into the cluster's own network", "004 6.4; issue 20: TURN as a door into the pod and service networks", Error,
      "add the network to calls.cluster_cidrs (coturn then denies relaying to it) and deploy again"),
    r("MX-CLU-009", "NetworkPolicies not enforced", "003 Security Checklist 5. Verify NetworkPolicies; 004 3.5", Warning,
      "run a CNI that enforces NetworkPolicies (Calico, Cilium, Antrea, ...); with Flannel add Calico for policy (Canal)"),
];

pub fn rule(id: &str) -> &'static Rule {
    RULES
        .iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("rule {id} is in the catalogue"))
}

//! The edge: TLS certificates (cert-manager) and HTTP routing from the public hostnames to the
//! router, Element (which also serves `.well-known`) and LiveKit signalling.
//!
//! Only `/_matrix` and `/_synapse/client` reach Synapse from outside; the admin API
//! (`/_synapse/admin`) stays inside the cluster. The one exception is Synapse LI's admin API on
//! the Matrix LI host, which Synapse Admin LI calls from the investigators' browsers: every LI host
//! (Matrix LI, Element LI, Synapse Admin LI, the LI console) answers only `li.allowed_cidrs` (see
//! [`LiGate`] and `li.rs`).

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use mxstack_spec::{Feature, IngressMode, TlsIssuer};
use mxstack_topology::registry as reg;
use serde_json::{json, Value};

use crate::calls::TURN_TLS_SECRET;
use crate::meta::*;
use crate::secrets::LI_GATE_USERS;
use crate::{Ctx, Out, Phase};

const FILE_ISSUERS: &str = "cluster-issuers.yaml";
const FILE_ROUTES: &str = "routes.yaml";
pub const GATEWAY: &str = "mxstack";
pub const ISSUER_LETSENCRYPT: &str = "mxstack-letsencrypt";
pub const ISSUER_LETSENCRYPT_STAGING: &str = "mxstack-letsencrypt-staging";
pub const ISSUER_SELFSIGNED: &str = "mxstack-selfsigned";
/// Bootstraps the self-signed CA (issues only the CA certificate).
const ISSUER_SELFSIGNED_ROOT: &str = "mxstack-selfsigned-root";
const CA_SECRET: &str = "mxstack-ca";
/// cert-manager's cluster resource namespace: where a CA ClusterIssuer reads its CA secret.
pub const CERT_MANAGER_NAMESPACE: &str = "cert-manager";
/// The Ingress annotation naming the Traefik middlewares of a router.
pub const TRAEFIK_MIDDLEWARES: &str = "traefik.ingress.kubernetes.io/router.middlewares";

/// Header the basic-auth gate forwards the authenticated gate user in; the LI web servers log it.
pub const GATE_USER_HEADER: &str = "X-LI-Gate-User";
/// Traefik middlewares (ingress mode).
pub const MIDDLEWARE_ALLOWED_NETWORKS: &str = "li-allowed-networks";
pub const MIDDLEWARE_GATE_PASSWORD: &str = "li-gate-password";
const FILE_ACCESS: &str = "li-access.yaml";

/// Access control in front of an LI host (declared with the component).
pub use mxstack_topology::registry::Gate as LiGate;

/// A public hostname and what serves it.
pub struct Site {
    /// Short name: listener, route and certificate names.
    pub slug: &'static str,
    pub host: String,
    /// (path prefix, service, port); empty: TLS only (the key vault's host, not rendered yet).
    pub backends: Vec<(String, &'static str, u16)>,
    /// LI hosts: who may reach them.
    pub gate: Option<LiGate>,
}

/// Every public site the components whose feature is on declare, in their declared order.
pub fn sites(ctx: &Ctx) -> Vec<Site> {
    let mut declared: Vec<(&reg::Component, &reg::PublicSite)> = reg::ALL
        .iter()
        .filter(|c| c.feature.is_none_or(|f| ctx.has(f)))
        .flat_map(|c| c.sites.iter().map(move |s| (*c, s)))
        .collect();
    declared.sort_by_key(|(_, s)| s.order);
    declared
        .into_iter()
        .map(|(c, s)| Site {
            slug: s.slug,
            host: (s.host)(ctx.cfg),
            backends: s
                .paths
                .iter()
                .map(|p| (p.to_string(), c.name(), s.port.number))
                .collect(),
            gate: s.gate,
        })
        .collect()
}

pub fn issuer_name(issuer: TlsIssuer) -> &'static str {
    match issuer {
        TlsIssuer::Letsencrypt => ISSUER_LETSENCRYPT,
        TlsIssuer::LetsencryptStaging => ISSUER_LETSENCRYPT_STAGING,
        TlsIssuer::Selfsigned => ISSUER_SELFSIGNED,
    }
}

pub fn tls_secret(slug: &str) -> String {
    format!("tls-{slug}")
}

pub fn render(ctx: &Ctx, out: &mut Out) {
    cluster_issuers(ctx, out);
    let sites = sites(ctx);
    match ctx.cfg.ingress.mode {
        IngressMode::Gateway => {
            for s in &sites {
                out.add(
                    Phase::Edge,
                    "certificates.yaml",
                    certificate(ctx, s.slug, &s.host),
                );
            }
            out.add(Phase::Edge, "gateway.yaml", gateway(ctx, &sites));
            out.add(Phase::Edge, FILE_ROUTES, https_redirect(ctx));
            for s in sites.iter().filter(|s| !s.backends.is_empty()) {
                out.add(Phase::Edge, FILE_ROUTES, http_route(ctx, s));
            }
        }
        IngressMode::Ingress => {
            // cert-manager's ingress-shim makes the Certificates from the annotation.
            for s in sites.iter().filter(|s| !s.backends.is_empty()) {
                out.add(Phase::Edge, FILE_ROUTES, ingress(ctx, s));
            }
        }
    }
    if ctx.has(Feature::Calls) {
        // coturn's `turns:` listener. Not behind the edge, so never made by ingress-shim.
        // With an ACME issuer the turn hostname must answer HTTP-01 on port 80 through the edge.
        let mut cert = certificate(ctx, "turn", &ctx.cfg.hostnames().turn);
        cert["spec"]["secretName"] = json!(TURN_TLS_SECRET);
        out.add(Phase::Edge, "certificates.yaml", cert);
    }
}

fn acme_issuer(ctx: &Ctx, name: &str, server: &str) -> Value {
    let solver = match ctx.cfg.ingress.mode {
        IngressMode::Gateway => json!({ "http01": { "gatewayHTTPRoute": {
            "parentRefs": [{ "name": GATEWAY, "namespace": ctx.ns(), "kind": "Gateway", "sectionName": "http" }]
        } } }),
        IngressMode::Ingress => {
            let mut ing = json!({});
            if let Some(class) = &ctx.cfg.ingress.ingress_class {
                ing["ingressClassName"] = json!(class);
            }
            json!({ "http01": { "ingress": ing } })
        }
    };
    let mut acme = json!({
        "server": server,
        "privateKeySecretRef": { "name": format!("{name}-account-key") },
        "solvers": [solver],
    });
    if let Some(email) = &ctx.cfg.tls.acme_email {
        acme["email"] = json!(email);
    }
    json!({
        "apiVersion": "cert-manager.io/v1",
        "kind": "ClusterIssuer",
        "metadata": cluster_meta(name, "cert-manager"),
        "spec": { "acme": acme },
    })
}

/// All three issuers are rendered so switching `tls.issuer` is one change; only the configured
/// one is referenced.
fn cluster_issuers(ctx: &Ctx, out: &mut Out) {
    out.add(
        Phase::Edge,
        FILE_ISSUERS,
        acme_issuer(
            ctx,
            ISSUER_LETSENCRYPT,
            "https://acme-v02.api.letsencrypt.org/directory",
        ),
    );
    out.add(
        Phase::Edge,
        FILE_ISSUERS,
        acme_issuer(
            ctx,
            ISSUER_LETSENCRYPT_STAGING,
            "https://acme-staging-v02.api.letsencrypt.org/directory",
        ),
    );
    // Air-gapped sites: a self-signed root issues one CA certificate, and a CA issuer signs every
    // site certificate with it (clients trust one CA, not each certificate).
    out.add(
        Phase::Edge,
        FILE_ISSUERS,
        json!({
            "apiVersion": "cert-manager.io/v1",
            "kind": "ClusterIssuer",
            "metadata": cluster_meta(ISSUER_SELFSIGNED_ROOT, "cert-manager"),
            "spec": { "selfSigned": {} },
        }),
    );
    let mut ca_meta = serde_json::to_value(cluster_meta(CA_SECRET, "cert-manager")).expect("meta");
    ca_meta["namespace"] = json!(CERT_MANAGER_NAMESPACE);
    out.add(
        Phase::Edge,
        FILE_ISSUERS,
        json!({
            "apiVersion": "cert-manager.io/v1",
            "kind": "Certificate",
            "metadata": ca_meta,
            "spec": {
                "isCA": true,
                "commonName": format!("mxstack CA for {}", ctx.cfg.domain),
                "secretName": CA_SECRET,
                "duration": "87600h",
                "privateKey": { "algorithm": "ECDSA", "size": 256 },
                "issuerRef": { "name": ISSUER_SELFSIGNED_ROOT, "kind": "ClusterIssuer", "group": "cert-manager.io" },
            },
        }),
    );
    out.add(
        Phase::Edge,
        FILE_ISSUERS,
        json!({
            "apiVersion": "cert-manager.io/v1",
            "kind": "ClusterIssuer",
            "metadata": cluster_meta(ISSUER_SELFSIGNED, "cert-manager"),
            "spec": { "ca": { "secretName": CA_SECRET } },
        }),
    );
}

fn certificate(ctx: &Ctx, slug: &str, host: &str) -> Value {
    json!({
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": meta_json(ctx, &tls_secret(slug), "cert-manager"),
        "spec": {
            "secretName": tls_secret(slug),
            "dnsNames": [host],
            "privateKey": { "algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always" },
            "issuerRef": { "name": issuer_name(ctx.cfg.tls.issuer), "kind": "ClusterIssuer", "group": "cert-manager.io" },
        },
    })
}

fn gateway(ctx: &Ctx, sites: &[Site]) -> Value {
    let mut listeners = vec![json!({
        "name": "http",
        "protocol": "HTTP",
        "port": 80,
        "allowedRoutes": { "namespaces": { "from": "Same" } },
    })];
    for s in sites {
        listeners.push(json!({
            "name": format!("https-{}", s.slug),
            "protocol": "HTTPS",
            "port": 443,
            "hostname": s.host,
            "tls": { "mode": "Terminate", "certificateRefs": [{ "kind": "Secret", "group": "", "name": tls_secret(s.slug) }] },
            "allowedRoutes": { "namespaces": { "from": "Same" } },
        }));
    }
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": meta_json(ctx, GATEWAY, "gateway"),
        "spec": { "gatewayClassName": ctx.cfg.ingress.gateway_class, "listeners": listeners },
    })
}

/// Plain HTTP only redirects to HTTPS (ACME HTTP-01 routes are more specific and still match).
fn https_redirect(ctx: &Ctx) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": meta_json(ctx, "https-redirect", "gateway"),
        "spec": {
            "parentRefs": [{ "name": GATEWAY, "sectionName": "http" }],
            "rules": [{ "filters": [{ "type": "RequestRedirect", "requestRedirect": { "scheme": "https", "statusCode": 301 } }] }],
        },
    })
}

fn http_route(ctx: &Ctx, s: &Site) -> Value {
    let rules: Vec<Value> = s
        .backends
        .iter()
        .map(|(path, svc, port)| {
            json!({
                "matches": [{ "path": { "type": "PathPrefix", "value": path } }],
                "backendRefs": [{ "name": svc, "port": port }],
            })
        })
        .collect();
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": meta_json(ctx, s.slug, "gateway"),
        "spec": {
            "parentRefs": [{ "name": GATEWAY, "sectionName": format!("https-{}", s.slug) }],
            "hostnames": [s.host],
            "rules": rules,
        },
    })
}

fn ingress(ctx: &Ctx, s: &Site) -> Ingress {
    let mut metadata = meta(ctx, s.slug, "ingress");
    let mut annotations = map(&[(
        "cert-manager.io/cluster-issuer",
        issuer_name(ctx.cfg.tls.issuer),
    )]);
    if let Some(gate) = s.gate {
        // Traefik (the default Ingress controller here) applies the LI middlewares of li.rs.
        annotations.insert(
            TRAEFIK_MIDDLEWARES.into(),
            traefik_middleware_annotation(ctx, gate),
        );
    }
    metadata.annotations = Some(annotations);
    let paths = s
        .backends
        .iter()
        .map(|(path, svc, port)| HTTPIngressPath {
            path: Some(path.clone()),
            path_type: "Prefix".into(),
            backend: IngressBackend {
                service: Some(IngressServiceBackend {
                    name: svc.to_string(),
                    port: Some(ServiceBackendPort {
                        number: Some(i32::from(*port)),
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            },
        })
        .collect();
    Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: ctx.cfg.ingress.ingress_class.clone(),
            tls: Some(vec![IngressTLS {
                hosts: Some(vec![s.host.clone()]),
                secret_name: Some(tls_secret(s.slug)),
            }]),
            rules: Some(vec![IngressRule {
                host: Some(s.host.clone()),
                http: Some(HTTPIngressRuleValue { paths }),
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Access: allowed networks and the basic-auth gate

/// The LI sites and their gates.
fn gated_sites(ctx: &Ctx) -> Vec<(Site, LiGate)> {
    sites(ctx)
        .into_iter()
        .filter_map(|s| s.gate.map(|g| (s, g)))
        .collect()
}

/// Envoy Gateway: one SecurityPolicy per LI route. Requests from outside `li.allowed_cidrs` are
/// refused (an empty list refuses everyone); the web UIs also ask for the gate password.
fn security_policy(ctx: &Ctx, site: &Site, gate: LiGate) -> Value {
    let cidrs = &ctx.cfg.li.allowed_cidrs;
    let mut rules = Vec::new();
    if !cidrs.is_empty() {
        rules.push(json!({
            "name": "allowed-networks",
            "action": "Allow",
            "principal": { "clientCIDRs": cidrs },
        }));
    }
    let mut spec = json!({
        "targetRefs": [{
            "group": "gateway.networking.k8s.io",
            "kind": "HTTPRoute",
            "name": site.slug,
        }],
        "authorization": { "defaultAction": "Deny", "rules": rules },
    });
    if gate == LiGate::AllowedNetworksAndPassword {
        spec["basicAuth"] = json!({
            "users": { "kind": "Secret", "group": "", "name": LI_GATE_USERS },
            "forwardUsernameHeader": GATE_USER_HEADER,
        });
    }
    json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "SecurityPolicy",
        "metadata": meta_json(ctx, site.slug, "gateway"),
        "spec": spec,
    })
}

/// Traefik (ingress mode): the allow-list and the gate as middlewares the LI Ingresses name.
fn traefik_middlewares(ctx: &Ctx) -> Vec<Value> {
    let cidrs = &ctx.cfg.li.allowed_cidrs;
    // An empty list must refuse everyone: 0.0.0.0/32 is no client's address.
    let source_range: Vec<String> = if cidrs.is_empty() {
        vec!["0.0.0.0/32".into()]
    } else {
        cidrs.clone()
    };
    vec![
        json!({
            "apiVersion": "traefik.io/v1alpha1",
            "kind": "Middleware",
            "metadata": meta_json(ctx, MIDDLEWARE_ALLOWED_NETWORKS, "ingress"),
            "spec": { "ipAllowList": { "sourceRange": source_range } },
        }),
        json!({
            "apiVersion": "traefik.io/v1alpha1",
            "kind": "Middleware",
            "metadata": meta_json(ctx, MIDDLEWARE_GATE_PASSWORD, "ingress"),
            "spec": { "basicAuth": {
                "secret": LI_GATE_USERS,
                "realm": "lawful intercept",
                "headerField": GATE_USER_HEADER,
                "removeHeader": true,
            } },
        }),
    ]
}

/// The `traefik.ingress.kubernetes.io/router.middlewares` value for an LI Ingress.
pub fn traefik_middleware_annotation(ctx: &Ctx, gate: LiGate) -> String {
    let mut names = vec![MIDDLEWARE_ALLOWED_NETWORKS];
    if gate == LiGate::AllowedNetworksAndPassword {
        names.push(MIDDLEWARE_GATE_PASSWORD);
    }
    names
        .iter()
        .map(|n| format!("{}-{n}@kubernetescrd", ctx.ns()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The LI sites' access objects (feature `li`), rendered where the LI workloads are, so the
/// output keeps its order.
pub fn li_access(ctx: &Ctx, out: &mut Out) {
    match ctx.cfg.ingress.mode {
        mxstack_spec::IngressMode::Gateway => {
            for (site, gate) in gated_sites(ctx) {
                out.add(Phase::Edge, FILE_ACCESS, security_policy(ctx, &site, gate));
            }
        }
        mxstack_spec::IngressMode::Ingress => {
            for m in traefik_middlewares(ctx) {
                out.add(Phase::Edge, FILE_ACCESS, m);
            }
        }
    }
}

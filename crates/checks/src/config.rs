//! Rules on the config as the operator wrote it; findings point at file:line:column.

use mxstack_spec::{
    placeholder_reason, Component, ComponentOverride, Config, Feature, MediaBackend, PushAppKind,
    TlsIssuer, YamlLocator, PUSH_NOTIFY_PATH, SYNAPSE_VERSION,
};
use mxstack_topology::sizing::{parse_cpu, parse_memory_mib};

use crate::Finding;

/// One check on the config: the findings of one concern.
type Check = fn(&Config, &YamlLocator) -> Vec<Finding>;

/// Every check with the rules it reports, in the order `check` reports findings (`mxstack check
/// --json` keeps it). A placeholder value gets MX-CFG-001 instead of its own rule, so 001 sits
/// with each value's check. A new rule: its function and a row here. (MX-CFG-000, a file that
/// does not load, is reported before any of these can run.)
const CHECKS: &[(&[&str], Check)] = &[
    (&["MX-CFG-001", "MX-CFG-002"], dns_names),
    (&["MX-CFG-001", "MX-CFG-002"], kubernetes_names),
    (&["MX-CFG-001", "MX-CFG-003"], acme_email),
    (&["MX-CFG-001", "MX-CFG-004", "MX-CFG-005"], media_backend),
    (&["MX-CFG-001"], buckets),
    (&["MX-CFG-001", "MX-CFG-006"], images_pinned),
    (&["MX-CFG-012"], synapse_version),
    (&["MX-CFG-007", "MX-CFG-008", "MX-CFG-011"], overrides),
    (&["MX-CFG-014"], synapse_durations),
    (&["MX-CFG-010"], li_cidrs),
    (&["MX-CFG-010"], calls_cidrs),
    (&["MX-CFG-016"], turn_exceptions),
    (&["MX-CFG-013"], li_node_label),
    (&["MX-CFG-009"], li_restricted),
    (&["MX-CFG-015"], relay_ports),
    (&["MX-CFG-001", "MX-CFG-020"], push_apps),
    (&["MX-CFG-021", "MX-CFG-022"], push_gateway),
];

pub fn check(config: &Config, loc: &YamlLocator) -> Vec<Finding> {
    CHECKS
        .iter()
        .flat_map(|(_, check)| check(config, loc))
        .collect()
}

/// MX-CFG-001 for a placeholder at `path`, else None.
fn placeholder(path: &str, value: &str, loc: &YamlLocator) -> Option<Finding> {
    let why = placeholder_reason(value)?;
    Some(Finding::new("MX-CFG-001", format!("`{path}` is `{value}`: {why}")).at(loc.locate(path)))
}

/// The domain and the hostnames the operator set (derived ones follow from the domain).
fn dns_names(config: &Config, loc: &YamlLocator) -> Vec<Finding> {
    let hosts = config.hostnames();
    let mut names: Vec<(String, String)> = vec![("domain".into(), config.domain.clone())];
    let overrides = &config.hostnames;
    for (key, set, value) in [
        ("matrix", &overrides.matrix, &hosts.matrix),
        ("element", &overrides.element, &hosts.element),
        ("turn", &overrides.turn, &hosts.turn),
        ("livekit", &overrides.livekit, &hosts.livekit),
        ("livekit_jwt", &overrides.livekit_jwt, &hosts.livekit_jwt),
        ("matrix_li", &overrides.matrix_li, &hosts.matrix_li),
        ("element_li", &overrides.element_li, &hosts.element_li),
        ("admin_li", &overrides.admin_li, &hosts.admin_li),
        ("li_console", &overrides.li_console, &hosts.li_console),
        ("keyvault", &overrides.keyvault, &hosts.keyvault),
    ] {
        if set.is_some() {
            names.push((format!("hostnames.{key}"), value.clone()));
        }
    }
    let mut out = Vec::new();
    for (path, value) in &names {
        if let Some(f) = placeholder(path, value, loc) {
            out.push(f);
        } else if !valid_dns_name(value) {
            out.push(
                Finding::new("MX-CFG-002", format!("`{path}` is `{value}`")).at(loc.locate(path)),
            );
        }
    }
    out
}

fn kubernetes_names(config: &Config, loc: &YamlLocator) -> Vec<Finding> {
    let mut out = Vec::new();
    for (path, value) in [
        ("namespace", Some(&config.namespace)),
        ("storage_class", config.storage_class.as_ref()),
    ] {
        let Some(v) = value else { continue };
        if let Some(f) = placeholder(path, v, loc) {
            out.push(f);
        } else if !valid_label(v) {
            out.push(
                Finding::new("MX-CFG-002", format!("`{path}` is `{v}`"))
                    .at(loc.locate(path))
                    .fix("use lower-case letters, digits and '-' (a Kubernetes name)"),
            );
        }
    }
    out
}

/// Let's Encrypt needs a mailbox; the other issuers do not.
fn acme_email(config: &Config, loc: &YamlLocator) -> Vec<Finding> {
    if !matches!(
        config.tls.issuer,
        TlsIssuer::Letsencrypt | TlsIssuer::LetsencryptStaging
    ) {
        return vec![];
    }
    let Some(e) = config.tls.acme_email.as_deref() else {
        return vec![Finding::new("MX-CFG-003", "tls.acme_email is not set").at(loc.locate("tls"))];
    };
    if let Some(f) = placeholder("tls.acme_email", e, loc) {
        vec![f]
    } else if !valid_email(e) {
        vec![
            Finding::new("MX-CFG-003", format!("`{e}` is not an e-mail address"))
                .at(loc.locate("tls.acme_email")),
        ]
    } else {
        vec![]
    }
}

fn media_backend(config: &Config, loc: &YamlLocator) -> Vec<Finding> {
    match config.media.backend {
        MediaBackend::S3 => s3_endpoint(config, loc),
        MediaBackend::MinioLegacy => vec![Finding::new(
            "MX-CFG-005",
            "media.backend minio-legacy deploys an unmaintained object store",
        )
        .at(loc.locate("media.backend"))],
        MediaBackend::Seaweedfs => vec![],
    }
}

fn s3_endpoint(config: &Config, loc: &YamlLocator) -> Vec<Finding> {
    let Some(e) = config.media.endpoint.as_deref() else {
        return vec![Finding::new(
            "MX-CFG-004",
            "media.backend is s3 but media.endpoint is not set",
        )
        .at(loc.locate("media"))];
    };
    if let Some(f) = placeholder("media.endpoint", e, loc) {
        vec![f]
    } else if !(e.starts_with("https://") || e.starts_with("http://")) {
        vec![
            Finding::new("MX-CFG-004", format!("`{e}` is not an http(s) URL"))
                .at(loc.locate("media.endpoint")),
        ]
    } else {
        vec![]
    }
}

fn buckets(config: &Config, loc: &YamlLocator) -> Vec<Finding> {
    [
        ("media.bucket", &config.media.bucket),
        ("backup.bucket", &config.backup.bucket),
    ]
    .into_iter()
    .filter_map(|(path, bucket)| placeholder(path, bucket, loc))
    .collect()
}

fn images_pinned(config: &Config, loc: &YamlLocator) -> Vec<Finding> {
    let images = serde_json::to_value(&config.images).expect("images serialize");
    let Some(map) = images.as_object() else {
        return vec![];
    };
    let mut out = Vec::new();
    for (name, v) in map {
        let image = v.as_str().unwrap_or("");
        let path = format!("images.{name}");
        if let Some(why) = placeholder_reason(image) {
            out.push(
                Finding::new("MX-CFG-001", format!("image `{name}` is `{image}`: {why}"))
                    .at(loc.locate(&path)),
            );
        } else if !image_pinned(image) {
            out.push(
                Finding::new("MX-CFG-006", format!("image `{name}` is `{image}`"))
                    .at(loc.locate(&path)),
            );
        }
    }
    out
}

fn synapse_version(config: &Config, loc: &YamlLocator) -> Vec<Finding> {
    if config.images.synapse.contains(SYNAPSE_VERSION) {
        return vec![];
    }
    vec![Finding::new(
        "MX-CFG-012",
        format!(
            "images.synapse is `{}`; mxstack renders config for Synapse {SYNAPSE_VERSION}",
            config.images.synapse
        ),
    )
    .at(loc.locate("images.synapse"))]
}

/// Per overridden component: its scaling, then its resource quantities.
fn overrides(config: &Config, loc: &YamlLocator) -> Vec<Finding> {
    let mut out = Vec::new();
    for (component, o) in &config.overrides {
        let key = serde_json::to_value(component)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let base = format!("overrides.{key}");
        out.extend(override_scaling(*component, o, &key, &base, loc));
        out.extend(override_quantities(o, &base, loc));
    }
    out
}

fn override_scaling(
    component: Component,
    o: &ComponentOverride,
    key: &str,
    base: &str,
    loc: &YamlLocator,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let autoscalable = matches!(component, Component::Synchrotron | Component::Generic);
    if o.max_replicas.is_some() && !autoscalable {
        out.push(
            Finding::new("MX-CFG-007", format!("`{key}` cannot autoscale"))
                .at(loc.locate(&format!("{base}.max_replicas"))),
        );
    }
    if let (Some(min), Some(max)) = (o.replicas, o.max_replicas) {
        if max < min {
            out.push(
                Finding::new(
                    "MX-CFG-008",
                    format!("`{key}`: max_replicas {max} is below replicas {min}"),
                )
                .at(loc.locate(&format!("{base}.max_replicas")))
                .fix("make max_replicas at least replicas"),
            );
        }
    }
    if component == Component::StreamWriter && o.replicas.is_some_and(|r| r > 1) {
        out.push(
            Finding::new("MX-CFG-011", "stream-writer replicas above 1")
                .at(loc.locate(&format!("{base}.replicas"))),
        );
    }
    out
}

fn override_quantities(o: &ComponentOverride, base: &str, loc: &YamlLocator) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(cpu) = o.cpu.as_ref().filter(|cpu| parse_cpu(cpu).is_none()) {
        out.push(
            Finding::new("MX-CFG-008", format!("cpu `{cpu}`"))
                .at(loc.locate(&format!("{base}.cpu"))),
        );
    }
    if let Some(mem) = o
        .memory
        .as_ref()
        .filter(|mem| parse_memory_mib(mem).is_none())
    {
        out.push(
            Finding::new("MX-CFG-008", format!("memory `{mem}`"))
                .at(loc.locate(&format!("{base}.memory"))),
        );
    }
    out
}

/// Synapse refuses to start on a malformed duration; say so at the key instead.
fn synapse_durations(config: &Config, loc: &YamlLocator) -> Vec<Finding> {
    [
        (
            "synapse.redaction_retention_period",
            &config.synapse.redaction_retention_period,
        ),
        (
            "synapse.remote_media_retention",
            &config.synapse.remote_media_retention,
        ),
    ]
    .into_iter()
    .filter(|(_, value)| !synapse_duration(value))
    .map(|(key, value)| {
        Finding::new("MX-CFG-014", format!("`{key}` is `{value}`")).at(loc.locate(key))
    })
    .collect()
}

fn li_cidrs(config: &Config, loc: &YamlLocator) -> Vec<Finding> {
    config
        .li
        .allowed_cidrs
        .iter()
        .enumerate()
        .filter(|(_, cidr)| !valid_cidr(cidr))
        .map(|(i, cidr)| {
            Finding::new("MX-CFG-010", format!("`{cidr}`"))
                .at(loc.locate(&format!("li.allowed_cidrs[{i}]")))
        })
        .collect()
}

/// coturn's extra denied networks and its exceptions (an exception may be a single address).
fn calls_cidrs(config: &Config, loc: &YamlLocator) -> Vec<Finding> {
    let calls = &config.calls;
    let lists = [
        ("calls.cluster_cidrs", &calls.cluster_cidrs),
        ("calls.allowed_peer_ips", &calls.allowed_peer_ips),
    ];
    lists
        .into_iter()
        .flat_map(|(key, list)| {
            list.iter()
                .enumerate()
                .filter(|(_, c)| !valid_cidr(c) && c.parse::<std::net::IpAddr>().is_err())
                .map(move |(i, c)| {
                    Finding::new("MX-CFG-010", format!("`{c}`"))
                        .at(loc.locate(&format!("{key}[{i}]")))
                })
        })
        .collect()
}

fn turn_exceptions(config: &Config, loc: &YamlLocator) -> Vec<Finding> {
    if !config.has(Feature::Calls) {
        return vec![];
    }
    config
        .calls
        .allowed_peer_ips
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Finding::new("MX-CFG-016", format!("coturn may relay to `{c}`"))
                .at(loc.locate(&format!("calls.allowed_peer_ips[{i}]")))
        })
        .collect()
}

fn li_node_label(config: &Config, loc: &YamlLocator) -> Vec<Finding> {
    if !config.has(Feature::Li)
        || mxstack_topology::li_browsing::node_label(&config.li.node_label).is_some()
    {
        return vec![];
    }
    vec![
        Finding::new("MX-CFG-013", format!("`{}`", config.li.node_label))
            .at(loc.locate("li.node_label")),
    ]
}

fn li_restricted(config: &Config, loc: &YamlLocator) -> Vec<Finding> {
    if !config.has(Feature::Li) || !config.li.allowed_cidrs.is_empty() {
        return vec![];
    }
    vec![Finding::new(
        "MX-CFG-009",
        "feature li is on and li.allowed_cidrs is empty",
    )
    .at(loc.locate("li"))]
}

/// Most relay ports a LoadBalancer Service is given one by one (coturn's Service lists each).
pub const MAX_RELAY_PORTS: u32 = 200;

fn relay_ports(config: &Config, loc: &YamlLocator) -> Vec<Finding> {
    let (first, last) = (config.calls.relay_port_first, config.calls.relay_port_last);
    let count = u32::from(last).saturating_sub(u32::from(first)) + 1;
    if !config.has(Feature::Calls) || (first >= 1024 && first <= last && count <= MAX_RELAY_PORTS) {
        return vec![];
    }
    vec![
        Finding::new("MX-CFG-015", format!("relay ports {first}-{last}"))
            .at(loc.locate("calls.relay_port_first")),
    ]
}

/// Matrix limits a pusher's app_id to 64 characters; Sygnal keys its apps by it.
fn valid_app_id(s: &str) -> bool {
    s.len() <= 64
        && s.split('.').count() >= 2
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// (field, value) of a push app's fields.
type Fields<'a> = &'a [(&'a str, &'a Option<String>)];

fn push_apps(config: &Config, loc: &YamlLocator) -> Vec<Finding> {
    if !config.has(Feature::Push) {
        return vec![];
    }
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, app) in config.push.apps.iter().enumerate() {
        let at = |field: &str| loc.locate(&format!("push.apps[{i}].{field}"));
        if let Some(f) = placeholder(&format!("push.apps[{i}].id"), &app.id, loc) {
            out.push(f);
            continue;
        }
        if !valid_app_id(&app.id) {
            out.push(
                Finding::new(
                    "MX-CFG-020",
                    format!(
                        "app id `{}` is not a reverse-DNS name of at most 64 characters",
                        app.id
                    ),
                )
                .at(at("id")),
            );
        }
        if !seen.insert(app.id.as_str()) {
            out.push(
                Finding::new("MX-CFG-020", format!("app id `{}` is listed twice", app.id))
                    .at(at("id")),
            );
        }
        let (needed, unwanted): (Fields, &[(&str, bool)]) = match app.kind {
            PushAppKind::Apns => (
                &[
                    ("topic", &app.topic),
                    ("team_id", &app.team_id),
                    ("key_id", &app.key_id),
                ],
                &[("project_id", app.project_id.is_some())],
            ),
            PushAppKind::Fcm => (
                &[("project_id", &app.project_id)],
                &[
                    ("topic", app.topic.is_some()),
                    ("team_id", app.team_id.is_some()),
                    ("key_id", app.key_id.is_some()),
                    ("platform", app.platform.is_some()),
                ],
            ),
        };
        for (field, value) in needed {
            match value.as_deref() {
                None | Some("") => out.push(
                    Finding::new("MX-CFG-020", format!("app `{}` has no {field}", app.id))
                        .at(loc.locate(&format!("push.apps[{i}]"))),
                ),
                Some(v) => out.extend(placeholder(&format!("push.apps[{i}].{field}"), v, loc)),
            }
        }
        for (field, _) in unwanted.iter().filter(|(_, set)| *set) {
            out.push(
                Finding::new(
                    "MX-CFG-020",
                    format!("app `{}` ({:?}) does not use {field}", app.id, app.kind),
                )
                .at(at(field)),
            );
        }
    }
    out
}

/// Hosts Synapse's default `ip_range_blacklist` refuses unless `ip_range_whitelist` names them:
/// literal private, loopback or link-local addresses and cluster-internal names.
fn private_host(host: &str) -> Option<Option<std::net::IpAddr>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip @ std::net::IpAddr::V4(v4)) => (v4.is_private()
            || v4.is_loopback()
            || v4.is_link_local()
            || v4.octets()[0] == 100 && (64..128).contains(&v4.octets()[1]))
        .then_some(Some(ip)),
        Ok(ip @ std::net::IpAddr::V6(v6)) => (v6.is_loopback()
            || (v6.segments()[0] & 0xfe00) == 0xfc00
            || (v6.segments()[0] & 0xffc0) == 0xfe80)
            .then_some(Some(ip)),
        Err(_) => (!bare.contains('.')
            || bare.ends_with(".svc")
            || bare.ends_with(".cluster.local")
            || bare.ends_with(".internal")
            || bare == "localhost")
            .then_some(None),
    }
}

fn cidr_contains(cidr: &str, ip: std::net::IpAddr) -> bool {
    let Some((net, prefix)) = cidr.split_once('/') else {
        return false;
    };
    let (Ok(net), Ok(prefix)) = (net.parse::<std::net::IpAddr>(), prefix.parse::<u32>()) else {
        return false;
    };
    match (net, ip) {
        (std::net::IpAddr::V4(n), std::net::IpAddr::V4(a)) if prefix <= 32 => {
            let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (std::net::IpAddr::V6(n), std::net::IpAddr::V6(a)) if prefix <= 128 => {
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

fn push_gateway(config: &Config, loc: &YamlLocator) -> Vec<Finding> {
    if !config.has(Feature::Push) {
        return vec![];
    }
    let url = config.push_gateway_url();
    let at = || {
        if config.push.gateway_url.is_some() {
            loc.locate("push.gateway_url")
        } else {
            loc.locate("push")
        }
    };
    let mut out = Vec::new();
    for (i, cidr) in config.push.gateway_ip_ranges.iter().enumerate() {
        if !valid_cidr(cidr) {
            out.push(
                Finding::new("MX-CFG-021", format!("`{cidr}` is not a CIDR"))
                    .at(loc.locate(&format!("push.gateway_ip_ranges[{i}]"))),
            );
        }
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return vec![Finding::new("MX-CFG-021", format!("`{url}` is not a URL")).at(at())];
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if !matches!(scheme, "http" | "https") || authority.is_empty() || path != PUSH_NOTIFY_PATH {
        out.push(
            Finding::new(
                "MX-CFG-021",
                format!("`{url}`: Synapse only sends to http(s)://HOST{PUSH_NOTIFY_PATH}"),
            )
            .at(at()),
        );
        return out;
    }
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => authority,
    };
    match private_host(host) {
        Some(Some(ip))
            if !config
                .push
                .gateway_ip_ranges
                .iter()
                .any(|c| cidr_contains(c, ip)) =>
        {
            out.push(
                Finding::new(
                    "MX-CFG-021",
                    format!(
                        "`{host}` is a private address that push.gateway_ip_ranges does not cover"
                    ),
                )
                .at(at()),
            )
        }
        Some(None) if config.push.gateway_ip_ranges.is_empty() => out.push(
            Finding::new(
                "MX-CFG-022",
                format!(
                    "`{host}` resolves to private addresses and push.gateway_ip_ranges is empty"
                ),
            )
            .at(at()),
        ),
        _ => {}
    }
    out
}

pub fn valid_dns_name(s: &str) -> bool {
    let labels: Vec<&str> = s.split('.').collect();
    s.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn valid_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !s.starts_with('-')
}

fn valid_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && !local.contains(' ') && valid_dns_name(domain)
        }
        None => false,
    }
}

fn image_pinned(image: &str) -> bool {
    if image.contains("@sha256:") {
        return true;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) => !tag.is_empty() && tag != "latest",
        None => false,
    }
}

/// What Synapse's `Config.parse_duration` accepts as a string: digits with an optional unit.
fn synapse_duration(s: &str) -> bool {
    let digits = s.strip_suffix(['s', 'm', 'h', 'd', 'w', 'y']).unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn valid_cidr(s: &str) -> bool {
    let Some((ip, prefix)) = s.split_once('/') else {
        return false;
    };
    let Ok(prefix) = prefix.parse::<u8>() else {
        return false;
    };
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => prefix <= 32,
        Ok(std::net::IpAddr::V6(_)) => prefix <= 128,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(yaml: &str) -> Vec<Finding> {
        let (c, l) = Config::from_yaml("m.yaml", yaml).unwrap();
        check(&c, &l)
    }

    #[test]
    fn clean_config_has_no_errors() {
        let f = run("domain: acme.test\nscale: 1k\nfeatures: [antivirus]\ntls:\n  acme_email: ops@acme.test\n");
        assert!(f.iter().all(|f| !f.is_error()), "{f:?}");
    }

    #[test]
    fn placeholder_domain_is_located() {
        let f = run("scale: 1k\ndomain: matrix.example.com\ntls:\n  acme_email: ops@acme.test\n");
        let e = f
            .iter()
            .find(|f| f.rule == "MX-CFG-001")
            .expect("placeholder finding");
        assert_eq!(e.location.as_ref().unwrap().line, 2);
    }

    #[test]
    fn hostname_override_and_email_and_images() {
        let f = run(
            "domain: acme.test\nscale: 1k\nhostnames:\n  element: Chat_Acme\ntls:\n  acme_email: CHANGEME\nimages:\n  haproxy: haproxy:latest\n",
        );
        let ids: Vec<_> = f
            .iter()
            .map(|f| (f.rule, f.location.as_ref().unwrap().line))
            .collect();
        assert!(ids.contains(&("MX-CFG-002", 4)), "{ids:?}");
        assert!(ids.contains(&("MX-CFG-001", 6)), "{ids:?}");
        assert!(ids.contains(&("MX-CFG-006", 8)), "{ids:?}");
    }

    #[test]
    fn autoscaling_event_persister_is_refused() {
        let f = run("domain: acme.test\nscale: 1k\ntls:\n  acme_email: a@acme.test\noverrides:\n  event-persister:\n    max_replicas: 6\n");
        let e = f.iter().find(|f| f.rule == "MX-CFG-007").expect("finding");
        assert_eq!(e.location.as_ref().unwrap().line, 7);
    }

    #[test]
    fn external_s3_needs_endpoint_and_cidrs_checked() {
        let f = run("domain: acme.test\nscale: 100\ntls:\n  acme_email: a@acme.test\nmedia:\n  backend: s3\nli:\n  allowed_cidrs:\n    - 10.0.0.0/33\n");
        assert!(f.iter().any(|f| f.rule == "MX-CFG-004"));
        let c = f.iter().find(|f| f.rule == "MX-CFG-010").unwrap();
        assert_eq!(c.location.as_ref().unwrap().line, 9);
    }

    #[test]
    fn li_node_label_must_be_a_label() {
        let base = "domain: acme.test\nscale: 1k\nfeatures: [li]\ntls:\n  acme_email: a@acme.test\nli:\n  allowed_cidrs: [198.51.100.0/24]\n";
        assert!(run(base).iter().all(|f| f.rule != "MX-CFG-013"));
        let f = run(&format!("{base}  node_label: lawful intercept\n"));
        let e = f.iter().find(|f| f.rule == "MX-CFG-013").expect("finding");
        assert_eq!(e.location.as_ref().unwrap().line, 8);
        assert!(e.is_error());
    }

    /// Breaks every rule, several of them more than once.
    const BROKEN: &str = include_str!("../tests/fixtures/broken-config.yaml");

    /// The rules BROKEN cannot break at once (another media backend, LI without networks).
    const BROKEN_TOO: &str = "domain: acme.test\nscale: 100\nfeatures: [li, calls]\nmedia:\n  backend: minio-legacy\ncalls:\n  relay_port_first: 50000\n  relay_port_last: 40000\n  allowed_peer_ips: [bogus]\n  cluster_cidrs: [10.0.0.0/40]\n";

    /// Push (issue 20): apps without their fields, a gateway on a private address not allowed.
    const BROKEN_PUSH: &str = "domain: acme.test\nscale: 1k\nfeatures: [push]\ntls:\n  acme_email: ops@acme.test\npush:\n  gateway_url: http://10.1.2.3:5000/_matrix/push/v1/notify\n  gateway_ip_ranges: [10.9.0.0/16, 10.0.0.0/33]\n  apps:\n    - {id: im.acme.ios, type: apns, topic: im.acme, key_id: K1}\n    - {id: im.acme.ios, type: fcm, project_id: p, topic: t}\n    - {id: noreversedns, type: fcm, project_id: p}\n";
    /// The default in-cluster gateway without its addresses (a warning: init writes it).
    const BROKEN_PUSH_TOO: &str =
        "domain: acme.test\nscale: 1k\nfeatures: [push]\ntls:\n  acme_email: ops@acme.test\n";

    #[test]
    fn push_findings() {
        assert_eq!(
            rules_and_lines(BROKEN_PUSH),
            [
                ("MX-CFG-020", 10),
                ("MX-CFG-020", 11),
                ("MX-CFG-020", 11),
                ("MX-CFG-020", 12),
                ("MX-CFG-021", 8),
                ("MX-CFG-021", 7),
            ]
        );
        let f = run(BROKEN_PUSH_TOO);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].rule, "MX-CFG-022");
        assert!(!f[0].is_error());
        // Each fixed: the address covered, a URL elsewhere refused for its path.
        let ok = "domain: acme.test\nscale: 1k\nfeatures: [push]\ntls:\n  acme_email: ops@acme.test\npush:\n  gateway_url: http://127.0.0.1:8999/_matrix/push/v1/notify\n  gateway_ip_ranges: [127.0.0.1/32]\n  apps:\n    - {id: im.acme.ios, type: apns, topic: im.acme, team_id: T, key_id: K, platform: sandbox}\n";
        let f = run(ok);
        assert!(f.is_empty(), "{f:?}");
        let f = run(&ok.replace("/_matrix/push/v1/notify", "/notify"));
        assert_eq!(f[0].rule, "MX-CFG-021");
        let f = run(&ok.replace("127.0.0.1/32", "127.0.0.2/32"));
        assert_eq!(f[0].rule, "MX-CFG-021");
        // A public gateway needs no range.
        let public = ok
            .replace("http://127.0.0.1:8999", "https://push.acme.test")
            .replace("  gateway_ip_ranges: [127.0.0.1/32]\n", "");
        let f = run(&public);
        assert!(f.is_empty(), "{f:?}");
        // Push off: nothing is checked.
        let f = run(&BROKEN_PUSH.replace("[push]", "[]"));
        assert!(f.is_empty(), "{f:?}");
    }

    fn rules_and_lines(yaml: &str) -> Vec<(&'static str, usize)> {
        run(yaml)
            .iter()
            .map(|f| (f.rule, f.location.as_ref().unwrap().line))
            .collect()
    }

    // `mxstack check --json` lists findings in this order; consumers and operators rely on it.
    #[test]
    fn findings_keep_their_order() {
        assert_eq!(
            rules_and_lines(BROKEN),
            [
                ("MX-CFG-001", 1),
                ("MX-CFG-002", 7),
                ("MX-CFG-001", 8),
                ("MX-CFG-002", 4),
                ("MX-CFG-001", 5),
                ("MX-CFG-003", 10),
                ("MX-CFG-004", 13),
                ("MX-CFG-001", 14),
                ("MX-CFG-001", 19),
                ("MX-CFG-006", 28),
                ("MX-CFG-006", 29),
                ("MX-CFG-001", 30),
                ("MX-CFG-012", 27),
                ("MX-CFG-008", 41),
                ("MX-CFG-008", 42),
                ("MX-CFG-008", 43),
                ("MX-CFG-007", 33),
                ("MX-CFG-008", 33),
                ("MX-CFG-008", 35),
                ("MX-CFG-011", 37),
                ("MX-CFG-008", 38),
                ("MX-CFG-014", 16),
                ("MX-CFG-014", 17),
                ("MX-CFG-010", 23),
                ("MX-CFG-010", 25),
                ("MX-CFG-013", 21),
            ]
        );
        assert_eq!(
            rules_and_lines(BROKEN_TOO),
            [
                ("MX-CFG-003", 1),
                ("MX-CFG-005", 5),
                ("MX-CFG-010", 10),
                ("MX-CFG-010", 9),
                ("MX-CFG-016", 9),
                ("MX-CFG-009", 1),
                ("MX-CFG-015", 7)
            ]
        );
    }

    // Each row names exactly the rules its check reports, and the rows cover the catalogue.
    #[test]
    fn every_config_rule_has_a_check_and_each_check_reports_its_rules() {
        let mut reported = std::collections::BTreeSet::new();
        for yaml in [BROKEN, BROKEN_TOO, BROKEN_PUSH, BROKEN_PUSH_TOO] {
            let (c, l) = Config::from_yaml("m.yaml", yaml).unwrap();
            for (ids, check) in CHECKS {
                for f in check(&c, &l) {
                    assert!(ids.contains(&f.rule), "{} from a check of {ids:?}", f.rule);
                    reported.insert(f.rule);
                }
            }
        }
        let named: std::collections::BTreeSet<_> = CHECKS
            .iter()
            .flat_map(|(ids, _)| ids.iter().copied())
            .collect();
        let catalogue: std::collections::BTreeSet<_> = crate::RULES
            .iter()
            .map(|r| r.id)
            .filter(|id| id.starts_with("MX-CFG-") && *id != "MX-CFG-000")
            .collect();
        assert_eq!(named, catalogue);
        assert_eq!(
            reported, catalogue,
            "BROKEN and BROKEN_TOO break every rule"
        );
    }

    #[test]
    fn synapse_durations_are_checked_at_their_key() {
        let base = "domain: acme.test\nscale: 1k\nfeatures: []\ntls:\n  acme_email: ops@acme.test\nsynapse:\n";
        for ok in ["7d", "30s", "12h", "1y", "60000"] {
            let f = run(&format!("{base}  redaction_retention_period: '{ok}'\n"));
            assert!(f.iter().all(|f| f.rule != "MX-CFG-014"), "{ok}: {f:?}");
        }
        for bad in ["7 days", "d", "-1d", "1.5h", "7D"] {
            let f = run(&format!("{base}  redaction_retention_period: '{bad}'\n"));
            let e = f.iter().find(|f| f.rule == "MX-CFG-014").expect(bad);
            assert_eq!(e.location.as_ref().unwrap().line, 7, "{bad}");
            assert!(e.is_error());
        }
        let f = run(&format!("{base}  remote_media_retention: 90days\n"));
        assert!(f.iter().any(|f| f.rule == "MX-CFG-014"), "{f:?}");
    }
}

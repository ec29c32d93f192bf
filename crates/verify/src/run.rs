//! Runs the catalog against a target, in order, and collects one result per check.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mxstack_spec::Feature;
use mxstack_topology::registry;

use crate::catalog::{self as c, Check};
use crate::error::VerifyError;
use crate::http::Http;
use crate::report::{CheckResult as R, Report};
use crate::services::{self, Verdict};
use crate::session::Session;
use crate::target::Target;
use crate::tls::{self, Expiry};
use crate::wellknown;

const T: Duration = Duration::from_secs(10);

fn verdict(check: &Check, v: Verdict) -> R {
    match v {
        Verdict::Pass(d) => R::pass(check, d),
        Verdict::Warn(d) => R::warn(check, d),
        Verdict::Fail(d) => R::fail(check, d),
    }
}

fn result(check: &Check, r: Result<String, String>) -> R {
    match r {
        Ok(d) => R::pass(check, d),
        Err(d) => R::fail(check, d),
    }
}

/// Verifies `target`; `progress` sees each result as it is made (for a progress line).
pub fn verify(target: &Target, progress: &mut dyn FnMut(&R)) -> Result<Report, VerifyError> {
    let url = reqwest::Url::parse(&target.client_url).map_err(|e| VerifyError::BadUrl {
        url: target.client_url.clone(),
        reason: e.to_string(),
    })?;
    let resolve: Vec<(String, SocketAddr)> = match target.connect_to {
        Some(ip) => target
            .hostnames()
            .into_iter()
            .map(|h| (h, SocketAddr::new(ip, 0)))
            .collect(),
        None => Vec::new(),
    };
    let http = Http::new(&target.extra_ca, &resolve)?;
    let mut out = Vec::new();
    let mut push = |r: R| {
        progress(&r);
        out.push(r);
    };
    push(client_api(&http, target));
    push(well_known_client(&http, target));
    push(well_known_server(&http, target));
    push(tls_check(&url, target));
    push(federation(&http, target));
    session_checks(&http, target, &mut push);
    push(li_lag(&http, target));
    push(li_gate(&http, target));
    push(synapse_metrics(&http, target));
    push(scanner_metrics(&http, target));
    // Last: after the session checks' traffic, which some panels show.
    for (check, run) in [
        (
            &c::DASHBOARDS,
            crate::monitoring::panels as fn(&Http, &Target, &str) -> Verdict,
        ),
        (&c::METRIC_CATALOG, crate::monitoring::catalog),
    ] {
        push(prometheus_check(&http, target, check, run));
    }
    out.sort_by_key(|r| c::ALL.iter().position(|k| k.id == r.id));
    Ok(Report::new(target.client_url.clone(), out))
}

fn client_api(http: &Http, t: &Target) -> R {
    let url = format!("{}/_matrix/client/versions", t.client_url);
    match http.get(&url, None, T) {
        Ok(r) if r.status == 200 && r.json()["versions"].is_array() => {
            let v = r.json();
            let n = v["versions"].as_array().map_or(0, Vec::len);
            R::pass(&c::CLIENT_API, format!("{url}: {n} spec versions"))
        }
        Ok(r) => R::fail(
            &c::CLIENT_API,
            format!("{url}: HTTP {} {}", r.status, r.reason()),
        ),
        Err(e) => R::fail(&c::CLIENT_API, e),
    }
}

const LOCAL_NO_WELL_KNOWN: &str =
    "mxstack up serves no .well-known (Element, which serves it on a cluster, is not run locally)";

fn well_known_client(http: &Http, t: &Target) -> R {
    let check = &c::WELL_KNOWN_CLIENT;
    if t.is_local() {
        return R::skip(check, LOCAL_NO_WELL_KNOWN);
    }
    let url = format!("https://{}/.well-known/matrix/client", t.config.domain);
    match http.get(&url, None, T) {
        Ok(r) if r.status == 200 => result(
            check,
            wellknown::check_client(&r.json(), &t.public_client_url())
                .map(|d| format!("{url}: {d}"))
                .map_err(|e| format!("{url}: {e}")),
        ),
        Ok(r) => R::fail(check, format!("{url}: HTTP {}", r.status)),
        Err(e) => R::fail(check, e),
    }
}

fn well_known_server(http: &Http, t: &Target) -> R {
    let check = &c::WELL_KNOWN_SERVER;
    if !t.config.has(Feature::Federation) {
        return R::skip(check, "feature federation is off: no delegation is served");
    }
    if t.is_local() {
        return R::skip(check, LOCAL_NO_WELL_KNOWN);
    }
    let url = format!("https://{}/.well-known/matrix/server", t.config.domain);
    let expected = format!("{}:443", t.config.hostnames().matrix);
    match http.get(&url, None, T) {
        Ok(r) if r.status == 200 => result(
            check,
            wellknown::check_server(&r.json(), &expected).map_err(|e| format!("{url}: {e}")),
        ),
        Ok(r) => R::fail(check, format!("{url}: HTTP {}", r.status)),
        Err(e) => R::fail(check, e),
    }
}

fn tls_check(url: &reqwest::Url, t: &Target) -> R {
    let check = &c::TLS;
    if url.scheme() != "https" {
        return R::skip(check, format!("{} is plain HTTP: there is no certificate to check (the local stack has no TLS; pass an https:// --url)", t.client_url));
    }
    let host = url.host_str().unwrap_or_default().to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let addr = match t.connect_to {
        Some(ip) => SocketAddr::new(ip, port),
        None => match (host.as_str(), port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
        {
            Some(a) => a,
            None => return R::fail(check, format!("{host} does not resolve")),
        },
    };
    let mut roots = Vec::new();
    for pem in &t.extra_ca {
        match tls::pem_certs(pem) {
            Ok(c) => roots.extend(c),
            Err(e) => return R::fail(check, format!("--ca: {e}")),
        }
    }
    let p = tls::probe(&host, addr, roots);
    let leaf = p
        .leaf
        .as_ref()
        .map(|l| {
            format!(
                "; it names {} and is valid until {} (issuer {})",
                l.names.join(", "),
                l.not_after,
                l.issuer
            )
        })
        .unwrap_or_default();
    if let Some(e) = p.error {
        return R::fail(check, format!("{host}:{port}: {e}{leaf}"));
    }
    let Some(l) = p.leaf else {
        return R::fail(
            check,
            format!("{host}:{port}: no certificate was presented"),
        );
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    match tls::classify(l.not_after_unix, now) {
        Expiry::Valid { days } => R::pass(
            check,
            format!("{host}:{port}: chain trusted, name matches, {days} days left{leaf}"),
        ),
        Expiry::Soon { days } => R::warn(
            check,
            format!("{host}:{port}: expires in {days} days (renewal overdue){leaf}"),
        ),
        Expiry::Expired { .. } => R::fail(
            check,
            format!("{host}:{port}: the certificate has expired{leaf}"),
        ),
    }
}

fn federation(http: &Http, t: &Target) -> R {
    let check = &c::FEDERATION;
    if !t.config.has(Feature::Federation) {
        return R::skip(
            check,
            "feature federation is off: the deployment does not federate",
        );
    }
    let base = if t.is_local() {
        t.client_url.clone()
    } else {
        format!("https://{}:443", t.config.hostnames().matrix)
    };
    let url = format!("{base}/_matrix/key/v2/server");
    match http.get(&url, None, T) {
        Ok(r) if r.status == 200 => {
            let v = r.json();
            let keys = v["verify_keys"].as_object().map_or(0, |k| k.len());
            if v["server_name"] == t.config.domain.as_str() && keys > 0 {
                R::pass(
                    check,
                    format!("{url}: {keys} signing key(s) for {}", t.config.domain),
                )
            } else {
                R::fail(
                    check,
                    format!(
                        "{url}: server_name {} with {keys} keys, expected {}",
                        v["server_name"], t.config.domain
                    ),
                )
            }
        }
        Ok(r) => R::fail(check, format!("{url}: HTTP {}", r.status)),
        Err(e) => R::fail(check, e),
    }
}

/// The checks that need the throwaway user; without one they fail together.
fn session_checks(http: &Http, t: &Target, push: &mut dyn FnMut(R)) {
    let mut emit = |_: &Check, r: R| push(r);
    let session = match &t.registration_secret {
        None => Err(
            "no registration shared secret (secrets.yaml next to the config, or --secrets FILE)"
                .to_string(),
        ),
        Some(s) => Session::register(http, &t.client_url, s),
    };
    let mut s = match session {
        Ok(s) => s,
        Err(e) => {
            let why = format!("no throwaway user: {e}");
            emit(&c::ADMIN_USER, R::fail(&c::ADMIN_USER, e));
            for k in [c::MESSAGING, c::MEDIA, c::ANTIVIRUS, c::TURN, c::CLEANUP] {
                emit(&k, R::fail(&k, why.clone()));
            }
            return;
        }
    };
    emit(
        &c::ADMIN_USER,
        R::pass(&c::ADMIN_USER, format!("registered {} (admin)", s.user_id)),
    );
    emit(&c::MESSAGING, result(&c::MESSAGING, s.send_and_receive()));
    emit(&c::MEDIA, result(&c::MEDIA, s.media_round_trip()));
    emit(&c::ANTIVIRUS, antivirus(http, t, &mut s));
    emit(
        &c::TURN,
        if t.config.has(Feature::Calls) {
            result(&c::TURN, s.turn(&t.turn_uris))
        } else {
            R::skip(&c::TURN, "feature calls is off: no TURN server")
        },
    );
    emit(&c::CLEANUP, result(&c::CLEANUP, s.cleanup()));
}

fn antivirus(http: &Http, t: &Target, s: &mut Session) -> R {
    let check = &c::ANTIVIRUS;
    if !t.config.has(Feature::Antivirus) {
        return R::skip(check, "feature antivirus is off: uploads are not scanned");
    }
    let ready = t.local.as_ref().and_then(|l| l.scanner_ready.as_ref());
    if let Some(e) = ready {
        let why = match http.get(&e.url, None, Duration::from_secs(5)) {
            Ok(r) if r.status == 200 => None,
            Ok(r) => Some(format!("HTTP {}: {}", r.status, r.reason())),
            Err(err) => Some(err),
        };
        if let Some(why) = why {
            return R::fail(
                check,
                format!("the content scanner is not ready: its PING to clamd failed ({why})"),
            );
        }
    }
    result(check, s.eicar())
}

fn li_lag(http: &Http, t: &Target) -> R {
    let check = &c::LI_LAG;
    if !t.config.has(Feature::Li) {
        return R::skip(check, "feature li is off: no LI replica");
    }
    let local = t
        .local
        .as_ref()
        .and_then(|l| l.li_sync_status.as_ref())
        .map(|e| e.url.clone());
    let url = local.or_else(|| {
        t.li_sync
            .as_ref()
            .map(|u| format!("{}/status", u.trim_end_matches('/')))
    });
    match url {
        Some(u) => verdict(check, services::li_lag(http, &u)),
        None => R::skip(check, "li-sync is inside the cluster: pass --li-sync URL (kubectl port-forward svc/li-sync 8091) to check the replica"),
    }
}

fn li_gate(http: &Http, t: &Target) -> R {
    let check = &c::LI_GATE;
    if !t.config.has(Feature::Li) {
        return R::skip(check, "feature li is off: no LI hosts");
    }
    if t.is_local() {
        return R::skip(check, "mxstack up runs no edge: its LI services listen on 127.0.0.1 only; the gate is checked against a cluster");
    }
    let hosts: Vec<String> = registry::ALL
        .iter()
        .filter(|comp| comp.feature.is_none_or(|f| t.config.has(f)))
        .flat_map(|comp| comp.sites.iter())
        .filter(|site| site.gate.is_some())
        .map(|site| (site.host)(&t.config))
        .collect();
    verdict(check, services::li_gate(http, &hosts))
}

fn synapse_metrics(http: &Http, t: &Target) -> R {
    let check = &c::SYNAPSE_METRICS;
    if !t.config.has(Feature::Monitoring) {
        return R::skip(check, "feature monitoring is off: nothing scrapes");
    }
    let job = registry::synapse::COMPONENT.name();
    match (&t.local, &t.prometheus) {
        (Some(l), _) => verdict(check, services::scrape_all(http, &l.synapse_metrics, "synapse_")),
        (None, Some(p)) => verdict(check, services::prometheus_targets(http, p, job, &[registry::synapse_li::COMPONENT.name()])),
        (None, None) => R::skip(check, "Prometheus is inside the cluster: pass --prometheus URL (kubectl port-forward) to check its targets"),
    }
}

fn scanner_metrics(http: &Http, t: &Target) -> R {
    let check = &c::SCANNER_METRICS;
    if !t.config.has(Feature::Monitoring) {
        return R::skip(check, "feature monitoring is off: nothing scrapes");
    }
    if !t.config.has(Feature::Antivirus) {
        return R::skip(check, "feature antivirus is off: no content scanner");
    }
    let job = registry::content_scanner::COMPONENT.name();
    match (&t.local, &t.prometheus) {
        (Some(l), _) => match &l.scanner_metrics {
            Some(e) => verdict(check, services::scrape_all(http, std::slice::from_ref(e), "mxstack_scanner_")),
            None => R::fail(check, "the local stack runs no content scanner"),
        },
        (None, Some(p)) => verdict(check, services::prometheus_targets(http, p, job, &[])),
        (None, None) => R::skip(check, "Prometheus is inside the cluster: pass --prometheus URL (kubectl port-forward) to check its targets"),
    }
}

fn prometheus_check(
    http: &Http,
    t: &Target,
    check: &Check,
    run: fn(&Http, &Target, &str) -> Verdict,
) -> R {
    if !t.config.has(Feature::Monitoring) {
        return R::skip(check, "feature monitoring is off: nothing scrapes");
    }
    match crate::monitoring::prometheus(t) {
        Some(base) => verdict(check, run(http, t, &base)),
        None => R::skip(check, "Prometheus is inside the cluster: pass --prometheus URL (kubectl port-forward) to check what it sees"),
    }
}

//! Checks on services behind Synapse: metrics endpoints (or Prometheus' view of them), the LI
//! replica's lag through li-sync's status, and the LI hosts' gate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::http::Http;
use crate::target::Endpoint;

const T: Duration = Duration::from_secs(5);
/// Lag above which the replica check fails (it warns above 5 s).
pub const LAG_FAIL_SECS: f64 = 60.0;
/// li-sync refreshes its status every few seconds; older than this, it is stuck.
pub const STALE_SECS: f64 = 30.0;

pub enum Verdict {
    Pass(String),
    Warn(String),
    Fail(String),
}

/// Scrapes each endpoint: it must answer 200 with a metric named `marker...`.
pub fn scrape_all(http: &Http, endpoints: &[Endpoint], marker: &str) -> Verdict {
    let bad: Vec<String> = endpoints
        .iter()
        .filter_map(|e| match http.get(&e.url, None, T) {
            Ok(r)
                if r.status == 200
                    && String::from_utf8_lossy(&r.body)
                        .lines()
                        .any(|l| l.starts_with(marker)) =>
            {
                None
            }
            Ok(r) => Some(format!(
                "{} ({}): HTTP {} without {marker}* metrics",
                e.name, e.url, r.status
            )),
            Err(err) => Some(format!("{}: {err}", e.name)),
        })
        .collect();
    if bad.is_empty() {
        let names: Vec<&str> = endpoints.iter().map(|e| e.name.as_str()).collect();
        Verdict::Pass(format!(
            "{} endpoints answer with {marker}* metrics: {}",
            endpoints.len(),
            names.join(", ")
        ))
    } else {
        Verdict::Fail(format!("not scrapable: {}", bad.join("; ")))
    }
}

/// Prometheus' active targets whose scrape pool names `job` (and not `exclude`): all up.
pub fn prometheus_targets(http: &Http, prometheus: &str, job: &str, exclude: &[&str]) -> Verdict {
    let url = format!(
        "{}/api/v1/targets?state=active",
        prometheus.trim_end_matches('/')
    );
    let v = match http.get(&url, None, T) {
        Ok(r) if r.status == 200 => r.json(),
        Ok(r) => return Verdict::Fail(format!("{url}: HTTP {}", r.status)),
        Err(e) => return Verdict::Fail(e),
    };
    judge_targets(&v, job, exclude)
}

/// The pure part of [`prometheus_targets`].
pub fn judge_targets(v: &Value, job: &str, exclude: &[&str]) -> Verdict {
    let pool = |t: &Value| t["scrapePool"].as_str().unwrap_or_default().to_string();
    let ours: Vec<&Value> = v["data"]["activeTargets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| pool(t).contains(job) && !exclude.iter().any(|x| pool(t).contains(x)))
        .collect();
    if ours.is_empty() {
        return Verdict::Fail(format!(
            "Prometheus has no active target for {job} (no ServiceMonitor/PodMonitor picked up?)"
        ));
    }
    let down: Vec<String> = ours
        .iter()
        .filter(|t| t["health"] != "up")
        .map(|t| {
            format!(
                "{} {}: {}",
                pool(t),
                t["labels"]["instance"].as_str().unwrap_or("?"),
                t["lastError"].as_str().unwrap_or("down")
            )
        })
        .collect();
    if down.is_empty() {
        Verdict::Pass(format!(
            "Prometheus scrapes {} {job} targets, all up",
            ours.len()
        ))
    } else {
        Verdict::Fail(format!("Prometheus targets down: {}", down.join("; ")))
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// li-sync's `/status`.
pub fn li_lag(http: &Http, status_url: &str) -> Verdict {
    match http.get(status_url, None, T) {
        Ok(r) if r.status == 200 => judge_li(&r.json()["status"], now()),
        Ok(r) => Verdict::Fail(format!(
            "li-sync has no status of the LI replica (HTTP {}): {}",
            r.status,
            r.json()["last_error"].as_str().unwrap_or("no error given")
        )),
        Err(e) => Verdict::Fail(format!("li-sync does not answer: {e}")),
    }
}

/// The pure part of [`li_lag`]: `s` is li-sync's `LiStatus`, `now` Unix seconds.
pub fn judge_li(s: &Value, now: f64) -> Verdict {
    if let Some(at) = s["collected_at_unix"].as_f64() {
        let age = now - at;
        if age > STALE_SECS {
            return Verdict::Fail(format!(
                "li-sync's last look at the LI replica is {age:.0} s old: the LI replica database (or main) stopped answering li-sync"
            ));
        }
    }
    if s["mode"] == "dump" {
        return match s["last_dump"]["status"].as_str() {
            Some("success") => Verdict::Pass("dump mode: the last dump succeeded".into()),
            Some(other) => Verdict::Fail(format!(
                "dump mode: the last dump is {other}: {}",
                s["last_dump"]["error"]
            )),
            None => Verdict::Warn("dump mode: no dump has run yet".into()),
        };
    }
    if s["subscribed"] != true || s["subscription_enabled"] != true {
        return Verdict::Fail(
            "the LI replica's subscription is missing or disabled: nothing from main reaches it"
                .into(),
        );
    }
    if s["apply_worker_running"] != true {
        return Verdict::Fail("the LI replica's apply worker is not running".into());
    }
    match s["lag_seconds"].as_f64() {
        None => Verdict::Warn("the LI replica's lag is unknown yet".into()),
        Some(l) if l > LAG_FAIL_SECS => {
            Verdict::Fail(format!("the LI replica is {l:.1} s behind main"))
        }
        Some(l) if l > 5.0 => Verdict::Warn(format!("the LI replica is {l:.1} s behind main")),
        Some(l) => Verdict::Pass(format!(
            "subscription enabled, apply worker running, lag {l:.2} s"
        )),
    }
}

/// Each LI host must refuse this machine (403).
pub fn li_gate(http: &Http, hosts: &[String]) -> Verdict {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for h in hosts {
        let url = format!("https://{h}/");
        match http.get(&url, None, Duration::from_secs(10)) {
            Ok(r) if r.status == 403 => ok.push(h.clone()),
            Ok(r) => bad.push(format!(
                "{h} answered HTTP {} (this machine outside li.allowed_cidrs must get 403)",
                r.status
            )),
            Err(e) => bad.push(e),
        }
    }
    if bad.is_empty() {
        Verdict::Pass(format!("403 from {}", ok.join(", ")))
    } else {
        Verdict::Fail(bad.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn healthy(at: f64, lag: f64) -> Value {
        json!({"mode": "logical", "subscribed": true, "subscription_enabled": true,
               "apply_worker_running": true, "lag_seconds": lag, "collected_at_unix": at})
    }

    #[test]
    fn a_fresh_status_with_small_lag_passes_and_lag_warns_then_fails() {
        assert!(matches!(
            judge_li(&healthy(100.0, 0.2), 101.0),
            Verdict::Pass(_)
        ));
        assert!(matches!(
            judge_li(&healthy(100.0, 12.0), 101.0),
            Verdict::Warn(_)
        ));
        assert!(matches!(
            judge_li(&healthy(100.0, 90.0), 101.0),
            Verdict::Fail(_)
        ));
    }

    #[test]
    fn a_stale_status_fails_naming_the_replica() {
        let Verdict::Fail(m) = judge_li(&healthy(100.0, 0.0), 100.0 + STALE_SECS + 1.0) else {
            panic!("stale status must fail")
        };
        assert!(m.contains("LI replica"), "{m}");
    }

    #[test]
    fn a_disabled_subscription_fails() {
        let mut s = healthy(100.0, 0.0);
        s["subscription_enabled"] = json!(false);
        assert!(matches!(judge_li(&s, 100.0), Verdict::Fail(_)));
    }

    #[test]
    fn prometheus_targets_must_exist_and_be_up() {
        let v = json!({"data": {"activeTargets": [
            {"scrapePool": "serviceMonitor/matrix/synapse-main/0", "health": "up", "labels": {"instance": "a"}},
            {"scrapePool": "serviceMonitor/matrix/synapse-li/0", "health": "down", "labels": {"instance": "l"}},
            {"scrapePool": "serviceMonitor/matrix/synapse-generic/0", "health": "down", "labels": {"instance": "g"}, "lastError": "timeout"}]}});
        let Verdict::Fail(m) = judge_targets(&v, "synapse", &["synapse-li"]) else {
            panic!()
        };
        assert!(
            m.contains("synapse-generic") && m.contains("timeout") && !m.contains("synapse-li"),
            "{m}"
        );
        assert!(matches!(
            judge_targets(&v, "content-scanner", &[]),
            Verdict::Fail(_)
        ));
        let up = json!({"data": {"activeTargets": [{"scrapePool": "podMonitor/m/content-scanner/0", "health": "up"}]}});
        assert!(matches!(
            judge_targets(&up, "content-scanner", &[]),
            Verdict::Pass(_)
        ));
    }
}

//! What Prometheus sees (feature `monitoring`): every dashboard panel returns data
//! (MX-VERIFY-016), and every exporter exposes the metrics the catalog says it does
//! (MX-VERIFY-017), so that no alert or panel rests on a metric that never arrives.
//!
//! A fresh stack has been scraped only a few times, and some series appear only after the
//! session checks' traffic was scraped: both checks ask again for a few scrape intervals
//! ([`settle_time`]).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use mxstack_monitoring::catalog::{self, Exporter};
use mxstack_monitoring::{dashboards, promql};
use mxstack_topology::Topology;

use crate::http::Http;
use crate::services::Verdict;
use crate::target::Target;

/// Four scrape intervals: the local Prometheus scrapes every 5 s, prometheus-operator's
/// monitors (ours) every 30 s.
fn settle_time(t: &Target) -> Duration {
    Duration::from_secs(if t.is_local() { 20 } else { 120 })
}
const T: Duration = Duration::from_secs(10);

/// The exporters that should be scraped where `t` runs: on one machine only those `up` runs.
fn present(t: &Target) -> impl Fn(&Exporter) -> bool + '_ {
    move |e: &Exporter| (!t.is_local() || e.local) && mxstack_monitoring::rendered(&t.config, e)
}

/// The Prometheus to ask: the local stack's, or `--prometheus`.
pub fn prometheus(t: &Target) -> Option<String> {
    t.local
        .as_ref()
        .and_then(|l| l.prometheus.as_ref().map(|e| e.url.clone()))
        .or_else(|| t.prometheus.clone())
        .map(|u| u.trim_end_matches('/').to_string())
}

/// Whether `expr` returns at least one series now.
fn has_data(http: &Http, base: &str, expr: &str) -> Result<bool, String> {
    let url = reqwest::Url::parse_with_params(&format!("{base}/api/v1/query"), &[("query", expr)])
        .map_err(|e| e.to_string())?;
    let r = http.get(url.as_str(), None, T)?;
    let v = r.json();
    if r.status != 200 || v["status"] != "success" {
        return Err(format!(
            "{base}: HTTP {} {}",
            r.status,
            v["error"].as_str().unwrap_or_default()
        ));
    }
    Ok(v["data"]["result"]
        .as_array()
        .is_some_and(|a| !a.is_empty()))
}

/// Asks `probe` until it reports nothing missing or `within` has passed.
fn settle(
    within: Duration,
    mut probe: impl FnMut() -> Result<Vec<String>, String>,
) -> Result<Vec<String>, String> {
    let start = Instant::now();
    loop {
        let missing = probe()?;
        if missing.is_empty() || start.elapsed() > within {
            return Ok(missing);
        }
        std::thread::sleep(Duration::from_secs(5));
    }
}

pub fn panels(http: &Http, t: &Target, base: &str) -> Verdict {
    let exposed = catalog::exposed(present(t));
    let mut checkable = Vec::new();
    let mut elsewhere = 0;
    for d in dashboards::dashboards(&Topology::build(&t.config)) {
        for (what, p) in d.named_panels() {
            let names = promql::metric_names(&p.expr).unwrap_or_default();
            if names.iter().all(|n| exposed.contains(n)) {
                checkable.push((what, p.expr.clone()));
            } else {
                elsewhere += 1;
            }
        }
    }
    let missing = settle(settle_time(t), || {
        let mut empty = Vec::new();
        for (what, expr) in &checkable {
            if !has_data(http, base, expr)? {
                empty.push(what.clone());
            }
        }
        Ok(empty)
    });
    let note = if elsewhere > 0 {
        format!(" ({elsewhere} panels use exporters that run only on Kubernetes)")
    } else {
        String::new()
    };
    match missing {
        Err(e) => Verdict::Fail(e),
        Ok(m) if m.is_empty() => {
            Verdict::Pass(format!("{} panels return data{note}", checkable.len()))
        }
        Ok(m) => Verdict::Fail(format!(
            "{} of {} panels return no data: {}",
            m.len(),
            checkable.len(),
            m.join("; ")
        )),
    }
}

pub fn catalog(http: &Http, t: &Target, base: &str) -> Verdict {
    let expected: BTreeSet<&str> = catalog::EXPORTERS
        .iter()
        .filter(|e| present(t)(e) && matches!(e.source, catalog::Source::Components(_)))
        .flat_map(|e| e.metrics.iter().copied())
        .collect();
    let missing = settle(settle_time(t), || {
        let r = http.get(&format!("{base}/api/v1/label/__name__/values"), None, T)?;
        let known: BTreeSet<String> = r.json()["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        Ok(expected
            .iter()
            .filter(|m| !known.contains(**m))
            .map(|m| m.to_string())
            .collect())
    });
    match missing {
        Err(e) => Verdict::Fail(e),
        Ok(m) if m.is_empty() => Verdict::Pass(format!(
            "all {} catalog metrics of the running exporters are scraped",
            expected.len()
        )),
        Ok(m) => Verdict::Fail(format!(
            "the catalog names metrics no running exporter exposes: {}",
            m.join(", ")
        )),
    }
}

//! Why: `mxstack deploy` and `check --cluster` at the command line, against MockApiServer (the
//! one mock mxstack allows: no Kubernetes API server runs here): JSON events, an idempotent
//! second run that says so, secrets never printed, and exit codes 0/1/2.

mod common;

use common::{init_site, mxstack, ok};
use mxstack_kube_mock::{mxstack_crds, MockApiServer};
use serde_json::Value;

fn kubeconfig(dir: &std::path::Path, server: &MockApiServer) -> String {
    let p = dir.join("kubeconfig");
    std::fs::write(&p, server.kubeconfig("t")).unwrap();
    p.to_str().unwrap().to_string()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every generated value of secrets.yaml (the long ones: short values are not secrets).
fn secret_values(dir: &std::path::Path) -> Vec<String> {
    let s = std::fs::read_to_string(dir.join("secrets.yaml")).unwrap();
    s.lines()
        .filter_map(|l| {
            l.split_once(": ")
                .map(|(_, v)| v.trim().trim_matches('"').to_string())
        })
        .filter(|v| v.len() >= 16)
        .collect()
}

#[test]
fn deploy_reports_json_events_then_a_second_run_changes_nothing_and_no_secret_is_printed() {
    let (dir, cfg) = init_site("acme.test", "100", "li,antivirus");
    let server = MockApiServer::start("v1.33.1", &mxstack_crds());
    let kc = kubeconfig(dir.path(), &server);
    let cfg = cfg.to_str().unwrap();
    let out = mxstack(&["deploy", "--config", cfg, "--kubeconfig", &kc, "--json"]);
    let stdout = ok(&out);
    let events: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
        .collect();
    let last = events.last().unwrap();
    assert_eq!(last["event"], "done");
    assert!(last["summary"]["created"].as_u64().unwrap() > 50, "{last}");
    assert!(events
        .iter()
        .any(|e| e["event"] == "ready" && e["object"].as_str().unwrap().starts_with("Cluster/")));
    assert_eq!(
        events.iter().filter(|e| e["event"] == "phase").count(),
        last["summary"]["phases"].as_array().unwrap().len()
    );

    let again = mxstack(&["deploy", "--config", cfg, "--kubeconfig", &kc]);
    let stdout = ok(&again);
    assert!(stdout.contains("nothing changed"), "{stdout}");
    let all = format!("{}{}", text(&out), text(&again));
    let secrets = secret_values(dir.path());
    assert!(secrets.len() > 5);
    for s in secrets {
        assert!(!all.contains(&s), "a secret value was printed");
    }
}

#[test]
fn check_cluster_lists_what_a_bare_cluster_lacks_and_exits_1() {
    let (dir, cfg) = init_site("acme.test", "1k", "li,antivirus,monitoring");
    let server = MockApiServer::start("v1.33.1", &[]);
    let kc = kubeconfig(dir.path(), &server);
    let out = mxstack(&[
        "check",
        "--config",
        cfg.to_str().unwrap(),
        "--cluster",
        "--kubeconfig",
        &kc,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rules: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    for want in ["MX-CLU-002", "MX-CLU-005", "MX-CLU-006", "MX-CLU-009"] {
        assert!(rules.contains(&want), "{want}: {rules:?}");
    }
    assert_eq!(v["cluster"]["kubernetes"], "v1.33.1");
}

#[test]
fn an_unreadable_kubeconfig_or_a_dead_cluster_is_exit_2_with_the_fix() {
    let (dir, cfg) = init_site("acme.test", "100", "li");
    let cfg = cfg.to_str().unwrap();
    let out = mxstack(&[
        "deploy",
        "--config",
        cfg,
        "--kubeconfig",
        "/nonexistent/kubeconfig",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("/nonexistent/kubeconfig") && text(&out).contains("--kubeconfig"),
        "{}",
        text(&out)
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = dir.path().join("dead");
    let server = MockApiServer::start("v1.33.1", &[]);
    // Plain http, then https: the client's TLS setup must work in the binary, whose crates
    // enable more than one rustls crypto provider (kube-rs would otherwise panic building it).
    let kubeconfig = server.kubeconfig("t");
    for scheme in ["http", "https"] {
        let dead = kubeconfig.replace(&server.url(), &format!("{scheme}://127.0.0.1:{port}"));
        std::fs::write(&p, dead).unwrap();
        let out = mxstack(&[
            "deploy",
            "--config",
            cfg,
            "--kubeconfig",
            p.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(2), "{scheme}: {}", text(&out));
        assert!(
            text(&out).contains("cannot reach the cluster") && !text(&out).contains("panicked"),
            "{scheme}: {}",
            text(&out)
        );
    }
    drop(server);
    let out = mxstack(&["deploy", "--config", cfg, "--timeout", "soon"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

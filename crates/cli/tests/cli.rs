//! The commands as an operator uses them: files written, exit codes, located findings, JSON output.

mod common;

use common::*;
use serde_json::Value;

fn secrets_of(dir: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("secrets.yaml")).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && l.contains(": "))
        .map(|l| l.split_once(": ").unwrap().1.trim_matches('"').to_string())
        .collect()
}

#[test]
fn init_writes_config_and_private_secrets_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let first = ok(&mxstack(&[
        "init",
        "--domain",
        "acme.test",
        "--scale",
        "5k",
        "--features",
        "federation,push",
        "--dir",
        d,
        "--json",
    ]));
    let v: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(v["config_written"], true);
    assert_eq!(
        v["secrets_generated"].as_array().unwrap().len(),
        mxstack_spec::SecretName::ALL.len()
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("secrets.yaml"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let config = std::fs::read_to_string(dir.path().join("mxstack.yaml")).unwrap();
    assert!(
        config.contains("scale: 5k")
            && config.contains("- federation")
            && config.contains("- push"),
        "{config}"
    );
    let secrets = secrets_of(dir.path());
    assert_eq!(secrets.len(), mxstack_spec::SecretName::ALL.len());
    for s in &secrets {
        assert!(!config.contains(s.as_str()), "a secret is in mxstack.yaml");
        assert!(!first.contains(s.as_str()), "init printed a secret");
    }
    // Re-run with other arguments: nothing changes.
    let again = ok(&mxstack(&[
        "init",
        "--domain",
        "other.test",
        "--scale",
        "100",
        "--dir",
        d,
        "--json",
    ]));
    let v: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(v["config_written"], false);
    assert_eq!(v["secrets_generated"], serde_json::json!([]));
    assert_eq!(secrets_of(dir.path()), secrets);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("mxstack.yaml")).unwrap(),
        config
    );
    // A deleted secret is regenerated alone.
    let text = std::fs::read_to_string(dir.path().join("secrets.yaml")).unwrap();
    let without: String = text
        .lines()
        .filter(|l| !l.starts_with("form_secret:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.path().join("secrets.yaml"), without).unwrap();
    let v: Value = serde_json::from_str(&ok(&mxstack(&[
        "init",
        "--domain",
        "acme.test",
        "--scale",
        "5k",
        "--dir",
        d,
        "--json",
    ])))
    .unwrap();
    assert_eq!(v["secrets_generated"], serde_json::json!(["form_secret"]));
    let after = secrets_of(dir.path());
    assert_eq!(
        after.iter().filter(|s| secrets.contains(s)).count(),
        secrets.len() - 1
    );
}

#[test]
fn init_refuses_placeholders_and_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = mxstack(&[
        "init",
        "--domain",
        "matrix.example.com",
        "--scale",
        "1k",
        "--dir",
        d,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MX-CFG-001"));
    assert!(!dir.path().join("mxstack.yaml").exists());
    let out = mxstack(&["init", "--domain", "acme.test", "--scale", "3k", "--dir", d]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("100, 1k, 5k, 10k, 20k"));
    let out = mxstack(&[
        "init",
        "--domain",
        "acme.test",
        "--scale",
        "1k",
        "--features",
        "li,ftp",
        "--dir",
        d,
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_corrupt_secrets_file_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    std::fs::write(
        dir.path().join("secrets.yaml"),
        "redis_password: [unclosed\n",
    )
    .unwrap();
    let out = mxstack(&["init", "--domain", "acme.test", "--scale", "1k", "--dir", d]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("secrets.yaml")).unwrap(),
        "redis_password: [unclosed\n"
    );
}

#[test]
fn plan_reports_every_tier_within_the_connection_budget() {
    for (scale, seed_vms) in [("100", 15), ("1k", 30), ("5k", 0), ("10k", 0), ("20k", 51)] {
        let (_dir, cfg) = init_site("acme.test", scale, "calls");
        let v: Value = serde_json::from_str(&ok(&mxstack(&[
            "plan",
            "--config",
            cfg.to_str().unwrap(),
            "--json",
        ])))
        .unwrap();
        let b = &v["connection_budget"];
        let max = b["max_connections"].as_u64().unwrap();
        let total: u64 = b["pools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["cp_max"].as_u64().unwrap() * p["processes_max"].as_u64().unwrap())
            .sum();
        assert_eq!(total, b["total_cp_max"].as_u64().unwrap());
        assert!(total * 100 <= max * 85, "{scale}: {total} > 85% of {max}");
        let nodes = v["sizing"]["total_nodes"].as_u64().unwrap();
        if seed_vms > 0 {
            assert_eq!(
                nodes, seed_vms,
                "{scale}: node count differs from seed 003's table"
            );
        }
        assert!(v["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"] == "synchrotron"));
        // The human table too.
        let table = ok(&mxstack(&["plan", "--config", cfg.to_str().unwrap()]));
        assert!(
            table.contains("max_connections") && table.contains("synchrotron"),
            "{table}"
        );
    }
}

#[test]
fn check_locates_every_problem_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    ok(&mxstack(&[
        "init",
        "--domain",
        "acme.test",
        "--scale",
        "1k",
        "--dir",
        d,
    ]));
    let cfg = dir.path().join("mxstack.yaml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    // A placeholder and a bad override, on known lines.
    let broken = format!(
        "{}\noverrides:\n  event-persister:\n    max_replicas: 9\n",
        text.replace("acme_email: postmaster@acme.test", "acme_email: CHANGEME")
    );
    std::fs::write(&cfg, &broken).unwrap();
    let out = mxstack(&["check", "--config", cfg.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let findings = v["findings"].as_array().unwrap();
    let line_of =
        |needle: &str| broken.lines().position(|l| l.contains(needle)).unwrap() as u64 + 1;
    let f1 = findings
        .iter()
        .find(|f| f["rule"] == "MX-CFG-001")
        .expect("placeholder finding");
    assert_eq!(f1["location"]["line"], line_of("acme_email"));
    assert!(f1["location"]["file"]
        .as_str()
        .unwrap()
        .ends_with("mxstack.yaml"));
    assert!(!f1["fix"].as_str().unwrap().is_empty());
    let f7 = findings
        .iter()
        .find(|f| f["rule"] == "MX-CFG-007")
        .expect("autoscale finding");
    assert_eq!(f7["location"]["line"], line_of("max_replicas"));
    assert_eq!(f7["covers"], "004 5.3");

    // Unknown key: a parse error, located, with a fix; text output names file:line:column.
    std::fs::write(&cfg, format!("{text}\nhostnames:\n  matrx: m.acme.test\n")).unwrap();
    let out = mxstack(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("MX-CFG-000") && err.contains("matrx") && err.contains("fix:"),
        "{err}"
    );
    let loc = format!("{}:{}:", cfg.display(), text.lines().count() + 3);
    assert!(err.contains(&loc), "expected {loc} in {err}");
}

#[test]
fn check_passes_a_fresh_config_and_lists_no_errors() {
    let (_dir, cfg) = init_site("acme.test", "1k", "federation");
    let v: Value = serde_json::from_str(&ok(&mxstack(&[
        "check",
        "--config",
        cfg.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["objects_checked"].as_u64().unwrap() > 30);
}

#[test]
fn render_is_deterministic_phased_and_refuses_placeholders() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    ok(&mxstack(&[
        "init",
        "--domain",
        "acme.test",
        "--scale",
        "10k",
        "--features",
        "federation,li,antivirus,calls,push,monitoring",
        "--dir",
        d,
    ]));
    let cfg = dir.path().join("mxstack.yaml");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    ok(&mxstack(&[
        "render",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        a.to_str().unwrap(),
    ]));
    ok(&mxstack(&[
        "render",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        b.to_str().unwrap(),
    ]));
    let read_tree = |root: &std::path::Path| {
        let mut files = std::collections::BTreeMap::new();
        for (rel, _) in objects(root) {
            files.insert(rel.clone(), std::fs::read(root.join(&rel)).unwrap());
        }
        files
    };
    let (ta, tb) = (read_tree(&a), read_tree(&b));
    assert!(!ta.is_empty());
    assert_eq!(ta, tb, "two renders differ");
    // Ordered phase folders, each with a kustomization listing exactly its files.
    let top = std::fs::read_to_string(a.join("kustomization.yaml")).unwrap();
    let mut phases: Vec<String> = std::fs::read_dir(&a)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    phases.sort();
    assert!(
        phases.len() >= 4 && phases[0].starts_with("00-"),
        "{phases:?}"
    );
    for p in &phases {
        assert!(
            top.contains(p.as_str()),
            "top-level kustomization misses {p}"
        );
        let k = std::fs::read_to_string(a.join(p).join("kustomization.yaml")).unwrap();
        for f in std::fs::read_dir(a.join(p)).unwrap() {
            let n = f.unwrap().file_name().to_string_lossy().into_owned();
            if n != "kustomization.yaml" {
                assert!(k.contains(&n), "{p}/kustomization.yaml misses {n}");
            }
        }
    }
    // Re-render over an existing output replaces it; a foreign directory is refused.
    ok(&mxstack(&[
        "render",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        a.to_str().unwrap(),
    ]));
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("keep.txt"), "mine").unwrap();
    let out = mxstack(&[
        "render",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        foreign.to_str().unwrap(),
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(foreign.join("keep.txt")).unwrap(),
        "mine"
    );

    // A placeholder anywhere: render refuses and writes nothing.
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("domain: acme.test", "domain: example.com"),
    )
    .unwrap();
    let c = dir.path().join("c");
    let out = mxstack(&[
        "render",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        c.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!c.exists(), "render wrote output despite errors");
    // A placeholder secret is refused too.
    std::fs::write(&cfg, &text).unwrap();
    let s = std::fs::read_to_string(dir.path().join("secrets.yaml")).unwrap();
    let bad: String = s
        .lines()
        .map(|l| {
            if l.starts_with("redis_password:") {
                "redis_password: \"CHANGEME_REDIS\"".to_string()
            } else {
                l.to_string()
            }
        })
        .map(|l| l + "\n")
        .collect();
    std::fs::write(dir.path().join("secrets.yaml"), bad).unwrap();
    let out = mxstack(&[
        "render",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        c.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!c.exists());
}

#[test]
fn rendered_output_keeps_secrets_in_secret_objects_only() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    ok(&mxstack(&[
        "init",
        "--domain",
        "acme.test",
        "--scale",
        "1k",
        "--features",
        "federation,li,antivirus,calls,push,monitoring",
        "--dir",
        d,
    ]));
    let cfg = dir.path().join("mxstack.yaml");
    let out = dir.path().join("out");
    let printed = ok(&mxstack(&[
        "render",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    let secrets = secrets_of(dir.path());
    let objs = objects(&out);
    let mut found_in_secret = 0;
    for s in &secrets {
        let needle = s.rsplit(' ').next().unwrap();
        assert!(!printed.contains(needle));
        for (file, o) in &objs {
            let text = serde_json::to_string(o).unwrap();
            if text.contains(needle) {
                assert_eq!(
                    kind(o),
                    "Secret",
                    "a secret value is in {} {} ({file})",
                    kind(o),
                    name(o)
                );
                found_in_secret += 1;
            }
        }
    }
    assert!(
        found_in_secret >= 8,
        "secrets should be rendered into Secret objects"
    );
}

#[test]
fn schema_is_json_schema_and_config_doc_is_current() {
    let v: Value = serde_json::from_str(&ok(&mxstack(&["schema"]))).unwrap();
    assert_eq!(
        v["additionalProperties"], false,
        "unknown keys must be rejected by the schema too"
    );
    for key in [
        "domain",
        "scale",
        "features",
        "hostnames",
        "media",
        "images",
        "overrides",
    ] {
        assert!(v["properties"].get(key).is_some(), "schema lacks {key}");
    }
    let md = ok(&mxstack(&["schema", "--markdown"]));
    let doc =
        std::fs::read_to_string(workspace().join("docs/CONFIG.md")).expect("docs/CONFIG.md exists");
    assert_eq!(
        doc, md,
        "docs/CONFIG.md is stale: run `mxstack schema --markdown > docs/CONFIG.md`"
    );
}

#[test]
fn rules_are_listed_with_their_seed_defects() {
    let v: Value = serde_json::from_str(&ok(&mxstack(&["rules", "--json"]))).unwrap();
    let rules = v.as_array().unwrap();
    assert!(rules.len() >= 25);
    for r in rules {
        for k in ["id", "title", "covers", "fix"] {
            assert!(!r[k].as_str().unwrap_or("").is_empty(), "{r}");
        }
    }
}

#[test]
fn network_and_alert_docs_are_current() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    ok(&mxstack(&[
        "init",
        "--domain",
        "demo.mxstack.org",
        "--scale",
        "20k",
        "--features",
        "federation,li,antivirus,calls,push,monitoring",
        "--dir",
        d,
    ]));
    let cfg = format!("{d}/mxstack.yaml");
    let md = ok(&mxstack(&["plan", "--config", &cfg, "--network-markdown"]));
    assert!(md.contains("| synapse | postgres |"), "{md}");
    let doc = std::fs::read_to_string(workspace().join("docs/NETWORK.md"))
        .expect("docs/NETWORK.md exists");
    assert_eq!(
        doc, md,
        "docs/NETWORK.md is stale: run `mxstack plan --network-markdown` on an all-features 20k config"
    );
    let md = ok(&mxstack(&["plan", "--config", &cfg, "--alerts-markdown"]));
    assert!(md.contains("| `SynapseDown` | critical |"), "{md}");
    let doc = std::fs::read_to_string(workspace().join("docs/MONITORING.md"))
        .expect("docs/MONITORING.md exists");
    assert_eq!(
        doc, md,
        "docs/MONITORING.md is stale: run `mxstack plan --alerts-markdown` on an all-features 20k config"
    );
}

#[test]
fn li_vault_keygen_prints_a_matching_age_key_pair() {
    let v: Value = serde_json::from_str(&ok(&mxstack(&["li", "vault-keygen", "--json"]))).unwrap();
    let (public, private) = (
        v["public_key"].as_str().unwrap(),
        v["private_key"].as_str().unwrap(),
    );
    assert!(public.starts_with("age1") && private.starts_with("AGE-SECRET-KEY-1"));
    let id: age::x25519::Identity = private.parse().unwrap();
    assert_eq!(id.to_public().to_string(), public);
    // The text form is an age identity file; every run makes a new pair.
    let out = mxstack(&["li", "vault-keygen"]);
    let text = ok(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("# created: ") && lines[1].starts_with("# public key: age1"));
    let id: age::x25519::Identity = lines[2].parse().unwrap();
    assert_eq!(
        format!("# public key: {}", id.to_public()),
        lines[1],
        "{text}"
    );
    assert_ne!(lines[2], private);
    assert!(!String::from_utf8_lossy(&out.stderr).contains(lines[2]));
}

#[test]
fn serve_key_vault_runs_the_vault() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let v: Value = serde_json::from_str(&ok(&mxstack(&["li", "vault-keygen", "--json"]))).unwrap();
    let config = dir.path().join("vault.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\ndatabase: {{sqlite: {}}}\nrecipients: {{vault: {}}}\nstore_api_key_env: KV_S\nretrieval_api_key_env: KV_R\n",
            dir.path().join("vault.db").display(),
            v["public_key"].as_str().unwrap()
        ),
    )
    .unwrap();
    // Without its keys it refuses to start, naming the variable.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mxstack"))
        .args(["serve", "key-vault", "--config", config.to_str().unwrap()])
        .env_remove("KV_S")
        .env_remove("KV_R")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("KV_S"));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mxstack"))
        .args(["serve", "key-vault", "--config", config.to_str().unwrap()])
        .env("KV_S", "store-key-0123456789")
        .env("KV_R", "retrieval-key-0123456789")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let answer = loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            s.write_all(b"GET /v1/keys/@a:example.org HTTP/1.0\r\n\r\n")
                .unwrap();
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            break out;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "no listener"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(answer.starts_with("HTTP/1.0 401"), "{answer}");
    assert!(answer.contains("\"errcode\":\"UNAUTHORIZED\""), "{answer}");
    assert!(status.success(), "graceful stop: {status}");
}

#[test]
fn render_with_operators_writes_the_phase_and_says_what_is_left() {
    let (dir, cfg) = init_site("acme.test", "1k", "li,antivirus,calls,monitoring");
    let (plain, with) = (dir.path().join("plain"), dir.path().join("with"));
    let c = cfg.to_str().unwrap();
    ok(&mxstack(&[
        "render",
        "--config",
        c,
        "--out",
        plain.to_str().unwrap(),
    ]));
    assert!(!plain.join("05-operators").exists(), "off by default");
    let out = mxstack(&[
        "render",
        "--config",
        c,
        "--out",
        with.to_str().unwrap(),
        "--with-operators",
        "--json",
    ]);
    let report: Value = serde_json::from_str(&ok(&out)).unwrap();
    let ops = &report["operators"];
    let written: Vec<&str> = ops["written"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        written,
        [
            "CloudNativePG",
            "Gateway API CRDs (standard channel)",
            "prometheus-operator"
        ]
    );
    let by_hand: Vec<&str> = ops["install_by_hand"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        by_hand,
        [
            "cert-manager",
            "Envoy Gateway",
            "Barman Cloud plugin for CloudNativePG"
        ]
    );
    assert!(with
        .join("05-operators/cloudnative-pg/1.30.0/releases/cnpg-1.30.0.yaml")
        .exists());
    let top = std::fs::read_to_string(with.join("kustomization.yaml")).unwrap();
    assert!(
        top.contains("- 00-namespace\n- 05-operators\n- 10-infrastructure\n"),
        "{top}"
    );
    // The other phases are the same as without the flag (same secrets, same config).
    for (rel, _) in objects(&plain) {
        assert_eq!(
            std::fs::read(plain.join(&rel)).unwrap(),
            std::fs::read(with.join(&rel)).unwrap(),
            "{rel}"
        );
    }
    // The text output names what is left on stderr.
    let out = mxstack(&[
        "render",
        "--config",
        c,
        "--out",
        with.to_str().unwrap(),
        "--with-operators",
    ]);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("install these by hand") && err.contains("--version v1.21.1"),
        "{err}"
    );
}

#[test]
fn plan_from_an_old_config_lists_what_a_tier_change_takes_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let init = |scale: &str| {
        let d = dir.path().join(scale);
        ok(&mxstack(&[
            "init",
            "--domain",
            "acme.test",
            "--scale",
            scale,
            "--dir",
            d.to_str().unwrap(),
        ]));
        d.join("mxstack.yaml").display().to_string()
    };
    let (small, large) = (init("1k"), init("5k"));
    let out = ok(&mxstack(&[
        "plan", "--from", &small, "--config", &large, "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let effects: Vec<&str> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["effect"].as_str().unwrap())
        .collect();
    assert_eq!(effects.first(), Some(&"nodes"), "{out}");
    assert_eq!(effects.last(), Some(&"coordinated_restart"), "{out}");
    assert!(out.contains("PostgreSQL max_connections"), "{out}");
    let same = ok(&mxstack(&["plan", "--from", &small, "--config", &small]));
    assert_eq!(same.trim(), "nothing changes");
}

#[test]
fn rotate_for_kubernetes_takes_three_steps_where_two_values_are_accepted() {
    let (dir, cfg) = init_site("acme.test", "1k", "li,calls");
    let c = cfg.to_str().unwrap();
    let secrets = dir.path().join("secrets.yaml");
    let old = std::fs::read_to_string(&secrets).unwrap();
    let read = || std::fs::read_to_string(&secrets).unwrap();
    let render = |step: &str| {
        let out = dir.path().join(step);
        ok(&mxstack(&[
            "render",
            "--config",
            c,
            "--out",
            out.to_str().unwrap(),
        ]));
    };
    let mut printed = ok(&mxstack(&[
        "rotate",
        "li_s3_secret_key",
        "livekit_api_key",
        "key_vault_store_api_key",
        "li_db_password",
        "--kubernetes",
        "--config",
        c,
    ]));
    // 1: pairs rotate together; what SeaweedFS, LiveKit and the vault accept waits as next.
    for staged in [
        "next.li_s3_access_key:",
        "next.li_s3_secret_key:",
        "next.livekit_api_key:",
        "next.livekit_api_secret:",
        "next.key_vault_store_api_key:",
    ] {
        assert!(read().contains(staged), "{staged} missing");
    }
    // Nothing accepts two LI database passwords: replaced at once.
    assert!(!read().contains("next.li_db_password") && !read().contains("previous.li_db_password"));
    assert!(
        printed.contains("--switch") && printed.contains("--retire"),
        "{printed}"
    );
    render("one");
    // A new rotation waits for this one; retire waits for the switch.
    assert!(
        !mxstack(&["rotate", "form_secret", "--kubernetes", "--config", c])
            .status
            .success()
    );
    assert!(
        !mxstack(&["rotate", "--kubernetes", "--retire", "--config", c])
            .status
            .success()
    );
    // 2: the readers switch.
    printed += &ok(&mxstack(&[
        "rotate",
        "--kubernetes",
        "--switch",
        "--config",
        c,
    ]));
    assert!(!read().contains("next.") && read().contains("previous.li_s3_access_key:"));
    render("two");
    // 3: the old values go.
    printed += &ok(&mxstack(&[
        "rotate",
        "--kubernetes",
        "--retire",
        "--config",
        c,
    ]));
    assert!(
        printed.contains("seaweedfs") && printed.contains("livekit"),
        "{printed}"
    );
    assert!(!read().contains("previous."));
    render("three");
    for line in old.lines().filter(|l| !l.starts_with('#')) {
        if let Some((_, v)) = line.split_once(": ") {
            assert!(
                !printed.contains(v.trim_matches('"')),
                "a value was printed"
            );
        }
    }
}

#[test]
fn down_json_says_whether_it_stopped_and_what_it_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    ok(&mxstack(&[
        "init",
        "--domain",
        "down.test",
        "--scale",
        "100",
        "--dir",
        d,
    ]));
    let cfg = dir.path().join("mxstack.yaml");
    let cfg = cfg.to_str().unwrap();
    // Never started, no state: nothing to stop or delete.
    let v: Value =
        serde_json::from_str(&ok(&mxstack(&["down", "--config", cfg, "--json"]))).unwrap();
    assert_eq!(v, serde_json::json!({"stopped": false, "deleted": null}));
    // A state directory left by an earlier run: --purge deletes it and names it.
    let state = dir.path().join(".mxstack-state");
    std::fs::create_dir_all(state.join("logs")).unwrap();
    let out = ok(&mxstack(&["down", "--config", cfg, "--purge", "--json"]));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["stopped"], false);
    assert_eq!(v["deleted"], state.display().to_string(), "{out}");
    assert!(!state.exists());
}

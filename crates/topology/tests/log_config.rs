//! Synapse's logging configs load in the Synapse the deployment runs and print one JSON object
//! per line (what Loki's `| json` parses). Needs the project's virtualenv (`scripts/setup.sh`, or
//! `MXSTACK_VENV`); a missing one fails the test, it never skips it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use mxstack_topology::{li_browsing, synapse};
use serde_json::Value;

fn python() -> PathBuf {
    let venv = std::env::var_os("MXSTACK_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv"));
    let py = venv.join("bin/python");
    assert!(
        py.exists(),
        "{} is missing: run scripts/setup.sh (it installs Synapse into the venv) or set MXSTACK_VENV",
        py.display()
    );
    py
}

/// Loads `yaml` with `logging.config.dictConfig` (importing the formatter and filter classes),
/// logs one line through a Synapse logger and returns what it printed.
fn log_through(yaml: &str) -> String {
    const SCRIPT: &str = "import logging, logging.config, sys, yaml\n\
        logging.config.dictConfig(yaml.safe_load(sys.stdin.read()))\n\
        logging.getLogger('synapse.proof').info('hello %s', 'loki')\n";
    let mut child = Command::new(python())
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn synapse_logs_are_json_lines_with_level_and_logger() {
    for log in [synapse::log_yaml(), li_browsing::log_yaml()] {
        assert_eq!(
            log["formatters"]["structured"]["class"],
            synapse::LOG_FORMATTER
        );
        let printed = log_through(&synapse::to_yaml(&log));
        let lines: Vec<&str> = printed.lines().collect();
        assert_eq!(lines.len(), 1, "{printed}");
        let line: Value = serde_json::from_str(lines[0]).expect("a JSON line");
        assert_eq!(line["log"], "hello loki", "{line}");
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(line["namespace"], "synapse.proof", "{line}");
        assert!(line["time"].is_number(), "{line}");
        // The context filter ran: the request field is there (empty outside a request).
        assert!(line.get("request").is_some(), "{line}");
    }
}

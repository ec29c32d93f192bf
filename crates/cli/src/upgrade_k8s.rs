//! `mxstack upgrade --kubernetes --synapse VERSION`: the plan for a cluster, and with `--apply`
//! the new `images.synapse` in mxstack.yaml. The cluster's database is not reachable from here,
//! so the decision rests on the two versions' schemas: a rolling update when the running
//! version can read the schema the new main migrates to, otherwise `deploy --coordinated`
//! (every Synapse process stops, main starts first and migrates, then the workers).

use std::process::ExitCode;

use mxstack_local::plan::Programs;
use mxstack_local::synapse_version::{self as sv};
use mxstack_local::{LocalPlan, Shape, StateLayout};
use serde_json::{json, Value};

use crate::local::Target;
use crate::upgrade::{prove, rolling_possible, target_venv, NOTES};

type CmdResult = Result<ExitCode, String>;

/// The Synapse version an image reference names (its tag).
pub fn image_version(image: &str) -> Option<&str> {
    let (_, tag) = image.rsplit_once(':')?;
    sv::check_version(tag).ok().map(|_| tag)
}

/// The model's Synapse configs, written for one machine into a scratch directory, loaded by
/// `python`: the settings Kubernetes gets too (only addresses and paths differ, as
/// `targets_agree` holds).
fn prove_model(t: &Target, python: &std::path::Path) -> Result<Vec<(String, String)>, String> {
    let (config, secrets) = t.load()?;
    // Removed when dropped, on every path out.
    let scratch = tempfile::Builder::new()
        .prefix("mxstack-upgrade-proof-")
        .tempdir()
        .map_err(|e| format!("cannot make a scratch directory: {e}"))?;
    let layout = StateLayout {
        root: scratch.path().to_path_buf(),
    };
    let programs = Programs::discover_for(&config)?;
    let plan = LocalPlan::build(&config, &secrets, &layout, &Shape::new(20000, 1), &programs);
    for f in &plan.files {
        if let Some(dir) = f.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        std::fs::write(&f.path, &f.content).map_err(|e| format!("{}: {e}", f.path.display()))?;
    }
    prove(python, &plan)
}

pub fn upgrade_kubernetes(t: &Target, version: &str, apply: bool, json: bool) -> CmdResult {
    sv::check_version(version).map_err(|e| e.to_string())?;
    let (config, _) = t.load()?;
    let image = config.images.synapse.clone();
    let current_version = image_version(&image).ok_or_else(|| {
        format!("{}: images.synapse `{image}` does not end in a Synapse version tag (e.g. :1.163.2); set it to the version the cluster runs", t.config.display())
    })?;
    let (_, current_python) = target_venv(&config, current_version)?;
    let (_, target_python) = target_venv(&config, version)?;
    let current = sv::inspect(&current_python).map_err(|e| e.to_string())?;
    let target = sv::inspect(&target_python).map_err(|e| e.to_string())?;
    eprintln!("upgrade: proving the model's Synapse configs in Synapse {version}");
    let failures = prove_model(t, &target_python)?;
    let rolling = rolling_possible(&current, &target);
    let new_image = format!(
        "{}:{version}",
        image.rsplit_once(':').map(|(r, _)| r).unwrap_or(&image)
    );
    let refused = (!failures.is_empty()).then(|| {
        let f: Vec<String> = failures.iter().map(|(n, e)| format!("{n}: {e}")).collect();
        format!(
            "the config does not load in Synapse {version}: {}",
            f.join("; ")
        )
    });
    let deploy = if rolling {
        "mxstack deploy: a rolling update (the running version reads the schema the new main migrates to)".to_string()
    } else {
        format!("mxstack deploy --coordinated: schema {} is unreadable to Synapse {} (schema {}), so every Synapse process stops, main starts first and migrates, then the workers", target.compat, current.version, current.schema)
    };
    let mut report = json!({
        "kubernetes": true,
        "current": current,
        "target": target,
        "mode": if rolling { "rolling" } else { "coordinated" },
        "configs_proven": failures.is_empty(),
        "steps": [
            format!("the image {new_image} must be in your registry (`mxstack images build` builds the Synapse this mxstack pins; another version is your image)"),
            format!("set images.synapse to {new_image} in {}", t.config.display()),
            "mxstack render, then ".to_string() + &deploy,
        ],
        "upgrade_notes": format!("read {NOTES} for every release between {} and {version}", current.version),
        "refused": refused,
    });
    if apply && refused.is_none() {
        set_image(&t.config, &image, &new_image)?;
        report["applied"] = json!({ "images.synapse": new_image });
    }
    print(&report, json);
    Ok(if report["refused"].is_null() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Replaces the one `synapse: IMAGE` line of mxstack.yaml, keeping everything else as written.
fn set_image(path: &std::path::Path, old: &str, new: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let wanted = format!("synapse: {old}");
    let hits = text.lines().filter(|l| l.trim() == wanted).count();
    if hits != 1 {
        return Err(format!("{}: expected one `{wanted}` line under images, found {hits}; set images.synapse to {new} by hand", path.display()));
    }
    let out: String = text
        .split_inclusive('\n')
        .map(|l| {
            if l.trim() == wanted {
                l.replacen(old, new, 1)
            } else {
                l.to_string()
            }
        })
        .collect();
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, out)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn print(r: &Value, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(r).expect("json"));
        return;
    }
    println!(
        "Synapse {} → {} on Kubernetes: {}",
        r["current"]["version"].as_str().unwrap_or("?"),
        r["target"]["version"].as_str().unwrap_or("?"),
        r["mode"].as_str().unwrap_or("?")
    );
    for (i, s) in r["steps"].as_array().into_iter().flatten().enumerate() {
        println!("  {}. {}", i + 1, s.as_str().unwrap_or_default());
    }
    println!("  {}", r["upgrade_notes"].as_str().unwrap_or_default());
    if let Some(why) = r["refused"].as_str() {
        println!("refused: {why}");
    } else if let Some(img) = r["applied"]["images.synapse"].as_str() {
        println!("images.synapse is now {img}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_the_image_tag() {
        assert_eq!(
            image_version("ghcr.io/mxstack/synapse:1.163.2"),
            Some("1.163.2")
        );
        assert_eq!(
            image_version("registry:5000/synapse:1.162.0"),
            Some("1.162.0")
        );
        assert_eq!(image_version("ghcr.io/mxstack/synapse:latest"), None);
        assert_eq!(image_version("synapse"), None);
    }

    #[test]
    fn only_the_image_line_changes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mxstack.yaml");
        let text = "domain: a.test # kept\nimages:\n  synapse: ghcr.io/mxstack/synapse:1.162.0\n  haproxy: x:1\n";
        std::fs::write(&p, text).unwrap();
        set_image(
            &p,
            "ghcr.io/mxstack/synapse:1.162.0",
            "ghcr.io/mxstack/synapse:1.163.2",
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            text.replace("1.162.0", "1.163.2")
        );
        assert!(set_image(&p, "nope:1.0.0", "x:1.0.1")
            .unwrap_err()
            .contains("found 0"));
    }
}

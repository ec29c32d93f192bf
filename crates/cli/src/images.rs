//! Why: the `mxstack images` commands (build, list, push) and the two hooks `render --pin` needs,
//! as thin wiring over crates/images: argument values in, text or `--json` out, and the lock's
//! verdicts turned into findings (MX-IMG-001, MX-IMG-002) like every other check.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use mxstack_checks::Finding;
use mxstack_images::{BuildOptions, Lock, PushOptions, Status};
use mxstack_spec::{Config, Secrets};
use serde_json::json;

use crate::commands::{check_and_render, load_config, print_json, report};

type CmdResult = Result<ExitCode, String>;

/// Pins `config.images` from `lock`; a stale lock is one MX-IMG-002 finding per image.
pub fn pin_config(config: &mut Config, lock: &Lock) -> Result<(), Vec<Finding>> {
    mxstack_images::pin(&mut config.images, lock)
        .map(|_| ())
        .map_err(|stale| {
            stale
                .into_iter()
                .map(|s| {
                    Finding::new(
                        "MX-IMG-002",
                        format!("the lock's image `{}` is stale: {}", s.image, s.reason),
                    )
                })
                .collect()
        })
}

/// Every image the rendered objects name: their containers' and init containers' `image`, and
/// `imageName` (CloudNativePG's Cluster).
pub fn rendered_images(objects: &[serde_json::Value]) -> BTreeSet<String> {
    fn walk(v: &serde_json::Value, out: &mut BTreeSet<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    if k == "imageName" {
                        if let Some(i) = v.as_str() {
                            out.insert(i.to_string());
                        }
                    }
                    if k == "containers" || k == "initContainers" {
                        for c in v.as_array().into_iter().flatten() {
                            if let Some(i) = c.get("image").and_then(|i| i.as_str()) {
                                out.insert(i.to_string());
                            }
                        }
                    }
                    walk(v, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    objects.iter().for_each(|o| walk(o, &mut out));
    out
}

/// MX-IMG-001 for every rendered image that is still named by tag after pinning.
pub fn unpinned(config: &Config, objects: &[serde_json::Value], lock: &Lock) -> Vec<Finding> {
    let referenced = rendered_images(objects);
    mxstack_images::list(&config.images, &referenced, Some(lock))
        .into_iter()
        .filter(|row| !row.by_digest)
        .map(|row| {
            let field = row.fields.first().cloned();
            let (message, fix) = match (&field, &row.buildable) {
                (Some(f), Some(name)) => (
                    format!(
                        "images.{f} is `{}`: the lock's `{name}` image is not this reference, so it is rendered by tag",
                        row.image
                    ),
                    format!(
                        "push the built image (`mxstack images push --registry R`) and set images.{f} to the value it prints, \
                         or pin this image by digest: {}@sha256:DIGEST (`skopeo inspect --format '{{{{.Digest}}}}' docker://{}`)",
                        row.image, row.image
                    ),
                ),
                (Some(f), None) => (
                    format!(
                        "images.{f} is `{}`: the lock does not have it (mxstack does not build it) and it names no digest",
                        row.image
                    ),
                    format!(
                        "mirror it to your registry (`skopeo copy docker://{0} docker://R/...`) and set images.{f} to REPO:TAG@sha256:DIGEST (`skopeo inspect --format '{{{{.Digest}}}}' docker://{0}`)",
                        row.image
                    ),
                ),
                (None, _) => (
                    format!(
                        "`{}` is rendered by tag and no images.<field> sets it",
                        row.image
                    ),
                    "mirror it under the same name; mxstack.yaml cannot pin it (yet)".to_string(),
                ),
            };
            Finding::new("MX-IMG-001", message).fix(fix)
        })
        .collect()
}

fn mb(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1e6)
}

pub struct BuildArgs {
    pub out: PathBuf,
    pub only: Option<String>,
    pub binary: Option<PathBuf>,
    pub ca_bundle: Option<PathBuf>,
    pub json: bool,
}

fn split_list(s: Option<&str>) -> Option<Vec<String>> {
    s.map(|s| {
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    })
}

pub fn build(a: BuildArgs) -> CmdResult {
    let opts = BuildOptions {
        out: a.out,
        only: split_list(a.only.as_deref()),
        binary: a.binary,
        workspace: None,
        ca_bundle: a.ca_bundle,
        progress: true,
    };
    let r = mxstack_images::build(&opts).map_err(|e| e.to_string())?;
    if a.json {
        print_json(
            &json!({ "ok": true, "out": r.out, "lock": r.lock, "base": r.base,
            "base_status": r.base_status, "images": r.images, "seconds": r.seconds }),
        );
    } else {
        println!(
            "{:<9} {:<7} {:>7} {:>9}  digest",
            "image", "status", "size", "archive"
        );
        for i in &r.images {
            println!(
                "{:<9} {:<7} {:>7} {:>9}  {}",
                i.name,
                match i.status {
                    Status::Built => "built",
                    Status::Cached => "cached",
                },
                mb(i.size),
                mb(i.archive_bytes),
                i.digest
            );
        }
        println!(
            "lock: {} ({:.0} s); pin a render with: mxstack render --pin {} ...",
            r.lock.display(),
            r.seconds,
            r.lock.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn list(config_path: &Path, lock: Option<&Path>, json: bool) -> CmdResult {
    let lock = match lock {
        Some(p) => Some(Lock::load(p).map_err(|e| e.to_string())?),
        None => None,
    };
    let config = match load_config(config_path) {
        Ok((c, _)) => c,
        Err(f) => return Ok(report(&[*f], json, json!({}))),
    };
    // Which images a render references does not depend on the secrets' values.
    let secrets = Secrets::generate_all().map_err(|e| e.to_string())?;
    let (findings, rendered) = check_and_render(config_path, &secrets, false, None);
    let Some(rendered) = rendered else {
        return Ok(report(&findings, json, json!({})));
    };
    let objects: Vec<serde_json::Value> =
        rendered.objects.iter().map(|o| o.value.clone()).collect();
    let rows = mxstack_images::list(&config.images, &rendered_images(&objects), lock.as_ref());
    if json {
        print_json(&json!({ "ok": true, "images": rows }));
    } else {
        for r in &rows {
            println!(
                "{}\t{}\t{}\t{}",
                r.image,
                if r.fields.is_empty() {
                    "-".to_string()
                } else {
                    r.fields
                        .iter()
                        .map(|f| format!("images.{f}"))
                        .collect::<Vec<_>>()
                        .join(",")
                },
                r.buildable
                    .as_ref()
                    .map(|b| format!("mxstack builds {b}"))
                    .unwrap_or_else(|| "mirror".into()),
                r.locked_digest.as_deref().unwrap_or(if r.by_digest {
                    "by digest"
                } else {
                    "by tag"
                })
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn push(
    dir: &Path,
    registry: &str,
    only: Option<&str>,
    tls_verify: bool,
    json: bool,
) -> CmdResult {
    let pushed = mxstack_images::push(&PushOptions {
        dir: dir.to_path_buf(),
        registry: registry.to_string(),
        only: split_list(only),
        tls_verify,
        progress: true,
    })
    .map_err(|e| e.to_string())?;
    if json {
        print_json(&json!({ "ok": true, "pushed": pushed }));
    } else {
        for p in &pushed {
            println!("{}\t{}\t{}", p.name, p.destination, p.digest);
        }
        if pushed.iter().any(|p| p.config_value.is_some()) {
            println!("\n# in mxstack.yaml:\nimages:");
            for p in &pushed {
                if let Some(v) = &p.config_value {
                    println!("  {}: {v}", p.serves);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_found_in_containers_and_init_containers() {
        let objects = vec![
            json!({"kind": "Deployment", "spec": {"template": {"spec": {
            "initContainers": [{"name": "a", "image": "x:1"}],
            "containers": [{"name": "b", "image": "y:2"}, {"name": "c", "image": "x:1"}]}}}}),
            json!({"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {"spec": {
            "containers": [{"name": "d", "image": "z:3"}]}}}}}}),
            json!({"kind": "Cluster", "spec": {"imageName": "pg:17"}}),
        ];
        let got: Vec<String> = rendered_images(&objects).into_iter().collect();
        assert_eq!(got, ["pg:17", "x:1", "y:2", "z:3"]);
    }
}

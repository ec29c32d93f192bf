//! The commands. Each returns the process exit code, or an error message for exit code 2
//! (bad invocation, unreadable file); findings are reported, not returned as errors.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use mxstack_checks::{Finding, Severity, RULES};
use mxstack_spec::{Config, Feature, Secrets, SpecError, Tier, YamlLocator};
use mxstack_topology::Topology;
use serde_json::json;

type CmdResult = Result<ExitCode, String>;

pub(crate) fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("json"));
}

fn secrets_path(config: &Path, given: Option<&Path>) -> PathBuf {
    given.map(Path::to_path_buf).unwrap_or_else(|| {
        config
            .parent()
            .unwrap_or(Path::new("."))
            .join("secrets.yaml")
    })
}

fn spec_finding(e: &SpecError) -> Finding {
    Finding::new("MX-CFG-000", e.message.clone())
        .at(e.location.clone())
        .fix(e.fix.clone())
}

pub(crate) fn report(findings: &[Finding], json: bool, extra: serde_json::Value) -> ExitCode {
    let errors = findings.iter().filter(|f| f.is_error()).count();
    let warnings = findings.len() - errors;
    if json {
        let mut v = json!({ "ok": errors == 0, "errors": errors, "warnings": warnings, "findings": findings });
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        print_json(&v);
    } else {
        for f in findings {
            eprintln!("{f}\n");
        }
        eprintln!("{errors} error(s), {warnings} warning(s)");
    }
    if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

pub(crate) fn load_config(path: &Path) -> Result<(Config, YamlLocator), Box<Finding>> {
    Config::load(path).map_err(|e| Box::new(spec_finding(&e)))
}

pub fn init(
    domain: &str,
    scale: &str,
    features: Option<&str>,
    email: Option<&str>,
    dir: &Path,
    json: bool,
) -> CmdResult {
    let tier: Tier = scale.parse()?;
    let features: BTreeSet<Feature> = match features {
        None => mxstack_spec::default_features(),
        Some(list) => list
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()?,
    };
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let config_path = dir.join("mxstack.yaml");
    let secrets_file = dir.join("secrets.yaml");

    let config_written = if config_path.exists() {
        false
    } else {
        let mut config = Config::new(domain, tier, features);
        if let Some(e) = email {
            config.tls.acme_email = Some(e.to_string());
        }
        let findings: Vec<Finding> =
            mxstack_checks::config::check(&config, &YamlLocator::new("--domain/--email", ""))
                .into_iter()
                .filter(Finding::is_error)
                .collect();
        if !findings.is_empty() {
            return Err(findings
                .iter()
                .map(|f| format!("{}: {}; {}", f.rule, f.message, f.fix))
                .collect::<Vec<_>>()
                .join("\n"));
        }
        let text = format!(
            "# mxstack config: `mxstack schema` describes every key; docs/CONFIG.md explains them.\n# Secrets are not here: they are in secrets.yaml next to this file.\n{}",
            config.to_yaml()
        );
        write_atomic(&config_path, text.as_bytes(), 0o644)
            .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
        true
    };

    // An existing secrets file that does not load is never overwritten: that would lose secrets.
    let mut secrets = if secrets_file.exists() {
        Secrets::load(&secrets_file)
            .map_err(|e| format!("{e}\n(secrets.yaml was left untouched)"))?
    } else {
        Secrets::default()
    };
    let generated = secrets
        .fill_missing()
        .map_err(|e| format!("the OS random source failed: {e}"))?;
    if !generated.is_empty() || !secrets_file.exists() {
        secrets
            .write(&secrets_file)
            .map_err(|e| format!("cannot write {}: {e}", secrets_file.display()))?;
    }
    let generated: Vec<&str> = generated.iter().map(|s| s.key()).collect();
    if json {
        print_json(&json!({
            "config": config_path, "config_written": config_written,
            "secrets": secrets_file, "secrets_generated": generated,
        }));
    } else {
        if config_written {
            println!("wrote {}", config_path.display());
        } else {
            println!("kept existing {}", config_path.display());
        }
        println!(
            "{} ({} secret(s) generated, existing ones kept; mode 0600)",
            secrets_file.display(),
            generated.len()
        );
        println!(
            "next: mxstack plan --config {0}; mxstack render --config {0} --out DIR",
            config_path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp~");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    }
    std::fs::rename(tmp, path)
}

/// `plan --from OLD --config NEW`: every change and what it takes.
pub fn change_plan(old_path: &Path, new_path: &Path, json: bool) -> CmdResult {
    let load = |p: &Path| load_config(p).map_err(|f| f.to_string());
    let (old, _) = load(old_path)?;
    let (new, _) = load(new_path)?;
    let changes = mxstack_topology::change::diff(&Topology::build(&old), &Topology::build(&new));
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "changes": changes })).expect("json")
        );
        return Ok(ExitCode::SUCCESS);
    }
    if changes.is_empty() {
        println!("nothing changes");
    }
    for c in &changes {
        let effect = serde_json::to_value(c.effect).expect("effect");
        println!("{:<20} {}", effect.as_str().unwrap_or_default(), c.what);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn plan(
    config_path: &Path,
    json: bool,
    network_markdown: bool,
    alerts_markdown: bool,
) -> CmdResult {
    let (config, _) = match load_config(config_path) {
        Ok(c) => c,
        Err(f) => return Ok(report(&[*f], json, json!({}))),
    };
    if alerts_markdown {
        print!("{}", alerts_markdown_text(&config));
        return Ok(ExitCode::SUCCESS);
    }
    let t = Topology::build(&config);
    let flows = mxstack_topology::flows::flows(&t);
    if network_markdown {
        let on: Vec<&str> = config.features.iter().map(|f| f.as_str()).collect();
        println!(
            "# Network flows\n\n\
             Generated by `mxstack plan --network-markdown` for features {}. Every row is one \
             flow the NetworkPolicies allow; everything else is denied by `default-deny` (ingress and \
             egress), and every pod may reach the cluster DNS (`allow-dns`); PostgreSQL pods (and MinIO's, in the legacy \
             media mode) may reach the Kubernetes API on 443/6443 for their operators. `kubernetes-api` \
             is any address on those ports: the API server is not a pod, and its address is not \
             known when rendering. The same table drives the rendered NetworkPolicies, so this page cannot disagree with them. A test fails when \
             this file is out of date.\n",
            on.join(", ")
        );
        println!("| from | to | protocol | ports | why |\n|---|---|---|---|---|");
        for f in &flows {
            let ports: Vec<String> = f.ports.iter().map(u16::to_string).collect();
            println!(
                "| {} | {} | {:?} | {} | {} |",
                f.from.as_str(),
                f.to.as_str(),
                f.protocol,
                ports.join(", "),
                f.why
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Only the kinds matter here, so throwaway secrets will do.
    let secrets = Secrets::generate_all().map_err(|e| e.to_string())?;
    let objects: Vec<serde_json::Value> = mxstack_k8s::render(&t, &secrets)
        .objects
        .into_iter()
        .map(|o| o.value)
        .collect();
    let (operators, _) = mxstack_k8s::prerequisites::needed(&objects);
    if json {
        print_json(&json!({
            "prerequisites": operators,
            "tier": t.sizing.tier.as_str(),
            "sizing": t.sizing,
            "workers": t.groups,
            "connection_budget": t.budget,
            "processes_max": t.processes().len(),
            "processes_initial": t.initial_processes().len(),
            "network_flows": flows,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    let s = &t.sizing;
    println!(
        "mxstack plan: {} concurrent users (tier {}), peak ~{} messages/min",
        s.concurrent_users, s.tier, s.messages_per_minute_peak
    );
    println!("\nNodes");
    println!(
        "  {:<18} {:>5} {:>6} {:>8} {:>11}  purpose",
        "role", "count", "vCPU", "RAM GB", "storage GB"
    );
    for n in &s.nodes {
        println!(
            "  {:<18} {:>5} {:>6} {:>8} {:>11}  {} ({})",
            n.role, n.count, n.vcpu, n.ram_gb, n.storage_gb, n.purpose, n.disk
        );
    }
    println!(
        "  {:<18} {:>5} {:>6} {:>8} {:>11}",
        "total", s.total_nodes, s.total_vcpu, s.total_ram_gb, s.total_storage_gb
    );
    println!("\nSynapse processes (main + workers)");
    println!(
        "  {:<24} {:>8} {:>6} {:>8} {:>9} {:>7} {:>7}",
        "group", "replicas", "max", "cpu", "memory", "cp_min", "cp_max"
    );
    let main_pool = t.budget.for_group("main");
    let main_res = s.resources_for(mxstack_spec::Component::SynapseMain, &config);
    println!(
        "  {:<24} {:>8} {:>6} {:>8} {:>9} {:>7} {:>7}",
        "main",
        1,
        1,
        main_res.cpu(),
        main_res.memory(),
        main_pool.cp_min,
        main_pool.cp_max
    );
    for g in &t.groups {
        let pool = t.budget.for_group(&g.name);
        let streams: Vec<&str> = g.streams.iter().map(|s| s.key()).collect();
        println!(
            "  {:<24} {:>8} {:>6} {:>8} {:>9} {:>7} {:>7}  {}",
            g.name,
            g.replicas,
            g.max_replicas,
            g.resources.cpu(),
            g.resources.memory(),
            pool.cp_min,
            pool.cp_max,
            if g.autoscaled() {
                "autoscaled".to_string()
            } else if streams.is_empty() {
                String::new()
            } else {
                format!("writes {}", streams.join(", "))
            }
        );
    }
    let pg = &s.postgres;
    println!(
        "\nPostgreSQL (CloudNativePG): {} instances, synchronous replication",
        pg.instances
    );
    println!("  max_connections {}  shared_buffers {}  effective_cache_size {}  work_mem {}  storage {} + WAL {}",
        t.budget.max_connections, pg.shared_buffers, pg.effective_cache_size, pg.work_mem, pg.storage, pg.wal_storage);
    println!(
        "  connection budget: sum(cp_max x processes) = {} <= {} (85% of {})",
        t.budget.total_cp_max, t.budget.budget, t.budget.max_connections
    );
    println!(
        "\nValkey: {} instances, Sentinel quorum {}, maxmemory {} MiB",
        s.redis.instances, s.redis.sentinel_quorum, s.redis.maxmemory_mib
    );
    println!(
        "Media storage: {}   Router replicas: {}",
        s.media_storage, s.haproxy_replicas
    );
    println!("\nOperators the cluster must run first (minimum; validated against)");
    for n in &operators {
        let o = n.operator;
        let kinds: Vec<&str> = n.kinds.iter().copied().collect();
        println!(
            "  {:<40} >= {:<5} ({})  for {}",
            o.name,
            o.minimum,
            o.validated,
            kinds.join(", ")
        );
    }
    println!("\nNetwork flows (everything else is denied)");
    for f in &flows {
        let ports: Vec<String> = f.ports.iter().map(u16::to_string).collect();
        println!(
            "  {:<14} -> {:<14} {:?} {:<22} {}",
            f.from.as_str(),
            f.to.as_str(),
            f.protocol,
            ports.join(","),
            f.why
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Loads, checks and renders; returns findings and the rendering (None when the config failed).
/// Checks the config and renders it. With `pin` (a lock from `mxstack images build`), the
/// config's images are pinned by digest first (crate images; the renderer never sees the lock):
/// a stale lock refuses the render, and every rendered image left without a digest is a finding.
pub(crate) fn check_and_render(
    config_path: &Path,
    secrets: &Secrets,
    secrets_known: bool,
    pin: Option<&mxstack_images::Lock>,
) -> (Vec<Finding>, Option<mxstack_k8s::Rendered>) {
    let (mut config, locator) = match load_config(config_path) {
        Ok(c) => c,
        Err(f) => return (vec![*f], None),
    };
    if let Some(lock) = pin {
        if let Err(stale) = crate::images::pin_config(&mut config, lock) {
            return (stale, None);
        }
    }
    let mut findings = mxstack_checks::config::check(&config, &locator);
    let t = Topology::build(&config);
    findings.extend(mxstack_checks::topology::check(
        &t,
        &mxstack_k8s::KubernetesAddressing::new(&t.config),
    ));
    if findings.iter().any(Finding::is_error) {
        return (findings, None);
    }
    let rendered = mxstack_k8s::render(&t, secrets);
    let objects: Vec<serde_json::Value> =
        rendered.objects.iter().map(|o| o.value.clone()).collect();
    findings.extend(mxstack_checks::rendered::check(
        &objects,
        if secrets_known { Some(secrets) } else { None },
    ));
    if let Some(lock) = pin {
        findings.extend(crate::images::unpinned(&config, &objects, lock));
    }
    (findings, Some(rendered))
}

/// The complete secrets file for `config` (or the one given), as a finding when it is not.
pub(crate) fn load_secrets(config: &Path, given: Option<&Path>) -> Result<Secrets, Box<Finding>> {
    let sp = secrets_path(config, given);
    Secrets::load(&sp)
        .and_then(|s| s.require_complete(&sp.display().to_string()).map(|_| s))
        .map_err(|e| Box::new(spec_finding(&e)))
}

pub fn check(
    config_path: &Path,
    secrets_arg: Option<&Path>,
    cluster: bool,
    kubeconfig: Option<&Path>,
    json: bool,
) -> CmdResult {
    let sp = secrets_path(config_path, secrets_arg);
    let mut findings = Vec::new();
    let (secrets, known) = if sp.exists() {
        match Secrets::load(&sp) {
            Ok(s) => (s, true),
            Err(e) => {
                findings.push(spec_finding(&e));
                (Secrets::generate_all().map_err(|e| e.to_string())?, false)
            }
        }
    } else {
        findings.push(
            Finding::new(
                "MX-CFG-000",
                format!(
                    "{} does not exist; secret checks ran on throwaway values",
                    sp.display()
                ),
            )
            .fix("run `mxstack init` to generate it")
            .severity_warning(),
        );
        (Secrets::generate_all().map_err(|e| e.to_string())?, false)
    };
    let (more, rendered) = check_and_render(config_path, &secrets, known, None);
    findings.extend(more);
    let objects = rendered.as_ref().map(|r| r.objects.len()).unwrap_or(0);
    let mut extra = json!({ "objects_checked": objects, "rules": RULES.len() });
    if cluster {
        let Some(rendered) = rendered else {
            eprintln!("the cluster was not checked: fix the config errors first");
            return Ok(report(&findings, json, extra));
        };
        let (config, _) = load_config(config_path).map_err(|f| f.to_string())?;
        let (more, seen) = crate::cluster::cluster_findings(
            &rendered,
            config.storage_class.as_deref(),
            kubeconfig,
        )?;
        crate::cluster::print_cluster(&seen, json);
        findings.extend(more);
        extra["cluster"] = seen;
    }
    Ok(report(&findings, json, extra))
}

trait SeverityExt {
    fn severity_warning(self) -> Self;
}
impl SeverityExt for Finding {
    fn severity_warning(mut self) -> Self {
        self.severity = Severity::Warning;
        self
    }
}

pub fn render(
    config_path: &Path,
    secrets_arg: Option<&Path>,
    out: &Path,
    pin: Option<&Path>,
    with_operators: bool,
    json: bool,
) -> CmdResult {
    let lock = match pin {
        Some(p) => Some(mxstack_images::Lock::load(p).map_err(|e| e.to_string())?),
        None => None,
    };
    let secrets = match load_secrets(config_path, secrets_arg) {
        Ok(s) => s,
        Err(f) => return Ok(report(&[*f], json, json!({}))),
    };
    let (findings, rendered) = check_and_render(config_path, &secrets, true, lock.as_ref());
    if findings.iter().any(Finding::is_error) {
        if !json {
            eprintln!("render refused: nothing was written to {}", out.display());
        }
        return Ok(report(&findings, json, json!({ "written": false })));
    }
    let mut rendered = rendered.expect("rendered when no errors");
    // 05-operators holds upstream's files, not rendered objects: the checks above never see them.
    let operators = with_operators.then(|| {
        let objects: Vec<serde_json::Value> =
            rendered.objects.iter().map(|o| o.value.clone()).collect();
        mxstack_k8s::operators::add_phase(&objects, &mut rendered.files)
    });
    write_tree(out, &rendered.files).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    if json {
        let files: Vec<&String> = rendered.files.keys().collect();
        let mut report = json!({ "ok": true, "written": true, "out": out, "objects": rendered.objects.len(), "files": files, "findings": findings });
        if let Some(ops) = &operators {
            report["operators"] = json!(ops);
        }
        print_json(&report);
    } else if let Some(ops) = &operators {
        for f in &findings {
            eprintln!("{f}\n");
        }
        print_operators(out, rendered.objects.len(), rendered.files.len(), ops);
    } else {
        for f in &findings {
            eprintln!("{f}\n");
        }
        println!(
            "wrote {} objects in {} files to {}",
            rendered.objects.len(),
            rendered.files.len(),
            out.display()
        );
        println!("apply with: kubectl apply -k {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The text report of `render --with-operators`: what 05-operators holds on stdout, what must
/// still be installed by hand on stderr, and the apply order.
fn print_operators(
    out: &Path,
    objects: usize,
    files: usize,
    ops: &mxstack_k8s::operators::OperatorsPhase,
) {
    println!(
        "wrote {objects} objects in {files} files to {}",
        out.display()
    );
    println!(
        "{}: the operators this config needs, from pinned upstream releases",
        ops.phase
    );
    for w in &ops.written {
        println!("  {} {}  {}", w.name, w.version, w.path);
    }
    if !ops.install_by_hand.is_empty() {
        eprintln!(
            "not vendored: install these by hand after {} and before the other phases:",
            ops.phase
        );
        for b in &ops.install_by_hand {
            eprintln!("  {} {}:\n    {}", b.name, b.version, b.command);
        }
    }
    println!(
        "apply with: kubectl apply --server-side -k {}, wait for the operators{}, then kubectl apply --server-side -k {}",
        out.join(ops.phase).display(),
        if ops.install_by_hand.is_empty() {
            ""
        } else {
            " (and install the ones above)"
        },
        out.display()
    );
}

const MARKER: &str = ".mxstack-rendered";

/// Writes the whole tree next to OUT first and swaps it in, so a crash never leaves half a tree.
/// An existing OUT is replaced only if mxstack wrote it (or it is empty).
fn write_tree(
    out: &Path,
    files: &std::collections::BTreeMap<String, String>,
) -> std::io::Result<()> {
    if out.exists() {
        let ours = out.join(MARKER).exists();
        let empty = std::fs::read_dir(out)?.next().is_none();
        if !ours && !empty {
            return Err(std::io::Error::other("the directory exists and was not written by mxstack; choose another --out or empty it"));
        }
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let staging = parent.join(format!(
        ".{}.rendering-{}",
        out.file_name().and_then(|n| n.to_str()).unwrap_or("out"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    for (rel, content) in files {
        let p = staging.join(rel);
        std::fs::create_dir_all(p.parent().expect("has parent"))?;
        std::fs::write(&p, content)?;
    }
    std::fs::write(
        staging.join(MARKER),
        "rendered by mxstack; safe to replace with `mxstack render`\n",
    )?;
    if out.exists() {
        std::fs::remove_dir_all(out)?;
    }
    std::fs::rename(&staging, out)
}

pub fn schema(markdown: bool) -> CmdResult {
    let schema = Config::json_schema();
    if markdown {
        print!("{}", crate::schema_doc::markdown(&schema));
    } else {
        print_json(&schema);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn rules(json: bool) -> CmdResult {
    if json {
        print_json(&serde_json::to_value(RULES).expect("rules serialize"));
    } else {
        for r in RULES {
            let sev = if r.severity == Severity::Error {
                "error"
            } else {
                "warning"
            };
            println!(
                "{}  {:<7} {}\n    covers: {}\n    fix: {}",
                r.id, sev, r.title, r.covers, r.fix
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// docs/MONITORING.md: alerts, dashboards and metrics of `config`'s features.
fn alerts_markdown_text(config: &mxstack_spec::Config) -> String {
    mxstack_monitoring::docs::markdown(config)
}

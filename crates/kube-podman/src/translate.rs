//! One pod as podman commands: `podman pod create` for its network namespace (address, host
//! name, DNS), then each init container to completion and each container detached, with the
//! files its volumes hold. Pure: nothing here runs or writes; the caller does (and evaluates
//! the probes, which are returned as data).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{
    Container, EnvVar, PodSecurityContext, PodSpec, Probe as KProbe, SecurityContext, Volume,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::cluster::{Cluster, Pod};
use crate::Error;

/// Where and how the pods run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The podman network the test created.
    pub network: String,
    /// The DNS server serving [`Cluster::dns`] on that network.
    pub dns: Ipv4Addr,
    /// The address `status.hostIP` stands for.
    pub host_ip: Ipv4Addr,
    /// Host directory under which each pod's volumes are made (`<work>/<pod>/...`).
    pub work: PathBuf,
    /// Prefix of every podman object the harness creates (so it stops only its own).
    pub prefix: String,
    /// Image as rendered -> image to run (built locally); an image not listed runs as written.
    pub images: BTreeMap<String, String>,
    /// Open files each container may have: this machine's hard limit (a node usually gives
    /// 1048576; runc cannot give more than the harness has).
    pub nofile: u64,
}

/// A file or directory to make on the host before the pod starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPath {
    pub path: PathBuf,
    /// None: a directory.
    pub content: Option<Vec<u8>>,
    pub mode: u32,
    /// Group owner (the pod's fsGroup), as the kubelet sets it.
    pub gid: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProbeAction {
    Http { port: u16, path: String },
    Tcp { port: u16 },
    Exec { command: Vec<String> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub action: ProbeAction,
    pub initial_delay: u32,
    pub period: u32,
    pub timeout: u32,
    pub failure_threshold: u32,
}

#[derive(Debug, Clone)]
pub struct ContainerRun {
    /// The podman container's name.
    pub name: String,
    /// Arguments of `podman` (`run ...`).
    pub args: Vec<String>,
    /// The env file (mode 0600; it may hold secrets) and its content.
    pub env_file: (PathBuf, String),
    /// runAsNonRoot: the caller checks the user the container really runs as.
    pub non_root: bool,
    pub startup: Option<Probe>,
    pub readiness: Option<Probe>,
    pub liveness: Option<Probe>,
}

#[derive(Debug, Clone)]
pub struct PodRun {
    pub name: String,
    pub ip: Ipv4Addr,
    /// Arguments of `podman` (`pod create ...`).
    pub create: Vec<String>,
    pub host_paths: Vec<HostPath>,
    pub init: Vec<ContainerRun>,
    pub containers: Vec<ContainerRun>,
}

/// Pod-spec fields and what becomes of them. Anything else is refused.
pub const POD_FIELDS: &[(&str, &str)] = &[
    ("containers", "podman containers in the pod"),
    (
        "initContainers",
        "run to completion, in order, before the containers",
    ),
    (
        "volumes",
        "host directories (configMap, secret, emptyDir, persistentVolumeClaim)",
    ),
    (
        "securityContext",
        "runAsUser/runAsGroup -> --user, fsGroup -> --group-add and volume group owner",
    ),
    (
        "automountServiceAccountToken",
        "must be false: there is no API server",
    ),
    ("terminationGracePeriodSeconds", "--stop-timeout"),
    (
        "restartPolicy",
        "Jobs: OnFailure retries the pod up to the Job's backoffLimit",
    ),
    ("affinity", "ignored: one node"),
    ("nodeSelector", "ignored: one node"),
    ("tolerations", "ignored: one node"),
];

/// Container fields and what becomes of them.
pub const CONTAINER_FIELDS: &[(&str, &str)] = &[
    ("name", "<prefix><pod>-<name>"),
    ("image", "--pull never, through Options::images"),
    ("imagePullPolicy", "ignored: images are local"),
    (
        "command",
        "--entrypoint (the image's CMD is dropped, as in Kubernetes)",
    ),
    ("args", "arguments after the image"),
    (
        "env",
        "--env-file (value, secretKeyRef, configMapKeyRef, fieldRef; $(VAR) expanded)",
    ),
    ("ports", "named ports for the probes; the pod's own address"),
    (
        "volumeMounts",
        "-v host:mountPath[:ro], subPath joined to the host path",
    ),
    (
        "securityContext",
        "--user, --read-only --read-only-tmpfs=false, --cap-drop/--cap-add, no-new-privileges",
    ),
    ("readinessProbe", "evaluated by the caller"),
    ("livenessProbe", "evaluated by the caller"),
    ("startupProbe", "evaluated by the caller"),
    (
        "resources",
        "ignored: cgroup limits are not enforced on the test machines",
    ),
    ("workingDir", "--workdir"),
];

fn refuse_unmapped(pod: &str, what: &str, v: &Value, known: &[(&str, &str)]) -> Result<(), Error> {
    for k in v.as_object().into_iter().flat_map(|m| m.keys()) {
        if !known.iter().any(|(f, _)| f == k) {
            return Err(Error::Unmapped {
                pod: pod.into(),
                field: format!("{what}.{k}"),
            });
        }
    }
    Ok(())
}

/// `$(VAR)` as the kubelet expands it: defined variables replaced, `$$` an escaped `$`,
/// anything else left as written.
pub fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) if vars.contains_key(&inner[..end]) => {
                    out.push_str(&vars[&inner[..end]]);
                    rest = &inner[end + 1..];
                }
                _ => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out + rest
}

/// A variable from an optional Secret key that is not there: Kubernetes leaves it unset (the
/// key vault's second key outside a rotation).
fn absent_optional(c: &Cluster, e: &EnvVar) -> bool {
    let Some(r) = e
        .value_from
        .as_ref()
        .and_then(|f| f.secret_key_ref.as_ref())
    else {
        return false;
    };
    r.optional == Some(true)
        && c.secrets
            .get(&r.name)
            .is_none_or(|s| !s.contains_key(&r.key))
}

fn env_value(c: &Cluster, pod: &Pod, opts: &Options, e: &EnvVar) -> Result<String, Error> {
    let missing = |kind, name: &str| Error::Missing {
        pod: pod.name.clone(),
        kind,
        name: name.into(),
    };
    if let Some(v) = &e.value {
        return Ok(v.clone());
    }
    let from = e.value_from.as_ref().ok_or_else(|| Error::Unmapped {
        pod: pod.name.clone(),
        field: format!("env {} without value", e.name),
    })?;
    if let Some(r) = &from.secret_key_ref {
        let s = c
            .secrets
            .get(&r.name)
            .ok_or_else(|| missing("Secret", &r.name))?;
        let v = s.get(&r.key).ok_or_else(|| Error::MissingKey {
            pod: pod.name.clone(),
            kind: "Secret",
            name: r.name.clone(),
            key: r.key.clone(),
        })?;
        return Ok(String::from_utf8_lossy(v).into_owned());
    }
    if let Some(r) = &from.config_map_key_ref {
        let m = c
            .config_maps
            .get(&r.name)
            .ok_or_else(|| missing("ConfigMap", &r.name))?;
        return m.get(&r.key).cloned().ok_or_else(|| Error::MissingKey {
            pod: pod.name.clone(),
            kind: "ConfigMap",
            name: r.name.clone(),
            key: r.key.clone(),
        });
    }
    if let Some(f) = &from.field_ref {
        return match f.field_path.as_str() {
            "status.podIP" => Ok(pod.ip.to_string()),
            "status.hostIP" => Ok(opts.host_ip.to_string()),
            "metadata.name" => Ok(pod.name.clone()),
            "metadata.namespace" => Ok(c.namespace.clone()),
            other => Err(Error::Unmapped {
                pod: pod.name.clone(),
                field: format!("fieldRef {other}"),
            }),
        };
    }
    Err(Error::Unmapped {
        pod: pod.name.clone(),
        field: format!("env {} valueFrom", e.name),
    })
}

fn port_number(pod: &str, c: &Container, p: &IntOrString) -> Result<u16, Error> {
    match p {
        IntOrString::Int(n) => Ok(*n as u16),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name))
            .map(|cp| cp.container_port as u16)
            .ok_or_else(|| Error::Unmapped {
                pod: pod.into(),
                field: format!("probe port `{name}` not declared by {}", c.name),
            }),
    }
}

fn probe(pod: &str, c: &Container, p: &Option<KProbe>) -> Result<Option<Probe>, Error> {
    let Some(p) = p else { return Ok(None) };
    let action = if let Some(h) = &p.http_get {
        ProbeAction::Http {
            port: port_number(pod, c, &h.port)?,
            path: h.path.clone().unwrap_or_else(|| "/".into()),
        }
    } else if let Some(t) = &p.tcp_socket {
        ProbeAction::Tcp {
            port: port_number(pod, c, &t.port)?,
        }
    } else if let Some(e) = &p.exec {
        ProbeAction::Exec {
            command: e.command.clone().unwrap_or_default(),
        }
    } else {
        return Err(Error::Unmapped {
            pod: pod.into(),
            field: format!("{} probe kind", c.name),
        });
    };
    let n = |v: Option<i32>, d: u32| v.map_or(d, |v| v as u32);
    Ok(Some(Probe {
        action,
        initial_delay: n(p.initial_delay_seconds, 0),
        period: n(p.period_seconds, 10),
        timeout: n(p.timeout_seconds, 1),
        failure_threshold: n(p.failure_threshold, 3),
    }))
}

/// The host directory of each volume, and the files to make for it.
fn volumes(
    c: &Cluster,
    pod: &Pod,
    opts: &Options,
    spec: &PodSpec,
) -> Result<(BTreeMap<String, PathBuf>, Vec<HostPath>), Error> {
    let fs_group = spec.security_context.as_ref().and_then(|s| s.fs_group);
    let mut dirs = BTreeMap::new();
    let mut paths = Vec::new();
    let base = opts.work.join(&pod.name);
    let missing = |kind, name: &str| Error::Missing {
        pod: pod.name.clone(),
        kind,
        name: name.into(),
    };
    for v in spec.volumes.iter().flatten() {
        // A claim outlives its pods and may be shared: one directory per claim.
        let dir = match &v.persistent_volume_claim {
            Some(pvc) => opts.work.join("claims").join(&pvc.claim_name),
            None => base.join("volumes").join(&v.name),
        };
        dirs.insert(v.name.clone(), dir.clone());
        let files: Option<Files> = volume_source(c, v, &missing)?;
        match files {
            Some((data, mode, items)) => {
                paths.push(HostPath {
                    path: dir.clone(),
                    content: None,
                    mode: 0o755,
                    gid: fs_group,
                });
                let mode = mode.map_or(0o644, |m| m as u32);
                let pick: Vec<(String, String)> =
                    items.unwrap_or_else(|| data.keys().map(|k| (k.clone(), k.clone())).collect());
                for (key, path) in pick {
                    let bytes = data.get(&key).ok_or_else(|| Error::MissingKey {
                        pod: pod.name.clone(),
                        kind: "volume",
                        name: v.name.clone(),
                        key: key.clone(),
                    })?;
                    paths.push(HostPath {
                        path: dir.join(path),
                        content: Some(bytes.clone()),
                        // With an fsGroup the kubelet makes the files group-readable by it.
                        mode: if fs_group.is_some() {
                            mode | 0o040
                        } else {
                            mode
                        },
                        gid: fs_group,
                    });
                }
            }
            // emptyDir and claims: writable by the pod (the kubelet gives claims to fsGroup).
            None => paths.push(HostPath {
                path: dir,
                content: None,
                mode: if fs_group.is_some() { 0o2775 } else { 0o777 },
                gid: fs_group,
            }),
        }
    }
    Ok((dirs, paths))
}

/// A StatefulSet pod's own claims as tmpfs of the requested size: what a server sizes itself
/// by (SeaweedFS counts its volume slots from the free space) is then the claim's, not this
/// machine's disk. Written data lives in memory, which a proof's few files afford.
fn claim_mounts(pod: &Pod) -> Result<BTreeMap<String, String>, Error> {
    pod.workload
        .claim_templates
        .iter()
        .map(|(name, size)| {
            let bytes = quantity_bytes(size).ok_or_else(|| Error::Unmapped {
                pod: pod.name.clone(),
                field: format!("volumeClaimTemplates {name}: storage `{size}`"),
            })?;
            // U=true: owned by the container's user, which fsGroup's group ownership gives in
            // a cluster (podman 4.3 ignores tmpfs-mode).
            Ok((name.clone(), format!("tmpfs-size={bytes},U=true")))
        })
        .collect()
}

/// A Kubernetes storage quantity (`250Gi`, `10G`, `512Mi`) in bytes.
pub fn quantity_bytes(q: &str) -> Option<u64> {
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (n, unit) = q.split_at(split);
    let n: u64 = n.parse().ok()?;
    let m: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => return None,
    };
    n.checked_mul(m)
}

type Files = (
    BTreeMap<String, Vec<u8>>,
    Option<i32>,
    Option<Vec<(String, String)>>,
);

fn volume_source(
    c: &Cluster,
    v: &Volume,
    missing: &dyn Fn(&'static str, &str) -> Error,
) -> Result<Option<Files>, Error> {
    if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let data = c
            .secrets
            .get(&name)
            .ok_or_else(|| missing("Secret", &name))?;
        let items = s
            .items
            .as_ref()
            .map(|i| i.iter().map(|k| (k.key.clone(), k.path.clone())).collect());
        return Ok(Some((data.clone(), s.default_mode, items)));
    }
    if let Some(m) = &v.config_map {
        let data = c
            .config_maps
            .get(&m.name)
            .ok_or_else(|| missing("ConfigMap", &m.name))?;
        let data = data
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect();
        let items = m
            .items
            .as_ref()
            .map(|i| i.iter().map(|k| (k.key.clone(), k.path.clone())).collect());
        return Ok(Some((data, m.default_mode, items)));
    }
    if v.empty_dir.is_some() || v.persistent_volume_claim.is_some() {
        return Ok(None);
    }
    Err(missing("volume source", &v.name))
}

fn security(
    pod: &str,
    psc: Option<&PodSecurityContext>,
    sc: Option<&SecurityContext>,
) -> Result<(Vec<String>, bool), Error> {
    let mut args = Vec::new();
    let uid = sc
        .and_then(|s| s.run_as_user)
        .or(psc.and_then(|p| p.run_as_user));
    let gid = sc
        .and_then(|s| s.run_as_group)
        .or(psc.and_then(|p| p.run_as_group));
    match (uid, gid) {
        (Some(u), Some(g)) => args.push(format!("--user={u}:{g}")),
        (Some(u), None) => args.push(format!("--user={u}")),
        (None, Some(_)) => {
            return Err(Error::Unmapped {
                pod: pod.into(),
                field: "runAsGroup without runAsUser".into(),
            })
        }
        (None, None) => {}
    }
    if let Some(g) = psc.and_then(|p| p.fs_group) {
        args.push(format!("--group-add={g}"));
    }
    if psc.and_then(|p| p.supplemental_groups.as_ref()).is_some() {
        return Err(Error::Unmapped {
            pod: pod.into(),
            field: "securityContext.supplementalGroups".into(),
        });
    }
    let non_root = sc
        .and_then(|s| s.run_as_non_root)
        .or(psc.and_then(|p| p.run_as_non_root))
        .unwrap_or(false);
    if let Some(sc) = sc {
        if sc.privileged == Some(true) {
            return Err(Error::Unmapped {
                pod: pod.into(),
                field: "privileged".into(),
            });
        }
        if sc.read_only_root_filesystem == Some(true) {
            // Podman would otherwise mount tmpfs on /tmp, /run and /var/tmp, which Kubernetes
            // does not: a pod that writes there without an emptyDir must fail here too.
            args.extend(["--read-only".into(), "--read-only-tmpfs=false".into()]);
        }
        if sc.allow_privilege_escalation == Some(false) {
            args.push("--security-opt=no-new-privileges".into());
        }
        if let Some(caps) = &sc.capabilities {
            for d in caps.drop.iter().flatten() {
                args.push(format!("--cap-drop={}", d.to_lowercase()));
            }
            for a in caps.add.iter().flatten() {
                args.push(format!("--cap-add={}", a.to_lowercase()));
            }
        }
    }
    Ok((args, non_root))
}

fn container(
    c: &Cluster,
    pod: &Pod,
    opts: &Options,
    spec: &PodSpec,
    k: &Container,
    dirs: &BTreeMap<String, PathBuf>,
) -> Result<ContainerRun, Error> {
    let raw = serde_json::to_value(k).expect("a container serialises");
    refuse_unmapped(&pod.name, "container", &raw, CONTAINER_FIELDS)?;
    let name = format!("{}{}-{}", opts.prefix, pod.name, k.name);
    let mut vars = BTreeMap::new();
    let mut env = String::new();
    for e in k.env.iter().flatten().filter(|e| !absent_optional(c, e)) {
        let v = expand(&env_value(c, pod, opts, e)?, &vars);
        if v.contains('\n') {
            return Err(Error::Unmapped {
                pod: pod.name.clone(),
                field: format!("env {}: a multi-line value", e.name),
            });
        }
        env.push_str(&format!("{}={v}\n", e.name));
        vars.insert(e.name.clone(), v);
    }
    let env_path = opts.work.join(&pod.name).join(format!("{}.env", k.name));
    let mut args: Vec<String> = vec![
        "run".into(),
        format!("--name={name}"),
        format!("--pod={}{}", opts.prefix, pod.name),
        "--pull=never".into(),
        format!("--env-file={}", env_path.display()),
        format!("--ulimit=nofile={0}:{0}", opts.nofile),
        // An explicit --ulimit drops containers.conf's defaults, so nproc is given too: runc
        // here refuses values near the harness's own hard limit; 16384 is plenty (it counts
        // the threads of one user id across every container).
        format!(
            "--ulimit=nproc={0}:{0}",
            hard_limit("Max processes").unwrap_or(1024).min(16384)
        ),
    ];
    let (sec, non_root) = security(
        &pod.name,
        spec.security_context.as_ref(),
        k.security_context.as_ref(),
    )?;
    args.extend(sec);
    if let Some(g) = spec.termination_grace_period_seconds {
        args.push(format!("--stop-timeout={g}"));
    }
    if let Some(w) = &k.working_dir {
        args.push(format!("--workdir={w}"));
    }
    let claims = claim_mounts(pod)?;
    for m in k.volume_mounts.iter().flatten() {
        if let Some(opts) = claims.get(&m.name) {
            if m.sub_path.is_some() {
                return Err(Error::Unmapped {
                    pod: pod.name.clone(),
                    field: format!("subPath on claim {}", m.name),
                });
            }
            args.push(format!(
                "--mount=type=tmpfs,destination={},{opts}",
                m.mount_path
            ));
            continue;
        }
        let dir = dirs.get(&m.name).ok_or_else(|| Error::Missing {
            pod: pod.name.clone(),
            kind: "volume",
            name: m.name.clone(),
        })?;
        let host = match &m.sub_path {
            Some(sub) => dir.join(sub),
            None => dir.clone(),
        };
        let ro = if m.read_only == Some(true) { ":ro" } else { "" };
        args.push(format!("--volume={}:{}{ro}", host.display(), m.mount_path));
    }
    if let Some(cmd) = &k.command {
        let cmd: Vec<String> = cmd.iter().map(|a| expand(a, &vars)).collect();
        args.push(format!(
            "--entrypoint={}",
            serde_json::to_string(&cmd).expect("json")
        ));
    }
    let image = k.image.clone().unwrap_or_default();
    args.push(opts.images.get(&image).cloned().unwrap_or(image));
    args.extend(k.args.iter().flatten().map(|a| expand(a, &vars)));
    Ok(ContainerRun {
        name,
        args,
        env_file: (env_path, env),
        non_root,
        startup: probe(&pod.name, k, &k.startup_probe)?,
        readiness: probe(&pod.name, k, &k.readiness_probe)?,
        liveness: probe(&pod.name, k, &k.liveness_probe)?,
    })
}

/// `podman pod create` for a pod: its address, host name and the cluster's DNS with the
/// search path a pod of `namespace` gets.
pub fn pod_create(
    name: &str,
    ip: Ipv4Addr,
    hostname: &str,
    namespace: &str,
    opts: &Options,
) -> Vec<String> {
    let mut create = vec![
        "pod".into(),
        "create".into(),
        format!("--name={name}"),
        format!("--network={}", opts.network),
        format!("--ip={ip}"),
        format!("--hostname={hostname}"),
        format!("--dns={}", opts.dns),
    ];
    for search in [
        format!("{namespace}.svc.cluster.local"),
        "svc.cluster.local".into(),
        "cluster.local".into(),
    ] {
        create.push(format!("--dns-search={search}"));
    }
    create
}

/// One pod as podman commands and host files.
pub fn pod(c: &Cluster, p: &Pod, opts: &Options) -> Result<PodRun, Error> {
    let spec = p.workload.template.spec.clone().unwrap_or_default();
    let raw = serde_json::to_value(&spec).expect("a pod spec serialises");
    refuse_unmapped(&p.name, "pod", &raw, POD_FIELDS)?;
    if spec.automount_service_account_token != Some(false) {
        return Err(Error::Unmapped {
            pod: p.name.clone(),
            field: "a service account token (no API server here)".into(),
        });
    }
    let (dirs, host_paths) = volumes(c, p, opts, &spec)?;
    let create = pod_create(
        &format!("{}{}", opts.prefix, p.name),
        p.ip,
        &p.name,
        &c.namespace,
        opts,
    );
    let run = |k: &Container| container(c, p, opts, &spec, k, &dirs);
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(run)
        .collect::<Result<Vec<_>, _>>()?;
    let containers = spec.containers.iter().map(run).collect::<Result<_, _>>()?;
    Ok(PodRun {
        name: format!("{}{}", opts.prefix, p.name),
        ip: p.ip,
        create,
        host_paths,
        init,
        containers,
    })
}

/// This process's hard limit of open files (what containers it starts may have at most).
pub fn hard_nofile() -> u64 {
    hard_limit("Max open files").unwrap_or(1024)
}

/// A hard limit of this process, by its name in /proc/self/limits (None: unlimited or unknown).
fn hard_limit(name: &str) -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with(name))?;
    let hard = line[name.len()..].split_whitespace().nth(1)?;
    hard.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_quantities_in_bytes() {
        assert_eq!(quantity_bytes("250Gi"), Some(250 << 30));
        assert_eq!(quantity_bytes("10G"), Some(10_000_000_000));
        assert_eq!(quantity_bytes("1.5Gi"), None);
    }

    #[test]
    fn variables_expand_as_the_kubelet_does() {
        let vars: BTreeMap<String, String> = [("A".to_string(), "x".to_string())].into();
        assert_eq!(expand("--a=$(A)", &vars), "--a=x");
        assert_eq!(expand("$(B) $$(A) $", &vars), "$(B) $(A) $");
        assert_eq!(expand("$(A)$(A)", &vars), "xx");
    }
}

//! A CloudNativePG stand-in for the run-proof (no operator can run without an API server): for
//! each rendered `Cluster`, one PostgreSQL container that bootstraps as the operator would
//! (initdb owner and database from `bootstrap.initdb`, its post-init SQL, the managed roles
//! with their password Secrets, the `Database` objects, `<cluster>-superuser` when superuser
//! access is on) and answers under the `<cluster>-rw`/`-r`/`-ro` names. Memory settings are
//! capped for one test machine; everything else in `postgresql.parameters` is applied.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::Value;

use crate::cluster::Cluster;
use crate::translate::{self, ContainerRun, HostPath, Options, PodRun, Probe, ProbeAction};

/// Parameters sized for a production node, capped on one test machine.
const CAPPED: [(&str, &str); 4] = [
    ("shared_buffers", "128MB"),
    ("effective_cache_size", "512MB"),
    ("maintenance_work_mem", "64MB"),
    ("work_mem", "4MB"),
];

/// One rendered `Cluster` and the objects that belong to it.
#[derive(Debug, Clone)]
pub struct PgCluster {
    pub name: String,
    pub spec: Value,
    /// `Database` objects naming this cluster.
    pub databases: Vec<Value>,
}

/// The `Cluster` objects (and their `Database`s) among the rendered ones.
pub fn clusters(objects: &[Value]) -> Vec<PgCluster> {
    let mut out: Vec<PgCluster> = objects
        .iter()
        .filter(|o| o["kind"] == "Cluster" && o["apiVersion"] == "postgresql.cnpg.io/v1")
        .map(|o| PgCluster {
            name: o["metadata"]["name"].as_str().unwrap_or_default().into(),
            spec: o["spec"].clone(),
            databases: vec![],
        })
        .collect();
    for d in objects.iter().filter(|o| o["kind"] == "Database") {
        if let Some(c) = out
            .iter_mut()
            .find(|c| d["spec"]["cluster"]["name"] == c.name.as_str())
        {
            c.databases.push(d["spec"].clone());
        }
    }
    out
}

fn sql_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

impl PgCluster {
    /// The Secret CloudNativePG would create for the superuser, if the Cluster asks for it.
    pub fn superuser_secret(&self, password: &str) -> Option<(String, BTreeMap<String, Vec<u8>>)> {
        (self.spec["enableSuperuserAccess"] == true).then(|| {
            (
                format!("{}-superuser", self.name),
                [
                    ("username".to_string(), b"postgres".to_vec()),
                    ("password".to_string(), password.as_bytes().to_vec()),
                ]
                .into(),
            )
        })
    }

    /// The names its Services answer to.
    pub fn service_names(&self, namespace: &str) -> Vec<String> {
        ["rw", "r", "ro"]
            .iter()
            .map(|s| format!("{}-{s}.{namespace}.svc.cluster.local", self.name))
            .collect()
    }

    /// `(env, role statements)`: each password comes from the environment (psql variables),
    /// never written into the script.
    fn roles(&self, c: &Cluster) -> (Vec<(String, String)>, String) {
        let mut env = Vec::new();
        let mut sql = String::new();
        let init = &self.spec["bootstrap"]["initdb"];
        let secret = |name: &str| -> String {
            c.secrets
                .get(name)
                .and_then(|s| s.get("password"))
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .unwrap_or_default()
        };
        let owner = init["owner"].as_str().unwrap_or("app");
        env.push((
            "PW_OWNER".into(),
            secret(init["secret"]["name"].as_str().unwrap_or_default()),
        ));
        sql += &format!(
            "CREATE ROLE {} LOGIN PASSWORD :'pw_owner';\n",
            sql_ident(owner)
        );
        for (i, r) in self.spec["managed"]["roles"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let name = r["name"].as_str().unwrap_or_default();
            let var = format!("pw_role{i}");
            env.push((
                var.to_uppercase(),
                secret(r["passwordSecret"]["name"].as_str().unwrap_or_default()),
            ));
            let flag = |k: &str, yes: &str, no: &str| -> String {
                if r[k] == true {
                    yes.into()
                } else {
                    no.into()
                }
            };
            let attrs = [
                flag("login", "LOGIN", "NOLOGIN"),
                flag("superuser", "SUPERUSER", "NOSUPERUSER"),
                flag("replication", "REPLICATION", "NOREPLICATION"),
                flag("createdb", "CREATEDB", "NOCREATEDB"),
                flag("createrole", "CREATEROLE", "NOCREATEROLE"),
            ]
            .join(" ");
            let create = if name == owner { "ALTER" } else { "CREATE" };
            sql += &format!(
                "{create} ROLE {} {attrs} PASSWORD :'{var}';\n",
                sql_ident(name)
            );
            for g in r["inRoles"].as_array().into_iter().flatten() {
                sql += &format!(
                    "GRANT {} TO {};\n",
                    sql_ident(g.as_str().unwrap_or_default()),
                    sql_ident(name)
                );
            }
        }
        (env, sql)
    }

    /// The stand-in's pod: one PostgreSQL container with its bootstrap script.
    pub fn pod(
        &self,
        c: &Cluster,
        ip: Ipv4Addr,
        image: &str,
        superuser_password: &str,
        opts: &Options,
    ) -> PodRun {
        let pod = format!("{}-1", self.name);
        let dir = opts.work.join(&pod);
        let init = &self.spec["bootstrap"]["initdb"];
        let db = init["database"].as_str().unwrap_or("app");
        let owner = init["owner"].as_str().unwrap_or("app");
        let (mut env, roles) = self.roles(c);
        env.push(("PW_SUPERUSER".into(), superuser_password.into()));
        let mut conf = String::from("listen_addresses = '*'\n");
        for (k, v) in self.spec["postgresql"]["parameters"]
            .as_object()
            .into_iter()
            .flatten()
        {
            let v = CAPPED
                .iter()
                .find(|(c, _)| c == k)
                .map_or(v.as_str().unwrap_or_default(), |(_, cap)| cap);
            conf += &format!("{k} = '{v}'\n");
        }
        let mut setup = format!(
            "{roles}CREATE DATABASE {} OWNER {} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;\n",
            sql_ident(db),
            sql_ident(owner)
        );
        for d in &self.databases {
            setup += &format!(
                "CREATE DATABASE {} OWNER {} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;\n",
                sql_ident(d["name"].as_str().unwrap_or_default()),
                sql_ident(d["owner"].as_str().unwrap_or_default())
            );
        }
        let mut post_init = String::new();
        for r in init["postInitApplicationSQLRefs"]["configMapRefs"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let text = c
                .config_maps
                .get(r["name"].as_str().unwrap_or_default())
                .and_then(|m| m.get(r["key"].as_str().unwrap_or_default()));
            post_init += text.map_or("", |s| s.as_str());
            post_init.push('\n');
        }
        let psql_vars: String = env
            .iter()
            .filter(|(k, _)| k != "PW_SUPERUSER")
            .map(|(k, _)| format!(" -v {}=\"${k}\"", k.to_lowercase()))
            .collect();
        let script = format!(
            r#"set -eu
D=/pg/data
if [ ! -s "$D/PG_VERSION" ]; then
  printf '%s' "$PW_SUPERUSER" > /pg/pw
  initdb -D "$D" -U postgres --pwfile=/pg/pw --encoding=UTF8 --locale=C --auth=scram-sha-256
  rm /pg/pw
  cat /pg/boot/postgresql.conf >> "$D/postgresql.conf"
  echo 'host all all 0.0.0.0/0 scram-sha-256' >> "$D/pg_hba.conf"
  echo 'host replication all 0.0.0.0/0 scram-sha-256' >> "$D/pg_hba.conf"
  pg_ctl -D "$D" -w -o "-c listen_addresses='' -k /pg" start
  export PGPASSWORD="$PW_SUPERUSER"
  psql -h /pg -U postgres -d postgres -v ON_ERROR_STOP=1{psql_vars} -f /pg/boot/setup.sql
  psql -h /pg -U postgres -d {db} -v ON_ERROR_STOP=1 -f /pg/boot/post-init.sql
  pg_ctl -D "$D" -w -m fast stop
fi
exec postgres -D "$D" -k /pg
"#,
            db = sql_ident(db)
        );
        let boot = dir.join("volumes/boot");
        let file = |name: &str, text: &str| HostPath {
            path: boot.join(name),
            content: Some(text.as_bytes().to_vec()),
            mode: 0o644,
            gid: None,
        };
        let host_paths = vec![
            HostPath {
                path: boot.clone(),
                content: None,
                mode: 0o755,
                gid: None,
            },
            file("start.sh", &script),
            file("postgresql.conf", &conf),
            file("setup.sql", &setup),
            file("post-init.sql", &post_init),
            HostPath {
                path: dir.join("volumes/pg"),
                content: None,
                mode: 0o777,
                gid: None,
            },
        ];
        let name = format!("{}{pod}-postgres", opts.prefix);
        let env_path = dir.join("postgres.env");
        let env_text: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        let args = vec![
            "run".into(),
            format!("--name={name}"),
            format!("--pod={}{pod}", opts.prefix),
            "--pull=never".into(),
            format!("--env-file={}", env_path.display()),
            format!("--volume={}:/pg/boot:ro", boot.display()),
            format!("--volume={}:/pg", dir.join("volumes/pg").display()),
            image.into(),
            "sh".into(),
            "/pg/boot/start.sh".into(),
        ];
        let ready = Probe {
            action: ProbeAction::Tcp { port: 5432 },
            initial_delay: 0,
            period: 1,
            timeout: 1,
            failure_threshold: 120,
        };
        PodRun {
            name: format!("{}{pod}", opts.prefix),
            ip,
            // The LI cluster subscribes to main's by its Service name: the same DNS as pods.
            create: translate::pod_create(
                &format!("{}{pod}", opts.prefix),
                ip,
                &pod,
                &c.namespace,
                opts,
            ),
            host_paths,
            init: vec![],
            containers: vec![ContainerRun {
                name,
                args,
                env_file: (env_path, env_text),
                non_root: true,
                startup: None,
                readiness: Some(ready),
                liveness: None,
            }],
        }
    }
}

/// The stand-in's image, built from `base` (the lock's Debian base) when missing, and tagged by
/// a hash of its Containerfile and base so that a change rebuilds it.
pub fn image(base: &str) -> Result<String, mxstack_images::Error> {
    const CONTAINERFILE: &str = include_str!("../images/postgres/Containerfile");
    let tag = mxstack_images::sha256_hex(format!("{base}\0{CONTAINERFILE}").as_bytes());
    let image = format!("localhost/mxstack-run-proof/postgres:{}", &tag[..12]);
    let dir = std::env::temp_dir().join(format!("mxstack-run-proof-{}", &tag[..12]));
    let tools = mxstack_images::tools::Tools::in_dir(&dir)?;
    if tools.image_exists(&image) {
        return Ok(image);
    }
    let file = dir.join("Containerfile");
    std::fs::write(&file, CONTAINERFILE).map_err(|source| mxstack_images::Error::Io {
        path: file.clone(),
        source,
    })?;
    let mut cmd = tools.command("podman");
    cmd.args(["build", "--network=host", "-t", &image, "-f"])
        .arg(&file)
        .arg("--build-arg")
        .arg(format!("BASE={base}"))
        .arg(&dir);
    tools.run(cmd, "building the PostgreSQL stand-in", None)?;
    Ok(image)
}

//! Server-side apply of one object, and what it changed.

use std::time::{Duration, Instant};

use kube::api::{DeleteParams, Patch, PatchParams};
use serde::Serialize;
use serde_json::Value;

use crate::{Cluster, Error, Item, FIELD_MANAGER};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Created,
    Configured,
    Unchanged,
}

impl Change {
    pub fn word(self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Configured => "configured",
            Change::Unchanged => "unchanged",
        }
    }
}

/// The outcome of applying one object.
#[derive(Debug, Clone)]
pub struct Applied {
    pub change: Change,
    /// What changed, one line per field (`~ .spec.replicas: 2 -> 3`); Secret values hidden.
    pub diff: Vec<String>,
    /// The object as the server now holds it (as it would, under dry run).
    pub object: Value,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ApplyOptions {
    pub dry_run: bool,
    pub force_conflicts: bool,
}

/// Applies `item` (field manager `mxstack`) and reports whether the server changed anything.
pub async fn apply(cluster: &Cluster, item: &Item, opts: ApplyOptions) -> Result<Applied, Error> {
    let served = cluster.require(&item.api_version, &item.kind).await?;
    let api = cluster.api_for(&served, item.namespace.as_deref());
    let id = item.id();
    let live = api
        .get_opt(&item.name)
        .await
        .map_err(|e| cluster.error(&served, &id, "get", e))?
        .map(|o| serde_json::to_value(o).expect("objects serialize"));
    let mut params = PatchParams::apply(FIELD_MANAGER);
    params.force = opts.force_conflicts;
    params.dry_run = opts.dry_run;
    let result = api
        .patch(&item.name, &params, &Patch::Apply(&item.value))
        .await
        .map_err(|e| cluster.error(&served, &id, "patch", e))?;
    let object = serde_json::to_value(result).expect("objects serialize");
    let diff = match &live {
        None => Vec::new(),
        Some(l) => diff(&content(l), &content(&object), item.is_secret()),
    };
    let change = match &live {
        None => Change::Created,
        // The server keeps the resourceVersion when an apply changes nothing; under dry run
        // it never moves, so the content decides.
        Some(l)
            if !opts.dry_run
                && l["metadata"]["resourceVersion"] != object["metadata"]["resourceVersion"] =>
        {
            Change::Configured
        }
        Some(_) if opts.dry_run && !diff.is_empty() => Change::Configured,
        Some(_) => Change::Unchanged,
    };
    Ok(Applied {
        change,
        diff,
        object,
    })
}

/// Deletes `item` (its pods with it), waits until it is gone, and applies it again. Under dry
/// run only says what would happen.
pub async fn replace(
    cluster: &Cluster,
    item: &Item,
    opts: ApplyOptions,
    timeout: Duration,
) -> Result<Applied, Error> {
    let served = cluster.require(&item.api_version, &item.kind).await?;
    let api = cluster.api_for(&served, item.namespace.as_deref());
    let id = item.id();
    if opts.dry_run {
        return Ok(Applied {
            change: Change::Configured,
            diff: vec!["(replaced: its template cannot change in place)".into()],
            object: item.value.clone(),
        });
    }
    api.delete(&item.name, &DeleteParams::background())
        .await
        .map_err(|e| cluster.error(&served, &id, "delete", e))?;
    let start = Instant::now();
    while api
        .get_opt(&item.name)
        .await
        .map_err(|e| cluster.error(&served, &id, "get", e))?
        .is_some()
    {
        if start.elapsed() > timeout {
            return Err(Error::Failed {
                object: id,
                message: "deleted to be replaced, but still there".into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut a = apply(cluster, item, opts).await?;
    a.change = Change::Configured;
    a.diff = vec!["(replaced: its template cannot change in place)".into()];
    Ok(a)
}

/// An object without the server's bookkeeping and status: what an apply can change.
pub fn content(o: &Value) -> Value {
    let mut o = o.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in [
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "managedFields",
            "selfLink",
        ] {
            m.remove(f);
        }
    }
    if let Some(m) = o.as_object_mut() {
        m.remove("status");
    }
    o
}

/// Field-by-field differences from `old` to `new`, values under a Secret's `data`/`stringData`
/// replaced by "(hidden)".
pub fn diff(old: &Value, new: &Value, secret: bool) -> Vec<String> {
    let mut out = Vec::new();
    walk("", old, new, secret, &mut out);
    out
}

fn walk(path: &str, old: &Value, new: &Value, secret: bool, out: &mut Vec<String>) {
    if old == new {
        return;
    }
    if let (Value::Object(a), Value::Object(b)) = (old, new) {
        for (k, v) in a {
            let p = format!("{path}.{k}");
            match b.get(k) {
                Some(w) => walk(&p, v, w, secret, out),
                None => out.push(format!("- {p}")),
            }
        }
        for (k, w) in b.iter().filter(|(k, _)| !a.contains_key(*k)) {
            out.push(format!(
                "+ {path}.{k}: {}",
                shown(&format!("{path}.{k}"), w, secret)
            ));
        }
        return;
    }
    // Lists element by element: a changed port shows as `.spec.ports[1].port`, not the list.
    if let (Value::Array(a), Value::Array(b)) = (old, new) {
        for n in 0..a.len().max(b.len()) {
            let p = format!("{path}[{n}]");
            match (a.get(n), b.get(n)) {
                (Some(v), Some(w)) => walk(&p, v, w, secret, out),
                (Some(_), None) => out.push(format!("- {p}")),
                (None, Some(w)) => out.push(format!("+ {p}: {}", shown(&p, w, secret))),
                (None, None) => {}
            }
        }
        return;
    }
    out.push(format!(
        "~ {path}: {} -> {}",
        shown(path, old, secret),
        shown(path, new, secret)
    ));
}

fn shown(path: &str, v: &Value, secret: bool) -> String {
    if secret && (path.starts_with(".data") || path.starts_with(".stringData")) {
        return "(hidden)".into();
    }
    let s = v.to_string();
    if s.len() > 120 {
        format!(
            "{}... ({} bytes)",
            &s[..s.floor_char_boundary(100)],
            s.len()
        )
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_diff_names_each_field_and_hides_secret_values() {
        let old = json!({"spec": {"replicas": 2, "gone": 1, "ports": [{"port": 80}]}, "data": {"k": "c2VjcmV0"}});
        let new = json!({"spec": {"replicas": 3, "added": true, "ports": [{"port": 81}, {"port": 9}]}, "data": {"k": "bmV3"}});
        let d = diff(&old, &new, true);
        assert_eq!(
            d,
            vec![
                "~ .spec.replicas: 2 -> 3",
                "- .spec.gone",
                "~ .spec.ports[0].port: 80 -> 81",
                "+ .spec.ports[1]: {\"port\":9}",
                "+ .spec.added: true",
                "~ .data.k: (hidden) -> (hidden)"
            ]
        );
        let shown = diff(&old, &new, false).join("\n");
        assert!(shown.contains("c2VjcmV0"), "only Secrets are hidden");
    }

    #[test]
    fn bookkeeping_and_status_are_not_content() {
        let a = json!({"metadata": {"name": "x", "resourceVersion": "1", "uid": "u"}, "status": {"a": 1}});
        let b = json!({"metadata": {"name": "x", "resourceVersion": "9"}});
        assert!(diff(&content(&a), &content(&b), false).is_empty());
    }
}

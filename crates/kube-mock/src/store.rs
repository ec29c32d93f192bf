//! The objects, and the verbs on them: server-side apply, get, list, delete.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::resources::Target;
use crate::{controller, status_value, Inner};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Key {
    pub api_version: String,
    pub kind: String,
    /// "" for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn of(o: &Value) -> Key {
        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
        Key {
            api_version: s(&o["apiVersion"]),
            kind: s(&o["kind"]),
            namespace: s(&o["metadata"]["namespace"]),
            name: s(&o["metadata"]["name"]),
        }
    }
}

#[derive(Default)]
pub(crate) struct Store {
    objects: BTreeMap<Key, Value>,
    revision: u64,
}

impl Store {
    /// Stores `o` with a new resourceVersion (and uid on creation).
    pub fn put(&mut self, key: Key, mut o: Value, bump_generation: bool) -> Value {
        self.revision += 1;
        let old_meta = self.objects.get(&key).map(|v| v["metadata"].clone());
        let m = &mut o["metadata"];
        m["resourceVersion"] = json!(self.revision.to_string());
        match old_meta {
            Some(old) => {
                m["uid"] = old["uid"].clone();
                m["creationTimestamp"] = old["creationTimestamp"].clone();
                let g = old["generation"].as_u64().unwrap_or(1);
                m["generation"] = json!(if bump_generation { g + 1 } else { g });
            }
            None => {
                m["uid"] = json!(format!("00000000-0000-0000-0000-{:012}", self.revision));
                m["creationTimestamp"] = json!("2026-12-05T12:00:00Z");
                m["generation"] = json!(1);
            }
        }
        self.objects.insert(key, o.clone());
        o
    }

    pub fn find(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<&Value> {
        self.objects
            .iter()
            .find(|(k, _)| {
                k.kind == kind && k.name == name && namespace.is_none_or(|n| k.namespace == n)
            })
            .map(|(_, v)| v)
    }

    pub fn all(&self) -> impl Iterator<Item = &Value> {
        self.objects.values()
    }
}

fn key(t: &Target, name: &str) -> Key {
    Key {
        api_version: t.res.api_version(),
        kind: t.res.kind.clone(),
        namespace: t.namespace.clone().unwrap_or_default(),
        name: name.to_string(),
    }
}

fn not_found(t: &Target, name: &str) -> (StatusCode, Value) {
    status_value(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{} \"{name}\" not found", t.resource_name()),
    )
}

pub(crate) fn get(i: &mut Inner, t: &Target) -> (StatusCode, Value) {
    let name = t.name.clone().unwrap_or_default();
    let k = key(t, &name);
    let Some(o) = i.store.objects.get(&k).cloned() else {
        return not_found(t, &name);
    };
    let reads = i.reads.entry(k).or_default();
    *reads += 1;
    let reads = *reads;
    let b = i.behaviours.get(&(t.res.kind.clone(), name)).cloned();
    (StatusCode::OK, controller::observe(o, b.as_ref(), reads))
}

pub(crate) fn list(
    i: &mut Inner,
    t: &Target,
    query: &BTreeMap<String, String>,
) -> (StatusCode, Value) {
    let labels = query.get("labelSelector").cloned().unwrap_or_default();
    let items: Vec<Value> = i
        .store
        .objects
        .iter()
        .filter(|(k, _)| k.api_version == t.res.api_version() && k.kind == t.res.kind)
        .filter(|(k, _)| t.namespace.as_ref().is_none_or(|n| &k.namespace == n))
        .filter(|(_, o)| label_match(&o["metadata"]["labels"], &labels))
        .map(|(k, o)| {
            let b = i.behaviours.get(&(k.kind.clone(), k.name.clone()));
            controller::observe(o.clone(), b, u32::MAX)
        })
        .collect();
    let rv = i.store.revision.to_string();
    (
        StatusCode::OK,
        json!({"apiVersion": t.res.api_version(), "kind": format!("{}List", t.res.kind),
               "metadata": {"resourceVersion": rv}, "items": items}),
    )
}

pub(crate) fn delete(i: &mut Inner, t: &Target) -> (StatusCode, Value) {
    let name = t.name.clone().unwrap_or_default();
    if i.store.objects.remove(&key(t, &name)).is_none() {
        return not_found(t, &name);
    }
    (
        StatusCode::OK,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
               "details": {"name": name, "kind": t.res.plural}}),
    )
}

/// The parts of an object an apply can change (not the server's bookkeeping, not status).
fn content(o: &Value) -> Value {
    let mut o = o.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in [
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "managedFields",
        ] {
            m.remove(f);
        }
    }
    if let Some(m) = o.as_object_mut() {
        m.remove("status");
    }
    o
}

pub(crate) fn apply(
    i: &mut Inner,
    t: &Target,
    query: &BTreeMap<String, String>,
    body: &[u8],
) -> (StatusCode, Value) {
    let bad = |m: &str| status_value(StatusCode::BAD_REQUEST, "BadRequest", m);
    let Some(manager) = query.get("fieldManager") else {
        return bad("PATCH /apply requires fieldManager to be set");
    };
    let Ok(mut o) = serde_json::from_slice::<Value>(body) else {
        return bad("the body of the request was in an unknown format");
    };
    let name = t.name.clone().unwrap_or_default();
    if o["kind"] != t.res.kind.as_str() || o["metadata"]["name"] != name.as_str() {
        return bad("the kind and name of the object do not match the URL");
    }
    if let Some(ns) = &t.namespace {
        o["metadata"]["namespace"] = json!(ns);
    }
    let force = query.get("force").is_some_and(|v| v == "true");
    let dry_run = query.get("dryRun").is_some_and(|v| v == "All");
    let k = key(t, &name);
    let existing = i.store.objects.get(&k).cloned();
    if let Some(conflict) = conflicts(i, t, &name, &o, existing.as_ref(), force) {
        return status_value(StatusCode::CONFLICT, "Conflict", &conflict);
    }
    if force && !dry_run {
        i.claims
            .retain(|(kind, n, _, _)| !(kind == &t.res.kind && n == &name));
    }
    o["metadata"]["managedFields"] =
        json!([{"manager": manager, "operation": "Apply", "apiVersion": t.res.api_version()}]);
    if let Some(refusal) = existing
        .as_ref()
        .and_then(|old| immutable(t, &name, old, &o))
    {
        return status_value(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", &refusal);
    }
    if let Some(old) = &existing {
        if content(old) == content(&o) {
            return (StatusCode::OK, old.clone());
        }
        if let Some(s) = old.get("status") {
            o["status"] = s.clone();
        }
    }
    let spec_changed = existing
        .as_ref()
        .is_some_and(|old| old.get("spec") != o.get("spec"));
    if dry_run {
        return (StatusCode::OK, o);
    }
    if t.res.kind == "CustomResourceDefinition" {
        serve_crd(i, &o);
    }
    let stored = i.store.put(k, o, spec_changed);
    let code = if existing.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    (code, stored)
}

/// The API server's conflict message when the apply changes a field another manager owns.
fn conflicts(
    i: &Inner,
    t: &Target,
    name: &str,
    o: &Value,
    existing: Option<&Value>,
    force: bool,
) -> Option<String> {
    if force {
        return None;
    }
    let mut hits = Vec::new();
    for (kind, n, manager, pointer) in &i.claims {
        if kind != &t.res.kind || n != name {
            continue;
        }
        let mine = o.pointer(pointer);
        let theirs = existing.and_then(|e| e.pointer(pointer));
        if mine.is_some() && mine != theirs {
            hits.push(format!(
                "conflict with \"{manager}\" using {}: {}",
                t.res.api_version(),
                pointer.replace('/', ".")
            ));
        }
    }
    if hits.is_empty() {
        return None;
    }
    let n = hits.len();
    let s = if n == 1 { "" } else { "s" };
    Some(format!(
        "Apply failed with {n} conflict{s}: {}",
        hits.join("\n")
    ))
}

/// `k=v`, `k==v`, `k!=v` and `k` (exists) terms, comma separated.
pub(crate) fn label_match(labels: &Value, selector: &str) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            labels[k.trim()].as_str() != Some(v.trim())
        } else if let Some((k, v)) = term.split_once('=') {
            labels[k.trim()].as_str() == Some(v.trim_start_matches('=').trim())
        } else {
            labels.get(term.trim()).is_some()
        }
    })
}

/// `a=b,c=d` field selector pairs.
pub(crate) fn selector(s: Option<&String>) -> Vec<(String, String)> {
    s.map(|s| {
        s.split(',')
            .filter_map(|t| t.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_start_matches('=').to_string()))
            .collect()
    })
    .unwrap_or_default()
}

/// An applied CRD's kinds are served from then on, as the API server does once it is Established.
fn serve_crd(i: &mut Inner, crd: &Value) {
    let spec = &crd["spec"];
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    for v in spec["versions"].as_array().into_iter().flatten() {
        if v["served"] != true {
            continue;
        }
        let r = crate::Resource::new(
            &format!("{}/{}", s(&spec["group"]), s(&v["name"])),
            &s(&spec["names"]["kind"]),
            &s(&spec["names"]["plural"]),
            spec["scope"] == "Namespaced",
        );
        if !i.resources.contains(&r) {
            i.resources.push(r);
        }
    }
}

/// The API server's refusal of a change to a field that cannot change after creation.
fn immutable(t: &Target, name: &str, old: &Value, new: &Value) -> Option<String> {
    let changed = |p: &str| old.pointer(p) != new.pointer(p);
    match t.res.kind.as_str() {
        "Job" if changed("/spec/template") => Some(format!(
            "Job.batch \"{name}\" is invalid: spec.template: Invalid value: core.PodTemplateSpec{{...}}: field is immutable"
        )),
        "StatefulSet" if changed("/spec/volumeClaimTemplates") || changed("/spec/selector") => Some(format!(
            "StatefulSet.apps \"{name}\" is invalid: spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"
        )),
        _ => None,
    }
}

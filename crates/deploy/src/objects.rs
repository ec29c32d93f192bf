//! The rendered objects as deploy sees them: phase, identity, and whether prune may track them.

use mxstack_k8s::Rendered;
use serde_json::Value;

/// The phase whose objects (the operators) are applied but never pruned: removing an operator
/// from the render must not uninstall it from a cluster others may share.
pub const UNTRACKED_PHASE: &str = "05-operators";

/// One object to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub phase: String,
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub value: Value,
}

impl Item {
    pub fn new(phase: &str, value: Value) -> Item {
        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
        Item {
            phase: phase.to_string(),
            api_version: s(&value["apiVersion"]),
            kind: s(&value["kind"]),
            namespace: value["metadata"]["namespace"].as_str().map(str::to_string),
            name: s(&value["metadata"]["name"]),
            value,
        }
    }

    /// `Kind/name`, or `Kind/namespace/name` outside `home` (the instance's namespace).
    pub fn id(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }

    /// `Kind.group` as ApplySet annotations write it (`Secret`, `Deployment.apps`).
    pub fn group_kind(&self) -> String {
        group_kind(&self.api_version, &self.kind)
    }

    /// Whether prune tracks it (see [`UNTRACKED_PHASE`]).
    pub fn tracked(&self) -> bool {
        self.phase != UNTRACKED_PHASE
    }

    pub fn is_secret(&self) -> bool {
        self.api_version == "v1" && self.kind == "Secret"
    }
}

pub fn group_kind(api_version: &str, kind: &str) -> String {
    match api_version.split_once('/') {
        Some((group, _)) => format!("{kind}.{group}"),
        None => kind.to_string(),
    }
}

/// Every rendered object, in apply order.
pub fn items(rendered: &Rendered) -> Vec<Item> {
    rendered
        .objects
        .iter()
        .map(|o| Item::new(&o.phase, o.value.clone()))
        .collect()
}

/// The operators' objects for `deploy --with-operators`: the vendored releases of the operators
/// the render needs (05-operators), placed after 00-namespace; and the names of those it cannot
/// apply (not vendored, or installed through upstream's own kustomization), which must be
/// installed first as `render --with-operators` says.
pub fn with_operators(items: Vec<Item>) -> Result<(Vec<Item>, Vec<String>), String> {
    use mxstack_k8s::{operators, prerequisites};
    let values: Vec<Value> = items.iter().map(|i| i.value.clone()).collect();
    let (needed, _) = prerequisites::needed(&values);
    let mut ops = Vec::new();
    let mut by_hand = Vec::new();
    for n in needed {
        match operators::vendored(n.operator).filter(|v| !v.upstream_kustomization) {
            Some(v) => {
                for f in v.files {
                    let docs: Vec<Value> = serde_saphyr::from_multiple(f.text)
                        .map_err(|e| format!("{}/{}: {e}", v.root, f.path))?;
                    ops.extend(
                        docs.into_iter()
                            .filter(|d| d.is_object())
                            .map(|d| Item::new(UNTRACKED_PHASE, d)),
                    );
                }
            }
            None => by_hand.push(format!("{} {}", n.operator.name, n.operator.release)),
        }
    }
    let split = items
        .iter()
        .position(|i| i.phase.as_str() > "00-namespace")
        .unwrap_or(items.len());
    let mut out = items;
    let rest = out.split_off(split);
    out.extend(ops);
    out.extend(rest);
    Ok((out, by_hand))
}

/// The items grouped by phase, phases in order.
pub fn phases(items: &[Item]) -> Vec<(String, Vec<&Item>)> {
    let mut out: Vec<(String, Vec<&Item>)> = Vec::new();
    for i in items {
        match out.last_mut() {
            Some((p, v)) if *p == i.phase => v.push(i),
            _ => out.push((i.phase.clone(), vec![i])),
        }
    }
    out
}

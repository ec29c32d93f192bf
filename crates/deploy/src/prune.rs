//! ApplySet bookkeeping (the kubectl ApplySet convention, KEP-3659): a parent ConfigMap in the
//! instance's namespace records which kinds and namespaces this instance's objects use, and
//! every applied object carries the instance's `applyset.kubernetes.io/part-of` label. Prune
//! deletes exactly the objects with that label, of those kinds, that left the render.

use std::collections::BTreeSet;

use base64::Engine;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::objects::group_kind;
use crate::{Cluster, Error, Item, FIELD_MANAGER};

pub const PARENT_NAME: &str = "mxstack-applyset";
pub const LABEL_PART_OF: &str = "applyset.kubernetes.io/part-of";
pub const LABEL_ID: &str = "applyset.kubernetes.io/id";
pub const ANNOTATION_KINDS: &str = "applyset.kubernetes.io/contains-group-kinds";
pub const ANNOTATION_NAMESPACES: &str = "applyset.kubernetes.io/additional-namespaces";
pub const ANNOTATION_TOOLING: &str = "applyset.kubernetes.io/tooling";

/// The ApplySet id of the instance in `namespace`: KEP-3659's
/// `applyset-<base64url(sha256(<name>.<namespace>.<kind>.<group>))>-v1` of the parent.
pub fn applyset_id(namespace: &str) -> String {
    let digest = Sha256::digest(format!("{PARENT_NAME}.{namespace}.ConfigMap.").as_bytes());
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
    format!("applyset-{b64}-v1")
}

/// `item` with the instance's part-of label (what apply sends).
pub fn labelled(item: &Item, id: &str) -> Item {
    let mut i = item.clone();
    if item.tracked() {
        i.value["metadata"]["labels"][LABEL_PART_OF] = json!(id);
    }
    i
}

/// What the parent records: kinds (`Kind.group`) and namespaces other than the instance's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    pub kinds: BTreeSet<String>,
    pub namespaces: BTreeSet<String>,
}

impl Record {
    pub fn of(items: &[Item], home: &str) -> Record {
        let tracked = items.iter().filter(|i| i.tracked());
        let mut r = Record::default();
        for i in tracked {
            r.kinds.insert(i.group_kind());
            if let Some(ns) = i.namespace.as_deref().filter(|ns| *ns != home) {
                r.namespaces.insert(ns.to_string());
            }
        }
        r
    }

    pub fn union(&self, other: &Record) -> Record {
        Record {
            kinds: self.kinds.union(&other.kinds).cloned().collect(),
            namespaces: self.namespaces.union(&other.namespaces).cloned().collect(),
        }
    }
}

fn join(s: &BTreeSet<String>) -> String {
    s.iter().cloned().collect::<Vec<_>>().join(",")
}

fn split(v: &Value) -> BTreeSet<String> {
    v.as_str()
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The parent as rendered for `record`.
pub fn parent(home: &str, record: &Record) -> Item {
    let id = applyset_id(home);
    Item::new(
        "applyset",
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {
                "name": PARENT_NAME, "namespace": home,
                "labels": {LABEL_ID: id, mxstack_k8s::LABEL_MANAGED_BY: mxstack_k8s::PART_OF},
                "annotations": {
                    ANNOTATION_TOOLING: format!("mxstack/v{}", env!("CARGO_PKG_VERSION")),
                    ANNOTATION_KINDS: join(&record.kinds),
                    ANNOTATION_NAMESPACES: join(&record.namespaces),
                },
            },
        }),
    )
}

/// What the parent in the cluster records now (empty when there is none yet).
pub async fn recorded(cluster: &Cluster, home: &str) -> Result<Record, Error> {
    let served = cluster.require("v1", "ConfigMap").await?;
    let api = cluster.api(&served, Some(home));
    let p = api
        .get_opt(PARENT_NAME)
        .await
        .map_err(|e| cluster.error(&served, &format!("ConfigMap/{PARENT_NAME}"), "get", e))?;
    let Some(p) = p else {
        return Ok(Record::default());
    };
    let a = &serde_json::to_value(p).expect("objects serialize")["metadata"]["annotations"];
    Ok(Record {
        kinds: split(&a[ANNOTATION_KINDS]),
        namespaces: split(&a[ANNOTATION_NAMESPACES]),
    })
}

/// Writes the parent with `record`.
pub async fn record(
    cluster: &Cluster,
    home: &str,
    record: &Record,
    dry_run: bool,
) -> Result<(), Error> {
    let p = parent(home, record);
    let served = cluster.require("v1", "ConfigMap").await?;
    let mut params = PatchParams::apply(FIELD_MANAGER);
    params.dry_run = dry_run;
    cluster
        .api(&served, Some(home))
        .patch(PARENT_NAME, &params, &Patch::Apply(&p.value))
        .await
        .map_err(|e| cluster.error(&served, &p.id(), "patch", e))?;
    Ok(())
}

/// An object in the cluster that belongs to the instance but left the render.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Leftover {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl Leftover {
    pub fn id(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}/{ns}/{}", self.kind, self.name),
            None => format!("{}/{}", self.kind, self.name),
        }
    }
}

/// The objects carrying this instance's part-of label (and mxstack's managed-by label), of
/// the kinds and in the namespaces `record` names, that are not among `items`.
pub async fn leftovers(
    cluster: &Cluster,
    home: &str,
    record: &Record,
    items: &[Item],
) -> Result<Vec<Leftover>, Error> {
    let id = applyset_id(home);
    let selector = format!(
        "{LABEL_PART_OF}={id},{}={}",
        mxstack_k8s::LABEL_MANAGED_BY,
        mxstack_k8s::PART_OF
    );
    let current: BTreeSet<(String, Option<String>, String)> = items
        .iter()
        .map(|i| (i.group_kind(), i.namespace.clone(), i.name.clone()))
        .collect();
    let mut namespaces: Vec<&str> = vec![home];
    namespaces.extend(record.namespaces.iter().map(String::as_str));
    let mut out = Vec::new();
    for gk in &record.kinds {
        let Some((api_version, kind)) = find_kind(cluster, gk, items).await? else {
            continue; // no longer served: nothing of it can exist
        };
        let served = cluster.require(&api_version, &kind).await?;
        let scopes: Vec<Option<&str>> = if served.namespaced {
            namespaces.iter().map(|n| Some(*n)).collect()
        } else {
            vec![None]
        };
        for ns in scopes {
            let list = cluster
                .api(&served, ns)
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| cluster.error(&served, gk, "list", e))?;
            for o in list.items {
                let name = o.metadata.name.clone().unwrap_or_default();
                let key = (
                    group_kind(&api_version, &kind),
                    o.metadata.namespace.clone(),
                    name.clone(),
                );
                if !current.contains(&key) {
                    out.push(Leftover {
                        api_version: api_version.clone(),
                        kind: kind.clone(),
                        namespace: o.metadata.namespace.clone(),
                        name,
                    });
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `Kind.group` back to an apiVersion the cluster serves: the render's, else the cluster's
/// preferred version of the group.
async fn find_kind(
    cluster: &Cluster,
    gk: &str,
    items: &[Item],
) -> Result<Option<(String, String)>, Error> {
    if let Some(i) = items.iter().find(|i| i.group_kind() == gk) {
        return Ok(Some((i.api_version.clone(), i.kind.clone())));
    }
    let (kind, group) = gk.split_once('.').unwrap_or((gk, ""));
    if group.is_empty() {
        return Ok(cluster
            .served("v1", kind)
            .await?
            .map(|_| ("v1".to_string(), kind.to_string())));
    }
    let groups = cluster
        .client
        .list_api_groups()
        .await
        .map_err(|e| Error::from_kube(&cluster.server, "/apis", "get", "/apis", e))?;
    let Some(g) = groups.groups.iter().find(|g| g.name == group) else {
        return Ok(None);
    };
    for v in &g.versions {
        if cluster.served(&v.group_version, kind).await?.is_some() {
            return Ok(Some((v.group_version.clone(), kind.to_string())));
        }
    }
    Ok(None)
}

/// Deletes `l` (background propagation: its pods go with it).
pub async fn delete(cluster: &Cluster, l: &Leftover, dry_run: bool) -> Result<(), Error> {
    let served = cluster.require(&l.api_version, &l.kind).await?;
    let mut dp = DeleteParams::background();
    dp.dry_run = dry_run;
    match cluster
        .api(&served, l.namespace.as_deref())
        .delete(&l.name, &dp)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(cluster.error(&served, &l.id(), "delete", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_the_kep_3659_hash_of_the_parent() {
        let id = applyset_id("matrix");
        assert!(id.starts_with("applyset-") && id.ends_with("-v1"));
        // 32 bytes of sha256 in unpadded base64url: 43 characters, and a valid label value.
        assert_eq!(id.len(), "applyset-".len() + 43 + "-v1".len());
        assert!(id.len() <= 63);
        assert_ne!(id, applyset_id("matrix-2"), "one ApplySet per instance");
    }
}

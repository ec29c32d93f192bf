//! Why: an air-gapped site must mirror every image its manifests reference before the first
//! `kubectl apply`. `images list` names them all, from the render itself (so no image is
//! forgotten), with the `images.<field>` that sets each one, whether mxstack can build it, and
//! whether it is pinned by digest.

use std::collections::BTreeSet;

use mxstack_spec::Images;
use serde::Serialize;

use crate::catalog;
use crate::lock::Lock;
use crate::pin::{lock_entry_for, Reference};

/// One image a render references.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listed {
    /// As the manifests name it.
    pub image: String,
    /// The `images.<field>`s of mxstack.yaml set to it (empty: fixed by the renderer).
    pub fields: Vec<String>,
    /// The mxstack image that can stand in for it (`mxstack images build` builds it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buildable: Option<String>,
    /// The reference names a digest.
    pub by_digest: bool,
    /// The digest of the locked image it refers to, when a lock was given and has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locked_digest: Option<String>,
}

/// Every image in `referenced` (the render's), with what the config and the lock say about it.
pub fn list(images: &Images, referenced: &BTreeSet<String>, lock: Option<&Lock>) -> Vec<Listed> {
    let value = serde_json::to_value(images).expect("images serialize");
    let fields: Vec<(String, String)> = value
        .as_object()
        .expect("images is an object")
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect();
    referenced
        .iter()
        .map(|image| {
            let set_by: Vec<String> = fields
                .iter()
                .filter(|(_, v)| v == image)
                .map(|(k, _)| k.clone())
                .collect();
            let buildable = set_by.iter().find_map(|f| {
                catalog::IMAGES
                    .iter()
                    .find(|d| d.serves == f.as_str())
                    .map(|d| d.name.to_string())
            });
            let locked_digest = lock.and_then(|l| {
                set_by
                    .iter()
                    .find_map(|f| lock_entry_for(l, f, image))
                    .map(|e| e.digest.clone())
            });
            Listed {
                image: image.clone(),
                fields: set_by,
                buildable,
                by_digest: Reference::parse(image).digest.is_some(),
                locked_digest,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_fields_buildability_and_digests() {
        let images = Images {
            postgres: "ghcr.io/cloudnative-pg/postgresql:17.6@sha256:aa".into(),
            ..Images::default()
        };
        let referenced: BTreeSet<String> = [
            images.synapse.clone(),
            images.postgres.clone(),
            "docker.io/oliver006/redis_exporter:v1.74.0".to_string(),
        ]
        .into();
        let mut lock = Lock::default();
        lock.images
            .insert("synapse".into(), crate::lock::sample_entry("synapse"));
        let rows = list(&images, &referenced, Some(&lock));
        assert_eq!(rows.len(), 3);
        let syn = rows.iter().find(|r| r.image == images.synapse).unwrap();
        assert_eq!(syn.fields, ["synapse"]);
        assert_eq!(syn.buildable.as_deref(), Some("synapse"));
        assert_eq!(
            syn.locked_digest.as_deref(),
            Some(lock.images["synapse"].digest.as_str())
        );
        let pg = rows.iter().find(|r| r.image == images.postgres).unwrap();
        assert!(pg.by_digest && pg.buildable.is_none());
        let exporter = rows.iter().find(|r| r.image.contains("exporter")).unwrap();
        assert!(exporter.fields.is_empty());
    }
}

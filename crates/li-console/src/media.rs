//! Media from the LI bucket: the copy li-sync made and verified (its SHA-256 is in the ledger,
//! `mxstack_li.media_objects`), checked again against the ledger, decrypted when it is an
//! encrypted attachment (the hash in the event is checked too), and scanned by clamd before a
//! byte is shown or exported. Anything that cannot be verified or scanned is refused with the
//! reason, never served.

use std::time::Duration;

use mxstack_content_scanner::clamd::{Clamd, Verdict};
use mxstack_content_scanner::crypto::{parse_metadata, Decryptor};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::replica::Replica;

/// Largest object the console reads (it holds one in memory to verify, decrypt and scan it).
pub const MAX_MEDIA_BYTES: usize = 256 * 1024 * 1024;
const PRESIGN_TTL: Duration = Duration::from_secs(300);

/// Media an event refers to: `content.url`, or `content.file` of an encrypted attachment.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaRef {
    pub mxc: String,
    /// The `file` object (key, iv, hashes) of an encrypted attachment.
    pub file: Option<Value>,
    pub mimetype: Option<String>,
    pub name: Option<String>,
}

impl MediaRef {
    /// The media of a message's content, if it has any.
    pub fn from_content(content: &Value) -> Option<MediaRef> {
        let mimetype = content["info"]["mimetype"].as_str().map(str::to_string);
        let name = content["body"].as_str().map(str::to_string);
        if let Some(url) = content["url"].as_str() {
            return Some(MediaRef {
                mxc: url.to_string(),
                file: None,
                mimetype,
                name,
            });
        }
        let file = content.get("file")?;
        Some(MediaRef {
            mxc: file["url"].as_str()?.to_string(),
            file: Some(file.clone()),
            mimetype,
            name,
        })
    }

    /// `(origin, media_id)` of a well-formed `mxc://origin/media_id`.
    pub fn parts(&self) -> Option<(&str, &str)> {
        let rest = self.mxc.strip_prefix("mxc://")?;
        let (origin, id) = rest.split_once('/')?;
        let ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:[]".contains(&b))
        };
        (ok(origin) && ok(id) && id.len() > 4).then_some((origin, id))
    }
}

/// Verified, scanned, clean bytes.
pub struct Media {
    pub bytes: Vec<u8>,
    /// SHA-256 (hex) of `bytes` as served (the plaintext of an encrypted attachment).
    pub sha256: String,
    pub li_key: String,
}

pub struct MediaStore {
    http: reqwest::Client,
    bucket: Bucket,
    credentials: Credentials,
    clamd: Option<Clamd>,
    server_name: String,
}

impl MediaStore {
    pub fn new(
        cfg: &crate::config::Media,
        access_key: String,
        secret_key: String,
        clamd: Option<&str>,
        server_name: &str,
    ) -> Result<MediaStore, String> {
        let endpoint = cfg
            .endpoint
            .parse()
            .map_err(|e| format!("media.endpoint {:?}: {e}", cfg.endpoint))?;
        let bucket = Bucket::new(
            endpoint,
            UrlStyle::Path,
            cfg.bucket.clone(),
            cfg.region.clone(),
        )
        .map_err(|e| format!("media.bucket {:?}: {e}", cfg.bucket))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(MediaStore {
            http,
            bucket,
            credentials: Credentials::new(access_key, secret_key),
            clamd: clamd.map(|a| Clamd::new(a, 4, Duration::from_secs(60))),
            server_name: server_name.to_string(),
        })
    }

    /// Fetches, verifies, decrypts and scans one media item. `Err` is a reason to show.
    pub async fn fetch(&self, replica: &Replica, r: &MediaRef) -> Result<Media, String> {
        let (origin, id) = r
            .parts()
            .ok_or_else(|| format!("not a media URL: {:?}", r.mxc))?;
        let main_key = if origin == self.server_name {
            format!("local_content/{}/{}/{}", &id[..2], &id[2..4], &id[4..])
        } else {
            let fs = replica
                .remote_filesystem_id(origin, id)
                .await?
                .filter(|f| f.len() > 4)
                .ok_or_else(|| format!("{}: remote media never fetched by main", r.mxc))?;
            format!(
                "remote_content/{origin}/{}/{}/{}",
                &fs[..2],
                &fs[2..4],
                &fs[4..]
            )
        };
        let (li_key, ledger_sha) = replica
            .li_object(&main_key)
            .await?
            .ok_or_else(|| format!("{}: not (yet) copied to the LI bucket", r.mxc))?;
        let url = self
            .bucket
            .get_object(Some(&self.credentials), &li_key)
            .sign(PRESIGN_TTL);
        // The signed URL carries a signature: errors name the key, never the URL.
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("{}: LI bucket unreachable ({})", r.mxc, e.without_url()))?;
        if !resp.status().is_success() {
            return Err(format!("{}: LI bucket answered {}", r.mxc, resp.status()));
        }
        if resp.content_length().unwrap_or(0) as usize > MAX_MEDIA_BYTES {
            return Err(format!("{}: larger than {MAX_MEDIA_BYTES} bytes", r.mxc));
        }
        let mut bytes = resp
            .bytes()
            .await
            .map_err(|e| format!("{}: reading the LI copy: {}", r.mxc, e.without_url()))?
            .to_vec();
        if hex::encode(Sha256::digest(&bytes)) != ledger_sha {
            return Err(format!(
                "{}: the LI copy's SHA-256 differs from li-sync's ledger: not shown",
                r.mxc
            ));
        }
        if let Some(file) = &r.file {
            let meta = parse_metadata(&serde_json::json!({ "file": file }))
                .map_err(|(_, m)| format!("{}: encrypted attachment: {m}", r.mxc))?;
            let mut d = Decryptor::new(&meta);
            d.update(&mut bytes);
            d.verify()
                .map_err(|(_, m)| format!("{}: encrypted attachment: {m}", r.mxc))?;
        }
        let clamd = self
            .clamd
            .as_ref()
            .ok_or_else(|| format!("{}: no virus scanner configured: not shown", r.mxc))?;
        match clamd.scan_bytes(&bytes).await {
            Ok(Verdict::Clean) => {}
            Ok(Verdict::Infected(sig)) => {
                return Err(format!("{}: infected ({sig}): not shown", r.mxc))
            }
            Ok(Verdict::TooLarge { limit }) => {
                return Err(format!(
                    "{}: over the scanner's limit of {limit} bytes: not shown",
                    r.mxc
                ))
            }
            Err(e) => return Err(format!("{}: scan failed ({e}): not shown", r.mxc)),
        }
        Ok(Media {
            sha256: hex::encode(Sha256::digest(&bytes)),
            bytes,
            li_key,
        })
    }
}

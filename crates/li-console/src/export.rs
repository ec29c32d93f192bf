//! Evidence packages: one tar file per export holding the messages as JSON, the media, and a
//! manifest of every file's SHA-256 signed with the console's Ed25519 key. `verify` (used by
//! `mxstack li export verify`) checks the signature, every hash and size, and that the package
//! holds nothing the manifest does not list.

use std::collections::BTreeMap;
use std::io::Read;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const FORMAT: &str = "mxstack-evidence-1";
pub const MANIFEST: &str = "manifest.json";
pub const SIGNATURE: &str = "manifest.sig";
pub const PUBLIC_KEY: &str = "public_key.txt";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: String,
    pub warrant_id: i64,
    pub case_ref: String,
    pub exported_by: String,
    pub exported_at_ms: i64,
    /// Base64 Ed25519 public key of the console that signed.
    pub public_key: String,
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ManifestFile {
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

// One key signs evidence manifests and the warrant claims the key vault checks.
pub use mxstack_key_vault::warrant::{public_key_b64, signing_key};

/// Builds the package: `files` are (path, bytes); the manifest and signature are added.
pub struct Package {
    files: BTreeMap<String, Vec<u8>>,
}

impl Default for Package {
    fn default() -> Self {
        Package::new()
    }
}

impl Package {
    pub fn new() -> Package {
        Package {
            files: BTreeMap::new(),
        }
    }

    pub fn add(&mut self, path: &str, bytes: Vec<u8>) {
        self.files.insert(path.to_string(), bytes);
    }

    /// The signed tar file.
    pub fn seal(
        self,
        key: &SigningKey,
        warrant_id: i64,
        case_ref: &str,
        exported_by: &str,
        now_ms: i64,
    ) -> Result<(Vec<u8>, Manifest), String> {
        let manifest = Manifest {
            format: FORMAT.into(),
            warrant_id,
            case_ref: case_ref.into(),
            exported_by: exported_by.into(),
            exported_at_ms: now_ms,
            public_key: public_key_b64(key),
            files: self
                .files
                .iter()
                .map(|(p, b)| ManifestFile {
                    path: p.clone(),
                    sha256: hex::encode(Sha256::digest(b)),
                    size: b.len() as u64,
                })
                .collect(),
        };
        let manifest_bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
        let signature = STANDARD.encode(key.sign(&manifest_bytes).to_bytes());
        let mut tar = tar::Builder::new(Vec::new());
        let mut put = |path: &str, bytes: &[u8]| -> Result<(), String> {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_mtime((now_ms / 1000).max(0) as u64);
            h.set_cksum();
            tar.append_data(&mut h, path, bytes)
                .map_err(|e| format!("tar {path}: {e}"))
        };
        put(MANIFEST, &manifest_bytes)?;
        put(SIGNATURE, signature.as_bytes())?;
        put(PUBLIC_KEY, manifest.public_key.as_bytes())?;
        for (p, b) in &self.files {
            put(p, b)?;
        }
        let bytes = tar.into_inner().map_err(|e| format!("tar: {e}"))?;
        Ok((bytes, manifest))
    }
}

/// What a successful verification saw.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    pub warrant_id: i64,
    pub case_ref: String,
    pub exported_by: String,
    pub exported_at_ms: i64,
    pub public_key: String,
    pub files: usize,
    pub bytes: u64,
    /// Whether the signer's key was given by the caller (else only the package's own key was
    /// used: integrity, not origin).
    pub key_pinned: bool,
}

/// Verifies a package. `expected_key`: the console's public key as published (base64); without
/// it the key inside the package is used, which proves integrity but not who signed.
pub fn verify(tar_bytes: &[u8], expected_key: Option<&str>) -> Result<Verified, String> {
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut archive = tar::Archive::new(tar_bytes);
    for entry in archive
        .entries()
        .map_err(|e| format!("not a tar file: {e}"))?
    {
        let mut entry = entry.map_err(|e| format!("not a tar file: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("bad path in package: {e}"))?
            .to_string_lossy()
            .to_string();
        let mut b = Vec::new();
        entry
            .read_to_end(&mut b)
            .map_err(|e| format!("{path}: {e}"))?;
        if files.insert(path.clone(), b).is_some() {
            return Err(format!("{path} appears twice in the package"));
        }
    }
    let manifest_bytes = files
        .remove(MANIFEST)
        .ok_or("the package has no manifest.json")?;
    let sig = files
        .remove(SIGNATURE)
        .ok_or("the package has no manifest.sig")?;
    let own_key = files.remove(PUBLIC_KEY).unwrap_or_default();
    let manifest: Manifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| format!("manifest.json: {e}"))?;
    if manifest.format != FORMAT {
        return Err(format!("unknown package format {:?}", manifest.format));
    }
    let key_b64 = match expected_key {
        Some(k) => k.trim().to_string(),
        None => String::from_utf8_lossy(&own_key).trim().to_string(),
    };
    if manifest.public_key != key_b64 {
        return Err(format!(
            "the manifest names signer {} but the key checked is {key_b64}",
            manifest.public_key
        ));
    }
    let key: [u8; 32] = STANDARD
        .decode(&key_b64)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("the public key is not 32 bytes of base64")?;
    let key = VerifyingKey::from_bytes(&key).map_err(|e| format!("public key: {e}"))?;
    let sig: [u8; 64] = STANDARD
        .decode(String::from_utf8_lossy(&sig).trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("manifest.sig is not a 64-byte base64 signature")?;
    key.verify(&manifest_bytes, &Signature::from_bytes(&sig))
        .map_err(|_| {
            "the manifest's signature does not verify: it was changed or signed by another key"
                .to_string()
        })?;
    let mut bytes = 0;
    for f in &manifest.files {
        let b = files
            .remove(&f.path)
            .ok_or_else(|| format!("{} is in the manifest but not in the package", f.path))?;
        if b.len() as u64 != f.size || hex::encode(Sha256::digest(&b)) != f.sha256 {
            return Err(format!(
                "{}: its SHA-256 or size differs from the manifest: the file was changed",
                f.path
            ));
        }
        bytes += f.size;
    }
    if let Some(extra) = files.keys().next() {
        return Err(format!("{extra} is in the package but not in the manifest"));
    }
    Ok(Verified {
        warrant_id: manifest.warrant_id,
        case_ref: manifest.case_ref,
        exported_by: manifest.exported_by,
        exported_at_ms: manifest.exported_at_ms,
        public_key: manifest.public_key,
        files: manifest.files.len(),
        bytes,
        key_pinned: expected_key.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    fn package() -> Vec<u8> {
        let mut p = Package::new();
        p.add("messages.json", br#"{"a":1}"#.to_vec());
        p.add("media/abc", b"bytes".to_vec());
        p.seal(&key(), 3, "CASE-1", "ivan", 1_700_000_000_000)
            .unwrap()
            .0
    }

    fn rebuild(files: Vec<(&str, Vec<u8>)>) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (p, b) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(b.len() as u64);
            h.set_cksum();
            tar.append_data(&mut h, p, &b[..]).unwrap();
        }
        tar.into_inner().unwrap()
    }

    fn unpack(t: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut a = tar::Archive::new(t);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let p = e.path().unwrap().to_string_lossy().to_string();
                let mut b = Vec::new();
                e.read_to_end(&mut b).unwrap();
                (p, b)
            })
            .collect()
    }

    #[test]
    fn a_sealed_package_verifies_with_the_pinned_key() {
        let v = verify(&package(), Some(&public_key_b64(&key()))).unwrap();
        assert_eq!((v.files, v.bytes, v.key_pinned), (2, 12, true));
        assert_eq!(v.case_ref, "CASE-1");
    }

    #[test]
    fn a_changed_file_a_changed_manifest_an_extra_file_and_another_key_are_refused() {
        let files = unpack(&package());
        let tweak = |name: &str, f: &dyn Fn(&mut Vec<u8>)| {
            let v: Vec<(&str, Vec<u8>)> = files
                .iter()
                .map(|(p, b)| {
                    let mut b = b.clone();
                    if p == name {
                        f(&mut b);
                    }
                    (p.as_str(), b)
                })
                .collect();
            verify(&rebuild(v), None).unwrap_err()
        };
        assert!(tweak("media/abc", &|b| b[0] ^= 1).contains("media/abc"));
        assert!(tweak(MANIFEST, &|b| {
            let s = String::from_utf8(b.clone())
                .unwrap()
                .replace("CASE-1", "CASE-2");
            *b = s.into_bytes();
        })
        .contains("signature"));
        let mut extra: Vec<(&str, Vec<u8>)> =
            files.iter().map(|(p, b)| (p.as_str(), b.clone())).collect();
        extra.push(("media/planted", b"x".to_vec()));
        assert!(verify(&rebuild(extra), None)
            .unwrap_err()
            .contains("media/planted"));
        let other = public_key_b64(&SigningKey::from_bytes(&[8u8; 32]));
        assert!(verify(&package(), Some(&other))
            .unwrap_err()
            .contains("signer"));
    }
}

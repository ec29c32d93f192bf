//! Envelope encryption with age: a fresh file key per stored secret, wrapped (X25519) to every
//! recipient. The vault holds public keys only, so it can encrypt and never decrypt.

use std::io::Write;

use age::armor::{ArmoredWriter, Format};
use age::secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

/// Encrypts `plaintext` to all `recipients`; ASCII-armored age file (`-----BEGIN AGE ENCRYPTED
/// FILE-----`), readable by `age -d -i KEYFILE`.
pub fn seal(recipients: &[age::x25519::Recipient], plaintext: &[u8]) -> Result<String, String> {
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| format!("age: {e}"))?;
    let mut out = Vec::with_capacity(plaintext.len() + 512);
    let armor = ArmoredWriter::wrap_output(&mut out, Format::AsciiArmor)
        .map_err(|e| format!("age armor: {e}"))?;
    let mut w = encryptor
        .wrap_output(armor)
        .map_err(|e| format!("age: {e}"))?;
    w.write_all(plaintext).map_err(|e| format!("age: {e}"))?;
    w.finish()
        .and_then(|armor| armor.finish())
        .map_err(|e| format!("age: {e}"))?;
    String::from_utf8(out).map_err(|_| "age armor is not UTF-8".to_string())
}

/// The fingerprint recorded with each version: SHA-256 (hex) of the stored ciphertext (never of
/// the plaintext).
pub fn fingerprint(ciphertext: &str) -> String {
    hex::encode(Sha256::digest(ciphertext.as_bytes()))
}

/// A new age X25519 key pair: (public `age1...`, private `AGE-SECRET-KEY-1...`).
pub fn keygen() -> (String, String) {
    let id = age::x25519::Identity::generate();
    let public = id.to_public().to_string();
    let secret = id.to_string().expose_secret().to_string();
    (public, secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_recipient_decrypts_and_the_ciphertext_is_fresh() {
        let (pa, sa) = keygen();
        let (pb, sb) = keygen();
        assert!(pa.starts_with("age1") && sa.starts_with("AGE-SECRET-KEY-1"));
        let r: Vec<age::x25519::Recipient> = [pa, pb].iter().map(|p| p.parse().unwrap()).collect();
        let c1 = seal(&r, b"EsTc 1234 secret").unwrap();
        let c2 = seal(&r, b"EsTc 1234 secret").unwrap();
        assert!(c1.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
        assert_ne!(c1, c2);
        assert!(!c1.contains("EsTc"));
        for s in [sa, sb] {
            let id: age::x25519::Identity = s.parse().unwrap();
            assert_eq!(
                age::decrypt(&id, c1.as_bytes()).unwrap(),
                b"EsTc 1234 secret"
            );
        }
        let (_, other) = keygen();
        let other: age::x25519::Identity = other.parse().unwrap();
        assert!(age::decrypt(&other, c1.as_bytes()).is_err());
        assert_eq!(fingerprint(&c1).len(), 64);
    }
}

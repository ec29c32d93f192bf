//! htpasswd lines in the `{SHA}` format, the one format both Envoy Gateway's basic auth (the only
//! one it accepts) and Traefik's basicAuth middleware read: `user:{SHA}base64(sha1(password))`.
//!
//! SHA-1 is what that format is. It protects a gate in front of an allow-listed network, behind
//! which every user still logs in to Synapse LI with their own account.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha1::{Digest, Sha1};

/// `user:{SHA}...` for one user.
pub fn sha_line(user: &str, password: &str) -> String {
    format!("{user}:{{SHA}}{}", STANDARD.encode(Sha1::digest(password)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htpasswd_line_is_what_htpasswd_s_writes() {
        // `htpasswd -nbs investigator secret` prints this line.
        assert_eq!(
            sha_line("investigator", "secret"),
            "investigator:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ="
        );
    }

    #[test]
    fn hash_is_openssl_s_sha1_in_padded_base64() {
        // `printf %s password | openssl sha1 -binary | base64`, and the same for a non-ASCII
        // password containing the separators (hashed as UTF-8 bytes, nothing escaped).
        assert_eq!(
            sha_line("u", "password"),
            "u:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="
        );
        assert_eq!(
            sha_line("u", "pässwörd:{SHA}"),
            "u:{SHA}iPV7gJnmc+DWDyaRust2bGp48zo="
        );
        // The empty password: SHA-1 of no bytes (FIPS 180 vector da39a3ee...).
        assert_eq!(sha_line("u", ""), "u:{SHA}2jmj7l5rSw0yVb/vlWAYkK/YBwk=");
    }
}

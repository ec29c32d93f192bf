//! TOTP (RFC 6238): the second factor of every console login.
//!
//! HMAC-SHA1, 30-second steps, 6 digits: the parameters every authenticator app supports when it
//! scans an `otpauth://` QR code (RFC 6238 allows SHA-256/512, but several apps silently ignore
//! `algorithm=` and would show wrong codes). Secrets are 20 random bytes (the HMAC-SHA1 block
//! recommendation of RFC 4226), shown to the user once as unpadded RFC 4648 base32.
//!
//! [`verify`] accepts the code of the current step and of one step either side (clock drift,
//! a code typed just as it rolled over) and returns the step it matched, so the caller can store
//! it: a step at or before the last one used is refused, which makes every code single-use
//! (a code read over someone's shoulder, or replayed from a proxy log, does not log in again).
//! Codes are compared in constant time.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

/// Seconds per step.
pub const STEP_S: u64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;
/// Secret length in bytes.
pub const SECRET_LEN: usize = 20;

const BASE32_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// A fresh random secret.
pub fn generate_secret() -> Result<[u8; SECRET_LEN], getrandom::Error> {
    let mut s = [0u8; SECRET_LEN];
    getrandom::fill(&mut s)?;
    Ok(s)
}

/// RFC 4648 base32, upper case, without `=` padding (what `otpauth://` URIs carry).
pub fn base32_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    for &b in data {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32_ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(BASE32_ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Decodes RFC 4648 base32. Lenient about what people copy: lower case, spaces, hyphens and
/// trailing `=` padding are accepted. `None` for any other character, or for trailing bits that
/// are not zero (a truncated or mistyped secret).
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    let trimmed = text.trim_end_matches('=');
    for c in trimmed.chars() {
        if c == ' ' || c == '-' {
            continue;
        }
        let v = match c.to_ascii_uppercase() {
            c @ 'A'..='Z' => c as u32 - 'A' as u32,
            c @ '2'..='7' => c as u32 - '2' as u32 + 26,
            _ => return None,
        };
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    // Leftover bits (fewer than 8) must be zero padding; 5 or more leftover bits mean a
    // character too many.
    if bits >= 5 || buffer != 0 {
        return None;
    }
    Some(out)
}

/// RFC 4226 HOTP with HMAC-SHA1: the `digits`-digit code (zero-padded) for `counter`.
pub fn hotp(secret: &[u8], counter: u64, digits: u32) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(&counter.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let offset = (h[19] & 0x0f) as usize;
    let bin = (u32::from(h[offset] & 0x7f) << 24)
        | (u32::from(h[offset + 1]) << 16)
        | (u32::from(h[offset + 2]) << 8)
        | u32::from(h[offset + 3]);
    let modulus = 10u64.pow(digits);
    format!(
        "{:0width$}",
        u64::from(bin) % modulus,
        width = digits as usize
    )
}

/// The step that contains `unix_s`.
pub fn step_at(unix_s: u64) -> u64 {
    unix_s / STEP_S
}

/// The 6-digit code valid at `unix_s`.
pub fn code_at(secret: &[u8], unix_s: u64) -> String {
    hotp(secret, step_at(unix_s), DIGITS)
}

/// Checks `code` (6 digits; spaces are ignored) against the steps `now - 1`, `now`, `now + 1`.
/// Returns the step that matched, or `None`. A step at or before `last_used_step` never matches:
/// store the returned step and pass it back next time (replay protection).
pub fn verify(secret: &[u8], code: &str, now_s: u64, last_used_step: Option<u64>) -> Option<u64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = step_at(now_s);
    let mut matched = None;
    // All three are computed and compared whatever matches, in constant time.
    for step in [now.saturating_sub(1), now, now.saturating_add(1)] {
        let expected = hotp(secret, step, DIGITS);
        let equal: bool = expected.as_bytes().ct_eq(code.as_bytes()).into();
        let fresh = last_used_step.is_none_or(|last| step > last);
        if equal && fresh && matched.is_none() {
            matched = Some(step);
        }
    }
    matched
}

/// The `otpauth://totp/...` URI an authenticator app scans (Key Uri Format), e.g.
/// `otpauth://totp/mxstack%20LI:alice?secret=...&issuer=mxstack%20LI&algorithm=SHA1&digits=6&period=30`.
pub fn otpauth_uri(issuer: &str, account: &str, secret_b32: &str) -> String {
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={}&period={}",
        percent_encode(issuer),
        percent_encode(account),
        secret_b32,
        percent_encode(issuer),
        DIGITS,
        STEP_S
    )
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_SECRET: &[u8] = b"12345678901234567890";

    /// RFC 6238 appendix B, SHA-1 column (8 digits).
    const RFC_VECTORS: &[(u64, &str)] = &[
        (59, "94287082"),
        (1111111109, "07081804"),
        (1111111111, "14050471"),
        (1234567890, "89005924"),
        (2000000000, "69279037"),
        (20000000000, "65353130"),
    ];

    #[test]
    fn rfc6238_sha1_vectors_8_digits() {
        for &(t, code) in RFC_VECTORS {
            assert_eq!(hotp(RFC_SECRET, step_at(t), 8), code, "T={t}");
        }
    }

    #[test]
    fn rfc6238_sha1_vectors_6_digits() {
        for &(t, code) in RFC_VECTORS {
            assert_eq!(code_at(RFC_SECRET, t), &code[2..], "T={t}");
        }
        assert_eq!(code_at(RFC_SECRET, 59), "287082");
        assert_eq!(code_at(RFC_SECRET, 1111111109), "081804");
    }

    #[test]
    fn rfc4226_hotp_vectors() {
        let expected = [
            "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583",
            "399871", "520489",
        ];
        for (i, code) in expected.iter().enumerate() {
            assert_eq!(hotp(RFC_SECRET, i as u64, 6), *code, "counter {i}");
        }
    }

    #[test]
    fn base32_rfc4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ];
        for (plain, enc) in vectors {
            assert_eq!(base32_encode(plain.as_bytes()), enc);
            assert_eq!(base32_decode(enc).unwrap(), plain.as_bytes());
        }
        assert_eq!(
            base32_encode(RFC_SECRET),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
    }

    #[test]
    fn base32_decode_is_lenient_about_format_but_not_content() {
        assert_eq!(base32_decode("mzxw 6ytb-oi").unwrap(), b"foobar");
        assert_eq!(base32_decode("MZXW6YQ=").unwrap(), b"foob");
        assert!(base32_decode("MZXW1").is_none(), "1 is not base32");
        assert!(base32_decode("MZXW6YR").is_none(), "non-zero trailing bits");
        assert!(base32_decode("M").is_none(), "a character too many");
        for len in 0..40 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(base32_decode(&base32_encode(&data)).unwrap(), data);
        }
    }

    #[test]
    fn verify_accepts_one_step_either_side_only() {
        let now = 1_700_000_015u64;
        let step = step_at(now);
        let code = |s: u64| hotp(RFC_SECRET, s, 6);
        assert_eq!(verify(RFC_SECRET, &code(step), now, None), Some(step));
        assert_eq!(
            verify(RFC_SECRET, &code(step - 1), now, None),
            Some(step - 1)
        );
        assert_eq!(
            verify(RFC_SECRET, &code(step + 1), now, None),
            Some(step + 1)
        );
        assert_eq!(verify(RFC_SECRET, &code(step - 2), now, None), None);
        assert_eq!(verify(RFC_SECRET, &code(step + 2), now, None), None);
    }

    #[test]
    fn verify_refuses_used_and_older_steps() {
        let now = 1_700_000_015u64;
        let step = step_at(now);
        let c = code_at(RFC_SECRET, now);
        assert_eq!(verify(RFC_SECRET, &c, now, Some(step - 1)), Some(step));
        assert_eq!(verify(RFC_SECRET, &c, now, Some(step)), None, "replay");
        assert_eq!(
            verify(RFC_SECRET, &hotp(RFC_SECRET, step - 1, 6), now, Some(step)),
            None,
            "an older step after a newer one was used"
        );
        assert_eq!(
            verify(RFC_SECRET, &hotp(RFC_SECRET, step + 1, 6), now, Some(step)),
            Some(step + 1)
        );
    }

    #[test]
    fn verify_refuses_malformed_codes() {
        let now = 59;
        assert_eq!(verify(RFC_SECRET, "287 082", now, None), Some(1));
        for bad in ["", "28708", "2870822", "28708a", "+87082", "２８７０８２"] {
            assert_eq!(verify(RFC_SECRET, bad, now, None), None, "{bad:?}");
        }
    }

    #[test]
    fn verify_at_time_zero_does_not_underflow() {
        let c = code_at(RFC_SECRET, 0);
        assert_eq!(verify(RFC_SECRET, &c, 0, None), Some(0));
    }

    #[test]
    fn otpauth_uri_is_encoded() {
        assert_eq!(
            otpauth_uri("mxstack LI", "alice.b", "GEZDGNBV"),
            "otpauth://totp/mxstack%20LI:alice.b?secret=GEZDGNBV&issuer=mxstack%20LI&algorithm=SHA1&digits=6&period=30"
        );
        assert!(otpauth_uri("a:b&c", "x", "S").starts_with("otpauth://totp/a%3Ab%26c:x?"));
    }

    #[test]
    fn generated_secrets_differ() {
        let a = generate_secret().unwrap();
        let b = generate_secret().unwrap();
        assert_ne!(a, b);
        assert_eq!(base32_encode(&a).len(), 32);
    }
}

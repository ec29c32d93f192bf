//! TOTP (RFC 6238): the second factor of every console login.
//!
//! HMAC-SHA1, 30-second steps, 6 digits: the parameters every authenticator app supports when it
//! scans an `otpauth://` QR code (RFC 6238 allows SHA-256/512, but several apps silently ignore
//! `algorithm=` and would show wrong codes). Secrets are 20 random bytes (the HMAC-SHA1 block
//! recommendation of RFC 4226), shown to the user once as unpadded RFC 4648 base32.
//!
//! The codes, the base32 and the `otpauth://` URI are the `totp-rs` crate's. [`verify`] is ours,
//! because the crate's `TOTP::check` only answers yes or no: it cannot say which step matched, so
//! it cannot refuse a code already used (RFC 6238 section 5.2), and it underflows at a time
//! before its skew window (tests `crate_check_accepts_a_replayed_code` and
//! `crate_check_underflows_near_time_zero`).
//!
//! [`verify`] accepts the code of the current step and of one step either side (clock drift,
//! a code typed just as it rolled over) and returns the step it matched, so the caller can store
//! it: a step at or before the last one used is refused, which makes every code single-use
//! (a code read over someone's shoulder, or replayed from a proxy log, does not log in again).
//! Codes are compared in constant time.

use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};

/// Seconds per step.
pub const STEP_S: u64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;
/// Secret length in bytes.
pub const SECRET_LEN: usize = 20;

/// A fresh random secret.
pub fn generate_secret() -> Result<[u8; SECRET_LEN], getrandom::Error> {
    let mut s = [0u8; SECRET_LEN];
    getrandom::fill(&mut s)?;
    Ok(s)
}

/// Our parameters around `secret`. Unchecked: the crate's check wants at least 16 bytes and no
/// `:` in the names, and a secret already stored must keep working whatever its length (ours are
/// [`SECRET_LEN`]; names are percent-encoded by [`TOTP::get_url`]).
fn totp(secret: &[u8], issuer: Option<&str>, account: &str) -> TOTP {
    TOTP::new_unchecked(
        Algorithm::SHA1,
        DIGITS as usize,
        1,
        STEP_S,
        secret.to_vec(),
        issuer.map(str::to_owned),
        account.to_owned(),
    )
}

/// RFC 4648 base32, upper case, without `=` padding (what `otpauth://` URIs carry).
pub fn base32_encode(secret: &[u8]) -> String {
    totp(secret, None, "").get_secret_base32()
}

/// The step that contains `unix_s`.
pub fn step_at(unix_s: u64) -> u64 {
    unix_s / STEP_S
}

/// The 6-digit code of `step`.
fn code_of_step(secret: &[u8], step: u64) -> String {
    totp(secret, None, "").generate(step.saturating_mul(STEP_S))
}

/// The 6-digit code valid at `unix_s`.
pub fn code_at(secret: &[u8], unix_s: u64) -> String {
    code_of_step(secret, step_at(unix_s))
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
        let expected = code_of_step(secret, step);
        let equal: bool = expected.as_bytes().ct_eq(code.as_bytes()).into();
        let fresh = last_used_step.is_none_or(|last| step > last);
        if equal && fresh && matched.is_none() {
            matched = Some(step);
        }
    }
    matched
}

/// The `otpauth://totp/...` URI an authenticator app scans (Key Uri Format), e.g.
/// `otpauth://totp/mxstack%20LI:alice?secret=...&issuer=mxstack%20LI` (SHA-1, 6 digits and 30
/// seconds are the format's defaults, so the crate leaves them out).
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    totp(secret, Some(issuer), account).get_url()
}

#[cfg(test)]
mod tests {
    use super::*;
    use totp_rs::Secret;

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
        let t = TOTP::new_unchecked(
            Algorithm::SHA1,
            8,
            1,
            STEP_S,
            RFC_SECRET.to_vec(),
            None,
            String::new(),
        );
        for &(time, code) in RFC_VECTORS {
            assert_eq!(t.generate(time), code, "T={time}");
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
            assert_eq!(code_of_step(RFC_SECRET, i as u64), *code, "counter {i}");
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
        }
        assert_eq!(
            base32_encode(RFC_SECRET),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
        for len in 0..40 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let back = Secret::Encoded(base32_encode(&data)).to_bytes().unwrap();
            assert_eq!(back, data);
        }
    }

    #[test]
    fn verify_accepts_one_step_either_side_only() {
        let now = 1_700_000_015u64;
        let step = step_at(now);
        let code = |s: u64| code_of_step(RFC_SECRET, s);
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
            verify(
                RFC_SECRET,
                &code_of_step(RFC_SECRET, step - 1),
                now,
                Some(step)
            ),
            None,
            "an older step after a newer one was used"
        );
        assert_eq!(
            verify(
                RFC_SECRET,
                &code_of_step(RFC_SECRET, step + 1),
                now,
                Some(step)
            ),
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

    /// Why [`verify`] is ours: the crate's check has no memory of the step used, so a code
    /// accepted once is accepted again for as long as its window lasts.
    #[test]
    fn crate_check_accepts_a_replayed_code() {
        let now = 1_700_000_015u64;
        let c = code_at(RFC_SECRET, now);
        let t = totp(RFC_SECRET, None, "");
        assert!(t.check(&c, now));
        assert!(t.check(&c, now + 1), "the crate takes the same code again");
        let step = verify(RFC_SECRET, &c, now, None).unwrap();
        assert_eq!(verify(RFC_SECRET, &c, now + 1, Some(step)), None);
    }

    /// Why [`verify`] is ours (2): `TOTP::check` computes `time / step - skew` unchecked, which
    /// overflows in the first step of 1970; [`verify`] saturates
    /// (`verify_at_time_zero_does_not_underflow`). Debug builds only: release builds wrap.
    #[cfg(debug_assertions)]
    #[test]
    fn crate_check_underflows_near_time_zero() {
        let c = code_at(RFC_SECRET, 0);
        let t = totp(RFC_SECRET, None, "");
        assert!(std::panic::catch_unwind(|| t.check(&c, 0)).is_err());
    }

    #[test]
    fn otpauth_uri_is_encoded() {
        assert_eq!(
            otpauth_uri("mxstack LI", "alice.b", b"12345"),
            "otpauth://totp/mxstack%20LI:alice.b?secret=GEZDGNBV&issuer=mxstack%20LI"
        );
        assert!(otpauth_uri("a:b&c", "x", b"1").starts_with("otpauth://totp/a%3Ab%26c:x?"));
    }

    #[test]
    fn generated_secrets_differ() {
        let a = generate_secret().unwrap();
        let b = generate_secret().unwrap();
        assert_ne!(a, b);
        assert_eq!(base32_encode(&a).len(), 32);
    }
}

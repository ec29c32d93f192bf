//! Errors that stop verification before any check runs (exit 2): a bad URL, an unreadable CA.
//! Failed checks are results, not errors.

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("bad URL `{url}`: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot read the CA file {path}: {reason}")]
    Ca { path: String, reason: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

//! Typed errors. Each names what to do; none ever carries a secret (tokens and the registration
//! secret are never formatted into one).

use thiserror::Error;

#[derive(Debug, Error)]
pub enum LoadError {
    /// An argument or profile file that cannot work (exit 2).
    #[error("{0}")]
    BadInput(String),
    #[error("cannot reach {url}: {reason} (is the deployment up and the URL its client URL?)")]
    Unreachable { url: String, reason: String },
    #[error("no credentials to create users: pass --admin-token TOKEN (a server admin's access token) or --config mxstack.yaml (its secrets.yaml holds the registration shared secret)")]
    NoCredentials,
    #[error("{0}")]
    NoRegistration(String),
    /// This machine cannot drive the load asked for; reporting it as the server's limit would lie.
    #[error("generator limit: {0}")]
    GeneratorCapacity(String),
    /// Creating users, rooms or the first syncs failed: the run did not start (exit 1).
    #[error("setup failed: {0}")]
    Setup(String),
}

impl LoadError {
    /// 2 for input this tool refuses before any load, 1 when the deployment failed during setup.
    pub fn exit_code(&self) -> u8 {
        match self {
            LoadError::Setup(_) => 1,
            _ => 2,
        }
    }
}

//! The mxstack config file (`mxstack.yaml`) and its secrets file (`secrets.yaml`).
//!
//! Everything the tool renders is derived from [`Config`] plus [`Secrets`]; nothing else is read.
//! Loading never loses a location: every error names `file:line:column` and a fix.

mod config;
mod locate;
mod secrets;

pub use config::*;
pub use locate::{Located, SourceLocation, YamlLocator};
pub use secrets::*;

/// A problem found in a user-supplied file, pointing at where it is and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SpecError {
    pub location: SourceLocation,
    pub message: String,
    pub fix: String,
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}\n  fix: {}",
            self.location, self.message, self.fix
        )
    }
}

impl std::error::Error for SpecError {}

//! The config files of mxstack's own services, as types shared by the writer (`mxstack-topology`
//! renders them for Kubernetes and the local stack) and the reader (the service), so the two
//! cannot disagree. The writer builds these values; the reader deserializes them.
//!
//! Pure data only: behaviour that needs a service's own dependencies (PostgreSQL, age, the
//! environment) stays in that service, as extension traits. See README.md.

pub mod content_scanner;
pub mod key_vault;
pub mod li_console;
pub mod li_sync;
pub mod rtc_auth;

use serde::{Deserialize, Serialize};

/// A PostgreSQL database a service connects to; the password comes from the environment, never
/// from the file. The key vault, li-sync and the LI console each name theirs with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgConnection {
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub user: String,
    /// Environment variable holding the password.
    pub password_env: String,
}

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

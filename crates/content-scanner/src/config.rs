//! The scanner's config file (written by `mxstack render` and `mxstack up` from the topology).
//! The type, its loading and its checks live in `mxstack-service-config`, shared with the writer,
//! so the file written and the file read cannot disagree.

pub use mxstack_service_config::content_scanner::ScannerConfig;

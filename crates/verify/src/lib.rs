//! `mxstack verify`: post-deployment verification of a running deployment, local (`mxstack up`)
//! or a cluster. The checks are data ([`catalog`]); each run yields one [`report::CheckResult`]
//! per check: PASS with its evidence, SKIP with the reason it does not apply, WARN or FAIL with
//! what is wrong and the fix. What to check and where comes from the model (`mxstack_spec`
//! config, `mxstack_topology` registry); the CLI supplies the addresses ([`target::Target`]).

pub mod catalog;
pub mod error;
pub mod http;
mod monitoring;
pub mod report;
mod run;
pub mod secret;
pub mod services;
pub mod session;
pub mod target;
pub mod tls;
pub mod wellknown;

pub use error::VerifyError;
pub use report::{CheckResult, Report, Status};
pub use run::verify;
pub use secret::Secret;
pub use target::{Endpoint, LocalEndpoints, Target};

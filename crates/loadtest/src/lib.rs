//! `mxstack loadtest`: drives a Matrix deployment the way the seed sizes it (concurrent users,
//! each with a /sync long-poll open, messages at the tier's peak rate in rooms of realistic
//! sizes, uploads, typing, receipts) and says whether the tier's promise holds
//! (docs/LOADTEST.md).

pub mod engine;
pub mod error;
pub mod matrix;
pub mod mix;
pub mod profile;
pub mod report;
pub mod run;
pub mod setup;
pub mod stats;

pub use error::LoadError;
pub use run::{main, Options};

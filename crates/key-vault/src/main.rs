//! Standalone binary of the key vault (the same service as `mxstack serve key-vault`), for images
//! and tests that need nothing else of mxstack.
//!
//! Usage: mxstack-key-vault --config vault.yaml

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut config: Option<PathBuf> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" => config = args.next().map(PathBuf::from),
            "-h" | "--help" => {
                println!("usage: mxstack-key-vault --config vault.yaml");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("error: unexpected argument `{other}` (see --help)");
                return ExitCode::from(2);
            }
        }
    }
    let Some(config) = config else {
        eprintln!("error: --config FILE is required (see --help)");
        return ExitCode::from(2);
    };
    match mxstack_key_vault::run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

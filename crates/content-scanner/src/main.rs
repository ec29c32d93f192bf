//! Standalone binary of the content scanner (the same service as `mxstack serve content-scanner`),
//! for images and benchmarks that need nothing else of mxstack.
//!
//! Usage: mxstack-content-scanner --config scanner.yaml [--threads N]

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut config: Option<PathBuf> = None;
    let mut threads = 2usize;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" => config = args.next().map(PathBuf::from),
            "--threads" => threads = args.next().and_then(|t| t.parse().ok()).unwrap_or(0),
            "-h" | "--help" => {
                println!("usage: mxstack-content-scanner --config scanner.yaml [--threads N]");
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
    if threads == 0 {
        eprintln!("error: --threads takes a positive number");
        return ExitCode::from(2);
    }
    match mxstack_content_scanner::run(&config, threads) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

//! `mxstack-li-console --config FILE`: the console on its own (the image runs `mxstack serve
//! li-console`, the same code).

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let config = match args.as_slice() {
        [_, flag, path] if flag == "--config" => std::path::PathBuf::from(path),
        _ => {
            eprintln!("usage: mxstack-li-console --config FILE");
            std::process::exit(2);
        }
    };
    if let Err(e) = mxstack_li_console::run(&config) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

//! `rhizome`: the command line of the small peer.
//!
//! Today it runs the demo of the foundation: replicas on LMDB that write
//! offline, exchange field-level deltas (also through a peer in the middle),
//! and converge. Later subcommands (`exec`, `shell`, `peer`, `sim`) join it as
//! their issues land.

mod demo;

use std::process::ExitCode;

const USAGE: &str = "usage: rhizome demo [--data DIR]

  demo   three replicas on LMDB edit the same documents offline (fields,
         counters, deletes), sync through field-level deltas, also across a
         peer in the middle, and must converge; exits 1 if they do not.
         --data DIR keeps the stores in DIR (default: a temporary folder).";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("demo") => match demo::Options::parse(&args[1..]) {
            Ok(opts) => demo::run(&opts),
            Err(e) => {
                eprintln!("rhizome demo: {e}\n\n{USAGE}");
                ExitCode::from(2)
            }
        },
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

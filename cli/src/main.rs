//! `rhizome`: the command line of the small peer.
//!
//! `demo` runs replicas on LMDB that write offline, exchange field-level
//! deltas (also through a peer in the middle) and converge; `exec` and
//! `shell` run DQL on a store on disk; `sim` runs a simulated mesh scenario
//! (`rhizome_sim::cli`; deterministic in the madsim build, `scripts/sim`);
//! `peer` runs a long-lived peer that syncs over QUIC (not in the madsim
//! build, which has no real sockets).

mod demo;
mod dql;
#[cfg(not(madsim))]
mod peer;

use std::process::ExitCode;

const USAGE: &str = "usage: rhizome demo [--data DIR]
       rhizome exec --data DIR \"STATEMENT\" [--args JSON]
       rhizome shell --data DIR
       rhizome sim [--peers N] [--seed S] [--scenario NAME] [--json]
       rhizome peer --data DIR [--listen ADDR] [--connect ADDR]... [--app-key KEY]
                    [--subscribe DQL]... [--interface NAME]... [--no-mdns]

  demo   three replicas on LMDB edit the same documents offline (fields,
         counters, deletes), sync through field-level deltas, also across a
         peer in the middle, and must converge; exits 1 if they do not.
         --data DIR keeps the stores in DIR (default: a temporary folder).
  exec   runs one DQL statement on the store in DIR; prints result documents
         as JSON lines and mutations as {\"mutated\":[ids]}.
  shell  an interactive DQL prompt on the store in DIR, with history.
  sim    runs a simulated mesh of N peers (scenarios partition-heal, chain,
         churn, skew, storm, crash-restart) and ends with one JSON line;
         exits 1 if it did not converge. Reproducible in the madsim build:
         scripts/sim ARGS (see rhizome sim --help).
  peer   a long-lived peer on the store in DIR that syncs over QUIC: listens
         on ADDR (default 0.0.0.0:0, any port), dials each --connect ADDR
         (again whenever the link drops), admits only peers with the same
         app key (--app-key or RHIZOME_APP_KEY; without one, a public
         development key). Prints link events as lines, runs DQL statements
         read from stdin (one per line; results as exec prints them) and
         syncs the collections they name (or each --subscribe query).
         Finds the app's other peers by mDNS (DNS-SD _rhizome._udp) and
         dials them, unless --no-mdns. Each --interface NAME (e.g. awdl0,
         p2p-wlan0) adds a peer-to-peer Wi-Fi link: QUIC on that
         interface's IPv6 link-local address, discovery on it alone.
         .links and .presence list the links. Exits on end of input or
         SIGTERM.";

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
        Some(cmd @ ("exec" | "shell")) => match dql::Options::parse(&args[1..], cmd == "exec") {
            Ok(opts) if cmd == "exec" => dql::exec(&opts),
            Ok(opts) => dql::shell(&opts),
            Err(e) => {
                eprintln!("rhizome {cmd}: {e}\n\n{USAGE}");
                ExitCode::from(2)
            }
        },
        Some("sim") => rhizome_sim::main_with_args(&args[1..]),
        #[cfg(not(madsim))]
        Some("peer") => match peer::Options::parse(&args[1..]) {
            Ok(opts) => peer::run(opts),
            Err(e) => {
                eprintln!("rhizome peer: {e}\n\n{USAGE}");
                ExitCode::from(2)
            }
        },
        #[cfg(madsim)]
        Some("peer") => {
            eprintln!("rhizome peer: not available in the simulator (--cfg madsim) build");
            ExitCode::from(2)
        }
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

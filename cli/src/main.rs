//! `rhizome`: the command line of the small peer.
//!
//! `demo` runs four `rhizome peer` processes linked in a ring through
//! relays it can cut, writing concurrently and offline, and checks that
//! they converge (`demo --local`: the in-process foundation demo, three
//! replicas exchanging field-level deltas by hand); `exec` and
//! `shell` run DQL on a store on disk; `sim` runs a simulated mesh scenario
//! (`rhizome_sim::cli`; deterministic in the madsim build, `scripts/sim`);
//! `peer` runs a long-lived peer that syncs over QUIC (not in the madsim
//! build, which has no real sockets).

mod alloc;
#[cfg(not(madsim))]
mod demo;
mod dql;
mod local_demo;
#[cfg(not(madsim))]
mod peer;

use std::process::ExitCode;

// Syncing is allocation-heavy (a frame, a change, a version vector per
// message): mimalloc cut the simulator's time by a measured share over
// glibc malloc (benches/RESULTS.md); `alloc.rs` says how it is called.
#[global_allocator]
static GLOBAL: alloc::Mimalloc = alloc::Mimalloc;

const USAGE: &str = "usage: rhizome demo [--data DIR]
       rhizome demo --local [--data DIR]
       rhizome exec --data DIR \"STATEMENT\" [--args JSON]
       rhizome shell --data DIR
       rhizome sim [--peers N] [--seed S] [--scenario NAME] [--json]
       rhizome peer --data DIR [--listen ADDR] [--connect ADDR]... [--app-key KEY]
                    [--subscribe DQL]... [--observe DQL]... [--idle-timeout-ms MS]
                    [--interface NAME]... [--no-mdns]

  demo   four peers (alice, bob, carol, dave) run as separate `rhizome peer`
         processes, linked in a ring through UDP relays that the demo cuts
         and restores. They write the same documents, fields and counters
         at once, keep writing offline while the ring is split, and merge
         when it heals; the demo shows each peer's live observer and the
         link graph as it changes, and ends by comparing every peer's
         documents: prints `every peer converged` (exit 0) or the
         differences (exit 1). Takes about 10 seconds.
         --data DIR keeps the stores in DIR (empty or new; default: a
         temporary folder).
         --local: the in-process foundation demo instead (three replicas on
         LMDB exchanging field-level deltas by hand, also across a peer in
         the middle).
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
         Each --observe query prints `observe K: N items +I -D ~U` when
         its result changes. --idle-timeout-ms MS declares a silent link
         down after MS (default 10000; keep-alives, dialling and redial
         backoff follow).
         Finds the app's other peers by mDNS (DNS-SD _rhizome._udp) and
         dials them, unless --no-mdns. Each --interface NAME (e.g. awdl0,
         p2p-wlan0) adds a peer-to-peer Wi-Fi link: QUIC on that
         interface's IPv6 link-local address, discovery on it alone.
         .links and .presence list the links. Exits on end of input or
         SIGTERM.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("demo") if args[1..].iter().any(|a| a == "--local") => {
            let rest: Vec<String> = args[1..].iter().filter(|a| *a != "--local").cloned().collect();
            match local_demo::Options::parse(&rest) {
                Ok(opts) => local_demo::run(&opts),
                Err(e) => {
                    eprintln!("rhizome demo: {e}\n\n{USAGE}");
                    ExitCode::from(2)
                }
            }
        }
        #[cfg(not(madsim))]
        Some("demo") => match demo::Options::parse(&args[1..]) {
            Ok(opts) => demo::run(&opts),
            Err(e) => {
                eprintln!("rhizome demo: {e}\n\n{USAGE}");
                ExitCode::from(2)
            }
        },
        #[cfg(madsim)]
        Some("demo") => {
            eprintln!("rhizome demo: not available in the simulator (--cfg madsim) build; try rhizome demo --local");
            ExitCode::from(2)
        }
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

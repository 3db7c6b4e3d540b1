//! `rhizome sim --peers N --seed S --scenario NAME [--json]`: runs one
//! scenario and ends with one JSON line (see [`Report::json`]).
//!
//! Each run gets a runtime of its own: under `--cfg madsim` a madsim
//! runtime seeded by the seed (so the seed drives the scheduler and every
//! random draw too, and the same seed gives the same run; with
//! `MADSIM_TEST_CHECK_DETERMINISM` set it runs twice and madsim checks the
//! runs draw the same numbers); built normally, a tokio runtime in real
//! time (the scenarios run, but sleeps are real and runs are not
//! reproducible). `scripts/sim` builds the madsim one.

use crate::scenarios::{self, Report, Scenario};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

/// Usage of `rhizome sim`.
pub const USAGE: &str = "usage: rhizome sim [--peers N] [--seed S] [--scenario NAME] [--json]

  Runs one simulated scenario: N real peers (default 10) on a plane, each
  holding a few sessions per link kind with peers in range (its connection
  planner picks and rotates them) over modelled BLE, Wi-Fi and LAN links
  with faults drawn from the seed S (default 1); ends with one JSON line.
  --json prints that line only. Scenarios: partition-heal (default), chain,
  churn, skew, storm, crash-restart, crowd. Deterministic (virtual time) only in the madsim build:
  scripts/sim ARGS.";

/// Parsed arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The scenario.
    pub scenario: Scenario,
    /// Peers.
    pub peers: usize,
    /// The seed.
    pub seed: u64,
    /// Print the JSON line only.
    pub json: bool,
}

impl Options {
    /// Parses `args` (after `sim`).
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut o = Options {
            scenario: Scenario::PartitionHeal,
            peers: 10,
            seed: 1,
            json: false,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| it.next().cloned().ok_or(format!("{name} needs a value"));
            match arg.as_str() {
                "--peers" => {
                    o.peers = value("--peers")?.parse().map_err(|e| format!("--peers: {e}"))?;
                    if o.peers < 2 {
                        return Err("--peers: at least 2".into());
                    }
                }
                "--seed" => o.seed = value("--seed")?.parse().map_err(|e| format!("--seed: {e}"))?,
                "--scenario" => {
                    let name = value("--scenario")?;
                    o.scenario = Scenario::from_name(&name).ok_or(format!("unknown scenario {name:?}"))?;
                }
                "--json" => o.json = true,
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(o)
    }
}

/// `rhizome sim ARGS`: exit 0 if the run converged, 1 if not, 2 on bad
/// arguments or a failed run.
pub fn main_with_args(args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let o = match Options::parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("rhizome sim: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if !o.json {
        let mode = if cfg!(madsim) {
            "madsim, virtual time"
        } else {
            "tokio, real time: not reproducible; scripts/sim runs the madsim build"
        };
        eprintln!(
            "rhizome sim: {} with {} peers, seed {} ({mode})",
            o.scenario.name(),
            o.peers,
            o.seed
        );
    }
    match run_seeded(o.scenario, o.peers, o.seed) {
        Ok(r) => {
            println!("{}", r.json());
            if r.converged {
                ExitCode::SUCCESS
            } else {
                if !o.json {
                    eprintln!(
                        "rhizome sim: did not converge; reproduce with: scripts/sim --scenario {} --peers {} --seed {}",
                        o.scenario.name(),
                        o.peers,
                        o.seed
                    );
                }
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("rhizome sim: the run failed: {e}");
            ExitCode::from(2)
        }
    }
}

/// Folders of on-disk runs, numbered (no randomness: both runs of a
/// determinism check must draw the same numbers).
static RUNS: AtomicU64 = AtomicU64::new(0);

/// One run inside a runtime: its folder (if on disk) is made and removed
/// here.
async fn run_in_runtime(scenario: Scenario, peers: usize, seed: u64) -> Result<Report, String> {
    let root = scenario.on_disk().then(|| {
        std::env::temp_dir().join(format!(
            "rhizome-sim-{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        ))
    });
    if let Some(r) = &root {
        let _ = std::fs::remove_dir_all(r);
    }
    let out = scenarios::run(scenario, peers, seed, root.as_deref()).await;
    if let Some(r) = &root {
        let _ = std::fs::remove_dir_all(r);
    }
    out.map_err(|e| e.to_string())
}

/// Runs `scenario` on a runtime of its own seeded by `seed` (see the
/// module doc); sets the report's wall time.
pub fn run_seeded(scenario: Scenario, peers: usize, seed: u64) -> Result<Report, String> {
    let start = std::time::Instant::now();
    let mut report = run_runtime(scenario, peers, seed)?;
    report.wall_ms = start.elapsed().as_millis() as u64;
    Ok(report)
}

#[cfg(madsim)]
fn run_runtime(scenario: Scenario, peers: usize, seed: u64) -> Result<Report, String> {
    use madsim::runtime::Runtime;
    use std::sync::Mutex;

    /// The run a determinism check repeats (madsim takes a function
    /// pointer, so the run's parameters wait here; one check at a time).
    static JOB: Mutex<Option<(Scenario, usize, u64)>> = Mutex::new(None);
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    fn job() -> impl std::future::Future<Output = Result<Report, String>> {
        let job = *JOB.lock().unwrap_or_else(|p| p.into_inner());
        async move {
            let (scenario, peers, seed) = job.ok_or("no job")?;
            run_in_runtime(scenario, peers, seed).await
        }
    }

    if std::env::var_os("MADSIM_TEST_CHECK_DETERMINISM").is_some() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        *JOB.lock().unwrap_or_else(|p| p.into_inner()) = Some((scenario, peers, seed));
        return Runtime::check_determinism(seed, madsim::Config::default(), job);
    }
    Runtime::with_seed_and_config(seed, madsim::Config::default()).block_on(run_in_runtime(scenario, peers, seed))
}

#[cfg(not(madsim))]
fn run_runtime(scenario: Scenario, peers: usize, seed: u64) -> Result<Report, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(run_in_runtime(scenario, peers, seed))
}

//! The benchmark suite of issue 7: Rhizome against SQLite (rusqlite,
//! bundled), raw LMDB (heed), automerge, yrs and loro, in one process, on
//! the same deterministic data, six workloads, one table each, and the
//! issue's targets judged met or missed from ratios measured in this run.
//!
//! `cargo run --release -p rhizome-benches --bin suite [-- --quick] [-- --only 1,3]`
//!
//! `--quick` runs every workload at small sizes (a smoke test: the code
//! paths and assertions, not the figures); `--only` picks workloads. The
//! memory workload re-executes this binary with a hidden `--memory-child`
//! argument, one fresh process per system.

mod crdt;
mod insert;
mod memory;
mod rhizome;
mod sync;
mod writers;

use std::time::Instant;

/// The sizes of one run.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// Documents inserted (1), queried (2), shared before a reconcile (4),
    /// held in memory (6).
    pub docs: usize,
    /// Documents per transaction when inserting.
    pub txn_docs: usize,
    /// Runs of each durable insert; the best is kept.
    pub insert_runs: usize,
    /// Rounds of each query measurement (median).
    pub query_reps: usize,
    /// Records shared before the concurrent edits (3).
    pub merge_records: usize,
    /// Edits per replica (3).
    pub merge_edits: usize,
    /// Edits per transaction (3).
    pub edit_txn: usize,
    /// Field edits on one side before the reconcile (4).
    pub reconcile_edits: usize,
    /// Peers writing one shared record (5), two cases.
    pub writers: [usize; 2],
    /// Documents automerge holds in workloads 1, 4 and 6: its inserts slow
    /// down as the document grows (0.5 ms a record at 20,000 records on
    /// this machine), so the full data set alone would take minutes.
    pub automerge_docs: usize,
}

impl Sizes {
    /// The sizes of the issue.
    pub const FULL: Sizes = Sizes {
        docs: 100_000,
        txn_docs: 1_000,
        insert_runs: 2,
        query_reps: 5,
        merge_records: 10_000,
        merge_edits: 50_000,
        edit_txn: 1_000,
        reconcile_edits: 100,
        writers: [1_540, 30_000],
        automerge_docs: 10_000,
    };
    /// A smoke test.
    pub const QUICK: Sizes = Sizes {
        docs: 5_000,
        txn_docs: 1_000,
        insert_runs: 1,
        query_reps: 3,
        merge_records: 1_000,
        merge_edits: 5_000,
        edit_txn: 1_000,
        reconcile_edits: 100,
        writers: [154, 1_000],
        automerge_docs: 2_000,
    };
}

/// One of the targets, judged on this run's figures.
#[derive(Clone, Debug)]
pub struct Target {
    /// The workload and the target.
    pub what: String,
    /// Met?
    pub met: bool,
    /// The figures it was judged on.
    pub detail: String,
}

impl Target {
    /// A target with its figures.
    pub fn new(what: &str, met: bool, detail: String) -> Target {
        Target {
            what: what.into(),
            met,
            detail,
        }
    }
}

/// User and system CPU time of this process (`/proc/self/stat`, in the
/// kernel's clock ticks of 1/100 s): the machine is shared, so wall time
/// alone says little about what the suite costs.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at state.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, state (3) the first here.
    let ticks = |i: usize| f.get(i).and_then(|w| w.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

fn arg_value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--memory-child") {
        let system = args.get(i + 1).map(String::as_str).unwrap_or_default();
        let docs = args.get(i + 2).and_then(|s| s.parse().ok()).unwrap_or(0);
        memory::child(system, docs);
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let sizes = if quick { Sizes::QUICK } else { Sizes::FULL };
    let only: Vec<u32> = arg_value(&args, "--only")
        .map(|s| s.split(',').filter_map(|w| w.trim().parse().ok()).collect())
        .unwrap_or_else(|| (1..=6).collect());
    let start = Instant::now();
    println!(
        "Rhizome benchmark suite ({}): {} documents, seed {:#x}",
        if quick { "--quick sizes" } else { "issue 7 sizes" },
        sizes.docs,
        rhizome_benches::SEED
    );
    let root = tempfile::tempdir().expect("tempdir");
    if args.iter().any(|a| a == "--profile-merge") {
        sync::profile_merge(&sizes, root.path());
        return;
    }
    let mut targets = Vec::new();
    // Workloads 1, 2 and 4 share the stores and replicas 1 builds.
    let needs_build = only.iter().any(|w| [1, 2, 4].contains(w));
    let built = needs_build.then(|| insert::run(&sizes, root.path(), only.contains(&1), &mut targets));
    if let (Some(b), true) = (&built, only.contains(&2)) {
        insert::queries(&sizes, b);
    }
    if only.contains(&3) {
        sync::merge(&sizes, root.path(), &mut targets);
    }
    if let (Some(b), true) = (built, only.contains(&4)) {
        sync::reconcile(&sizes, root.path(), b, &mut targets);
    }
    if only.contains(&5) {
        writers::run(&sizes, root.path(), &mut targets);
    }
    if only.contains(&6) {
        memory::run(&sizes, &mut targets);
    }
    let rows: Vec<Vec<String>> = targets
        .iter()
        .map(|t| {
            vec![
                t.what.clone(),
                if t.met { "met" } else { "MISSED" }.into(),
                t.detail.clone(),
            ]
        })
        .collect();
    rhizome_benches::print_left_table(
        "Targets (issue 7), judged on this run",
        &["target", "", "figures"],
        &rows,
    );
    println!(
        "\ntotal time {:.1} s wall, {:.1} s CPU of this process (memory children not included; load average {})",
        start.elapsed().as_secs_f64(),
        cpu_seconds(),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
}

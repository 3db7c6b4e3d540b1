//! Every scenario over tens of seeds: each run must converge (same
//! documents everywhere, and CRDT metadata with `CHECK_CRDT_METADATA`, no acknowledged write lost, every live query on
//! its peer's documents, no peer past its session limits), and the
//! "sometimes" counters summed over the seeds prove the partitions, clogs,
//! conflicts, crashes, movement, skew and rotations really happened. Then
//! the committed regression seeds
//! (`sim/regressions.txt`) are replayed.
//!
//! Each run has a runtime of its own seeded by its seed
//! (`rhizome_sim::run_seeded`): under `--cfg madsim` virtual time, the
//! same seed the same run, and with `MADSIM_TEST_CHECK_DETERMINISM=1` each
//! run twice, checked by madsim to draw the same numbers. A failing run
//! names its seed; reproduce it with `scripts/sim --scenario NAME --peers N
//! --seed S` and add the line to `sim/regressions.txt`.

use rhizome_sim::{run_seeded, Report, Scenario};

/// Seeds per scenario (more under madsim, where runs take no real time
/// for their virtual seconds).
fn seeds() -> std::ops::RangeInclusive<u64> {
    if cfg!(madsim) {
        1..=24
    } else {
        1..=3
    }
}

fn check(scenario: Scenario, peers: usize, seed: u64) -> Report {
    let r = run_seeded(scenario, peers, seed).unwrap_or_else(|e| panic!("{} seed {seed}: {e}", scenario.name()));
    assert!(
        r.converged,
        "{} did not converge; reproduce: scripts/sim --scenario {} --peers {peers} --seed {seed}\n{}",
        r.scenario,
        r.scenario,
        r.json()
    );
    assert_eq!(r.lost_writes, 0, "{}", r.json());
    assert_eq!(r.stale_observers, 0, "{}", r.json());
    assert_eq!(r.session_limit_breaches, 0, "{}", r.json());
    if rhizome_sim::scenarios::CHECK_CRDT_METADATA {
        assert_eq!(r.crdt_diverged, 0, "{}", r.json());
    }
    assert!(r.bytes > 0 && r.messages > 0 && r.bytes_lower_bound > 0, "{}", r.json());
    r
}

/// Runs `scenario` over the seeds; returns the reports.
fn sweep(scenario: Scenario, peers: usize) -> Vec<Report> {
    seeds().map(|seed| check(scenario, peers, seed)).collect()
}

fn total(reports: &[Report], f: impl Fn(&Report) -> u64) -> u64 {
    reports.iter().map(f).sum()
}

#[test]
fn partitions_heal_and_converge() {
    let r = sweep(Scenario::PartitionHeal, 7);
    assert!(total(&r, |r| r.partitions) > 0, "the mesh was split");
    assert!(
        total(&r, |r| r.cuts) > 0 && total(&r, |r| r.split_writes) > 0,
        "split-brain writes"
    );
    assert!(total(&r, |r| r.clogs) > 0, "links clogged");
    assert!(total(&r, |r| r.conflicts) > 0, "conflicting writes");
    assert!(total(&r, |r| r.traffic.spikes) > 0, "delay spikes");
    // Each fault is on in about half the runs: 3 seeds may miss one.
    if rhizome_sim::scenarios::LOSSY && cfg!(madsim) {
        assert!(total(&r, |r| r.traffic.lost_chunks) > 0, "lost chunks");
        assert!(total(&r, |r| r.traffic.duplicated) > 0, "duplicated frames");
        assert!(total(&r, |r| r.traffic.reordered) > 0, "reordered frames");
    }
}

#[test]
fn chains_converge_over_every_hop() {
    let r = sweep(Scenario::Chain, 6);
    assert!(total(&r, |r| r.conflicts) > 0, "conflicting writes");
}

#[test]
fn churn_moves_crashes_and_converges() {
    let r = sweep(Scenario::Churn, 6);
    assert!(total(&r, |r| r.crashes) > 0, "peers crashed and restarted from disk");
    assert!(total(&r, |r| r.link_changes) > 0, "links came and went");
    assert!(total(&r, |r| r.partitions) > 0, "the mesh was in pieces");
}

#[test]
fn skewed_clocks_converge() {
    let r = sweep(Scenario::Skew, 5);
    assert!(r.iter().all(|r| r.skew_spread_ms >= 60_000), "clocks minutes apart");
    assert!(total(&r, |r| r.conflicts) > 0, "conflicting writes");
}

#[test]
fn storms_of_concurrent_writers_converge() {
    let r = sweep(Scenario::Storm, 6);
    assert!(total(&r, |r| r.conflicts) > 0, "concurrent writes");
}

#[test]
fn peers_restarted_from_disk_lose_nothing() {
    let r: Vec<Report> = seeds().take(8).map(|s| check(Scenario::CrashRestart, 4, s)).collect();
    assert!(r.iter().all(|r| r.crashes == 3), "three restarts each");
}

#[test]
fn crowds_converge_within_session_limits() {
    // Rotation periods are virtual seconds: in real time a run would sleep
    // for a minute, so the crowd runs under madsim only.
    if !cfg!(madsim) {
        return;
    }
    let r: Vec<Report> = (1..=4).map(|s| check(Scenario::Crowd, 48, s)).collect();
    // Everyone in range of 47 others, yet no peer above the default
    // limits (3 BLE, 4 Wi-Fi); `check` saw no breach.
    assert!(r.iter().all(|r| r.max_sessions_seen <= 4), "within limits");
    assert!(r.iter().all(|r| r.max_sessions_seen >= 3), "the limits were reached");
    assert!(total(&r, |r| r.rotations) > 0, "sessions rotated");
    assert!(total(&r, |r| r.conflicts) > 0, "concurrent writes");
}

#[test]
fn regression_seeds_pass() {
    let text = include_str!("../regressions.txt");
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [name, peers, seed] = parts[..] else {
            panic!("regressions.txt: bad line {line:?}")
        };
        let scenario = Scenario::from_name(name).unwrap_or_else(|| panic!("regressions.txt: unknown scenario {name}"));
        check(scenario, peers.parse().expect("peers"), seed.parse().expect("seed"));
    }
}

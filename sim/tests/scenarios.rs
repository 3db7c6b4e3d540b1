//! Scenarios over several seeds each: every run must converge, and the
//! "sometimes" counters prove the partitions and split-brain writes really
//! happened. Under `--cfg madsim` (`scripts/test-all`) each seed runs twice
//! and must run identically.

use rhizome_sim::{chain, crash_restart, partition_heal};

/// Seeds per scenario: a fixed spread, so a failure names its seed.
const SEEDS: [u64; 8] = [1, 2, 3, 5, 8, 13, 21, 34];

#[tokio::test]
async fn chains_converge() {
    for seed in SEEDS {
        let r = chain(5, seed).await.expect("run");
        assert!(r.converged, "chain did not converge: {r:?}");
        assert_eq!(r.lost_writes, 0, "{r:?}");
        assert!(r.bytes > 0 && r.messages > 0, "{r:?}");
    }
}

#[tokio::test]
async fn partitions_heal_and_converge() {
    let (mut cuts, mut split_writes) = (0, 0);
    for seed in SEEDS {
        let r = partition_heal(6, seed).await.expect("run");
        assert!(r.converged, "partition-heal did not converge: {r:?}");
        assert_eq!(r.lost_writes, 0, "{r:?}");
        cuts += r.cuts;
        split_writes += r.split_writes;
    }
    assert!(cuts > 0 && split_writes > 0, "the partitions happened");
}

#[tokio::test]
async fn peers_restarted_from_disk_lose_nothing_and_converge() {
    for seed in &SEEDS[..4] {
        let root = tempfile::tempdir().expect("tempdir");
        let r = crash_restart(4, *seed, root.path()).await.expect("run");
        assert!(r.converged, "crash-restart did not converge: {r:?}");
        assert_eq!(r.lost_writes, 0, "{r:?}");
        assert_eq!(r.cuts, 3, "three restarts happened");
    }
}

//! Merges pipelined by the sessions and joined by the merger: two peers
//! that each wrote more documents than one batch holds (so a round brings
//! many batches, queued at the merger together) converge to the same
//! documents, with exact per-origin counts, whatever the seed's link
//! model and writes interleaved with the sync. Runs on tokio and, built
//! with `--cfg madsim`, inside the simulator (`MERGE_SEEDS` runs more).

use rhizome_actors::{InProcessLink, LinkModel, Peer, PeerConfig};
use serde_json::json;
use std::time::Duration;

/// Documents each peer writes before the link is up (over several
/// batches of `session::BATCH_DOCS`).
const BEFORE: u64 = 2_400;
/// Documents each peer writes while the session runs.
const DURING: u64 = 300;
/// Documents per insert.
const CHUNK: u64 = 150;

async fn insert(peer: &Peer, tag: &str, from: u64, to: u64) {
    for start in (from..to).step_by(CHUNK as usize) {
        let ids: Vec<u64> = (start..(start + CHUNK).min(to)).collect();
        let slots: Vec<String> = ids.iter().map(|i| format!("(:d{i})")).collect();
        let params: serde_json::Map<String, serde_json::Value> = ids
            .iter()
            .map(|i| {
                (
                    format!("d{i}"),
                    json!({"_id": format!("{tag}-{i:05}"), "n": i, "tag": tag}),
                )
            })
            .collect();
        peer.store()
            .execute(
                &format!("INSERT INTO t DOCUMENTS {}", slots.join(", ")),
                serde_json::Value::Object(params),
            )
            .await
            .expect("insert");
    }
}

async fn all(peer: &Peer) -> Vec<serde_json::Value> {
    peer.store()
        .execute("SELECT * FROM t ORDER BY _id", json!({}))
        .await
        .expect("select")
        .items
}

async fn run(seed: u64) {
    let a = Peer::open(PeerConfig::memory()).await.expect("open a");
    let b = Peer::open(PeerConfig::memory()).await.expect("open b");
    for p in [&a, &b] {
        p.sync()
            .subscribe("SELECT * FROM t", json!({}))
            .await
            .expect("subscribe");
    }
    insert(&a, "a", 0, BEFORE).await;
    insert(&b, "b", 0, BEFORE).await;
    let link: InProcessLink = if seed.is_multiple_of(2) {
        a.connect_in_process(&b).await
    } else {
        a.connect_in_process_with(&b, LinkModel::lan().with_seed(seed)).await
    }
    .expect("connect");
    // Writes while the first rounds are being merged.
    let (a2, b2) = (a.clone(), b.clone());
    let wa = tokio::spawn(async move { insert(&a2, "a", BEFORE, BEFORE + DURING).await });
    let wb = tokio::spawn(async move { insert(&b2, "b", BEFORE, BEFORE + DURING).await });
    wa.await.expect("writer a");
    wb.await.expect("writer b");

    let want = 2 * (BEFORE + DURING) as usize;
    let (mut da, mut db) = (Vec::new(), Vec::new());
    // Bounded: convergence takes a few rounds.
    for _ in 0..3_000 {
        da = all(&a).await;
        db = all(&b).await;
        if da.len() == want && db.len() == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!((da.len(), db.len()), (want, want), "seed {seed}: no convergence");
    assert_eq!(da, db, "seed {seed}: the replicas differ");

    // Every document of the other side arrived once as a new change, in
    // batches that were each counted (none refused).
    for (p, other) in [(&a, &b), (&b, &a)] {
        let stats = p.merge_stats().await.expect("stats");
        let s = stats.get(&other.id()).copied().unwrap_or_default();
        assert_eq!(s.refused, 0, "seed {seed}: refused changes {s:?}");
        assert!(s.applied as usize >= want / 2, "seed {seed}: applied {s:?}");
        assert!(s.received >= s.applied, "seed {seed}: {s:?}");
        assert!(s.batches >= (BEFORE + DURING).div_ceil(500), "seed {seed}: {s:?}");
    }
    link.close().await;
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn pipelined_joined_merges_converge() {
    let seeds: u64 = std::env::var("MERGE_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if cfg!(madsim) { 6 } else { 3 });
    if let Some(seed) = std::env::var("MERGE_SEED").ok().and_then(|s| s.parse().ok()) {
        return run(seed).await;
    }
    for seed in 0..seeds {
        run(seed).await;
    }
}

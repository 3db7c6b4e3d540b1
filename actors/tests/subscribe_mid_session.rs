//! Peers that subscribe while their sessions are up and documents flow
//! (the order of links, subscriptions and writes varied by a seed) all end
//! with every document: no claim is recorded for writes a peer did not
//! receive. Runs on tokio and, built with `--cfg madsim`, inside the
//! simulator (where `MADSIM_TEST_NUM` runs more seeds).

use rhizome_actors::{InProcessLink, LinkModel, Peer, PeerConfig};
use serde_json::json;
use std::time::Duration;

/// A small deterministic generator (the test's own: the interleavings
/// come from its seed, and from madsim's under the simulator).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const DOCS: u64 = 20;

async fn ids(peer: &Peer) -> Vec<String> {
    let out = peer
        .store()
        .execute("SELECT * FROM t ORDER BY _id", json!({}))
        .await
        .expect("select");
    out.items
        .iter()
        .map(|d| d["_id"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// One run: three peers, all three links up in an order drawn from the
/// seed (some before, some after the subscriptions), each peer subscribing
/// at a drawn moment among its own writes.
async fn run(seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut peers = Vec::new();
    for _ in 0..3 {
        peers.push(Peer::open(PeerConfig::memory()).await.expect("open"));
    }
    // Links: a drawn subset up front, the others later.
    let pairs = [(0usize, 1usize), (0, 2), (1, 2)];
    let mut late = Vec::new();
    let mut links: Vec<InProcessLink> = Vec::new();
    let lan = rng.below(2) == 0;
    for &(a, b) in &pairs {
        if rng.below(3) == 0 {
            late.push((a, b, rng.below(30)));
            continue;
        }
        let link = if lan {
            peers[a]
                .connect_in_process_with(&peers[b], LinkModel::lan().with_seed(rng.next()))
                .await
        } else {
            peers[a].connect_in_process(&peers[b]).await
        };
        links.push(link.expect("connect"));
    }
    let mut tasks = Vec::new();
    for (n, peer) in peers.iter().enumerate() {
        let peer = peer.clone();
        let subscribe_at = rng.below(DOCS / 2);
        let pauses: Vec<u64> = (0..DOCS).map(|_| rng.below(4)).collect();
        tasks.push(tokio::spawn(async move {
            for (i, pause) in pauses.into_iter().enumerate() {
                if i as u64 == subscribe_at {
                    peer.sync()
                        .subscribe("SELECT * FROM t", json!({}))
                        .await
                        .expect("subscribe");
                }
                peer.store()
                    .execute(
                        "INSERT INTO t DOCUMENTS (:d)",
                        json!({"d": {"_id": format!("p{n}-{i:02}"), "n": i}}),
                    )
                    .await
                    .expect("insert");
                if pause > 0 {
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            }
            peer.store()
                .execute(
                    &format!(
                        "INSERT INTO t DOCUMENTS ({{'_id': 'shared', 'from_p{n}': true}}) ON ID CONFLICT DO UPDATE"
                    ),
                    json!({}),
                )
                .await
                .expect("shared");
        }));
    }
    late.sort_by_key(|l| l.2);
    let mut waited = 0;
    for (a, b, at) in late {
        tokio::time::sleep(Duration::from_millis(at - waited)).await;
        waited = at;
        let link = if lan {
            peers[a]
                .connect_in_process_with(&peers[b], LinkModel::lan().with_seed(rng.next()))
                .await
        } else {
            peers[a].connect_in_process(&peers[b]).await
        };
        links.push(link.expect("connect"));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let want = 3 * DOCS as usize + 1;
    let mut last = Vec::new();
    for _ in 0..1_000 {
        last = Vec::new();
        for p in &peers {
            last.push(ids(p).await);
        }
        if last.iter().all(|l| l.len() == want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let counts: Vec<usize> = last.iter().map(Vec::len).collect();
    assert!(
        counts.iter().all(|&c| c == want),
        "seed {seed}: no convergence, {counts:?} documents; missing: {:?}",
        last.iter()
            .map(|l| (0..3)
                .map(|n| (0..DOCS).filter(|i| !l.contains(&format!("p{n}-{i:02}"))).count())
                .collect::<Vec<_>>())
            .collect::<Vec<_>>()
    );
    for link in links {
        link.close().await;
    }
    for p in peers {
        p.close().await;
    }
}

#[tokio::test]
async fn peers_subscribing_mid_session_converge() {
    let seeds: u64 = std::env::var("SUBSCRIBE_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if cfg!(madsim) { 200 } else { 20 });
    if let Some(seed) = std::env::var("SUBSCRIBE_SEED").ok().and_then(|s| s.parse().ok()) {
        return run(seed).await;
    }
    for seed in 0..seeds {
        run(seed).await;
    }
}

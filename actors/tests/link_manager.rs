//! The link manager: several links to one remote peer carry one sync
//! session. The links here are pairs of bounded channels in process, pumped
//! by tasks at a rate per frame (a fast "LAN" and a slow "BLE"), as a
//! transport pumps a socket; cutting one closes its channels, as a
//! transport does when its connection goes down.
//!
//! Checked: the session runs on the fast link and sends nothing on the
//! standby one; cut mid-transfer, it carries on over the slow link with no
//! change lost or merged twice and no new handshake; a fast link brought
//! back takes over again; the session ends only with its last link.
//! Runs on tokio and under madsim (there over several seeds, each seed
//! also moving the moment of the cut).

use rhizome_actors::{AttachedLink, LinkKind, Peer, PeerConfig};
use rhizome_engine::sync::wire::{self, Message};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Documents written before the first sync: several batches (500 each).
const DOCS: usize = 3_000;

async fn peer() -> Peer {
    let peer = Peer::open(PeerConfig::memory()).await.expect("open");
    peer.sync()
        .subscribe("SELECT * FROM t", json!({}))
        .await
        .expect("subscribe");
    peer
}

/// Writes `n` documents `{prefix}{i}` in one transaction.
async fn write(peer: &Peer, prefix: &str, n: usize) {
    let prefix = prefix.to_string();
    peer.store()
        .transaction(move |tx| {
            for i in 0..n {
                tx.execute(
                    "INSERT INTO t DOCUMENTS (:d)",
                    json!({"d": {"_id": format!("{prefix}{i}"), "n": i}}),
                )?;
            }
            Ok(())
        })
        .await
        .expect("write");
}

/// What crossed one link (both directions).
#[derive(Default)]
struct Counts {
    frames: AtomicU64,
    hellos: AtomicU64,
}

impl Counts {
    fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    fn hellos(&self) -> u64 {
        self.hellos.load(Ordering::Relaxed)
    }
}

/// One direction of a link: frames from `from` to `to`, each after
/// `per_frame` (the link's rate), until `stop` fires or either end goes;
/// then `from` is dropped, which the sending session sees as its link
/// going down. Holds the receiving link weakly, as a transport's task.
fn pump(
    mut from: mpsc::Receiver<Vec<u8>>,
    to: Weak<AttachedLink>,
    per_frame: Duration,
    counts: Arc<Counts>,
    mut stop: oneshot::Receiver<()>,
) {
    tokio::spawn(async move {
        // Bounded by the link: every pass takes a frame or ends.
        loop {
            let frame = tokio::select! {
                biased;
                _ = &mut stop => break,
                f = from.recv() => f,
            };
            let Some(frame) = frame else { break };
            counts.frames.fetch_add(1, Ordering::Relaxed);
            if matches!(
                wire::decode(&frame, wire::MAX_FRAME_BYTES as usize),
                Ok((_, Message::Hello(_)))
            ) {
                counts.hellos.fetch_add(1, Ordering::Relaxed);
            }
            tokio::select! {
                biased;
                _ = &mut stop => break,
                () = tokio::time::sleep(per_frame) => {}
            }
            let Some(to) = to.upgrade() else { break };
            if to.deliver(frame).await.is_err() {
                break;
            }
        }
    });
}

/// A link between two peers: each side's handle, what crossed it, and the
/// switch that cuts it.
struct Wire {
    a: Arc<AttachedLink>,
    b: Arc<AttachedLink>,
    counts: Arc<Counts>,
    stops: Vec<oneshot::Sender<()>>,
}

impl Wire {
    async fn new(a: &Peer, b: &Peer, kind: LinkKind, per_frame: Duration) -> Wire {
        let (a_tx, a_rx) = mpsc::channel(8);
        let (b_tx, b_rx) = mpsc::channel(8);
        let la = Arc::new(a.attach_link(b.id(), kind, a_tx).await.expect("attach a"));
        let lb = Arc::new(b.attach_link(a.id(), kind, b_tx).await.expect("attach b"));
        let counts = Arc::new(Counts::default());
        let (stop_ab, stopped_ab) = oneshot::channel();
        let (stop_ba, stopped_ba) = oneshot::channel();
        pump(a_rx, Arc::downgrade(&lb), per_frame, counts.clone(), stopped_ab);
        pump(b_rx, Arc::downgrade(&la), per_frame, counts.clone(), stopped_ba);
        Wire {
            a: la,
            b: lb,
            counts,
            stops: vec![stop_ab, stop_ba],
        }
    }

    /// The transport loses the link: its channels close. Returns once both
    /// sessions have taken it out.
    async fn cut(&mut self) {
        self.stops.clear();
        eventually("the cut link to leave both sessions", async || {
            self.a.is_closed() && self.b.is_closed()
        })
        .await;
    }

    fn active(&self) -> bool {
        self.a.is_active() && self.b.is_active()
    }
}

async fn eventually(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    // Generous: a debug build on a loaded machine; virtual under madsim.
    for _ in 0..6_000 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Changes from `from` that brought `to` something new.
async fn applied(to: &Peer, from: &Peer) -> u64 {
    let stats = to.merge_stats().await.expect("stats");
    stats.get(&from.id()).map_or(0, |s| s.applied)
}

async fn converged(a: &Peer, b: &Peer) -> bool {
    let (sa, sb) = (a.store().crdt_states("t").await, b.store().crdt_states("t").await);
    matches!((sa, sb), (Ok(sa), Ok(sb)) if sa == sb)
}

/// The whole story of one seed (see the module doc); `seed` picks how far
/// the transfer is when the fast link is cut.
async fn fall_back_and_move_back(seed: u64) {
    let (a, b) = (peer().await, peer().await);
    write(&a, "a", DOCS).await;
    let fast_ms = Duration::from_millis(10);
    let slow_ms = Duration::from_millis(40);
    let mut fast = Wire::new(&a, &b, LinkKind::Lan, fast_ms).await;
    let slow = Wire::new(&a, &b, LinkKind::Ble, slow_ms).await;
    assert!(fast.active() && !slow.active(), "the session runs on the fast link");

    // Cut the fast link while the transfer is under way.
    let cut_at = 1 + seed % 4;
    eventually("part of the transfer", async || applied(&b, &a).await >= cut_at * 100).await;
    assert!(
        applied(&b, &a).await < DOCS as u64,
        "the transfer is still under way at the cut"
    );
    assert_eq!(slow.counts.frames(), 0, "nothing goes on the standby link");
    let hellos = fast.counts.hellos();
    fast.cut().await;
    assert!(slow.active(), "the session fell back to the slow link");
    assert!(!slow.a.is_closed() && !slow.b.is_closed(), "and goes on");
    eventually("convergence over the slow link", async || converged(&a, &b).await).await;
    assert_eq!(applied(&b, &a).await, DOCS as u64, "each change merged once");
    assert!(slow.counts.frames() > 0);
    assert_eq!(slow.counts.hellos(), 0, "no new handshake");

    // A fast link comes back: the session moves to it.
    let fast2 = Wire::new(&a, &b, LinkKind::Lan, fast_ms).await;
    assert!(fast2.active() && !slow.active());
    // Frames the slow link had taken before the move may still cross it.
    eventually("the slow link to drain", async || {
        let before = slow.counts.frames();
        tokio::time::sleep(slow_ms * 4).await;
        slow.counts.frames() == before
    })
    .await;
    let slow_frames = slow.counts.frames();
    write(&a, "later", 50).await;
    write(&b, "b", 50).await;
    eventually("convergence over the new fast link", async || {
        converged(&a, &b).await && applied(&a, &b).await == 50
    })
    .await;
    assert_eq!(applied(&b, &a).await, DOCS as u64 + 50);
    assert_eq!(slow.counts.frames(), slow_frames, "nothing more on the slow link");
    assert!(fast2.counts.frames() > 0);
    assert_eq!(
        fast.counts.hellos() + slow.counts.hellos() + fast2.counts.hellos(),
        hellos,
        "one handshake in all"
    );
    let links = a.presence().graph().peers.get(&b.id()).map(Vec::len);
    assert_eq!(links, Some(2), "both live links show in presence");
    drop((fast, slow, fast2));
    eventually("both presence graphs to empty", async || {
        a.presence().graph().peers.is_empty() && b.presence().graph().peers.is_empty()
    })
    .await;
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn a_session_falls_back_to_the_slow_link_mid_transfer_and_moves_back_to_a_fast_one() {
    fall_back_and_move_back(1).await;
}

/// The same story over several seeds of the simulator (task order, and the
/// moment of the cut).
#[cfg(madsim)]
#[test]
fn falling_back_and_moving_back_over_many_seeds() {
    for seed in 1..=8 {
        madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default())
            .block_on(fall_back_and_move_back(seed));
    }
}

#[tokio::test]
async fn a_session_ends_with_its_last_link_and_a_later_link_starts_afresh() {
    let (a, b) = (peer().await, peer().await);
    write(&a, "a", 10).await;
    let one = Wire::new(&a, &b, LinkKind::P2pWifi, Duration::from_millis(1)).await;
    let two = Wire::new(&a, &b, LinkKind::Ble, Duration::from_millis(1)).await;
    eventually("convergence", async || converged(&a, &b).await).await;
    // The transport drops the active link's handles: the other link goes on.
    let Wire { a: a1, b: b1, .. } = one;
    drop((a1, b1));
    eventually("the dropped link to leave presence", async || {
        a.presence().graph().peers.get(&b.id()).map(Vec::len) == Some(1)
    })
    .await;
    assert!(two.active() && !two.a.is_closed());
    write(&a, "more", 10).await;
    eventually("convergence over the other link", async || {
        converged(&a, &b).await && applied(&b, &a).await == 20
    })
    .await;
    // The last link goes: the session ends.
    let (a2, b2) = (two.a.clone(), two.b.clone());
    drop(two);
    tokio::time::timeout(Duration::from_secs(30), async {
        let a2 = Arc::into_inner(a2).expect("the only handle");
        a2.close().await;
        b2.closed().await;
    })
    .await
    .expect("both sessions end");
    // Presence hears of the link's end from the link's watcher task, which
    // may run after the session has closed.
    eventually("a's presence to empty", async || a.presence().graph().peers.is_empty()).await;
    // A link attached now starts a fresh session (a new handshake).
    let three = Wire::new(&a, &b, LinkKind::Lan, Duration::from_millis(1)).await;
    write(&b, "b", 5).await;
    eventually("convergence over a fresh session", async || {
        converged(&a, &b).await && applied(&a, &b).await == 5
    })
    .await;
    assert!(three.counts.hellos() >= 2, "a fresh handshake");
    drop(three);
    a.close().await;
    b.close().await;
}

//! `Peer::attach_link`: a sync session over any link that carries frames.
//! Here the link is two bounded channels in process, pumped by tasks, as a
//! transport would pump a socket. Runs on tokio and under madsim.

use rhizome_actors::{AttachedLink, LinkKind, Peer, PeerConfig, PeerId};
use serde_json::json;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::mpsc;

async fn peer() -> Peer {
    let peer = Peer::open(PeerConfig::memory()).await.expect("open");
    peer.sync()
        .subscribe("SELECT * FROM t", json!({}))
        .await
        .expect("subscribe");
    peer
}

async fn count(peer: &Peer) -> usize {
    let out = peer
        .store()
        .execute("SELECT * FROM t", json!({}))
        .await
        .expect("select");
    out.items.len()
}

/// Moves frames from one session's outbound channel to the other's link
/// until either ends. Holds the link weakly: the test owns it, as a
/// transport's connection task would.
fn pump(mut from: mpsc::Receiver<Vec<u8>>, to: Weak<AttachedLink>) {
    tokio::spawn(async move {
        while let Some(frame) = from.recv().await {
            let Some(to) = to.upgrade() else { break };
            if to.deliver(frame).await.is_err() {
                break;
            }
        }
    });
}

/// Attaches `a` and `b` to each other, `a` believing its remote is
/// `a_remote`.
async fn wire(a: &Peer, b: &Peer, a_remote: PeerId) -> (Arc<AttachedLink>, Arc<AttachedLink>) {
    let (a_tx, a_rx) = mpsc::channel(8);
    let (b_tx, b_rx) = mpsc::channel(8);
    let la = Arc::new(a.attach_link(a_remote, LinkKind::Lan, a_tx).await.expect("attach a"));
    let lb = Arc::new(b.attach_link(a.id(), LinkKind::Lan, b_tx).await.expect("attach b"));
    pump(a_rx, Arc::downgrade(&lb));
    pump(b_rx, Arc::downgrade(&la));
    (la, lb)
}

async fn eventually(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    for _ in 0..500 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn peers_attached_over_a_frame_link_converge_and_closing_ends_both_sessions() {
    let (a, b) = (peer().await, peer().await);
    for i in 0..20 {
        a.store()
            .execute("INSERT INTO t DOCUMENTS (:d)", json!({"d": {"_id": format!("a{i}")}}))
            .await
            .expect("insert");
    }
    b.store()
        .execute("INSERT INTO t DOCUMENTS ({'_id': 'b'})", json!({}))
        .await
        .expect("insert");
    let (la, lb) = wire(&a, &b, b.id()).await;
    eventually("convergence", async || count(&a).await == 21 && count(&b).await == 21).await;
    assert_eq!(
        a.presence().graph().peers.get(&b.id()).map(|l| l[0].kind),
        Some(LinkKind::Lan)
    );
    // The transport drops a's handle: a's session ends and its outbound
    // channel closes (the pump ends), as does b's when its handle goes.
    drop(la);
    drop(lb);
    eventually("both presence graphs to empty", async || {
        a.presence().graph().peers.is_empty() && b.presence().graph().peers.is_empty()
    })
    .await;
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn a_hello_naming_another_peer_than_the_link_ends_the_session() {
    let (a, b) = (peer().await, peer().await);
    b.store()
        .execute("INSERT INTO t DOCUMENTS ({'_id': 'b'})", json!({}))
        .await
        .expect("insert");
    // The link vouches for a peer that is not b; b's Hello names b.
    let (la, _lb) = wire(&a, &b, PeerId(0x1234)).await;
    tokio::time::timeout(Duration::from_secs(5), la.closed())
        .await
        .expect("a's session ends");
    assert_eq!(count(&a).await, 0);
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn attaching_to_itself_is_refused() {
    let a = peer().await;
    let (tx, _rx) = mpsc::channel(1);
    assert!(a.attach_link(a.id(), LinkKind::Lan, tx).await.is_err());
    a.close().await;
}

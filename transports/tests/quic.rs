//! QUIC links over real loopback sockets: two peers converge both ways, a
//! peer without the app key gets nothing, crossed dials make one link, and
//! a dropped link is redialled. Every wait is bounded.

#![cfg(not(madsim))]

use rhizome_actors::{Peer, PeerConfig};
use rhizome_transports::quic::{AppKey, LinkError, LinkEvent, QuicConfig, QuicTransport};
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;

const KEY: &[u8] = b"the app key of the tests";

async fn peer() -> Peer {
    let peer = Peer::open(PeerConfig::memory()).await.expect("open");
    peer.sync()
        .subscribe("SELECT * FROM t", json!({}))
        .await
        .expect("subscribe");
    peer
}

fn config(key: &[u8], connect: Vec<SocketAddr>) -> QuicConfig {
    let mut c = QuicConfig::new(AppKey::new(key).expect("key"));
    c.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.connect = connect;
    c.backoff_max_ms = 500;
    c
}

async fn insert(peer: &Peer, id: &str) {
    peer.store()
        .execute("INSERT INTO t DOCUMENTS (:d)", json!({"d": {"_id": id, "v": id}}))
        .await
        .expect("insert");
}

async fn count(peer: &Peer) -> usize {
    peer.store()
        .execute("SELECT * FROM t", json!({}))
        .await
        .expect("select")
        .items
        .len()
}

/// Polls `cond` every 20 ms for up to `secs` seconds.
async fn eventually(what: &str, secs: u64, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The next event that matches, within `secs` seconds.
async fn next_event(rx: &mut mpsc::Receiver<LinkEvent>, secs: u64, want: impl Fn(&LinkEvent) -> bool) -> LinkEvent {
    let wait = async {
        while let Some(ev) = rx.recv().await {
            if want(&ev) {
                return ev;
            }
        }
        panic!("the event stream ended");
    };
    tokio::time::timeout(Duration::from_secs(secs), wait)
        .await
        .expect("timed out waiting for an event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_converge_both_ways_over_loopback_quic() {
    let (a, b) = (peer().await, peer().await);
    for i in 0..50 {
        insert(&a, &format!("a{i}")).await;
        insert(&b, &format!("b{i}")).await;
    }
    let ta = QuicTransport::start(a.clone(), config(KEY, vec![])).await.expect("a");
    let mut events_a = ta.take_events().expect("events");
    let addr = ta.local_addr().expect("addr");
    let tb = QuicTransport::start(b.clone(), config(KEY, vec![addr]))
        .await
        .expect("b");
    let up = next_event(&mut events_a, 10, |e| matches!(e, LinkEvent::Up { .. })).await;
    assert!(matches!(up, LinkEvent::Up { remote, dialled: false, .. } if remote == b.id()));
    eventually("both peers to hold 100 documents", 15, async || {
        count(&a).await == 100 && count(&b).await == 100
    })
    .await;
    // Live changes flow too, both ways.
    insert(&a, "late-a").await;
    insert(&b, "late-b").await;
    eventually("the late writes to cross", 10, async || {
        count(&a).await == 102 && count(&b).await == 102
    })
    .await;
    assert_eq!(ta.links().len(), 1);
    assert_eq!(tb.links()[0].0, a.id());
    assert!(a.presence().graph().peers.contains_key(&b.id()));
    tb.close().await;
    ta.close().await;
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_the_app_key_is_refused_and_gets_nothing() {
    let (a, intruder) = (peer().await, peer().await);
    insert(&a, "secret").await;
    insert(&intruder, "spam").await;
    let ta = QuicTransport::start(a.clone(), config(KEY, vec![])).await.expect("a");
    let mut events_a = ta.take_events().expect("events");
    let addr = ta.local_addr().expect("addr");
    let ti = QuicTransport::start(intruder.clone(), config(b"another app's key", vec![addr]))
        .await
        .expect("intruder");
    let mut events_i = ti.take_events().expect("events");
    // The intruder's dials fail in the TLS handshake, on both sides.
    let failed = next_event(&mut events_i, 10, |e| matches!(e, LinkEvent::Failed { .. })).await;
    assert!(
        matches!(
            failed,
            LinkEvent::Failed {
                reason: LinkError::Connection(_),
                ..
            }
        ),
        "{failed:?}"
    );
    let refused = next_event(&mut events_a, 10, |e| matches!(e, LinkEvent::Failed { .. })).await;
    assert!(
        matches!(
            refused,
            LinkEvent::Failed {
                reason: LinkError::Connection(_),
                ..
            }
        ),
        "{refused:?}"
    );
    // Let it retry a few times: still nothing crosses, no link comes up.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(count(&intruder).await, 1);
    assert_eq!(count(&a).await, 1);
    assert!(ta.links().is_empty() && ti.links().is_empty());
    assert!(a.presence().graph().peers.is_empty());
    assert!(intruder.presence().graph().peers.is_empty());
    while let Ok(ev) = events_a.try_recv() {
        assert!(!matches!(ev, LinkEvent::Up { .. }), "{ev:?}");
    }
    ti.close().await;
    ta.close().await;
    a.close().await;
    intruder.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossed_dials_make_one_link_and_a_dropped_link_is_redialled() {
    let (a, b) = (peer().await, peer().await);
    let ta = QuicTransport::start(a.clone(), config(KEY, vec![])).await.expect("a");
    let tb = QuicTransport::start(b.clone(), config(KEY, vec![])).await.expect("b");
    ta.connect(tb.local_addr().expect("addr"));
    tb.connect(ta.local_addr().expect("addr"));
    eventually("one link each way", 10, async || {
        ta.links().len() == 1 && tb.links().len() == 1
    })
    .await;
    insert(&a, "x").await;
    eventually("x to cross", 10, async || count(&b).await == 1).await;
    // Still one link a while later (no churn between the two dials).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(a.presence().graph().peers.get(&b.id()).map(Vec::len), Some(1));

    // The remote goes away and comes back at a new transport on the same
    // address: the dialler redials.
    let b_addr = tb.local_addr().expect("addr");
    tb.close().await;
    drop(tb);
    eventually("the link to go down", 15, async || ta.links().is_empty()).await;
    // The old socket is released once the old transport's tasks end.
    let mut tb = None;
    for _ in 0..50 {
        let mut cfg = config(KEY, vec![]);
        cfg.listen = b_addr;
        if let Ok(t) = QuicTransport::start(b.clone(), cfg).await {
            tb = Some(t);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tb = tb.expect("b listens again on its address");
    insert(&b, "y").await;
    eventually("y to cross after the redial", 15, async || count(&a).await == 2).await;
    tb.close().await;
    ta.close().await;
    a.close().await;
    b.close().await;
}

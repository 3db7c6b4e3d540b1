//! QUIC links made on the connection planner's decisions, over real
//! loopback sockets: a crowd where every peer finds every other converges
//! while no peer holds more sessions than its limit, and a full peer
//! refuses an incoming link it has no room for. Every wait is bounded.

#![cfg(not(madsim))]

use rhizome_actors::conns::{ConnDriver, ConnsConfig};
use rhizome_actors::{LinkKind, Peer, PeerConfig};
use rhizome_transports::planned::LinkPlanner;
use rhizome_transports::quic::{AppKey, LinkError, LinkEvent, Planned, QuicConfig, QuicTransport};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const KEY: &[u8] = b"the app key of the tests";

struct Node {
    peer: Peer,
    planner: Arc<LinkPlanner>,
    transport: Arc<QuicTransport>,
}

/// A subscribed peer on loopback whose links are planned with at most
/// `max_lan` LAN sessions, rotated quickly so the test sees rotations;
/// younger sessions than `min_session_age_ms` are never dropped for room.
async fn node(max_lan: usize, min_session_age_ms: u64, connect: Vec<SocketAddr>) -> Node {
    let peer = Peer::open(PeerConfig::memory()).await.expect("open");
    peer.sync()
        .subscribe("SELECT * FROM t", json!({}))
        .await
        .expect("subscribe");
    let mut plan = ConnsConfig::new(peer.id(), peer.id().0);
    plan.max_lan_sessions = max_lan;
    plan.rotation_period_ms = 400;
    plan.min_session_age_ms = min_session_age_ms;
    plan.dial_timeout_ms = 3_000;
    plan.dial_backoff_ms = 300;
    let driver = ConnDriver::for_peer(&peer, plan, || {}).expect("driver");
    let planner = LinkPlanner::start(driver);
    let mut c = QuicConfig::new(AppKey::new(KEY).expect("key"));
    c.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.connect = connect;
    c.backoff_max_ms = 500;
    c.planner = Planned(Some(planner.clone()));
    let transport = Arc::new(QuicTransport::start(peer.clone(), c).await.expect("start"));
    planner.add_transport(&transport);
    Node {
        peer,
        planner,
        transport,
    }
}

async fn count(peer: &Peer) -> usize {
    let out = peer
        .store()
        .execute("SELECT * FROM t", json!({}))
        .await
        .expect("select");
    out.items.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_converges_with_sessions_bounded_per_peer() {
    const PEERS: usize = 6;
    const MAX_LAN: usize = 2;
    let mut nodes = Vec::new();
    for _ in 0..PEERS {
        nodes.push(node(MAX_LAN, 200, Vec::new()).await);
    }
    for (i, n) in nodes.iter().enumerate() {
        let doc = json!({"d": {"_id": format!("d{i}"), "v": i}});
        n.peer
            .store()
            .execute("INSERT INTO t DOCUMENTS (:d)", doc)
            .await
            .expect("insert");
    }
    // Every peer finds every other, as mDNS in one room would report.
    for n in &nodes {
        for other in &nodes {
            if other.peer.id() != n.peer.id() {
                let addr = other.transport.local_addr().expect("addr");
                n.planner.found(other.peer.id(), &n.transport, addr);
            }
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (mut most_sessions, mut most_links) = (0, 0);
    loop {
        let mut converged = true;
        for n in &nodes {
            most_sessions = most_sessions.max(n.planner.driver().sessions(LinkKind::Lan));
            most_links = most_links.max(n.transport.links().len());
            converged &= count(&n.peer).await == PEERS;
        }
        if converged {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the crowd did not converge");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(most_sessions <= MAX_LAN, "a planner counted {most_sessions} sessions");
    // A link that comes up at a full peer lives until the plan closes it
    // (one at a time), so the links seen may pass the limit by one.
    assert!(most_links <= MAX_LAN + 1, "a peer held {most_links} links");
    let dials: u64 = nodes.iter().map(|n| n.planner.driver().stats().dials).sum();
    assert!(dials > 0, "the plan dialled");
    for n in nodes {
        n.transport.close().await;
        n.peer.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_peer_refuses_a_link_it_has_no_room_for() {
    let full = node(1, 60_000, Vec::new()).await;
    let mut events = full.transport.take_events().expect("events");
    let addr = full.transport.local_addr().expect("addr");
    let first = node(4, 200, vec![addr]).await;
    let up = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.recv().await.expect("events") {
                LinkEvent::Up { remote, .. } => return remote,
                _ => continue,
            }
        }
    })
    .await
    .expect("the first link came up");
    assert_eq!(up, first.peer.id());
    // The plan's session is young (under a minute): the second is
    // refused, not swapped in.
    let second = node(4, 200, vec![addr]).await;
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let LinkEvent::Failed {
                reason: LinkError::Busy,
                ..
            } = events.recv().await.expect("events")
            {
                return;
            }
        }
    })
    .await;
    assert!(refused.is_ok(), "the full peer took a second link");
    assert_eq!(full.transport.links().len(), 1);
    for n in [full, first, second] {
        n.transport.close().await;
        n.peer.close().await;
    }
}

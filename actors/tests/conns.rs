//! The connection driver: the planner's decisions come out as `Decision`s
//! (within the limits, in the seed's order), its timer runs on the
//! driver's own task (dial timeouts, rotation), sessions' caught-up rounds
//! reach it from the peer, unplanned kinds and wrong configurations are
//! refused, and a stopped driver decides nothing more. Runs on tokio and,
//! built with `--cfg madsim`, inside the simulator. Nothing here asserts on
//! elapsed time: tests wait for decisions, not for durations.

use rhizome_actors::conns::{ConnDriver, ConnsConfig, Decision, DisconnectReason, DriverError};
use rhizome_actors::{LinkKind, Peer, PeerConfig, PeerId};
use serde_json::json;

const ME: PeerId = PeerId(1);

/// Small limits and short periods (a test waits for the timer's
/// decisions, so they come quickly).
fn config() -> ConnsConfig {
    let mut c = ConnsConfig::new(ME, 5);
    c.max_ble_sessions = 2;
    c.max_p2p_wifi_sessions = 1;
    c.max_lan_sessions = 1;
    c.rotation_period_ms = 200;
    c.min_session_age_ms = 0;
    c.dial_timeout_ms = 50;
    c.dial_backoff_ms = 10_000;
    c
}

fn start(c: ConnsConfig) -> ConnDriver {
    ConnDriver::start(c, None, || {}).expect("valid config")
}

fn drain(d: &ConnDriver) -> Vec<Decision> {
    std::iter::from_fn(|| d.poll_decision()).collect()
}

fn connects(decisions: &[Decision]) -> Vec<(PeerId, LinkKind)> {
    decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Connect { peer, kind } => Some((*peer, *kind)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn dials_fill_the_limits_fastest_kind_first() {
    let d = start(config());
    // Five peers over BLE, two of them over Wi-Fi too: one Wi-Fi slot, two
    // BLE slots, one session per remote peer.
    let mut found: Vec<(PeerId, LinkKind)> = (10..15).map(|p| (PeerId(p), LinkKind::Ble)).collect();
    found.push((PeerId(10), LinkKind::P2pWifi));
    found.push((PeerId(11), LinkKind::P2pWifi));
    d.discovered_many(found).expect("discovered");
    let dials = connects(&drain(&d));
    assert_eq!(dials.len(), 3, "{dials:?}");
    assert_eq!(dials.iter().filter(|(_, k)| *k == LinkKind::P2pWifi).count(), 1);
    assert_eq!(dials.iter().filter(|(_, k)| *k == LinkKind::Ble).count(), 2);
    let mut peers: Vec<PeerId> = dials.iter().map(|(p, _)| *p).collect();
    peers.dedup();
    assert_eq!(peers.len(), 3, "one session per remote peer: {dials:?}");
    // Sessions come up: the planner counts them; nothing more is dialled.
    for (peer, kind) in &dials {
        d.connected(*peer, *kind).expect("connected");
    }
    assert_eq!(d.sessions(LinkKind::Ble), 2);
    assert_eq!(d.sessions(LinkKind::P2pWifi), 1);
    assert_eq!(d.connections().len(), 3);
    assert!(connects(&drain(&d)).is_empty());
    // A session coming up at a full kind is refused (none has synced).
    let spare = (10..15).map(PeerId).find(|p| !peers.contains(p)).expect("a spare peer");
    assert_eq!(d.would_accept(spare, LinkKind::Ble), Ok(false));
    d.connected(spare, LinkKind::Ble).expect("connected");
    assert_eq!(
        drain(&d),
        vec![Decision::Disconnect {
            peer: spare,
            kind: LinkKind::Ble,
            reason: DisconnectReason::Full
        }]
    );
    assert_eq!(d.stats().refused_full, 1);
    assert_eq!(d.limit(LinkKind::Ble), Some(2));
    assert_eq!(d.limit(LinkKind::InProcess), None);
}

#[tokio::test]
async fn unplanned_kinds_and_other_peers_configurations_are_refused() {
    let d = start(config());
    assert_eq!(
        d.discovered(PeerId(2), LinkKind::InProcess),
        Err(DriverError::UnplannedKind(LinkKind::InProcess))
    );
    assert_eq!(
        d.connected(PeerId(2), LinkKind::Cloud),
        Err(DriverError::UnplannedKind(LinkKind::Cloud))
    );
    let mut bad = config();
    bad.max_ble_sessions = 1_000;
    assert!(matches!(
        ConnDriver::start(bad, None, || {}),
        Err(DriverError::Config(_))
    ));
    let peer = Peer::open(PeerConfig::memory()).await.expect("open");
    let err = ConnDriver::for_peer(&peer, config(), || {}).expect_err("config names another peer");
    assert!(matches!(err, DriverError::WrongPeer { .. }), "{err}");
    peer.close().await;
}

#[tokio::test]
async fn the_driver_runs_the_planners_timer() {
    let d = start(config());
    d.discovered(PeerId(20), LinkKind::Lan).expect("discovered");
    assert_eq!(
        d.next_decision().await,
        Some(Decision::Connect {
            peer: PeerId(20),
            kind: LinkKind::Lan
        })
    );
    // Never reported connected: the driver's task times the dial out.
    assert_eq!(
        d.next_decision().await,
        Some(Decision::Disconnect {
            peer: PeerId(20),
            kind: LinkKind::Lan,
            reason: DisconnectReason::DialTimedOut
        })
    );
    assert_eq!(d.stats().abandoned_dials, 1);
}

#[tokio::test]
async fn rotation_dials_a_waiting_peer_then_drops_the_oldest_session() {
    let mut c = config();
    c.max_lan_sessions = 1;
    c.dial_timeout_ms = 60_000;
    let d = start(c);
    d.discovered(PeerId(30), LinkKind::Lan).expect("discovered");
    assert_eq!(
        d.next_decision().await,
        Some(Decision::Connect {
            peer: PeerId(30),
            kind: LinkKind::Lan
        })
    );
    d.connected(PeerId(30), LinkKind::Lan).expect("connected");
    // A peer waits; the kind is full. The rotation (on the driver's timer)
    // dials it first ...
    d.discovered(PeerId(31), LinkKind::Lan).expect("discovered");
    assert_eq!(
        d.next_decision().await,
        Some(Decision::Connect {
            peer: PeerId(31),
            kind: LinkKind::Lan
        })
    );
    // ... and drops the old session once the new one is up.
    d.connected(PeerId(31), LinkKind::Lan).expect("connected");
    assert_eq!(
        d.next_decision().await,
        Some(Decision::Disconnect {
            peer: PeerId(30),
            kind: LinkKind::Lan,
            reason: DisconnectReason::Rotated
        })
    );
    assert_eq!(d.sessions(LinkKind::Lan), 1);
    assert_eq!(d.stats().rotated, 1);
}

#[tokio::test]
async fn a_stopped_driver_decides_nothing() {
    let d = start(config());
    d.stop();
    assert_eq!(d.discovered(PeerId(2), LinkKind::Ble), Err(DriverError::Stopped));
    assert_eq!(d.would_accept(PeerId(2), LinkKind::Ble), Err(DriverError::Stopped));
    assert_eq!(d.next_decision().await, None);
}

#[tokio::test]
async fn on_ready_is_called_when_decisions_wait() {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = calls.clone();
    let d = ConnDriver::start(config(), None, move || {
        seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    })
    .expect("valid config");
    d.discovered(PeerId(2), LinkKind::Ble).expect("discovered");
    assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(connects(&drain(&d)), vec![(PeerId(2), LinkKind::Ble)]);
    // Nothing new to decide: no call.
    d.discovered(PeerId(2), LinkKind::Ble).expect("discovered");
    assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 1);
}

/// A peer in memory that wants collection `t` from other peers.
async fn memory_peer() -> Peer {
    let peer = Peer::open(PeerConfig::memory()).await.expect("open");
    peer.sync()
        .subscribe("SELECT * FROM t", json!({}))
        .await
        .expect("subscribe");
    peer
}

#[tokio::test]
async fn sessions_report_caught_up_rounds_and_the_driver_counts_them_as_met() {
    let (a, b) = (memory_peer().await, memory_peer().await);
    a.store()
        .execute("INSERT INTO t DOCUMENTS ({'_id': 'x'})", json!({}))
        .await
        .expect("insert");
    let mut feed = a.caught_up();
    let mut c = ConnsConfig::new(a.id(), 3);
    c.max_ble_sessions = 1;
    let driver = ConnDriver::for_peer(&a, c, || {}).expect("driver");
    driver.discovered(b.id(), LinkKind::Ble).expect("discovered");
    assert_eq!(
        driver.next_decision().await,
        Some(Decision::Connect {
            peer: b.id(),
            kind: LinkKind::Ble
        })
    );
    let link = a.connect_in_process(&b).await.expect("connect");
    driver.connected(b.id(), LinkKind::Ble).expect("connected");
    // `a` asks `b`, which has nothing `a` lacks: a caught-up round.
    let remotes = feed.next().await.expect("a round");
    assert!(remotes.contains(&b.id()), "{remotes:?}");
    assert_eq!(feed.missed(), 0);
    // The driver's own feed got it too (it started before the session).
    let mut synced = 0;
    for _ in 0..1_000 {
        synced = driver.stats().synced;
        if synced > 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(synced > 0, "the driver saw the caught-up round");
    link.close().await;
    for p in [a, b] {
        p.close().await;
    }
}

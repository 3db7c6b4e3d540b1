//! The connection planner: its policy step by step through `check` (inputs
//! in, the non-timer outputs they give), a crowd model (hundreds of peers
//! all in range, each with its own planner, dials that become sessions when
//! both sides accept, and values spreading over sessions each tick) that
//! converges without any peer passing its limits, saturated cliques that
//! rotation joins, and random event sequences that never break the limits
//! or panic.

use proptest::prelude::*;
use rhizome_engine::hlc::PeerId;
use rhizome_engine::sync::conns::{ConfigError, ConnPlanner, ConnsConfig, DisconnectReason, LinkKind, Output};
use std::collections::{BTreeMap, BTreeSet};

use DisconnectReason::{DialTimedOut, Duplicate, Full, Lost, MadeRoom, Rotated, Spare};
use LinkKind::{Ble, Lan, P2pWifi};

const ME: u64 = 1;

/// Small limits and round periods for step-by-step tests.
fn cfg() -> ConnsConfig {
    let mut c = ConnsConfig::new(PeerId(ME), 7);
    c.max_ble_sessions = 2;
    c.max_p2p_wifi_sessions = 1;
    c.max_lan_sessions = 1;
    c.rotation_period_ms = 1_000;
    c.min_session_age_ms = 500;
    c.dial_timeout_ms = 300;
    c.dial_backoff_ms = 2_000;
    c
}

fn planner(c: ConnsConfig) -> ConnPlanner {
    ConnPlanner::new(c).expect("valid config")
}

#[derive(Clone, Copy, Debug)]
enum In {
    Discovered(u64, LinkKind),
    Lost(u64, LinkKind),
    Connected(u64, LinkKind),
    Disconnected(u64, LinkKind),
    Synced(u64),
    Timer,
}

fn feed(p: &mut ConnPlanner, now_ms: u64, input: In) {
    match input {
        In::Discovered(peer, kind) => p.handle_discovered(PeerId(peer), kind, now_ms),
        In::Lost(peer, kind) => p.handle_lost(PeerId(peer), kind, now_ms),
        In::Connected(peer, kind) => p.handle_connected(PeerId(peer), kind, now_ms),
        In::Disconnected(peer, kind) => p.handle_disconnected(PeerId(peer), kind, now_ms),
        In::Synced(peer) => p.handle_synced(PeerId(peer), now_ms),
        In::Timer => p.handle_timer(now_ms),
    }
}

fn drain(p: &mut ConnPlanner) -> (Vec<Output>, Vec<u64>) {
    let (mut outs, mut timers) = (Vec::new(), Vec::new());
    while let Some(out) = p.poll_output() {
        match out {
            Output::SetTimer { at_ms } => timers.push(at_ms),
            other => outs.push(other),
        }
    }
    (outs, timers)
}

/// Feeds one input at `now_ms` and checks the outputs other than timers.
#[track_caller]
fn check(p: &mut ConnPlanner, now_ms: u64, input: In, want: &[Output]) {
    feed(p, now_ms, input);
    let (got, _) = drain(p);
    assert_eq!(got, want, "after {input:?} at {now_ms} ms");
}

fn connect(peer: u64, kind: LinkKind) -> Output {
    Output::Connect {
        peer: PeerId(peer),
        kind,
    }
}

fn disconnect(peer: u64, kind: LinkKind, reason: DisconnectReason) -> Output {
    Output::Disconnect {
        peer: PeerId(peer),
        kind,
        reason,
    }
}

/// The peers the planner asked to dial, in order.
fn first_dials(p: &mut ConnPlanner) -> Vec<u64> {
    drain(p)
        .0
        .into_iter()
        .filter_map(|o| match o {
            Output::Connect { peer, .. } => Some(peer.0),
            _ => None,
        })
        .collect()
}

#[test]
fn fills_free_slots_up_to_the_limit() {
    let mut p = planner(cfg());
    check(&mut p, 0, In::Discovered(2, Ble), &[connect(2, Ble)]);
    check(&mut p, 0, In::Discovered(3, Ble), &[connect(3, Ble)]);
    // Two BLE dials in flight fill both BLE slots.
    check(&mut p, 0, In::Discovered(4, Ble), &[]);
    check(&mut p, 10, In::Connected(2, Ble), &[]);
    check(&mut p, 10, In::Connected(3, Ble), &[]);
    assert_eq!(p.sessions(Ble), 2);
    // A session ends: the free slot goes to the waiting peer.
    check(&mut p, 20, In::Disconnected(3, Ble), &[connect(4, Ble)]);
}

#[test]
fn a_kind_with_no_slots_is_never_dialled_and_refuses_sessions() {
    let mut c = cfg();
    c.max_lan_sessions = 0;
    let mut p = planner(c);
    check(&mut p, 0, In::Discovered(2, Lan), &[]);
    check(&mut p, 0, In::Connected(3, Lan), &[disconnect(3, Lan, Full)]);
    assert_eq!(p.sessions(Lan), 0);
}

#[test]
fn prefers_peers_never_met_then_met_longest_ago() {
    let mut c = cfg();
    c.max_ble_sessions = 1;
    let mut p = planner(c);
    // Meet 2 at 100, then 3 at 200 (each session synced, then ended).
    check(&mut p, 0, In::Discovered(2, Ble), &[connect(2, Ble)]);
    check(&mut p, 50, In::Connected(2, Ble), &[]);
    check(&mut p, 100, In::Synced(2), &[]);
    check(&mut p, 100, In::Discovered(3, Ble), &[]);
    check(&mut p, 100, In::Disconnected(2, Ble), &[connect(3, Ble)]);
    check(&mut p, 150, In::Connected(3, Ble), &[]);
    check(&mut p, 200, In::Synced(3), &[]);
    // 4 was never met: it comes first; then 2 (met at 100) before 3 (200).
    check(&mut p, 200, In::Discovered(4, Ble), &[]);
    check(&mut p, 210, In::Disconnected(3, Ble), &[connect(4, Ble)]);
    check(&mut p, 220, In::Connected(4, Ble), &[]);
    check(&mut p, 230, In::Synced(4), &[]);
    check(&mut p, 240, In::Disconnected(4, Ble), &[connect(2, Ble)]);
}

#[test]
fn fills_the_fastest_kind_first_and_holds_one_session_per_peer() {
    let mut p = planner(cfg());
    // In range over BLE and LAN: dialled over LAN only.
    feed(&mut p, 0, In::Discovered(2, Ble));
    feed(&mut p, 0, In::Discovered(2, Lan));
    let (outs, _) = drain(&mut p);
    // BLE came first, so the BLE dial went out first; the LAN discovery
    // does not add a second dial.
    assert_eq!(outs, vec![connect(2, Ble)]);
    check(&mut p, 10, In::Connected(2, Ble), &[]);
    // A LAN link to 2 comes up: the session moves to it, and the BLE link
    // stays as its spare (one session, counted over LAN).
    check(&mut p, 20, In::Connected(2, Lan), &[]);
    check(&mut p, 30, In::Connected(2, Ble), &[]);
    assert!(p.is_connected(PeerId(2), Lan));
    assert!(!p.is_connected(PeerId(2), Ble));
    assert!(p.is_spare(PeerId(2), Ble));
    assert_eq!((p.sessions(Lan), p.sessions(Ble), p.spares(Ble)), (1, 0, 1));

    // A peer that becomes dialable over both kinds at once (its backoff
    // ends) is dialled over LAN.
    let mut p = planner(cfg());
    check(&mut p, 0, In::Discovered(3, Ble), &[connect(3, Ble)]);
    check(&mut p, 10, In::Disconnected(3, Ble), &[]);
    check(&mut p, 20, In::Discovered(3, Lan), &[]);
    check(&mut p, 2_010, In::Timer, &[connect(3, Lan)]);
}

#[test]
fn a_dial_and_an_incoming_session_from_the_same_peer_are_one_session() {
    let mut p = planner(cfg());
    check(&mut p, 0, In::Discovered(2, Ble), &[connect(2, Ble)]);
    // The other side dialled too; the driver kept one link and reports it.
    check(&mut p, 10, In::Connected(2, Ble), &[]);
    check(&mut p, 10, In::Connected(2, Ble), &[]);
    assert_eq!(p.sessions(Ble), 1);
    assert_eq!(p.dials(Ble), 0);
}

/// Links to one peer over several kinds are one session, counted once
/// under its fastest kind; slower links are spares, kept while their kind
/// has room, dropped first when it needs room, and fallen back onto when
/// the fast link drops.
#[test]
fn a_slower_link_to_a_peer_with_a_session_is_a_spare_it_falls_back_onto() {
    let mut c = cfg();
    c.max_ble_sessions = 2;
    let mut p = planner(c);
    check(&mut p, 0, In::Connected(2, Lan), &[]);
    check(&mut p, 10, In::Connected(2, Ble), &[]);
    assert!(p.is_spare(PeerId(2), Ble));
    assert_eq!((p.sessions(Lan), p.sessions(Ble), p.spares(Ble)), (1, 0, 1));
    // The LAN link drops: the session falls back onto the spare, counted
    // over BLE now, in the slot the spare held (not a failure: no backoff).
    check(&mut p, 20, In::Disconnected(2, Lan), &[]);
    assert!(p.is_connected(PeerId(2), Ble) && !p.is_spare(PeerId(2), Ble));
    assert_eq!((p.sessions(Lan), p.sessions(Ble), p.spares(Ble)), (0, 1, 0));
    // LAN again: the session moves back; BLE is its spare again.
    check(&mut p, 30, In::Connected(2, Lan), &[]);
    assert!(p.is_connected(PeerId(2), Lan) && p.is_spare(PeerId(2), Ble));
    // Another session needing BLE room: the spare goes first (no budget of
    // making room spent), and a spare with no room is refused.
    check(&mut p, 40, In::Connected(3, Ble), &[]);
    check(&mut p, 50, In::Connected(4, Ble), &[disconnect(2, Ble, Spare)]);
    assert_eq!((p.sessions(Ble), p.spares(Ble)), (2, 0));
    assert!(!p.would_accept(PeerId(2), Ble, 60));
    check(&mut p, 60, In::Connected(2, Ble), &[disconnect(2, Ble, Duplicate)]);
    // The last BLE slot free again, a spare comes up; the session ends
    // with its last link.
    check(&mut p, 70, In::Disconnected(4, Ble), &[]);
    assert!(p.would_accept(PeerId(2), Ble, 80));
    check(&mut p, 80, In::Connected(2, Ble), &[]);
    check(&mut p, 90, In::Disconnected(2, Lan), &[]);
    assert!(p.is_connected(PeerId(2), Ble));
    check(&mut p, 100, In::Disconnected(2, Ble), &[]);
    assert_eq!((p.sessions(Lan), p.sessions(Ble), p.spares(Ble)), (0, 1, 0));
}

/// Like [`check`], for the `Disconnect`s only (refused peers stay in
/// range, so a rotation may also dial them, at a time of the seed's).
#[track_caller]
fn check_drops(p: &mut ConnPlanner, now_ms: u64, input: In, want: &[Output]) {
    feed(p, now_ms, input);
    let got: Vec<Output> = drain(p)
        .0
        .into_iter()
        .filter(|o| matches!(o, Output::Disconnect { .. }))
        .collect();
    assert_eq!(got, want, "after {input:?} at {now_ms} ms");
}

#[test]
fn an_incoming_session_at_a_full_kind_makes_room_once_per_period_or_is_refused() {
    let mut p = planner(cfg());
    check(&mut p, 0, In::Connected(2, Ble), &[]);
    check(&mut p, 0, In::Connected(3, Ble), &[]);
    // Nothing has synced: refused.
    assert!(!p.would_accept(PeerId(4), Ble, 100));
    check_drops(&mut p, 100, In::Connected(4, Ble), &[disconnect(4, Ble, Full)]);
    // Synced but younger than the minimum age: refused.
    check_drops(&mut p, 200, In::Synced(3), &[]);
    check_drops(&mut p, 400, In::Connected(6, Ble), &[disconnect(6, Ble, Full)]);
    // Synced and old enough: it makes room.
    assert!(p.would_accept(PeerId(7), Ble, 600));
    check_drops(&mut p, 600, In::Connected(7, Ble), &[disconnect(3, Ble, MadeRoom)]);
    assert!(p.would_accept(PeerId(7), Ble, 600), "already in");
    // Once per rotation period.
    check_drops(&mut p, 700, In::Synced(2), &[]);
    assert!(!p.would_accept(PeerId(8), Ble, 700));
    check_drops(&mut p, 700, In::Connected(8, Ble), &[disconnect(8, Ble, Full)]);
    assert!(p.would_accept(PeerId(8), Ble, 1_600));
    check_drops(&mut p, 1_600, In::Connected(8, Ble), &[disconnect(2, Ble, MadeRoom)]);
    assert!(p.is_connected(PeerId(7), Ble) && p.is_connected(PeerId(8), Ble));
    assert_eq!(p.sessions(Ble), 2);
}

/// Fills both BLE slots with synced sessions, with 4 waiting in range.
fn full_with_a_candidate() -> ConnPlanner {
    let mut p = planner(cfg());
    for peer in [2, 3] {
        feed(&mut p, 0, In::Discovered(peer, Ble));
        feed(&mut p, 10, In::Connected(peer, Ble));
    }
    feed(&mut p, 20, In::Synced(2));
    feed(&mut p, 30, In::Synced(3));
    drain(&mut p);
    check(&mut p, 40, In::Discovered(4, Ble), &[]);
    p
}

#[test]
fn rotation_dials_first_and_drops_the_oldest_synced_session_when_it_comes_up() {
    let mut p = full_with_a_candidate();
    // Within 1.5 periods a rotation dials 4; nothing is dropped yet.
    let mut at = None;
    for now in (100..=3_200).step_by(10) {
        feed(&mut p, now, In::Timer);
        let (outs, _) = drain(&mut p);
        if !outs.is_empty() {
            assert_eq!(outs, vec![connect(4, Ble)]);
            at = Some(now);
            break;
        }
    }
    let at = at.expect("a rotation");
    assert!(at >= 510, "rotation before the minimum age: {at}");
    assert_eq!(p.sessions(Ble), 2);
    // 4 comes up: 2 (synced, oldest) is rotated out.
    check(&mut p, at + 10, In::Connected(4, Ble), &[disconnect(2, Ble, Rotated)]);
    assert_eq!(p.sessions(Ble), 2);
    // Its end being reported is ignored.
    check(&mut p, at + 20, In::Disconnected(2, Ble), &[]);
}

#[test]
fn a_failed_rotation_dial_costs_nothing() {
    let mut p = full_with_a_candidate();
    let mut dialled = false;
    for now in (100..=3_200).step_by(10) {
        feed(&mut p, now, In::Timer);
        if drain(&mut p).0 == vec![connect(4, Ble)] {
            check(&mut p, now + 5, In::Disconnected(4, Ble), &[]);
            dialled = true;
            break;
        }
    }
    assert!(dialled);
    assert!(p.is_connected(PeerId(2), Ble) && p.is_connected(PeerId(3), Ble));
}

#[test]
fn no_rotation_without_a_candidate_or_an_old_enough_session() {
    // Full, nobody else in range: never a dial.
    let mut p = planner(cfg());
    feed(&mut p, 0, In::Connected(2, Ble));
    feed(&mut p, 0, In::Connected(3, Ble));
    for now in (0..5_000).step_by(50) {
        check(&mut p, now, In::Timer, &[]);
    }
}

#[test]
fn timed_out_dials_are_abandoned_and_backed_off() {
    let mut c = cfg();
    c.max_ble_sessions = 1;
    let mut p = planner(c);
    check(&mut p, 0, In::Discovered(2, Ble), &[connect(2, Ble)]);
    let (_, timers) = {
        feed(&mut p, 0, In::Timer);
        drain(&mut p)
    };
    assert!(timers.is_empty(), "timer already armed for the dial");
    check(&mut p, 299, In::Timer, &[]);
    // Abandoned at 300; 2 is behind its backoff, nobody else to dial.
    check(&mut p, 300, In::Timer, &[disconnect(2, Ble, DialTimedOut)]);
    check(&mut p, 2_299, In::Timer, &[]);
    check(&mut p, 2_300, In::Timer, &[connect(2, Ble)]);
}

#[test]
fn failed_dials_and_unsynced_endings_back_off_synced_endings_do_not() {
    let mut c = cfg();
    c.max_ble_sessions = 1;
    let mut p = planner(c);
    check(&mut p, 0, In::Discovered(2, Ble), &[connect(2, Ble)]);
    check(&mut p, 10, In::Disconnected(2, Ble), &[]);
    check(&mut p, 2_010, In::Timer, &[connect(2, Ble)]);
    check(&mut p, 2_020, In::Connected(2, Ble), &[]);
    // Refused by the other side (ended before syncing): back off.
    check(&mut p, 2_030, In::Disconnected(2, Ble), &[]);
    check(&mut p, 4_030, In::Timer, &[connect(2, Ble)]);
    check(&mut p, 4_040, In::Connected(2, Ble), &[]);
    check(&mut p, 4_050, In::Synced(2), &[]);
    // A synced session that ends: 2 may be dialled again at once.
    check(&mut p, 4_060, In::Disconnected(2, Ble), &[connect(2, Ble)]);
}

#[test]
fn losing_sight_of_a_peer_abandons_dials_but_not_sessions() {
    let mut p = planner(cfg());
    check(&mut p, 0, In::Discovered(2, Ble), &[connect(2, Ble)]);
    check(&mut p, 0, In::Discovered(3, Ble), &[connect(3, Ble)]);
    check(&mut p, 10, In::Connected(2, Ble), &[]);
    check(&mut p, 20, In::Lost(3, Ble), &[disconnect(3, Ble, Lost)]);
    check(&mut p, 20, In::Lost(2, Ble), &[]);
    assert!(p.is_connected(PeerId(2), Ble));
    // Not in range: not dialled, even with a free slot.
    check(&mut p, 5_000, In::Timer, &[]);
}

#[test]
fn timers_ask_for_the_next_deadline_and_early_calls_are_harmless() {
    let mut p = planner(cfg());
    feed(&mut p, 0, In::Discovered(2, Ble));
    let (outs, timers) = drain(&mut p);
    assert_eq!(outs, vec![connect(2, Ble)]);
    assert_eq!(timers, vec![300], "the dial's timeout");
    check(&mut p, 100, In::Timer, &[]);
    check(&mut p, 150, In::Timer, &[]);
}

#[test]
fn sessions_with_itself_are_refused_and_its_own_discovery_ignored() {
    let mut p = planner(cfg());
    check(&mut p, 0, In::Discovered(ME, Ble), &[]);
    check(&mut p, 0, In::Connected(ME, Ble), &[disconnect(ME, Ble, Duplicate)]);
    assert_eq!(p.sessions(Ble), 0);
    assert_eq!(p.tracked(), 0);
}

#[test]
fn tracked_peers_are_bounded_forgetting_the_longest_lost() {
    let mut c = cfg();
    c.max_ble_sessions = 1;
    c.max_p2p_wifi_sessions = 1;
    c.max_lan_sessions = 1;
    c.max_candidates = 12;
    let mut p = planner(c);
    for peer in 2..14 {
        feed(&mut p, peer, In::Discovered(peer, P2pWifi));
    }
    for peer in 3..14 {
        feed(&mut p, 100 + peer, In::Lost(peer, P2pWifi));
    }
    drain(&mut p);
    assert_eq!(p.tracked(), 12);
    // 3 was lost first: a new peer takes its place.
    feed(&mut p, 200, In::Discovered(100, P2pWifi));
    assert_eq!(p.tracked(), 12);
    // 3 comes back (forgotten), pushing out 4, the next lost longest ago.
    feed(&mut p, 300, In::Discovered(3, P2pWifi));
    assert_eq!(p.tracked(), 12);
    for peer in 1_000..1_100 {
        feed(&mut p, 400, In::Discovered(peer, Ble));
        assert!(p.tracked() <= 12);
    }
}

#[test]
fn configurations_are_checked() {
    let mut c = cfg();
    c.max_ble_sessions = 1_000;
    assert!(matches!(
        ConnPlanner::new(c).err(),
        Some(ConfigError::TooManySessions { kind: Ble, max: 1_000 })
    ));
    let mut c = cfg();
    c.rotation_period_ms = 0;
    assert!(matches!(
        ConnPlanner::new(c).err(),
        Some(ConfigError::ZeroPeriod { .. })
    ));
    let mut c = cfg();
    c.max_candidates = 4;
    let err = ConnPlanner::new(c).expect_err("refused");
    assert!(matches!(err, ConfigError::TooFewCandidates { .. }));
    assert!(err.to_string().contains("max_candidates"));
    let d = ConnsConfig::new(PeerId(1), 0);
    assert_eq!(
        (d.max_sessions(Ble), d.max_sessions(P2pWifi), d.max_sessions(Lan)),
        (3, 4, 4)
    );
    assert!(d.validate().is_ok());
}

#[test]
fn seeds_spread_the_first_dials() {
    // A crowd of planners with different seeds does not all dial the same
    // peers; the same seed gives the same dials.
    let dials = |seed: u64| {
        let mut c = cfg();
        c.seed = seed;
        let mut p = planner(c);
        // Slots held by incoming sessions while peers appear, then freed.
        p.handle_connected(PeerId(100), Ble, 0);
        p.handle_connected(PeerId(101), Ble, 0);
        for peer in 2..40 {
            p.handle_discovered(PeerId(peer), Ble, 0);
        }
        assert!(first_dials(&mut p).is_empty());
        p.handle_synced(PeerId(100), 10);
        p.handle_synced(PeerId(101), 10);
        p.handle_disconnected(PeerId(100), Ble, 10);
        p.handle_disconnected(PeerId(101), Ble, 10);
        first_dials(&mut p)
    };
    assert_eq!(dials(5), dials(5));
    let distinct: BTreeSet<Vec<u64>> = (0..8).map(dials).collect();
    assert!(distinct.len() > 1);
}

#[test]
fn a_batch_of_discoveries_is_planned_once_in_the_seeds_order() {
    // Peers found in one scan go to the slots in the seed's order, whatever
    // the order the scan reported them in; its own id is ignored.
    let dials = |order: Vec<u64>| {
        let mut p = planner(cfg());
        p.handle_discovered_many(order.into_iter().map(|peer| (PeerId(peer), Ble)), 0);
        assert_eq!(p.tracked(), 38);
        first_dials(&mut p)
    };
    let forward = dials((1..40).collect());
    assert_eq!(forward.len(), 2, "the BLE limit");
    assert_eq!(dials((1..40).rev().collect()), forward);
    // The same as freeing the slots once every peer is known.
    let mut p = planner(cfg());
    p.handle_connected(PeerId(100), Ble, 0);
    p.handle_connected(PeerId(101), Ble, 0);
    for peer in 2..40 {
        p.handle_discovered(PeerId(peer), Ble, 0);
    }
    assert!(first_dials(&mut p).is_empty());
    p.handle_synced(PeerId(100), 10);
    p.handle_synced(PeerId(101), 10);
    p.handle_disconnected(PeerId(100), Ble, 10);
    p.handle_disconnected(PeerId(101), Ble, 10);
    assert_eq!(first_dials(&mut p), forward);
}

// ---------------------------------------------------------------------------
// The crowd model.

const TICK_MS: u64 = 1_000;

/// Peers, each with its own planner; sessions between pairs; a set of
/// values per peer that spreads over sessions once per tick.
struct Crowd {
    planners: Vec<ConnPlanner>,
    /// Sessions, (lower index, higher index, kind).
    links: BTreeSet<(usize, usize, LinkKind)>,
    /// Dials made, (from, to, kind), carried out at the next tick.
    dials: BTreeSet<(usize, usize, LinkKind)>,
    timers: Vec<Option<u64>>,
    values: Vec<Vec<u64>>,
    /// Most sessions any peer had over any kind, at any check.
    max_seen: usize,
    /// Every output, for determinism checks.
    trace: u64,
    /// Counts: dials, dials that failed (refused), drops by reason.
    stats: BTreeMap<String, u64>,
}

fn id(i: usize) -> PeerId {
    PeerId(1_000 + i as u64)
}

fn index(p: PeerId) -> usize {
    (p.0 - 1_000) as usize
}

fn crowd_config(i: usize, seed: u64) -> ConnsConfig {
    let mut c = ConnsConfig::new(id(i), seed ^ (i as u64).wrapping_mul(0x9E37_79B9));
    c.rotation_period_ms = 10 * TICK_MS;
    c.min_session_age_ms = 5 * TICK_MS;
    c.dial_timeout_ms = 3 * TICK_MS;
    c.dial_backoff_ms = 8 * TICK_MS;
    c
}

impl Crowd {
    fn new(n: usize, n_values: usize, seed: u64) -> Crowd {
        Crowd {
            planners: (0..n).map(|i| planner(crowd_config(i, seed))).collect(),
            links: BTreeSet::new(),
            dials: BTreeSet::new(),
            timers: vec![None; n],
            values: vec![vec![0; n_values.div_ceil(64)]; n],
            max_seen: 0,
            trace: 0,
            stats: BTreeMap::new(),
        }
    }

    fn give(&mut self, peer: usize, value: usize) {
        self.values[peer][value / 64] |= 1 << (value % 64);
    }

    fn has(&self, peer: usize, value: usize) -> bool {
        self.values[peer][value / 64] & (1 << (value % 64)) != 0
    }

    fn everyone_has(&self, value: usize) -> bool {
        (0..self.planners.len()).all(|p| self.has(p, value))
    }

    fn link(a: usize, b: usize, kind: LinkKind) -> (usize, usize, LinkKind) {
        (a.min(b), a.max(b), kind)
    }

    /// Carries out what peer `first` asked, and what that causes.
    fn drain(&mut self, first: usize, now_ms: u64) {
        let mut work = vec![first];
        while let Some(i) = work.pop() {
            while let Some(out) = self.planners[i].poll_output() {
                self.trace = self.trace.rotate_left(5) ^ hash_output(i, &out);
                let what = match &out {
                    Output::Connect { .. } => "dial".to_string(),
                    Output::Disconnect { reason, .. } => format!("{reason:?}"),
                    Output::SetTimer { .. } => "timer".to_string(),
                };
                *self.stats.entry(what).or_default() += 1;
                match out {
                    Output::Connect { peer, kind } => {
                        assert!(self.dials.insert((i, index(peer), kind)), "dialled twice");
                    }
                    Output::Disconnect { peer, kind, .. } => {
                        let j = index(peer);
                        self.dials.remove(&(i, j, kind));
                        if self.links.remove(&Crowd::link(i, j, kind)) {
                            self.planners[j].handle_disconnected(id(i), kind, now_ms);
                            work.push(j);
                        }
                    }
                    Output::SetTimer { at_ms } => self.timers[i] = Some(at_ms),
                }
            }
        }
    }

    /// One tick: timers, then the dials made last tick (a session when both
    /// accept, else a failed dial), then values spread over sessions.
    fn tick(&mut self, t: u64) {
        let now_ms = t * TICK_MS;
        for i in 0..self.planners.len() {
            if self.timers[i].is_some_and(|at| at <= now_ms) {
                self.timers[i] = None;
                self.planners[i].handle_timer(now_ms);
                self.drain(i, now_ms);
            }
        }
        let due: Vec<_> = self.dials.iter().copied().collect();
        for dial @ (a, b, kind) in due {
            if !self.dials.remove(&dial) {
                continue; // abandoned meanwhile
            }
            if self.links.contains(&Crowd::link(a, b, kind)) {
                continue; // crossed dials: one link
            }
            let accept = self.planners[b].would_accept(id(a), kind, now_ms)
                && self.planners[a].would_accept(id(b), kind, now_ms);
            if accept {
                self.links.insert(Crowd::link(a, b, kind));
                self.planners[a].handle_connected(id(b), kind, now_ms);
                self.planners[b].handle_connected(id(a), kind, now_ms);
                self.drain(a, now_ms);
                self.drain(b, now_ms);
                assert!(
                    self.links.contains(&Crowd::link(a, b, kind)),
                    "a session both sides accepted was dropped at once"
                );
            } else {
                *self.stats.entry("dial refused".to_string()).or_default() += 1;
                self.planners[a].handle_disconnected(id(b), kind, now_ms);
                self.drain(a, now_ms);
            }
        }
        self.check_limits();
        // Spread one hop.
        let before = self.values.clone();
        for &(a, b, _) in &self.links {
            for (w, (va, vb)) in before[a].iter().zip(&before[b]).enumerate() {
                self.values[a][w] |= vb;
                self.values[b][w] |= va;
            }
        }
        let links: Vec<_> = self.links.iter().copied().collect();
        for (a, b, _) in links {
            if self.values[a] == self.values[b] {
                self.planners[a].handle_synced(id(b), now_ms);
                self.planners[b].handle_synced(id(a), now_ms);
            }
        }
    }

    /// No peer over its limit, and every planner counts exactly the
    /// sessions that exist.
    fn check_limits(&mut self) {
        let mut per: BTreeMap<(usize, LinkKind), BTreeSet<usize>> = BTreeMap::new();
        for &(a, b, kind) in &self.links {
            per.entry((a, kind)).or_default().insert(b);
            per.entry((b, kind)).or_default().insert(a);
        }
        for (i, p) in self.planners.iter().enumerate() {
            for kind in LinkKind::ALL {
                let sim: BTreeSet<usize> = per.get(&(i, kind)).cloned().unwrap_or_default();
                let max = p.config().max_sessions(kind);
                // Links of a kind are its sessions and its spares (slower
                // links to peers whose session runs over a faster kind).
                assert!(sim.len() <= max, "peer {i}: {} links over {kind:?}", sim.len());
                assert_eq!(p.sessions(kind) + p.spares(kind), sim.len(), "peer {i} over {kind:?}");
                assert!(sim
                    .iter()
                    .all(|j| p.is_connected(id(*j), kind) || p.is_spare(id(*j), kind)));
                self.max_seen = self.max_seen.max(sim.len());
            }
        }
    }
}

fn hash_output(i: usize, out: &Output) -> u64 {
    // FNV-1a over the peer and the output's debug text.
    format!("{i} {out:?}").bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
    })
}

/// Runs a crowd of `n` in range of each other over `kinds`, every peer
/// starting with its own value and a few values appearing later; returns
/// the ticks each value took to reach everyone, and the trace.
fn run_crowd(n: usize, kinds: &[LinkKind], seed: u64, ticks: u64) -> (Vec<u64>, u64, usize) {
    let late = [(40, 0), (55, n / 2), (70, n - 1)];
    let mut crowd = Crowd::new(n, n + late.len(), seed);
    for i in 0..n {
        crowd.give(i, i);
    }
    // Each peer hears of the others in an order of its own.
    for i in 0..n {
        let mut others: Vec<usize> = (0..n).filter(|j| *j != i).collect();
        others.sort_by_cached_key(|j| {
            ((i * 7_919 + j * 104_729) as u64)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .rotate_left(31)
        });
        for j in others {
            for &kind in kinds {
                crowd.planners[i].handle_discovered(id(j), kind, 0);
            }
        }
        crowd.drain(i, 0);
    }
    let mut born = vec![0u64; n + late.len()];
    let mut reached = vec![None; n + late.len()];
    for t in 1..=ticks {
        for (k, &(at, peer)) in late.iter().enumerate() {
            if at == t {
                crowd.give(peer, n + k);
                born[n + k] = t;
            }
        }
        crowd.tick(t);
        for (v, r) in reached.iter_mut().enumerate() {
            if r.is_none() && (v < n || born[v] > 0) && crowd.everyone_has(v) {
                *r = Some(t - born[v]);
            }
        }
    }
    eprintln!("{n} peers over {kinds:?}: {:?}", crowd.stats);
    let took = reached
        .iter()
        .enumerate()
        .map(|(v, r)| r.unwrap_or_else(|| panic!("value {v} never reached everyone")))
        .collect();
    (took, crowd.trace, crowd.max_seen)
}

#[test]
fn a_dense_crowd_converges_within_limits() {
    let (took, _, max_seen) = run_crowd(300, &[Ble], 11, 100);
    let worst = *took.iter().max().expect("values");
    eprintln!("300 peers over BLE: every value everywhere within {worst} ticks");
    assert!(worst <= 30, "slow spread: {worst} ticks");
    assert!(max_seen <= 3);
}

#[test]
fn a_dense_crowd_over_two_kinds_converges_within_limits() {
    let (took, _, max_seen) = run_crowd(120, &[Ble, P2pWifi], 3, 100);
    let worst = *took.iter().max().expect("values");
    eprintln!("120 peers over BLE and Wi-Fi: within {worst} ticks");
    assert!(worst <= 30, "slow spread: {worst} ticks");
    assert!(max_seen <= 4);
}

#[test]
fn a_crowd_run_is_determined_by_its_seed() {
    let (_, trace, _) = run_crowd(60, &[Ble, Lan], 9, 80);
    assert_eq!(run_crowd(60, &[Ble, Lan], 9, 80).1, trace);
    assert_ne!(run_crowd(60, &[Ble, Lan], 10, 80).1, trace);
}

#[test]
fn rotation_joins_saturated_cliques() {
    // Groups of four, each peer's BLE slots (3) full with its own group,
    // then the groups come in range of each other.
    let groups = 10;
    let n = groups * 4;
    let mut crowd = Crowd::new(n, n, 5);
    for i in 0..n {
        crowd.give(i, i);
        for j in 0..n {
            if i != j && i / 4 == j / 4 {
                crowd.planners[i].handle_discovered(id(j), Ble, 0);
            }
        }
        crowd.drain(i, 0);
    }
    for t in 1..=20 {
        crowd.tick(t);
    }
    assert_eq!(crowd.links.len(), groups * 6, "each group a full clique");
    assert!(!crowd.everyone_has(0));
    let now_ms = 20 * TICK_MS;
    for i in 0..n {
        for j in 0..n {
            if i != j && i / 4 != j / 4 {
                crowd.planners[i].handle_discovered(id(j), Ble, now_ms);
            }
        }
        crowd.drain(i, now_ms);
    }
    let mut done = None;
    for t in 21..=120 {
        crowd.tick(t);
        if (0..n).all(|v| crowd.everyone_has(v)) {
            done = Some(t);
            break;
        }
    }
    let done = done.expect("cliques never joined");
    eprintln!("cliques joined: converged at tick {done}");
}

// ---------------------------------------------------------------------------
// Random event sequences.

fn kind_strategy() -> impl Strategy<Value = LinkKind> {
    prop_oneof![Just(Ble), Just(P2pWifi), Just(Lan)]
}

fn input_strategy() -> impl Strategy<Value = In> {
    let peer = 0u64..12;
    prop_oneof![
        (peer.clone(), kind_strategy()).prop_map(|(p, k)| In::Discovered(p, k)),
        (peer.clone(), kind_strategy()).prop_map(|(p, k)| In::Lost(p, k)),
        (peer.clone(), kind_strategy()).prop_map(|(p, k)| In::Connected(p, k)),
        (peer.clone(), kind_strategy()).prop_map(|(p, k)| In::Disconnected(p, k)),
        peer.prop_map(In::Synced),
        Just(In::Timer),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_events_never_break_the_limits(
        seed in any::<u64>(),
        limits in (0usize..4, 0usize..4, 0usize..4),
        steps in proptest::collection::vec((input_strategy(), 0u64..700), 1..120),
    ) {
        let mut c = cfg();
        c.seed = seed;
        (c.max_ble_sessions, c.max_p2p_wifi_sessions, c.max_lan_sessions) = limits;
        c.max_candidates = 30;
        let mut p = planner(c.clone());
        let mut now_ms = 0;
        // What the driver believes: dials asked for, sessions not dropped.
        let mut dials: BTreeSet<(u64, LinkKind)> = BTreeSet::new();
        for (input, dt) in steps {
            now_ms += dt;
            feed(&mut p, now_ms, input);
            if let In::Connected(peer, kind) | In::Disconnected(peer, kind) = input {
                dials.remove(&(peer, kind));
            }
            while let Some(out) = p.poll_output() {
                match out {
                    Output::Connect { peer, kind } => {
                        prop_assert_ne!(peer.0, ME);
                        prop_assert!(!p.is_connected(peer, kind), "dialled a connected peer");
                        prop_assert!(dials.insert((peer.0, kind)), "dialled twice");
                    }
                    Output::Disconnect { peer, kind, .. } => {
                        dials.remove(&(peer.0, kind));
                        prop_assert!(!p.is_connected(peer, kind));
                    }
                    Output::SetTimer { at_ms } => prop_assert!(at_ms > now_ms),
                }
            }
            for kind in LinkKind::ALL {
                prop_assert!(p.sessions(kind) <= c.max_sessions(kind));
                prop_assert!(p.dials(kind) <= c.max_sessions(kind) + 1);
            }
            let peers: BTreeSet<PeerId> = p.connected().map(|(peer, _)| peer).collect();
            prop_assert_eq!(peers.len(), p.connected().count(), "one session per peer");
            prop_assert!(p.tracked() <= 30);
        }
    }
}

//! The switchboard: every peer's connection planner at work on the plane.
//!
//! Peers do not link with every peer in range. Each has a
//! [`ConnDriver`] (its `ConnPlanner`: a few sessions per link kind, one
//! rotated out now and then so unmet peers get a turn); the board tells
//! the drivers what their radios reach (from [`crate::plane::reach`]: range,
//! walls, LAN sites), executes what they decide, and reports back:
//!
//! - **Connect**: a dial takes a drawn time (BLE longest, LAN shortest).
//!   When it is due, it fails (reported to the dialler) if either peer is
//!   down, the pair is out of reach over that kind, a link over another kind
//!   joins them already, or either planner would not accept the session
//!   (asked with [`ConnDriver::would_accept`], as a transport asks before
//!   taking a connection). Otherwise the pair is linked over a modelled link
//!   ([`Peer::connect_in_process_with`], lower index first, so a clog's
//!   direction keeps its meaning) and both drivers are told `connected`.
//! - **Crossed dials**: the two peers dialled each other over one kind. The
//!   rule (`rhizome_actors::conns::Decision::Connect`) keeps the link the
//!   lower peer id dialled and closes the other unreported; here links come
//!   up whole at once, so the first dial due makes the one link, both
//!   planners count it, and the other dial (still in flight, or due later)
//!   is dropped without a report.
//! - **Disconnect**: a dial in flight is abandoned; a link is closed and
//!   the other side is told `disconnected`.
//! - **The plane changes** ([`Board::set_reach`]): pairs newly in reach are
//!   `discovered` (each peer's in one batch, so its planner picks among all
//!   of them), pairs out of reach are `lost`, and their links break (both
//!   sides told `disconnected`). A peer that goes down loses its links and
//!   its driver; one that comes up gets a fresh driver (a planner's state is
//!   soft).
//!
//! After each round of decisions the board counts every peer's sessions
//! per kind against its planner's limits ([`BoardStats::limit_breaches`]
//! must stay 0; the planner's own count is checked by its assertions).
//!
//! The board runs on a task of its own, woken by the drivers (decisions
//! waiting) and by dials coming due; the mesh reaches it through a mutex
//! for changes of the plane, faults and traffic. Determinism: every draw
//! comes from the board's generator (seeded by the run), drivers are
//! seeded from it, and every map is ordered.

use crate::mesh::Traffic;
use crate::Rng;
use rhizome_actors::conns::{conns_config, ConnDriver, Decision, DisconnectReason};
use rhizome_actors::{Direction, Faults, InProcessLink, LinkKind, LinkModel, Peer, PeerError, PeerId};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Mean time between a planner's rotations in the simulator (virtual
/// seconds are cheap, but runs are short: the default 30 s would rarely
/// rotate within one).
pub const ROTATION_PERIOD_MS: u64 = 10_000;
/// A session younger than this is not rotated out or dropped for room.
pub const MIN_SESSION_AGE_MS: u64 = 5_000;
/// A dial not up after this long is abandoned by its planner.
pub const DIAL_TIMEOUT_MS: u64 = 5_000;
/// After a failed dial, how long a planner leaves that peer alone.
pub const DIAL_BACKOFF_MS: u64 = 8_000;
/// The kinds planned, fastest first.
pub const KINDS: [LinkKind; 3] = [LinkKind::Lan, LinkKind::P2pWifi, LinkKind::Ble];
/// Backstop on rounds of one pump (each round handles what the last one
/// caused; a planner's churn is bounded, so a handful suffice).
const MAX_PUMP_ROUNDS: usize = 10_000;

/// A live link between two peers.
struct Live {
    link: InProcessLink,
    kind: LinkKind,
}

/// An up peer and its driver.
struct Slot {
    peer: Peer,
    driver: ConnDriver,
}

/// A dial in flight.
struct Dial {
    to: PeerId,
    kind: LinkKind,
    due: Instant,
    seq: u64,
}

/// What the board did and saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BoardStats {
    /// Dials started.
    pub dials: u64,
    /// Dials that failed (refused, out of reach, peer down).
    pub failed_dials: u64,
    /// Crossed dials resolved into one link.
    pub crossed_dials: u64,
    /// Sessions rotated out by a planner.
    pub rotations: u64,
    /// Sessions dropped to make room for another.
    pub made_room: u64,
    /// Links made or closed.
    pub link_changes: u64,
    /// Most sessions of one kind any peer held after a round of decisions.
    pub max_sessions_seen: u64,
    /// Times a peer held more sessions of a kind than its planner's limit
    /// after a round of decisions (must be 0).
    pub limit_breaches: u64,
}

/// The board, shared between its task and the mesh.
pub type SharedBoard = Arc<tokio::sync::Mutex<Board>>;

/// See the module doc.
pub struct Board {
    seed: u64,
    rng: Rng,
    slots: Vec<Option<Slot>>,
    ids: BTreeMap<PeerId, usize>,
    reach: BTreeSet<(usize, usize, LinkKind)>,
    links: BTreeMap<(usize, usize), Live>,
    /// Dials in flight, by (dialler, dialled).
    dials: BTreeMap<(usize, usize), Dial>,
    next_seq: u64,
    /// Sessions per (peer, kind).
    counts: BTreeMap<(usize, LinkKind), u64>,
    /// Peers that gained a session since the last count.
    touched: BTreeSet<usize>,
    faults: Faults,
    carried: Traffic,
    stats: BoardStats,
    /// Drivers with decisions waiting (marked by their callbacks).
    ready: Arc<Mutex<BTreeSet<usize>>>,
    wake: Arc<Notify>,
    closed: bool,
}

impl Board {
    /// A board for `n` peers (none up yet), its task started.
    pub fn start(n: usize, seed: u64) -> SharedBoard {
        let wake = Arc::new(Notify::new());
        let board = Arc::new(tokio::sync::Mutex::new(Board {
            seed,
            rng: Rng::new(seed ^ 0x0062_6F61_7264),
            slots: (0..n).map(|_| None).collect(),
            ids: BTreeMap::new(),
            reach: BTreeSet::new(),
            links: BTreeMap::new(),
            dials: BTreeMap::new(),
            next_seq: 0,
            counts: BTreeMap::new(),
            touched: BTreeSet::new(),
            faults: Faults::none(),
            carried: Traffic::default(),
            stats: BoardStats::default(),
            ready: Arc::default(),
            wake: wake.clone(),
            closed: false,
        }));
        tokio::spawn(run(Arc::downgrade(&board), wake));
        board
    }

    /// Peer `i` is up: it gets a fresh driver (seeded from the board).
    pub fn peer_up(&mut self, i: usize, peer: Peer) -> Result<(), PeerError> {
        let mut config = conns_config(peer.sync_config(), peer.id(), self.rng.next_u64());
        config.rotation_period_ms = ROTATION_PERIOD_MS;
        config.min_session_age_ms = MIN_SESSION_AGE_MS;
        config.dial_timeout_ms = DIAL_TIMEOUT_MS;
        config.dial_backoff_ms = DIAL_BACKOFF_MS;
        let (ready, wake) = (self.ready.clone(), self.wake.clone());
        let driver = ConnDriver::for_peer(&peer, config, move || {
            ready.lock().unwrap_or_else(|p| p.into_inner()).insert(i);
            wake.notify_one();
        })
        .map_err(|e| PeerError::InvalidInput { reason: e.to_string() })?;
        self.ids.insert(peer.id(), i);
        self.slots[i] = Some(Slot { peer, driver });
        Ok(())
    }

    /// Peer `i` goes down: dials to it fail, its links close (the other
    /// sides told), its pairs leave reach, its driver stops.
    pub async fn peer_down(&mut self, i: usize) {
        let Some(me) = self.id(i) else { return };
        let dials: Vec<(usize, usize)> = self.dials.keys().copied().filter(|(a, b)| *a == i || *b == i).collect();
        for key in dials {
            if let Some(d) = self.dials.remove(&key) {
                if key.1 == i {
                    self.fail(key.0, me, d.kind);
                }
            }
        }
        let links: Vec<(usize, usize)> = self.links.keys().copied().filter(|(a, b)| *a == i || *b == i).collect();
        for pair in links {
            if let Some(kind) = self.close_link(pair).await {
                let other = if pair.0 == i { pair.1 } else { pair.0 };
                self.tell(other, |d| d.disconnected(me, kind));
            }
        }
        let gone: Vec<(usize, usize, LinkKind)> = self
            .reach
            .iter()
            .copied()
            .filter(|(a, b, _)| *a == i || *b == i)
            .collect();
        for (a, b, kind) in gone {
            self.reach.remove(&(a, b, kind));
            let other = if a == i { b } else { a };
            self.tell(other, |d| d.lost(me, kind));
        }
        if let Some(slot) = self.slots[i].take() {
            slot.driver.stop();
        }
        self.ids.remove(&me);
    }

    /// The pairs in reach now (of up peers): links out of reach break,
    /// drivers hear of what they found and lost.
    pub async fn set_reach(&mut self, reach: BTreeSet<(usize, usize, LinkKind)>) {
        let reach: BTreeSet<(usize, usize, LinkKind)> = reach
            .into_iter()
            .filter(|(a, b, _)| self.id(*a).is_some() && self.id(*b).is_some())
            .collect();
        let gone: Vec<(usize, usize, LinkKind)> = self.reach.difference(&reach).copied().collect();
        let added: Vec<(usize, usize, LinkKind)> = reach.difference(&self.reach).copied().collect();
        self.reach = reach;
        for (a, b, kind) in gone {
            let (Some(ida), Some(idb)) = (self.id(a), self.id(b)) else {
                continue;
            };
            if self.links.get(&(a, b)).is_some_and(|l| l.kind == kind) {
                self.close_link((a, b)).await;
                self.tell(a, |d| d.disconnected(idb, kind));
                self.tell(b, |d| d.disconnected(ida, kind));
            }
            self.tell(a, |d| d.lost(idb, kind));
            self.tell(b, |d| d.lost(ida, kind));
        }
        let mut found: BTreeMap<usize, Vec<(PeerId, LinkKind)>> = BTreeMap::new();
        for (a, b, kind) in added {
            if let (Some(ida), Some(idb)) = (self.id(a), self.id(b)) {
                found.entry(a).or_default().push((idb, kind));
                found.entry(b).or_default().push((ida, kind));
            }
        }
        for (i, f) in found {
            self.tell(i, |d| d.discovered_many(f));
        }
    }

    /// Links now, by peer pair (lower index first).
    pub fn link_kinds(&self) -> BTreeMap<(usize, usize), LinkKind> {
        self.links.iter().map(|(k, l)| (*k, l.kind)).collect()
    }

    /// Sets one direction's clog on the link `a`–`b` (`a` < `b`: forward is
    /// `a` to `b`); false if there is no such link.
    pub fn clog(&self, a: usize, b: usize, direction: Direction, clogged: bool) -> bool {
        let Some(live) = self.links.get(&(a, b)) else {
            return false;
        };
        live.link.set_faults(
            direction,
            Faults {
                clogged,
                ..live.link.faults(direction)
            },
        );
        true
    }

    /// Sets the faults of every radio link, both directions (and of links
    /// made later).
    pub fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
        for live in self.links.values() {
            if live.kind != LinkKind::Lan {
                for d in [Direction::Forward, Direction::Backward] {
                    live.link.set_faults(d, faults);
                }
            }
        }
    }

    /// Bytes, frames and faults of every link so far.
    pub fn traffic(&self) -> Traffic {
        let mut t = self.carried;
        for live in self.links.values() {
            t.add(&live.link);
        }
        t
    }

    /// What the board did so far.
    pub fn stats(&self) -> BoardStats {
        self.stats
    }

    /// Closes every link and stops every driver (peers stay open).
    pub async fn close(&mut self) {
        self.closed = true;
        for slot in self.slots.iter().flatten() {
            slot.driver.stop();
        }
        for (_, live) in std::mem::take(&mut self.links) {
            self.carried.add(&live.link);
            live.link.close().await;
        }
        self.dials.clear();
        self.wake.notify_one();
    }

    fn id(&self, i: usize) -> Option<PeerId> {
        self.slots.get(i)?.as_ref().map(|s| s.peer.id())
    }

    /// Tells peer `i`'s driver something (if it is up; a stopped driver
    /// has nothing left to hear).
    fn tell<T>(&self, i: usize, f: impl FnOnce(&ConnDriver) -> Result<T, rhizome_actors::conns::DriverError>) {
        if let Some(slot) = self.slots.get(i).and_then(Option::as_ref) {
            let _ = f(&slot.driver);
        }
    }

    /// Peer `i`'s dial of `to` over `kind` failed.
    fn fail(&mut self, i: usize, to: PeerId, kind: LinkKind) {
        self.stats.failed_dials += 1;
        self.tell(i, |d| d.disconnected(to, kind));
    }

    fn model(&mut self, kind: LinkKind) -> LinkModel {
        let model = match kind {
            LinkKind::Ble => LinkModel::ble().with_latency_ms(10 + self.rng.below(41)),
            LinkKind::P2pWifi => LinkModel::p2p_wifi().with_latency_ms(2 + self.rng.below(9)),
            _ => LinkModel::lan(),
        };
        let faults = if kind == LinkKind::Lan {
            Faults::none()
        } else {
            self.faults
        };
        model.with_faults(faults).with_seed(self.seed ^ self.rng.next_u64())
    }

    /// How long a dial over `kind` takes, in ms.
    fn dial_ms(&mut self, kind: LinkKind) -> u64 {
        match kind {
            LinkKind::Ble => 100 + self.rng.below(500),
            LinkKind::P2pWifi => 50 + self.rng.below(250),
            _ => 5 + self.rng.below(15),
        }
    }

    async fn close_link(&mut self, pair: (usize, usize)) -> Option<LinkKind> {
        let live = self.links.remove(&pair)?;
        for end in [pair.0, pair.1] {
            if let Some(n) = self.counts.get_mut(&(end, live.kind)) {
                *n = n.saturating_sub(1);
            }
        }
        self.stats.link_changes += 1;
        self.carried.add(&live.link);
        live.link.close().await;
        Some(live.kind)
    }

    /// Handles due dials and waiting decisions until none are left, then
    /// counts sessions.
    async fn pump(&mut self) {
        for _ in 0..MAX_PUMP_ROUNDS {
            let mut busy = false;
            let now = Instant::now();
            let mut due: Vec<(Instant, u64, (usize, usize))> = self
                .dials
                .iter()
                .filter(|(_, d)| d.due <= now)
                .map(|(k, d)| (d.due, d.seq, *k))
                .collect();
            due.sort_unstable();
            for (_, _, key) in due {
                busy = true;
                self.complete(key).await;
            }
            let ready = std::mem::take(&mut *self.ready.lock().unwrap_or_else(|p| p.into_inner()));
            for i in ready {
                // Bounded by the driver's queue of decisions.
                while let Some(d) = self
                    .slots
                    .get(i)
                    .and_then(Option::as_ref)
                    .and_then(|s| s.driver.poll_decision())
                {
                    busy = true;
                    self.execute(i, d).await;
                }
            }
            if !busy {
                break;
            }
        }
        self.count_sessions();
    }

    /// Does what peer `i`'s driver decided.
    async fn execute(&mut self, i: usize, decision: Decision) {
        match decision {
            Decision::Connect { peer, kind } => {
                let Some(&j) = self.ids.get(&peer) else {
                    return self.fail(i, peer, kind);
                };
                if self.dials.contains_key(&(i, j)) {
                    return;
                }
                let due = Instant::now() + Duration::from_millis(self.dial_ms(kind));
                let seq = self.next_seq;
                self.next_seq += 1;
                self.dials.insert(
                    (i, j),
                    Dial {
                        to: peer,
                        kind,
                        due,
                        seq,
                    },
                );
                self.stats.dials += 1;
                let wake = self.wake.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(due).await;
                    wake.notify_one();
                });
            }
            Decision::Disconnect { peer, kind, reason } => {
                let Some(&j) = self.ids.get(&peer) else { return };
                if self.dials.get(&(i, j)).is_some_and(|d| d.kind == kind) {
                    self.dials.remove(&(i, j));
                    return;
                }
                let pair = (i.min(j), i.max(j));
                if self.links.get(&pair).is_some_and(|l| l.kind == kind) {
                    match reason {
                        DisconnectReason::Rotated => self.stats.rotations += 1,
                        DisconnectReason::MadeRoom => self.stats.made_room += 1,
                        _ => {}
                    }
                    self.close_link(pair).await;
                    if let Some(me) = self.id(i) {
                        self.tell(j, |d| d.disconnected(me, kind));
                    }
                }
            }
        }
    }

    /// A dial came due: link the pair, or report the failure.
    async fn complete(&mut self, key: (usize, usize)) {
        let Some(dial) = self.dials.remove(&key) else { return };
        let (i, j) = key;
        let (to, kind) = (dial.to, dial.kind);
        let Some(me) = self.id(i) else { return };
        let pair = (i.min(j), i.max(j));
        if self.id(j) != Some(to) || !self.reach.contains(&(pair.0, pair.1, kind)) {
            return self.fail(i, to, kind);
        }
        if let Some(live) = self.links.get(&pair) {
            if live.kind == kind {
                // The remote's dial came first: one link, counted by both.
                self.stats.crossed_dials += 1;
                return;
            }
            return self.fail(i, to, kind);
        }
        let (Some(si), Some(sj)) = (self.slots[i].as_ref(), self.slots[j].as_ref()) else {
            return self.fail(i, to, kind);
        };
        let accept = sj.driver.would_accept(me, kind) == Ok(true) && si.driver.would_accept(to, kind) == Ok(true);
        if !accept {
            return self.fail(i, to, kind);
        }
        let (pa, pb) = if i < j {
            (&si.peer, &sj.peer)
        } else {
            (&sj.peer, &si.peer)
        };
        let (pa, pb) = (pa.clone(), pb.clone());
        // The remote's crossing dial is dropped unreported: the planners
        // count this one link.
        if self.dials.get(&(j, i)).is_some_and(|d| d.kind == kind) {
            self.dials.remove(&(j, i));
            self.stats.crossed_dials += 1;
        }
        let model = self.model(kind);
        match pa.connect_in_process_with(&pb, model).await {
            Ok(link) => {
                self.links.insert(pair, Live { link, kind });
                for end in [i, j] {
                    *self.counts.entry((end, kind)).or_default() += 1;
                    self.touched.insert(end);
                }
                self.stats.link_changes += 1;
                self.tell(i, |d| d.connected(to, kind));
                self.tell(j, |d| d.connected(me, kind));
            }
            Err(e) => {
                if std::env::var_os("RHIZOME_SIM_DEBUG").is_some() {
                    eprintln!("dial {i} -> {j} over {kind:?} failed: {e}");
                }
                self.fail(i, to, kind);
            }
        }
    }

    /// Counts the sessions of the peers that gained one against their
    /// limits.
    fn count_sessions(&mut self) {
        for i in std::mem::take(&mut self.touched) {
            let Some(slot) = self.slots[i].as_ref() else { continue };
            for kind in KINDS {
                let n = self.counts.get(&(i, kind)).copied().unwrap_or(0);
                self.stats.max_sessions_seen = self.stats.max_sessions_seen.max(n);
                let limit = slot.driver.limit(kind).unwrap_or(0) as u64;
                if n > limit {
                    self.stats.limit_breaches += 1;
                    if std::env::var_os("RHIZOME_SIM_DEBUG").is_some() {
                        eprintln!("peer {i} holds {n} sessions over {kind:?} (limit {limit})");
                    }
                }
            }
        }
    }
}

/// The board's task: handles what woke it (decisions waiting, a dial due)
/// until the board is closed or dropped (held weakly).
async fn run(board: Weak<tokio::sync::Mutex<Board>>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        let Some(board) = board.upgrade() else { return };
        let mut b = board.lock().await;
        if b.closed {
            return;
        }
        b.pump().await;
    }
}

//! Driving the connection planner: which peers this peer holds sync
//! sessions with.
//!
//! The engine's [`ConnPlanner`] decides (at most a few sessions per link
//! kind, rotation so unmet peers get a turn; see
//! `rhizome_engine::sync::conns`), but owns no clock, task or link. A
//! [`ConnDriver`] is the planner of one peer put to work: it takes time
//! from `tokio::time` (virtual time under the simulator), runs the
//! planner's timer and feeds it the peer's caught-up rounds on a task of its
//! own, and hands its decisions ([`Decision::Connect`],
//! [`Decision::Disconnect`]) to whoever executes links: the simulator's
//! switchboard today, a transport manager later. That executor reports what
//! its links do (`discovered`, `lost`, `connected`, `disconnected`), and may
//! ask [`ConnDriver::would_accept`] before taking an incoming session.
//!
//! Nothing here waits on anyone: every input is a short synchronous call
//! (a mutex held for one planner step, never across an `.await`), decisions
//! wait in a bounded queue for the executor to take them, and sessions
//! publish caught-up rounds to a bounded log ([`CaughtUpFeed`]) that a slow
//! reader skips through instead of holding them back.
//!
//! Two `LinkKind`s meet here: the peer's ([`crate::LinkKind`], which also
//! has in-process and cloud links) and the planner's (radios and LANs
//! only). Only LAN, peer-to-peer Wi-Fi and BLE are planned; the driver
//! refuses the others with [`DriverError::UnplannedKind`].

use crate::latest;
use crate::peer::{Peer, SyncConfig};
use crate::presence::LinkKind;
use rhizome_engine::hlc::PeerId;
use rhizome_engine::sync::conns::{self as plan, ConnPlanner, Output};
pub use rhizome_engine::sync::conns::{ConfigError, ConnsConfig, DisconnectReason};
use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::time::Instant;

/// Caught-up rounds a [`CaughtUpFeed`] can fall behind by before it misses
/// some (a missed one only delays a rotation).
pub const CAUGHT_UP_LOG: usize = 64;
/// Most decisions waiting for the executor (the planner's own bound on
/// queued outputs: an executor that never takes them is a bug, and this
/// makes it loud instead of unbounded memory).
pub const MAX_PENDING_DECISIONS: usize = 4_096;

/// The recent caught-up rounds of a peer's sessions: remote peers, oldest
/// first, numbered from `next_seq - recent.len()`.
#[derive(Clone, Debug, Default)]
pub(crate) struct CaughtUpLog {
    next_seq: u64,
    recent: VecDeque<PeerId>,
}

/// The sessions' end of the caught-up log.
pub(crate) type CaughtUpSender = Arc<latest::Sender<CaughtUpLog>>;

/// A caught-up log and a receiver to clone feeds from.
pub(crate) fn caught_up_channel() -> (CaughtUpSender, latest::Receiver<CaughtUpLog>) {
    let (tx, rx) = latest::channel(CaughtUpLog::default());
    (Arc::new(tx), rx)
}

/// A session's round with `remote` ended caught up. Never waits.
pub(crate) fn note_caught_up(tx: &CaughtUpSender, remote: PeerId) {
    tx.send_modify(|log| {
        if log.recent.len() == CAUGHT_UP_LOG {
            log.recent.pop_front();
        }
        log.recent.push_back(remote);
        log.next_seq += 1;
    });
}

/// The remote peers this peer's sessions caught up with, as they do (see
/// [`Peer::caught_up`]): a session's round ended with nothing left to
/// exchange. A reader more than [`CAUGHT_UP_LOG`] rounds behind skips the
/// oldest (counted by [`CaughtUpFeed::missed`]).
pub struct CaughtUpFeed {
    rx: latest::Receiver<CaughtUpLog>,
    next_seq: u64,
    missed: u64,
}

impl CaughtUpFeed {
    /// A feed of the rounds after now.
    pub(crate) fn new(mut rx: latest::Receiver<CaughtUpLog>) -> CaughtUpFeed {
        let next_seq = rx.borrow_and_update().next_seq;
        CaughtUpFeed {
            rx,
            next_seq,
            missed: 0,
        }
    }

    /// The remotes caught up with since the last call (at least one,
    /// oldest first); `None` once the peer is closed.
    pub async fn next(&mut self) -> Option<Vec<PeerId>> {
        // Bounded by the sender: every pass either returns or waits for a
        // newer version.
        loop {
            let log = self.rx.borrow_and_update();
            if log.next_seq > self.next_seq {
                let first = log.next_seq - log.recent.len() as u64;
                if first > self.next_seq {
                    self.missed += first - self.next_seq;
                }
                let skip = self.next_seq.saturating_sub(first) as usize;
                self.next_seq = log.next_seq;
                return Some(log.recent.into_iter().skip(skip).collect());
            }
            self.rx.changed().await.ok()?;
        }
    }

    /// Rounds this feed fell too far behind to see.
    pub fn missed(&self) -> u64 {
        self.missed
    }
}

impl fmt::Debug for CaughtUpFeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaughtUpFeed")
            .field("next_seq", &self.next_seq)
            .field("missed", &self.missed)
            .finish_non_exhaustive()
    }
}

/// The planner's kind for a peer's link kind, if it plans that kind.
pub fn planned_kind(kind: LinkKind) -> Option<plan::LinkKind> {
    match kind {
        LinkKind::Lan => Some(plan::LinkKind::Lan),
        LinkKind::P2pWifi => Some(plan::LinkKind::P2pWifi),
        LinkKind::Ble => Some(plan::LinkKind::Ble),
        _ => None,
    }
}

/// The peer's link kind for a planner's kind.
fn link_kind(kind: plan::LinkKind) -> Option<LinkKind> {
    match kind {
        plan::LinkKind::Lan => Some(LinkKind::Lan),
        plan::LinkKind::P2pWifi => Some(LinkKind::P2pWifi),
        plan::LinkKind::Ble => Some(LinkKind::Ble),
        _ => None,
    }
}

/// The planner's configuration for a peer opened with `sync`: its session
/// limits (BLE from `max_sessions_ble`; peer-to-peer Wi-Fi and LAN from
/// `max_sessions_wifi`), the planner's defaults for the rest (a rotation
/// about every 30 s). `seed` breaks ties and jitters rotations: give every
/// peer its own, or a crowd dials the same few peers.
pub fn conns_config(sync: &SyncConfig, me: PeerId, seed: u64) -> ConnsConfig {
    let mut c = ConnsConfig::new(me, seed);
    c.max_ble_sessions = sync.max_sessions_ble as usize;
    c.max_p2p_wifi_sessions = sync.max_sessions_wifi as usize;
    c.max_lan_sessions = sync.max_sessions_wifi as usize;
    c
}

/// What the executor of links must do for the driver's peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Dial `peer` over `kind`; report the session with
    /// [`ConnDriver::connected`], a failure with
    /// [`ConnDriver::disconnected`]. When the remote dialled this peer
    /// over the same kind meanwhile (crossed dials), keep the link the
    /// lower [`PeerId`] dialled, close the other and report neither: both
    /// planners count one session.
    Connect {
        /// Whom.
        peer: PeerId,
        /// Over what.
        kind: LinkKind,
    },
    /// Take the link with `peer` over `kind` down (the session ends with
    /// its last link), or abandon the dial. Reporting its end afterwards is
    /// allowed and ignored.
    Disconnect {
        /// Whom.
        peer: PeerId,
        /// Over what.
        kind: LinkKind,
        /// Why.
        reason: DisconnectReason,
    },
}

/// What a driver decided so far, by kind of decision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverStats {
    /// Dials asked for.
    pub dials: u64,
    /// Sessions rotated out for a peer not met lately.
    pub rotated: u64,
    /// Sessions dropped to let in one that came up at a full kind.
    pub made_room: u64,
    /// Sessions refused at a full kind.
    pub refused_full: u64,
    /// Links refused as duplicates (a slower link to a peer with a
    /// session, with no room for a spare).
    pub duplicates: u64,
    /// Spare links (slower links to a peer with a session) dropped to make
    /// room for a session.
    pub spares_dropped: u64,
    /// Dials abandoned: timed out, or the peer went out of range.
    pub abandoned_dials: u64,
    /// Caught-up rounds fed to the planner.
    pub synced: u64,
    /// Caught-up rounds the feed fell too far behind to see.
    pub missed_synced: u64,
}

/// Why a driver refused something.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DriverError {
    /// The planner refused its configuration.
    Config(ConfigError),
    /// The configuration names another peer than the one driven.
    WrongPeer {
        /// The peer driven.
        peer: PeerId,
        /// The configuration's `me`.
        configured: PeerId,
    },
    /// Links of this kind are not planned (in-process, cloud).
    UnplannedKind(LinkKind),
    /// The driver was stopped.
    Stopped,
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriverError::Config(e) => write!(f, "connection planner: {e}"),
            DriverError::WrongPeer { peer, configured } => {
                write!(f, "the planner is configured for {configured}, not {peer}")
            }
            DriverError::UnplannedKind(kind) => write!(f, "{kind:?} links are not planned"),
            DriverError::Stopped => write!(f, "the connection driver is stopped"),
        }
    }
}

impl std::error::Error for DriverError {}

/// A callback told that decisions wait (see [`ConnDriver::start`]).
type OnReady = Box<dyn Fn() + Send + Sync>;

struct State {
    planner: ConnPlanner,
    /// Time zero of the planner's `now_ms`.
    epoch: Instant,
    decisions: VecDeque<Decision>,
    /// The planner's timer, in its `now_ms`.
    timer_at_ms: Option<u64>,
    stats: DriverStats,
    stopped: bool,
}

impl State {
    fn now_ms(&self) -> u64 {
        Instant::now().saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Moves the planner's outputs to the decisions; returns whether
    /// decisions were added and whether the timer moved.
    fn drain(&mut self) -> (bool, bool) {
        let (mut added, mut rearm) = (false, false);
        while let Some(out) = self.planner.poll_output() {
            let decision = match out {
                Output::SetTimer { at_ms } => {
                    self.timer_at_ms = Some(at_ms);
                    rearm = true;
                    continue;
                }
                Output::Connect { peer, kind } => {
                    self.stats.dials += 1;
                    link_kind(kind).map(|kind| Decision::Connect { peer, kind })
                }
                Output::Disconnect { peer, kind, reason } => {
                    let s = &mut self.stats;
                    match reason {
                        DisconnectReason::Rotated => s.rotated += 1,
                        DisconnectReason::MadeRoom => s.made_room += 1,
                        DisconnectReason::Full => s.refused_full += 1,
                        DisconnectReason::Duplicate => s.duplicates += 1,
                        DisconnectReason::Spare => s.spares_dropped += 1,
                        _ => s.abandoned_dials += 1,
                    }
                    link_kind(kind).map(|kind| Decision::Disconnect { peer, kind, reason })
                }
            };
            if let Some(d) = decision {
                assert!(
                    self.decisions.len() < MAX_PENDING_DECISIONS,
                    "connection decisions are not being taken"
                );
                self.decisions.push_back(d);
                added = true;
            }
        }
        (added, rearm)
    }
}

struct Shared {
    me: PeerId,
    state: Mutex<State>,
    /// Bumped when decisions are added (for [`ConnDriver::next_decision`]).
    ready: latest::Sender<u64>,
    ready_rx: latest::Receiver<u64>,
    /// Bumped when the timer moves or the driver stops (for its task).
    rearm: latest::Sender<u64>,
    on_ready: OnReady,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A planner step that panicked is a bug the panic already reported;
        // its state is still a planner's.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One planner step at the current time, then what it caused.
    fn step<T>(&self, f: impl FnOnce(&mut ConnPlanner, u64) -> T) -> Result<T, DriverError> {
        let (out, (added, rearm)) = {
            let mut s = self.lock();
            if s.stopped {
                return Err(DriverError::Stopped);
            }
            let now_ms = s.now_ms();
            let out = f(&mut s.planner, now_ms);
            (out, s.drain())
        };
        // Outside the lock: the callback may call back into the driver.
        if rearm {
            self.rearm.send_modify(|v| *v += 1);
        }
        if added {
            self.ready.send_modify(|v| *v += 1);
            (self.on_ready)();
        }
        Ok(out)
    }
}

/// One peer's connection planner at work (see the module doc). Cheap to
/// clone; every clone is the same driver. Its task ends when the last
/// clone is dropped or [`ConnDriver::stop`] is called.
#[derive(Clone)]
pub struct ConnDriver {
    shared: Arc<Shared>,
}

impl ConnDriver {
    /// Starts a driver with `config`, fed the caught-up rounds of
    /// `caught_up` if given (without them no session counts as met, and
    /// only rotation drops any). `on_ready` is called whenever decisions
    /// start waiting (from whichever task caused them; it must not block):
    /// an executor serving many drivers marks this one and polls it with
    /// [`ConnDriver::poll_decision`]; one serving a single driver can
    /// instead wait in [`ConnDriver::next_decision`].
    pub fn start(
        config: ConnsConfig,
        caught_up: Option<CaughtUpFeed>,
        on_ready: impl Fn() + Send + Sync + 'static,
    ) -> Result<ConnDriver, DriverError> {
        let me = config.me;
        let planner = ConnPlanner::new(config).map_err(DriverError::Config)?;
        let (ready, ready_rx) = latest::channel(0);
        let (rearm, rearm_rx) = latest::channel(0);
        let shared = Arc::new(Shared {
            me,
            state: Mutex::new(State {
                planner,
                epoch: Instant::now(),
                decisions: VecDeque::new(),
                timer_at_ms: None,
                stats: DriverStats::default(),
                stopped: false,
            }),
            ready,
            ready_rx,
            rearm,
            on_ready: Box::new(on_ready),
        });
        tokio::spawn(run(Arc::downgrade(&shared), rearm_rx, caught_up));
        Ok(ConnDriver { shared })
    }

    /// [`ConnDriver::start`] for `peer`, fed its caught-up rounds.
    pub fn for_peer(
        peer: &Peer,
        config: ConnsConfig,
        on_ready: impl Fn() + Send + Sync + 'static,
    ) -> Result<ConnDriver, DriverError> {
        if config.me != peer.id() {
            return Err(DriverError::WrongPeer {
                peer: peer.id(),
                configured: config.me,
            });
        }
        ConnDriver::start(config, Some(peer.caught_up()), on_ready)
    }

    /// The peer driven.
    pub fn me(&self) -> PeerId {
        self.shared.me
    }

    /// `peer` is reachable over `kind`.
    pub fn discovered(&self, peer: PeerId, kind: LinkKind) -> Result<(), DriverError> {
        let k = planned(kind)?;
        self.shared.step(|p, now_ms| p.handle_discovered(peer, k, now_ms))
    }

    /// Every `(peer, kind)` of `found` is reachable: planned once, so the
    /// slots go to the best of them (the seed's order), not the first
    /// found. Unplanned kinds are skipped.
    pub fn discovered_many(&self, found: impl IntoIterator<Item = (PeerId, LinkKind)>) -> Result<(), DriverError> {
        let found: Vec<(PeerId, plan::LinkKind)> = found
            .into_iter()
            .filter_map(|(peer, kind)| Some((peer, planned_kind(kind)?)))
            .collect();
        self.shared.step(|p, now_ms| p.handle_discovered_many(found, now_ms))
    }

    /// `peer` is no longer reachable over `kind` (a dial to it is
    /// abandoned; a session stays until reported down).
    pub fn lost(&self, peer: PeerId, kind: LinkKind) -> Result<(), DriverError> {
        let k = planned(kind)?;
        self.shared.step(|p, now_ms| p.handle_lost(peer, k, now_ms))
    }

    /// Whether a session with `peer` coming up over `kind` now would be
    /// kept (ask before accepting one; no effect).
    pub fn would_accept(&self, peer: PeerId, kind: LinkKind) -> Result<bool, DriverError> {
        let k = planned(kind)?;
        let s = self.shared.lock();
        if s.stopped {
            return Err(DriverError::Stopped);
        }
        Ok(s.planner.would_accept(peer, k, s.now_ms()))
    }

    /// A link with `peer` over `kind` is up (dialled by either side): a
    /// session, or a spare link of one (links to one peer share its
    /// session; see [`Peer::attach_link`]).
    pub fn connected(&self, peer: PeerId, kind: LinkKind) -> Result<(), DriverError> {
        let k = planned(kind)?;
        self.shared.step(|p, now_ms| p.handle_connected(peer, k, now_ms))
    }

    /// The link with `peer` over `kind` went down, or the dial failed.
    pub fn disconnected(&self, peer: PeerId, kind: LinkKind) -> Result<(), DriverError> {
        let k = planned(kind)?;
        self.shared.step(|p, now_ms| p.handle_disconnected(peer, k, now_ms))
    }

    /// The next decision, if one waits.
    pub fn poll_decision(&self) -> Option<Decision> {
        self.shared.lock().decisions.pop_front()
    }

    /// Waits for the next decision; `None` once stopped.
    pub async fn next_decision(&self) -> Option<Decision> {
        let mut ready = self.shared.ready_rx.clone();
        // Bounded by the decisions made: each pass takes one or waits for a
        // newer version of `ready` (bumped after decisions are queued).
        loop {
            {
                let mut s = self.shared.lock();
                if let Some(d) = s.decisions.pop_front() {
                    return Some(d);
                }
                if s.stopped {
                    return None;
                }
            }
            ready.changed().await.ok()?;
        }
    }

    /// Sessions the planner counts over `kind` (0 for unplanned kinds).
    pub fn sessions(&self, kind: LinkKind) -> usize {
        planned_kind(kind).map_or(0, |k| self.shared.lock().planner.sessions(k))
    }

    /// The configured limit of sessions over `kind` (`None`: not planned).
    pub fn limit(&self, kind: LinkKind) -> Option<usize> {
        planned_kind(kind).map(|k| self.shared.lock().planner.config().max_sessions(k))
    }

    /// Every session the planner counts, by kind (fastest first) then peer.
    pub fn connections(&self) -> Vec<(PeerId, LinkKind)> {
        let s = self.shared.lock();
        s.planner
            .connected()
            .filter_map(|(p, k)| Some((p, link_kind(k)?)))
            .collect()
    }

    /// What it decided so far.
    pub fn stats(&self) -> DriverStats {
        self.shared.lock().stats
    }

    /// Stops the driver: its task ends, inputs are refused, decisions not
    /// taken are dropped (the executor closes the links it holds).
    pub fn stop(&self) {
        {
            let mut s = self.shared.lock();
            s.stopped = true;
            s.decisions.clear();
        }
        self.shared.rearm.send_modify(|v| *v += 1);
        self.shared.ready.send_modify(|v| *v += 1);
    }
}

impl fmt::Debug for ConnDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnDriver")
            .field("me", &self.shared.me)
            .finish_non_exhaustive()
    }
}

fn planned(kind: LinkKind) -> Result<plan::LinkKind, DriverError> {
    planned_kind(kind).ok_or(DriverError::UnplannedKind(kind))
}

/// The driver's task: fires the planner's timer and feeds it caught-up
/// rounds, until the driver is stopped or dropped (it holds the driver
/// weakly, so it never keeps it alive).
async fn run(shared: Weak<Shared>, mut rearm: latest::Receiver<u64>, mut caught_up: Option<CaughtUpFeed>) {
    loop {
        let wake_at = {
            let Some(sh) = shared.upgrade() else { return };
            let s = sh.lock();
            if s.stopped {
                return;
            }
            s.timer_at_ms.map(|ms| s.epoch + Duration::from_millis(ms))
        };
        // `biased`: no random branch order (the simulator must replay).
        tokio::select! {
            biased;
            r = rearm.changed() => {
                if r.is_err() {
                    return;
                }
            }
            remotes = next_caught_up(&mut caught_up) => {
                let Some(sh) = shared.upgrade() else { return };
                match remotes {
                    Some(remotes) => {
                        let missed = caught_up.as_ref().map_or(0, CaughtUpFeed::missed);
                        let n = remotes.len() as u64;
                        let _ = sh.step(move |p, now_ms| {
                            for r in remotes {
                                p.handle_synced(r, now_ms);
                            }
                        });
                        let mut s = sh.lock();
                        s.stats.synced += n;
                        s.stats.missed_synced = missed;
                    }
                    // The peer closed: no more rounds.
                    None => caught_up = None,
                }
            }
            () = sleep_until_opt(wake_at) => {
                let Some(sh) = shared.upgrade() else { return };
                let _ = sh.step(|p, now_ms| p.handle_timer(now_ms));
                let mut s = sh.lock();
                // Fired (an earlier one asked meanwhile moved it before it).
                if s.timer_at_ms.is_some_and(|at| s.epoch + Duration::from_millis(at) <= Instant::now()) {
                    s.timer_at_ms = None;
                }
            }
        }
    }
}

async fn next_caught_up(feed: &mut Option<CaughtUpFeed>) -> Option<Vec<PeerId>> {
    match feed {
        Some(f) => f.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_feed_sees_rounds_in_order_and_counts_those_it_fell_behind_on() {
        let (tx, rx) = caught_up_channel();
        note_caught_up(&tx, PeerId(1));
        let mut feed = CaughtUpFeed::new(rx.clone());
        // Only rounds after the feed began.
        note_caught_up(&tx, PeerId(2));
        note_caught_up(&tx, PeerId(3));
        assert_eq!(feed.next().await, Some(vec![PeerId(2), PeerId(3)]));
        // Past the log's length: the oldest are skipped and counted.
        let extra = 10;
        for p in 0..(CAUGHT_UP_LOG as u64 + extra) {
            note_caught_up(&tx, PeerId(100 + p));
        }
        let got = feed.next().await.expect("rounds");
        assert_eq!(got.len(), CAUGHT_UP_LOG);
        assert_eq!(got[0], PeerId(100 + extra));
        assert_eq!(feed.missed(), extra);
        // The peer closes: the feed ends.
        drop(tx);
        assert_eq!(feed.next().await, None);
    }

    #[test]
    fn kinds_map_both_ways() {
        for kind in [LinkKind::Lan, LinkKind::P2pWifi, LinkKind::Ble] {
            let planned = planned_kind(kind).expect("planned");
            assert_eq!(link_kind(planned), Some(kind));
        }
        assert_eq!(planned_kind(LinkKind::InProcess), None);
        assert_eq!(planned_kind(LinkKind::Cloud), None);
        let c = conns_config(&SyncConfig::default(), PeerId(1), 2);
        assert_eq!(
            (c.max_ble_sessions, c.max_p2p_wifi_sessions, c.max_lan_sessions),
            (3, 4, 4)
        );
    }
}

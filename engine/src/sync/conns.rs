//! Which peers to hold sync sessions with: a sans-IO connection planner,
//! one per peer. Radios hold few connections (a BLE central manages a
//! handful), and in a crowd of hundreds of peers in range a peer that only
//! ever talks to the first few it found splits the mesh into islands. The
//! planner keeps at most a configured number of sessions per link kind and
//! rotates one out now and then, so that peers it has not met get a turn.
//!
//! Like [`super::session`], it owns no clock, socket, task or randomness:
//! the driver (a transport manager, the simulator, a test) reports what
//! happened with `handle_*` (time comes in as `now_ms`, tie-breaking from
//! [`ConnsConfig::seed`]) and does what [`ConnPlanner::poll_output`] asks:
//! [`Output::Connect`], [`Output::Disconnect`], [`Output::SetTimer`]. The
//! same inputs give the same outputs.
//!
//! # Policy
//!
//! - **Free slots** are filled by dialling in-range peers, those never met
//!   first, then those met longest ago ("met" = a session with them reached
//!   [`ConnPlanner::handle_synced`]); ties are broken by a hash of the seed,
//!   so a crowd of planners does not all dial the same peers. Dials in
//!   flight count toward the limit. Kinds are filled fastest first (LAN,
//!   peer-to-peer Wi-Fi, BLE), and a peer with a session (or a dial) over
//!   one kind is not dialled over another: one session per remote peer.
//! - **Rotation.** About every [`ConnsConfig::rotation_period_ms`]
//!   (uniformly in ½ to 1½ periods, from the seed, so a crowd does not
//!   rotate in step), for each kind that is full and has an in-range peer
//!   to dial, the planner dials the best such peer *before* dropping
//!   anything; when that session comes up it drops one session of the kind
//!   at least [`ConnsConfig::min_session_age_ms`] old, preferring one that
//!   has synced, then the oldest ([`DisconnectReason::Rotated`]). A
//!   rotation dial that fails costs nothing.
//! - **A session that comes up at a full kind** (an incoming one, or a dial
//!   that completes after incoming sessions took its slot) is accepted by
//!   dropping a session of that kind that has synced and is at least the
//!   minimum age ([`DisconnectReason::MadeRoom`]), at most once per
//!   rotation period per kind; otherwise it is refused
//!   ([`DisconnectReason::Full`]). So, per kind, a peer drops about one
//!   session a period to rotate and at most one to make room: churn stays
//!   bounded, and a full peer still lets a newcomer in now and then.
//! - **Failures.** A dial that fails, times out
//!   ([`ConnsConfig::dial_timeout_ms`]) or whose session ends before
//!   syncing (the other side refused, the link dropped) puts that peer
//!   behind [`ConnsConfig::dial_backoff_ms`] before this planner dials it
//!   again.
//! - **Losing sight of a peer** cancels dials to it over that kind; live
//!   sessions stay until the link layer reports them down (some radios stop
//!   advertising while connected).
//!
//! # Duplicate sessions and spare links
//!
//! Both sides may dial. The planner keys sessions by (peer, kind) and never
//! dials a peer it has a session or a dial with, so a dial of ours and an
//! incoming session from the same peer over the same kind are one session
//! to it. When two dials cross on the same kind, the driver keeps the link
//! dialled by the lower [`PeerId`] and closes the other without reporting
//! it; both sides apply the same rule, so both keep the same link.
//!
//! Links to one peer over several kinds are one session (the peer's link
//! manager runs it over the fastest and falls back to the next when it
//! drops). The planner counts **sessions, not links**: a session counts
//! once, under the kind it runs on (its fastest link); a slower link to a
//! peer with a session is a *spare*. A spare counts toward nothing the
//! planner dials for, and is the first thing dropped when its kind needs
//! room for a session ([`DisconnectReason::Spare`]); it is kept only while
//! its kind has room, `sessions + spares <= limit`, so that when the
//! faster link drops, the session falls back onto the spare and is counted
//! there without evicting anyone or going past the limit. A faster link
//! coming up moves the session to its kind (admitted like a new session;
//! if refused, the session stays where it is), and the slower link becomes
//! a spare in the slot it held. Ending a session (rotation, making room)
//! ends its spares with it. A spare reported with no room is refused as
//! before ([`DisconnectReason::Duplicate`]).
//!
//! # Bounds
//!
//! At most [`ConnsConfig::max_candidates`] peers are tracked; past that the
//! one lost longest ago is forgotten (or, when all are in range, the one
//! met most recently); peers with a session or a dial are never forgotten.
//! The limits are the planner's own count after each of its decisions: the
//! link layer may briefly see one session more, between the session that
//! came up and the `Disconnect` it caused.

use crate::hlc::PeerId;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;

/// A kind of link sessions run over. Ordered fastest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum LinkKind {
    /// QUIC on a LAN.
    Lan,
    /// Peer-to-peer Wi-Fi (AWDL, Wi-Fi Direct, Wi-Fi Aware).
    P2pWifi,
    /// Bluetooth LE.
    Ble,
}

impl LinkKind {
    /// Every kind, fastest first (the order slots are filled in).
    pub const ALL: [LinkKind; 3] = [LinkKind::Lan, LinkKind::P2pWifi, LinkKind::Ble];

    fn index(self) -> usize {
        match self {
            LinkKind::Lan => 0,
            LinkKind::P2pWifi => 1,
            LinkKind::Ble => 2,
        }
    }

    fn bit(self) -> u8 {
        1 << self.index()
    }
}

/// Most sessions a kind may be configured for.
pub const MAX_SESSIONS_PER_KIND: usize = 64;

/// Bound on outputs queued between drains (a driver that never drains is a
/// bug; the bound makes it loud instead of unbounded memory).
const MAX_QUEUED_OUTPUTS: usize = 4_096;

/// How the planner behaves. Build with [`ConnsConfig::new`] and change the
/// fields that matter.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnsConfig {
    /// This peer.
    pub me: PeerId,
    /// Most sessions over Bluetooth LE.
    pub max_ble_sessions: usize,
    /// Most sessions over peer-to-peer Wi-Fi.
    pub max_p2p_wifi_sessions: usize,
    /// Most sessions over a LAN.
    pub max_lan_sessions: usize,
    /// Mean time between rotations.
    pub rotation_period_ms: u64,
    /// A session younger than this is never dropped to make room.
    pub min_session_age_ms: u64,
    /// A dial not reported connected after this long is abandoned.
    pub dial_timeout_ms: u64,
    /// After a failed dial or a session that ended before syncing, how long
    /// before that peer is dialled again.
    pub dial_backoff_ms: u64,
    /// Most peers tracked (in range, or remembered for when they were met).
    pub max_candidates: usize,
    /// Seeds tie-breaking and rotation jitter.
    pub seed: u64,
}

impl ConnsConfig {
    /// The defaults: 3 BLE sessions, 4 peer-to-peer Wi-Fi, 4 LAN; a
    /// rotation every 30 s, of sessions at least 10 s old; dials abandoned
    /// after 10 s and retried after 15 s; 4,096 peers tracked.
    pub fn new(me: PeerId, seed: u64) -> ConnsConfig {
        ConnsConfig {
            me,
            max_ble_sessions: 3,
            max_p2p_wifi_sessions: 4,
            max_lan_sessions: 4,
            rotation_period_ms: 30_000,
            min_session_age_ms: 10_000,
            dial_timeout_ms: 10_000,
            dial_backoff_ms: 15_000,
            max_candidates: 4_096,
            seed,
        }
    }

    /// The limit for one kind.
    pub fn max_sessions(&self, kind: LinkKind) -> usize {
        match kind {
            LinkKind::Lan => self.max_lan_sessions,
            LinkKind::P2pWifi => self.max_p2p_wifi_sessions,
            LinkKind::Ble => self.max_ble_sessions,
        }
    }

    /// Most peers that can have a session or a dial at once: per kind, the
    /// limit in sessions, as many fill dials, and one rotation dial.
    fn max_busy_peers(&self) -> usize {
        LinkKind::ALL.iter().map(|k| 2 * self.max_sessions(*k) + 1).sum()
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for kind in LinkKind::ALL {
            let max = self.max_sessions(kind);
            if max > MAX_SESSIONS_PER_KIND {
                return Err(ConfigError::TooManySessions { kind, max });
            }
        }
        if self.rotation_period_ms == 0 {
            return Err(ConfigError::ZeroPeriod {
                field: "rotation_period_ms",
            });
        }
        if self.dial_timeout_ms == 0 {
            return Err(ConfigError::ZeroPeriod {
                field: "dial_timeout_ms",
            });
        }
        let needed = self.max_busy_peers() + 1;
        if self.max_candidates < needed {
            return Err(ConfigError::TooFewCandidates {
                max_candidates: self.max_candidates,
                needed,
            });
        }
        Ok(())
    }
}

/// A configuration the planner refuses.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A kind's limit is above [`MAX_SESSIONS_PER_KIND`].
    TooManySessions {
        /// Which kind.
        kind: LinkKind,
        /// Its limit.
        max: usize,
    },
    /// A period that must be positive is zero.
    ZeroPeriod {
        /// Which field.
        field: &'static str,
    },
    /// `max_candidates` cannot hold every peer with a session or a dial,
    /// plus one.
    TooFewCandidates {
        /// As configured.
        max_candidates: usize,
        /// At least this.
        needed: usize,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::TooManySessions { kind, max } => {
                write!(f, "{max} sessions over {kind:?} (at most {MAX_SESSIONS_PER_KIND})")
            }
            ConfigError::ZeroPeriod { field } => write!(f, "{field} is zero"),
            ConfigError::TooFewCandidates { max_candidates, needed } => {
                write!(f, "max_candidates is {max_candidates}, needs at least {needed}")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Why the planner ends a session (or abandons a dial).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// Rotated out: a session with a peer not met lately came up instead.
    Rotated,
    /// Dropped to let in a session that came up at a full kind.
    MadeRoom,
    /// A spare link (a slower link to a peer whose session runs over a
    /// faster one), dropped to make room for a session of its kind.
    Spare,
    /// This session came up at a full kind and nothing could make room.
    Full,
    /// A session with this peer exists over a faster (or the same) kind,
    /// or the "peer" is this peer.
    Duplicate,
    /// The dial was not reported connected in time: abandon it.
    DialTimedOut,
    /// The peer went out of range over this kind: abandon the dial.
    Lost,
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Dial `peer` over `kind`; report the session with
    /// [`ConnPlanner::handle_connected`], a failure with
    /// [`ConnPlanner::handle_disconnected`].
    Connect {
        /// Whom.
        peer: PeerId,
        /// Over what.
        kind: LinkKind,
    },
    /// End the session with `peer` over `kind`, or abandon the dial. The
    /// planner has already stopped counting it; reporting its end with
    /// [`ConnPlanner::handle_disconnected`] is allowed and ignored.
    Disconnect {
        /// Whom.
        peer: PeerId,
        /// Over what.
        kind: LinkKind,
        /// Why.
        reason: DisconnectReason,
    },
    /// Call [`ConnPlanner::handle_timer`] once the clock reaches `at_ms`;
    /// replaces any timer asked for before. Early or extra calls are
    /// harmless.
    SetTimer {
        /// When.
        at_ms: u64,
    },
}

/// A peer the planner knows of.
#[derive(Clone, Debug)]
struct Candidate {
    /// Kinds it is reachable over (bit per [`LinkKind::index`]).
    in_range: u8,
    /// When it went out of range over every kind.
    lost_at_ms: Option<u64>,
    /// When a session with it last synced.
    last_met_ms: Option<u64>,
    /// Not dialled before this.
    backoff_until_ms: u64,
    /// Sessions and dials with it, over every kind.
    links: u8,
    /// Its place in this planner's order among equals (from the seed).
    tie: u64,
}

#[derive(Clone, Debug)]
struct Live {
    connected_at_ms: u64,
    synced: bool,
}

#[derive(Clone, Debug)]
struct Dial {
    since_ms: u64,
    /// Dialled by a rotation: when it comes up, it may drop any session of
    /// the minimum age.
    rotation: bool,
}

#[derive(Clone, Debug, Default)]
struct PerKind {
    live: BTreeMap<PeerId, Live>,
    /// Spare links: peers whose session runs over a faster kind, by when
    /// the spare came up.
    spare: BTreeMap<PeerId, u64>,
    dials: BTreeMap<PeerId, Dial>,
    /// When a session was last dropped to make room (one per period).
    made_room_at_ms: Option<u64>,
    /// Set by a scan that found every peer in range over this kind busy or
    /// backing off: no peer is dialable before this time (`u64::MAX`: not
    /// until something changes). Cleared by any event that may make a peer
    /// dialable, lowered by new backoffs; saves rescanning every candidate
    /// on every event in a crowd.
    exhausted_until_ms: Option<u64>,
}

enum Admit {
    Free,
    /// Drop this spare link of the kind.
    EvictSpare(PeerId),
    Evict(PeerId, DisconnectReason),
    Refuse,
}

/// Decides which peers this peer holds sync sessions with.
#[derive(Debug)]
pub struct ConnPlanner {
    config: ConnsConfig,
    candidates: BTreeMap<PeerId, Candidate>,
    kinds: [PerKind; 3],
    next_rotation_ms: Option<u64>,
    /// The timer last asked for, until it fires.
    armed_ms: Option<u64>,
    rng: u64,
    outputs: VecDeque<Output>,
}

fn mix(x: u64) -> u64 {
    // splitmix64's finalizer
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl ConnPlanner {
    /// A planner with no peers known.
    pub fn new(config: ConnsConfig) -> Result<ConnPlanner, ConfigError> {
        config.validate()?;
        let rng = mix(config.seed ^ mix(config.me.0));
        Ok(ConnPlanner {
            config,
            candidates: BTreeMap::new(),
            kinds: Default::default(),
            next_rotation_ms: None,
            armed_ms: None,
            rng,
            outputs: VecDeque::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ConnsConfig {
        &self.config
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Sessions counted over `kind`.
    pub fn sessions(&self, kind: LinkKind) -> usize {
        self.kinds[kind.index()].live.len()
    }

    /// Spare links counted over `kind` (see the module doc).
    pub fn spares(&self, kind: LinkKind) -> usize {
        self.kinds[kind.index()].spare.len()
    }

    /// Whether a spare link with `peer` over `kind` is counted.
    pub fn is_spare(&self, peer: PeerId, kind: LinkKind) -> bool {
        self.kinds[kind.index()].spare.contains_key(&peer)
    }

    /// Dials in flight over `kind`.
    pub fn dials(&self, kind: LinkKind) -> usize {
        self.kinds[kind.index()].dials.len()
    }

    /// Whether a session with `peer` over `kind` is counted.
    pub fn is_connected(&self, peer: PeerId, kind: LinkKind) -> bool {
        self.kinds[kind.index()].live.contains_key(&peer)
    }

    /// Every counted session, by kind (fastest first) then peer.
    pub fn connected(&self) -> impl Iterator<Item = (PeerId, LinkKind)> + '_ {
        LinkKind::ALL
            .into_iter()
            .flat_map(move |k| self.kinds[k.index()].live.keys().map(move |p| (*p, k)))
    }

    /// Peers tracked.
    pub fn tracked(&self) -> usize {
        self.candidates.len()
    }

    /// `peer` is reachable over `kind`.
    pub fn handle_discovered(&mut self, peer: PeerId, kind: LinkKind, now_ms: u64) {
        if peer == self.config.me {
            return;
        }
        let c = self.track(peer);
        c.in_range |= kind.bit();
        c.lost_at_ms = None;
        self.refresh();
        self.plan(now_ms);
    }

    /// Every `(peer, kind)` of `found` is reachable: the same as
    /// [`ConnPlanner::handle_discovered`] for each, but planned once at the
    /// end, so the slots go to the best of all of them (the seed's order)
    /// rather than to the first few a scan happened to report.
    pub fn handle_discovered_many(&mut self, found: impl IntoIterator<Item = (PeerId, LinkKind)>, now_ms: u64) {
        for (peer, kind) in found {
            if peer == self.config.me {
                continue;
            }
            let c = self.track(peer);
            c.in_range |= kind.bit();
            c.lost_at_ms = None;
        }
        self.refresh();
        self.plan(now_ms);
    }

    /// `peer` is no longer reachable over `kind`: a dial to it over `kind`
    /// is abandoned; a session stays until reported down.
    pub fn handle_lost(&mut self, peer: PeerId, kind: LinkKind, now_ms: u64) {
        let Some(c) = self.candidates.get_mut(&peer) else {
            return;
        };
        c.in_range &= !kind.bit();
        if c.in_range == 0 && c.lost_at_ms.is_none() {
            c.lost_at_ms = Some(now_ms);
        }
        if self.kinds[kind.index()].dials.remove(&peer).is_some() {
            self.unlink(peer);
            self.refresh();
            self.push(Output::Disconnect {
                peer,
                kind,
                reason: DisconnectReason::Lost,
            });
        }
        self.plan(now_ms);
    }

    /// Whether a session with `peer` coming up over `kind` now would be
    /// kept, for drivers that can refuse before accepting (the answer of
    /// [`ConnPlanner::handle_connected`], without its effects).
    pub fn would_accept(&self, peer: PeerId, kind: LinkKind, now_ms: u64) -> bool {
        if peer == self.config.me {
            return false;
        }
        let k = &self.kinds[kind.index()];
        if k.live.contains_key(&peer) || k.spare.contains_key(&peer) {
            return true;
        }
        if self.faster_live(peer, kind).is_some() {
            return self.spare_room(kind);
        }
        let rotation = k.dials.get(&peer).is_some_and(|d| d.rotation);
        !matches!(self.admit(kind, now_ms, rotation), Admit::Refuse)
    }

    /// Whether `kind` has room for a spare link (never made by dropping
    /// anything).
    fn spare_room(&self, kind: LinkKind) -> bool {
        let k = &self.kinds[kind.index()];
        k.live.len() + k.spare.len() < self.config.max_sessions(kind)
    }

    /// A link with `peer` over `kind` is up, dialled by either side: a
    /// session, or a spare of the session with `peer` over a faster kind
    /// (see the module doc). If the kind is full, one spare or session is
    /// dropped to make room or this one is refused (see the module's
    /// policy).
    pub fn handle_connected(&mut self, peer: PeerId, kind: LinkKind, now_ms: u64) {
        if peer == self.config.me {
            self.push(Output::Disconnect {
                peer,
                kind,
                reason: DisconnectReason::Duplicate,
            });
            return;
        }
        let i = kind.index();
        if self.kinds[i].live.contains_key(&peer) || self.kinds[i].spare.contains_key(&peer) {
            return;
        }
        let c = self.track(peer);
        c.in_range |= kind.bit();
        c.lost_at_ms = None;
        // It may be refused below, and be dialable then.
        self.refresh();
        let dial = self.kinds[i].dials.remove(&peer);
        if dial.is_some() {
            self.unlink(peer);
        }
        let rotation = dial.is_some_and(|d| d.rotation);
        if self.faster_live(peer, kind).is_some() {
            // A slower link to a peer with a session: a spare, if there is
            // room for it.
            if self.spare_room(kind) {
                self.kinds[i].spare.insert(peer, now_ms);
            } else {
                self.push(Output::Disconnect {
                    peer,
                    kind,
                    reason: DisconnectReason::Duplicate,
                });
            }
            self.plan(now_ms);
            return;
        }
        let admit = self.admit(kind, now_ms, rotation);
        if matches!(admit, Admit::Refuse) {
            self.push(Output::Disconnect {
                peer,
                kind,
                reason: DisconnectReason::Full,
            });
        } else {
            match admit {
                Admit::Evict(victim, reason) => {
                    if reason == DisconnectReason::MadeRoom {
                        self.kinds[i].made_room_at_ms = Some(now_ms);
                    }
                    self.drop_live(victim, kind, now_ms, reason);
                }
                Admit::EvictSpare(victim) => self.drop_spare(victim, kind),
                Admit::Free | Admit::Refuse => {}
            }
            // The session with this peer over a slower kind moves here; its
            // link there stays, as a spare in the slot it held.
            let mut state = Live {
                connected_at_ms: now_ms,
                synced: false,
            };
            for other in LinkKind::ALL {
                if other > kind {
                    if let Some(live) = self.kinds[other.index()].live.remove(&peer) {
                        self.unlink(peer);
                        self.kinds[other.index()].spare.insert(peer, now_ms);
                        state = live;
                    }
                }
            }
            self.kinds[i].live.insert(peer, state);
            self.link(peer);
            assert!(
                self.kinds[i].live.len() <= self.config.max_sessions(kind),
                "admitted a session past the limit"
            );
        }
        self.plan(now_ms);
    }

    /// The link with `peer` over `kind` went down, or the dial failed. A
    /// session with spare links falls back onto the fastest of them.
    pub fn handle_disconnected(&mut self, peer: PeerId, kind: LinkKind, now_ms: u64) {
        let k = &mut self.kinds[kind.index()];
        let failed = if k.dials.remove(&peer).is_some() {
            self.unlink(peer);
            true
        } else if k.spare.remove(&peer).is_some() {
            false
        } else if let Some(live) = k.live.remove(&peer) {
            if let Some(spare) = self.fastest_spare(peer) {
                // The session falls back onto its spare link, in the slot
                // the spare held.
                self.kinds[spare.index()].spare.remove(&peer);
                self.kinds[spare.index()].live.insert(peer, live);
                self.plan(now_ms);
                return;
            }
            self.unlink(peer);
            if live.synced {
                if let Some(c) = self.candidates.get_mut(&peer) {
                    c.last_met_ms = Some(now_ms);
                }
            }
            !live.synced
        } else {
            false
        };
        if failed {
            self.back_off(peer, now_ms);
        } else {
            self.refresh();
        }
        self.plan(now_ms);
    }

    /// A session with `peer` finished a round with nothing left to
    /// exchange: the peer counts as met, and the session may be rotated out.
    pub fn handle_synced(&mut self, peer: PeerId, now_ms: u64) {
        let mut any = false;
        for k in &mut self.kinds {
            if let Some(live) = k.live.get_mut(&peer) {
                live.synced = true;
                any = true;
            }
        }
        if any {
            if let Some(c) = self.candidates.get_mut(&peer) {
                c.last_met_ms = Some(now_ms);
            }
        }
        // Nothing to plan: being synced matters at the next rotation, which
        // the timer brings.
    }

    /// The timer fired (or the driver just wants the planner to look).
    pub fn handle_timer(&mut self, now_ms: u64) {
        if self.armed_ms.is_some_and(|at| at <= now_ms) {
            self.armed_ms = None;
        }
        self.plan(now_ms);
    }

    fn push(&mut self, out: Output) {
        assert!(
            self.outputs.len() < MAX_QUEUED_OUTPUTS,
            "planner outputs are not being drained"
        );
        self.outputs.push_back(out);
    }

    fn tie(&self, peer: PeerId) -> u64 {
        mix(self.config.seed ^ mix(peer.0))
    }

    fn next_random(&mut self) -> u64 {
        self.rng = mix(self.rng);
        self.rng
    }

    /// Counts a session or dial with a (tracked) peer.
    fn link(&mut self, peer: PeerId) {
        let c = self.candidates.get_mut(&peer).expect("peers with sessions are tracked");
        c.links += 1;
    }

    /// Counts the end of a session or dial with a peer.
    fn unlink(&mut self, peer: PeerId) {
        let c = self.candidates.get_mut(&peer).expect("peers with sessions are tracked");
        c.links -= 1;
    }

    /// The fastest kind with a spare link to `peer`.
    fn fastest_spare(&self, peer: PeerId) -> Option<LinkKind> {
        LinkKind::ALL
            .into_iter()
            .find(|k| self.kinds[k.index()].spare.contains_key(&peer))
    }

    fn drop_spare(&mut self, peer: PeerId, kind: LinkKind) {
        if self.kinds[kind.index()].spare.remove(&peer).is_some() {
            self.push(Output::Disconnect {
                peer,
                kind,
                reason: DisconnectReason::Spare,
            });
        }
    }

    /// A session with `peer` over a kind faster than `kind`.
    fn faster_live(&self, peer: PeerId, kind: LinkKind) -> Option<LinkKind> {
        LinkKind::ALL
            .into_iter()
            .find(|k| *k < kind && self.kinds[k.index()].live.contains_key(&peer))
    }

    /// The candidate entry for `peer`, made room for if new.
    fn track(&mut self, peer: PeerId) -> &mut Candidate {
        if !self.candidates.contains_key(&peer) {
            if self.candidates.len() >= self.config.max_candidates {
                self.forget_one();
            }
            self.candidates.insert(
                peer,
                Candidate {
                    in_range: 0,
                    lost_at_ms: None,
                    last_met_ms: None,
                    backoff_until_ms: 0,
                    links: 0,
                    tie: self.tie(peer),
                },
            );
        }
        self.candidates.get_mut(&peer).expect("just tracked")
    }

    /// Forgets the idle peer lost longest ago, else the in-range idle peer
    /// met most recently.
    fn forget_one(&mut self) {
        let victim = self
            .candidates
            .iter()
            .filter(|(_, c)| c.links == 0)
            .max_by_key(|(p, c)| {
                (
                    c.in_range == 0,
                    std::cmp::Reverse(c.lost_at_ms.unwrap_or(0)),
                    c.last_met_ms.map_or(0, |t| t.saturating_add(1)),
                    c.tie,
                    **p,
                )
            })
            .map(|(p, _)| *p);
        // Validation keeps room for every busy peer plus one.
        let victim = victim.expect("an idle candidate to forget");
        self.candidates.remove(&victim);
    }

    fn back_off(&mut self, peer: PeerId, now_ms: u64) {
        let until = now_ms.saturating_add(self.config.dial_backoff_ms);
        if let Some(c) = self.candidates.get_mut(&peer) {
            c.backoff_until_ms = c.backoff_until_ms.max(until);
            for kind in LinkKind::ALL {
                if c.in_range & kind.bit() != 0 {
                    let k = &mut self.kinds[kind.index()];
                    k.exhausted_until_ms = k.exhausted_until_ms.map(|t| t.min(c.backoff_until_ms));
                }
            }
        }
    }

    fn drop_live(&mut self, peer: PeerId, kind: LinkKind, now_ms: u64, reason: DisconnectReason) {
        if let Some(live) = self.kinds[kind.index()].live.remove(&peer) {
            self.unlink(peer);
            self.refresh();
            if live.synced {
                if let Some(c) = self.candidates.get_mut(&peer) {
                    c.last_met_ms = Some(now_ms);
                }
            }
            self.push(Output::Disconnect { peer, kind, reason });
            // The session ends: its spare links go with it.
            for other in LinkKind::ALL {
                if self.kinds[other.index()].spare.remove(&peer).is_some() {
                    self.push(Output::Disconnect {
                        peer,
                        kind: other,
                        reason,
                    });
                }
            }
        }
    }

    /// What to do with a session coming up over `kind` now.
    fn admit(&self, kind: LinkKind, now_ms: u64, rotation: bool) -> Admit {
        let max = self.config.max_sessions(kind);
        let k = &self.kinds[kind.index()];
        if k.live.len() + k.spare.len() < max {
            return Admit::Free;
        }
        if max == 0 {
            return Admit::Refuse;
        }
        // A spare is the cheapest room: its peer syncs on over a faster
        // link. The one up longest goes.
        let spare = k.spare.iter().min_by_key(|(p, since)| (**since, self.tie(**p), **p));
        if let Some((&peer, _)) = spare {
            return Admit::EvictSpare(peer);
        }
        if rotation {
            return match self.victim(kind, now_ms, false) {
                Some(v) => Admit::Evict(v, DisconnectReason::Rotated),
                None => Admit::Refuse,
            };
        }
        let budget = k
            .made_room_at_ms
            .is_none_or(|t| now_ms >= t.saturating_add(self.config.rotation_period_ms));
        match self.victim(kind, now_ms, true) {
            Some(v) if budget => Admit::Evict(v, DisconnectReason::MadeRoom),
            _ => Admit::Refuse,
        }
    }

    /// The session of `kind` to drop: at least the minimum age (and synced
    /// if `synced_only`), synced first, then oldest.
    fn victim(&self, kind: LinkKind, now_ms: u64, synced_only: bool) -> Option<PeerId> {
        self.kinds[kind.index()]
            .live
            .iter()
            .filter(|(_, l)| {
                now_ms >= l.connected_at_ms.saturating_add(self.config.min_session_age_ms) && (l.synced || !synced_only)
            })
            .min_by_key(|(p, l)| (!l.synced, l.connected_at_ms, self.tie(**p), **p))
            .map(|(p, _)| *p)
    }

    /// Up to `n` peers to dial over `kind`, best first (never met first,
    /// then met longest ago, then the seed's order), and whether that was
    /// all of them. Records in the kind's cache when none are left.
    fn pick(&mut self, kind: LinkKind, now_ms: u64, n: usize) -> Vec<PeerId> {
        let k = &self.kinds[kind.index()];
        if n == 0 || k.exhausted_until_ms.is_some_and(|t| now_ms < t) {
            return Vec::new();
        }
        // `None` (never met) sorts before every `Some`.
        let mut best: Vec<(Option<u64>, u64, PeerId)> = Vec::with_capacity(n + 1);
        let mut more = false;
        let mut backoff_ends_ms = u64::MAX;
        for (peer, c) in &self.candidates {
            if c.in_range & kind.bit() == 0 || c.links > 0 {
                continue;
            }
            if c.backoff_until_ms > now_ms {
                backoff_ends_ms = backoff_ends_ms.min(c.backoff_until_ms);
                continue;
            }
            let key = (c.last_met_ms, c.tie, *peer);
            if best.len() == n {
                more = true;
                if key >= best[n - 1] {
                    continue;
                }
                best.pop();
            }
            let at = best.partition_point(|b| *b < key);
            best.insert(at, key);
        }
        // Those picked are dialled: with no more, the kind is exhausted.
        self.kinds[kind.index()].exhausted_until_ms = (!more).then_some(backoff_ends_ms);
        best.into_iter().map(|(_, _, p)| p).collect()
    }

    /// Something may have made a peer dialable: scan again.
    fn refresh(&mut self) {
        for k in &mut self.kinds {
            k.exhausted_until_ms = None;
        }
    }

    fn rotation_delay_ms(&mut self) -> u64 {
        let period = self.config.rotation_period_ms;
        (period / 2 + self.next_random() % (period + 1)).max(1)
    }

    fn dial(&mut self, peer: PeerId, kind: LinkKind, now_ms: u64, rotation: bool) {
        self.kinds[kind.index()].dials.insert(
            peer,
            Dial {
                since_ms: now_ms,
                rotation,
            },
        );
        self.link(peer);
        self.push(Output::Connect { peer, kind });
    }

    /// Expires dials, rotates when due, fills free slots, arms the timer.
    fn plan(&mut self, now_ms: u64) {
        // Dials that took too long.
        for kind in LinkKind::ALL {
            let timeout_ms = self.config.dial_timeout_ms;
            let expired: Vec<PeerId> = self.kinds[kind.index()]
                .dials
                .iter()
                .filter(|(_, d)| now_ms >= d.since_ms.saturating_add(timeout_ms))
                .map(|(p, _)| *p)
                .collect();
            for peer in expired {
                self.kinds[kind.index()].dials.remove(&peer);
                self.unlink(peer);
                self.back_off(peer, now_ms);
                self.push(Output::Disconnect {
                    peer,
                    kind,
                    reason: DisconnectReason::DialTimedOut,
                });
            }
        }

        // Rotation.
        let next_rotation_ms = match self.next_rotation_ms {
            Some(at) => at,
            None => {
                let at = now_ms.saturating_add(self.rotation_delay_ms());
                self.next_rotation_ms = Some(at);
                at
            }
        };
        if now_ms >= next_rotation_ms {
            self.rotate(now_ms);
            self.next_rotation_ms = Some(now_ms.saturating_add(self.rotation_delay_ms()));
        }

        // Free slots.
        let mut wake_ms: Option<u64> = None;
        for kind in LinkKind::ALL {
            let k = &self.kinds[kind.index()];
            let free = self
                .config
                .max_sessions(kind)
                .saturating_sub(k.live.len() + k.dials.len());
            if free == 0 {
                continue;
            }
            for peer in self.pick(kind, now_ms, free) {
                self.dial(peer, kind, now_ms, false);
            }
            let k = &self.kinds[kind.index()];
            if k.live.len() + k.dials.len() < self.config.max_sessions(kind) {
                // Slots left: look again when a backoff ends.
                wake_ms = min_opt(wake_ms, k.exhausted_until_ms.filter(|t| *t != u64::MAX));
            }
        }

        // The timer: the next dial to expire, the next backoff to end when a
        // slot waits for it, the next rotation when a kind is full.
        for kind in LinkKind::ALL {
            let k = &self.kinds[kind.index()];
            let timeout_ms = self.config.dial_timeout_ms;
            let expiry = k.dials.values().map(|d| d.since_ms.saturating_add(timeout_ms)).min();
            wake_ms = min_opt(wake_ms, expiry);
            let max = self.config.max_sessions(kind);
            if max > 0 && k.live.len() >= max {
                wake_ms = min_opt(wake_ms, self.next_rotation_ms);
            }
        }
        if let Some(at_ms) = wake_ms {
            if self.armed_ms.is_none_or(|armed| at_ms < armed) {
                self.armed_ms = Some(at_ms);
                self.push(Output::SetTimer { at_ms });
            }
        }
        self.check_invariants();
    }

    /// For each full kind with an in-range peer to dial and a session old
    /// enough to drop, dials that peer; the drop happens when it comes up.
    fn rotate(&mut self, now_ms: u64) {
        for kind in LinkKind::ALL {
            let max = self.config.max_sessions(kind);
            let k = &self.kinds[kind.index()];
            if max == 0 || k.live.len() < max || k.dials.values().any(|d| d.rotation) {
                continue;
            }
            if self.victim(kind, now_ms, false).is_none() {
                continue;
            }
            if let Some(peer) = self.pick(kind, now_ms, 1).pop() {
                self.dial(peer, kind, now_ms, true);
            }
        }
    }

    fn check_invariants(&self) {
        let mut busy = 0;
        for kind in LinkKind::ALL {
            let k = &self.kinds[kind.index()];
            let max = self.config.max_sessions(kind);
            assert!(k.live.len() <= max, "{kind:?}: {} sessions, limit {max}", k.live.len());
            assert!(
                k.live.len() + k.spare.len() <= max,
                "{kind:?}: {} sessions and {} spares, limit {max}",
                k.live.len(),
                k.spare.len()
            );
            for peer in k.spare.keys() {
                assert!(self.faster_live(*peer, kind).is_some(), "a spare of a session");
            }
            assert!(
                k.dials.len() <= max + 1,
                "{kind:?}: {} dials, limit {max}",
                k.dials.len()
            );
            busy += k.live.len() + k.dials.len();
        }
        assert!(self.candidates.len() <= self.config.max_candidates);
        if cfg!(debug_assertions) {
            assert!(busy <= self.config.max_busy_peers());
            for k in &self.kinds {
                for peer in k.live.keys().chain(k.dials.keys()) {
                    assert_ne!(*peer, self.config.me);
                    assert!(self.candidates.contains_key(peer), "a busy peer is tracked");
                }
                assert!(k.dials.keys().all(|p| !k.live.contains_key(p)));
                assert!(k.dials.values().filter(|d| d.rotation).count() <= 1);
            }
            for peer in self.kinds.iter().flat_map(|k| k.live.keys().chain(k.dials.keys())) {
                let links: usize = self
                    .kinds
                    .iter()
                    .map(|k| usize::from(k.live.contains_key(peer)) + usize::from(k.dials.contains_key(peer)))
                    .sum();
                assert_eq!(usize::from(self.candidates[peer].links), links, "links of {peer}");
            }
            // The full count, where it is cheap.
            if self.candidates.len() <= 64 {
                let links: usize = self.candidates.values().map(|c| usize::from(c.links)).sum();
                assert_eq!(links, busy, "links counted");
            }
        }
    }
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

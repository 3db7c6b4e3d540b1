//! One sync session as a sans-IO state machine: bytes and events in,
//! frames to send, store work to do, and timers out. No socket, clock, task
//! or store inside; the driver (the session actor, a test, the simulator)
//! feeds it with `handle_*` and drains [`Session::poll_output`].
//!
//! The exchange: both sides send `Hello` (version range, peer id, role,
//! subscriptions), agree on the newest protocol version both speak (or
//! refuse with the reason), then either side may *poke* ("I have news");
//! the other answers with a `Request` carrying its version vector and a
//! fresh round number, and the poked side sends the changes it lacks and
//! wants (its subscriptions) in `Changes` batches numbered 0, 1, ... of
//! that round, the last one marked. The receiver applies each batch in
//! sequence and, after the last, records the claim of the round's *first*
//! batch (later batches may come from a newer state that was not sent in
//! full) when the sender holds completely what the receiver wants.
//!
//! Links may lose, duplicate, reorder and delay frames, so nothing waits
//! forever: a `Hello` is repeated until the other side answers; a batch
//! out of sequence or of another round is ignored, and a round that makes
//! no progress for `stall_ms` is abandoned and asked again; a poke nobody
//! answered is repeated; a repeated request is served once. Every one of
//! those repeats is idempotent (merging is a join).
//!
//! Deletions are forgotten after a while (tombstone reaping). A request
//! from a peer that has not seen every reaped deletion is answered with
//! `Rebase`: the asker evicts what the other side knows in full and asks
//! afresh, so documents deleted meanwhile do not come back; its own writes
//! the other side has not seen stay and sync as usual.
//!
//! A session may outlive the link it started on: a link manager moves it
//! between links to the same peer ([`Session::handle_link_changed`]), so
//! frames of one session may take several links and overtake each other.
//! Round numbers keep that harmless, and a `Hello` from a remote whose
//! session started over while this one went on resets what this side
//! knows of the remote's requests.
//!
//! Any malformed, oversized or out-of-place message ends the session with a
//! `Refuse` saying why, and changes nothing. (Messages of the open session
//! that arrive during the handshake are ignored: a lost `Hello` makes that
//! normal.)

use super::pack::{self, UnpackLimits};
use super::scope::Interest;
use super::wire::{self, Hello, Message, Refusal, Role, SubscriptionSpec, WireError};
use crate::codec::Change;
use crate::hlc::PeerId;
use crate::vv::VersionVector;
use std::collections::VecDeque;
use std::sync::Arc;

/// How the session behaves.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// This peer.
    pub me: PeerId,
    /// What kind of peer this is.
    pub role: Role,
    /// What this peer wants from the other.
    pub subscriptions: Vec<SubscriptionSpec>,
    /// The subscriptions this peer's stored version vector is complete
    /// for (`None`: the current ones). When they do not cover
    /// `subscriptions`, the first round asks afresh, and this peer does not
    /// vouch for what it holds beyond them.
    pub claimed_for: Option<Vec<SubscriptionSpec>>,
    /// Largest frame this peer accepts.
    pub max_frame_bytes: u32,
    /// Pause before asking again after a failed apply.
    pub retry_ms: u64,
    /// How long a handshake, a round or a poke may go unanswered before it
    /// is repeated.
    pub stall_ms: u64,
}

/// The round number pushes are applied under ([`Output::Apply`]).
pub const PUSH_ROUND: u64 = u64::MAX;
/// Most changes a push carries; more are asked for in a round.
pub const PUSH_MAX_CHANGES: usize = 8;
/// Most bytes (packed) of a push's changes.
pub const PUSH_MAX_BYTES: usize = 1024;

/// A `Have` waits this fraction of `stall_ms` (400 ms with the actors'
/// 2 s) for a poke or push of ours to carry it. The remote offers nothing
/// more on this session until it hears, so the wait is the longest a
/// follow-up offer of relayed news is held back; in exchange, news that
/// arrives meanwhile goes in one offer, and the `Have` usually rides on
/// one of ours. With [`OWN_WRITES_ACK_DIVISOR`], against a tenth for
/// every `Have`: 8% fewer messages in `partition-heal` (seed 7) at 1,000
/// peers, 3% at 10,000 (ARCHITECTURE.md, "Acknowledgements ride along").
/// An `Ack` timer sends whatever is owed when it fires, so while the
/// remote keeps offering, owed `Have`s go out at least this often.
const ACK_DELAY_DIVISOR: u64 = 5;
/// The same for a push that holds writes of the remote's own (200 ms
/// with the actors' 2 s): its user may be typing, and on a direct link
/// the next keystroke waits for this `Have`. (A relay's push of them
/// counts as relayed news.)
const OWN_WRITES_ACK_DIVISOR: u64 = 10;

/// Hellos sent before the handshake is given up.
const MAX_HELLOS: u32 = 20;

/// Timers the session asks for; each carries what it checks, so a stale
/// one is recognised and ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// Ask again after an abandoned round.
    Retry,
    /// Repeat the `Hello` if the handshake is not done (attempt number).
    Handshake(u32),
    /// Abandon round `round` if it made no progress since `progress`.
    Stall {
        /// The round.
        round: u64,
        /// Batches received when the timer was set.
        progress: u32,
    },
    /// Poke again if poke `nonce` is still unanswered.
    Poke(u64),
    /// Send the `Have` owed for poke `nonce` if no poke or push of ours
    /// carried it meanwhile.
    Ack(u64),
}

/// What the driver must do.
#[derive(Clone, Debug)]
pub enum Output {
    /// Put this frame on the link.
    Send(Vec<u8>),
    /// The handshake is done.
    Established {
        /// The other peer.
        remote: PeerId,
        /// Its role.
        role: Role,
        /// The protocol version in use.
        version: u16,
    },
    /// What the other peer wants from this one, compiled (at the handshake
    /// and whenever it changes its subscriptions). Serve with it.
    Interest(Arc<Interest>),
    /// Read the changes the remote lacks since `since` and wants (the last
    /// [`Output::Interest`]), at most [`PUSH_MAX_CHANGES`] documents, and
    /// hand them to [`Session::send_push`].
    ReadPush {
        /// What the remote holds at least.
        since: VersionVector,
    },
    /// Read this peer's version vector and hand it to
    /// [`Session::send_request`] with this round.
    ReadVersionVector {
        /// The round to ask in.
        round: u64,
    },
    /// Read the changes the remote lacks since `since` and wants (the last
    /// [`Output::Interest`]) and hand them to [`Session::send_changes`],
    /// batch by batch, with this round.
    Serve {
        /// The remote's round.
        round: u64,
        /// The remote's version vector.
        since: VersionVector,
    },
    /// Merge these changes, then report with [`Session::handle_applied`];
    /// if `claim` is given and nothing was refused, record it (with
    /// `WriteTx::mark_synced`) in the same transaction.
    Apply {
        /// The round.
        round: u64,
        /// The changes.
        changes: Vec<Change>,
        /// Whether this batch completes the round.
        last: bool,
        /// The claim to record once applied (last batch of a complete round).
        claim: Option<VersionVector>,
    },
    /// The remote reaped deletions this peer has not seen: evict (locally)
    /// every document of the collections `interest` wants whose every
    /// write `upto` covers (`WriteTx::evict_covered`), then call
    /// [`Session::handle_rebased`]; the next round asks afresh.
    Rebase {
        /// The round.
        round: u64,
        /// The remote's version vector.
        upto: VersionVector,
        /// What this peer wants.
        interest: Arc<Interest>,
    },
    /// A round ended with this peer up to date with the remote (as far as
    /// it wants): a connection planner may rotate the session out.
    CaughtUp,
    /// A fresh round was claimed in full: the stored version vector is now
    /// complete for these subscriptions. Persist them; give them as
    /// [`SessionConfig::claimed_for`] to later sessions.
    ClaimedFor(Vec<SubscriptionSpec>),
    /// Call [`Session::handle_timer`] after this long.
    SetTimer {
        /// Which.
        timer: Timer,
        /// In how many milliseconds.
        after_ms: u64,
    },
    /// The session is over (after sending the refusal, if any).
    Closed {
        /// Why, when it was not a clean end.
        refusal: Option<Refusal>,
    },
}

#[derive(Clone, Debug, PartialEq)]
enum State {
    /// Waiting for the other side's `Hello`.
    Handshake,
    Open {
        version: u16,
    },
    Closed,
}

/// The round this side is receiving.
#[derive(Debug)]
struct Receiving {
    round: u64,
    /// The version vector is being read; the request is not sent yet.
    asking: bool,
    /// Ask from nothing (subscriptions grew): every wanted document comes.
    fresh: bool,
    next_seq: u32,
    /// The first batch's `upto` (the claim of a complete round).
    first: Option<VersionVector>,
    /// This peer's stored vector when it asked: the sender's `upto` comes
    /// as a delta over `since`, and the claim is this joined with it.
    local: VersionVector,
    /// The same, read for a fresh round too (which does not claim it).
    held: VersionVector,
    /// The `since` asked with, whole (a delta request sends less).
    since: VersionVector,
    /// Applies handed out and not yet reported.
    applying: u32,
    /// The last batch was received.
    done: bool,
    /// Every batch so far was sent by a side holding all we want.
    complete: bool,
    /// Changes received this round.
    changes: u64,
    /// Asked only for pokes naming this news: when this peer's vector
    /// (read for the request) dominates it, the round is not asked and the
    /// pokes are answered with `Have`.
    check: Option<VersionVector>,
}

/// Bound on outputs queued between drains (a driver that never drains is
/// a bug; the bound makes it loud instead of unbounded memory).
const MAX_QUEUED_OUTPUTS: usize = 4_096;

/// A sync session with one remote peer.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    /// What this peer wants, compiled (to tell whether the remote holds it).
    ours: Arc<Interest>,
    /// What the stored version vector is complete for: what this peer can
    /// vouch to hold in full.
    claimed: Arc<Interest>,
    state: State,
    remote: Option<PeerId>,
    /// What the remote wants.
    theirs: Arc<Interest>,
    /// The limit the remote announced for frames we send.
    remote_max_frame_bytes: u32,
    next_round: u64,
    receiving: Option<Receiving>,
    /// News came while receiving: ask again when the round ends.
    poked: bool,
    /// The news of those pokes, when every one of them named it (`None`:
    /// one did not, or an ask that must go came): see `Receiving::check`.
    poked_check: Option<VersionVector>,
    /// The newest poke of the remote not answered yet (a `Have` names it).
    poke_heard: Option<u64>,
    /// A `Have` we owe the remote: it rides on our next poke or push, or
    /// goes alone when [`Timer::Ack`] fires first.
    ack_owed: Option<u64>,
    /// News of ours the remote was not answered for yet: for each origin,
    /// the newest write merged (see `Message::Poke`).
    news: VersionVector,
    /// News of ours whose writes are not named (our own writes): the next
    /// poke names none, so the remote asks.
    news_blind: bool,
    /// The news our pending poke (or push, or the read for one) offers.
    carried: VersionVector,
    /// That offer includes unnamed news.
    carried_blind: bool,
    /// The changes for a push are being read, from this base, heard at
    /// the remote's request of this round.
    reading: Option<(u64, VersionVector)>,
    /// What the remote holds at least, as the base of a push: its newest
    /// request's `since`, joined with the `upto` of every push it took
    /// since (`None`: no request heard yet).
    push_base: Option<VersionVector>,
    /// The round of that request.
    push_asked: u64,
    /// Our pending push: its nonce and `upto`.
    pushed: Option<(u64, VersionVector)>,
    /// News may be offered as a push (else it is always poked).
    pushes: bool,
    /// Pushes read before the remote heard our request of this round are
    /// not taken (a push of ours failed to apply: their base may claim it).
    push_min_round: u64,
    /// What the remote holds in full as its newest request said (reset by
    /// a fresh request): news it dominates is not poked at all.
    known: VersionVector,
    /// The next round must ask from nothing (subscriptions grew).
    fresh: bool,
    /// What the remote sent us in full, by round claim, this session (a
    /// narrower remote's rounds are never complete, yet need not repeat).
    acked: VersionVector,
    /// Our own origin's entry in our previous request (see `send_request`).
    asked_me: Option<crate::hlc::Hlc>,
    /// The `since` of our last request the remote answered: later requests
    /// send only what grew past it.
    answered_since: Option<VersionVector>,
    /// The join of every `since` we sent: a delta is sent only when `since`
    /// dominates it (then the remote's join of what it heard is exact).
    sent_high: VersionVector,
    /// The join of every `since` the remote sent us (delta requests are
    /// joined into it).
    heard: VersionVector,
    /// Our version vector as our `Hello` announced it (a request with
    /// `of_hello` asks from it).
    hello_vv: Option<VersionVector>,
    /// The digest of the remote's `Hello` vector (0: none).
    remote_vv_digest: u64,
    /// Our unanswered poke, by nonce.
    poke_pending: Option<u64>,
    next_poke: u64,
    /// The newest request we serve, and the next batch number in it.
    serving: Option<(u64, u32)>,
    /// That request's `since` (our `upto` is sent as a delta over it).
    serving_since: VersionVector,
    outputs: VecDeque<Output>,
    /// The serving side's scopes keep a wanted collection from the remote.
    withheld: bool,
    /// Batches whose plain body is larger go plain, not range-coded
    /// ([`pack::pack_bounded`]); `usize::MAX`: always try the coder.
    range_max_bytes: usize,
    /// Whether pushes are range-coded (else plain, whatever their size).
    push_coded: bool,
    /// Our subscriptions changed before the session opened: announce them
    /// when it does.
    resubscribe: bool,
}

impl Session {
    /// A session that has not started; `first_round` makes round numbers
    /// unique across restarts of the driver. Our subscriptions must compile
    /// (they were checked when made).
    pub fn new(config: SessionConfig, first_round: u64) -> Session {
        let ours = Arc::new(Interest::compile(&config.subscriptions).unwrap_or_default());
        let claimed = match &config.claimed_for {
            Some(specs) => Arc::new(Interest::compile(specs).unwrap_or_default()),
            None => ours.clone(),
        };
        let fresh = !claimed.covers(&ours);
        Session {
            config,
            ours,
            claimed,
            state: State::Handshake,
            remote: None,
            theirs: Arc::new(Interest::none()),
            remote_max_frame_bytes: wire::DEFAULT_MAX_FRAME_BYTES,
            next_round: first_round,
            receiving: None,
            poked: false,
            poked_check: None,
            poke_heard: None,
            ack_owed: None,
            news: VersionVector::new(),
            news_blind: false,
            carried: VersionVector::new(),
            carried_blind: false,
            reading: None,
            push_base: None,
            push_asked: 0,
            pushed: None,
            push_min_round: 0,
            pushes: true,
            known: VersionVector::new(),
            fresh,
            acked: VersionVector::new(),
            hello_vv: None,
            remote_vv_digest: 0,
            asked_me: None,
            answered_since: None,
            sent_high: VersionVector::new(),
            heard: VersionVector::new(),
            poke_pending: None,
            next_poke: 0,
            serving: None,
            serving_since: VersionVector::new(),
            outputs: VecDeque::new(),
            withheld: false,
            range_max_bytes: usize::MAX,
            push_coded: true,
            resubscribe: false,
        }
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The other peer, once known.
    pub fn remote(&self) -> Option<PeerId> {
        self.remote
    }

    fn push(&mut self, out: Output) {
        assert!(
            self.outputs.len() < MAX_QUEUED_OUTPUTS,
            "session outputs are not being drained"
        );
        self.outputs.push_back(out);
    }

    fn is_open(&self) -> bool {
        matches!(self.state, State::Open { .. })
    }

    fn version(&self) -> u16 {
        match self.state {
            State::Open { version } => version,
            _ => wire::PROTOCOL_VERSION,
        }
    }

    fn send(&mut self, msg: &Message) {
        let frame = wire::encode(msg, self.version());
        self.push(Output::Send(frame));
    }

    fn timer(&mut self, timer: Timer, after_ms: u64) {
        self.push(Output::SetTimer { timer, after_ms });
    }

    fn close(&mut self, refusal: Option<Refusal>) {
        if self.state == State::Closed {
            return;
        }
        if let Some(r) = &refusal {
            self.send(&Message::Refuse(r.clone()));
        }
        self.state = State::Closed;
        self.push(Output::Closed { refusal });
    }

    fn violation(&mut self, reason: impl Into<String>) {
        self.close(Some(Refusal::ProtocolViolation { reason: reason.into() }));
    }

    fn hello(&self, heard: bool) -> Hello {
        Hello {
            versions: (wire::MIN_PROTOCOL_VERSION, wire::PROTOCOL_VERSION),
            peer: self.config.me,
            subscriptions: self.config.subscriptions.clone(),
            max_frame_bytes: self.config.max_frame_bytes,
            heard,
            role: self.config.role,
            vv_digest: self.hello_vv.as_ref().map_or(0, VersionVector::digest),
        }
    }

    /// The link is up: say hello (announcing no version vector).
    pub fn handle_connected(&mut self) {
        self.send(&Message::Hello(self.hello(false)));
        self.timer(Timer::Handshake(1), self.config.stall_ms);
    }

    /// The link is up and this peer's version vector is `local`: say hello
    /// with its digest, so a remote that holds the same vector can ask
    /// without sending it.
    pub fn handle_connected_at(&mut self, local: &VersionVector) {
        if self.state == State::Handshake && self.hello_vv.is_none() {
            self.hello_vv = Some(local.clone());
        }
        self.handle_connected();
    }

    /// This peer committed something the remote may want, without saying
    /// what (a write of its own): the remote will ask.
    pub fn handle_local_commit(&mut self) {
        self.handle_local_news(None);
    }

    /// This peer committed something the remote may want: `moved` names,
    /// for each origin, the newest write the commit merged (`None`: not
    /// known, e.g. this peer's own writes). News the remote is known to
    /// hold (its requests said so) is not offered; other news is poked,
    /// naming it, so a remote that holds it already answers `Have`
    /// instead of asking a round that would bring nothing.
    pub fn handle_local_news(&mut self, moved: Option<&VersionVector>) {
        if !self.is_open() {
            return; // the remote asks when the session opens
        }
        match moved {
            Some(m) if self.known.dominates(m) => return,
            Some(m) => self.news.join(m),
            None => self.news_blind = true,
        }
        self.offer();
    }

    /// Offers the news not offered yet: one unanswered offer is enough
    /// (the remote asks when it can, and news joined meanwhile is offered
    /// when it answers `Have`). Once the remote asked in this session,
    /// the changes themselves are offered when few ([`Output::ReadPush`]).
    fn offer(&mut self) {
        if self.poke_pending.is_some() || self.reading.is_some() || (self.news.is_empty() && !self.news_blind) {
            return;
        }
        let Some(since) = self.push_base.clone().filter(|_| self.pushes) else {
            return self.poke();
        };
        self.reading = Some((self.push_asked, since.clone()));
        self.carried.join(&std::mem::take(&mut self.news));
        self.carried_blind |= std::mem::take(&mut self.news_blind);
        self.push(Output::ReadPush { since });
    }

    fn poke(&mut self) {
        let nonce = self.next_poke;
        self.next_poke += 1;
        self.poke_pending = Some(nonce);
        self.pushed = None;
        self.carried.join(&std::mem::take(&mut self.news));
        self.carried_blind |= std::mem::take(&mut self.news_blind);
        let moved = (!self.carried_blind).then(|| self.carried.clone());
        let ack = self.ack_owed.take();
        self.send(&Message::Poke { nonce, moved, ack });
        self.timer(Timer::Poke(nonce), self.config.stall_ms);
    }

    /// The changes read for a push ([`Output::ReadPush`]): `more` when the
    /// read stopped before the end (or found the remote behind reaped
    /// deletions). Sent as a `Push` when they are few, else poked.
    pub fn send_push(&mut self, changes: &[Change], upto: &VersionVector, more: bool) {
        let Some((asked, base)) = self.reading.take() else {
            return;
        };
        if !self.is_open() || self.poke_pending.is_some() {
            return;
        }
        if changes.is_empty() && !more {
            // The remote holds all of it (or wants none of it).
            self.carried = VersionVector::new();
            self.carried_blind = false;
            return self.offer();
        }
        // Counted before packing: the range coder is the costly part.
        if more || changes.len() > PUSH_MAX_CHANGES {
            return self.poke();
        }
        // Plain when told so and it fits; else coded, so a push that fits
        // coded is never turned into a poke and a round by going plain.
        let plain = (!self.push_coded)
            .then(|| pack::pack_as(changes, pack::Coding::Plain))
            .filter(|p| p.len() <= PUSH_MAX_BYTES);
        let packed = match plain {
            Some(p) => p,
            None => pack::pack_bounded(changes, self.range_max_bytes),
        };
        if packed.len() > PUSH_MAX_BYTES {
            return self.poke();
        }
        let upto: VersionVector = upto.iter().filter(|&(p, h)| h > base.get(p)).collect();
        let nonce = self.next_poke;
        self.next_poke += 1;
        self.poke_pending = Some(nonce);
        self.pushed = Some((nonce, upto.clone()));
        let msg = Message::Push {
            nonce,
            ack: self.ack_owed.take(),
            asked,
            changes: packed,
            upto,
            complete: self.claimed.covers(&self.theirs) && !self.withheld,
        };
        self.send(&msg);
        self.timer(Timer::Poke(nonce), self.config.stall_ms);
    }

    /// The remote holds the news of our poke `nonce` (or took our push):
    /// offer what came since, if anything.
    fn have(&mut self, nonce: u64) {
        if self.poke_pending != Some(nonce) {
            return; // an older poke's answer, or a repeat
        }
        self.poke_pending = None;
        let carried = std::mem::take(&mut self.carried);
        self.carried_blind = false;
        // The remote held it when it answered (and vectors only grow).
        self.known.join(&carried);
        if let (Some((n, upto)), Some(base)) = (self.pushed.take(), self.push_base.as_mut()) {
            if n == nonce {
                base.join(&upto);
            }
        }
        self.offer();
    }

    /// Owes the remote a `Have` for `nonce`: it waits a little for a poke
    /// or push of ours to carry it (the remote offers nothing more until
    /// it hears, so the wait is short; shorter when the offer held the
    /// remote's own writes: `own`). Any `Ack` timer that fires while a
    /// `Have` is owed sends the newest one.
    fn owe_have(&mut self, nonce: u64, own: bool) {
        let first = self.ack_owed.is_none();
        let owed = self.ack_owed.map_or(nonce, |n| n.max(nonce));
        self.ack_owed = Some(owed);
        if first || own {
            let divisor = if own { OWN_WRITES_ACK_DIVISOR } else { ACK_DELAY_DIVISOR };
            let after_ms = (self.config.stall_ms / divisor).max(1);
            self.timer(Timer::Ack(owed), after_ms);
        }
    }

    /// A push from the remote: taken (applied, answered `Have`) when its
    /// base is sure to be held here, else a poke naming no news.
    fn take_push(&mut self, nonce: u64, asked: u64, packed: &[u8], upto: VersionVector, complete: bool) {
        let fresh = self.fresh || self.receiving.as_ref().is_some_and(|r| r.fresh);
        if fresh || asked < self.push_min_round || !self.claimed.covers(&self.ours) {
            return self.poked(nonce, None);
        }
        let changes = match unpack_changes(packed, self.config.max_frame_bytes) {
            Ok(c) => c,
            Err(e) => return self.violation(format!("undecodable changes: {e}")),
        };
        let own = self
            .remote
            .is_some_and(|r| changes.iter().any(|c| c.ops.iter().any(|op| op.stamp().peer == r)));
        self.owe_have(nonce, own);
        // Each entry of `upto` is the pusher's own (complete) version
        // vector entry: news it names need not be poked back.
        self.known.join(&upto);
        // The base is held, and the push brings every wanted write between
        // it and `upto`: complete up to `upto` (see `Message::Push`).
        let claim = complete.then_some(upto);
        self.push(Output::Apply {
            round: PUSH_ROUND,
            changes,
            last: true,
            claim,
        });
    }

    /// The remote has news (`moved`, if it named it): ask, unless this
    /// peer turns out to hold it (see `Receiving::check`).
    fn poked(&mut self, nonce: u64, moved: Option<VersionVector>) {
        self.poke_heard = Some(self.poke_heard.map_or(nonce, |n| n.max(nonce)));
        match self.receiving.as_mut() {
            // The request is not out yet: it answers this poke too.
            Some(r) if r.asking => match (&mut r.check, moved) {
                (Some(check), Some(m)) => check.join(&m),
                (check, _) => *check = None,
            },
            Some(_) => {
                match (self.poked, &mut self.poked_check, moved) {
                    (false, check, Some(m)) => *check = Some(m),
                    (true, Some(check), Some(m)) => check.join(&m),
                    (_, check, _) => *check = None,
                }
                self.poked = true;
            }
            None => self.ask_checked(moved),
        }
    }

    /// This peer's subscriptions changed: tell the remote, and if they now
    /// want more than the stored version vector is complete for, ask for
    /// everything they want (the claims cover documents that were skipped
    /// while not wanted, so the next round starts from nothing).
    pub fn handle_subscriptions(&mut self, subscriptions: Vec<SubscriptionSpec>) {
        let Ok(ours) = Interest::compile(&subscriptions) else {
            return; // checked when made; a bad one is never announced
        };
        let grew = !self.claimed.covers(&ours);
        self.ours = Arc::new(ours);
        if !grew {
            // Later claims are complete only for what is wanted now.
            self.claimed = self.ours.clone();
            self.push(Output::ClaimedFor(subscriptions.clone()));
        }
        self.config.subscriptions = subscriptions.clone();
        // Whether or not the session is open yet, the claims do not cover
        // what is wanted now: the first round from here asks afresh.
        self.fresh |= grew;
        if grew {
            // A round in flight was asked (and is served) for the old
            // subscriptions: its claim would cover newly wanted writes the
            // remote skipped, and a fresh one would be taken as complete for
            // the new ones. Keep what it brings; record no claim of it.
            if let Some(r) = self.receiving.as_mut() {
                r.complete = false;
            }
        }
        if !self.is_open() {
            // Our `Hello` may have gone out with the old subscriptions, and
            // the remote would serve every round for those (and vouch for
            // them, so the claims would cover what it never sent): tell it
            // once the session is open.
            self.resubscribe = true;
            return;
        }
        self.send(&Message::Subscribe { subscriptions });
        if grew {
            self.ask();
        }
    }

    /// A frame from the remote.
    pub fn handle_frame(&mut self, frame: &[u8]) {
        if self.state == State::Closed {
            return;
        }
        match wire::decode(frame, self.config.max_frame_bytes as usize) {
            Ok((_, msg)) => self.handle_message(msg),
            Err(WireError::OldVersion { version }) => self.close(Some(Refusal::UnsupportedVersion {
                ours: (wire::MIN_PROTOCOL_VERSION, wire::PROTOCOL_VERSION),
                theirs: (version, version),
            })),
            Err(e) => self.violation(describe(&e)),
        }
    }

    fn handle_message(&mut self, msg: Message) {
        match (self.state.clone(), msg) {
            (_, Message::Refuse(r)) => {
                self.state = State::Closed;
                self.push(Output::Closed { refusal: Some(r) });
            }
            (State::Handshake, Message::Hello(theirs)) => self.handle_hello(theirs),
            // The other side did not hear our Hello (it got lost), or its
            // session is new: answer it.
            (State::Open { .. }, Message::Hello(theirs)) if !theirs.heard => {
                if Some(theirs.peer) == self.remote {
                    self.hello_again(theirs);
                }
            }
            (State::Open { .. }, Message::Hello(_)) => {}
            (State::Open { .. }, Message::Poke { nonce, moved, ack }) => {
                if let Some(ack) = ack {
                    self.have(ack);
                }
                self.poked(nonce, moved)
            }
            (State::Open { .. }, Message::Have { nonce }) => self.have(nonce),
            (
                State::Open { .. },
                Message::Push {
                    nonce,
                    ack,
                    asked,
                    changes,
                    upto,
                    complete,
                },
            ) => {
                if let Some(ack) = ack {
                    self.have(ack);
                }
                self.take_push(nonce, asked, &changes, upto, complete)
            }
            (
                State::Open { .. },
                Message::Request {
                    round,
                    since,
                    delta,
                    subscriptions,
                    of_hello,
                },
            ) => self.handle_request(round, since, (delta, of_hello), subscriptions),
            (
                State::Open { .. },
                Message::Changes {
                    round,
                    seq,
                    changes,
                    upto,
                    last,
                    complete,
                },
            ) => self.receive(round, seq, &changes, upto, last, complete),
            (State::Open { .. }, Message::Rebase { round, upto, complete }) => self.rebase(round, upto, complete),
            (State::Open { .. }, Message::Subscribe { subscriptions }) => {
                self.take_interest(&subscriptions);
            }
            // Before our Hello is answered, the other side may be open.
            (State::Handshake, _) => {}
            (state, msg) => self.violation(format!("{} during {}", kind(&msg), phase(&state))),
        }
    }

    /// A `Hello` that has not heard ours while this side is open: the
    /// remote is still in its handshake (our answer got lost), or its
    /// session is new while ours went on (a link manager ends a session
    /// when its last link drops, and the two sides need not see that
    /// together). A new session of the remote has heard none of our
    /// requests, serves none of our rounds, and numbers its own rounds
    /// afresh, so everything about its requests is forgotten and our round
    /// in flight is asked again. A remote still in its handshake has sent
    /// no request and served none, so this costs it nothing.
    fn hello_again(&mut self, theirs: Hello) {
        self.answered_since = None;
        // The remote may have started over with another vector.
        self.remote_vv_digest = theirs.vv_digest;
        self.send(&Message::Hello(self.hello(true)));
        self.serving = None;
        self.serving_since = VersionVector::new();
        self.heard = VersionVector::new();
        self.known = VersionVector::new();
        self.poke_pending = None;
        self.poke_heard = None;
        self.ack_owed = None;
        self.push_base = None;
        self.pushed = None;
        self.remote_max_frame_bytes = theirs.max_frame_bytes.clamp(1024, wire::MAX_FRAME_BYTES);
        if self.take_interest(&theirs.subscriptions) {
            self.ask_again();
        }
    }

    fn handle_hello(&mut self, theirs: Hello) {
        match wire::negotiate(&self.hello(true), &theirs) {
            Ok(version) => {
                self.state = State::Open { version };
                self.remote = Some(theirs.peer);
                self.remote_vv_digest = theirs.vv_digest;
                self.remote_max_frame_bytes = theirs.max_frame_bytes.clamp(1024, wire::MAX_FRAME_BYTES);
                self.push(Output::Established {
                    remote: theirs.peer,
                    role: theirs.role,
                    version,
                });
                if !self.take_interest(&theirs.subscriptions) {
                    return;
                }
                if std::mem::take(&mut self.resubscribe) {
                    let subscriptions = self.config.subscriptions.clone();
                    self.send(&Message::Subscribe { subscriptions });
                }
                // First contact: ask for what we lack.
                self.ask();
            }
            Err(refusal) => self.close(Some(refusal)),
        }
    }

    /// Compiles what the remote wants; a subscription that does not
    /// compile ends the session. Returns whether it compiled.
    fn take_interest(&mut self, subscriptions: &[SubscriptionSpec]) -> bool {
        match Interest::compile(subscriptions) {
            Ok(theirs) => {
                self.theirs = Arc::new(theirs);
                self.push(Output::Interest(self.theirs.clone()));
                true
            }
            Err(e) => {
                self.violation(e.to_string());
                false
            }
        }
    }

    fn handle_request(
        &mut self,
        round: u64,
        since: VersionVector,
        (delta, of_hello): (bool, u64),
        subscriptions: Option<Vec<SubscriptionSpec>>,
    ) {
        // Rounds only grow: an older or repeated request was served already
        // (and says nothing about a poke sent since).
        if self.serving.is_some_and(|(r, _)| round <= r) {
            return;
        }
        let since = match (delta, of_hello) {
            (false, 0) => since,
            (true, 0) => {
                let mut whole = self.heard.clone();
                whole.join(&since);
                whole
            }
            (false, digest) if since.is_empty() => match &self.hello_vv {
                Some(hello) if hello.digest() == digest => hello.clone(),
                // Not the vector our `Hello` announced (a late copy of an
                // older `Hello` reached the asker): from nothing is safe.
                _ => VersionVector::new(),
            },
            _ => return self.violation("a request naming a Hello vector also carries one"),
        };
        self.heard.join(&since);
        // A fresh asker's vector is complete only for its old
        // subscriptions: it is not known to hold anything until it asks
        // from its vector again.
        match subscriptions.is_some() {
            true => self.known = VersionVector::new(),
            false => self.known.join(&since),
        }
        // This request is served from our state now: it carries every news
        // we poked, or would. Pushes start from what it holds.
        self.poke_pending = None;
        self.news = VersionVector::new();
        self.news_blind = false;
        self.carried = VersionVector::new();
        self.carried_blind = false;
        self.pushed = None;
        self.push_base = Some(since.clone());
        self.push_asked = round;
        // A fresh request carries the asker's subscriptions: a `Subscribe`
        // may have been lost, and the round must be served with them.
        if let Some(subs) = subscriptions {
            if !self.take_interest(&subs) {
                return;
            }
        }
        self.serving = Some((round, 0));
        self.serving_since = since.clone();
        self.push(Output::Serve { round, since });
    }

    /// Asks the remote for what this peer lacks, unless a round is running.
    fn ask(&mut self) {
        self.ask_checked(None);
    }

    /// Asks the remote for what this peer lacks, unless a round is running;
    /// with `check`, only if this peer does not hold that news already.
    fn ask_checked(&mut self, check: Option<VersionVector>) {
        if !self.is_open() {
            return;
        }
        if let Some(r) = self.receiving.as_mut() {
            if r.asking {
                r.check = None;
            } else {
                self.poked = true;
                self.poked_check = None;
            }
            return;
        }
        let round = self.next_round;
        self.next_round += 1;
        let fresh = std::mem::take(&mut self.fresh);
        self.receiving = Some(Receiving {
            round,
            asking: true,
            fresh,
            next_seq: 0,
            first: None,
            local: VersionVector::new(),
            held: VersionVector::new(),
            since: VersionVector::new(),
            applying: 0,
            done: false,
            complete: true,
            changes: 0,
            check: check.filter(|_| !fresh),
        });
        // A fresh round asks from nothing, yet reads the vector too: see
        // `held`.
        self.push(Output::ReadVersionVector { round });
    }

    /// Sends the request of `round` with this peer's version vector.
    pub fn send_request(&mut self, round: u64, local: &VersionVector) {
        let Some(r) = self.receiving.as_mut().filter(|r| r.round == round && r.asking) else {
            return;
        };
        let me = self.config.me;
        // Our own writes may make a document match a filtered subscription
        // of ours on the remote: asked again below, so never skipped.
        let own_news = self.ours.has_filters() && self.asked_me != Some(local.get(me));
        if r.check.as_ref().is_some_and(|c| local.dominates(c)) && !own_news {
            // Every poke this round answers named news we hold: a round
            // would bring none of it.
            self.receiving = None;
            if let Some(nonce) = self.poke_heard.take() {
                // A poke that names its news names no write of the remote's
                // own (those go unnamed, and are always asked for).
                self.owe_have(nonce, false);
            }
            self.push(Output::CaughtUp);
            if std::mem::take(&mut self.poked) {
                let check = self.poked_check.take();
                self.ask_checked(check);
            }
            return;
        }
        let Some(r) = self.receiving.as_mut() else { return };
        r.asking = false;
        // The request answers every poke and push of the remote.
        self.poke_heard = None;
        self.ack_owed = None;
        r.held = local.clone();
        if !r.fresh {
            r.local = local.clone();
        }
        let mut since = if r.fresh { VersionVector::new() } else { local.clone() };
        if !r.fresh {
            since.join(&self.acked);
            // A write of ours can make a document match a filtered
            // subscription of ours on the remote, which then must send it
            // whole (we may lack writes made while it did not match); the
            // remote visits a document only for news past `since`, so for
            // our own origin ask from where our previous request stood: it
            // looks again at our writes made since (an echo of those).
            if let (true, Some(before)) = (self.ours.has_filters(), self.asked_me) {
                since.set(me, before.min(local.get(me)));
            }
            self.asked_me = Some(local.get(me));
        }
        let subscriptions = r.fresh.then(|| self.config.subscriptions.clone());
        r.since = since.clone();
        // Send only what grew past the last answered request, when the
        // remote's join of what it heard then equals `since` (see
        // `Message::Request`); a fresh request goes whole.
        let grown = match &self.answered_since {
            Some(base) if subscriptions.is_none() && since.dominates(&self.sent_high) => Some(since.grown_past(base)),
            _ => None,
        };
        // The remote's `Hello` announced this very vector: name it. (A
        // fresh request asks from nothing, which no `Hello` announces.)
        let of_hello = match grown.is_none() && !r.fresh && self.remote_vv_digest != 0 {
            true if since.digest() == self.remote_vv_digest => self.remote_vv_digest,
            _ => 0,
        };
        self.sent_high.join(&since);
        let (delta, since) = match grown {
            Some(grown) => (true, grown),
            None if of_hello != 0 => (false, VersionVector::new()),
            None => (false, since),
        };
        self.send(&Message::Request {
            round,
            delta,
            since,
            subscriptions,
            of_hello,
        });
        self.timer(Timer::Stall { round, progress: 0 }, self.config.stall_ms);
    }

    fn receive(&mut self, round: u64, seq: u32, packed: &[u8], upto: VersionVector, last: bool, complete: bool) {
        let Some(r) = self.receiving.as_mut() else {
            return; // a batch of an abandoned round, or a repeat
        };
        if r.round != round || r.next_seq != seq || r.done {
            return;
        }
        let changes = match unpack_changes(packed, self.config.max_frame_bytes) {
            Ok(c) => c,
            Err(e) => return self.violation(format!("undecodable changes: {e}")),
        };
        if r.next_seq == 0 {
            // The remote heard this request.
            self.answered_since = Some(r.since.clone());
        }
        r.next_seq += 1;
        r.applying += 1;
        r.done = last;
        r.complete &= complete;
        r.changes += changes.len() as u64;
        // Each entry of `upto` is the sender's own (complete) version vector
        // entry: the sender holds that news, so it is not poked back.
        self.known.join(&upto);
        // `upto` is the delta over our `since` (first batch only); joined
        // with what we held when asking it claims no more than the sender
        // holds, and never an entry we only remembered from this session.
        let first = r
            .first
            .get_or_insert_with(|| {
                let mut claim = r.local.clone();
                claim.join(&upto);
                claim
            })
            .clone();
        let claim = (last && r.complete).then_some(first);
        self.push(Output::Apply {
            round,
            changes,
            last,
            claim,
        });
    }

    fn rebase(&mut self, round: u64, upto: VersionVector, complete: bool) {
        let Some(r) = self.receiving.as_mut() else { return };
        if r.round != round || r.next_seq != 0 || r.done {
            return;
        }
        r.done = true;
        self.answered_since = Some(r.since.clone());
        if complete {
            r.applying += 1;
            let interest = self.ours.clone();
            self.push(Output::Rebase { round, upto, interest });
        } else {
            // Nothing can be dropped on the word of a narrower peer: ask it
            // for everything it has and keep the rest.
            self.receiving = None;
            self.fresh = true;
            self.ask();
        }
    }

    /// The driver evicted what [`Output::Rebase`] asked (`ok` false: it
    /// could not); the session asks afresh.
    pub fn handle_rebased(&mut self, round: u64, ok: bool) {
        if self.receiving.as_ref().is_none_or(|r| r.round != round) {
            return;
        }
        self.receiving = None;
        self.fresh = ok;
        match ok {
            true => self.ask(),
            false => {
                let retry_ms = self.config.retry_ms;
                self.timer(Timer::Retry, retry_ms);
            }
        }
    }

    /// The driver applied a batch of `round` (`ok` false: it failed, or a
    /// change was refused).
    pub fn handle_applied(&mut self, round: u64, ok: bool) {
        if round == PUSH_ROUND {
            if !ok {
                // Later pushes may build on it: take none read before the
                // remote hears our next request, and ask now.
                self.push_min_round = self.next_round;
                self.ask();
            }
            return;
        }
        let Some(r) = self.receiving.as_mut().filter(|r| r.round == round) else {
            return;
        };
        r.applying = r.applying.saturating_sub(1);
        if !ok {
            // Nothing more of this round is applied or claimed.
            self.fresh |= r.fresh;
            self.receiving = None;
            let retry_ms = self.config.retry_ms;
            self.timer(Timer::Retry, retry_ms);
            return;
        }
        if r.done && r.applying == 0 {
            let (first, changes) = (r.first.take(), r.changes);
            // The stored vector joins this claim with every claim before,
            // some made for narrower subscriptions (an origin's writes then
            // skipped): it is complete for the new ones only where this
            // claim reaches as far. Our own writes are all here.
            let me = self.config.me;
            let reaches = |f: &VersionVector| r.held.iter().all(|(p, h)| p == me || h <= f.get(p));
            let claimed_fresh = r.fresh && r.complete && first.as_ref().is_some_and(reaches);
            self.receiving = None;
            if let Some(first) = first {
                self.acked.join(&first);
            }
            if claimed_fresh {
                // Everything wanted is held now, as far as the claim goes.
                self.claimed = self.ours.clone();
                self.push(Output::ClaimedFor(self.config.subscriptions.clone()));
            }
            if std::mem::take(&mut self.poked) {
                let check = self.poked_check.take();
                self.ask_checked(check);
            } else if changes == 0 {
                self.push(Output::CaughtUp);
            }
        }
    }

    /// A timer fired.
    pub fn handle_timer(&mut self, timer: Timer) {
        if self.state == State::Closed {
            return;
        }
        match timer {
            Timer::Retry if self.is_open() => self.ask(),
            Timer::Handshake(n) if self.state == State::Handshake => {
                if n >= MAX_HELLOS {
                    return self.close(Some(Refusal::HandshakeTimedOut));
                }
                self.send(&Message::Hello(self.hello(false)));
                self.timer(Timer::Handshake(n + 1), self.config.stall_ms);
            }
            Timer::Stall { round, progress } => self.check_stall(round, progress),
            Timer::Poke(nonce) if self.is_open() && self.poke_pending == Some(nonce) => self.poke(),
            Timer::Ack(nonce) if self.is_open() && self.ack_owed.is_some_and(|owed| owed >= nonce) => {
                let nonce = self.ack_owed.take().unwrap_or(nonce);
                self.send(&Message::Have { nonce });
            }
            Timer::Retry | Timer::Handshake(_) | Timer::Poke(_) | Timer::Ack(_) => {}
        }
    }

    /// The links under the session changed (see `Peer::attach_link`): a
    /// link it ran over went down, and what was in flight on it is lost;
    /// or frames now take another link, and may overtake those still on
    /// the old one. Repeats at once what the stall timers would repeat
    /// later: the `Hello` of an unfinished handshake, the request of a
    /// round still waiting for batches (asked again in a new round, so
    /// late batches of the old one are ignored by their round number), and
    /// an unanswered poke. Rounds this side serves need nothing: the
    /// remote asks again when its own links change, or when they stall.
    pub fn handle_link_changed(&mut self) {
        match self.state {
            State::Closed => {}
            State::Handshake => self.send(&Message::Hello(self.hello(false))),
            State::Open { .. } => {
                self.ask_again();
                if self.poke_pending.is_some() {
                    self.poke();
                }
            }
        }
    }

    /// Abandons the round being received if it still waits for the remote
    /// (its request was sent and its last batch has not come), and asks
    /// again in a new round.
    fn ask_again(&mut self) {
        let Some(r) = self.receiving.as_ref() else {
            return;
        };
        if r.asking || r.done {
            return;
        }
        let fresh = r.fresh;
        self.receiving = None;
        self.fresh |= fresh;
        self.ask();
    }

    fn check_stall(&mut self, round: u64, progress: u32) {
        let Some(r) = self.receiving.as_ref().filter(|r| r.round == round) else {
            return;
        };
        let now = r.next_seq;
        if now != progress || r.applying > 0 || r.asking {
            // Moving (or waiting on this side): look again later.
            self.timer(Timer::Stall { round, progress: now }, self.config.stall_ms);
            return;
        }
        // Lost, reordered or never answered: abandon and ask afresh.
        let fresh = r.fresh;
        self.receiving = None;
        self.fresh |= fresh;
        self.ask();
    }

    /// Sends one batch answering the remote's request of `round`; returns
    /// `Ok(false)` when that request was superseded by a newer one (stop
    /// serving it). The driver keeps batches under the remote's frame limit
    /// ([`Session::remote_max_frame_bytes`]); a batch that would exceed it
    /// is refused here rather than sent.
    pub fn send_changes(
        &mut self,
        round: u64,
        changes: &[Change],
        upto: VersionVector,
        last: bool,
    ) -> Result<bool, WireError> {
        if !self.is_open() {
            return Ok(false);
        }
        let seq = match self.serving {
            Some((r, seq)) if r == round => seq,
            _ => return Ok(false),
        };
        // Only the first batch's `upto` is used, and only where it is ahead
        // of the asker's `since` (the asker knows the rest).
        let upto: VersionVector = match seq {
            0 => upto.iter().filter(|&(p, h)| h > self.serving_since.get(p)).collect(),
            _ => VersionVector::new(),
        };
        let frame = wire::encode(
            &Message::Changes {
                round,
                seq,
                changes: pack::pack_bounded(changes, self.range_max_bytes),
                upto,
                last,
                complete: self.claimed.covers(&self.theirs) && !self.withheld,
            },
            self.version(),
        );
        let limit = self.remote_max_frame_bytes as usize;
        if frame.len() > limit {
            return Err(WireError::TooLarge {
                size_bytes: frame.len(),
                limit_bytes: limit,
            });
        }
        self.serving = Some((round, seq + 1));
        self.push(Output::Send(frame));
        Ok(true)
    }

    /// Answers the remote's request of `round` with a rebase (the store
    /// found it behind deletions reaped here: `ChangeBatch::behind_reaped`).
    pub fn send_rebase(&mut self, round: u64, upto: VersionVector) {
        if !self.is_open() || self.serving.is_none_or(|(r, seq)| r != round || seq != 0) {
            return;
        }
        self.serving = Some((round, 1));
        let complete = self.claimed.covers(&self.theirs) && !self.withheld;
        self.send(&Message::Rebase { round, upto, complete });
    }

    /// Batches of changes whose plain body is larger than `bytes` are sent
    /// plain rather than range-coded: on a fast link the coder's CPU on both
    /// ends costs more than the bytes it saves (bulk initial sync). The
    /// default, `usize::MAX`, always tries the coder (slow links: BLE).
    pub fn set_range_code_max_bytes(&mut self, bytes: usize) {
        self.range_max_bytes = bytes;
    }

    /// Whether pushes are range-coded (the default) or sent plain when
    /// their plain form fits [`PUSH_MAX_BYTES`] (else coded, as before, so
    /// that going plain never turns a push into a poke and a round). A
    /// push is a few live edits: on Wi-Fi or LAN coding saves at most a
    /// few hundred bytes of a frame of one or two packets, and costs the
    /// coder's CPU on both ends; on BLE's 244-byte packets it saves
    /// packets. Rounds' batches (reconciliation) are not affected: see
    /// [`Session::set_range_code_max_bytes`].
    pub fn set_push_range_coded(&mut self, coded: bool) {
        self.push_coded = coded;
    }

    /// Whether news is offered as pushes when few (the default) or always
    /// poked (tests of rounds use this).
    pub fn set_pushes(&mut self, pushes: bool) {
        self.pushes = pushes;
    }

    /// Whether sync scopes keep a collection the remote wants from it.
    pub fn set_withheld(&mut self, withheld: bool) {
        self.withheld = withheld;
    }

    /// Largest frame the remote accepts.
    pub fn remote_max_frame_bytes(&self) -> u32 {
        self.remote_max_frame_bytes
    }

    /// Ends the session cleanly (the link is going down).
    pub fn handle_close(&mut self) {
        self.close(None);
    }
}

/// Unpacks the changes of a push or a batch, bounded at 16 frames of this
/// side's limit.
fn unpack_changes(packed: &[u8], max_frame_bytes: u32) -> Result<Vec<Change>, pack::PackError> {
    let limits = UnpackLimits {
        max_body_bytes: 16 * max_frame_bytes as usize,
        ..UnpackLimits::default()
    };
    pack::unpack(packed, limits)
}

fn describe(e: &WireError) -> String {
    format!("undecodable frame: {e}")
}

fn kind(msg: &Message) -> &'static str {
    match msg {
        Message::Hello(_) => "Hello",
        Message::Refuse(_) => "Refuse",
        Message::Request { .. } => "Request",
        Message::Changes { .. } => "Changes",
        Message::Poke { .. } => "Poke",
        Message::Have { .. } => "Have",
        Message::Push { .. } => "Push",
        Message::Rebase { .. } => "Rebase",
        Message::Subscribe { .. } => "Subscribe",
    }
}

fn phase(state: &State) -> &'static str {
    match state {
        State::Handshake => "the handshake",
        State::Open { .. } => "the session",
        State::Closed => "a closed session",
    }
}

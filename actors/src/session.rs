//! The sync session actor: one per remote peer this peer is syncing with.
//!
//! It owns the session's state: the engine's sans-IO
//! [`Session`](rhizome_engine::sync::session::Session) (handshake, rounds,
//! claims), the link it runs over, and the frames the link has not taken
//! yet. It takes [`SessionMsg`]s: local commits, frames from the link,
//! timers, batches read for the remote, and close. It does what the machine
//! asks: sends frames, reads changes for the remote (on a task of its own),
//! hands received batches to the merger, sets timers.
//!
//! Merges are pipelined: up to [`MERGES_IN_FLIGHT`] batches are queued at
//! the merger at once (so it can join them into one transaction), each
//! reported back as [`SessionMsg::Applied`]. The merger applies one
//! session's batches in the order they were queued (causal order per
//! origin). A round's claim rides on its last batch; it is recorded only if
//! every earlier batch of the round applied, so that batch is held back
//! (the [`RoundTally`]) until they have, and goes without its claim if one
//! failed, or if a newer batch must go first.
//!
//! Frames are bytes, the same whatever the link: an in-process link passes
//! them to the remote session actor; transports put them on QUIC or cut
//! them into BLE chunks. Merged changes commit like local ones, so every
//! other session offers them on: sync is multihop.
//!
//! No handler waits on the remote (two sessions waiting on each other's
//! full mailboxes would deadlock): frames go out with `try_tell`, and what
//! does not fit waits in a bounded outbox flushed after every message and
//! on a short timer. The serving task is paced by the outbox: it waits
//! while more than [`OUTBOX_FRAMES`] frames are unsent, so a slow link never
//! buffers a whole sync. A session that fails is not restarted: its state
//! belongs to the link, so the link goes down and is reconnected afresh.

use crate::actor::{Actor, Addr, AskError, Ctx, Reply, TellError, WeakAddr};
use crate::conns::{note_caught_up, CaughtUpSender};
use crate::error::PeerError;
use crate::link::Pipe;
use crate::links::{Links, Offered};
use crate::merger::{MergerActor, MergerMsg};
use crate::presence::{Link, PresenceActor, PresenceMsg};
use crate::store::{RemoteBatch, StoreActor, StoreMsg};
use rhizome_engine::hlc::PeerId;
use rhizome_engine::store::ChangeBatch;
use rhizome_engine::sync::scope::Interest;
use rhizome_engine::sync::session::{Output, Session, SessionConfig, Timer, PUSH_MAX_CHANGES};
use rhizome_engine::sync::wire::{self, Role, SubscriptionSpec};
use rhizome_engine::vv::VersionVector;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, OnceLock};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

/// Documents per batch a session reads for the remote.
pub const BATCH_DOCS: usize = 500;
/// On links other than BLE, batches whose plain body is larger than this
/// are sent plain rather than range-coded: the coder's CPU on both ends
/// costs more than the bytes it saves (bulk initial sync); live edits,
/// smaller, stay coded.
pub const RANGE_CODE_MAX_BYTES: usize = 32 << 10;

/// Tells `session` how to code batches over a link of `kind`. On BLE,
/// where bytes are scarce, every batch and push is range-coded; elsewhere
/// batches up to [`RANGE_CODE_MAX_BYTES`] are, and pushes go plain when
/// they fit.
fn code_for_link(session: &mut Session, kind: crate::presence::LinkKind) {
    let ble = kind == crate::presence::LinkKind::Ble;
    session.set_range_code_max_bytes(if ble { usize::MAX } else { RANGE_CODE_MAX_BYTES });
    session.set_push_range_coded(ble);
}
/// Unsent frames past which the serving task waits.
pub const OUTBOX_FRAMES: usize = 16;
/// Batches a session keeps queued at the merger at once.
pub const MERGES_IN_FLIGHT: usize = 16;
/// Delay before retrying frames the remote's mailbox did not take.
const RETRY_MS: u64 = 5;
/// How long a handshake, round or poke goes unanswered before it is
/// repeated (links may lose frames).
const STALL_MS: u64 = 2_000;

/// Messages of a session actor. Large payloads are boxed: every mailbox
/// keeps blocks of 32 messages' room, and a mesh holds tens of thousands
/// of sessions.
pub(crate) enum SessionMsg {
    /// The link is wired: start the handshake.
    Start,
    /// This peer committed something (local or merged): for merges, the
    /// newest write of each origin merged (`None`: not known, e.g. this
    /// peer's own writes; see `Session::handle_local_news`).
    LocalCommit(Option<VersionVector>),
    /// A frame from the remote.
    Frame(Vec<u8>),
    /// This peer's subscriptions changed (all of them); answered once the
    /// session took them (no claim of a round asked for the old ones is
    /// recorded after that).
    Subscriptions(Vec<SubscriptionSpec>, Reply<()>),
    /// This peer's version vector, read for the request of `round`.
    VersionVector {
        round: u64,
        vv: Box<Result<VersionVector, PeerError>>,
    },
    /// A delay the session asked for ran out ([`Ctx::tell_at`]).
    Delayed(Delayed),
    /// One batch read for the remote's round; answered once the outbox has
    /// room for more (this paces the serving task).
    Served {
        round: u64,
        batch: Box<ChangeBatch>,
        reply: Reply<bool>,
    },
    /// The changes read for a push (`Err`: the read failed; poke instead).
    PushRead(Box<Result<ChangeBatch, PeerError>>),
    /// Close the session (the link went down).
    Close,
    /// A link joined or left the session's link set
    /// ([`crate::links::Links`]).
    LinksChanged,
    /// A batch of `round` handed to the merger was applied (`ok` false: it
    /// failed, or a change of it was refused).
    Applied { round: u64, ok: bool },
}

// Kept small on purpose (see the type's doc): a payload that grows past
// this goes in a box.
const _: () = assert!(std::mem::size_of::<SessionMsg>() <= 40);

/// The merges of each round still in flight, and the round's last batch
/// held back with its claim until they have applied.
#[derive(Default)]
struct RoundTally {
    /// Per round: merges in flight, and whether one of the round failed.
    rounds: BTreeMap<u64, (u32, bool)>,
    /// The last batch of a round, with its claim, waiting for the round's
    /// earlier merges.
    held: Option<(u64, RemoteBatch)>,
}

impl RoundTally {
    fn in_flight(&self, round: u64) -> u32 {
        self.rounds.get(&round).map_or(0, |r| r.0)
    }

    fn sent(&mut self, round: u64) {
        self.rounds.entry(round).or_default().0 += 1;
    }

    /// Counts a merge of `round` done; the held batch if it may go now
    /// (without its claim if a batch of its round failed).
    fn applied(&mut self, round: u64, ok: bool) -> Option<(u64, RemoteBatch)> {
        if let Some(r) = self.rounds.get_mut(&round) {
            r.0 = r.0.saturating_sub(1);
            r.1 |= !ok;
        }
        let held_round = self.held.as_ref().map(|(r, _)| *r);
        let release = held_round == Some(round) && self.in_flight(round) == 0;
        let out = if release {
            self.held.take().map(|(r, mut batch)| {
                if self.rounds.get(&r).is_some_and(|t| t.1) {
                    batch.claim = None;
                }
                (r, batch)
            })
        } else {
            None
        };
        // Forget settled rounds (the released batch counts again when sent).
        if self.in_flight(round) == 0 && held_round != Some(round) {
            self.rounds.remove(&round);
        }
        out
    }

    /// The held batch, to go now without its claim (a newer batch must not
    /// overtake it, or the round can no longer be vouched for).
    fn release_unclaimed(&mut self) -> Option<(u64, RemoteBatch)> {
        self.held.take().map(|(r, mut batch)| {
            batch.claim = None;
            (r, batch)
        })
    }
}

/// The other end of the link: the remote session actor, held weakly (the
/// remote peer owns it), and, on a modelled link, the pipe frames travel
/// through (else they go to the remote session directly). On a transport's
/// link (`Peer::attach_link`) there is no remote actor: frames go to the
/// best of the transports' links to the remote (a link manager), and the
/// session ends with the last of them.
#[derive(Default)]
pub(crate) struct RemoteEnd {
    pub(crate) session: OnceLock<WeakAddr<SessionActor>>,
    pub(crate) pipe: OnceLock<Pipe>,
    pub(crate) links: OnceLock<Arc<Links>>,
}

/// A session's link to its remote.
pub(crate) type Remote = Arc<RemoteEnd>;

/// A session's state.
pub(crate) struct SessionActor {
    me: PeerId,
    remote_peer: PeerId,
    link: Link,
    remote: Remote,
    store: Addr<StoreActor>,
    merger: Addr<MergerActor>,
    presence: Addr<PresenceActor>,
    session: Session,
    /// What the remote wants (served with every batch read for it).
    interest: Arc<Interest>,
    /// What kind of peer the remote is (collections' sync scopes).
    remote_role: Role,
    /// Shared with the peer: what the store's claims are complete for.
    claimed_for: ClaimedFor,
    /// Where caught-up rounds are published (a connection planner's
    /// "synced"); never waits.
    caught_up: CaughtUpSender,
    /// Frames the remote's mailbox has not taken yet.
    outbox: VecDeque<Vec<u8>>,
    /// Serving tasks waiting for the outbox to drain.
    paced: Vec<Reply<bool>>,
    flush_scheduled: bool,
    /// Permits for merges in flight ([`MERGES_IN_FLIGHT`]); each merge's
    /// waiting task holds one until the merger answers.
    merges: Arc<Semaphore>,
    tally: RoundTally,
}

/// What a session delays ([`SessionActor::after`]).
pub(crate) enum Delayed {
    /// A timer the session machine asked for.
    Timer(Timer),
    /// Time to retry the outbox.
    Flush,
}

impl SessionActor {
    pub(crate) fn new(
        ids: (PeerId, PeerId),
        link: Link,
        remote: Remote,
        actors: (Addr<StoreActor>, Addr<MergerActor>, Addr<PresenceActor>),
        subscriptions: Vec<SubscriptionSpec>,
        claimed_for: ClaimedFor,
        caught_up: CaughtUpSender,
    ) -> SessionActor {
        let config = SessionConfig {
            me: ids.0,
            role: Role::SmallPeer,
            claimed_for: claimed_for.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            subscriptions,
            max_frame_bytes: wire::DEFAULT_MAX_FRAME_BYTES,
            retry_ms: 50,
            stall_ms: STALL_MS,
        };
        let mut session = Session::new(config, 0);
        code_for_link(&mut session, link.kind);
        SessionActor {
            me: ids.0,
            remote_peer: ids.1,
            link,
            remote,
            store: actors.0,
            merger: actors.1,
            presence: actors.2,
            session,
            interest: Arc::new(Interest::none()),
            remote_role: Role::SmallPeer,
            claimed_for,
            caught_up,
            outbox: VecDeque::new(),
            paced: Vec::new(),
            flush_scheduled: false,
            merges: Arc::new(Semaphore::new(MERGES_IN_FLIGHT)),
            tally: RoundTally::default(),
        }
    }

    fn remote(&self) -> Option<Addr<SessionActor>> {
        self.remote.session.get()?.upgrade()
    }

    /// Hands one frame to the link; gives it back if the link cannot take
    /// it now, `Err(None)` if the link is gone.
    fn send_frame(&self, remote: Option<&Addr<SessionActor>>, frame: Vec<u8>) -> Result<(), Option<Vec<u8>>> {
        if let Some(links) = self.remote.links.get() {
            return match links.try_send(frame) {
                Offered::Taken => Ok(()),
                Offered::Full(f) => Err(Some(f)),
                Offered::Gone => Err(None),
            };
        }
        match (self.remote.pipe.get(), remote) {
            (Some(pipe), _) => pipe.try_send(frame).map_err(|e| match e {
                mpsc::error::TrySendError::Full(f) => Some(f),
                mpsc::error::TrySendError::Closed(_) => None,
            }),
            (None, Some(remote)) => remote.try_tell(SessionMsg::Frame(frame)).map_err(|e| match e {
                TellError::Full(SessionMsg::Frame(f)) => Some(f),
                _ => None,
            }),
            (None, None) => Err(None),
        }
    }

    /// Asks the store for this peer's version vector; the answer comes
    /// back as `SessionMsg::VersionVector` (no handler waits on the store's
    /// work, only for room in its mailbox).
    async fn read_vv(&self, round: u64, ctx: &Ctx<Self>) {
        let wrap = move |vv: Result<Result<VersionVector, PeerError>, AskError>| SessionMsg::VersionVector {
            round,
            vv: Box::new(vv.unwrap_or_else(|e| Err(e.into()))),
        };
        self.store
            .ask_forward(StoreMsg::VersionVector, ctx.weak_addr(), wrap)
            .await;
    }

    /// Does what the session machine asks, until it asks nothing more.
    async fn drive(&mut self, ctx: &mut Ctx<Self>) -> Result<(), PeerError> {
        // Bounded: each output is handled once; applying a batch can queue
        // at most a request and a timer.
        for _ in 0..10_000 {
            let Some(out) = self.session.poll_output() else {
                return Ok(());
            };
            match out {
                Output::Send(frame) => self.outbox.push_back(frame),
                // The link (a transport's certificate, or the in-process
                // wiring) says who the remote is; its Hello must agree.
                Output::Established { remote, .. } if remote != self.remote_peer => {
                    tracing::warn!(me = %self.me, expected = %self.remote_peer, claimed = %remote,
                        "sync session refused: the remote's Hello names another peer than its link");
                    self.session.handle_close();
                    ctx.stop();
                }
                Output::Established { remote, version, role } => {
                    tracing::debug!(me = %self.me, %remote, version, "sync session established");
                    self.remote_role = role;
                }
                Output::Interest(interest) => self.interest = interest,
                Output::ReadVersionVector { round } => self.read_vv(round, ctx).await,
                Output::Serve { round, since } => self.serve(round, since, ctx),
                Output::ReadPush { since } => self.read_push(since, ctx).await,
                Output::Apply {
                    round, changes, claim, ..
                } => self.apply(round, changes, claim, ctx).await,
                Output::Rebase { round, upto, interest } => {
                    self.settle_merges(ctx).await;
                    self.rebase(round, upto, interest).await
                }
                Output::CaughtUp => note_caught_up(&self.caught_up, self.remote_peer),
                Output::ClaimedFor(specs) => self.claimed(specs).await,
                Output::SetTimer { timer, after_ms } => self.after(ctx, after_ms, Delayed::Timer(timer)),
                Output::Closed { refusal } => {
                    // No link joins a session that is going away.
                    if let Some(links) = self.remote.links.get() {
                        links.end();
                    }
                    if let Some(r) = refusal {
                        tracing::warn!(me = %self.me, remote = %self.remote_peer, %r, "sync session refused");
                    }
                    ctx.stop();
                }
            }
        }
        Ok(())
    }

    /// Hands a received batch to the merger (see the module doc: a
    /// round's last batch waits for the round's earlier ones).
    async fn apply(
        &mut self,
        round: u64,
        changes: Vec<rhizome_engine::codec::Change>,
        claim: Option<VersionVector>,
        ctx: &Ctx<Self>,
    ) {
        if let Some((r, held)) = self.tally.release_unclaimed() {
            self.merge(r, held, ctx).await;
        }
        let batch = RemoteBatch { changes, claim };
        if batch.claim.is_some() && self.tally.in_flight(round) > 0 {
            self.tally.held = Some((round, batch));
            return;
        }
        self.merge(round, batch, ctx).await;
    }

    /// Queues one batch at the merger (waiting while [`MERGES_IN_FLIGHT`]
    /// are); the outcome comes back as [`SessionMsg::Applied`], and with it
    /// the permit. A merger that has stopped (the peer is closing) answers
    /// `NoReply`: not applied.
    async fn merge(&mut self, round: u64, batch: RemoteBatch, ctx: &Ctx<Self>) {
        let from = self.remote_peer;
        let Ok(permit) = self.merges.clone().acquire_owned().await else {
            return; // never closed
        };
        self.tally.sent(round);
        let who = self.me;
        let wrap = move |merged: Result<Result<rhizome_engine::store::BatchOutcome, PeerError>, AskError>| {
            drop(permit);
            let ok = matches!(&merged, Ok(Ok(outcome)) if outcome.refused.is_empty());
            if let Ok(Err(e)) | Err(e) = merged.map_err(PeerError::from) {
                tracing::warn!(me = %who, remote = %from, error = %e, "sync: a batch was not merged");
            }
            SessionMsg::Applied { round, ok }
        };
        let merge = |reply| MergerMsg::Merge { from, batch, reply };
        self.merger.ask_forward(merge, ctx.weak_addr(), wrap).await;
    }

    /// A merge of `round` is done: the machine hears of it, and the round's
    /// held last batch goes if it may. (Waiting on the merger here cannot
    /// cycle: it never waits on sessions.)
    async fn applied(&mut self, round: u64, ok: bool, ctx: &Ctx<Self>) {
        self.session.handle_applied(round, ok);
        if let Some((r, batch)) = self.tally.applied(round, ok) {
            self.merge(r, batch, ctx).await;
        }
    }

    /// Waits until every merge handed out has been applied (the held batch
    /// goes first, without its claim): before an eviction, and before new
    /// subscriptions are taken (no claim of a round asked for the old ones
    /// may be recorded after that).
    async fn settle_merges(&mut self, ctx: &Ctx<Self>) {
        if let Some((r, held)) = self.tally.release_unclaimed() {
            self.merge(r, held, ctx).await;
        }
        let all = MERGES_IN_FLIGHT as u32;
        if let Ok(permits) = self.merges.acquire_many(all).await {
            drop(permits);
        }
    }

    /// Records (shared and persisted) what the store's claims are now
    /// complete for.
    async fn claimed(&mut self, specs: Vec<SubscriptionSpec>) {
        *self.claimed_for.lock().unwrap_or_else(|p| p.into_inner()) = Some(specs.clone());
        let (name, value) = (
            crate::peer::CLAIMED_FOR_RECORD.to_string(),
            Some(specs_to_value(&specs)),
        );
        let put = self.store.ask(|reply| StoreMsg::PutLocal { name, value, reply }).await;
        if let Err(e) = put.map_err(PeerError::from).and_then(|r| r) {
            tracing::warn!(me = %self.me, error = %e, "sync: could not record what the claims are complete for");
        }
    }

    /// Evicts what the remote knows in full (it reaped deletions we never
    /// saw); the session then asks afresh.
    async fn rebase(&mut self, round: u64, upto: VersionVector, interest: Arc<Interest>) {
        let evicted = self
            .store
            .ask(|reply| StoreMsg::EvictCovered { upto, interest, reply })
            .await;
        let ok = match evicted.map_err(PeerError::from).and_then(|r| r) {
            Ok(n) => {
                tracing::info!(me = %self.me, remote = %self.remote_peer, evicted = n, "sync: rebased past reaped deletions");
                true
            }
            Err(e) => {
                tracing::warn!(me = %self.me, error = %e, "sync: rebase failed");
                false
            }
        };
        self.session.handle_rebased(round, ok);
    }

    /// Reads what the remote lacks on a task of its own, batch by batch;
    /// each batch comes back as `Served` to be framed in order.
    fn serve(&mut self, round: u64, since: VersionVector, ctx: &Ctx<Self>) {
        let Some(me) = ctx.addr().map(|a| a.downgrade()) else {
            return;
        };
        let store = self.store.clone();
        let wants = (self.interest.clone(), self.remote_role);
        tokio::spawn(async move {
            if let Err(e) = serve(&store, &me, round, since, wants).await {
                tracing::warn!(error = %e, "sync: serving a request failed");
            }
        });
    }

    /// Asks the store for the few changes a push would carry; they come
    /// back as `PushRead`.
    async fn read_push(&mut self, since: VersionVector, ctx: &Ctx<Self>) {
        let (interest, role) = (self.interest.clone(), self.remote_role);
        let read = |reply| StoreMsg::Changes {
            since,
            resume: None,
            max_docs: PUSH_MAX_CHANGES,
            interest,
            role,
            reply,
        };
        let wrap = |batch: Result<Result<ChangeBatch, PeerError>, AskError>| {
            SessionMsg::PushRead(Box::new(batch.unwrap_or_else(|e| Err(e.into()))))
        };
        self.store.ask_forward(read, ctx.weak_addr(), wrap).await;
    }

    /// Hands frames to the remote as far as its mailbox takes them, then
    /// releases serving tasks if the outbox has room; arranges a retry if
    /// frames are left.
    fn flush(&mut self, ctx: &mut Ctx<Self>) {
        let remote = self.remote();
        if remote.is_none() && self.remote.links.get().is_none() {
            if self.remote.session.get().is_some() {
                // The remote end is gone: the link is down.
                ctx.stop();
            }
            self.outbox.clear();
            return;
        }
        while let Some(frame) = self.outbox.pop_front() {
            match self.send_frame(remote.as_ref(), frame) {
                Ok(()) => {}
                Err(Some(frame)) => {
                    self.outbox.push_front(frame);
                    break;
                }
                Err(None) => {
                    // The link is gone.
                    self.outbox.clear();
                    ctx.stop();
                    break;
                }
            }
        }
        if self.outbox.len() <= OUTBOX_FRAMES {
            for r in self.paced.drain(..) {
                r.send(true);
            }
        }
        if !self.outbox.is_empty() && !std::mem::replace(&mut self.flush_scheduled, true) {
            self.after(ctx, RETRY_MS, Delayed::Flush);
        }
    }

    /// Delivers `what` to this actor after `after_ms`.
    fn after(&mut self, ctx: &mut Ctx<Self>, after_ms: u64, what: Delayed) {
        let deadline = Instant::now() + std::time::Duration::from_millis(after_ms);
        if ctx.tell_at(deadline, SessionMsg::Delayed(what)).is_err() {
            tracing::warn!(me = %self.me, timers = ctx.alarms(), "sync: timer queue full; a timer is dropped")
        }
    }

    fn delayed(&mut self, what: Delayed) {
        match what {
            Delayed::Timer(timer) => self.session.handle_timer(timer),
            Delayed::Flush => self.flush_scheduled = false,
        }
    }

    /// Moves to the next link when the links changed (see
    /// [`crate::links`]); closes when the last one left.
    fn links_changed(&mut self) {
        let Some(links) = self.remote.links.get() else { return };
        if links.is_ended() {
            self.session.handle_close();
        } else if links.take_changed() {
            // The session may have moved between a BLE link and a fast one.
            if let Some(active) = links.active() {
                code_for_link(&mut self.session, active.kind);
            }
            self.session.handle_link_changed();
        }
    }

    async fn handle_msg(&mut self, msg: SessionMsg, ctx: &mut Ctx<Self>) -> Result<(), PeerError> {
        match msg {
            SessionMsg::Start => {
                // The Hello announces the vector's digest; without the
                // vector (the store failed) it announces none.
                match self.store.ask(StoreMsg::VersionVector).await {
                    Ok(Ok(local)) => self.session.handle_connected_at(&local),
                    _ => self.session.handle_connected(),
                }
            }
            SessionMsg::LocalCommit(moved) => self.session.handle_local_news(moved.as_ref()),
            SessionMsg::Frame(frame) => self.session.handle_frame(&frame),
            SessionMsg::Subscriptions(specs, reply) => {
                self.settle_merges(ctx).await;
                self.session.handle_subscriptions(specs);
                reply.send(());
            }
            SessionMsg::VersionVector { round, vv } => self.session.send_request(round, &(*vv)?),
            SessionMsg::Delayed(what) => self.delayed(what),
            SessionMsg::Served { round, batch, reply } if batch.behind_reaped => {
                let batch = *batch;
                self.session.set_withheld(batch.withheld);
                self.session.send_rebase(round, batch.upto);
                reply.send(false);
            }
            SessionMsg::Served { round, batch, reply } => {
                self.session.set_withheld(batch.withheld);
                let last = batch.resume.is_none();
                match self.session.send_changes(round, &batch.changes, batch.upto, last) {
                    Ok(true) => self.paced.push(reply),
                    // A newer request superseded this one: stop reading.
                    Ok(false) => reply.send(false),
                    Err(e) => {
                        tracing::warn!(error = %e, "sync: a batch does not fit the remote's frame limit");
                        reply.send(false);
                    }
                }
            }
            SessionMsg::PushRead(read) => match *read {
                Ok(batch) => {
                    self.session.set_withheld(batch.withheld);
                    let more = batch.resume.is_some() || batch.behind_reaped;
                    self.session.send_push(&batch.changes, &batch.upto, more);
                }
                Err(e) => {
                    tracing::warn!(me = %self.me, error = %e, "sync: reading a push failed; poking instead");
                    self.session.send_push(&[], &VersionVector::new(), true);
                }
            },
            SessionMsg::Close => {
                self.session.handle_close();
                ctx.stop();
            }
            SessionMsg::LinksChanged => self.links_changed(),
            SessionMsg::Applied { round, ok } => self.applied(round, ok, ctx).await,
        }
        self.drive(ctx).await
    }
}

/// What the store's version vector is complete for, shared by a peer and
/// its sessions (`None`: its current subscriptions).
pub(crate) type ClaimedFor = Arc<std::sync::Mutex<Option<Vec<SubscriptionSpec>>>>;

/// Subscriptions as a JSON array of `{query, params}` (params as text).
pub(crate) fn specs_to_value(specs: &[SubscriptionSpec]) -> rhizome_engine::value::Value {
    use rhizome_engine::value::Value;
    Value::Array(
        specs
            .iter()
            .map(|s| {
                let mut o = std::collections::BTreeMap::new();
                o.insert("query".to_string(), Value::String(s.query.clone()));
                o.insert("params".to_string(), Value::String(s.params.clone()));
                Value::Object(o)
            })
            .collect(),
    )
}

/// The inverse of [`specs_to_value`]; entries that are not specs are skipped.
pub(crate) fn specs_from_value(v: &rhizome_engine::value::Value) -> Vec<SubscriptionSpec> {
    let rhizome_engine::value::Value::Array(items) = v else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|i| {
            let o = i.as_object()?;
            Some(SubscriptionSpec {
                query: o.get("query")?.as_str()?.to_string(),
                params: o.get("params")?.as_str()?.to_string(),
            })
        })
        .collect()
}

/// Reads every change the remote lacks since `since`, batch by batch, each
/// paced by the session's outbox.
async fn serve(
    store: &Addr<StoreActor>,
    session: &WeakAddr<SessionActor>,
    round: u64,
    since: VersionVector,
    (interest, role): (Arc<Interest>, Role),
) -> Result<(), PeerError> {
    let mut resume = None;
    // Bounded: each batch advances the cursor through a finite log; the cap
    // is a backstop against a cursor that fails to advance.
    for _ in 0..1_000_000 {
        let since = since.clone();
        let batch = store
            .ask(|reply| StoreMsg::Changes {
                since,
                resume,
                max_docs: BATCH_DOCS,
                interest: interest.clone(),
                role,
                reply,
            })
            .await??;
        resume = batch.resume.clone();
        let Some(s) = session.upgrade() else { return Ok(()) };
        let go_on = s
            .ask(|reply| SessionMsg::Served {
                round,
                batch: Box::new(batch),
                reply,
            })
            .await?;
        if !go_on || resume.is_none() {
            return Ok(());
        }
    }
    Ok(())
}

impl Actor for SessionActor {
    type Msg = SessionMsg;

    async fn started(&mut self, _ctx: &mut Ctx<Self>) {
        if self.remote.links.get().is_some() {
            return; // each link shows itself (`crate::links::watch`)
        }
        let link = self.link.clone();
        let _ = self
            .presence
            .tell(PresenceMsg::LinkUp {
                peer: self.remote_peer,
                link,
            })
            .await;
    }

    async fn handle(&mut self, msg: SessionMsg, ctx: &mut Ctx<Self>) {
        if let Err(e) = self.handle_msg(msg, ctx).await {
            tracing::warn!(me = %self.me, remote = %self.remote_peer, error = %e, "sync session error");
        }
        self.flush(ctx);
    }

    async fn stopped(&mut self) {
        // The link is down for the other side too (if it is still there and
        // its mailbox takes it; otherwise it finds out when it next sends).
        if let Some(remote) = self.remote() {
            let _ = remote.try_tell(SessionMsg::Close);
        }
        if let Some(links) = self.remote.links.get() {
            links.end();
            return;
        }
        // Presence never waits on sessions, so waiting on it cannot cycle.
        let _ = self
            .presence
            .tell(PresenceMsg::LinkDown {
                peer: self.remote_peer,
                link_id: self.link.id,
            })
            .await;
    }
}

/// What to do when a session fails: the same as a clean stop, without the
/// actor (the remote and presence are told).
pub(crate) fn on_give_up(
    remote: Remote,
    presence: WeakAddr<PresenceActor>,
    remote_peer: PeerId,
    link_id: u64,
) -> impl FnOnce(crate::actor::Escalation) + Send + 'static {
    move |_| {
        if let Some(links) = remote.links.get() {
            links.end();
        }
        if let Some(r) = remote.session.get().and_then(WeakAddr::upgrade) {
            let _ = r.try_tell(SessionMsg::Close);
        }
        if let Some(p) = presence.upgrade() {
            let _ = p.try_tell(PresenceMsg::LinkDown {
                peer: remote_peer,
                link_id,
            });
        }
    }
}

//! The sync session actor: one per remote peer this peer is syncing with.
//!
//! It owns the session's state (who the remote is, the link it runs over,
//! the sync round in progress) and takes [`SessionMsg`]s: local commits (so
//! it offers news), and the remote's messages: a *poke* ("I have news"), a
//! *request* ("send what I lack since this version vector"), and *batches*
//! of changes answering our own request, which it hands to the merger.
//!
//! This is the version-vector exchange the engine offers today
//! (`changes_since` / `apply_batch` / `mark_synced`); the subscription-scoped,
//! sans-IO protocol of the sync issue replaces the message set, not the
//! actor's place. Changes this peer merged from one neighbour commit like
//! local ones, so every other session offers them on: sync is multihop.
//!
//! Two sessions message each other through bounded mailboxes, so a handler
//! never waits on the remote (two handlers waiting on each other's full
//! mailbox would deadlock): control messages go out with `try_tell`, and
//! what does not fit waits in a coalesced outbox (one poke, the latest
//! request, one close) flushed after every message and on a short timer.
//! Batches are sent by a serving task, which may wait: the remote's handler
//! never waits on us, so it always drains them. Each request carries a round
//! number; batches of an abandoned round (after a failed merge or a restart)
//! are ignored, so a claim never covers changes that were not applied.

use crate::actor::{Actor, Addr, Ctx, WeakAddr};
use crate::error::PeerError;
use crate::merger::{MergerActor, MergerMsg};
use crate::presence::{Link, PresenceActor, PresenceMsg};
use crate::store::{StoreActor, StoreMsg};
use rhizome_engine::hlc::PeerId;
use rhizome_engine::store::ChangeBatch;
use rhizome_engine::vv::VersionVector;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Documents per batch a session sends.
pub const BATCH_DOCS: usize = 500;

/// Delay before retrying what did not fit in the remote's mailbox, or a
/// round abandoned after a failed merge.
const RETRY_MS: u64 = 5;

/// Messages of a session actor.
pub(crate) enum SessionMsg {
    /// This peer committed something (local or merged): poke the remote.
    LocalCommit,
    /// The remote has news: ask for it.
    Poke,
    /// The remote asks, in round `round`, for what it lacks since `since`.
    Request { round: u64, since: VersionVector },
    /// A batch answering our request of round `round`.
    Batch { round: u64, batch: ChangeBatch },
    /// Our serving task finished.
    Served,
    /// Time to retry the outbox (and an abandoned round).
    Flush,
    /// Close the session (the link went down).
    Close,
}

/// The other end of the session. For an in-process link it is the remote
/// session actor itself, held weakly (the remote peer owns it); a transport
/// link puts a codec and a socket here.
pub(crate) type Remote = Arc<OnceLock<WeakAddr<SessionActor>>>;

/// What the remote has not been sent yet, coalesced.
#[derive(Default)]
struct Outbox {
    poke: bool,
    request: Option<(u64, VersionVector)>,
    close: bool,
}

/// A session's state.
pub(crate) struct SessionActor {
    me: PeerId,
    remote_peer: PeerId,
    link: Link,
    remote: Remote,
    store: Addr<StoreActor>,
    merger: Addr<MergerActor>,
    presence: Addr<PresenceActor>,
    /// Round numbers are unique across restarts of this session.
    next_round: u64,
    /// The round being received, with its first `upto`: the claim recorded
    /// when its last batch is applied (later batches may be read from a
    /// newer state, which must not be claimed in full).
    round: Option<(u64, Option<VersionVector>)>,
    serving: bool,
    /// A request that came while serving.
    queued: Option<(u64, VersionVector)>,
    /// News arrived while a round was running: ask again when it ends.
    poked: bool,
    outbox: Outbox,
    flush_scheduled: bool,
}

impl SessionActor {
    pub(crate) fn new(
        ids: (PeerId, PeerId),
        link: Link,
        remote: Remote,
        actors: (Addr<StoreActor>, Addr<MergerActor>, Addr<PresenceActor>),
        restart: u32,
    ) -> SessionActor {
        SessionActor {
            me: ids.0,
            remote_peer: ids.1,
            link,
            remote,
            store: actors.0,
            merger: actors.1,
            presence: actors.2,
            next_round: u64::from(restart) << 32,
            round: None,
            serving: false,
            queued: None,
            poked: false,
            outbox: Outbox::default(),
            flush_scheduled: false,
        }
    }

    fn remote(&self) -> Option<Addr<SessionActor>> {
        self.remote.get()?.upgrade()
    }

    /// Sends what the outbox holds, as far as the remote's mailbox takes
    /// it; returns whether anything is left.
    fn flush(&mut self, ctx: &mut Ctx<Self>) -> bool {
        let Some(remote) = self.remote() else {
            // Not wired yet, or the remote is gone (its link is down).
            if self.remote.get().is_some() {
                ctx.stop();
            }
            return false;
        };
        let sent = |msg| remote.try_tell(msg).is_ok();
        if self.outbox.close && sent(SessionMsg::Close) {
            self.outbox.close = false;
        }
        if self.outbox.poke && sent(SessionMsg::Poke) {
            self.outbox.poke = false;
        }
        if let Some((round, since)) = self.outbox.request.take() {
            if let Err(e) = remote.try_tell(SessionMsg::Request { round, since }) {
                if let SessionMsg::Request { round, since } = e.into_inner() {
                    self.outbox.request = Some((round, since));
                }
            }
        }
        self.outbox.close || self.outbox.poke || self.outbox.request.is_some()
    }

    /// Flushes, and arranges a retry if something is left (or a round was
    /// abandoned and must be asked again).
    fn flush_or_retry(&mut self, ctx: &mut Ctx<Self>, retry_round: bool) {
        let left = self.flush(ctx);
        if !(left || retry_round) || std::mem::replace(&mut self.flush_scheduled, true) {
            return;
        }
        let Some(me) = ctx.addr().map(|a| a.downgrade()) else {
            return;
        };
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(RETRY_MS)).await;
            if let Some(me) = me.upgrade() {
                let _ = me.try_tell(SessionMsg::Flush);
            }
        });
    }

    async fn ask_for_news(&mut self) -> Result<(), PeerError> {
        if self.round.is_some() {
            self.poked = true;
            return Ok(());
        }
        if self.remote.get().is_none() {
            return Ok(());
        }
        let since = self.store.ask(StoreMsg::VersionVector).await??;
        let round = self.next_round;
        self.next_round += 1;
        self.round = Some((round, None));
        self.outbox.request = Some((round, since));
        Ok(())
    }

    fn serve(&mut self, round: u64, since: VersionVector, ctx: &Ctx<Self>) {
        if self.serving {
            self.queued = Some((round, since));
            return;
        }
        let (Some(me), Some(remote)) = (ctx.addr(), self.remote()) else {
            return;
        };
        self.serving = true;
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(&store, &remote, round, since).await {
                tracing::warn!(error = %e, "sync: serving a request failed");
            }
            let _ = me.tell(SessionMsg::Served).await;
        });
    }

    /// Applies a batch of the current round; a batch of any other round is
    /// stale and ignored.
    async fn receive(&mut self, round: u64, mut batch: ChangeBatch) -> Result<(), PeerError> {
        let Some((current, first)) = self.round.as_mut().filter(|(r, _)| *r == round) else {
            return Ok(());
        };
        debug_assert_eq!(*current, round);
        let first = first.get_or_insert_with(|| batch.upto.clone());
        let last = batch.resume.is_none();
        if last {
            batch.upto = first.clone();
        }
        let from = self.remote_peer;
        let merged = self.merger.ask(|reply| MergerMsg::Merge { from, batch, reply }).await;
        if let Err(e) = merged.map_err(PeerError::from).and_then(|r| r) {
            // Abandon the round: nothing more of it is applied or claimed,
            // and a fresh one is asked for after a pause.
            self.round = None;
            self.poked = true;
            return Err(e);
        }
        if last {
            self.round = None;
            if std::mem::take(&mut self.poked) {
                self.ask_for_news().await?;
            }
        }
        Ok(())
    }
}

/// Sends the remote every change it lacks since `since`, batch by batch.
async fn serve(
    store: &Addr<StoreActor>,
    remote: &Addr<SessionActor>,
    round: u64,
    since: VersionVector,
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
                reply,
            })
            .await??;
        resume = batch.resume.clone();
        if remote.tell(SessionMsg::Batch { round, batch }).await.is_err() || resume.is_none() {
            return Ok(());
        }
    }
    Ok(())
}

impl Actor for SessionActor {
    type Msg = SessionMsg;

    async fn started(&mut self, ctx: &mut Ctx<Self>) {
        let link = self.link.clone();
        let _ = self
            .presence
            .tell(PresenceMsg::LinkUp {
                peer: self.remote_peer,
                link,
            })
            .await;
        // Until the session is wired to its remote (at connect), the first
        // request waits for the connect's poke; after a restart it goes now.
        match self.ask_for_news().await {
            Ok(()) => self.flush_or_retry(ctx, false),
            Err(e) => tracing::warn!(error = %e, "sync: first request failed"),
        }
    }

    async fn handle(&mut self, msg: SessionMsg, ctx: &mut Ctx<Self>) {
        let mut retry_round = false;
        let outcome = match msg {
            SessionMsg::LocalCommit => {
                self.outbox.poke = true;
                Ok(())
            }
            SessionMsg::Poke => self.ask_for_news().await,
            SessionMsg::Request { round, since } => {
                self.serve(round, since, ctx);
                Ok(())
            }
            SessionMsg::Batch { round, batch } => {
                let r = self.receive(round, batch).await;
                retry_round = r.is_err();
                r
            }
            SessionMsg::Served => {
                self.serving = false;
                if let Some((round, since)) = self.queued.take() {
                    self.serve(round, since, ctx);
                }
                Ok(())
            }
            SessionMsg::Flush => {
                self.flush_scheduled = false;
                if self.round.is_none() && std::mem::take(&mut self.poked) {
                    self.ask_for_news().await
                } else {
                    Ok(())
                }
            }
            SessionMsg::Close => {
                ctx.stop();
                Ok(())
            }
        };
        if let Err(e) = outcome {
            tracing::warn!(me = %self.me, remote = %self.remote_peer, error = %e, "sync session error");
        }
        self.flush_or_retry(ctx, retry_round);
    }

    async fn stopped(&mut self) {
        // The link is down for the other side too (if it is still there and
        // its mailbox takes it; otherwise it finds out when it next sends).
        if let Some(remote) = self.remote() {
            let _ = remote.try_tell(SessionMsg::Close);
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

/// What to do when a session gives up after a restart storm: the same as a
/// clean stop, without the actor (the remote and presence are told).
pub(crate) fn on_give_up(
    remote: Remote,
    presence: WeakAddr<PresenceActor>,
    remote_peer: PeerId,
    link_id: u64,
) -> impl FnOnce(crate::actor::Escalation) + Send + 'static {
    move |_| {
        if let Some(r) = remote.get().and_then(WeakAddr::upgrade) {
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

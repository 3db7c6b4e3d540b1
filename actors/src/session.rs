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
//! Serving a request (reading batches and sending them) runs on a task of
//! its own, so two sessions answering each other with full mailboxes cannot
//! deadlock; at most one such task runs per session, and a request that
//! arrives meanwhile is served after it with the latest version vector.

use crate::actor::{Actor, Addr, Ctx};
use crate::error::PeerError;
use crate::merger::{MergerActor, MergerMsg};
use crate::presence::{Link, PresenceActor, PresenceMsg};
use crate::store::{StoreActor, StoreMsg};
use rhizome_engine::hlc::PeerId;
use rhizome_engine::store::ChangeBatch;
use rhizome_engine::vv::VersionVector;
use std::sync::{Arc, OnceLock};

/// Documents per batch a session sends.
pub const BATCH_DOCS: usize = 500;

/// Messages of a session actor.
pub(crate) enum SessionMsg {
    /// This peer committed something (local or merged): poke the remote.
    LocalCommit,
    /// The remote has news: ask for it.
    Poke,
    /// The remote asks for what it lacks since `since`.
    Request { since: VersionVector },
    /// A batch answering our request.
    Batch(ChangeBatch),
    /// Our serving task finished.
    Served,
    /// Close the session (the link went down).
    Close,
}

/// The other end of the session. For an in-process link it is the remote
/// session actor itself; a transport link puts a codec and a socket here.
pub(crate) type Remote = Arc<OnceLock<Addr<SessionActor>>>;

/// A session's state.
pub(crate) struct SessionActor {
    pub(crate) me: PeerId,
    pub(crate) remote_peer: PeerId,
    pub(crate) link: Link,
    pub(crate) remote: Remote,
    pub(crate) store: Addr<StoreActor>,
    pub(crate) merger: Addr<MergerActor>,
    pub(crate) presence: Addr<PresenceActor>,
    /// The first `upto` of the round being received: the claim recorded when
    /// the round's last batch is applied (later batches may be read from a
    /// newer state, which must not be claimed in full).
    round_upto: Option<VersionVector>,
    serving: bool,
    /// A request that came while serving.
    queued: Option<VersionVector>,
    /// We asked and have not got the last batch yet.
    asking: bool,
    /// News arrived while asking: ask again when the round ends.
    poked: bool,
}

impl SessionActor {
    pub(crate) fn new(
        me: PeerId,
        remote_peer: PeerId,
        link: Link,
        remote: Remote,
        actors: (Addr<StoreActor>, Addr<MergerActor>, Addr<PresenceActor>),
    ) -> SessionActor {
        SessionActor {
            me,
            remote_peer,
            link,
            remote,
            store: actors.0,
            merger: actors.1,
            presence: actors.2,
            round_upto: None,
            serving: false,
            queued: None,
            asking: false,
            poked: false,
        }
    }

    async fn send(&self, msg: SessionMsg) {
        if let Some(remote) = self.remote.get() {
            // A remote that stopped is a link that went down; its close
            // reaches us separately.
            let _ = remote.tell(msg).await;
        }
    }

    async fn ask_for_news(&mut self) -> Result<(), PeerError> {
        if self.asking {
            self.poked = true;
            return Ok(());
        }
        if self.remote.get().is_none() {
            return Ok(());
        }
        let since = self.store.ask(StoreMsg::VersionVector).await??;
        self.asking = true;
        self.send(SessionMsg::Request { since }).await;
        Ok(())
    }

    fn serve(&mut self, since: VersionVector, ctx: &Ctx<Self>) {
        if self.serving {
            self.queued = Some(since);
            return;
        }
        let (Some(me), Some(remote)) = (ctx.addr(), self.remote.get().cloned()) else {
            return;
        };
        self.serving = true;
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(&store, &remote, since).await {
                tracing::warn!(error = %e, "sync: serving a request failed");
            }
            let _ = me.tell(SessionMsg::Served).await;
        });
    }

    async fn receive(&mut self, mut batch: ChangeBatch) -> Result<(), PeerError> {
        let first = self.round_upto.get_or_insert_with(|| batch.upto.clone());
        let last = batch.resume.is_none();
        if last {
            batch.upto = first.clone();
            self.round_upto = None;
        }
        let from = self.remote_peer;
        let merged = self.merger.ask(|reply| MergerMsg::Merge { from, batch, reply }).await;
        if let Err(e) = merged.map_err(PeerError::from).and_then(|r| r) {
            // Start the next round from scratch: nothing of this one is
            // claimed, and the next request asks again.
            self.round_upto = None;
            self.asking = false;
            return Err(e);
        }
        if last {
            self.asking = false;
            if std::mem::take(&mut self.poked) {
                self.ask_for_news().await?;
            }
        }
        Ok(())
    }
}

/// Sends the remote every change it lacks since `since`, batch by batch.
async fn serve(store: &Addr<StoreActor>, remote: &Addr<SessionActor>, since: VersionVector) -> Result<(), PeerError> {
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
        if remote.tell(SessionMsg::Batch(batch)).await.is_err() || resume.is_none() {
            return Ok(());
        }
    }
    Ok(())
}

impl Actor for SessionActor {
    type Msg = SessionMsg;

    async fn started(&mut self, _ctx: &mut Ctx<Self>) {
        // Until the session is wired to its remote (at connect), the first
        // request waits for the connect's poke.
        let link = self.link.clone();
        let _ = self
            .presence
            .tell(PresenceMsg::LinkUp {
                peer: self.remote_peer,
                link,
            })
            .await;
        // A (re)started session starts a fresh round.
        self.asking = false;
        self.round_upto = None;
        if let Err(e) = self.ask_for_news().await {
            tracing::warn!(error = %e, "sync: first request failed");
        }
    }

    async fn handle(&mut self, msg: SessionMsg, ctx: &mut Ctx<Self>) {
        let outcome = match msg {
            SessionMsg::LocalCommit => {
                self.send(SessionMsg::Poke).await;
                Ok(())
            }
            SessionMsg::Poke => self.ask_for_news().await,
            SessionMsg::Request { since } => {
                self.serve(since, ctx);
                Ok(())
            }
            SessionMsg::Batch(batch) => self.receive(batch).await,
            SessionMsg::Served => {
                self.serving = false;
                if let Some(since) = self.queued.take() {
                    self.serve(since, ctx);
                }
                Ok(())
            }
            SessionMsg::Close => {
                ctx.stop();
                Ok(())
            }
        };
        if let Err(e) = outcome {
            tracing::warn!(me = %self.me, remote = %self.remote_peer, error = %e, "sync session error");
        }
    }

    async fn stopped(&mut self) {
        // The link is down for the other side too.
        self.send(SessionMsg::Close).await;
        let _ = self
            .presence
            .tell(PresenceMsg::LinkDown {
                peer: self.remote_peer,
                link_id: self.link.id,
            })
            .await;
    }
}

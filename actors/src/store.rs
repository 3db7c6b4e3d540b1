//! The store actor: sole owner of the document store (the LMDB environment,
//! or the in-memory backend of large simulations).
//!
//! It takes [`StoreMsg`]s: DQL statements, whole transactions (a closure run
//! synchronously against one write transaction), reads lent to other actors
//! (the observer actor's live queries), batches of remote changes from the
//! merger, and the local records the peer keeps (sync subscriptions).
//!
//! Every write transaction opens and commits inside one synchronous call, so
//! none is ever held across an `.await` (that would stall every other writer,
//! and deadlock the simulator). After each commit that changed documents it
//! tells the commit listener (the observer actor), without waiting on it.
//!
//! The backend's type is erased behind [`Backend`] so the rest of the peer
//! is not generic over it. A restart reopens the store from disk (or from the
//! shared in-memory tables): committed data is the durable state.

use crate::actor::{Actor, Ctx, Reply};
use crate::error::PeerError;
use crate::rt;
use rhizome_engine::codec::Change;
use rhizome_engine::dql::eval::Params;
use rhizome_engine::dql::exec::Output;
use rhizome_engine::dql::source::Docs;
use rhizome_engine::dql::{self, Prepared};
use rhizome_engine::hlc::PeerId;
use rhizome_engine::kv::Kv;
use rhizome_engine::store::{BatchOutcome, ChangeBatch, Committed, Store, StoreError, SyncCursor};
use rhizome_engine::sync::scope::Interest;
use rhizome_engine::sync::wire::Role;
use rhizome_engine::value::Value;
use rhizome_engine::vv::VersionVector;
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// Runs statements inside one open transaction (see [`crate::Tx`]).
pub(crate) trait TxExec {
    fn execute(&mut self, text: &str, params: &Params) -> Result<Output, PeerError>;
}

struct DqlTx<'a, 's, K: Kv> {
    tx: &'a mut dql::Transaction<'s, K>,
    prepared: &'a Prepared,
}

impl<K: Kv> TxExec for DqlTx<'_, '_, K> {
    fn execute(&mut self, text: &str, params: &Params) -> Result<Output, PeerError> {
        let stmt = self.prepared.get(text)?;
        Ok(self.tx.execute(&stmt, params)?)
    }
}

/// Changes from another peer, and the claim to record with them (after
/// the last batch of a sync round; see `engine::sync::session`).
#[derive(Clone, Debug, Default)]
pub(crate) struct RemoteBatch {
    pub(crate) changes: Vec<Change>,
    pub(crate) claim: Option<VersionVector>,
}

/// The result of a transaction closure, type-erased for the mailbox.
pub(crate) type AnyResult = Result<Box<dyn Any + Send>, PeerError>;
/// A transaction closure, type-erased for the mailbox.
pub(crate) type TxFn = Box<dyn FnOnce(&mut dyn TxExec) -> AnyResult + Send>;
/// A read lent to another actor.
pub(crate) type ReadFn = Box<dyn FnOnce(Result<&mut dyn Docs, PeerError>) + Send>;

/// The store operations the actor needs, for any backend.
pub(crate) trait Backend: Send {
    fn peer(&self) -> PeerId;
    fn execute(
        &self,
        prepared: &Prepared,
        text: &str,
        params: &Params,
        now_ms: u64,
    ) -> Result<(Output, Committed), PeerError>;
    fn transaction(
        &self,
        prepared: &Prepared,
        run: TxFn,
        now_ms: u64,
    ) -> Result<(Box<dyn Any + Send>, Committed), PeerError>;
    fn read(&self, run: ReadFn);
    fn apply(&self, batch: &RemoteBatch, now_ms: u64) -> Result<(BatchOutcome, Committed), PeerError>;
    /// Applies `batches` in order in one write transaction: one outcome
    /// per batch, each claim recorded as [`Backend::apply`] would (only
    /// with its own batch, only if none of its changes was refused). An
    /// error rolls back every batch.
    fn apply_many(&self, batches: &[&RemoteBatch], now_ms: u64) -> Result<(Vec<BatchOutcome>, Committed), PeerError>;
    fn version_vector(&self) -> Result<VersionVector, PeerError>;
    fn changes(
        &self,
        since: &VersionVector,
        resume: Option<&SyncCursor>,
        max_docs: usize,
        interest: &Interest,
        role: Role,
    ) -> Result<ChangeBatch, PeerError>;
    fn put_local(&self, name: &str, value: Option<&Value>, now_ms: u64) -> Result<(), PeerError>;
    fn reap(&self, max_docs: usize, now_ms: u64) -> Result<(usize, Committed), PeerError>;
    fn evict_covered(
        &self,
        upto: &VersionVector,
        interest: &Interest,
        now_ms: u64,
    ) -> Result<(usize, Committed), PeerError>;
    fn locals(&self, prefix: &str) -> Result<Vec<(String, Value)>, PeerError>;
}

impl<K: Kv> Backend for Store<K> {
    fn peer(&self) -> PeerId {
        Store::peer(self)
    }

    fn execute(
        &self,
        prepared: &Prepared,
        text: &str,
        params: &Params,
        now_ms: u64,
    ) -> Result<(Output, Committed), PeerError> {
        let stmt = prepared.get(text)?;
        let (out, committed) = dql::execute(self, &stmt, params, now_ms)?;
        Ok((out, committed.unwrap_or_default()))
    }

    fn transaction(
        &self,
        prepared: &Prepared,
        run: TxFn,
        now_ms: u64,
    ) -> Result<(Box<dyn Any + Send>, Committed), PeerError> {
        let mut tx = dql::Transaction::begin(self, now_ms)?;
        // A panic in the app's closure rolls back and is the caller's error,
        // not a failure of the store actor.
        let ran = catch_unwind(AssertUnwindSafe(|| run(&mut DqlTx { tx: &mut tx, prepared })));
        let value = ran.map_err(|payload| PeerError::InvalidInput {
            reason: format!(
                "the transaction closure panicked ({}); rolled back",
                crate::actor::panic_text(payload.as_ref())
            ),
        })??;
        // An error from a statement aborts the transaction even if the
        // closure swallowed it: commit refuses, and the error says why.
        let committed = tx.commit()?;
        Ok((value, committed))
    }

    fn read(&self, run: ReadFn) {
        // The lent read runs another actor's code (live-query evaluation);
        // its panic is that actor's failure: its request goes unanswered
        // (the asker sees `NoReply`), and the store carries on.
        let lent = catch_unwind(AssertUnwindSafe(|| match self.read() {
            Ok(mut r) => run(Ok(&mut r)),
            Err(e) => run(Err(e.into())),
        }));
        if let Err(payload) = lent {
            tracing::error!(panic = %crate::actor::panic_text(payload.as_ref()), "a lent read panicked");
        }
    }

    fn apply(&self, batch: &RemoteBatch, now_ms: u64) -> Result<(BatchOutcome, Committed), PeerError> {
        let (mut outcomes, committed) = self.apply_many(&[batch], now_ms)?;
        let outcome = outcomes.pop().unwrap_or_default();
        Ok((outcome, committed))
    }

    fn apply_many(&self, batches: &[&RemoteBatch], now_ms: u64) -> Result<(Vec<BatchOutcome>, Committed), PeerError> {
        let mut w = self.write(now_ms)?;
        let mut outcomes = Vec::with_capacity(batches.len());
        for batch in batches {
            let outcome = w.apply_batch(&batch.changes)?;
            // A refused change (too far in the future, say) may be taken
            // later; recording the claim would stop it from ever being sent
            // again, so the claim waits for a round with no refusal.
            if let (Some(claim), true) = (&batch.claim, outcome.refused.is_empty()) {
                w.mark_synced(claim);
            }
            outcomes.push(outcome);
        }
        Ok((outcomes, w.commit()?))
    }

    fn version_vector(&self) -> Result<VersionVector, PeerError> {
        Ok(self.read()?.version_vector()?)
    }

    fn changes(
        &self,
        since: &VersionVector,
        resume: Option<&SyncCursor>,
        max_docs: usize,
        interest: &Interest,
        role: Role,
    ) -> Result<ChangeBatch, PeerError> {
        Ok(self.read()?.changes_for(since, resume, max_docs, interest, role)?)
    }

    fn put_local(&self, name: &str, value: Option<&Value>, now_ms: u64) -> Result<(), PeerError> {
        let mut w = self.write(now_ms)?;
        match value {
            Some(v) => w.put_local(name, v)?,
            None => {
                w.delete_local(name)?;
            }
        }
        w.commit()?;
        Ok(())
    }

    fn locals(&self, prefix: &str) -> Result<Vec<(String, Value)>, PeerError> {
        Ok(self.read()?.locals(prefix)?)
    }

    fn reap(&self, max_docs: usize, now_ms: u64) -> Result<(usize, Committed), PeerError> {
        let mut w = self.write(now_ms)?;
        let n = w.reap_tombstones(max_docs)?;
        Ok((n, w.commit()?))
    }

    fn evict_covered(
        &self,
        upto: &VersionVector,
        interest: &Interest,
        now_ms: u64,
    ) -> Result<(usize, Committed), PeerError> {
        let mut w = self.write(now_ms)?;
        let n = w.evict_covered(upto, interest)?;
        Ok((n, w.commit()?))
    }
}

/// Messages of the store actor.
pub(crate) enum StoreMsg {
    /// Run one statement (in its own transaction when it writes).
    Execute {
        text: String,
        params: Params,
        reply: Reply<Result<Output, PeerError>>,
    },
    /// Run a closure against one write transaction; commit if it returns
    /// `Ok`, roll back otherwise.
    Transaction { run: TxFn, reply: Reply<AnyResult> },
    /// Lend a read snapshot.
    Read(ReadFn),
    /// Merge a batch of remote changes in one write transaction.
    Apply {
        /// The remote that sent the batch (it holds every change in it).
        from: PeerId,
        batch: RemoteBatch,
        reply: Reply<Result<BatchOutcome, PeerError>>,
    },
    /// Merge several batches (from one or several remotes), in order, in
    /// one write transaction; one outcome per batch, in order. If that
    /// transaction fails, each batch is applied in a transaction of its
    /// own, so a bad batch refuses only itself.
    ApplyMany {
        batches: Vec<(PeerId, RemoteBatch)>,
        reply: Reply<Vec<Result<BatchOutcome, PeerError>>>,
    },
    /// What this replica has completely received, per origin.
    VersionVector(Reply<Result<VersionVector, PeerError>>),
    /// The changes a replica that has seen `since` and wants `interest` is
    /// missing (one batch of at most `max_docs` documents, continuing from
    /// `resume`).
    Changes {
        since: VersionVector,
        resume: Option<SyncCursor>,
        max_docs: usize,
        interest: Arc<Interest>,
        role: Role,
        reply: Reply<Result<ChangeBatch, PeerError>>,
    },
    /// Write (`Some`) or remove (`None`) a local record.
    PutLocal {
        name: String,
        value: Option<Value>,
        reply: Reply<Result<(), PeerError>>,
    },
    /// Read local records by name prefix.
    Locals {
        prefix: String,
        reply: Reply<Result<Vec<(String, Value)>, PeerError>>,
    },
    /// Remove tombstones older than the store's lifetime for them (at most
    /// `max_docs`); answers how many went.
    Reap {
        max_docs: usize,
        reply: Reply<Result<usize, PeerError>>,
    },
    /// Rebase on a peer at `upto`: evict what it knows in full of the
    /// collections `interest` wants; answers how many went.
    EvictCovered {
        upto: VersionVector,
        interest: Arc<Interest>,
        reply: Reply<Result<usize, PeerError>>,
    },
    /// Fault injection for tests and simulations: panic in the handler.
    Panic,
}

/// Told about every commit that changed documents: which remote's
/// batches it merged (see `StoreActor::notify`) and, for merges, the
/// newest write of each origin it merged ([`moved_by`]; `None`: this
/// peer's own writes, a reap or an eviction).
pub(crate) type CommitListener = Arc<dyn Fn(Committed, Option<PeerId>, Option<VersionVector>) + Send + Sync>;

/// For each origin, the newest write in `batches`: what a merge of them
/// can bring a remote (a sync poke names it, so a remote holding it
/// already need not ask).
pub(crate) fn moved_by<'b>(batches: impl IntoIterator<Item = &'b RemoteBatch>) -> VersionVector {
    let mut moved = VersionVector::new();
    for batch in batches {
        for change in &batch.changes {
            for op in &change.ops {
                moved.observe(op.stamp());
            }
        }
    }
    moved
}

/// The store actor's state: the open store and the statement cache.
pub(crate) struct StoreActor {
    backend: Option<Box<dyn Backend>>,
    prepared: Prepared,
    on_commit: CommitListener,
    /// Added to the runtime's clock: a simulated peer whose clock is wrong.
    clock_skew_ms: i64,
    /// The version vector as of the last message that could not change it
    /// (sessions ask for it with every frame; reading it decodes a record).
    vv: Option<VersionVector>,
    /// The last change read and its answer, as of the last message that
    /// could not change the store (see [`LastRead`]).
    last_read: Option<LastRead>,
}

/// A change read and its answer. Why: a peer that merged news offers it to
/// each of its sessions, and each asks for what its remote lacks; remotes
/// that were up to date ask the same question, one after the other. At
/// 300 simulated peers, reading changes was a fifth of all instructions.
/// Kept only until the next message that may write, so the answer is what
/// reading again would give.
struct LastRead {
    since: VersionVector,
    resume: Option<SyncCursor>,
    max_docs: usize,
    interest: Arc<Interest>,
    role: Role,
    batch: ChangeBatch,
}

impl LastRead {
    fn answers(
        &self,
        since: &VersionVector,
        resume: Option<&SyncCursor>,
        max_docs: usize,
        interest: &Interest,
        role: Role,
    ) -> bool {
        self.max_docs == max_docs
            && self.role == role
            && self.resume.as_ref() == resume
            && self.since == *since
            && self.interest.same_as(interest)
    }
}

impl StoreActor {
    pub(crate) fn new(backend: Box<dyn Backend>, on_commit: CommitListener, clock_skew_ms: i64) -> StoreActor {
        StoreActor {
            backend: Some(backend),
            prepared: Prepared::new(),
            on_commit,
            clock_skew_ms,
            vv: None,
            last_read: None,
        }
    }

    /// This peer's wall clock, in milliseconds since the epoch.
    fn now_ms(&self) -> u64 {
        rt::now_ms().saturating_add_signed(self.clock_skew_ms)
    }

    /// Tells the listener about a commit that changed documents; `from`
    /// is the one remote whose batches it merged (None: this peer's own
    /// write, or batches of several remotes).
    fn notify(&self, committed: Committed, from: Option<PeerId>, moved: Option<VersionVector>) {
        if !committed.changed.is_empty() {
            (self.on_commit)(committed, from, moved);
        }
    }

    /// [`StoreMsg::ApplyMany`]: one transaction, else one per batch.
    fn apply_many(
        &self,
        backend: &dyn Backend,
        batches: &[(PeerId, RemoteBatch)],
    ) -> Vec<Result<BatchOutcome, PeerError>> {
        let refs: Vec<&RemoteBatch> = batches.iter().map(|(_, b)| b).collect();
        match backend.apply_many(&refs, self.now_ms()) {
            Ok((outcomes, committed)) => {
                debug_assert_eq!(outcomes.len(), batches.len());
                // Sessions skip news that only merged their remote's own
                // changes: that holds only when every batch came from one
                // remote; else every session hears of it.
                let first = batches.first().map(|(from, _)| *from);
                let one_source = first.filter(|f| batches.iter().all(|(from, _)| from == f));
                self.notify(committed, one_source, Some(moved_by(refs)));
                outcomes.into_iter().map(Ok).collect()
            }
            Err(e) => {
                tracing::warn!(batches = batches.len(), error = %e,
                    "a joined merge failed; applying its batches one transaction each");
                batches
                    .iter()
                    .map(|(from, batch)| {
                        backend.apply(batch, self.now_ms()).map(|(o, c)| {
                            self.notify(c, Some(*from), Some(moved_by([batch])));
                            o
                        })
                    })
                    .collect()
            }
        }
    }

    /// [`Backend::changes`], answered again when asked again unchanged.
    fn changes(
        &mut self,
        backend: &dyn Backend,
        since: VersionVector,
        resume: Option<SyncCursor>,
        max_docs: usize,
        interest: Arc<Interest>,
        role: Role,
    ) -> Result<ChangeBatch, PeerError> {
        if let Some(last) = &self.last_read {
            if last.answers(&since, resume.as_ref(), max_docs, &interest, role) {
                return Ok(last.batch.clone());
            }
        }
        let batch = backend.changes(&since, resume.as_ref(), max_docs, &interest, role)?;
        self.last_read = Some(LastRead {
            since,
            resume,
            max_docs,
            interest,
            role,
            batch: batch.clone(),
        });
        Ok(batch)
    }

    fn handle_now(&mut self, backend: &dyn Backend, msg: StoreMsg) {
        // Anything that may write may move the version vector.
        if !matches!(
            msg,
            StoreMsg::VersionVector(_) | StoreMsg::Changes { .. } | StoreMsg::Read(_) | StoreMsg::Locals { .. }
        ) {
            self.vv = None;
            self.last_read = None;
        }
        match msg {
            StoreMsg::Execute { text, params, reply } => {
                let out = backend
                    .execute(&self.prepared, &text, &params, self.now_ms())
                    .map(|(out, c)| {
                        self.notify(c, None, None);
                        out
                    });
                reply.send(out);
            }
            StoreMsg::Transaction { run, reply } => {
                let out = backend.transaction(&self.prepared, run, self.now_ms()).map(|(v, c)| {
                    self.notify(c, None, None);
                    v
                });
                reply.send(out);
            }
            StoreMsg::Read(run) => backend.read(run),
            StoreMsg::Apply { from, batch, reply } => {
                let out = backend.apply(&batch, self.now_ms()).map(|(o, c)| {
                    self.notify(c, Some(from), Some(moved_by([&batch])));
                    o
                });
                reply.send(out);
            }
            StoreMsg::ApplyMany { batches, reply } => reply.send(self.apply_many(backend, &batches)),
            StoreMsg::VersionVector(reply) => match &self.vv {
                Some(vv) => reply.send(Ok(vv.clone())),
                None => {
                    let vv = backend.version_vector();
                    if let Ok(v) = &vv {
                        self.vv = Some(v.clone());
                    }
                    reply.send(vv);
                }
            },
            StoreMsg::Changes {
                since,
                resume,
                max_docs,
                interest,
                role,
                reply,
            } => reply.send(self.changes(backend, since, resume, max_docs, interest, role)),
            StoreMsg::PutLocal { name, value, reply } => {
                reply.send(backend.put_local(&name, value.as_ref(), self.now_ms()))
            }
            StoreMsg::Locals { prefix, reply } => reply.send(backend.locals(&prefix)),
            StoreMsg::Reap { max_docs, reply } => {
                let out = backend.reap(max_docs, self.now_ms()).map(|(n, c)| {
                    self.notify(c, None, None);
                    n
                });
                reply.send(out);
            }
            StoreMsg::EvictCovered { upto, interest, reply } => {
                let out = backend.evict_covered(&upto, &interest, self.now_ms()).map(|(n, c)| {
                    self.notify(c, None, None);
                    n
                });
                reply.send(out);
            }
            StoreMsg::Panic => panic!("fault injected into the store actor"),
        }
    }
}

impl Actor for StoreActor {
    type Msg = StoreMsg;

    async fn handle(&mut self, msg: StoreMsg, _ctx: &mut Ctx<Self>) {
        let Some(backend) = self.backend.take() else {
            return;
        };
        // Synchronous on purpose: no write transaction can live across an
        // `.await` because there is none in here.
        self.handle_now(backend.as_ref(), msg);
        self.backend = Some(backend);
    }

    async fn stopped(&mut self) {
        // Closing the store: LMDB's environment closes with its last handle.
        drop(self.backend.take());
    }
}

/// Opens a store over `kv` as a [`Backend`].
pub(crate) fn open_backend<K: Kv>(
    kv: K,
    fresh_peer: u64,
    tombstone_ttl_ms: u64,
) -> Result<Box<dyn Backend>, StoreError> {
    let config = rhizome_engine::store::StoreConfig {
        tombstone_ttl_ms,
        ..Default::default()
    };
    let store = Store::open(kv, config, PeerId(fresh_peer), rt::entropy())?;
    Ok(Box::new(store))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actor::{self, Addr, Spec};
    use rhizome_engine::mem::MemKv;
    use rhizome_engine::sync::wire::SubscriptionSpec;

    fn store() -> Addr<StoreActor> {
        let mut backend = Some(open_backend(MemKv::new(), 7, 60_000).unwrap());
        let listener: CommitListener = Arc::new(|_, _, _| {});
        actor::spawn(Spec::new("store"), move |_| {
            let b = backend.take().ok_or("no restart in this test")?;
            Ok(StoreActor::new(b, listener.clone(), 0))
        })
        .unwrap()
    }

    fn interest(queries: &[&str]) -> Arc<Interest> {
        let specs: Vec<SubscriptionSpec> = queries
            .iter()
            .map(|q| SubscriptionSpec {
                query: q.to_string(),
                params: "{}".into(),
            })
            .collect();
        Arc::new(Interest::compile(&specs).unwrap())
    }

    async fn insert(store: &Addr<StoreActor>, id: &str) {
        let text = format!("INSERT INTO t DOCUMENTS ({{'_id': '{id}', 'v': 1}})");
        let params = Params::default();
        store
            .ask(|reply| StoreMsg::Execute { text, params, reply })
            .await
            .unwrap()
            .unwrap();
    }

    async fn ids(store: &Addr<StoreActor>, interest: Arc<Interest>) -> Vec<String> {
        let batch = store
            .ask(|reply| StoreMsg::Changes {
                since: VersionVector::new(),
                resume: None,
                max_docs: 100,
                interest,
                role: Role::SmallPeer,
                reply,
            })
            .await
            .unwrap()
            .unwrap();
        batch.changes.iter().map(|c| c.id.to_json().to_string()).collect()
    }

    #[tokio::test]
    async fn a_repeated_change_read_is_answered_as_of_the_last_write() {
        let store = store();
        let all = interest(&["SELECT * FROM t", "SELECT * FROM u"]);
        insert(&store, "a").await;
        assert_eq!(ids(&store, all.clone()).await, ["\"a\""]);
        // Another subscription is another question.
        assert!(ids(&store, interest(&["SELECT * FROM u"])).await.is_empty());
        // The same question from another remote subscribed alike (its specs
        // in another order): the same answer.
        let alike = interest(&["SELECT * FROM u", "SELECT * FROM t"]);
        assert!(alike.same_as(&all) && !Arc::ptr_eq(&alike, &all));
        assert_eq!(ids(&store, alike).await, ["\"a\""]);
        // A write in between: read again, not the kept answer.
        insert(&store, "b").await;
        assert_eq!(ids(&store, all).await, ["\"a\"", "\"b\""]);
    }
}

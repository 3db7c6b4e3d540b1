//! The merger actor: applies changes that arrive from other peers.
//!
//! Sync sessions hand it [`MergerMsg::Merge`] with one batch each (bounded
//! by the frame it arrived in). A durable commit costs far more than
//! merging a batch, so when it takes a batch it also takes the batches
//! already queued behind it (at most [`MAX_JOINED_BATCHES`], and
//! [`MAX_BATCH_CHANGES`] changes plus one batch) and applies them, in
//! mailbox order, in one write transaction through the store actor. Each
//! batch keeps its own answer, and its version-vector claim is recorded
//! only with it (only if none of its own changes was refused). If the
//! joined transaction fails, the store applies the batches one transaction
//! each, so one bad batch never refuses the others.
//!
//! It counts what each origin brought, for monitoring, and it is where
//! merge work queues up (its bounded mailbox pushes back on the sessions)
//! rather than in the store actor, whose mailbox also serves the app.

use crate::actor::{Actor, Addr, Ctx, Reply};
use crate::error::PeerError;
use crate::store::{RemoteBatch, StoreActor, StoreMsg};
use rhizome_engine::hlc::PeerId;
use rhizome_engine::store::BatchOutcome;
use std::collections::BTreeMap;

/// Most changes one batch may carry; larger batches are refused whole.
pub const MAX_BATCH_CHANGES: usize = 10_000;

/// Most batches applied in one write transaction.
pub const MAX_JOINED_BATCHES: usize = 16;

/// What the merger counted for one origin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeStats {
    /// Batches applied.
    pub batches: u64,
    /// Changes received (in batches that were applied).
    pub received: u64,
    /// Changes that brought something new.
    pub applied: u64,
    /// Changes refused (invalid, or too large).
    pub refused: u64,
}

/// Messages of the merger actor.
pub(crate) enum MergerMsg {
    /// Apply one batch from `from`.
    Merge {
        from: PeerId,
        batch: RemoteBatch,
        reply: Reply<Result<BatchOutcome, PeerError>>,
    },
    /// Counts per origin.
    Stats(Reply<BTreeMap<PeerId, MergeStats>>),
}

/// One batch waiting to be applied, and who waits for its outcome.
struct Job {
    from: PeerId,
    batch: RemoteBatch,
    reply: Reply<Result<BatchOutcome, PeerError>>,
}

/// The merger's state.
pub(crate) struct MergerActor {
    store: Addr<StoreActor>,
    stats: BTreeMap<PeerId, MergeStats>,
}

impl MergerActor {
    pub(crate) fn new(store: Addr<StoreActor>) -> MergerActor {
        MergerActor {
            store,
            stats: BTreeMap::new(),
        }
    }

    /// Refuses a batch too large to take, else hands it back as a job.
    fn admit(from: PeerId, batch: RemoteBatch, reply: Reply<Result<BatchOutcome, PeerError>>) -> Option<Job> {
        if batch.changes.len() > MAX_BATCH_CHANGES {
            reply.send(Err(PeerError::InvalidInput {
                reason: format!(
                    "a batch from {from} has {} changes; at most {MAX_BATCH_CHANGES} are taken",
                    batch.changes.len()
                ),
            }));
            return None;
        }
        Some(Job { from, batch, reply })
    }

    /// Applies `jobs` (in order) in one transaction when there are several
    /// (the store falls back to one each if that fails), answers each.
    async fn apply(&mut self, jobs: Vec<Job>) {
        debug_assert!(jobs.len() <= MAX_JOINED_BATCHES);
        let mut replies = Vec::with_capacity(jobs.len());
        let mut batches = Vec::with_capacity(jobs.len());
        for job in jobs {
            replies.push((job.from, job.batch.changes.len() as u64, job.reply));
            batches.push((job.from, job.batch));
        }
        let outcomes: Vec<Result<BatchOutcome, PeerError>> = match batches.len() {
            0 => return,
            1 => {
                let (from, batch) = batches.pop().expect("one batch");
                vec![self
                    .store
                    .ask(|reply| StoreMsg::Apply { from, batch, reply })
                    .await
                    .map_err(PeerError::from)
                    .and_then(|r| r)]
            }
            n => match self.store.ask(|reply| StoreMsg::ApplyMany { batches, reply }).await {
                Ok(outcomes) if outcomes.len() == n => outcomes,
                Ok(_) => (0..n)
                    .map(|_| {
                        Err(PeerError::InvalidInput {
                            reason: "internal: the store answered a joined merge with another count".into(),
                        })
                    })
                    .collect(),
                Err(e) => (0..n).map(|_| Err(PeerError::from(e.clone()))).collect(),
            },
        };
        debug_assert_eq!(outcomes.len(), replies.len());
        for ((from, received, reply), outcome) in replies.into_iter().zip(outcomes) {
            if let Ok(o) = &outcome {
                let s = self.stats.entry(from).or_default();
                s.batches += 1;
                s.received += received;
                s.applied += o.applied as u64;
                s.refused += o.refused.len() as u64;
            }
            reply.send(outcome);
        }
    }

    /// Takes `first` and the merges queued behind it, up to the bounds;
    /// a message of another kind taken on the way is handed back (to be
    /// handled after these merges, in mailbox order).
    fn gather(first: Job, ctx: &mut Ctx<Self>) -> (Vec<Job>, Option<MergerMsg>) {
        let mut changes = first.batch.changes.len();
        let mut jobs = vec![first];
        // Bounded by MAX_JOINED_BATCHES taken (refused ones count too).
        for _ in 1..MAX_JOINED_BATCHES {
            if changes >= MAX_BATCH_CHANGES {
                break;
            }
            match ctx.try_next() {
                Some(MergerMsg::Merge { from, batch, reply }) => {
                    if let Some(job) = Self::admit(from, batch, reply) {
                        changes += job.batch.changes.len();
                        jobs.push(job);
                    }
                }
                Some(other) => return (jobs, Some(other)),
                None => break,
            }
        }
        (jobs, None)
    }

    fn handle_other(&mut self, msg: MergerMsg) {
        match msg {
            MergerMsg::Stats(reply) => reply.send(self.stats.clone()),
            MergerMsg::Merge { reply, .. } => {
                // Never handed here: merges go through `gather`.
                reply.send(Err(PeerError::InvalidInput {
                    reason: "internal: a merge was not gathered".into(),
                }))
            }
        }
    }
}

impl Actor for MergerActor {
    type Msg = MergerMsg;

    async fn handle(&mut self, msg: MergerMsg, ctx: &mut Ctx<Self>) {
        match msg {
            MergerMsg::Merge { from, batch, reply } => {
                let Some(first) = Self::admit(from, batch, reply) else {
                    return;
                };
                let (jobs, later) = Self::gather(first, ctx);
                self.apply(jobs).await;
                if let Some(msg) = later {
                    self.handle_other(msg);
                }
            }
            other => self.handle_other(other),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The merger against the in-memory store, behind a backend that logs
    //! every transaction and fails any that holds a batch marked bad.
    use super::*;
    use crate::actor::{self, Spec};
    use crate::store::{Backend, CommitListener, ReadFn, TxFn};
    use rhizome_engine::codec::Change;
    use rhizome_engine::dql::eval::Params;
    use rhizome_engine::dql::exec::Output;
    use rhizome_engine::dql::Prepared;
    use rhizome_engine::mem::MemKv;
    use rhizome_engine::store::{ChangeBatch, Committed, OnConflict, Store, StoreConfig, SyncCursor};
    use rhizome_engine::sync::scope::Interest;
    use rhizome_engine::sync::wire::Role;
    use rhizome_engine::value::Value;
    use rhizome_engine::vv::VersionVector;
    use std::any::Any;
    use std::sync::{Arc, Mutex};

    /// The collection of a batch that makes its transaction fail.
    const BAD: &str = "bad";

    /// Each transaction: the first document id of each batch in it, and
    /// whether it committed.
    type Log = Arc<Mutex<Vec<(Vec<String>, bool)>>>;

    struct Logged {
        inner: Store<MemKv>,
        log: Log,
    }

    fn first_id(b: &RemoteBatch) -> String {
        b.changes.first().map_or_else(String::new, |c| {
            format!("{}/{}", c.collection, c.id.as_str().unwrap_or("?"))
        })
    }

    impl Backend for Logged {
        fn peer(&self) -> PeerId {
            Backend::peer(&self.inner)
        }
        fn execute(
            &self,
            p: &Prepared,
            t: &str,
            params: &Params,
            now_ms: u64,
        ) -> Result<(Output, Committed), PeerError> {
            Backend::execute(&self.inner, p, t, params, now_ms)
        }
        fn transaction(
            &self,
            p: &Prepared,
            run: TxFn,
            now_ms: u64,
        ) -> Result<(Box<dyn Any + Send>, Committed), PeerError> {
            Backend::transaction(&self.inner, p, run, now_ms)
        }
        fn read(&self, run: ReadFn) {
            Backend::read(&self.inner, run)
        }
        fn apply(&self, batch: &RemoteBatch, now_ms: u64) -> Result<(BatchOutcome, Committed), PeerError> {
            let (mut o, c) = self.apply_many(&[batch], now_ms)?;
            Ok((o.pop().unwrap_or_default(), c))
        }
        fn apply_many(
            &self,
            batches: &[&RemoteBatch],
            now_ms: u64,
        ) -> Result<(Vec<BatchOutcome>, Committed), PeerError> {
            let ids = batches.iter().map(|b| first_id(b)).collect();
            let bad = batches.iter().any(|b| b.changes.iter().any(|c| c.collection == BAD));
            self.log.lock().unwrap().push((ids, !bad));
            if bad {
                return Err(PeerError::InvalidInput {
                    reason: "a bad batch".into(),
                });
            }
            Backend::apply_many(&self.inner, batches, now_ms)
        }
        fn version_vector(&self) -> Result<VersionVector, PeerError> {
            Backend::version_vector(&self.inner)
        }
        fn changes(
            &self,
            since: &VersionVector,
            resume: Option<&SyncCursor>,
            max_docs: usize,
            interest: &Interest,
            role: Role,
        ) -> Result<ChangeBatch, PeerError> {
            Backend::changes(&self.inner, since, resume, max_docs, interest, role)
        }
        fn put_local(&self, name: &str, value: Option<&Value>, now_ms: u64) -> Result<(), PeerError> {
            Backend::put_local(&self.inner, name, value, now_ms)
        }
        fn reap(&self, max_docs: usize, now_ms: u64) -> Result<(usize, Committed), PeerError> {
            Backend::reap(&self.inner, max_docs, now_ms)
        }
        fn evict_covered(
            &self,
            upto: &VersionVector,
            interest: &Interest,
            now_ms: u64,
        ) -> Result<(usize, Committed), PeerError> {
            Backend::evict_covered(&self.inner, upto, interest, now_ms)
        }
        fn locals(&self, prefix: &str) -> Result<Vec<(String, Value)>, PeerError> {
            Backend::locals(&self.inner, prefix)
        }
    }

    /// A peer's store with `n` documents in `collection`, and its changes
    /// in batches of `per` documents (the last batch's claim: its vector).
    fn source(peer: u64, collection: &str, n: usize, per: usize) -> (PeerId, Vec<RemoteBatch>) {
        let store = Store::open(MemKv::new(), StoreConfig::default(), PeerId(peer), peer).unwrap();
        let mut w = store.write(1_000).unwrap();
        for i in 0..n {
            let doc = Value::from_json(&serde_json::json!({"_id": format!("{peer}-{i:04}"), "i": i})).unwrap();
            w.insert(collection, &doc, OnConflict::Fail).unwrap();
        }
        w.commit().unwrap();
        let r = store.read().unwrap();
        let all: Vec<Change> = r.changes_since(&VersionVector::new(), None, n).unwrap().changes;
        let vv = r.version_vector().unwrap();
        let mut batches: Vec<RemoteBatch> = all
            .chunks(per)
            .map(|c| RemoteBatch {
                changes: c.to_vec(),
                claim: None,
            })
            .collect();
        if let Some(last) = batches.last_mut() {
            last.claim = Some(vv);
        }
        (PeerId(peer), batches)
    }

    struct Rig {
        merger: Addr<MergerActor>,
        store: Addr<StoreActor>,
        log: Log,
        /// The source of each commit the listener heard of.
        news: Arc<Mutex<Vec<Option<PeerId>>>>,
    }

    fn rig() -> Rig {
        let log: Log = Arc::default();
        let news: Arc<Mutex<Vec<Option<PeerId>>>> = Arc::default();
        let inner = Store::open(MemKv::new(), StoreConfig::default(), PeerId(99), 99).unwrap();
        let mut backend: Option<Box<dyn Backend>> = Some(Box::new(Logged {
            inner,
            log: log.clone(),
        }));
        let heard = news.clone();
        let listener: CommitListener = Arc::new(move |_, from, _| heard.lock().unwrap().push(from));
        let store = actor::spawn(Spec::new("store"), move |_| {
            let b = backend.take().ok_or("no restart in this test")?;
            Ok(StoreActor::new(b, listener.clone(), 0))
        })
        .unwrap();
        let s = store.clone();
        let merger = actor::spawn(Spec::new("merger"), move |_| Ok(MergerActor::new(s.clone()))).unwrap();
        Rig {
            merger,
            store,
            log,
            news,
        }
    }

    type Answer = crate::actor::Pending<Result<BatchOutcome, PeerError>>;

    /// Queues every batch without awaiting any answer (so they wait in the
    /// merger's mailbox together).
    async fn queue(rig: &Rig, batches: &[(PeerId, RemoteBatch)]) -> Vec<Answer> {
        let mut out = Vec::new();
        for (from, batch) in batches {
            let (from, batch) = (*from, batch.clone());
            out.push(
                rig.merger
                    .ask_queued(|reply| MergerMsg::Merge { from, batch, reply })
                    .await
                    .unwrap(),
            );
        }
        out
    }

    async fn vv(rig: &Rig) -> VersionVector {
        rig.store.ask(StoreMsg::VersionVector).await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn queued_batches_join_one_transaction_in_order() {
        let rig = rig();
        let (a, batches) = source(1, "t", 50, 10);
        let claim = batches.last().unwrap().claim.clone().unwrap();
        let queued: Vec<_> = batches.iter().cloned().map(|b| (a, b)).collect();
        let answers = queue(&rig, &queued).await;
        for ans in answers {
            let o = ans.recv().await.unwrap().unwrap();
            assert_eq!((o.applied, o.refused.len()), (10, 0));
        }
        let log = rig.log.lock().unwrap().clone();
        let want: Vec<String> = batches.iter().map(first_id).collect();
        let seen: Vec<String> = log.iter().flat_map(|(ids, _)| ids.clone()).collect();
        assert_eq!(seen, want, "mailbox order kept");
        // Queued before the merger ran (one thread): one transaction.
        assert_eq!(log.len(), 1, "joined: {log:?}");
        assert!(log.iter().all(|(_, ok)| *ok));
        // The claim rode on the last batch, recorded with it.
        assert!(vv(&rig).await.dominates(&claim));
        let stats = rig.merger.ask(MergerMsg::Stats).await.unwrap();
        let s = stats[&a];
        assert_eq!((s.batches, s.received, s.applied, s.refused), (5, 50, 50, 0));
        assert!(rig.news.lock().unwrap().iter().all(|f| *f == Some(a)));
    }

    #[tokio::test]
    async fn a_bad_batch_refuses_only_itself() {
        let rig = rig();
        let (a, good) = source(1, "t", 30, 10);
        let (_, bad) = source(1, BAD, 5, 5);
        // A claim on a batch after the bad one is still recorded: the
        // sessions hold a round's claim back until its batches applied.
        let queued = vec![
            (a, good[0].clone()),
            (a, bad[0].clone()),
            (a, good[1].clone()),
            (a, good[2].clone()),
        ];
        let answers = queue(&rig, &queued).await;
        let mut oks = Vec::new();
        for ans in answers {
            oks.push(ans.recv().await.unwrap().is_ok());
        }
        assert_eq!(oks, [true, false, true, true]);
        let log = rig.log.lock().unwrap().clone();
        // Whatever was joined with the bad batch failed, then went alone.
        let committed: Vec<String> = log
            .iter()
            .filter(|(_, ok)| *ok)
            .flat_map(|(ids, _)| ids.clone())
            .collect();
        let want: Vec<String> = [&good[0], &good[1], &good[2]].iter().map(|b| first_id(b)).collect();
        assert_eq!(committed, want, "the good batches, in order");
        let stats = rig.merger.ask(MergerMsg::Stats).await.unwrap();
        let s = stats[&a];
        assert_eq!((s.batches, s.received, s.applied, s.refused), (3, 30, 30, 0));
        let docs = rig
            .store
            .ask(|reply| StoreMsg::Execute {
                text: "SELECT * FROM t".into(),
                params: Params::default(),
                reply,
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(docs.items.len(), 30);
    }

    #[tokio::test]
    async fn joined_batches_of_several_origins_are_news_for_all() {
        let rig = rig();
        let (a, from_a) = source(1, "t", 20, 10);
        let (b, from_b) = source(2, "t", 20, 10);
        let queued = vec![
            (a, from_a[0].clone()),
            (a, from_a[1].clone()),
            (b, from_b[0].clone()),
            (b, from_b[1].clone()),
        ];
        for ans in queue(&rig, &queued).await {
            ans.recv().await.unwrap().unwrap();
        }
        let log = rig.log.lock().unwrap().clone();
        let news = rig.news.lock().unwrap().clone();
        assert_eq!(news.len(), log.len());
        for ((ids, _), from) in log.iter().zip(&news) {
            let origins: std::collections::BTreeSet<&str> =
                ids.iter().map(|i| &i[i.find('/').unwrap_or(0)..][..2]).collect();
            // A commit that merged both origins names neither.
            assert_eq!(from.is_none(), origins.len() > 1, "{ids:?} {from:?}");
        }
        let stats = rig.merger.ask(MergerMsg::Stats).await.unwrap();
        assert_eq!((stats[&a].batches, stats[&b].batches), (2, 2));
        assert_eq!((stats[&a].applied, stats[&b].applied), (20, 20));
    }

    #[tokio::test]
    async fn oversized_batches_are_refused_alone() {
        let rig = rig();
        let (a, ok) = source(1, "t", 10, 10);
        let big = RemoteBatch {
            changes: vec![ok[0].changes[0].clone(); MAX_BATCH_CHANGES + 1],
            claim: None,
        };
        let answers = queue(&rig, &[(a, big), (a, ok[0].clone())]).await;
        let mut oks = Vec::new();
        for ans in answers {
            oks.push(ans.recv().await.unwrap().is_ok());
        }
        assert_eq!(oks, [false, true]);
    }
}

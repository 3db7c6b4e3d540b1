//! The observer actor: owns the peer's live queries (store observers).
//!
//! It takes [`ObserverMsg`]s: register a query, cancel one, and *wake*
//! (the store committed; see below). It keeps the engine's
//! [`Observers`], which patches or re-runs the queries a commit can affect,
//! reading through snapshots the store actor lends it.
//!
//! Commits reach it through a shared accumulator, not its mailbox: the store
//! actor merges what each commit changed into [`PendingCommits`] and tries
//! to queue one `Wake`. The store never waits on this actor (which itself
//! waits on the store for reads), and however far behind it falls, memory
//! stays bounded: the accumulator folds into "many changes" past a limit.
//!
//! Each live query delivers into a [`Slot`] that holds at most one pending
//! event, whose diff is always against what that consumer last took. A slow
//! consumer therefore never blocks the actor nor grows a queue: it gets the
//! latest result and a correct diff when it gets to it.
//!
//! Durable state (kept across restarts, in [`Registry`]): each live query's
//! statement, parameters and slot. After a panic the actor rebuilds the
//! engine's state by re-running every registered query, and each consumer
//! gets the difference from what it last took, so nothing is lost or
//! repeated.

use crate::actor::{Actor, Addr, AskError, Ctx, Reply};
use crate::error::PeerError;
use crate::store::{StoreActor, StoreMsg};
use rhizome_engine::dql::eval::Params;
use rhizome_engine::dql::observe::{self, Diff, ObserverId, Observers, Rows};
use rhizome_engine::dql::source::Docs;
use rhizome_engine::dql::Prepared;
use rhizome_engine::store::{Changed, Committed, MAX_LISTED_CHANGES};
use rhizome_engine::value::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere never leaves these half-written: every critical
    // section is a few assignments.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a live query's consumer receives.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryEvent {
    /// The whole current result (shared chunks: cheap to clone and keep).
    pub items: Rows,
    /// How it differs from the previous event this consumer took
    /// (everything inserted in the first one).
    pub diff: Diff,
}

impl QueryEvent {
    /// The result rows as JSON values.
    pub fn json_items(&self) -> Vec<serde_json::Value> {
        self.items.iter().map(Value::to_json).collect()
    }
}

/// What a live query's consumer takes next.
pub(crate) type Delivery = Result<QueryEvent, PeerError>;

#[derive(Default)]
struct SlotState {
    /// The result the consumer last took; `None` before the first.
    seen: Option<Rows>,
    pending: Option<Delivery>,
    /// The consumer is gone (dropped its handle).
    closed: bool,
    /// The peer stopped; no event will come.
    ended: bool,
    waker: Option<Waker>,
}

impl SlotState {
    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// The one-event mailbox of a live query.
#[derive(Default)]
pub(crate) struct Slot(Mutex<SlotState>);

impl Slot {
    /// Offers a new result; returns `false` when the consumer is gone.
    fn publish(&self, items: Rows) -> bool {
        self.publish_with(items, None)
    }

    /// Offers a new result with the engine's diff against the result at
    /// address `previous` (see `observe::Event::previous`): when that is
    /// what the consumer took last, the diff is taken as is rather than
    /// computed again from both results.
    fn publish_with(&self, items: Rows, engine: Option<(usize, Diff)>) -> bool {
        let mut s = lock(&self.0);
        if s.closed {
            return false;
        }
        let diff = match (&s.seen, engine) {
            (Some(seen), Some((previous, d))) if observe::result_address(seen) == previous => d,
            (Some(seen), _) => observe::diff_rows(seen, &items),
            (None, _) => Diff {
                inserted: (0..items.len()).collect(),
                ..Diff::default()
            },
        };
        if diff.is_empty() && s.seen.is_some() {
            // Back to what the consumer has: nothing to say (an error it
            // has not taken is superseded too).
            s.pending = None;
        } else {
            s.pending = Some(Ok(QueryEvent { items, diff }));
            s.wake();
        }
        true
    }

    /// Tells the consumer its query failed (it keeps its last result; the
    /// query is retried at the next commit). Returns `false` when the
    /// consumer is gone.
    fn fail(&self, error: PeerError) -> bool {
        let mut s = lock(&self.0);
        if s.closed {
            return false;
        }
        s.pending = Some(Err(error));
        s.wake();
        true
    }

    /// No event will come (the peer closed, or its observer gave up).
    pub(crate) fn end(&self, error: Option<PeerError>) {
        let mut s = lock(&self.0);
        if let Some(e) = error {
            s.pending = Some(Err(e));
        }
        s.ended = true;
        s.wake();
    }

    /// The consumer is gone: no more events (and a waiting consumer task,
    /// as in a callback observer, ends).
    pub(crate) fn close(&self) {
        let mut s = lock(&self.0);
        s.closed = true;
        s.pending = None;
        s.wake();
    }

    fn is_closed(&self) -> bool {
        lock(&self.0).closed
    }

    pub(crate) fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        let mut s = lock(&self.0);
        if s.closed {
            return Poll::Ready(None);
        }
        if let Some(d) = s.pending.take() {
            if let Ok(ev) = &d {
                s.seen = Some(ev.items.clone());
            }
            return Poll::Ready(Some(d));
        }
        if s.ended {
            return Poll::Ready(None);
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// A live query as registered: what is needed to rebuild it.
struct Registration {
    text: String,
    params: Params,
    slot: Arc<Slot>,
}

/// The observer actor's durable state: every live query, by handle id.
#[derive(Default)]
pub(crate) struct Registry {
    next: u64,
    queries: BTreeMap<u64, Registration>,
}

impl Registry {
    /// Forgets a live query (its consumer dropped it).
    pub(crate) fn remove(&mut self, id: u64) {
        self.queries.remove(&id);
    }

    /// Ends every live query, with `error` as their last delivery.
    pub(crate) fn end_all(&mut self, error: impl Fn() -> Option<PeerError>) {
        for r in std::mem::take(&mut self.queries).into_values() {
            r.slot.end(error());
        }
    }
}

/// What commits changed since the observer actor last looked.
#[derive(Default)]
pub(crate) struct PendingCommits(Mutex<Option<Committed>>);

impl PendingCommits {
    /// Folds a commit in (document lists past the limit become `Many`).
    pub(crate) fn add(&self, c: Committed) {
        let mut pending = lock(&self.0);
        let Some(acc) = pending.as_mut() else {
            *pending = Some(c);
            return;
        };
        for (coll, changed) in c.changed {
            let merged = match (acc.changed.remove(&coll), changed) {
                (Some(Changed::Docs(mut a)), Changed::Docs(b)) => {
                    a.extend(b);
                    a.sort_by(Value::total_cmp);
                    a.dedup();
                    if a.len() > MAX_LISTED_CHANGES {
                        Changed::Many
                    } else {
                        Changed::Docs(a)
                    }
                }
                (None, c) => c,
                _ => Changed::Many,
            };
            acc.changed.insert(coll, merged);
        }
    }

    fn take(&self) -> Option<Committed> {
        lock(&self.0).take()
    }
}

/// Messages of the observer actor.
pub(crate) enum ObserverMsg {
    /// Register a live query; answers its handle id and slot (the first
    /// result is already in the slot).
    Observe {
        text: String,
        params: Params,
        reply: Reply<Result<(u64, Arc<Slot>), PeerError>>,
    },
    /// Cancel a live query.
    Cancel(u64),
    /// Commits are pending.
    Wake,
    /// A delayed retry after a failed update.
    Retry,
    /// Fault injection for tests and simulations: panic in the handler.
    Panic,
}

/// The observer actor's state.
pub(crate) struct ObserverActor {
    store: Addr<StoreActor>,
    registry: Arc<Mutex<Registry>>,
    pending: Arc<PendingCommits>,
    /// The engine's live queries; `None` when they must be rebuilt (after a
    /// restart, or when a read failed midway).
    engine: Option<Observers>,
    /// Engine observer id -> handle id.
    handles: BTreeMap<ObserverId, u64>,
    /// Registered queries whose first run failed; retried at each commit.
    failed: BTreeSet<u64>,
    /// A delayed `Wake` is on its way (after a failed update).
    retry_scheduled: bool,
    prepared: Prepared,
}

/// Delay before retrying live-query updates that failed for want of the
/// store (it was restarting).
const RETRY_MS: u64 = 20;

/// A query's failure as its consumer sees it.
fn query_failed(e: &impl std::fmt::Display) -> PeerError {
    PeerError::LiveQuery { reason: e.to_string() }
}

impl ObserverActor {
    pub(crate) fn new(
        store: Addr<StoreActor>,
        registry: Arc<Mutex<Registry>>,
        pending: Arc<PendingCommits>,
    ) -> ObserverActor {
        ObserverActor {
            store,
            registry,
            pending,
            engine: None,
            handles: BTreeMap::new(),
            failed: BTreeSet::new(),
            retry_scheduled: false,
            prepared: Prepared::new(),
        }
    }

    /// Runs `f` on a snapshot lent by the store actor. If the store drops
    /// the request, `f` itself failed there (the store survives it): that is
    /// a failure of this actor's work, so it panics into supervision.
    async fn with_docs<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Docs) -> Result<T, PeerError> + Send + 'static,
    ) -> Result<T, PeerError> {
        let asked = self
            .store
            .ask(|reply| StoreMsg::Read(Box::new(move |docs| reply.send(docs.and_then(f)))))
            .await;
        match asked {
            Ok(out) => out,
            Err(AskError::NoReply { .. }) => panic!("live-query evaluation failed inside a store read"),
            Err(e) => Err(e.into()),
        }
    }

    fn slot(&self, id: u64) -> Option<Arc<Slot>> {
        lock(&self.registry).queries.get(&id).map(|r| r.slot.clone())
    }

    /// Runs registered queries into `engine`, each on its own: a query that
    /// fails is reported to its consumer and remembered in `failed`.
    async fn run_registered(&mut self, mut engine: Observers, ids: Vec<u64>) -> Result<Observers, PeerError> {
        let mut runs = Vec::with_capacity(ids.len());
        for id in ids {
            let Some((text, params)) = lock(&self.registry)
                .queries
                .get(&id)
                .map(|r| (r.text.clone(), r.params.clone()))
            else {
                continue;
            };
            let stmt = self.prepared.get(&text).map_err(|e| query_failed(&e));
            runs.push((id, text, stmt, params));
        }
        let (engine, results) = self
            .with_docs(move |docs| {
                let mut results = Vec::with_capacity(runs.len());
                for (id, text, stmt, params) in runs {
                    let ev = stmt.and_then(|s| engine.observe(&text, s, params, docs).map_err(|e| query_failed(&e)));
                    results.push((id, ev));
                }
                Ok((engine, results))
            })
            .await?;
        for (id, result) in results {
            let Some(slot) = self.slot(id) else { continue };
            match result {
                Ok(ev) => {
                    self.failed.remove(&id);
                    self.handles.insert(ev.observer, id);
                    slot.publish(ev.items);
                }
                Err(e) => {
                    self.failed.insert(id);
                    slot.fail(e);
                }
            }
        }
        Ok(engine)
    }

    /// Re-runs every registered query into fresh engine state; each
    /// consumer gets its difference from what it last took.
    async fn rebuild(&mut self) -> Result<(), PeerError> {
        // Commits pending now are covered by the fresh runs.
        self.pending.take();
        self.handles.clear();
        let ids: Vec<u64> = lock(&self.registry)
            .queries
            .iter()
            .filter(|(_, r)| !r.slot.is_closed())
            .map(|(id, _)| *id)
            .collect();
        let engine = self.run_registered(Observers::new(), ids).await?;
        self.engine = Some(engine);
        Ok(())
    }

    async fn observe(&mut self, text: String, params: Params) -> Result<(u64, Arc<Slot>), PeerError> {
        if self.engine.is_none() {
            self.rebuild().await?;
        }
        let stmt = self.prepared.get(&text)?;
        let mut engine = self.engine.take().unwrap_or_default();
        let (t, p) = (text.clone(), params.clone());
        let (engine, event) = self
            .with_docs(move |docs| {
                let ev = engine.observe(&t, stmt, p, docs);
                Ok((engine, ev))
            })
            .await?;
        self.engine = Some(engine);
        let event = event?;
        let slot = Arc::new(Slot::default());
        slot.publish(event.items);
        let mut reg = lock(&self.registry);
        let id = reg.next;
        reg.next += 1;
        reg.queries.insert(
            id,
            Registration {
                text,
                params,
                slot: slot.clone(),
            },
        );
        self.handles.insert(event.observer, id);
        Ok((id, slot))
    }

    fn cancel(&mut self, id: u64) {
        lock(&self.registry).remove(id);
        self.failed.remove(&id);
        let engine_ids: Vec<ObserverId> = self
            .handles
            .iter()
            .filter(|(_, h)| **h == id)
            .map(|(e, _)| *e)
            .collect();
        for e in engine_ids {
            self.handles.remove(&e);
            if let Some(engine) = self.engine.as_mut() {
                engine.cancel(e);
            }
        }
    }

    /// Brings every live query up to date with the pending commits.
    async fn wake(&mut self) -> Result<(), PeerError> {
        let Some(committed) = self.pending.take() else {
            return Ok(());
        };
        let Some(mut engine) = self.engine.take() else {
            return self.rebuild().await;
        };
        let c = committed.clone();
        let updated = self
            .with_docs(move |docs| {
                let (events, failures) = engine.on_commit_each(&c, docs);
                Ok((engine, events, failures))
            })
            .await;
        let (engine, events, failures) = match updated {
            Ok(u) => u,
            Err(e) => {
                // The engine state went with the request; look again later.
                self.pending.add(committed);
                return Err(e);
            }
        };
        self.engine = Some(engine);
        let mut gone = Vec::new();
        for ev in events {
            let Some(id) = self.handles.get(&ev.observer).copied() else {
                continue;
            };
            // `seen` is alive while compared, so an equal address is the
            // same result (never a reused allocation).
            if !self
                .slot(id)
                .is_some_and(|s| s.publish_with(ev.items, Some((ev.previous, ev.diff))))
            {
                gone.push(id);
            }
        }
        for (observers, e) in failures {
            for o in observers {
                let Some(id) = self.handles.get(&o).copied() else {
                    continue;
                };
                if !self.slot(id).is_some_and(|s| s.fail(query_failed(&e))) {
                    gone.push(id);
                }
            }
        }
        for id in gone {
            self.cancel(id);
        }
        self.retry_failed().await
    }

    /// Runs again the registered queries whose first run failed.
    async fn retry_failed(&mut self) -> Result<(), PeerError> {
        if self.failed.is_empty() {
            return Ok(());
        }
        let ids: Vec<u64> = self.failed.iter().copied().collect();
        let engine = self.engine.take().unwrap_or_default();
        let engine = self.run_registered(engine, ids).await?;
        self.engine = Some(engine);
        Ok(())
    }

    /// Catches up with pending commits; on failure, keeps them and asks
    /// itself to try again shortly.
    async fn catch_up(&mut self, ctx: &mut Ctx<Self>) {
        if let Err(e) = self.wake().await {
            tracing::warn!(error = %e, "live queries not updated; retrying");
            self.schedule_retry(ctx);
        }
    }

    fn schedule_retry(&mut self, ctx: &mut Ctx<Self>) {
        if std::mem::replace(&mut self.retry_scheduled, true) {
            return;
        }
        // An alarm is never dropped for a full mailbox: a lost `Retry`
        // would leave `retry_scheduled` set and no retry ever scheduled
        // again. (One alarm at most is waiting: the flag says so.)
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(RETRY_MS);
        if ctx.tell_at(deadline, ObserverMsg::Retry).is_err() {
            self.retry_scheduled = false;
        }
    }
}

impl Actor for ObserverActor {
    type Msg = ObserverMsg;

    async fn started(&mut self, ctx: &mut Ctx<Self>) {
        if let Err(e) = self.rebuild().await {
            tracing::warn!(error = %e, "live queries not rebuilt; retrying");
            self.schedule_retry(ctx);
        }
    }

    async fn handle(&mut self, msg: ObserverMsg, ctx: &mut Ctx<Self>) {
        match msg {
            ObserverMsg::Observe { text, params, reply } => {
                let out = self.observe(text, params).await;
                reply.send(out);
            }
            ObserverMsg::Cancel(id) => self.cancel(id),
            ObserverMsg::Wake => {}
            ObserverMsg::Retry => self.retry_scheduled = false,
            ObserverMsg::Panic => panic!("fault injected into the observer actor"),
        }
        // Every message catches up, not only `Wake`: when the mailbox was
        // full, the store's `Wake` was dropped for one of these.
        self.catch_up(ctx).await;
    }

    async fn stopped(&mut self) {
        lock(&self.registry).end_all(|| None);
    }
}

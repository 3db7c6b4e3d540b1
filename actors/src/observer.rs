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

use crate::actor::{Actor, Addr, Ctx, Reply};
use crate::error::PeerError;
use crate::store::{StoreActor, StoreMsg};
use rhizome_engine::dql::ast::Statement;
use rhizome_engine::dql::eval::Params;
use rhizome_engine::dql::observe::{self, Diff, ObserverId, Observers};
use rhizome_engine::dql::source::Docs;
use rhizome_engine::dql::Prepared;
use rhizome_engine::store::{Changed, Committed, MAX_LISTED_CHANGES};
use rhizome_engine::value::Value;
use std::collections::BTreeMap;
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
    /// The whole current result.
    pub items: Arc<Vec<Value>>,
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

#[derive(Default)]
struct SlotState {
    /// The result the consumer last took; `None` before the first.
    seen: Option<Arc<Vec<Value>>>,
    pending: Option<QueryEvent>,
    /// The consumer is gone (dropped its handle).
    closed: bool,
    /// The peer stopped; no event will come.
    ended: bool,
    waker: Option<Waker>,
}

/// The one-event mailbox of a live query.
#[derive(Default)]
pub(crate) struct Slot(Mutex<SlotState>);

impl Slot {
    /// Offers a new result; returns `false` when the consumer is gone.
    fn publish(&self, items: Arc<Vec<Value>>) -> bool {
        let mut s = lock(&self.0);
        if s.closed {
            return false;
        }
        let diff = match &s.seen {
            Some(seen) => observe::diff(seen, &items),
            None => Diff {
                inserted: (0..items.len()).collect(),
                ..Diff::default()
            },
        };
        if diff.is_empty() && s.seen.is_some() {
            s.pending = None;
        } else {
            s.pending = Some(QueryEvent { items, diff });
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        }
        true
    }

    fn end(&self) {
        let mut s = lock(&self.0);
        s.ended = true;
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    }

    /// The consumer is gone: no more events (and a waiting consumer task,
    /// as in a callback observer, ends).
    pub(crate) fn close(&self) {
        let mut s = lock(&self.0);
        s.closed = true;
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    }

    pub(crate) fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Option<QueryEvent>> {
        let mut s = lock(&self.0);
        if let Some(ev) = s.pending.take() {
            s.seen = Some(ev.items.clone());
            return Poll::Ready(Some(ev));
        }
        if s.ended || s.closed {
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
    prepared: Prepared,
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
            prepared: Prepared::new(),
        }
    }

    /// Runs `f` on a snapshot lent by the store actor.
    async fn with_docs<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Docs) -> Result<T, PeerError> + Send + 'static,
    ) -> Result<T, PeerError> {
        self.store
            .ask(|reply| StoreMsg::Read(Box::new(move |docs| reply.send(docs.and_then(f)))))
            .await?
    }

    /// Re-runs every registered query into fresh engine state; each
    /// consumer gets its difference from what it last took.
    async fn rebuild(&mut self) -> Result<(), PeerError> {
        // Commits pending now are covered by the fresh runs.
        self.pending.take();
        let regs: Vec<(u64, String, Params, Arc<Slot>)> = lock(&self.registry)
            .queries
            .iter()
            .map(|(id, r)| (*id, r.text.clone(), r.params.clone(), r.slot.clone()))
            .collect();
        let stmts = regs
            .iter()
            .map(|(_, text, _, _)| self.prepared.get(text))
            .collect::<Result<Vec<_>, _>>()?;
        let runs: Vec<(u64, String, Arc<Statement>, Params)> = regs
            .iter()
            .zip(stmts)
            .map(|((id, text, params, _), stmt)| (*id, text.clone(), stmt, params.clone()))
            .collect();
        let (engine, events) = self
            .with_docs(move |docs| {
                let mut engine = Observers::new();
                let mut events = Vec::with_capacity(runs.len());
                for (id, text, stmt, params) in runs {
                    events.push((id, engine.observe(&text, stmt, params, docs)?));
                }
                Ok((engine, events))
            })
            .await?;
        self.handles.clear();
        for ((id, ev), (_, _, _, slot)) in events.into_iter().zip(regs) {
            self.handles.insert(ev.observer, id);
            slot.publish(ev.items);
        }
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
        lock(&self.registry).queries.remove(&id);
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
        let (engine, events) = self
            .with_docs(move |docs| {
                let events = engine.on_commit(&committed, docs);
                Ok((engine, events))
            })
            .await?;
        self.engine = Some(engine);
        let mut gone = Vec::new();
        for ev in events? {
            let Some(id) = self.handles.get(&ev.observer).copied() else {
                continue;
            };
            let slot = lock(&self.registry).queries.get(&id).map(|r| r.slot.clone());
            if !slot.is_some_and(|s| s.publish(ev.items)) {
                gone.push(id);
            }
        }
        for id in gone {
            self.cancel(id);
        }
        Ok(())
    }
}

impl Actor for ObserverActor {
    type Msg = ObserverMsg;

    async fn started(&mut self, _ctx: &mut Ctx<Self>) {
        if let Err(e) = self.rebuild().await {
            tracing::warn!(error = %e, "live queries not rebuilt; retrying at the next commit");
        }
    }

    async fn handle(&mut self, msg: ObserverMsg, _ctx: &mut Ctx<Self>) {
        match msg {
            ObserverMsg::Observe { text, params, reply } => {
                let out = self.observe(text, params).await;
                reply.send(out);
            }
            ObserverMsg::Cancel(id) => self.cancel(id),
            ObserverMsg::Wake => {
                if let Err(e) = self.wake().await {
                    // The engine state may be partial; rebuild next time.
                    self.engine = None;
                    tracing::warn!(error = %e, "live queries not updated; they are rebuilt at the next commit");
                }
            }
            ObserverMsg::Panic => panic!("fault injected into the observer actor"),
        }
    }

    async fn stopped(&mut self) {
        for r in lock(&self.registry).queries.values() {
            r.slot.end();
        }
    }
}

//! The actor toolkit: typed messages, bounded mailboxes, supervision.
//!
//! An actor is a value that owns its state and handles one message at a time
//! from a bounded mailbox, on its own task. Callers hold a typed [`Addr`]:
//! [`Addr::tell`] queues a message (waiting for room: back-pressure is
//! explicit, never an unbounded queue), [`Addr::try_tell`] hands the message
//! back when the mailbox is full, and [`Addr::ask`] sends a request carrying
//! a [`Reply`] and awaits the answer ([`Addr::ask_queued`] queues it and
//! leaves the answer to await later, to keep several in flight;
//! [`Addr::ask_forward`] has it delivered to another actor as a message,
//! so no task waits for it). A handler
//! may take further queued messages with [`Ctx::try_next`] to do their work
//! together, and send itself a message for later with [`Ctx::tell_at`]
//! (an *alarm*: kept by the run loop, not a task, so a full mailbox never
//! drops a wake-up; a due alarm waits behind at most a mailbox's worth of
//! queued mail).
//!
//! Supervision is built in rather than bolted on: [`spawn`] takes a *factory*
//! that builds the actor from its last durable state. A panic in a handler
//! drops the actor (its in-memory state may be half-updated, so it is not
//! trusted), waits a backoff, and builds a fresh one from the factory; the
//! mailbox, and so every `Addr`, survives the restart. The message that
//! panicked is lost and its asker gets [`AskError::NoReply`]. Too many
//! restarts within a window is a *restart storm*: the actor stops and the
//! storm is escalated to the parent through [`Spec::on_escalate`]. Every
//! restart and escalation is logged with `tracing`.
//!
//! Handlers are async so an actor can await other actors, but the runtime is
//! `madsim-tokio`: the same code runs on tokio in an app and inside the
//! deterministic simulator. Nothing here reads a clock except through
//! `tokio::time`, which madsim virtualizes.

use std::any::Any;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// A unit of state with a typed message enum, run on its own task.
pub trait Actor: Sized + Send + 'static {
    /// The closed set of messages the actor takes.
    type Msg: Send + 'static;

    /// Handles one message. A panic here restarts the actor (see the module
    /// doc); it must not hold a store write transaction across an `.await`.
    fn handle(&mut self, msg: Self::Msg, ctx: &mut Ctx<Self>) -> impl Future<Output = ()> + Send;

    /// Runs after every start and restart, before the next message: the
    /// place to catch up with what changed while the actor was down. A
    /// panic here counts as a failure like one in `handle`.
    fn started(&mut self, ctx: &mut Ctx<Self>) -> impl Future<Output = ()> + Send {
        let _ = ctx;
        async {}
    }

    /// Runs once when the actor stops cleanly, after its mailbox is drained:
    /// the place to flush and close what it owns.
    fn stopped(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

// `Ctx` and the actor's run loop hold only weak senders of their own
// mailbox; `WeakAddr` is the public form.

/// What a handler can do besides changing its own state.
pub struct Ctx<A: Actor> {
    /// Weak, so that an actor whose every `Addr` is gone sees its mailbox
    /// close and stops.
    me: mpsc::WeakSender<Envelope<A::Msg>>,
    name: Arc<str>,
    stop: bool,
    /// The mailbox (the run loop takes from it; so may a handler, through
    /// [`Ctx::try_next`]).
    rx: mpsc::Receiver<Envelope<A::Msg>>,
    /// Stop requests taken so far, answered once the actor has stopped.
    acks: Vec<oneshot::Sender<()>>,
    /// Messages the actor sent itself for later ([`Ctx::tell_at`]), by
    /// deadline, then in the order asked.
    alarms: BTreeMap<(Instant, u64), A::Msg>,
    next_alarm: u64,
    /// The sleep standing for the earliest alarm (see [`REPOLL_SLEEP`]).
    sleep: Option<(Instant, Pin<Box<tokio::time::Sleep>>)>,
    /// Messages taken from the mailbox in a row while an alarm was due.
    mail_streak: usize,
}

/// Most alarms one actor holds: far above what a session asks for (a few
/// per message it handles, each gone within its `stall_ms`); past it an
/// alarm is refused rather than letting a runaway actor grow without bound.
pub const MAX_ALARMS: usize = 65_536;

/// Whether the alarm's sleep is polled on every wait, not only once per
/// deadline. On tokio, yes: a re-poll is cheap, and a first poll made when
/// the task's cooperative budget is spent returns `Pending` without arming
/// the timer. In madsim (no budget) a pending sleep wakes the task from its
/// first poll, and every further poll would add another wake-up to the
/// timer heap.
const REPOLL_SLEEP: bool = cfg!(not(madsim));

impl<A: Actor> Ctx<A> {
    /// The actor's own address (to hand out, or to message itself later);
    /// `None` once no one else holds one.
    pub fn addr(&self) -> Option<Addr<A>> {
        Some(Addr {
            tx: self.me.upgrade()?,
            name: self.name.clone(),
        })
    }

    /// The actor's own address, held weakly (it does not keep the actor
    /// alive): where answers to its [`Addr::ask_forward`] requests go.
    pub fn weak_addr(&self) -> WeakAddr<A> {
        WeakAddr {
            tx: self.me.clone(),
            name: self.name.clone(),
        }
    }

    /// The actor's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Hands `msg` to this actor at `deadline`, after the mail queued by
    /// then (see `poll_event`): the run loop keeps the alarms, so a wake-up
    /// costs a map entry, no task, and can neither be dropped by a full
    /// mailbox nor wait for room in it.
    /// Alarms survive restarts like the mailbox; they end with the actor.
    /// `Err(msg)` when [`MAX_ALARMS`] are waiting.
    pub fn tell_at(&mut self, deadline: Instant, msg: A::Msg) -> Result<(), A::Msg> {
        if self.alarms.len() >= MAX_ALARMS {
            return Err(msg);
        }
        self.alarms.insert((deadline, self.next_alarm), msg);
        self.next_alarm += 1;
        Ok(())
    }

    /// Alarms waiting.
    pub fn alarms(&self) -> usize {
        self.alarms.len()
    }

    /// The next thing to handle. A due alarm waits behind the mail already
    /// queued, as a message sent at its deadline would (a session's stall
    /// timer must not overtake the batches that show progress), but for at
    /// most a mailbox's capacity of messages: a busy mailbox never starves
    /// it. Else arms the sleep for the earliest alarm and waits.
    /// `Ready(None)`: the mailbox is closed and empty.
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Envelope<A::Msg>>> {
        let earliest = self.alarms.keys().next().map(|&(at, _)| at);
        let due = earliest.is_some_and(|at| at <= Instant::now());
        if !due || self.mail_streak < self.rx.max_capacity() {
            if let Poll::Ready(envelope) = self.rx.poll_recv(cx) {
                self.mail_streak += usize::from(due);
                return Poll::Ready(envelope);
            }
        }
        if due {
            self.mail_streak = 0;
            return Poll::Ready(self.alarms.pop_first().map(|(_, msg)| Envelope::Msg(msg)));
        }
        let Some(at) = earliest else {
            return Poll::Pending;
        };
        let fresh = self.sleep.as_ref().is_none_or(|(armed, _)| *armed != at);
        if fresh {
            self.sleep = Some((at, Box::pin(tokio::time::sleep_until(at))));
        }
        if let Some((_, sleep)) = self.sleep.as_mut().filter(|_| fresh || REPOLL_SLEEP) {
            if sleep.as_mut().poll(cx).is_ready() {
                cx.waker().wake_by_ref(); // due by now: look again
            }
        }
        Poll::Pending
    }

    /// Stops the actor after this message: queued messages are still
    /// handled, later ones are refused.
    pub fn stop(&mut self) {
        self.stop = true;
    }

    /// Takes the next queued message without waiting: `None` when the
    /// mailbox is empty, or when the next thing queued is a stop request
    /// (taken: the actor stops after this message, as with [`Ctx::stop`]).
    /// For an actor that joins the work of several queued messages (the
    /// merger); messages taken here are the handler's to answer.
    pub fn try_next(&mut self) -> Option<A::Msg> {
        match self.rx.try_recv().ok()? {
            Envelope::Msg(m) => Some(m),
            Envelope::Stop(ack) => {
                self.acks.push(ack);
                self.stop = true;
                None
            }
        }
    }
}

/// The answer slot of an [`Addr::ask`] request.
pub struct Reply<R>(Answer<R>);

enum Answer<R> {
    /// An asker awaits it.
    Awaited(oneshot::Sender<R>),
    /// It goes into another actor's mailbox ([`Addr::ask_forward`]).
    /// Boxed twice: a thin pointer keeps `Reply` two words, and so the
    /// messages that carry one small.
    #[allow(clippy::redundant_allocation)]
    Forwarded(Box<Box<dyn Forward<R>>>),
    /// Sent already.
    Gone,
}

/// Where a forwarded answer goes, type-erased over the receiving actor.
trait Forward<R>: Send + Sync {
    fn deliver(self: Box<Self>, answer: Result<R, AskError>);
    fn is_closed(&self) -> bool;
    fn asked(&self) -> Arc<str>;
}

struct ForwardTo<B: Actor, F> {
    to: WeakAddr<B>,
    wrap: F,
    /// The asked actor, named in `NoReply`.
    asked: Arc<str>,
}

impl<R, B, F> Forward<R> for ForwardTo<B, F>
where
    B: Actor,
    F: FnOnce(Result<R, AskError>) -> B::Msg + Send + Sync,
{
    fn deliver(self: Box<Self>, answer: Result<R, AskError>) {
        let msg = (self.wrap)(answer);
        let Some(to) = self.to.upgrade() else { return };
        // The answering actor must not wait on the asker's mailbox (two
        // actors waiting on each other's full mailboxes would deadlock):
        // when it is full, a task of its own waits for room. (Outside a
        // runtime, as when a mailbox is freed at teardown, there is no one
        // left to tell.)
        if let Err(TellError::Full(msg)) = to.try_tell(msg) {
            if tokio::runtime::Handle::try_current().is_ok() {
                tokio::spawn(async move {
                    let _ = to.tell(msg).await;
                });
            }
        }
    }

    fn is_closed(&self) -> bool {
        self.to.upgrade().is_none()
    }

    fn asked(&self) -> Arc<str> {
        self.asked.clone()
    }
}

impl<R> Reply<R> {
    /// Answers the request. An asker that gave up is not an error.
    pub fn send(mut self, value: R) {
        match std::mem::replace(&mut self.0, Answer::Gone) {
            Answer::Awaited(tx) => {
                let _ = tx.send(value);
            }
            Answer::Forwarded(f) => f.deliver(Ok(value)),
            Answer::Gone => {}
        }
    }

    /// Whether the asker has given up (the answer would be thrown away).
    pub fn is_closed(&self) -> bool {
        match &self.0 {
            Answer::Awaited(tx) => tx.is_closed(),
            Answer::Forwarded(f) => f.is_closed(),
            Answer::Gone => true,
        }
    }
}

impl<R> Drop for Reply<R> {
    /// Dropped unanswered: a forwarded request still gets its answer,
    /// `NoReply` (an awaited one sees its channel close).
    fn drop(&mut self) {
        if let Answer::Forwarded(f) = std::mem::replace(&mut self.0, Answer::Gone) {
            let actor = f.asked();
            f.deliver(Err(AskError::NoReply { actor }));
        }
    }
}

impl<R> fmt::Debug for Reply<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Reply")
    }
}

/// Why [`Addr::tell`] or [`Addr::try_tell`] did not queue a message; the
/// message is handed back.
#[non_exhaustive]
pub enum TellError<M> {
    /// The mailbox is full (only from `try_tell`): slow down or drop it.
    Full(M),
    /// The actor has stopped.
    Stopped(M),
}

impl<M> TellError<M> {
    /// The message that was not queued.
    pub fn into_inner(self) -> M {
        match self {
            TellError::Full(m) | TellError::Stopped(m) => m,
        }
    }
}

impl<M> fmt::Display for TellError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TellError::Full(_) => f.write_str("the actor's mailbox is full"),
            TellError::Stopped(_) => f.write_str("the actor has stopped"),
        }
    }
}

impl<M> fmt::Debug for TellError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TellError::Full(_) => f.write_str("Full(..)"),
            TellError::Stopped(_) => f.write_str("Stopped(..)"),
        }
    }
}

impl<M> std::error::Error for TellError<M> {}

/// Why an [`Addr::ask`] got no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AskError {
    /// The actor has stopped; the request was not queued.
    Stopped {
        /// The actor's name.
        actor: Arc<str>,
    },
    /// The request was queued but dropped unanswered: the actor panicked on
    /// it (and restarted) or stopped before answering.
    NoReply {
        /// The actor's name.
        actor: Arc<str>,
    },
}

impl fmt::Display for AskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AskError::Stopped { actor } => write!(f, "actor {actor} has stopped"),
            AskError::NoReply { actor } => write!(f, "actor {actor} dropped the request unanswered"),
        }
    }
}

impl std::error::Error for AskError {}

enum Envelope<M> {
    Msg(M),
    Stop(oneshot::Sender<()>),
}

/// A typed handle to an actor; cheap to clone.
pub struct Addr<A: Actor> {
    tx: mpsc::Sender<Envelope<A::Msg>>,
    name: Arc<str>,
}

impl<A: Actor> Clone for Addr<A> {
    fn clone(&self) -> Self {
        Addr {
            tx: self.tx.clone(),
            name: self.name.clone(),
        }
    }
}

impl<A: Actor> fmt::Debug for Addr<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Addr({})", self.name)
    }
}

impl<A: Actor> Addr<A> {
    /// The actor's name (as given in its [`Spec`]).
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Queues a message, waiting while the mailbox is full.
    pub async fn tell(&self, msg: A::Msg) -> Result<(), TellError<A::Msg>> {
        self.tx.send(Envelope::Msg(msg)).await.map_err(|e| match e.0 {
            Envelope::Msg(m) => TellError::Stopped(m),
            Envelope::Stop(_) => unreachable!("a message was sent"),
        })
    }

    /// Queues a message if the mailbox has room, else hands it back.
    pub fn try_tell(&self, msg: A::Msg) -> Result<(), TellError<A::Msg>> {
        self.tx.try_send(Envelope::Msg(msg)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(Envelope::Msg(m)) => TellError::Full(m),
            mpsc::error::TrySendError::Closed(Envelope::Msg(m)) => TellError::Stopped(m),
            _ => unreachable!("a message was sent"),
        })
    }

    /// Sends the request `make(reply)` and awaits its answer.
    pub async fn ask<R>(&self, make: impl FnOnce(Reply<R>) -> A::Msg) -> Result<R, AskError> {
        let (tx, rx) = oneshot::channel();
        if self.tell(make(Reply(Answer::Awaited(tx)))).await.is_err() {
            return Err(AskError::Stopped {
                actor: self.name.clone(),
            });
        }
        rx.await.map_err(|_| AskError::NoReply {
            actor: self.name.clone(),
        })
    }

    /// Queues the request `make(reply)` (waiting while the mailbox is
    /// full) and returns without awaiting the answer: the caller keeps
    /// several requests in flight, each answered through its [`Pending`].
    pub async fn ask_queued<R>(&self, make: impl FnOnce(Reply<R>) -> A::Msg) -> Result<Pending<R>, AskError> {
        let (tx, rx) = oneshot::channel();
        if self.tell(make(Reply(Answer::Awaited(tx)))).await.is_err() {
            return Err(AskError::Stopped {
                actor: self.name.clone(),
            });
        }
        Ok(Pending {
            rx,
            actor: self.name.clone(),
        })
    }

    /// Queues the request `make(reply)` (waiting while the mailbox is
    /// full) and returns: the answer comes to the actor `to` as the
    /// message `wrap(answer)`, with no task waiting for it. `NoReply` if
    /// the request is dropped unanswered, or was refused because this
    /// actor has stopped (then before this returns). Nothing comes if
    /// `to` is gone by then.
    pub async fn ask_forward<R, B: Actor>(
        &self,
        make: impl FnOnce(Reply<R>) -> A::Msg,
        to: WeakAddr<B>,
        wrap: impl FnOnce(Result<R, AskError>) -> B::Msg + Send + Sync + 'static,
    ) {
        let forward = ForwardTo {
            to,
            wrap,
            asked: self.name.clone(),
        };
        // Refused, the request (and its reply) is dropped: `NoReply`.
        let _ = self
            .tell(make(Reply(Answer::Forwarded(Box::new(Box::new(forward))))))
            .await;
    }

    /// Stops the actor cleanly: messages already queued are handled, then
    /// [`Actor::stopped`] runs. Returns when it has finished (at once if the
    /// actor had already stopped).
    pub async fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Envelope::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Whether the actor has stopped (its mailbox is closed).
    pub fn is_stopped(&self) -> bool {
        self.tx.is_closed()
    }

    /// Waits until the actor has stopped (or is stopping: its mailbox
    /// takes no more messages).
    pub async fn stopped(&self) {
        self.tx.closed().await
    }

    /// A handle that does not keep the actor alive (for back-references
    /// that would otherwise form a cycle).
    pub fn downgrade(&self) -> WeakAddr<A> {
        WeakAddr {
            tx: self.tx.downgrade(),
            name: self.name.clone(),
        }
    }
}

/// The answer to come of a request queued with [`Addr::ask_queued`].
pub struct Pending<R> {
    rx: oneshot::Receiver<R>,
    actor: Arc<str>,
}

impl<R> Pending<R> {
    /// Awaits the answer.
    pub async fn recv(self) -> Result<R, AskError> {
        self.rx.await.map_err(|_| AskError::NoReply { actor: self.actor })
    }
}

impl<R> fmt::Debug for Pending<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pending({})", self.actor)
    }
}

/// An [`Addr`] that does not keep its actor alive: an actor stops when its
/// last `Addr` is dropped, whatever `WeakAddr`s remain.
pub struct WeakAddr<A: Actor> {
    tx: mpsc::WeakSender<Envelope<A::Msg>>,
    name: Arc<str>,
}

impl<A: Actor> Clone for WeakAddr<A> {
    fn clone(&self) -> Self {
        WeakAddr {
            tx: self.tx.clone(),
            name: self.name.clone(),
        }
    }
}

impl<A: Actor> WeakAddr<A> {
    /// The address, if the actor is still reachable.
    pub fn upgrade(&self) -> Option<Addr<A>> {
        Some(Addr {
            tx: self.tx.upgrade()?,
            name: self.name.clone(),
        })
    }
}

/// Reported to the parent when a child's restarts exceed its budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Escalation {
    /// The child's name.
    pub actor: Arc<str>,
    /// Restarts within the window when it gave up.
    pub restarts: u32,
    /// What the last failure was (panic message or start error).
    pub reason: String,
}

/// How an actor is run and supervised.
pub struct Spec {
    /// Name used in logs and errors.
    pub name: Arc<str>,
    /// Mailbox capacity in messages (at least 1).
    pub mailbox: usize,
    /// Most restarts within `storm_window_ms` before escalating.
    pub max_restarts: u32,
    /// The window in which restarts are counted.
    pub storm_window_ms: u64,
    /// Backoff before the first restart; doubles per restart in the window.
    pub backoff_min_ms: u64,
    /// Cap of the backoff.
    pub backoff_max_ms: u64,
    /// Called once if the actor gives up after a restart storm.
    pub on_escalate: Option<Box<dyn FnOnce(Escalation) + Send>>,
}

impl Spec {
    /// Defaults: a mailbox of 64, at most 5 restarts in 10 s, backoff from
    /// 10 ms to 1 s, no parent.
    pub fn new(name: &str) -> Spec {
        Spec {
            name: name.into(),
            mailbox: 64,
            max_restarts: 5,
            storm_window_ms: 10_000,
            backoff_min_ms: 10,
            backoff_max_ms: 1_000,
            on_escalate: None,
        }
    }

    /// Sets the mailbox capacity.
    pub fn mailbox(mut self, capacity: usize) -> Spec {
        self.mailbox = capacity;
        self
    }

    /// Sets the restart budget.
    pub fn restarts(mut self, max_restarts: u32, storm_window_ms: u64) -> Spec {
        self.max_restarts = max_restarts;
        self.storm_window_ms = storm_window_ms;
        self
    }

    /// Sets the backoff range.
    pub fn backoff(mut self, min_ms: u64, max_ms: u64) -> Spec {
        self.backoff_min_ms = min_ms;
        self.backoff_max_ms = max_ms.max(min_ms);
        self
    }

    /// Sets the parent's escalation callback.
    pub fn on_escalate(mut self, f: impl FnOnce(Escalation) + Send + 'static) -> Spec {
        self.on_escalate = Some(Box::new(f));
        self
    }
}

/// Builds the actor: `restart` is 0 at first start, then counts restarts.
pub trait Factory<A>: FnMut(u32) -> Result<A, String> + Send + 'static {}
impl<A, F: FnMut(u32) -> Result<A, String> + Send + 'static> Factory<A> for F {}

/// Starts an actor on its own task. The first build happens here, so a
/// failure to start is returned to the caller rather than escalated.
pub fn spawn<A: Actor>(spec: Spec, mut factory: impl Factory<A>) -> Result<Addr<A>, String> {
    if spec.mailbox == 0 {
        return Err(format!("actor {}: a mailbox holds at least one message", spec.name));
    }
    let actor = factory(0)?;
    let (tx, rx) = mpsc::channel(spec.mailbox);
    let addr = Addr {
        tx,
        name: spec.name.clone(),
    };
    let ctx = Ctx {
        me: addr.tx.downgrade(),
        name: addr.name.clone(),
        stop: false,
        rx,
        acks: Vec::new(),
        alarms: BTreeMap::new(),
        next_alarm: 0,
        sleep: None,
        mail_streak: 0,
    };
    let sup = Supervisor {
        spec,
        factory: Box::new(factory),
        restarts: VecDeque::new(),
    };
    tokio::spawn(run(Box::new(actor), ctx, sup));
    Ok(addr)
}

struct Supervisor<A> {
    spec: Spec,
    factory: Box<dyn FnMut(u32) -> Result<A, String> + Send>,
    /// When the restarts within the current window happened.
    restarts: VecDeque<Instant>,
}

impl<A: Actor> Supervisor<A> {
    /// A fresh actor after a failure, or `None` when the budget is spent
    /// (the storm has then been escalated).
    async fn restart(&mut self, mut reason: String) -> Option<A> {
        loop {
            let now = Instant::now();
            let window = Duration::from_millis(self.spec.storm_window_ms);
            while self.restarts.front().is_some_and(|t| now.duration_since(*t) > window) {
                self.restarts.pop_front();
            }
            let count = self.restarts.len() as u32;
            if count >= self.spec.max_restarts {
                self.escalate(count, reason);
                return None;
            }
            let backoff_ms = self
                .spec
                .backoff_min_ms
                .saturating_mul(1 << count.min(20))
                .min(self.spec.backoff_max_ms);
            tracing::warn!(actor = %self.spec.name, restart = count + 1, backoff_ms, %reason, "restarting actor");
            tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
            self.restarts.push_back(Instant::now());
            match (self.factory)(count + 1) {
                Ok(actor) => return Some(actor),
                Err(e) => reason = format!("restart failed: {e}"),
            }
        }
    }

    fn escalate(&mut self, restarts: u32, reason: String) {
        tracing::error!(actor = %self.spec.name, restarts, %reason, "restart storm: giving up and escalating");
        if let Some(f) = self.spec.on_escalate.take() {
            f(Escalation {
                actor: self.spec.name.clone(),
                restarts,
                reason,
            });
        }
    }
}

/// The text of a panic payload.
pub(crate) fn panic_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".to_string()
    }
}

/// Runs a handler's future, turning a panic into an error.
async fn caught(fut: impl Future<Output = ()>) -> Result<(), String> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
        Ok(Poll::Ready(())) => Poll::Ready(Ok(())),
        Ok(Poll::Pending) => Poll::Pending,
        Err(payload) => Poll::Ready(Err(panic_text(payload.as_ref()))),
    })
    .await
}

/// A started actor: runs `started` (restarting on failure), or `None` when
/// the restart budget is spent.
async fn start<A: Actor>(mut actor: Box<A>, ctx: &mut Ctx<A>, sup: &mut Supervisor<A>) -> Option<Box<A>> {
    loop {
        match caught(Box::pin(actor.started(ctx))).await {
            Ok(()) => return Some(actor),
            Err(reason) => {
                drop(actor);
                actor = Box::new(sup.restart(reason).await?);
            }
        }
    }
}

/// The actor's task. Its state is kept small for the many actors that
/// wait most of the time (a simulated mesh holds tens of thousands): the
/// actor lives boxed (held inline, the state machine kept room for it at
/// several await points: a session's task took 6.3 KB for a 1.1 KB
/// actor), and each handler's, start's and restart's future is boxed for
/// as long as it runs.
async fn run<A: Actor>(actor: Box<A>, mut ctx: Ctx<A>, mut sup: Supervisor<A>) {
    let mut actor = Box::pin(start(actor, &mut ctx, &mut sup)).await;
    while let Some(current) = actor.as_mut() {
        let Some(envelope) = std::future::poll_fn(|cx| ctx.poll_event(cx)).await else {
            break;
        };
        match envelope {
            Envelope::Msg(msg) => {
                if let Err(reason) = caught(Box::pin(current.handle(msg, &mut ctx))).await {
                    // The failed actor's state is not trusted: drop it
                    // before building the next from durable state.
                    drop(actor.take());
                    actor = match Box::pin(sup.restart(reason)).await {
                        Some(fresh) => Box::pin(start(Box::new(fresh), &mut ctx, &mut sup)).await,
                        None => None,
                    };
                }
            }
            Envelope::Stop(ack) => {
                ctx.acks.push(ack);
                ctx.stop = true;
            }
        }
        if ctx.stop {
            // Refuse new messages; the loop drains what is queued.
            ctx.rx.close();
        }
    }
    if let Some(mut a) = actor {
        Box::pin(a.stopped()).await;
    } else {
        ctx.rx.close();
    }
    // Requests still queued (after an escalation) are dropped, so their
    // askers get `NoReply` instead of waiting forever.
    while let Ok(envelope) = ctx.rx.try_recv() {
        if let Envelope::Stop(ack) = envelope {
            ctx.acks.push(ack);
        }
    }
    for ack in std::mem::take(&mut ctx.acks) {
        let _ = ack.send(());
    }
    tracing::debug!(actor = %sup.spec.name, "actor stopped");
}

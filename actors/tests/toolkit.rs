//! The actor toolkit itself: ordering per sender, back-pressure, restart
//! after a panic, escalation of a restart storm, and clean shutdown. These
//! run on tokio and, built with `--cfg madsim`, inside the simulator.

use rhizome_actors::actor::{self, Actor, AskError, Ctx, Reply, Spec, TellError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A log of numbers; `durable` is what survives a restart.
struct Recorder {
    durable: Arc<Mutex<Vec<u64>>>,
    volatile: u64,
}

enum Msg {
    Push(u64),
    /// Says it has started, then blocks the actor until the sender fires
    /// (to fill its mailbox).
    Hold(tokio::sync::oneshot::Sender<()>, tokio::sync::oneshot::Receiver<()>),
    Panic,
    /// Panics while holding a request's reply.
    PanicAsked(Reply<()>),
    Count(Reply<(usize, u64)>),
    /// Pushes the number to itself after the delay in ms (an alarm).
    Later(u64, u64),
}

impl Actor for Recorder {
    type Msg = Msg;

    async fn handle(&mut self, msg: Msg, ctx: &mut Ctx<Self>) {
        match msg {
            Msg::Push(n) => {
                self.volatile += 1;
                self.durable.lock().unwrap().push(n);
            }
            Msg::Hold(started, rx) => {
                let _ = started.send(());
                let _ = rx.await;
            }
            Msg::Panic => panic!("injected"),
            Msg::PanicAsked(_reply) => panic!("injected while asked"),
            Msg::Count(r) => r.send((self.durable.lock().unwrap().len(), self.volatile)),
            Msg::Later(delay_ms, n) => {
                let at = tokio::time::Instant::now() + Duration::from_millis(delay_ms);
                assert!(ctx.tell_at(at, Msg::Push(n)).is_ok(), "far below the bound");
            }
        }
    }

    async fn stopped(&mut self) {
        self.durable.lock().unwrap().push(u64::MAX);
    }
}

fn recorder(spec: Spec) -> (actor::Addr<Recorder>, Arc<Mutex<Vec<u64>>>) {
    let durable = Arc::new(Mutex::new(Vec::new()));
    let d = durable.clone();
    let addr = actor::spawn(spec, move |_| {
        Ok(Recorder {
            durable: d.clone(),
            volatile: 0,
        })
    })
    .expect("start");
    (addr, durable)
}

#[tokio::test]
async fn messages_of_each_sender_arrive_in_order() {
    let (addr, log) = recorder(Spec::new("order").mailbox(4));
    let mut senders = Vec::new();
    for s in 0..3u64 {
        let a = addr.clone();
        senders.push(tokio::spawn(async move {
            for i in 0..50u64 {
                a.tell(Msg::Push(s * 1000 + i)).await.expect("tell");
            }
        }));
    }
    for s in senders {
        s.await.expect("sender");
    }
    addr.stop().await;
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 151, "150 messages and the stop marker");
    for s in 0..3u64 {
        let mine: Vec<u64> = log
            .iter()
            .copied()
            .filter(|n| n / 1000 == s && *n != u64::MAX)
            .collect();
        assert_eq!(mine, (0..50).map(|i| s * 1000 + i).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn a_full_mailbox_pushes_back() {
    let (addr, log) = recorder(Spec::new("pressure").mailbox(2));
    let (release, hold) = tokio::sync::oneshot::channel();
    let (started_tx, started) = tokio::sync::oneshot::channel();
    addr.tell(Msg::Hold(started_tx, hold)).await.expect("hold");
    started.await.expect("the actor is holding");
    let mut queued = 0;
    let refused = loop {
        match addr.try_tell(Msg::Push(queued)) {
            Ok(()) => queued += 1,
            Err(e) => break e,
        }
        assert!(queued <= 2, "the mailbox holds at most 2");
    };
    assert_eq!(queued, 2);
    assert!(matches!(refused, TellError::Full(Msg::Push(_))));
    // `tell` waits for room instead of failing.
    let a = addr.clone();
    let waiting = tokio::spawn(async move { a.tell(Msg::Push(99)).await.is_ok() });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!waiting.is_finished(), "tell waits while the mailbox is full");
    release.send(()).expect("release");
    assert!(waiting.await.expect("join"));
    let (n, _) = addr.ask(Msg::Count).await.expect("count");
    assert_eq!(n as u64, queued + 1);
    addr.stop().await;
    assert_eq!(log.lock().unwrap().last(), Some(&u64::MAX));
}

/// Alarms come in deadline order (equal deadlines in the order asked),
/// behind the mail queued by then (as messages sent at their deadlines
/// would), and a full mailbox neither drops nor holds them back.
#[tokio::test]
async fn alarms_arrive_in_deadline_order_behind_queued_mail() {
    let (addr, log) = recorder(Spec::new("alarms").mailbox(2));
    for (delay_ms, n) in [(30, 1), (10, 2), (10, 3)] {
        addr.tell(Msg::Later(delay_ms, n)).await.expect("later");
    }
    let (release, hold) = tokio::sync::oneshot::channel();
    let (started_tx, started) = tokio::sync::oneshot::channel();
    addr.tell(Msg::Hold(started_tx, hold)).await.expect("hold");
    started.await.expect("the actor is holding");
    for n in [4, 5] {
        addr.try_tell(Msg::Push(n)).map_err(|_| ()).expect("room for two");
    }
    tokio::time::sleep(Duration::from_millis(50)).await; // every alarm is due
    release.send(()).expect("release");
    let (n, _) = addr.ask(Msg::Count).await.expect("count");
    assert_eq!(n, 5);
    assert_eq!(*log.lock().unwrap(), vec![4, 5, 2, 3, 1]);
    // One not yet due waits for its time; the actor keeps taking mail.
    addr.tell(Msg::Later(20, 6)).await.expect("later");
    addr.tell(Msg::Push(7)).await.expect("push");
    assert_eq!(addr.ask(Msg::Count).await.expect("count").0, 6);
    tokio::time::sleep(Duration::from_millis(40)).await;
    assert_eq!(addr.ask(Msg::Count).await.expect("count").0, 7);
    assert_eq!(log.lock().unwrap()[5..], [7, 6]);
    addr.stop().await;
}

#[tokio::test]
async fn a_panicking_actor_restarts_from_durable_state() {
    let (addr, _log) = recorder(Spec::new("phoenix").backoff(1, 5));
    addr.tell(Msg::Push(1)).await.expect("tell");
    addr.tell(Msg::Push(2)).await.expect("tell");
    assert_eq!(addr.ask(Msg::Count).await, Ok((2, 2)));
    // The panicking request is answered with NoReply, not a hang.
    let lost = addr.ask(Msg::PanicAsked).await;
    assert!(matches!(lost, Err(AskError::NoReply { .. })), "{lost:?}");
    // Same address, fresh actor: durable state kept, volatile state reset.
    addr.tell(Msg::Push(3)).await.expect("tell after restart");
    assert_eq!(addr.ask(Msg::Count).await, Ok((3, 1)));
    addr.stop().await;
}

#[tokio::test]
async fn a_restart_storm_escalates_and_stops_the_actor() {
    let escalated = Arc::new(Mutex::new(None));
    let e = escalated.clone();
    let spec = Spec::new("storm")
        .restarts(3, 60_000)
        .backoff(1, 2)
        .on_escalate(move |esc| *e.lock().unwrap() = Some(esc));
    let (addr, _log) = recorder(spec);
    for _ in 0..4 {
        let _ = addr.tell(Msg::Panic).await;
    }
    let asked = addr.ask(Msg::Count).await;
    assert!(
        matches!(asked, Err(AskError::Stopped { .. } | AskError::NoReply { .. })),
        "{asked:?}"
    );
    let esc = escalated.lock().unwrap().clone().expect("escalated");
    assert_eq!(&*esc.actor, "storm");
    assert_eq!(esc.restarts, 3);
    assert!(esc.reason.contains("injected"));
    assert!(addr.is_stopped());
}

#[tokio::test]
async fn stop_drains_the_mailbox_then_runs_stopped() {
    let (addr, log) = recorder(Spec::new("drain").mailbox(16));
    let (release, hold) = tokio::sync::oneshot::channel();
    let (started_tx, _started) = tokio::sync::oneshot::channel();
    addr.tell(Msg::Hold(started_tx, hold)).await.expect("hold");
    for i in 0..10 {
        addr.tell(Msg::Push(i)).await.expect("tell");
    }
    let a = addr.clone();
    let stopping = tokio::spawn(async move { a.stop().await });
    tokio::time::sleep(Duration::from_millis(5)).await;
    release.send(()).expect("release");
    stopping.await.expect("stop");
    let log = log.lock().unwrap().clone();
    let mut expected: Vec<u64> = (0..10).collect();
    expected.push(u64::MAX);
    assert_eq!(log, expected, "every queued message handled, then stopped()");
    assert!(matches!(addr.tell(Msg::Push(1)).await, Err(TellError::Stopped(_))));
    assert!(matches!(addr.ask(Msg::Count).await, Err(AskError::Stopped { .. })));
}

/// A forwarded answer lands in the other actor's mailbox as a message;
/// a request dropped unanswered (a panic) or refused (stopped) still
/// brings one, `NoReply`.
#[tokio::test]
async fn a_forwarded_answer_arrives_as_a_message() {
    let (asked, _) = recorder(Spec::new("asked").backoff(1, 1));
    let (to, log) = recorder(Spec::new("to"));
    let wrap = |answer: Result<(usize, u64), AskError>| match answer {
        Ok((n, _)) => Msg::Push(100 + n as u64),
        Err(AskError::NoReply { .. }) => Msg::Push(999),
        Err(_) => Msg::Push(0),
    };
    asked.tell(Msg::Push(1)).await.expect("push");
    asked.ask_forward(Msg::Count, to.downgrade(), wrap).await;
    let wrap_unit = |answer: Result<(), AskError>| Msg::Push(if answer.is_err() { 999 } else { 0 });
    asked.ask_forward(Msg::PanicAsked, to.downgrade(), wrap_unit).await;
    asked.stop().await;
    asked.ask_forward(Msg::Count, to.downgrade(), wrap).await;
    for _ in 0..100 {
        if log.lock().unwrap().len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(*log.lock().unwrap(), vec![101, 999, 999]);
    to.stop().await;
}

#[tokio::test]
async fn an_actor_whose_addresses_are_all_gone_stops() {
    let (addr, log) = recorder(Spec::new("orphan"));
    addr.tell(Msg::Push(7)).await.expect("tell");
    drop(addr);
    for _ in 0..100 {
        if log.lock().unwrap().last() == Some(&u64::MAX) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("the actor did not stop: {:?}", log.lock().unwrap());
}

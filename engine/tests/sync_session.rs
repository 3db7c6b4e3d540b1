//! The sans-IO sync session: two sessions over two stores, driven by a test
//! loop that carries frames both ways, converge; version mismatches and
//! malformed frames end the session with a reason and change nothing;
//! batches of an abandoned round are ignored.

use rhizome_engine::hlc::PeerId;
use rhizome_engine::mem::MemKv;
use rhizome_engine::store::{OnConflict, Store, StoreConfig};
use rhizome_engine::sync::session::{Output, Session, SessionConfig, Timer};
use rhizome_engine::sync::wire::{self, Hello, Message, Refusal};
use rhizome_engine::value::Value;
use rhizome_engine::vv::VersionVector;
use std::collections::VecDeque;

const NOW_MS: u64 = 1_700_000_000_000;

struct Side {
    store: Store<MemKv>,
    session: Session,
    inbox: VecDeque<Vec<u8>>,
    established: bool,
    closed: Option<Option<Refusal>>,
}

fn side(peer: u64) -> Side {
    let store = Store::open(MemKv::new(), StoreConfig::default(), PeerId(peer), peer).expect("store");
    let config = SessionConfig {
        me: PeerId(peer),
        subscriptions: Vec::new(),
        max_frame_bytes: wire::DEFAULT_MAX_FRAME_BYTES,
        retry_ms: 10,
    };
    Side {
        store,
        session: Session::new(config, 0),
        inbox: VecDeque::new(),
        established: false,
        closed: None,
    }
}

fn vv(s: &Store<MemKv>) -> VersionVector {
    s.read().expect("read").version_vector().expect("vv")
}

fn insert(s: &Store<MemKv>, json: &str) {
    let mut w = s.write(NOW_MS).expect("write");
    w.insert("tasks", &Value::parse(json).expect("json"), OnConflict::Fail)
        .expect("insert");
    w.commit().expect("commit");
}

fn all(s: &Store<MemKv>) -> Vec<String> {
    let mut out = Vec::new();
    s.read()
        .expect("read")
        .scan("tasks", &mut |d| {
            out.push(d.expect("doc").to_string());
            true
        })
        .expect("scan");
    // Storage order differs between replicas; contents must not.
    out.sort();
    out
}

/// Drains one side's outputs: frames go to the other side's inbox, store
/// work is done at once. Returns whether anything happened.
fn drain(me: &mut Side, other_inbox: &mut VecDeque<Vec<u8>>) -> bool {
    let mut busy = false;
    while let Some(out) = me.session.poll_output() {
        busy = true;
        match out {
            Output::Send(frame) => other_inbox.push_back(frame),
            Output::Established { .. } => me.established = true,
            Output::Serve { round, since } => {
                let mut resume = None;
                loop {
                    let batch = me
                        .store
                        .read()
                        .expect("read")
                        .changes_since(&since, resume.as_ref(), 2)
                        .expect("changes");
                    let last = batch.resume.is_none();
                    me.session
                        .send_changes(round, batch.changes, batch.upto, last)
                        .expect("fits");
                    resume = batch.resume;
                    if last {
                        break;
                    }
                }
            }
            Output::Apply { round, changes, claim } => {
                let mut w = me.store.write(NOW_MS).expect("write");
                let outcome = w.apply_batch(&changes).expect("apply");
                let ok = outcome.refused.is_empty();
                if let (Some(claim), true) = (&claim, ok) {
                    w.mark_synced(claim);
                }
                w.commit().expect("commit");
                let local = vv(&me.store);
                me.session.handle_applied(round, claim.is_some(), ok, &local);
            }
            Output::SetTimer { timer, .. } => {
                let local = vv(&me.store);
                me.session.handle_timer(timer, &local);
            }
            Output::Closed { refusal } => me.closed = Some(refusal),
        }
    }
    busy
}

/// Runs both sides until nothing moves (bounded).
fn run(a: &mut Side, b: &mut Side) {
    for _ in 0..10_000 {
        let mut busy = drain(a, &mut b.inbox) | drain(b, &mut a.inbox);
        for (me, _) in [(&mut *a, ()), (&mut *b, ())] {
            while let Some(frame) = me.inbox.pop_front() {
                busy = true;
                let local = vv(&me.store);
                me.session.handle_frame(&frame, &local);
            }
        }
        if !busy {
            return;
        }
    }
    panic!("the sessions did not quiesce");
}

#[test]
fn two_sessions_converge_and_keep_syncing_new_commits() {
    let (mut a, mut b) = (side(1), side(2));
    for i in 0..7 {
        insert(&a.store, &format!(r#"{{"_id": "a{i}", "n": {i}}}"#));
    }
    insert(&b.store, r#"{"_id": "b", "n": 100}"#);
    a.session.handle_connected();
    b.session.handle_connected();
    run(&mut a, &mut b);
    assert!(a.established && b.established);
    assert_eq!(all(&a.store), all(&b.store));
    assert_eq!(all(&a.store).len(), 8);
    assert_eq!(vv(&a.store), vv(&b.store));

    // A later commit is offered with a poke and pulled.
    insert(&b.store, r#"{"_id": "late", "n": 1}"#);
    b.session.handle_local_commit();
    run(&mut a, &mut b);
    assert_eq!(all(&a.store), all(&b.store));
    assert_eq!(all(&a.store).len(), 9);
}

#[test]
fn no_common_version_is_refused_with_the_reason() {
    let mut a = side(1);
    a.session.handle_connected();
    let _hello = a.session.poll_output();
    let future = Hello {
        versions: (7, 9),
        peer: PeerId(2),
        subscriptions: Vec::new(),
        max_frame_bytes: wire::DEFAULT_MAX_FRAME_BYTES,
    };
    let frame = wire::encode(&Message::Hello(future), 7);
    a.session.handle_frame(&frame, &VersionVector::new());
    let Some(Output::Send(refusal)) = a.session.poll_output() else {
        panic!("a refusal is sent")
    };
    let (_, msg) = wire::decode(&refusal, 1 << 20).expect("decodes");
    assert_eq!(
        msg,
        Message::Refuse(Refusal::UnsupportedVersion {
            ours: (1, 1),
            theirs: (7, 9)
        })
    );
    assert!(matches!(
        a.session.poll_output(),
        Some(Output::Closed { refusal: Some(_) })
    ));
    assert!(a.session.is_closed());
}

#[test]
fn malformed_or_misplaced_messages_close_the_session_and_change_nothing() {
    let cases: Vec<Vec<u8>> = vec![
        b"garbage".to_vec(),
        wire::encode(&Message::Poke, 1), // before the handshake
        {
            let mut f = wire::encode(&Message::Poke, 1);
            let n = f.len();
            f[n - 1] ^= 1; // damaged
            f
        },
    ];
    for frame in cases {
        let mut a = side(1);
        insert(&a.store, r#"{"_id": "x"}"#);
        let before = all(&a.store);
        a.session.handle_connected();
        a.session.handle_frame(&frame, &VersionVector::new());
        let mut closed = None;
        while let Some(out) = a.session.poll_output() {
            if let Output::Closed { refusal } = out {
                closed = refusal;
            }
        }
        assert!(matches!(closed, Some(Refusal::ProtocolViolation { .. })), "{closed:?}");
        assert_eq!(all(&a.store), before);
        // Nothing more is taken once closed.
        a.session
            .handle_frame(&wire::encode(&Message::Poke, 1), &VersionVector::new());
        assert_eq!(a.session.poll_output(), None);
    }
}

#[test]
fn batches_of_an_abandoned_round_are_ignored() {
    let (mut a, mut b) = (side(1), side(2));
    a.session.handle_connected();
    b.session.handle_connected();
    // Handshake only: carry the hellos, then stop before requests are served.
    drain(&mut a, &mut b.inbox);
    drain(&mut b, &mut a.inbox);
    let hello_b = a.inbox.pop_front().expect("hello");
    a.session.handle_frame(&hello_b, &VersionVector::new());
    let outs: Vec<Output> = std::iter::from_fn(|| a.session.poll_output()).collect();
    assert!(matches!(outs[0], Output::Established { .. }));
    let Output::Send(request) = &outs[1] else {
        panic!("a request")
    };
    let Ok((_, Message::Request { round, .. })) = wire::decode(request, 1 << 20) else {
        panic!("a request")
    };
    // A failed apply of the round abandons it; its later batches are ignored.
    a.session.handle_applied(round, false, false, &VersionVector::new());
    assert_eq!(
        a.session.poll_output(),
        Some(Output::SetTimer {
            timer: Timer::Retry,
            after_ms: 10
        })
    );
    let stale = wire::encode(
        &Message::Changes {
            round,
            changes: Vec::new(),
            upto: VersionVector::new(),
            last: true,
        },
        1,
    );
    a.session.handle_frame(&stale, &VersionVector::new());
    assert_eq!(a.session.poll_output(), None, "a stale round's batch does nothing");
    // The retry asks again with a new round.
    a.session.handle_timer(Timer::Retry, &VersionVector::new());
    let Some(Output::Send(again)) = a.session.poll_output() else {
        panic!("a new request")
    };
    let Ok((_, Message::Request { round: next, .. })) = wire::decode(&again, 1 << 20) else {
        panic!("a request")
    };
    assert!(next > round);
}

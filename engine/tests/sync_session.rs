//! The sans-IO sync session: two sessions over two stores, driven in
//! virtual time by `sync_harness`, converge when they subscribe, and only
//! then; version mismatches and malformed frames end the session with a
//! reason and change nothing; lost, duplicated, reordered and delayed
//! frames (a seeded lossy link) are survived: both replicas end identical.

mod sync_harness;

use rhizome_engine::hlc::PeerId;
use rhizome_engine::sync::pack;
use rhizome_engine::sync::session::{Output, Session, Timer, PUSH_ROUND};
use rhizome_engine::sync::wire::{self, Hello, Message, Refusal, Role, WireError};
use rhizome_engine::vv::VersionVector;
use sync_harness::{config, frame, msg, spec, Faults, Net, Peer, Rng, RETRY_MS, STALL_MS};

const TASKS: &str = "SELECT * FROM tasks";

fn hello(peer: u64, versions: (u16, u16), heard: bool) -> Hello {
    Hello {
        versions,
        peer: PeerId(peer),
        subscriptions: vec![spec(TASKS)],
        max_frame_bytes: wire::DEFAULT_MAX_FRAME_BYTES,
        heard,
        role: Role::SmallPeer,
        vv_digest: 0,
    }
}

fn drain(s: &mut Session) -> Vec<Output> {
    std::iter::from_fn(|| s.poll_output()).collect()
}

/// The messages among `outs`.
fn sent(outs: &[Output]) -> Vec<Message> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Send(f) => Some(msg(f)),
            _ => None,
        })
        .collect()
}

fn closed_with(outs: &[Output]) -> Option<Option<Refusal>> {
    outs.iter().find_map(|o| match o {
        Output::Closed { refusal } => Some(refusal.clone()),
        _ => None,
    })
}

/// A session of peer 1 (subscribed to tasks) after the handshake with peer
/// 2, its first request sent: (session, that round).
fn open_session() -> (Session, u64) {
    let mut s = Session::new(config(1, vec![spec(TASKS)]), 0);
    s.handle_connected();
    drain(&mut s);
    s.handle_frame(&frame(&Message::Hello(hello(2, (6, 6), false))));
    let outs = drain(&mut s);
    assert!(matches!(outs[0], Output::Established { version: 6, .. }), "{outs:?}");
    let round = outs
        .iter()
        .find_map(|o| match o {
            Output::ReadVersionVector { round } => Some(*round),
            _ => None,
        })
        .expect("asks for the version vector");
    s.send_request(round, &VersionVector::new());
    let outs = drain(&mut s);
    assert!(matches!(sent(&outs)[..], [Message::Request { round: r, .. }] if r == round));
    (s, round)
}

fn changes(round: u64, seq: u32, docs: &[rhizome_engine::codec::Change], last: bool) -> Message {
    Message::Changes {
        round,
        seq,
        changes: pack::pack(docs),
        upto: VersionVector::new(),
        last,
        complete: true,
    }
}

fn synced_pair() -> Net {
    let mut net = Net::new(Peer::new(1, &[TASKS]), Peer::new(2, &[TASKS])).rounds_only();
    net.connect();
    net.run();
    net
}

#[test]
fn two_sessions_converge_and_keep_syncing_new_commits() {
    let mut net = Net::new(Peer::new(1, &[TASKS]), Peer::new(2, &[TASKS]));
    for i in 0..7 {
        net.a().insert("tasks", &format!(r#"{{"_id": "a{i}", "n": {i}}}"#));
    }
    net.b().insert("tasks", r#"{"_id": "b", "n": 100}"#);
    net.connect();
    net.run();
    for p in &net.peers {
        assert_eq!(p.established.map(|e| e.2), Some(wire::PROTOCOL_VERSION));
        assert!(p.closed.is_none());
    }
    assert_eq!(net.peers[0].live("tasks").len(), 8);
    net.assert_converged("tasks", "after the first rounds");

    // A later commit is offered with a poke and pulled, on either side.
    net.on(1, |b| b.insert("tasks", r#"{"_id": "late", "n": 1}"#));
    net.run();
    net.on(0, |a| a.set("tasks", "late", "n", "2"));
    net.run();
    assert_eq!(
        net.peers[1].get("tasks", "late"),
        Some(sync_harness::v(r#"{"_id":"late","n":2}"#))
    );
    net.assert_converged("tasks", "after later commits");
}

#[test]
fn only_what_a_peer_subscribes_to_flows_to_it() {
    // (A's subscriptions, B's, whether A receives B's task, whether B receives A's)
    let cases: &[(&[&str], &[&str], bool, bool)] = &[
        (&[TASKS], &[TASKS], true, true),
        (&[TASKS], &[], true, false),
        (&[], &[TASKS], false, true),
        (&[], &[], false, false),
        (&["SELECT * FROM notes"], &[TASKS], false, true),
    ];
    for &(subs_a, subs_b, a_gets, b_gets) in cases {
        let context = format!("A {subs_a:?}, B {subs_b:?}");
        let mut net = Net::new(Peer::new(1, subs_a), Peer::new(2, subs_b));
        net.a().insert("tasks", r#"{"_id": "from_a"}"#);
        net.b().insert("tasks", r#"{"_id": "from_b"}"#);
        net.connect();
        net.run();
        let has = |side: usize, doc: &str| net.peers[side].get("tasks", doc).is_some();
        assert_eq!(has(0, "from_b"), a_gets, "{context}");
        assert_eq!(has(1, "from_a"), b_gets, "{context}");
        for (side, gets) in [(0, a_gets), (1, b_gets)] {
            let p = &net.peers[side];
            assert!(p.closed.is_none(), "{context}");
            // A side that wants nothing is sent nothing, and is caught up.
            if !gets {
                assert!(p.received().is_empty(), "{context}: {:?}", p.received());
                assert_eq!(p.caught_up, 1, "{context}");
            }
        }
    }
}

#[test]
fn no_common_version_is_refused_with_the_reason() {
    let mut s = Session::new(config(1, vec![]), 0);
    s.handle_connected();
    drain(&mut s);
    s.handle_frame(&wire::encode(&Message::Hello(hello(2, (7, 9), false)), 7));
    let outs = drain(&mut s);
    let expected = Refusal::UnsupportedVersion {
        ours: (wire::MIN_PROTOCOL_VERSION, wire::PROTOCOL_VERSION),
        theirs: (7, 9),
    };
    assert_eq!(sent(&outs), vec![Message::Refuse(expected.clone())]);
    assert_eq!(closed_with(&outs), Some(Some(expected)));
    assert!(s.is_closed());
}

/// How a bad-frame case starts.
#[derive(Clone, Copy, Debug)]
enum Phase {
    /// Connected, our `Hello` sent, none received.
    Handshake,
    /// Open, our first request sent.
    Open,
}

#[test]
fn bad_frames_close_the_session_with_a_reason_and_change_nothing() {
    let damaged = {
        let mut f = frame(&Message::Poke {
            nonce: 0,
            moved: None,
            ack: None,
        });
        let n = f.len();
        f[n - 1] ^= 1;
        f
    };
    let huge = {
        let mut f = frame(&Message::Poke {
            nonce: 0,
            moved: None,
            ack: None,
        });
        f[4..8].copy_from_slice(&(wire::DEFAULT_MAX_FRAME_BYTES + 1).to_be_bytes());
        f
    };
    let trailing = {
        let mut f = frame(&Message::Poke {
            nonce: 0,
            moved: None,
            ack: None,
        });
        f.push(0);
        f
    };
    // (what, phase, frame given the open round, expected refusal, its text contains, whether we send a Refuse)
    type Case = (
        &'static str,
        Phase,
        Box<dyn Fn(u64) -> Vec<u8>>,
        fn(&Refusal) -> bool,
        &'static str,
        bool,
    );
    let violation: fn(&Refusal) -> bool = |r| matches!(r, Refusal::ProtocolViolation { .. });
    let cases: Vec<Case> = vec![
        (
            "garbage",
            Phase::Handshake,
            Box::new(|_| b"garbage".to_vec()),
            violation,
            "undecodable frame",
            true,
        ),
        (
            "garbage when open",
            Phase::Open,
            Box::new(|_| b"garbage, and not a frame".to_vec()),
            violation,
            "bad magic",
            true,
        ),
        (
            "damaged",
            Phase::Open,
            Box::new(move |_| damaged.clone()),
            violation,
            "checksum",
            true,
        ),
        (
            "too large",
            Phase::Open,
            Box::new(move |_| huge.clone()),
            violation,
            "exceeds the limit",
            true,
        ),
        (
            "trailing bytes",
            Phase::Open,
            Box::new(move |_| trailing.clone()),
            violation,
            "after the frame",
            true,
        ),
        (
            "same peer",
            Phase::Handshake,
            Box::new(|_| frame(&Message::Hello(hello(1, (6, 6), false)))),
            |r| *r == Refusal::SamePeer,
            "itself",
            true,
        ),
        (
            "empty version range",
            Phase::Handshake,
            Box::new(|_| frame(&Message::Hello(hello(2, (6, 5), false)))),
            |r| matches!(r, Refusal::UnsupportedVersion { theirs: (6, 5), .. }),
            "no protocol version in common",
            true,
        ),
        (
            "undecodable changes",
            Phase::Open,
            Box::new(|round| {
                frame(&Message::Changes {
                    round,
                    seq: 0,
                    changes: b"\x01\x00not a pack".to_vec(),
                    upto: VersionVector::new(),
                    last: true,
                    complete: true,
                })
            }),
            violation,
            "undecodable changes",
            true,
        ),
        (
            "refused by the remote",
            Phase::Open,
            Box::new(|_| frame(&Message::Refuse(Refusal::HandshakeTimedOut))),
            |r| *r == Refusal::HandshakeTimedOut,
            "handshake",
            false,
        ),
    ];
    for (what, phase, make, expected, text, refuses) in cases {
        let mut p = Peer::new(1, &[TASKS]);
        p.insert("tasks", r#"{"_id": "x"}"#);
        let before = (p.states("tasks"), p.vv());
        let round = match phase {
            Phase::Handshake => {
                p.session.handle_connected();
                drain(&mut p.session);
                0
            }
            Phase::Open => {
                let (s, round) = open_session();
                p.session = s;
                round
            }
        };
        p.session.handle_frame(&make(round));
        let outs = drain(&mut p.session);
        let refusal = closed_with(&outs)
            .flatten()
            .unwrap_or_else(|| panic!("{what}: closed, {outs:?}"));
        assert!(expected(&refusal), "{what}: {refusal:?}");
        assert!(refusal.to_string().contains(text), "{what}: {refusal}");
        let refuse_sent = sent(&outs).contains(&Message::Refuse(refusal.clone()));
        assert_eq!(refuse_sent, refuses, "{what}: {outs:?}");
        assert!(p.session.is_closed(), "{what}");
        assert_eq!((p.states("tasks"), p.vv()), before, "{what}: nothing changed");
        // Nothing more is taken once closed.
        p.session.handle_frame(&frame(&Message::Poke {
            nonce: 0,
            moved: None,
            ack: None,
        }));
        p.session.handle_frame(&frame(&changes(round, 0, &[], true)));
        p.session.handle_local_commit();
        assert!(p.session.poll_output().is_none(), "{what}");
    }
}

#[test]
fn session_messages_during_the_handshake_are_ignored() {
    // The other side may be open already (our Hello was lost).
    let others = [
        Message::Poke {
            nonce: 0,
            moved: None,
            ack: None,
        },
        Message::Have { nonce: 0 },
        Message::Push {
            nonce: 0,
            ack: None,
            asked: 0,
            changes: rhizome_engine::sync::pack::pack(&[]),
            upto: VersionVector::new(),
            complete: true,
        },
        Message::Request {
            round: 1,
            delta: false,
            since: VersionVector::new(),
            subscriptions: None,
            of_hello: 0,
        },
        changes(0, 0, &[], true),
        Message::Subscribe {
            subscriptions: vec![spec(TASKS)],
        },
        Message::Subscribe {
            subscriptions: vec![spec("not even DQL")],
        },
    ];
    for m in others {
        let mut s = Session::new(config(1, vec![spec(TASKS)]), 0);
        s.handle_connected();
        drain(&mut s);
        s.handle_frame(&frame(&m));
        let outs = drain(&mut s);
        assert!(outs.is_empty(), "{m:?}: {outs:?}");
        assert!(!s.is_closed());
        // The handshake still completes.
        s.handle_frame(&frame(&Message::Hello(hello(2, (6, 6), true))));
        assert!(matches!(s.poll_output(), Some(Output::Established { .. })), "{m:?}");
    }
}

#[test]
fn batches_of_an_abandoned_round_are_ignored() {
    let (mut s, round) = open_session();
    let mut p = Peer::new(3, &[]);
    p.insert("tasks", r#"{"_id": "a"}"#);
    p.insert("tasks", r#"{"_id": "b"}"#);
    let docs = p
        .store
        .read()
        .unwrap()
        .changes_since(&VersionVector::new(), None, 10)
        .unwrap()
        .changes;
    s.handle_frame(&frame(&changes(round, 0, &docs[..1], false)));
    let outs = drain(&mut s);
    assert!(
        matches!(&outs[..], [Output::Apply { round: r, last: false, claim: None, .. }] if *r == round),
        "{outs:?}"
    );
    // A failed apply abandons the round: a retry is scheduled...
    s.handle_applied(round, false);
    let outs = drain(&mut s);
    assert!(
        matches!(
            outs[..],
            [Output::SetTimer {
                timer: Timer::Retry,
                after_ms: RETRY_MS
            }]
        ),
        "{outs:?}"
    );
    // ... and the round's later batches do nothing.
    s.handle_frame(&frame(&changes(round, 1, &docs[1..], true)));
    assert!(s.poll_output().is_none(), "a stale round's batch does nothing");
    // The retry asks again, in a new round.
    s.handle_timer(Timer::Retry);
    let outs = drain(&mut s);
    let Some(Output::ReadVersionVector { round: next }) = outs.first() else {
        panic!("asks again: {outs:?}")
    };
    assert!(*next > round);
}

#[test]
fn batches_out_of_sequence_are_ignored_and_a_stalled_round_is_asked_again() {
    let (mut s, round) = open_session();
    let batch = |seq, last| frame(&changes(round, seq, &[], last));
    // Batch 0 lost: 1 and 2 are out of sequence.
    s.handle_frame(&batch(1, false));
    s.handle_frame(&batch(2, true));
    assert!(s.poll_output().is_none());
    // Another round's batch is ignored too.
    s.handle_frame(&frame(&changes(round + 7, 0, &[], true)));
    assert!(s.poll_output().is_none());
    // The round made no progress: its stall timer abandons it and asks again.
    s.handle_timer(Timer::Stall { round, progress: 0 });
    let outs = drain(&mut s);
    let Some(Output::ReadVersionVector { round: next }) = outs.first() else {
        panic!("asks again: {outs:?}")
    };
    assert!(*next > round);
    s.send_request(*next, &VersionVector::new());
    drain(&mut s);
    // A round that moves is not abandoned: its timer is set again.
    s.handle_frame(&frame(&changes(*next, 0, &[], false)));
    let outs = drain(&mut s);
    assert!(matches!(outs[..], [Output::Apply { .. }]), "{outs:?}");
    s.handle_applied(*next, true);
    s.handle_timer(Timer::Stall {
        round: *next,
        progress: 0,
    });
    let outs = drain(&mut s);
    assert!(
        matches!(outs[..], [Output::SetTimer { timer: Timer::Stall { round: r, progress: 1 }, after_ms: STALL_MS }] if r == *next),
        "{outs:?}"
    );
    // A duplicate of a batch already applied is ignored.
    s.handle_frame(&frame(&changes(*next, 0, &[], false)));
    assert!(s.poll_output().is_none());
}

#[test]
fn a_lost_batch_costs_a_stall_then_the_round_is_served_again() {
    let mut net = Net::new(Peer::new(1, &[TASKS]), Peer::new(2, &[TASKS]));
    for i in 0..5 {
        net.a().insert("tasks", &format!(r#"{{"_id": "d{i}"}}"#));
    }
    // A's first batch (of 3: two documents each) is lost.
    net.losses.push((0, |m| matches!(m, Message::Changes { seq: 0, .. })));
    net.connect();
    net.run();
    net.assert_converged("tasks", "after the lost batch");
    let b = &net.peers[1];
    let rounds: Vec<u64> = b.requests().iter().map(|r| r.0).collect();
    assert_eq!(rounds.len(), 2, "asked once more: {rounds:?}");
    assert!(
        b.applies.iter().all(|a| a.round == rounds[1]),
        "nothing of the first round applied"
    );
}

#[test]
fn the_handshake_repeats_hello_then_gives_up() {
    let mut s = Session::new(config(1, vec![]), 0);
    s.handle_connected();
    let outs = drain(&mut s);
    assert!(matches!(&sent(&outs)[..], [Message::Hello(Hello { heard: false, .. })]));
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::SetTimer {
            timer: Timer::Handshake(1),
            after_ms: STALL_MS
        }
    )));
    let mut n = 1;
    loop {
        s.handle_timer(Timer::Handshake(n));
        let outs = drain(&mut s);
        if let Some(refusal) = closed_with(&outs) {
            assert_eq!(refusal, Some(Refusal::HandshakeTimedOut));
            assert_eq!(sent(&outs), vec![Message::Refuse(Refusal::HandshakeTimedOut)]);
            break;
        }
        assert!(
            matches!(&sent(&outs)[..], [Message::Hello(Hello { heard: false, .. })]),
            "{outs:?}"
        );
        n += 1;
        assert!(n < 100, "gives up");
    }
    assert!(n > 5, "gives up after several attempts, not {n}");
}

#[test]
fn an_open_side_answers_a_repeated_hello() {
    let (mut s, _) = open_session();
    // The other side did not hear our Hello: it is answered, heard.
    s.handle_frame(&frame(&Message::Hello(hello(2, (6, 6), false))));
    let outs = drain(&mut s);
    assert!(
        matches!(&sent(&outs)[..], [Message::Hello(Hello { heard: true, .. })]),
        "{outs:?}"
    );
    // A Hello that heard ours, or a stale handshake timer, changes nothing.
    s.handle_frame(&frame(&Message::Hello(hello(2, (6, 6), true))));
    s.handle_timer(Timer::Handshake(1));
    assert!(s.poll_output().is_none());
    assert!(!s.is_closed());
}

#[test]
fn lost_hellos_are_sent_again_and_the_peers_converge() {
    let first_hello = |m: &Message| matches!(m, Message::Hello(_));
    let cases: Vec<(&str, Vec<sync_harness::Loss>)> = vec![
        ("A's first Hello", vec![(0, first_hello)]),
        ("B's first Hello", vec![(1, first_hello)]),
        ("both first Hellos", vec![(0, first_hello), (1, first_hello)]),
        ("A's first two Hellos", vec![(0, first_hello), (0, first_hello)]),
        (
            "A's first Hello and B's first request",
            vec![
                (0, first_hello),
                (1, |m: &Message| matches!(m, Message::Request { .. })),
            ],
        ),
    ];
    for (what, losses) in cases {
        let mut net = Net::new(Peer::new(1, &[TASKS]), Peer::new(2, &[TASKS]));
        net.a().insert("tasks", r#"{"_id": "a", "n": 1}"#);
        net.b().insert("tasks", r#"{"_id": "b", "n": 2}"#);
        let lost = losses.len() as u64;
        net.losses = losses;
        net.connect();
        net.run();
        assert_eq!(net.lost, lost, "{what}");
        assert!(
            net.peers.iter().all(|p| p.established.is_some() && p.closed.is_none()),
            "{what}"
        );
        assert_eq!(net.peers[0].live("tasks").len(), 2, "{what}");
        net.assert_converged("tasks", what);
    }
}

#[test]
fn a_lost_poke_is_repeated() {
    let mut net = synced_pair();
    net.losses.push((0, |m| matches!(m, Message::Poke { .. })));
    net.on(0, |a| a.insert("tasks", r#"{"_id": "new"}"#));
    net.run();
    assert_eq!(net.lost, 1);
    assert_eq!(
        net.peers[0]
            .sent
            .iter()
            .filter(|m| matches!(m, Message::Poke { .. }))
            .count(),
        2
    );
    net.assert_converged("tasks", "after a lost poke");
}

/// A request of an old round arriving late (a duplicate, or delayed) is no
/// answer to a poke sent since: the poke must still be repeated until the
/// remote asks again.
#[test]
fn a_stale_request_does_not_cancel_a_pending_poke() {
    let mut net = synced_pair();
    let (round, since) = net.peers[1].requests().last().cloned().expect("B asked");
    net.losses.push((0, |m| matches!(m, Message::Poke { .. })));
    net.on(0, |a| a.insert("tasks", r#"{"_id": "new"}"#));
    net.inject(
        0,
        &Message::Request {
            round,
            delta: false,
            since,
            subscriptions: None,
            of_hello: 0,
        },
    );
    net.run();
    assert_eq!(
        net.peers[1].get("tasks", "new").map(|d| d.to_string()),
        Some(r#"{"_id":"new"}"#.to_string()),
        "the commit reaches B"
    );
    net.assert_converged("tasks", "after a stale request");
}

/// Once closed, a session sends nothing more, whatever timer fires.
#[test]
fn a_closed_session_sends_nothing_when_its_timers_fire() {
    for close in ["by the driver", "by the remote"] {
        let (mut s, round) = open_session();
        match close {
            "by the driver" => s.handle_close(),
            _ => s.handle_frame(&frame(&Message::Refuse(Refusal::HandshakeTimedOut))),
        }
        assert!(matches!(drain(&mut s)[..], [Output::Closed { .. }]), "{close}");
        for timer in [
            Timer::Stall { round, progress: 0 },
            Timer::Retry,
            Timer::Poke(0),
            Timer::Handshake(1),
        ] {
            s.handle_timer(timer);
            let outs = drain(&mut s);
            assert!(outs.is_empty(), "{close}, {timer:?}: {outs:?}");
        }
        s.handle_applied(round, true);
        s.send_request(round + 1, &VersionVector::new());
        assert!(s.poll_output().is_none(), "{close}");
    }
}

#[test]
fn a_failed_apply_claims_nothing_and_asks_again_later() {
    let mut net = Net::new(Peer::new(1, &[TASKS]), Peer::new(2, &[TASKS]));
    net.a().insert("tasks", r#"{"_id": "x"}"#);
    net.b().fail_applies = true;
    net.connect();
    net.run_until(3 * RETRY_MS);
    let b = &net.peers[1];
    assert!(
        b.live("tasks").is_empty() && b.vv().is_empty(),
        "nothing applied or claimed"
    );
    let rounds: Vec<u64> = b.requests().iter().map(|r| r.0).collect();
    assert!(
        rounds.len() >= 2 && rounds.windows(2).all(|w| w[0] < w[1]),
        "{rounds:?}"
    );
    net.b().fail_applies = false;
    net.run();
    net.assert_converged("tasks", "after the store recovered");
}

#[test]
fn serving_stops_when_superseded_and_refuses_an_oversized_batch() {
    let mut s = Session::new(config(1, vec![]), 0);
    s.handle_connected();
    let mut small = hello(2, (6, 6), false);
    small.max_frame_bytes = 1024;
    s.handle_frame(&frame(&Message::Hello(small)));
    drain(&mut s);
    assert_eq!(s.remote_max_frame_bytes(), 1024);
    // Not asked for: nothing to serve.
    assert_eq!(s.send_changes(1, &[], VersionVector::new(), true), Ok(false));
    for round in [1, 2] {
        s.handle_frame(&frame(&Message::Request {
            round,
            delta: false,
            since: VersionVector::new(),
            subscriptions: None,
            of_hello: 0,
        }));
        assert!(matches!(drain(&mut s)[..], [Output::Serve { round: r, .. }] if r == round));
    }
    assert_eq!(
        s.send_changes(1, &[], VersionVector::new(), false),
        Ok(false),
        "superseded"
    );
    let mut p = Peer::new(3, &[]);
    // Random text: the packer compresses repeated bytes.
    let mut rng = Rng::new(1);
    let text: String = (0..4000).map(|_| char::from(b'a' + rng.below(26) as u8)).collect();
    p.insert("tasks", &format!(r#"{{"_id": "big", "text": "{text}"}}"#));
    let big = p
        .store
        .read()
        .unwrap()
        .changes_since(&VersionVector::new(), None, 1)
        .unwrap();
    assert!(matches!(
        s.send_changes(2, &big.changes, big.upto.clone(), true),
        Err(WireError::TooLarge { limit_bytes: 1024, .. })
    ));
    assert!(s.poll_output().is_none(), "an oversized batch is not sent");
    // Batches are numbered in sequence.
    for seq in 0..3 {
        assert_eq!(s.send_changes(2, &[], VersionVector::new(), seq == 2), Ok(true));
        let outs = drain(&mut s);
        assert!(matches!(&sent(&outs)[..], [Message::Changes { round: 2, seq: q, .. }] if *q == seq));
    }
}

/// A random local write on `side`: inserts, field writes, counter
/// increments and deletions over a few shared ids, so the sides conflict.
fn random_write(net: &mut Net, rng: &mut Rng, k: u64) {
    let side = rng.below(2) as usize;
    let doc = format!("d{}", rng.below(6));
    let op = rng.below(10);
    net.on(side, |p| match op {
        0..=3 => p.insert("tasks", &format!(r#"{{"_id": "{doc}", "n": {k}, "by{side}": true}}"#)),
        4..=6 => p.set("tasks", &doc, &format!("f{}", k % 3), &k.to_string()),
        7..=8 => p.increment("tasks", &doc, "c", 1 + k as i64 % 4),
        _ => p.delete("tasks", &doc),
    });
}

/// One run over a lossy link: a few documents on each side, then twelve
/// random writes on either side while the sessions run; then quiescence.
fn lossy_run(seed: u64) -> Net {
    lossy_run_traced(seed, false)
}

fn lossy_run_traced(seed: u64, trace: bool) -> Net {
    let mut rng = Rng::new(seed);
    let mut a = Peer::new(1, &[TASKS]);
    let mut b = Peer::new(2, &[TASKS]);
    a.batch = 1 + (seed % 3) as usize;
    b.batch = 1 + (seed % 2) as usize;
    for i in 0..rng.below(5) {
        a.insert("tasks", &format!(r#"{{"_id": "a{i}", "n": {i}}}"#));
    }
    for i in 0..rng.below(5) {
        b.insert("tasks", &format!(r#"{{"_id": "b{i}", "n": {i}}}"#));
    }
    let mut net = Net::new(a, b);
    net.faults = Some(Faults {
        rng: Rng::new(seed.wrapping_mul(31) + 7),
        drop: 60,
        dup: 60,
        reorder: 40,
        max_delay_ms: 20,
    });
    net.label = format!("seed {seed}");
    if trace {
        net.trace = Some(Vec::new());
    }
    if seed.is_multiple_of(4) {
        // The first Hello is lost.
        net.losses.push((0, |m| matches!(m, Message::Hello(_))));
    }
    net.connect();
    let mut t = 0;
    for k in 0..12 {
        t += rng.below(80);
        net.run_until(t);
        random_write(&mut net, &mut rng, k);
    }
    net.run();
    net
}

#[test]
fn lossy_links_converge_over_many_seeds() {
    let mut lost = 0;
    for seed in 0..SEEDS {
        let net = lossy_run(seed);
        let context = format!("seed {seed}");
        for p in &net.peers {
            assert!(
                p.established.is_some() && p.closed.is_none(),
                "{context}: {:?}",
                p.closed
            );
        }
        net.assert_converged("tasks", &context);
        lost += net.lost;
    }
    assert!(lost > SEEDS, "the link lost frames ({lost})");
}

/// Seeds of the lossy runs (each a few milliseconds).
const SEEDS: u64 = 300;

/// Two peers delete one document concurrently; one of them hears of the
/// other's deletion first and joins both (the newest stamp, the union of
/// what they saw). Sync must bring the other to the same state: the joined
/// deletion's `seen` covers writes of the first peer that the second
/// peer's own deletion did not.
#[test]
fn concurrent_deletions_converge() {
    let mut a = Peer::new(1, &[TASKS]);
    let mut b = Peer::new(2, &[TASKS]);
    b.insert("tasks", r#"{"_id": "d", "n": 1}"#);
    rhizome_engine::testing::sync_into(&b.store, &a.store, sync_harness::NOW_MS + 2, 10);
    a.set("tasks", "d", "m", "2");
    a.delete("tasks", "d");
    b.clock = 50;
    b.delete("tasks", "d");
    // A hears of B's deletion (and joins it with its own); B has not heard of A's.
    rhizome_engine::testing::sync_into(&b.store, &a.store, sync_harness::NOW_MS + 60, 10);
    let mut net = Net::new(a, b);
    net.connect();
    net.run();
    assert_eq!(net.peers[0].live("tasks"), net.peers[1].live("tasks"));
    assert_eq!(
        net.peers[1].doc("tasks", "d").and_then(|d| d.deleted),
        net.peers[0].doc("tasks", "d").and_then(|d| d.deleted),
        "the joined deletion"
    );
    net.assert_converged("tasks", "after concurrent deletions");
}

#[test]
fn later_requests_carry_only_the_origins_that_moved() {
    let mut net = Net::new(Peer::new(1, &[TASKS]), Peer::new(2, &[TASKS])).rounds_only();
    net.a().insert("tasks", r#"{"_id": "a", "n": 1}"#);
    net.b().insert("tasks", r#"{"_id": "b", "n": 1}"#);
    net.connect();
    net.run();
    net.assert_converged("tasks", "after the first rounds");
    let first = net.peers[0]
        .sent
        .iter()
        .filter(|m| matches!(m, Message::Request { .. }))
        .count();

    // Only B writes: A's next request names B alone (A's own entry and
    // everything else did not move), and B serves from A's whole vector,
    // so nothing of A's comes back.
    net.on(1, |b| b.set("tasks", "b", "n", "2"));
    net.run();
    let requests: Vec<&Message> = net.peers[0]
        .sent
        .iter()
        .filter(|m| matches!(m, Message::Request { .. }))
        .collect();
    assert!(requests.len() > first, "A asked again");
    let Message::Request { since, delta, .. } = requests[requests.len() - 1] else {
        unreachable!()
    };
    assert!(*delta, "a later request is a delta");
    assert_eq!(since.iter().map(|(p, _)| p.0).collect::<Vec<_>>(), vec![2], "{since:?}");
    assert_eq!(
        net.peers[1]
            .received()
            .iter()
            .filter(|c| c.id == sync_harness::id("a"))
            .count(),
        1
    );
    net.assert_converged("tasks", "after B's write");

    // A writes, then B: A's own entry moved, B's too.
    net.on(0, |a| a.set("tasks", "a", "n", "3"));
    net.run();
    net.on(1, |b| b.set("tasks", "b", "n", "4"));
    net.run();
    net.assert_converged("tasks", "after both wrote");
    assert_eq!(
        net.peers[0].get("tasks", "b"),
        Some(sync_harness::v(r#"{"_id":"b","n":4}"#))
    );
}

#[test]
fn delta_requests_survive_loss_and_reordering() {
    // The server's join of what it heard must equal the asker's vector
    // whatever got lost: many seeds of a lossy link, writes on both sides.
    // With pushes too: they must converge through the same faults.
    for (seed, pushes) in (0..40u64).flat_map(|s| [(s, false), (s, true)]) {
        let mut net = Net::new(Peer::new(1, &[TASKS]), Peer::new(2, &[TASKS]));
        if !pushes {
            net = net.rounds_only();
        }
        net.faults = Some(Faults {
            rng: Rng::new(seed * 13 + 5),
            drop: 150,
            dup: 80,
            reorder: 80,
            max_delay_ms: 20,
        });
        net.label = format!("seed {seed}");
        net.connect();
        for i in 0..8 {
            let side = i % 2;
            net.on(side, |p| p.insert("tasks", &format!(r#"{{"_id": "d{i}", "n": {i}}}"#)));
            let t = net.now + 30;
            net.run_until(t);
            net.on(1 - side, |p| p.set("tasks", &format!("d{i}"), "m", "1"));
            let t = net.now + 30;
            net.run_until(t);
        }
        net.faults = None;
        net.run();
        net.assert_converged("tasks", &format!("seed {seed}"));
        let deltas = net.peers[0]
            .sent
            .iter()
            .filter(|m| matches!(m, Message::Request { delta: true, .. }))
            .count();
        assert!(deltas > 0 || pushes, "seed {seed}: no delta request was sent");
    }
}

#[test]
fn peers_that_meet_in_agreement_name_each_others_hello_vector() {
    let (mut a, mut b) = (Peer::new(1, &[TASKS]), Peer::new(2, &[TASKS]));
    a.insert("tasks", r#"{"_id": "a", "n": 1}"#);
    b.insert("tasks", r#"{"_id": "b", "n": 1}"#);
    rhizome_engine::testing::sync_into(&a.store, &b.store, sync_harness::NOW_MS + 2, 10);
    rhizome_engine::testing::sync_into(&b.store, &a.store, sync_harness::NOW_MS + 2, 10);
    assert_eq!(a.vv(), b.vv(), "they agree before they meet");
    let mut net = Net::new(a, b);
    net.connect();
    net.run();
    for side in 0..2 {
        let first = net.peers[side]
            .sent
            .iter()
            .find(|m| matches!(m, Message::Request { .. }));
        assert!(
            matches!(first, Some(Message::Request { of_hello, delta: false, since, .. }) if *of_hello != 0 && since.is_empty()),
            "side {side}: {first:?}"
        );
    }
    // Later requests are as before: news after the handshake flows.
    net.on(1, |b| b.set("tasks", "b", "n", "2"));
    net.run();
    net.assert_converged("tasks", "after a write past the Hello");
    assert_eq!(
        net.peers[0].get("tasks", "b"),
        Some(sync_harness::v(r#"{"_id":"b","n":2}"#))
    );
}

#[test]
fn peers_that_meet_in_disagreement_send_their_vector() {
    let mut net = Net::new(Peer::new(1, &[TASKS]), Peer::new(2, &[TASKS]));
    net.a().insert("tasks", r#"{"_id": "a", "n": 1}"#);
    net.connect();
    net.run();
    let first = net.peers[1].sent.iter().find(|m| matches!(m, Message::Request { .. }));
    assert!(matches!(first, Some(Message::Request { of_hello: 0, .. })), "{first:?}");
    net.assert_converged("tasks", "after first contact");
}

#[test]
fn a_request_naming_a_hello_vector_not_announced_is_served_from_nothing() {
    // `handle_connected` announces no vector (digest 0): the asker's
    // digest names some other vector (a late copy of an older Hello).
    let (mut s, _) = open_session();
    s.handle_frame(&frame(&Message::Request {
        round: 1,
        delta: false,
        since: VersionVector::new(),
        subscriptions: None,
        of_hello: 0x005e_ed0f_4e11_0000,
    }));
    let outs = drain(&mut s);
    assert!(
        matches!(&outs[..], [Output::Serve { round: 1, since }] if since.is_empty()),
        "{outs:?}"
    );
    // Naming a vector while carrying one is a violation.
    let mut carried = VersionVector::new();
    carried.set(PeerId(2), rhizome_engine::hlc::Hlc(5));
    s.handle_frame(&frame(&Message::Request {
        round: 2,
        delta: false,
        since: carried,
        subscriptions: None,
        of_hello: 7,
    }));
    let outs = drain(&mut s);
    assert!(
        matches!(closed_with(&outs), Some(Some(Refusal::ProtocolViolation { .. }))),
        "{outs:?}"
    );
}

/// A link change (a link manager moved the session to another link) asks
/// again at once what may have been lost on the old link: the round still
/// waiting for batches (in a new round, so the old one's late batches are
/// ignored), the unanswered poke, and the Hello of an unfinished handshake.
#[test]
fn a_link_change_asks_again_at_once_what_the_old_link_may_have_lost() {
    let (mut s, round) = open_session();
    s.handle_frame(&frame(&changes(round, 0, &[], false)));
    assert!(matches!(drain(&mut s)[..], [Output::Apply { .. }]));
    s.handle_local_commit();
    assert!(matches!(&sent(&drain(&mut s))[..], [Message::Poke { .. }]));
    s.handle_link_changed();
    let outs = drain(&mut s);
    let next = outs
        .iter()
        .find_map(|o| match o {
            Output::ReadVersionVector { round } => Some(*round),
            _ => None,
        })
        .expect("asks again");
    assert!(next > round);
    assert!(
        matches!(&sent(&outs)[..], [Message::Poke { .. }]),
        "the poke is repeated"
    );
    // The old round's batches, late on the old link, do nothing.
    s.handle_applied(round, true);
    s.handle_frame(&frame(&changes(round, 1, &[], true)));
    assert!(s.poll_output().is_none());
    // While the vector is read, or once every batch is in, nothing is in
    // flight: a change asks nothing again.
    s.handle_link_changed();
    let outs = drain(&mut s);
    assert!(
        !outs.iter().any(|o| matches!(o, Output::ReadVersionVector { .. })),
        "the request is not sent yet: {outs:?}"
    );
    // The remote asks: the poke is answered.
    s.handle_frame(&frame(&Message::Request {
        round: 1,
        delta: false,
        since: VersionVector::new(),
        subscriptions: None,
        of_hello: 0,
    }));
    drain(&mut s);
    s.send_request(next, &VersionVector::new());
    drain(&mut s);
    s.handle_frame(&frame(&changes(next, 0, &[], true)));
    drain(&mut s);
    s.handle_link_changed();
    assert!(s.poll_output().is_none(), "the round is complete");

    // In the handshake, the Hello is repeated.
    let mut h = Session::new(config(1, vec![]), 0);
    h.handle_connected();
    drain(&mut h);
    h.handle_link_changed();
    assert!(matches!(
        &sent(&drain(&mut h))[..],
        [Message::Hello(Hello { heard: false, .. })]
    ));
    // Closed: nothing.
    h.handle_close();
    drain(&mut h);
    h.handle_link_changed();
    assert!(h.poll_output().is_none());
}

/// The remote's session started over while ours went on (its last link
/// dropped before ours did): its new rounds start from 0, below the round
/// we served last, and must be served all the same; our round in flight is
/// asked again of the new session.
#[test]
fn a_remote_whose_session_started_over_is_served_from_its_first_round() {
    let (mut s, round) = open_session();
    for r in [5, 6] {
        s.handle_frame(&frame(&Message::Request {
            round: r,
            delta: false,
            since: VersionVector::new(),
            subscriptions: None,
            of_hello: 0,
        }));
    }
    drain(&mut s);
    s.handle_frame(&frame(&Message::Hello(hello(2, (6, 6), false))));
    let outs = drain(&mut s);
    assert!(
        matches!(&sent(&outs)[..], [Message::Hello(Hello { heard: true, .. })]),
        "{outs:?}"
    );
    assert!(
        outs.iter()
            .any(|o| matches!(o, Output::ReadVersionVector { round: r } if *r > round)),
        "our round is asked again: {outs:?}"
    );
    s.handle_frame(&frame(&Message::Request {
        round: 0,
        delta: false,
        since: VersionVector::new(),
        subscriptions: None,
        of_hello: 0,
    }));
    assert!(
        matches!(drain(&mut s)[..], [Output::Serve { round: 0, .. }]),
        "the new session's first round is served"
    );
}

// ---- pushes (protocol 6) ----

fn pushes(p: &Peer) -> usize {
    p.sent.iter().filter(|m| matches!(m, Message::Push { .. })).count()
}

/// Once the remote has asked, a live edit travels as one `Push` (and a
/// `Have` back), not as a poke, a request and a round.
#[test]
fn a_live_edit_is_pushed_and_acknowledged() {
    let mut net = Net::new(Peer::new(1, &[TASKS]), Peer::new(2, &[TASKS]));
    net.connect();
    net.run();
    let requests = net.peers[1].requests().len();
    for i in 0..3 {
        net.on(0, |a| a.insert("tasks", &format!(r#"{{"_id": "t{i}"}}"#)));
        net.run();
    }
    net.assert_converged("tasks", "after the pushes");
    assert_eq!(pushes(&net.peers[0]), 3);
    assert_eq!(net.peers[1].requests().len(), requests, "no round was asked");
    let acks = net.peers[1]
        .sent
        .iter()
        .filter(|m| matches!(m, Message::Have { .. }))
        .count();
    assert_eq!(acks, 3, "each push was acknowledged");
    // Each push was complete: B's vector claims A's writes.
    assert_eq!(net.peers[1].vv(), net.peers[0].vv());
}

/// The coding byte of every push `p` sent (0 plain, 1 range-coded).
fn push_codings(p: &Peer) -> Vec<u8> {
    p.sent
        .iter()
        .filter_map(|m| match m {
            Message::Push { changes, .. } => changes.get(1).copied(),
            _ => None,
        })
        .collect()
}

/// Pushes are range-coded by default (BLE); a session told to send them
/// plain (fast links) does, and the receiver takes them alike.
#[test]
fn pushes_go_plain_when_the_session_is_told_so() {
    for coded in [true, false] {
        let mut net = Net::new(Peer::new(1, &[TASKS]), Peer::new(2, &[TASKS]));
        net.peers[0].session.set_push_range_coded(coded);
        net.connect();
        net.run();
        for i in 0..3 {
            let doc = format!(r#"{{"_id": "t{i}", "title": "write the release notes", "done": false}}"#);
            net.on(0, |a| a.insert("tasks", &doc));
            net.run();
        }
        net.assert_converged("tasks", "after the pushes");
        assert_eq!(push_codings(&net.peers[0]), vec![u8::from(coded); 3], "coded: {coded}");
        // Over 1 KiB plain but not coded: coded, still a push (going plain
        // never turns a push into a poke and a round).
        let long = format!(
            r#"{{"_id": "long", "notes": "{}"}}"#,
            "all work and no play ".repeat(80)
        );
        net.on(0, |a| a.insert("tasks", &long));
        net.run();
        net.assert_converged("tasks", "after the long push");
        assert_eq!(push_codings(&net.peers[0]).len(), 4, "coded: {coded}");
        assert_eq!(push_codings(&net.peers[0])[3], 1, "coded: {coded}");
    }
}

/// A push that is lost is offered again (as a poke) after `stall_ms`.
#[test]
fn a_lost_push_is_offered_again() {
    let mut net = Net::new(Peer::new(1, &[TASKS]), Peer::new(2, &[TASKS]));
    net.connect();
    net.run();
    net.losses.push((0, |m| matches!(m, Message::Push { .. })));
    net.on(0, |a| a.insert("tasks", r#"{"_id": "new"}"#));
    net.run();
    assert_eq!(net.lost, 1);
    net.assert_converged("tasks", "after a lost push");
}

/// A push whose base may include a push that failed to apply here is not
/// taken: it is asked as a round instead.
#[test]
fn a_push_built_on_a_failed_one_is_not_taken() {
    let (mut s, round) = open_session();
    s.handle_frame(&frame(&changes(round, 0, &[], true)));
    drain(&mut s);
    s.handle_applied(round, true);
    drain(&mut s);
    let push = |nonce: u64| Message::Push {
        nonce,
        ack: None,
        asked: round,
        changes: pack::pack(&[]),
        upto: VersionVector::new(),
        complete: true,
    };
    s.handle_frame(&frame(&push(1)));
    let outs = drain(&mut s);
    assert!(
        outs.iter()
            .any(|o| matches!(o, Output::Apply { round: r, .. } if *r == PUSH_ROUND)),
        "{outs:?}"
    );
    assert!(
        outs.iter().any(|o| matches!(
            o,
            Output::SetTimer {
                timer: Timer::Ack(1),
                ..
            }
        )),
        "a Have is owed: {outs:?}"
    );
    s.handle_timer(Timer::Ack(1));
    assert_eq!(sent(&drain(&mut s)), vec![Message::Have { nonce: 1 }]);
    // It failed to apply: the session asks again, and a push read before
    // the remote hears that request is not applied.
    s.handle_applied(PUSH_ROUND, false);
    let outs = drain(&mut s);
    let next = outs
        .iter()
        .find_map(|o| match o {
            Output::ReadVersionVector { round } => Some(*round),
            _ => None,
        })
        .expect("asks again");
    s.send_request(next, &VersionVector::new());
    drain(&mut s);
    s.handle_frame(&frame(&push(2)));
    let outs = drain(&mut s);
    assert!(!outs.iter().any(|o| matches!(o, Output::Apply { .. })), "{outs:?}");
}

/// A `Have` for a push that holds the pusher's own writes is owed for a
/// tenth of `stall_ms` (its user may be typing); for a push of relayed
/// news only, a fifth (the `Have` more likely rides on an offer of ours).
/// Whichever `Ack` timer fires first sends the newest `Have` owed.
#[test]
fn a_have_for_the_pushers_own_writes_goes_sooner() {
    use rhizome_engine::codec::Change;
    use rhizome_engine::doc::{Op, RegVal};
    use rhizome_engine::hlc::{Hlc, Stamp};
    use rhizome_engine::value::Value;
    let (mut s, round) = open_session();
    s.handle_frame(&frame(&changes(round, 0, &[], true)));
    drain(&mut s);
    s.handle_applied(round, true);
    drain(&mut s);
    let write = |peer: u64, id: &str| Change {
        collection: "tasks".to_string(),
        id: Value::String(id.to_string()),
        ops: vec![Op::Set {
            path: vec!["done".to_string()],
            stamp: Stamp {
                hlc: Hlc(1 << 16),
                peer: PeerId(peer),
            },
            val: RegVal::Value(Value::Bool(true)),
        }],
    };
    let push = |nonce: u64, docs: &[Change]| Message::Push {
        nonce,
        ack: None,
        asked: round,
        changes: pack::pack(docs),
        upto: VersionVector::new(),
        complete: true,
    };
    let ack_timers = |outs: &[Output]| -> Vec<(u64, u64)> {
        outs.iter()
            .filter_map(|o| match o {
                Output::SetTimer {
                    timer: Timer::Ack(n),
                    after_ms,
                } => Some((*n, *after_ms)),
                _ => None,
            })
            .collect()
    };
    // Relayed news (peer 3's write): the longer wait.
    s.handle_frame(&frame(&push(1, &[write(3, "relayed")])));
    assert_eq!(ack_timers(&drain(&mut s)), vec![(1, STALL_MS / 5)]);
    // The pusher's own write, while that `Have` is still owed: a sooner
    // timer, for the newest nonce.
    s.handle_frame(&frame(&push(2, &[write(2, "own")])));
    assert_eq!(ack_timers(&drain(&mut s)), vec![(2, STALL_MS / 10)]);
    // The older timer fires first here: it sends the newest `Have`, once.
    s.handle_timer(Timer::Ack(1));
    assert_eq!(sent(&drain(&mut s)), vec![Message::Have { nonce: 2 }]);
    s.handle_timer(Timer::Ack(2));
    assert_eq!(sent(&drain(&mut s)), vec![]);
    // Nothing owed: the pusher's own write alone, and mixed with relayed
    // news, each get the sooner timer; relayed news alone the later one.
    s.handle_frame(&frame(&push(3, &[write(2, "own")])));
    assert_eq!(ack_timers(&drain(&mut s)), vec![(3, STALL_MS / 10)]);
    s.handle_timer(Timer::Ack(3));
    assert_eq!(sent(&drain(&mut s)), vec![Message::Have { nonce: 3 }]);
    s.handle_frame(&frame(&push(4, &[write(3, "relayed"), write(2, "own")])));
    assert_eq!(ack_timers(&drain(&mut s)), vec![(4, STALL_MS / 10)]);
    s.handle_timer(Timer::Ack(4));
    assert_eq!(sent(&drain(&mut s)), vec![Message::Have { nonce: 4 }]);
    s.handle_frame(&frame(&push(5, &[write(3, "relayed")])));
    assert_eq!(ack_timers(&drain(&mut s)), vec![(5, STALL_MS / 5)]);
}

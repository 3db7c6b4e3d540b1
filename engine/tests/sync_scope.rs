//! Sync subscriptions: a peer is sent only what it subscribes to; filtered
//! subscriptions take matching documents whole (identical CRDT state, even
//! after writes made while the document did not match), whole-collection
//! ones take deltas; a round's claim is recorded only when the sender holds
//! all the receiver wants; subscriptions can grow mid-session; malformed
//! ones from a remote end the session naming them.

mod sync_harness;

use rhizome_engine::hlc::PeerId;
use rhizome_engine::sync::scope::{self, Interest, Selection, MAX_SUBSCRIPTIONS};
use rhizome_engine::sync::session::{Output, Session};
use rhizome_engine::sync::wire::{Hello, Message, Refusal, Role, SubscriptionSpec, DEFAULT_MAX_FRAME_BYTES};
use rhizome_engine::vv::VersionVector;
use sync_harness::{config, frame, id, msg, spec, spec_with, v, Net, Peer};

const TASKS: &str = "SELECT * FROM tasks";
const OPEN_TASKS: &str = "SELECT * FROM tasks WHERE done = false";
const NOTES: &str = "SELECT * FROM notes";

/// Every change any peer of `net` received, as (collection, id).
fn received(p: &Peer) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = p
        .received()
        .iter()
        .map(|c| (c.collection.clone(), c.id.to_string()))
        .collect();
    out.sort();
    out.dedup();
    out
}

fn ids(p: &Peer, coll: &str) -> Vec<String> {
    let mut out: Vec<String> = p
        .live(coll)
        .iter()
        .map(|d| v(d).as_object().expect("object")["_id"].to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn selection_follows_the_subscriptions() {
    let mut p = Peer::new(1, &[]);
    p.insert("tasks", r#"{"_id": "open", "done": false, "n": 1}"#);
    p.insert("tasks", r#"{"_id": "shut", "done": true, "n": 2}"#);
    p.insert("tasks", r#"{"_id": "gone", "done": false}"#);
    p.delete("tasks", "gone");
    p.insert("notes", r#"{"_id": "note", "done": false}"#);
    // (subscriptions, collection, document, selection)
    let cases: &[(&[&str], &str, &str, Selection)] = &[
        (&[], "tasks", "open", Selection::Skip),
        (&[NOTES], "tasks", "open", Selection::Skip),
        (&[TASKS], "tasks", "open", Selection::Delta),
        (&[TASKS], "tasks", "shut", Selection::Delta),
        (&[TASKS], "notes", "note", Selection::Skip),
        (&[OPEN_TASKS], "tasks", "open", Selection::Whole),
        (&[OPEN_TASKS], "tasks", "shut", Selection::Skip),
        // A deletion goes to whoever may hold the document.
        (&[OPEN_TASKS], "tasks", "gone", Selection::Delta),
        (&[OPEN_TASKS], "notes", "note", Selection::Skip),
        // The union of subscriptions; a whole one wins.
        (&[OPEN_TASKS, TASKS], "tasks", "open", Selection::Delta),
        (
            &[OPEN_TASKS, "SELECT * FROM tasks WHERE n = 2"],
            "tasks",
            "shut",
            Selection::Whole,
        ),
        (
            &["SELECT * FROM tasks USE IDS 'shut'"],
            "tasks",
            "shut",
            Selection::Whole,
        ),
        (
            &["SELECT * FROM tasks USE IDS 'shut'"],
            "tasks",
            "open",
            Selection::Skip,
        ),
        (
            &["SELECT * FROM tasks WHERE no_such_field > 3"],
            "tasks",
            "open",
            Selection::Skip,
        ),
    ];
    for &(subs, coll, doc, expected) in cases {
        let specs: Vec<SubscriptionSpec> = subs.iter().map(|q| spec(q)).collect();
        let interest = Interest::compile(&specs).expect("compiles");
        let state = p.doc(coll, doc).expect("stored");
        assert_eq!(
            interest.select(coll, &id(doc), &state),
            expected,
            "{subs:?} {coll}/{doc}"
        );
    }
    // Parameters.
    let param = Interest::compile(&[spec_with("SELECT * FROM tasks WHERE done = :d", r#"{"d": true}"#)]).unwrap();
    let shut = p.doc("tasks", "shut").unwrap();
    assert_eq!(param.select("tasks", &id("shut"), &shut), Selection::Whole);
    let open = p.doc("tasks", "open").unwrap();
    assert_eq!(param.select("tasks", &id("open"), &open), Selection::Skip);
}

#[test]
fn covers_is_whole_collections_holding_what_is_wanted() {
    // (what a peer holds, what the other wants, covered)
    let cases: &[(&[&str], &[&str], bool)] = &[
        (&[TASKS], &[TASKS], true),
        (&[TASKS], &[OPEN_TASKS], true),
        (&[TASKS], &[], true),
        (&[], &[], true),
        (&[TASKS], &[TASKS, NOTES], false),
        (&[OPEN_TASKS], &[TASKS], false),
        // Conservative: a filter covers nothing, not even itself.
        (&[OPEN_TASKS], &[OPEN_TASKS], false),
        (&[], &[TASKS], false),
    ];
    let compile = |qs: &[&str]| Interest::compile(&qs.iter().map(|q| spec(q)).collect::<Vec<_>>()).unwrap();
    for &(holds, wants, covered) in cases {
        assert_eq!(
            compile(holds).covers(&compile(wants)),
            covered,
            "{holds:?} covers {wants:?}"
        );
    }
}

/// (a) A collection the receiver did not subscribe to is never sent, in
/// the first round or later ones.
#[test]
fn an_unwanted_collection_is_never_sent() {
    let mut net = Net::new(Peer::new(1, &[]), Peer::new(2, &[TASKS]));
    net.a().insert("tasks", r#"{"_id": "t"}"#);
    net.a().insert("notes", r#"{"_id": "n"}"#);
    net.connect();
    net.run();
    net.on(0, |a| a.insert("notes", r#"{"_id": "n2"}"#));
    net.run();
    net.on(0, |a| a.set("notes", "n", "x", "1"));
    net.run();
    let b = &net.peers[1];
    assert_eq!(received(b), vec![("tasks".into(), r#""t""#.into())]);
    assert!(b.live("notes").is_empty());
    // Nothing of notes was in any batch, even an empty one.
    for m in &net.peers[0].sent {
        if let Message::Changes { changes, .. } = m {
            let unpacked = rhizome_engine::sync::pack::unpack(changes, Default::default()).unwrap();
            assert!(unpacked.iter().all(|c| c.collection == "tasks"), "{unpacked:?}");
        }
    }
}

/// (b) A filtered subscription: only matching documents arrive, whole.
#[test]
fn a_filtered_subscription_gets_matching_documents_whole() {
    let mut net = Net::new(Peer::new(1, &[TASKS]), Peer::new(2, &[OPEN_TASKS]));
    net.a().insert("tasks", r#"{"_id": "x", "done": true, "a": 1}"#);
    net.a().set("tasks", "x", "a", "2");
    net.a().set("tasks", "x", "b", r#""three""#);
    net.a().increment("tasks", "x", "c", 5);
    net.a().insert("tasks", r#"{"_id": "y", "done": false, "t": "keep"}"#);
    net.a().insert("tasks", r#"{"_id": "z", "done": true}"#);
    // A third origin also wrote x while it did not match.
    let mut c = Peer::new(3, &[]);
    c.insert("tasks", r#"{"_id": "x", "from_c": 1}"#);
    rhizome_engine::testing::sync_into(&c.store, &net.peers[0].store, sync_harness::NOW_MS + 10, 10);
    net.connect();
    net.run();
    let a_vv = net.peers[0].vv();
    assert_eq!(ids(&net.peers[1], "tasks"), vec![r#""y""#]);
    assert_eq!(received(&net.peers[1]), vec![("tasks".into(), r#""y""#.into())]);
    assert_eq!(net.peers[1].doc("tasks", "y"), net.peers[0].doc("tasks", "y"));
    // A holds all B wants: B records the claim.
    assert_eq!(net.peers[1].vv(), a_vv);

    // x starts matching: it arrives with every field, the same CRDT state.
    net.on(0, |a| a.set("tasks", "x", "done", "false"));
    net.run();
    let x = net.peers[1].get("tasks", "x").expect("x arrived");
    let fields = x.as_object().unwrap();
    for f in ["a", "b", "c", "from_c", "done"] {
        assert!(fields.contains_key(f), "{f} in {x}");
    }
    assert_eq!(fields["a"], v("2"));
    assert_eq!(net.peers[1].doc("tasks", "x"), net.peers[0].doc("tasks", "x"));

    // x stops matching: B's copy is no longer updated.
    let x_on_b = net.peers[1].doc("tasks", "x");
    net.on(0, |a| a.set("tasks", "x", "done", "true"));
    net.run();
    net.on(0, |a| a.set("tasks", "x", "a", "99"));
    net.run();
    assert_eq!(net.peers[1].doc("tasks", "x"), x_on_b);
    assert_eq!(
        net.peers[1].get("tasks", "x").unwrap().as_object().unwrap()["done"],
        v("false")
    );

    // A deletion in the subscribed collection is sent.
    net.on(0, |a| a.delete("tasks", "y"));
    net.run();
    assert_eq!(net.peers[1].get("tasks", "y"), None);
    assert!(net.peers[1].doc("tasks", "y").unwrap().deleted.is_some());
    assert_eq!(net.peers[1].doc("tasks", "y"), net.peers[0].doc("tasks", "y"));
    // B's own writes still flow to A (A takes the whole collection).
    net.on(1, |b| b.insert("tasks", r#"{"_id": "w", "done": false}"#));
    net.run();
    assert!(net.peers[0].get("tasks", "w").is_some());
    assert!(net.peers.iter().all(|p| p.closed.is_none()));
}

/// A whole-collection subscription takes deltas: an edit of a large
/// document sends that edit, not the document.
#[test]
fn a_whole_collection_subscription_gets_deltas() {
    let mut net = Net::new(Peer::new(1, &[]), Peer::new(2, &[TASKS])).rounds_only();
    let fields: Vec<String> = (0..20).map(|i| format!(r#""f{i}": {i}"#)).collect();
    net.a()
        .insert("tasks", &format!(r#"{{"_id": "big", {}}}"#, fields.join(", ")));
    net.connect();
    net.run();
    let first = net.peers[1].received().iter().map(|c| c.ops.len()).sum::<usize>();
    net.on(0, |a| a.set("tasks", "big", "f3", "33"));
    net.run();
    let all: usize = net.peers[1].received().iter().map(|c| c.ops.len()).sum();
    assert!(
        all - first <= 2,
        "one edit sent as {} ops (the document is {first})",
        all - first
    );
    assert_eq!(net.peers[1].doc("tasks", "big"), net.peers[0].doc("tasks", "big"));
}

/// (c) The claim of a round is recorded only when the sender holds all the
/// receiver wants (its subscriptions cover the receiver's).
#[test]
fn a_round_is_claimed_only_when_the_sender_holds_all_that_is_wanted() {
    // (receiver's subscriptions, sender's, claim recorded)
    let cases: &[(&[&str], &[&str], bool)] = &[
        (&[TASKS], &[TASKS], true),
        (&[OPEN_TASKS], &[TASKS], true),
        (&[], &[TASKS], true),
        (&[TASKS, NOTES], &[TASKS], false),
        (&[TASKS], &[OPEN_TASKS], false),
        (&[TASKS], &[], false),
        (&[OPEN_TASKS], &[OPEN_TASKS], false),
    ];
    for &(wants, holds, claimed) in cases {
        let context = format!("receiver {wants:?}, sender {holds:?}");
        let mut net = Net::new(Peer::new(1, holds), Peer::new(2, wants)).rounds_only();
        net.a().insert("tasks", r#"{"_id": "t", "done": false}"#);
        net.a().insert("notes", r#"{"_id": "n"}"#);
        net.connect();
        net.run();
        let (a, b) = (&net.peers[0], &net.peers[1]);
        // What is wanted arrives either way.
        let wants_notes = wants.contains(&NOTES);
        assert_eq!(b.get("notes", "n").is_some(), wants_notes, "{context}");
        let wants_tasks = wants.iter().any(|q| q.contains("FROM tasks"));
        assert_eq!(b.get("tasks", "t").is_some(), wants_tasks, "{context}");
        let batches: Vec<bool> = a
            .sent
            .iter()
            .filter_map(|m| match m {
                Message::Changes { complete, .. } => Some(*complete),
                _ => None,
            })
            .collect();
        assert!(
            !batches.is_empty() && batches.iter().all(|c| *c == claimed),
            "{context}: {batches:?}"
        );
        let last = b.applies.last().expect("applied");
        assert_eq!(last.claim.is_some(), claimed, "{context}");
        let expected = if claimed { a.vv() } else { VersionVector::new() };
        assert_eq!(b.vv(), expected, "{context}");

        // Either way, the session does not ask again for what it was sent:
        // a poke with no news is asked from the round's claim.
        let caught_up = b.caught_up;
        net.on(0, |a| a.session.handle_local_commit());
        net.run();
        let since = net.peers[1].requests().last().unwrap().1.clone();
        assert_eq!(since, net.peers[0].vv(), "{context}");
        assert_eq!(net.peers[1].caught_up, caught_up + 1, "{context}: nothing new");
    }
}

/// (d) Subscriptions that grow mid-session: `Subscribe`, then a round from
/// nothing, and the newly wanted documents arrive; shrinking only tells.
#[test]
fn grown_subscriptions_fetch_the_newly_wanted_documents() {
    let mut net = Net::new(Peer::new(1, &[TASKS]), Peer::new(2, &[OPEN_TASKS]));
    net.a().insert("tasks", r#"{"_id": "x", "done": true}"#);
    net.a().insert("tasks", r#"{"_id": "y", "done": false}"#);
    net.a().insert("notes", r#"{"_id": "n"}"#);
    net.connect();
    net.run();
    assert_eq!(ids(&net.peers[1], "tasks"), vec![r#""y""#]);
    assert_eq!(net.peers[1].vv(), net.peers[0].vv(), "claimed: x is covered yet absent");

    // (new subscriptions, tasks B then holds, notes B then holds, a fresh round)
    type Step<'a> = (&'a [&'a str], &'a [&'a str], &'a [&'a str], bool);
    let steps: &[Step] = &[
        (&[TASKS], &[r#""x""#, r#""y""#], &[], true),
        (&[TASKS, NOTES], &[r#""x""#, r#""y""#], &[r#""n""#], true),
        // A does not subscribe to notes, so it never vouches for them: B's
        // claims are not complete for notes and it asks afresh again.
        (&[NOTES], &[r#""x""#, r#""y""#], &[r#""n""#], true),
    ];
    for &(subs, tasks, notes, fresh) in steps {
        let context = format!("subscribing to {subs:?}");
        let specs: Vec<SubscriptionSpec> = subs.iter().map(|q| spec(q)).collect();
        let before = net.peers[1].sent.len();
        net.on(1, |b| b.session.handle_subscriptions(specs.clone()));
        let new: Vec<Message> = net.peers[1].sent[before..].to_vec();
        let mut expected = vec![Message::Subscribe {
            subscriptions: specs.clone(),
        }];
        if fresh {
            let round = net.peers[1].requests().last().unwrap().0;
            expected.push(Message::Request {
                round,
                delta: false,
                since: VersionVector::new(),
                subscriptions: Some(specs),
                of_hello: 0,
            });
        }
        assert_eq!(new, expected, "{context}");
        net.run();
        assert_eq!(ids(&net.peers[1], "tasks"), tasks, "{context}");
        assert_eq!(ids(&net.peers[1], "notes"), notes, "{context}");
        assert!(net.peers.iter().all(|p| p.closed.is_none()), "{context}");
    }
    // B now wants only notes: a new task is not sent.
    net.on(0, |a| a.insert("tasks", r#"{"_id": "later", "done": false}"#));
    net.on(0, |a| a.insert("notes", r#"{"_id": "n2"}"#));
    net.run();
    assert!(net.peers[1].get("tasks", "later").is_none());
    assert!(net.peers[1].get("notes", "n2").is_some());
}

/// (e) A subscription of the remote that cannot be used ends the session,
/// naming it; in a `Hello` or a later `Subscribe`.
#[test]
fn a_malformed_remote_subscription_closes_the_session_naming_it() {
    let param = "SELECT * FROM tasks WHERE done = :d";
    // (query, parameters, the reason also says)
    let cases: &[(&str, &str, &str)] = &[
        ("SELECT name FROM tasks", "{}", "projection"),
        ("SELECT COUNT(*) FROM tasks", "{}", ""),
        ("SELEC * FROM tasks", "{}", ""),
        ("SELECT * FROM tasks ORDER BY n", "{}", "ORDER BY"),
        ("SELECT * FROM tasks LIMIT 3", "{}", "LIMIT"),
        ("SELECT DISTINCT * FROM tasks", "{}", ""),
        (param, "{}", ""),
        (param, "not json", "not JSON"),
        ("SELECT * FROM system:indexes", "{}", ""),
        ("UPDATE tasks SET done = true", "{}", ""),
        ("", "{}", ""),
    ];
    let good = spec(TASKS);
    for &(query, params, says) in cases {
        let bad = spec_with(query, params);
        assert!(scope::check(&bad).is_err(), "{query:?} is refused by check");
        for via in ["Hello", "Subscribe"] {
            let context = format!("{query:?} in a {via}");
            let mut s = Session::new(config(1, vec![good.clone()]), 0);
            s.handle_connected();
            let subscriptions = vec![good.clone(), bad.clone()];
            let remote = |subscriptions| Hello {
                versions: (6, 6),
                peer: PeerId(2),
                subscriptions,
                max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
                heard: true,
                role: Role::BigPeer,
                vv_digest: 0,
            };
            let outs = match via {
                "Hello" => {
                    s.handle_frame(&frame(&Message::Hello(remote(subscriptions))));
                    std::iter::from_fn(|| s.poll_output()).collect::<Vec<_>>()
                }
                _ => {
                    s.handle_frame(&frame(&Message::Hello(remote(vec![good.clone()]))));
                    while s.poll_output().is_some() {}
                    s.handle_frame(&frame(&Message::Subscribe { subscriptions }));
                    std::iter::from_fn(|| s.poll_output()).collect::<Vec<_>>()
                }
            };
            let refusal = outs
                .iter()
                .find_map(|o| match o {
                    Output::Closed { refusal: Some(r) } => Some(r.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("{context}: closed, {outs:?}"));
            let Refusal::ProtocolViolation { reason } = &refusal else {
                panic!("{context}: {refusal:?}")
            };
            assert!(reason.contains(&format!("`{query}`")), "{context}: {reason}");
            assert!(reason.contains(says), "{context}: {reason}");
            let sent: Vec<Message> = outs
                .iter()
                .filter_map(|o| match o {
                    Output::Send(f) => Some(msg(f)),
                    _ => None,
                })
                .collect();
            assert!(
                sent.contains(&Message::Refuse(refusal.clone())),
                "{context}: the remote is told"
            );
            assert!(
                !outs.iter().any(|o| matches!(o, Output::ReadVersionVector { .. })),
                "{context}: nothing is asked"
            );
            assert!(s.is_closed(), "{context}");
        }
    }
    // Too many subscriptions.
    let many: Vec<SubscriptionSpec> = (0..=MAX_SUBSCRIPTIONS)
        .map(|i| spec(&format!("SELECT * FROM c{i}")))
        .collect();
    let mut s = Session::new(config(1, vec![]), 0);
    s.handle_connected();
    s.handle_frame(&frame(&Message::Hello(Hello {
        versions: (6, 6),
        peer: PeerId(2),
        subscriptions: many,
        max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        heard: false,
        role: Role::SmallPeer,
        vv_digest: 0,
    })));
    let closed = std::iter::from_fn(|| s.poll_output()).find_map(|o| match o {
        Output::Closed { refusal } => refusal,
        _ => None,
    });
    assert!(
        matches!(&closed, Some(Refusal::ProtocolViolation { reason }) if reason.contains("257 subscriptions")),
        "{closed:?}"
    );
}

/// (f) A request repeated (a duplicate, or a stale one) is served once.
#[test]
fn a_repeated_request_is_served_once() {
    let mut net = Net::new(Peer::new(1, &[TASKS]), Peer::new(2, &[TASKS])).rounds_only();
    net.a().insert("tasks", r#"{"_id": "t"}"#);
    net.connect();
    net.run();
    // A second round (a poke), so there is an older one.
    net.on(0, |a| a.session.handle_local_commit());
    net.run();
    let (round, since) = net.peers[1].requests().last().cloned().unwrap();
    assert!(round > 0);
    // (round of the repeated request, served)
    let cases: &[(u64, bool)] = &[(round, false), (round, false), (round - 1, false), (round + 1, true)];
    for &(r, served) in cases {
        let (serves, frames) = (net.peers[0].serves.len(), net.peers[0].sent.len());
        net.inject(
            0,
            &Message::Request {
                round: r,
                delta: false,
                since: since.clone(),
                subscriptions: None,
                of_hello: 0,
            },
        );
        assert_eq!(net.peers[0].serves.len() - serves, usize::from(served), "round {r}");
        assert_eq!(net.peers[0].sent.len() > frames, served, "round {r}");
        assert!(net.peers[0].closed.is_none());
    }
}

/// (g) `CaughtUp` follows a round that brought nothing.
#[test]
fn caught_up_follows_a_round_that_brought_nothing() {
    let mut net = Net::new(Peer::new(1, &[TASKS]), Peer::new(2, &[TASKS])).rounds_only();
    net.a().insert("tasks", r#"{"_id": "t"}"#);
    net.connect();
    net.run();
    // B received t: not caught up by that round. A received nothing: it is.
    assert_eq!((net.peers[0].caught_up, net.peers[1].caught_up), (1, 0));
    // A poke with no news: B asks and receives nothing.
    net.on(0, |a| a.session.handle_local_commit());
    net.run();
    assert_eq!((net.peers[0].caught_up, net.peers[1].caught_up), (1, 1));
    // A poke with news: a round that brings something is not caught up.
    net.on(0, |a| a.insert("tasks", r#"{"_id": "u"}"#));
    net.run();
    assert_eq!((net.peers[0].caught_up, net.peers[1].caught_up), (1, 1));
    assert!(net.peers[1].get("tasks", "u").is_some());
}

/// (d) under loss: the `Subscribe` announcing grown subscriptions is lost.
/// The fresh round is then served for the old ones, and must not be taken
/// as complete for the new ones: the newly wanted documents still arrive.
#[test]
fn grown_subscriptions_survive_a_lost_subscribe() {
    let mut net = Net::new(Peer::new(1, &[TASKS]), Peer::new(2, &[OPEN_TASKS]));
    net.a().insert("tasks", r#"{"_id": "x", "done": true}"#);
    net.a().insert("tasks", r#"{"_id": "y", "done": false}"#);
    net.connect();
    net.run();
    net.losses.push((1, |m| matches!(m, Message::Subscribe { .. })));
    net.on(1, |b| b.session.handle_subscriptions(vec![spec(TASKS)]));
    net.run();
    assert_eq!(net.lost, 1);
    assert_eq!(ids(&net.peers[1], "tasks"), vec![r#""x""#, r#""y""#], "x is wanted now");
}

/// (b) A document can start matching through a write of the receiver
/// itself (made on its stale copy): it must then arrive whole too, with
/// the sender's writes made while it did not match.
#[test]
fn a_document_made_matching_by_the_receivers_own_write_arrives_whole() {
    let mut net = Net::new(Peer::new(1, &[TASKS]), Peer::new(2, &[OPEN_TASKS]));
    net.a().insert("tasks", r#"{"_id": "x", "done": false, "a": 1}"#);
    net.connect();
    net.run();
    // x stops matching; A edits it; B's copy stays as it was.
    net.on(0, |a| a.set("tasks", "x", "done", "true"));
    net.run();
    net.on(0, |a| a.set("tasks", "x", "a", "2"));
    net.run();
    assert_eq!(
        net.peers[1].get("tasks", "x"),
        Some(v(r#"{"_id": "x", "done": false, "a": 1}"#))
    );
    // B reopens x on its copy (a later write): x matches again, on A too.
    net.on(1, |b| b.set("tasks", "x", "done", "false"));
    net.run();
    net.on(0, |a| a.session.handle_local_commit());
    net.run();
    let on_a = net.peers[0].get("tasks", "x");
    assert_eq!(on_a, Some(v(r#"{"_id": "x", "done": false, "a": 2}"#)));
    assert_eq!(net.peers[1].get("tasks", "x"), on_a, "B's x has A's edit");
    assert_eq!(net.peers[1].doc("tasks", "x"), net.peers[0].doc("tasks", "x"));
}

/// (d) Subscriptions that change during the handshake (the link is up,
/// our `Hello` went out with the old ones): the remote learns the new ones
/// once the session opens, and the first round asks afresh, so no claim is
/// recorded from a round served for the old subscriptions.
#[test]
fn subscriptions_changed_during_the_handshake_reach_the_remote() {
    let mut net = Net::new(Peer::new(1, &[TASKS]), Peer::new(2, &[]));
    net.a().insert("tasks", r#"{"_id": "x", "done": true}"#);
    net.a().insert("tasks", r#"{"_id": "y", "done": false}"#);
    net.connect();
    net.on(1, |b| b.session.handle_subscriptions(vec![spec(TASKS)]));
    net.run();
    assert_eq!(ids(&net.peers[1], "tasks"), vec![r#""x""#, r#""y""#]);
    // Later writes arrive too (A knows what B wants).
    net.on(0, |a| a.insert("tasks", r#"{"_id": "z"}"#));
    net.run();
    assert!(net.peers[1].get("tasks", "z").is_some());
    assert!(net.peers.iter().all(|p| p.closed.is_none()));
}

/// (d) Subscriptions that grow while a round is in flight: that round was
/// served for the old ones, so its claim is not recorded (it would cover
/// the newly wanted writes the remote skipped); the fresh round after it
/// brings them.
#[test]
fn a_round_in_flight_when_subscriptions_grow_claims_nothing() {
    let mut net = Net::new(Peer::new(1, &[TASKS]), Peer::new(2, &[])).rounds_only();
    net.connect();
    net.run();
    net.on(0, |a| a.insert("tasks", r#"{"_id": "x"}"#));
    // Until A has answered B's request (for nothing: B wants nothing yet).
    while !net.peers[0]
        .sent
        .iter()
        .any(|m| matches!(m, Message::Changes { round, .. } if *round > 0))
    {
        assert!(net.step(), "A answers");
    }
    let in_flight = net.peers[1].requests().last().unwrap().0;
    net.on(1, |b| b.session.handle_subscriptions(vec![spec(TASKS)]));
    net.run();
    let applied = net.peers[1].applies.iter().find(|a| a.round == in_flight && a.last);
    assert!(applied.is_some_and(|a| a.claim.is_none()), "{applied:?}");
    assert!(net.peers[1].get("tasks", "x").is_some());
}

//! Review of the sync protocol 2 changes: claims, rebase after tombstone
//! reaping, sync scopes, subscription growth, multihop convergence, and
//! the observed-remove merge laws.
//!
//! Peers are carried from one two-peer [`Net`] to the next with their
//! stores (a link going down and another coming up), so a line A-B-C is a
//! sequence of pairwise sessions in virtual time.

mod sync_harness;

use proptest::prelude::*;
use rhizome_engine::doc::{Doc, Inferred, Num, Op, Whole};
use rhizome_engine::hlc::{Hlc, PeerId, Stamp};
use rhizome_engine::mem::MemKv;
use rhizome_engine::store::{Store, StoreConfig};
use rhizome_engine::sync::session::{Session, SessionConfig};
use rhizome_engine::sync::wire::Role;
use rhizome_engine::value::Value;
use std::collections::BTreeMap;
use sync_harness::{config, spec, v, Net, Peer};

const TASKS: &str = "SELECT * FROM tasks";
const OPEN_TASKS: &str = "SELECT * FROM tasks WHERE done = false";
const NOTES: &str = "SELECT * FROM notes";

/// Short tombstone lifetime for the reaping tests.
const TTL_MS: u64 = 1_000;

/// A harness peer whose store reaps tombstones after [`TTL_MS`].
fn reaping_peer(n: u64, subs: &[&str]) -> Peer {
    let mut p = Peer::new(n, subs);
    let cfg = StoreConfig {
        tombstone_ttl_ms: TTL_MS,
        ..StoreConfig::default()
    };
    p.store = Store::open(MemKv::new(), cfg, PeerId(n), n).expect("store");
    p
}

/// Gives `p` a new session (a new link), keeping its store: `subs` are its
/// subscriptions from now on, `role` what it says it is.
fn relink(p: &mut Peer, subs: &[&str], role: Role, first_round: u64) {
    let me = p.store.peer().0;
    // As a driver does: the store's claims are complete for what the peer
    // last claimed in full.
    let claimed = p.claimed_for.clone().unwrap_or_else(|| p.first_subscriptions.clone());
    let cfg = SessionConfig {
        role,
        claimed_for: Some(claimed),
        ..config(me, subs.iter().map(|q| spec(q)).collect())
    };
    p.session = Session::new(cfg, first_round);
    p.interest = std::sync::Arc::new(rhizome_engine::sync::scope::Interest::none());
    p.established = None;
    p.closed = None;
}

/// Runs one session between `a` and `b` to quiescence and hands them back.
fn sync(a: Peer, b: Peer) -> (Peer, Peer) {
    let mut net = Net::new(a, b);
    net.connect();
    net.run();
    let [a, b] = net.peers;
    (a, b)
}

/// Whether `p` holds the writes of `doc` (by stamp) of `other`'s copy.
fn claims_without_holding(p: &Peer, other: &Peer, coll: &str, doc: &str) -> bool {
    let theirs = other.doc(coll, doc).expect("the other side holds it");
    let held = p.doc(coll, doc).map(|d| d.vv).unwrap_or_default();
    let vv = p.vv();
    let over = theirs
        .vv
        .iter()
        .any(|(peer, hlc)| vv.get(peer) >= hlc && held.get(peer) < hlc);
    over
}

// ---------------------------------------------------------------------
// (3) Tombstone reaping and rebase
// ---------------------------------------------------------------------

/// A peer that edited a document offline while the other side deleted it
/// and reaped the tombstone: after the rebase, both sides must show the
/// document with exactly the offline edit (add-wins), and hold the same
/// state. The returning peer must not keep the deleted fields.
#[test]
fn rebase_keeps_only_the_unseen_edit_of_a_document_deleted_and_reaped_meanwhile() {
    let mut a = reaping_peer(1, &[TASKS]);
    let mut b = reaping_peer(2, &[TASKS]);
    a.insert("tasks", r#"{"_id": "x", "title": "old", "done": false}"#);
    (a, b) = sync(a, b);
    assert!(b.get("tasks", "x").is_some());

    // Offline: A deletes x and, past the lifetime, reaps it; B edits x.
    a.delete("tasks", "x");
    a.clock += 10 * TTL_MS;
    a.write(|w| {
        assert_eq!(w.reap_tombstones(100).expect("reap"), 1);
    });
    b.set("tasks", "x", "note", r#""offline""#);

    relink(&mut a, &[TASKS], Role::SmallPeer, 100);
    relink(&mut b, &[TASKS], Role::SmallPeer, 100);
    let (a, b) = sync(a, b);
    assert_eq!(b.rebases, 1, "B was behind the reaped deletion");
    // A: the document comes back with the offline edit only.
    assert_eq!(a.get("tasks", "x"), Some(v(r#"{"_id": "x", "note": "offline"}"#)));
    // B must agree: the deleted fields stay deleted.
    assert_eq!(
        b.get("tasks", "x"),
        a.get("tasks", "x"),
        "the returning peer resurrected the deleted fields"
    );
}

/// Regression: a returning peer whose documents the other side still holds
/// (or deleted) rebases, deleted documents stay deleted, and its own
/// offline writes (a new document, an edit of a live one) survive.
#[test]
fn rebase_drops_deleted_documents_and_keeps_offline_writes() {
    let mut a = reaping_peer(1, &[TASKS]);
    let mut b = reaping_peer(2, &[TASKS]);
    a.insert("tasks", r#"{"_id": "gone", "done": false}"#);
    a.insert("tasks", r#"{"_id": "kept", "done": false}"#);
    (a, b) = sync(a, b);

    a.delete("tasks", "gone");
    a.clock += 10 * TTL_MS;
    a.write(|w| {
        assert_eq!(w.reap_tombstones(100).expect("reap"), 1);
    });
    b.insert("tasks", r#"{"_id": "new", "done": true}"#);
    b.set("tasks", "kept", "done", "true");

    relink(&mut a, &[TASKS], Role::SmallPeer, 100);
    relink(&mut b, &[TASKS], Role::SmallPeer, 100);
    let (a, b) = sync(a, b);
    assert_eq!(b.rebases, 1);
    assert!(b.get("tasks", "gone").is_none(), "no resurrection");
    assert!(a.get("tasks", "gone").is_none(), "no resurrection");
    assert_eq!(a.live("tasks"), b.live("tasks"));
    assert_eq!(
        a.get("tasks", "kept"),
        Some(v(r#"{"_id": "kept", "done": true}"#)),
        "the offline edit survives"
    );
    assert!(a.get("tasks", "new").is_some(), "the offline insert survives");
}

/// Regression: a concurrent write that brought a deleted document back
/// keeps the reaper from removing it.
#[test]
fn reaping_skips_a_document_revived_by_a_concurrent_write() {
    let mut a = reaping_peer(1, &[TASKS]);
    let mut b = reaping_peer(2, &[TASKS]);
    a.insert("tasks", r#"{"_id": "x", "done": false}"#);
    (a, b) = sync(a, b);
    a.delete("tasks", "x");
    b.set("tasks", "x", "done", "true");
    relink(&mut a, &[TASKS], Role::SmallPeer, 100);
    relink(&mut b, &[TASKS], Role::SmallPeer, 100);
    let (mut a, b) = sync(a, b);
    assert_eq!(a.get("tasks", "x"), Some(v(r#"{"_id": "x", "done": true}"#)));
    a.clock += 10 * TTL_MS;
    a.write(|w| {
        assert_eq!(w.reap_tombstones(100).expect("reap"), 0);
    });
    assert_eq!(a.get("tasks", "x"), b.get("tasks", "x"));
}

// ---------------------------------------------------------------------
// (4) Claims
// ---------------------------------------------------------------------

/// A collection whose sync scope keeps it from the receiver (BigPeerOnly,
/// sent to a small peer) is skipped, yet the round is `complete` and the
/// receiver claims the sender's whole vector, writes of the withheld
/// documents included.
#[test]
fn a_round_that_withholds_documents_by_sync_scope_is_not_claimed_over_them() {
    let mut a = Peer::new(1, &[TASKS]);
    let b = Peer::new(2, &[TASKS]);
    a.write(|w| {
        w.set_setting("USER_COLLECTION_SYNC_SCOPES", &v(r#"{"tasks": "BigPeerOnly"}"#))
            .expect("setting");
    });
    a.insert("tasks", r#"{"_id": "t", "done": false}"#);
    let (a, b) = sync(a, b);
    assert!(b.get("tasks", "t").is_none(), "the scope keeps t from a small peer");
    assert!(
        !claims_without_holding(&b, &a, "tasks", "t"),
        "B claims A's write of t without holding it: {:?}",
        b.vv()
    );
}

/// The same, end to end along a line A - B - C: C is the big peer that
/// A's scope sends `tasks` to, but C first syncs with the small peer B,
/// which claimed A's writes it was never sent; C then never gets them,
/// not even from A itself.
#[test]
fn a_big_peer_behind_a_small_one_never_gets_a_big_peer_only_document() {
    let mut a = Peer::new(1, &[TASKS]);
    let mut b = Peer::new(2, &[TASKS]);
    let mut c = Peer::new(3, &[TASKS]);
    relink(&mut c, &[TASKS], Role::BigPeer, 0);
    a.write(|w| {
        w.set_setting("USER_COLLECTION_SYNC_SCOPES", &v(r#"{"tasks": "BigPeerOnly"}"#))
            .expect("setting");
    });
    a.insert("tasks", r#"{"_id": "t", "done": false}"#);
    (a, b) = sync(a, b);
    relink(&mut b, &[TASKS], Role::SmallPeer, 100);
    (b, c) = sync(b, c);
    relink(&mut a, &[TASKS], Role::SmallPeer, 200);
    relink(&mut c, &[TASKS], Role::BigPeer, 200);
    let (a, c) = sync(a, c);
    assert!(b.get("tasks", "t").is_none());
    assert_eq!(
        c.get("tasks", "t"),
        a.get("tasks", "t"),
        "the big peer C lacks A's BigPeerOnly document for good"
    );
}

/// Subscriptions that grow while no session is open (or between two
/// links): the next session asks with the store's vector, which claims
/// the writes of the newly wanted collection (claimed when it was not
/// wanted), so those documents never arrive.
#[test]
fn subscriptions_grown_between_sessions_fetch_the_newly_wanted_documents() {
    let a = Peer::new(1, &[TASKS, NOTES]);
    let b = Peer::new(2, &[NOTES]);
    let (mut a, mut b) = {
        let (mut a, b) = (a, b);
        a.insert("tasks", r#"{"_id": "t", "done": false}"#);
        a.insert("notes", r#"{"_id": "n"}"#);
        sync(a, b)
    };
    assert!(b.get("notes", "n").is_some());
    // B now wants tasks too (persisted subscriptions; a new link).
    relink(&mut a, &[TASKS, NOTES], Role::SmallPeer, 100);
    relink(&mut b, &[TASKS, NOTES], Role::SmallPeer, 100);
    let (a, b) = sync(a, b);
    assert_eq!(
        b.get("tasks", "t"),
        a.get("tasks", "t"),
        "a task written before B subscribed to tasks never arrives"
    );
}

/// Subscriptions that grow mid-session ask afresh; when that catch-up
/// round fails to apply, the retry must still be a catch-up round.
#[test]
fn a_failed_apply_in_a_catch_up_round_keeps_it_a_catch_up_round() {
    let mut a = Peer::new(1, &[TASKS, NOTES]);
    a.insert("tasks", r#"{"_id": "t", "done": false}"#);
    a.insert("notes", r#"{"_id": "n"}"#);
    let mut net = Net::new(a, Peer::new(2, &[NOTES]));
    net.connect();
    net.run();
    assert!(net.peers[1].get("notes", "n").is_some());

    net.b().fail_applies = true;
    net.on(1, |b| b.session.handle_subscriptions(vec![spec(TASKS), spec(NOTES)]));
    // Let the catch-up round be served and fail once, then let it work.
    while net.peers[1].applies.iter().all(|x| x.ok) {
        assert!(net.step(), "the catch-up round is served");
    }
    net.b().fail_applies = false;
    net.run();
    let asked: Vec<_> = net.peers[1].requests();
    assert_eq!(
        net.peers[1].get("tasks", "t"),
        net.peers[0].get("tasks", "t"),
        "the retry asked from the claimed vector: {asked:?}"
    );
}

/// Along a line A - B - C: B grows its subscriptions to a collection it
/// never held; before its catch-up with A completes, C (wanting that
/// collection) syncs with B, which now looks complete, and claims A's
/// writes B does not hold.
#[test]
fn a_peer_whose_subscriptions_just_grew_does_not_pass_on_claims_it_cannot_back() {
    let mut a = Peer::new(1, &[TASKS, NOTES]);
    let mut b = Peer::new(2, &[NOTES]);
    let mut c = Peer::new(3, &[TASKS]);
    a.insert("tasks", r#"{"_id": "t", "done": false}"#);
    a.insert("notes", r#"{"_id": "n"}"#);
    (a, b) = sync(a, b);
    // B's subscriptions grow while its link to A is down; it meets C first.
    relink(&mut b, &[TASKS, NOTES], Role::SmallPeer, 100);
    (b, c) = sync(b, c);
    assert!(b.get("tasks", "t").is_none(), "B does not hold t yet");
    assert!(
        !claims_without_holding(&c, &a, "tasks", "t"),
        "C claims A's write of t that B never had: C {:?}",
        c.vv()
    );
    let _ = (a, b);
}

/// Regression: a filtered receiver behind a whole-collection sender claims
/// the sender's vector; a document that did not match and later matches
/// (by a third peer's write relayed through the sender) arrives whole.
#[test]
fn multihop_filtered_receiver_gets_a_document_that_starts_matching_whole() {
    let mut a = Peer::new(1, &[TASKS]);
    let mut b = Peer::new(2, &[TASKS]);
    let mut c = Peer::new(3, &[OPEN_TASKS]);
    a.insert("tasks", r#"{"_id": "x", "done": true, "title": "t"}"#);
    (a, b) = sync(a, b);
    relink(&mut b, &[TASKS], Role::SmallPeer, 100);
    (b, c) = sync(b, c);
    assert!(c.get("tasks", "x").is_none());
    // A reopens x; it travels A -> B -> C.
    relink(&mut a, &[TASKS], Role::SmallPeer, 200);
    relink(&mut b, &[TASKS], Role::SmallPeer, 200);
    a.set("tasks", "x", "done", "false");
    (a, b) = sync(a, b);
    relink(&mut b, &[TASKS], Role::SmallPeer, 300);
    relink(&mut c, &[OPEN_TASKS], Role::SmallPeer, 300);
    let (b, c) = sync(b, c);
    assert_eq!(c.get("tasks", "x"), a.get("tasks", "x"));
    assert_eq!(c.doc("tasks", "x"), b.doc("tasks", "x"), "identical CRDT state");
}

// ---------------------------------------------------------------------
// (2) Convergence along a line A - B - C
// ---------------------------------------------------------------------

fn random_write(p: &mut Peer, rng: &mut sync_harness::Rng, k: u64) {
    let doc = format!("d{}", rng.below(4));
    match rng.below(6) {
        0 => p.insert("tasks", &format!(r#"{{"_id": "{doc}", "done": false, "k": {k}}}"#)),
        1 => p.set("tasks", &doc, "title", &format!(r#""w{k}""#)),
        2 => p.set("tasks", &doc, "done", if rng.chance(500) { "true" } else { "false" }),
        3 => p.increment("tasks", &doc, "n", 1 + rng.below(3) as i64),
        4 => p.delete("tasks", &doc),
        _ => p.set("tasks", &doc, "obj", &format!(r#"{{"a": {k}, "b": [{k}]}}"#)),
    }
}

/// Random writes at three peers in a line A - B - C, all subscribing to
/// the whole collection, with links up in a random order and lossy: in
/// the end, after the line is synced both ways, every peer holds the same
/// CRDT state and vector.
#[test]
fn a_line_of_three_whole_subscribers_converges() {
    for seed in 0..25u64 {
        let mut rng = sync_harness::Rng::new(seed);
        let mut peers: Vec<Option<Peer>> = (1..=3).map(|n| Some(Peer::new(n, &[TASKS]))).collect();
        let mut round = 0;
        for step in 0..12u64 {
            for _ in 0..rng.below(3) {
                let i = rng.below(3) as usize;
                random_write(peers[i].as_mut().unwrap(), &mut rng, step);
            }
            let left = rng.below(2) as usize; // link 0-1 or 1-2
            round += 100;
            let (mut x, mut y) = (peers[left].take().unwrap(), peers[left + 1].take().unwrap());
            relink(&mut x, &[TASKS], Role::SmallPeer, round);
            relink(&mut y, &[TASKS], Role::SmallPeer, round);
            let mut net = Net::new(x, y);
            net.label = format!("seed {seed} step {step}");
            net.faults = Some(sync_harness::Faults {
                rng: sync_harness::Rng::new(seed * 1000 + step),
                drop: 100,
                dup: 50,
                reorder: 100,
                max_delay_ms: 5,
            });
            net.connect();
            // A write in the middle of the session.
            net.run_until(net.now + 3);
            let side = rng.below(2) as usize;
            let k = 100 + step;
            let mut wrng = rng.clone();
            net.on(side, |p| random_write(p, &mut wrng, k));
            rng = wrng;
            net.run();
            let [x, y] = net.peers;
            peers[left] = Some(x);
            peers[left + 1] = Some(y);
        }
        // Settle: 0-1, 1-2, 0-1 on perfect links.
        for left in [0usize, 1, 0] {
            round += 100;
            let (mut x, mut y) = (peers[left].take().unwrap(), peers[left + 1].take().unwrap());
            relink(&mut x, &[TASKS], Role::SmallPeer, round);
            relink(&mut y, &[TASKS], Role::SmallPeer, round);
            let mut net = Net::new(x, y);
            net.connect();
            net.run();
            net.assert_converged("tasks", &format!("seed {seed}, settling link {left}"));
            let [x, y] = net.peers;
            peers[left] = Some(x);
            peers[left + 1] = Some(y);
        }
        let p: Vec<Peer> = peers.into_iter().map(Option::unwrap).collect();
        assert_eq!(p[0].states("tasks"), p[2].states("tasks"), "seed {seed}: A and C");
        assert_eq!(p[0].vv(), p[2].vv(), "seed {seed}");
    }
}

/// A document that a deletion and a concurrent edit left not matching a filtered subscription keeps its
/// deleted fields at the filtered receiver, though "deletions in a
/// subscribed collection always travel".
#[test]
fn a_deletion_reaches_a_filtered_receiver_even_when_a_concurrent_edit_revived_the_document() {
    let mut a = Peer::new(1, &[TASKS]);
    let mut b = Peer::new(2, &[TASKS]);
    let mut c = Peer::new(3, &[OPEN_TASKS]);
    a.insert("tasks", r#"{"_id": "x", "done": false, "title": "t"}"#);
    (a, b) = sync(a, b);
    relink(&mut a, &[TASKS], Role::SmallPeer, 100);
    (a, c) = sync(a, c);
    assert!(c.get("tasks", "x").is_some());
    // Concurrently: A deletes x, B writes a new field.
    a.delete("tasks", "x");
    b.set("tasks", "x", "note", r#""n""#);
    relink(&mut a, &[TASKS], Role::SmallPeer, 200);
    relink(&mut b, &[TASKS], Role::SmallPeer, 200);
    (a, b) = sync(a, b);
    assert_eq!(a.get("tasks", "x"), Some(v(r#"{"_id": "x", "note": "n"}"#)));
    relink(&mut a, &[TASKS], Role::SmallPeer, 300);
    relink(&mut c, &[OPEN_TASKS], Role::SmallPeer, 300);
    let (_a, c) = sync(a, c);
    let _ = b;
    let shown = c.get("tasks", "x");
    assert!(
        shown
            .as_ref()
            .is_none_or(|d| d.as_object().unwrap().get("title").is_none()),
        "C still shows the deleted fields: {shown:?}"
    );
}

// ---------------------------------------------------------------------
// (1) Merge laws with observed-remove
// ---------------------------------------------------------------------

#[derive(Clone, Debug)]
enum E {
    SetObj(Vec<String>, Value),
    SetReg(Vec<String>, Value),
    Replace(BTreeMap<String, Value>),
    Unset(Vec<String>),
    Incr(Vec<String>, i64),
    Delete,
}

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b"]).prop_map(str::to_string)
}

fn path() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(key(), 1..=2)
}

fn val() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![(0i64..3).prop_map(Value::Int), Just(Value::Null)];
    prop_oneof![
        leaf.clone(),
        prop::collection::btree_map(key(), leaf, 0..3).prop_map(Value::Object)
    ]
}

fn e() -> impl Strategy<Value = E> {
    prop_oneof![
        3 => (path(), val()).prop_map(|(p, v)| E::SetObj(p, v)),
        1 => (path(), val()).prop_map(|(p, v)| E::SetReg(p, v)),
        2 => prop::collection::btree_map(key(), val(), 0..3).prop_map(E::Replace),
        2 => path().prop_map(E::Unset),
        3 => (path(), 1i64..3).prop_map(|(p, n)| E::Incr(p, n)),
        1 => Just(E::Delete),
    ]
}

/// (replica, edit) or (replica, deliver everything of another replica's ops
/// it made so far, in a shuffled order given by the seed).
#[derive(Clone, Debug)]
enum S {
    Edit(usize, E),
    Pull(usize, usize, u64),
}

fn scenario() -> impl Strategy<Value = Vec<S>> {
    let edit = (0..3usize, e()).prop_map(|(r, e)| S::Edit(r, e));
    let pull = (0..3usize, 0..3usize, any::<u64>()).prop_map(|(r, from, s)| S::Pull(r, from, s));
    prop::collection::vec(prop_oneof![2 => edit, 1 => pull], 1..30)
}

struct R {
    peer: PeerId,
    last: u64,
    doc: Doc,
    /// Every op this replica has applied (its own and received).
    log: Vec<Op>,
}

impl R {
    fn edit(&mut self, e: &E) {
        let seen = self.doc.vv.iter().map(|(_, h)| h.0).max().unwrap_or(0);
        self.last = self.last.max(seen) + 1;
        let s = Stamp {
            hlc: Hlc(self.last),
            peer: self.peer,
        };
        let mut out = Vec::new();
        let d = &self.doc;
        match e {
            E::SetObj(p, v) => d.ops_set(p, v, s, &Inferred, &mut out),
            E::SetReg(p, v) => d.ops_set(p, v, s, &Whole, &mut out),
            E::Replace(f) => d.ops_replace(f, s, &Inferred, &mut out),
            E::Unset(p) => d.ops_unset(p, s, &mut out),
            E::Incr(p, n) => d.ops_increment(p, Num::Int(*n), s, &mut out),
            E::Delete => {
                if d.exists() {
                    d.ops_delete(s, &mut out)
                }
            }
        }
        for op in &out {
            self.doc.apply(op);
        }
        self.log.extend(out);
    }
}

fn shuffle(ops: &mut [Op], seed: u64) {
    let mut rng = sync_harness::Rng::new(seed);
    for i in (1..ops.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        ops.swap(i, j);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Replicas edit concurrently (object sets over maps and counters,
    /// register sets, replaces, unsets, increments, deletes), pulling each
    /// other's ops in shuffled orders; once every replica has every op,
    /// in any order, the states are identical, and a replica that saw
    /// everything and then unset a path leaves nothing there anywhere.
    #[test]
    fn observed_remove_converges_in_any_order(steps in scenario(), seed in any::<u64>()) {
        let mut rs: Vec<R> = (1..=3u64)
            .map(|p| R { peer: PeerId(p), last: 0, doc: Doc::new(), log: Vec::new() })
            .collect();
        for s in &steps {
            match s {
                S::Edit(r, e) => rs[*r].edit(e),
                S::Pull(r, from, sd) => {
                    let mut ops = rs[*from].log.clone();
                    shuffle(&mut ops, *sd);
                    for op in &ops {
                        rs[*r].doc.apply(op);
                    }
                    rs[*r].log.extend(ops);
                }
            }
        }
        let mut all: Vec<Op> = rs.iter().flat_map(|r| r.log.clone()).collect();
        let partial: Vec<Doc> = rs.iter().map(|r| r.doc.clone()).collect();
        let mut finals = Vec::new();
        for (i, r) in rs.iter_mut().enumerate() {
            shuffle(&mut all, seed.wrapping_add(i as u64));
            for op in &all {
                r.doc.apply(op);
            }
            finals.push(r.doc.clone());
        }
        // Also from scratch, in yet another order.
        let mut fresh = Doc::new();
        shuffle(&mut all, seed ^ 0xABCD);
        for op in &all {
            fresh.apply(op);
        }
        for d in &finals {
            prop_assert_eq!(d, &finals[0]);
            prop_assert_eq!(d.render(), finals[0].render());
        }
        prop_assert_eq!(&fresh, &finals[0]);

        // Observed-remove: an unset made after seeing everything removes
        // the path on every replica once delivered.
        let path = vec!["a".to_string()];
        rs[0].doc = finals[0].clone();
        let before = rs[0].log.len();
        rs[0].edit(&E::Unset(path.clone()));
        let unset: Vec<Op> = rs[0].log[before..].to_vec();
        let mut other = finals[1].clone();
        for op in unset.iter().rev() {
            other.apply(op);
        }
        prop_assert_eq!(other.get(&path), None, "{:?}", other.render());
        prop_assert_eq!(rs[0].doc.get(&path), None);

        // Delta sync as the store does it: one `since` (the receiver's
        // store vector) for every origin's visit; the parts rebuild the
        // state exactly, from nothing and from an intermediate replica.
        for base in std::iter::once(Doc::new()).chain(partial) {
            let since = base.vv.clone();
            let mut via = base;
            let origins: Vec<PeerId> = finals[0].vv.iter().map(|(p, _)| p).collect();
            for o in origins.into_iter().rev() {
                for op in finals[0].delta_from(&since, o) {
                    via.apply(&op);
                }
            }
            prop_assert_eq!(&via, &finals[0]);
        }
    }
}

/// A document written by a filtered peer is held by the big side without
/// being claimed (the filtered peer's rounds are never complete). Once that
/// document is deleted and reaped, the reaped horizon holds a write the
/// serving side's own vector does not: no asker can ever dominate it, so
/// every round of every peer is answered with `Rebase` (evict, then a
/// first-contact transfer), however up to date the asker is.
#[test]
fn a_reaped_document_the_server_never_claimed_does_not_rebase_every_round() {
    let mut n = reaping_peer(1, &[OPEN_TASKS]);
    let mut s = reaping_peer(2, &[TASKS]);
    n.insert("tasks", r#"{"_id": "x", "done": false}"#);
    (n, s) = sync(n, s);
    assert!(s.get("tasks", "x").is_some());
    let _ = n;
    s.delete("tasks", "x");
    s.clock += 10 * TTL_MS;
    s.write(|w| {
        assert_eq!(w.reap_tombstones(100).expect("reap"), 1);
    });

    // B, whole-collection, meets S for the first time (a fresh asker: no rebase).
    let b = reaping_peer(3, &[TASKS]);
    relink(&mut s, &[TASKS], Role::SmallPeer, 100);
    let mut net = Net::new(s, b);
    net.connect();
    net.run();
    net.assert_converged("tasks", "first contact");
    let rebases = net.peers[1].rebases;
    // Then a few new writes at S, each a poke and a round.
    for k in 0..3 {
        net.on(0, |s| {
            s.insert("tasks", &format!(r#"{{"_id": "y{k}", "done": false}}"#))
        });
        net.run();
    }
    net.assert_converged("tasks", "after new writes");
    assert_eq!(
        net.peers[1].rebases, rebases,
        "an up-to-date asker was rebased on every round"
    );
}

/// A line A - B - C where A and B want `tasks` whole and C only open
/// tasks, with random writes everywhere (C's too), lossy links up in a
/// random order. After settling: A and B are identical, and every task
/// open on B is at C with B's exact CRDT state.
#[test]
fn a_line_with_a_filtered_end_converges_where_both_hold_a_document() {
    let subs: [&[&str]; 3] = [&[TASKS], &[TASKS], &[OPEN_TASKS]];
    let mut compared = 0;
    for seed in 0..25u64 {
        let mut rng = sync_harness::Rng::new(seed + 7_000);
        let mut peers: Vec<Option<Peer>> = (0..3).map(|i| Some(Peer::new(i as u64 + 1, subs[i]))).collect();
        let mut round = 0;
        let link = |peers: &mut Vec<Option<Peer>>, left: usize, faults: Option<u64>, round: u64| {
            let (mut x, mut y) = (peers[left].take().unwrap(), peers[left + 1].take().unwrap());
            relink(&mut x, subs[left], Role::SmallPeer, round);
            relink(&mut y, subs[left + 1], Role::SmallPeer, round);
            let mut net = Net::new(x, y);
            net.label = format!("seed {seed} round {round}");
            net.faults = faults.map(|s| sync_harness::Faults {
                rng: sync_harness::Rng::new(s),
                drop: 100,
                dup: 50,
                reorder: 100,
                max_delay_ms: 5,
            });
            net.connect();
            net.run();
            let [x, y] = net.peers;
            peers[left] = Some(x);
            peers[left + 1] = Some(y);
        };
        for step in 0..12u64 {
            for _ in 0..1 + rng.below(3) {
                let i = rng.below(3) as usize;
                random_write(peers[i].as_mut().unwrap(), &mut rng, step);
            }
            round += 100;
            link(&mut peers, rng.below(2) as usize, Some(seed * 1000 + step), round);
        }
        for left in [1usize, 0, 1, 0, 1] {
            round += 100;
            link(&mut peers, left, None, round);
        }
        let p: Vec<Peer> = peers.into_iter().map(Option::unwrap).collect();
        assert_eq!(p[0].states("tasks"), p[1].states("tasks"), "seed {seed}: A and B");
        assert_eq!(p[0].vv(), p[1].vv(), "seed {seed}: A and B");
        let (b, c) = (p[1].states("tasks"), p[2].states("tasks"));
        for (id, doc) in &b {
            let open = doc.render().is_some_and(|f| f.get("done") == Some(&Value::Bool(false)));
            if open {
                assert_eq!(c.get(id), Some(doc), "seed {seed}: open task {id} at C");
                compared += 1;
            }
        }
    }
    assert!(compared > 25, "the runs leave open tasks to compare: {compared}");
}

/// The sync-scope over-claim with a rebase: the serving side says its
/// rebase is `complete` though its scope withholds the collection, so the
/// returning small peer evicts its documents (its own among them) and the
/// fresh round brings none back; its vector still claims them, so no
/// other peer will send them again either.
#[test]
fn a_rebase_from_a_peer_whose_scope_withholds_the_collection_loses_nothing() {
    let mut a = reaping_peer(1, &[TASKS]);
    let mut b = reaping_peer(2, &[TASKS]);
    a.insert("tasks", r#"{"_id": "d", "done": false}"#);
    b.insert("tasks", r#"{"_id": "mine", "done": false}"#);
    (a, b) = sync(a, b);
    assert!(a.get("tasks", "mine").is_some() && b.get("tasks", "d").is_some());

    a.write(|w| {
        w.set_setting("USER_COLLECTION_SYNC_SCOPES", &v(r#"{"tasks": "BigPeerOnly"}"#))
            .expect("setting");
    });
    a.delete("tasks", "d");
    a.clock += 10 * TTL_MS;
    a.write(|w| {
        assert_eq!(w.reap_tombstones(100).expect("reap"), 1);
    });
    relink(&mut a, &[TASKS], Role::SmallPeer, 100);
    relink(&mut b, &[TASKS], Role::SmallPeer, 100);
    let (_a, b) = sync(a, b);
    assert!(b.applies.iter().all(|x| x.ok));
    assert!(
        b.get("tasks", "mine").is_some(),
        "B lost its own document to a rebase by a peer that may not send it back"
    );
}

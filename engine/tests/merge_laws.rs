//! Property tests of the document CRDT's merge laws.
//!
//! Replicas make random concurrent edits (sets at any depth, whole-object
//! writes, unsets, counter increments and restarts, attachments, deletes,
//! replaces) and exchange ops in random orders, with duplicates and partial
//! deliveries; in the end every replica must hold identical JSON *and*
//! identical metadata, whatever the order. That is commutativity,
//! associativity and idempotence observed on real edit histories.

use proptest::prelude::*;
use rhizome_engine::doc::{Attachment, Doc, Inferred, Num, Op, Whole};
use rhizome_engine::hlc::{Hlc, PeerId, Stamp};
use rhizome_engine::value::Value;
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
enum Edit {
    Set(Vec<String>, Value),
    SetRegister(Vec<String>, Value),
    Unset(Vec<String>),
    Incr(Vec<String>, Num),
    Restart(Vec<String>, Num),
    Attach(Vec<String>, u64),
    Delete,
    Replace(BTreeMap<String, Value>),
}

#[derive(Clone, Debug)]
enum Step {
    /// Replica edits at a wall time (skewed per replica by the strategy).
    Local { replica: usize, wall: u64, edit: Edit },
    /// Replica receives `count` random ops of the pool (with repeats).
    Deliver { replica: usize, count: usize },
}

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "c"]).prop_map(str::to_string)
}

fn path() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(key(), 1..=3)
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-5i64..5).prop_map(Value::Int),
        (-4i32..4).prop_map(|x| Value::Float(x as f64 / 2.0)),
        "[xy]{0,2}".prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..3).prop_map(Value::Object),
        ]
    })
}

fn num() -> impl Strategy<Value = Num> {
    prop_oneof![
        (-3i64..4).prop_map(Num::Int),
        (-2i32..3).prop_map(|x| Num::Float(x as f64 * 0.25))
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (path(), value()).prop_map(|(p, v)| Edit::Set(p, v)),
        1 => (path(), value()).prop_map(|(p, v)| Edit::SetRegister(p, v)),
        2 => path().prop_map(Edit::Unset),
        3 => (path(), num()).prop_map(|(p, n)| Edit::Incr(p, n)),
        1 => (path(), num()).prop_map(|(p, n)| Edit::Restart(p, n)),
        1 => (path(), 0u64..3).prop_map(|(p, n)| Edit::Attach(p, n)),
        1 => Just(Edit::Delete),
        1 => prop::collection::btree_map(key(), value(), 0..3).prop_map(Edit::Replace),
    ]
}

fn steps(replicas: usize) -> impl Strategy<Value = Vec<Step>> {
    let local = (0..replicas, 0u64..40, edit()).prop_map(|(replica, wall, edit)| Step::Local { replica, wall, edit });
    let deliver = (0..replicas, 0usize..12).prop_map(|(replica, count)| Step::Deliver { replica, count });
    prop::collection::vec(prop_oneof![3 => local, 1 => deliver], 1..40)
}

struct Replica {
    peer: PeerId,
    last: u64,
    doc: Doc,
}

impl Replica {
    fn edit(&mut self, wall: u64, edit: &Edit) -> Vec<Op> {
        // A hybrid clock in miniature: after the wall time and everything seen.
        let seen = self.doc.vv.iter().map(|(_, h)| h.0).max().unwrap_or(0);
        self.last = self.last.max(seen).max(wall) + 1;
        let s = Stamp {
            hlc: Hlc(self.last),
            peer: self.peer,
        };
        let d = &self.doc;
        let mut out = Vec::new();
        match edit {
            Edit::Set(p, v) => d.ops_set(p, v, s, &Inferred, &mut out),
            Edit::SetRegister(p, v) => d.ops_set(p, v, s, &Whole, &mut out),
            Edit::Unset(p) => d.ops_unset(p, s, &mut out),
            Edit::Incr(p, n) => d.ops_increment(p, *n, s, &mut out),
            Edit::Restart(p, n) => d.ops_restart(p, *n, s, &mut out),
            Edit::Attach(p, n) => {
                let tok = Attachment {
                    id: format!("h{n}"),
                    len: *n,
                    meta: BTreeMap::new(),
                };
                d.ops_attach(p, tok, s, &mut out)
            }
            Edit::Delete => d.ops_delete(s, &mut out),
            Edit::Replace(o) => d.ops_replace(o, s, &Inferred, &mut out),
        }
        for op in &out {
            op.validate().expect("local ops are valid");
            self.doc.apply(op);
        }
        out
    }
}

/// A small deterministic generator for delivery orders (proptest picks the seed).
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

fn run(replicas: usize, steps: &[Step], seed: u64) -> Vec<Replica> {
    let mut rs: Vec<Replica> = (0..replicas)
        .map(|i| Replica {
            peer: PeerId(i as u64 + 1),
            last: 0,
            doc: Doc::new(),
        })
        .collect();
    let mut pool: Vec<Op> = Vec::new();
    let mut rng = Rng(seed | 1);
    for step in steps {
        match step {
            Step::Local { replica, wall, edit } => pool.extend(rs[*replica].edit(*wall, edit)),
            Step::Deliver { replica, count } => {
                for _ in 0..*count {
                    if !pool.is_empty() {
                        let op = pool[rng.below(pool.len())].clone();
                        rs[*replica].doc.apply(&op);
                    }
                }
            }
        }
    }
    // Final delivery: everything, shuffled, with some ops twice.
    for r in rs.iter_mut() {
        let mut order: Vec<usize> = (0..pool.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        for &i in &order {
            r.doc.apply(&pool[i]);
            if rng.below(4) == 0 {
                r.doc.apply(&pool[rng.below(pool.len())]);
            }
        }
    }
    rs
}

/// The fast read paths (JSON, or one field, straight from the bytes) agree
/// with rendering.
fn assert_fast_read_agrees(doc: &Doc) -> Result<(), TestCaseError> {
    let mut bytes = Vec::new();
    rhizome_engine::codec::encode_doc(b"id", doc, &mut bytes);
    let (_, body) = rhizome_engine::codec::split_record(&bytes);
    let body = body.unwrap();
    if let Some(fast) = rhizome_engine::codec::decode_visible(body).unwrap() {
        prop_assert_eq!(Some(fast), doc.render(), "fast read differs for {:?}", doc);
    }
    let rendered = doc.render();
    if let Some(visible) = rhizome_engine::codec::plainly_visible(body).unwrap() {
        prop_assert_eq!(visible, rendered.is_some());
    }
    let keys = ["a", "b", "c"];
    let mut paths: Vec<Vec<&str>> = keys.iter().map(|k| vec![*k]).collect();
    paths.extend(keys.iter().flat_map(|a| keys.iter().map(move |b| vec![*a, *b])));
    for path in &paths {
        let expected = rendered.as_ref().and_then(|r| {
            let (first, rest) = path.split_first()?;
            rest.iter().try_fold(r.get(*first)?, |v, k| v.as_object()?.get(*k))
        });
        match rhizome_engine::codec::lookup_field(body, path).unwrap() {
            rhizome_engine::codec::Lookup::Unknown => {}
            rhizome_engine::codec::Lookup::Missing => prop_assert_eq!(expected, None, "{:?} in {:?}", path, doc),
            rhizome_engine::codec::Lookup::Value(v) => prop_assert_eq!(expected, Some(&v), "{:?} in {:?}", path, doc),
        }
    }
    Ok(())
}

/// Three replicas that make the local steps and, after step `i`, send
/// `pairs[i].0`'s delta to `pairs[i].1`: each ends lacking different writes.
fn partly_synced(steps: &[Step], pairs: &[(usize, usize)]) -> Vec<Replica> {
    let mut rs: Vec<Replica> = (0..3)
        .map(|i| Replica {
            peer: PeerId(i + 1),
            last: 0,
            doc: Doc::new(),
        })
        .collect();
    for (i, step) in steps.iter().enumerate() {
        if let Step::Local { replica, wall, edit } = step {
            rs[*replica].edit(*wall, edit);
        }
        if let Some(&(from, to)) = pairs.get(i) {
            for op in &rs[from].doc.delta_since(&rs[to].doc.vv) {
                rs[to].doc.apply(op);
            }
        }
    }
    rs
}

/// A delta's `Seen` ops only carry what nothing else in it (nor `since`)
/// says: one per origin, past `since` and past that origin's other ops.
fn assert_seen_needed(delta: &[Op], since: &rhizome_engine::vv::VersionVector) -> Result<(), TestCaseError> {
    for op in delta {
        let Op::Seen { stamp } = op else { continue };
        prop_assert!(since.get(stamp.peer) < stamp.hlc, "{:?} is in since", stamp);
        let carried = delta
            .iter()
            .any(|o| !matches!(o, Op::Seen { .. }) && o.stamp().peer == stamp.peer && o.stamp().hlc >= stamp.hlc);
        prop_assert!(!carried, "{:?} is carried by another op", stamp);
    }
    Ok(())
}

fn assert_converged(rs: &[Replica]) -> Result<(), TestCaseError> {
    for r in rs {
        assert_fast_read_agrees(&r.doc)?;
    }
    for r in &rs[1..] {
        prop_assert_eq!(&r.doc, &rs[0].doc, "metadata differs");
        prop_assert_eq!(r.doc.render(), rs[0].doc.render(), "JSON differs");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn replicas_converge_whatever_the_delivery_order(
        (replicas, steps) in (2usize..=5).prop_flat_map(|n| (Just(n), steps(n))),
        seed in any::<u64>(),
    ) {
        let rs = run(replicas, &steps, seed);
        assert_converged(&rs)?;
    }

    #[test]
    fn applying_an_op_twice_changes_nothing(
        steps in steps(3),
        seed in any::<u64>(),
    ) {
        let rs = run(3, &steps, seed);
        let before = rs[0].doc.clone();
        let mut again = rs[0].doc.clone();
        for op in before.delta_since(&Default::default()) {
            prop_assert!(!again.apply(&op), "re-applying {:?} changed the state", op);
        }
        prop_assert_eq!(again, before);
    }

    #[test]
    fn delta_exchange_converges_like_full_delivery(
        steps in steps(3),
        pairs in prop::collection::vec((0usize..3, 0usize..3), 0..12),
    ) {
        // Replicas that only ever sync through deltas (as the protocol does).
        let mut rs = partly_synced(&steps, &pairs);
        for _ in 0..2 {
            for from in 0..3 {
                for to in 0..3 {
                    let delta = rs[from].doc.delta_since(&rs[to].doc.vv);
                    for op in &delta {
                        rs[to].doc.apply(op);
                    }
                }
            }
        }
        assert_converged(&rs)?;
    }

    #[test]
    fn delta_from_is_the_delta_of_one_origin(
        steps in steps(3),
        pairs in prop::collection::vec((0usize..3, 0usize..3), 0..12),
    ) {
        // Replicas partly synced through deltas, so each lacks different writes.
        let rs = partly_synced(&steps, &pairs);
        for from in 0..3 {
            for to in 0..3 {
                let since = &rs[to].doc.vv;
                let all = rs[from].doc.delta_since(since);
                let mut merged = rs[to].doc.clone();
                for origin in (1..=3).map(PeerId) {
                    // What sync lets travel for `origin`: its writes, and a
                    // deletion that saw writes of it `since` lacks.
                    let expected: Vec<Op> = all
                        .iter()
                        .filter(|op| match op {
                            Op::Delete { stamp, seen } => stamp.peer == origin || seen.get(origin) > since.get(origin),
                            op => op.stamp().peer == origin,
                        })
                        .cloned()
                        .collect();
                    let got = rs[from].doc.delta_from(since, origin);
                    prop_assert_eq!(&got, &expected, "origin {:?}", origin);
                    assert_seen_needed(&got, since)?;
                    for op in &got {
                        merged.apply(op);
                    }
                }
                let mut whole = rs[to].doc.clone();
                for op in &all {
                    whole.apply(op);
                }
                prop_assert!(merged.vv.dominates(&rs[from].doc.vv), "the delta brings the whole vector");
                prop_assert_eq!(merged, whole, "the origins' deltas together are the delta");
                assert_seen_needed(&all, since)?;
            }
        }
    }
}

//! The merge of ops into a stored document's bytes (`codec::merge_encoded`)
//! against the reference (decode, `Doc::apply` each op, `encode_doc`):
//! identical records byte for byte, the same "changed" answer, the same
//! version vectors; and on damaged bytes it declines (the reference then
//! reports the damage) or, when the damage still decodes, agrees.
//!
//! Stored documents and op sets come from random edit histories of a few
//! replicas (sets at any depth, maps, registers, unsets, counters,
//! restarts, attachments, deletions, replaces), so they hold tombstones,
//! nested maps, counters with floors, deletions; the ops delivered are a
//! random sample of every replica's ops (older writes that lose, repeats),
//! plus hostile ties: a write under an existing stamp with another value.

use proptest::prelude::*;
use rhizome_engine::codec::{decode_doc, encode_doc, merge_encoded, split_record};
use rhizome_engine::doc::{Attachment, Doc, Inferred, Num, Op, RegVal, Whole};
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

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "c", "é", ""]).prop_map(str::to_string)
}

fn path() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(key(), 1..=3)
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        (-4i32..4).prop_map(|x| Value::Float(x as f64 / 2.0)),
        Just(Value::Float(-0.0)),
        "[xyé]{0,3}".prop_map(Value::String),
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
        (-2i32..3).prop_map(|x| Num::Float(x as f64 * 0.25)),
        Just(Num::Float(-0.0)),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        5 => (path(), value()).prop_map(|(p, v)| Edit::Set(p, v)),
        1 => (path(), value()).prop_map(|(p, v)| Edit::SetRegister(p, v)),
        2 => path().prop_map(Edit::Unset),
        2 => (path(), num()).prop_map(|(p, n)| Edit::Incr(p, n)),
        1 => (path(), num()).prop_map(|(p, n)| Edit::Restart(p, n)),
        1 => (path(), 0u64..3).prop_map(|(p, n)| Edit::Attach(p, n)),
        1 => Just(Edit::Delete),
        1 => prop::collection::btree_map(key(), value(), 0..3).prop_map(Edit::Replace),
    ]
}

struct Replica {
    peer: PeerId,
    last: u64,
    doc: Doc,
}

impl Replica {
    fn edit(&mut self, wall: u64, edit: &Edit) -> Vec<Op> {
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
                let mut meta = BTreeMap::new();
                meta.insert("name".to_string(), Value::from("f"));
                let tok = Attachment {
                    id: format!("h{n}"),
                    len: *n,
                    meta,
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

/// A case: the stored document (replica 0's) and the ops delivered to it.
#[derive(Debug)]
struct Case {
    stored: Doc,
    ops: Vec<Op>,
}

fn case() -> impl Strategy<Value = Case> {
    let step = (0usize..3, 0u64..30, edit());
    (
        prop::collection::vec(step, 1..30),
        prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        prop::collection::vec((any::<prop::sample::Index>(), value()), 0..2),
    )
        .prop_map(|(steps, picks, ties)| {
            let mut rs: Vec<Replica> = (0..3)
                .map(|i| Replica {
                    peer: PeerId(i as u64 + 1),
                    last: 0,
                    doc: Doc::new(),
                })
                .collect();
            let mut others = Vec::new();
            for (replica, wall, edit) in &steps {
                let ops = rs[*replica].edit(*wall, edit);
                if *replica != 0 {
                    others.extend(ops);
                }
            }
            // Some of replica 0's own ops go to the others, to make older writes.
            let own = rs[0].doc.delta_since(&Default::default());
            let mut ops: Vec<Op> = picks
                .iter()
                .filter_map(|i| {
                    if others.is_empty() || i.index(4) == 0 {
                        own.get(i.index(own.len().max(1))).cloned()
                    } else {
                        others.get(i.index(others.len())).cloned()
                    }
                })
                .collect();
            // Hostile ties: a stored register's stamp with another value.
            for (i, v) in ties {
                let sets: Vec<&Op> = own
                    .iter()
                    .chain(&ops)
                    .filter(|op| matches!(op, Op::Set { .. }))
                    .collect();
                if let Some(Op::Set { path, stamp, .. }) = sets.get(i.index(sets.len().max(1))).copied() {
                    if !path.is_empty() {
                        ops.push(Op::Set {
                            path: path.clone(),
                            stamp: *stamp,
                            val: RegVal::Value(v),
                        });
                    }
                }
            }
            ops.retain(|op| op.validate().is_ok());
            Case {
                stored: rs[0].doc.clone(),
                ops,
            }
        })
}

/// The reference: decode, apply, encode if changed.
fn reference(body: &[u8], ops: &[Op]) -> Option<(bool, Vec<u8>, Doc, Doc)> {
    let mut doc = decode_doc(body).ok()?;
    let before = doc.clone();
    let mut changed = false;
    for op in ops {
        changed |= doc.apply(op);
    }
    let mut out = Vec::new();
    if changed {
        encode_doc(b"\x04\x02id", &doc, &mut out);
    }
    Some((changed, out, before, doc))
}

fn check(record: &[u8], ops: &[Op], must_merge: bool) -> Result<(), TestCaseError> {
    let (_, body) = split_record(record);
    let Ok(body) = body else { return Ok(()) };
    let refs: Vec<&Op> = ops.iter().collect();
    let mut out = vec![9u8; 3];
    let fast = merge_encoded(b"\x04\x02id", body, &refs, &mut out);
    let expected = reference(body, ops);
    match (fast, expected) {
        (Some(m), Some((changed, bytes, before, after))) => {
            prop_assert_eq!(m.changed, changed, "changed");
            prop_assert_eq!(&m.before, &before.vv);
            prop_assert_eq!(&m.after, &after.vv);
            if changed {
                prop_assert_eq!(out, bytes, "records differ");
            }
        }
        (Some(_), None) => prop_assert!(false, "merged bytes the reference refuses"),
        (None, _) => {
            let deletes = ops.iter().any(|op| matches!(op, Op::Delete { .. }));
            prop_assert!(!must_merge || deletes, "declined a valid document without deletions");
        }
    }
    Ok(())
}

fn stored(doc: &Doc) -> Vec<u8> {
    let mut record = Vec::new();
    encode_doc(b"\x04\x02id", doc, &mut record);
    record
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn encoded_merge_writes_what_decode_apply_encode_writes(c in case()) {
        check(&stored(&c.stored), &c.ops, true)?;
        // And into a document never written (an empty state).
        check(&stored(&Doc::new()), &c.ops, true)?;
    }

    #[test]
    fn damaged_bytes_are_declined_or_agree(
        c in case(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..3),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let record = stored(&c.stored);
        let (_, body) = split_record(&record);
        let body = body.unwrap().to_vec();
        let mut damaged = body.clone();
        for (i, b) in flips {
            let at = i.index(damaged.len());
            damaged[at] ^= b;
        }
        if truncate {
            damaged.truncate(cut.index(damaged.len()));
        }
        // Damage under a valid checksum (the store's checksum catches
        // the rest before either path runs).
        let mut rec = record[..record.len() - body.len()].to_vec();
        rec.extend_from_slice(&damaged);
        let crc = crc32fast::hash(&rec[5..]);
        rec[1..5].copy_from_slice(&crc.to_le_bytes());
        check(&rec, &c.ops, false)?;
    }
}

#[test]
fn overlong_and_unsorted_bytes_are_declined() {
    let mut doc = Doc::new();
    let s = Stamp {
        hlc: Hlc(5),
        peer: PeerId(1),
    };
    let mut ops = Vec::new();
    let mut o = BTreeMap::new();
    o.insert("k".to_string(), Value::Int(1));
    doc.ops_set(&["a".to_string()], &Value::Int(1), s, &Inferred, &mut ops);
    doc.ops_set(&["b".to_string()], &Value::Object(o), s, &Whole, &mut ops);
    for op in &ops {
        doc.apply(op);
    }
    let record = stored(&doc);
    let later = Op::Set {
        path: vec!["c".to_string()],
        stamp: Stamp {
            hlc: Hlc(9),
            peer: PeerId(2),
        },
        val: RegVal::Value(Value::Null),
    };
    // Register value of "a": tag 2 (value), tag 2 (int), zigzag 1 = 2: [2, 2, 2].
    let at = record.windows(3).position(|w| w == [2, 2, 2]).unwrap();
    let mut overlong = record[..at + 2].to_vec();
    overlong.extend_from_slice(&[0x82, 0x00]);
    overlong.extend_from_slice(&record[at + 3..]);
    let crc = crc32fast::hash(&overlong[5..]);
    overlong[1..5].copy_from_slice(&crc.to_le_bytes());
    let (_, body) = split_record(&overlong);
    let body = body.unwrap();
    assert!(decode_doc(body).is_ok(), "the reference takes overlong varints");
    let mut out = Vec::new();
    assert_eq!(merge_encoded(b"\x04\x02id", body, &[&later], &mut out), None);
    // A ten-byte varint with bits past 64 (dropped when decoded).
    let mut wide = record[..at + 2].to_vec();
    wide.extend_from_slice(&[0x82, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02]);
    wide.extend_from_slice(&record[at + 3..]);
    let crc = crc32fast::hash(&wide[5..]);
    wide[1..5].copy_from_slice(&crc.to_le_bytes());
    let (_, body) = split_record(&wide);
    let body = body.unwrap();
    assert!(decode_doc(body).is_ok(), "the reference drops the extra bits");
    assert_eq!(merge_encoded(b"\x04\x02id", body, &[&later], &mut out), None);
    // The untouched record merges.
    let (_, body) = split_record(&record);
    let m = merge_encoded(b"\x04\x02id", body.unwrap(), &[&later], &mut out).unwrap();
    assert!(m.changed);
}

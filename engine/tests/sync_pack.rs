//! Packed changes (`sync::pack`): every batch of changes round-trips in both
//! codings, whatever its ops; hostile bytes (random, or a valid pack
//! mutated) give an error and never a panic; limits hold before memory is
//! spent; packed version vectors round-trip.

use proptest::prelude::*;
use rhizome_engine::codec::Change;
use rhizome_engine::doc::{Attachment, Num, Op, RegVal};
use rhizome_engine::hlc::{Hlc, PeerId, Stamp};
use rhizome_engine::sync::pack::{pack, pack_as, pack_bounded, unpack, Coding, PackError, UnpackLimits};
use rhizome_engine::value::Value;
use rhizome_engine::vv::VersionVector;
use std::collections::BTreeMap;

const KEYS: &[&str] = &[
    "title",
    "status",
    "meta",
    "a",
    "",
    "é",
    "\u{0}",
    "tags",
    "0123456789abcdef",
];
const PEERS: &[u64] = &[1, 2, 0xdead_beef_dead_beef, u64::MAX, 0];

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(-0.0f64),
        Just(0.0),
        Just(12.5),
        Just(0.1),
        Just(1999.99),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
        Just(5e-324),
        Just(2f64.powi(53)),
        (-100_000i64..100_000).prop_map(|m| m as f64 / 100.0),
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
    ]
}

fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(KEYS).prop_map(str::to_string),
        "[a-z]{0,30}",
        "[0-9a-f]{16}",
        "[0-9A-F]{16}",
        "[a\"\\\\\u{0}\u{1f}\u{7f}é😀\n]{0,6}",
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        (-70i64..70).prop_map(Value::Int),
        float().prop_map(Value::Float),
        string().prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(string(), inner, 0..4).prop_map(Value::Object),
        ]
    })
}

fn id() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => "[0-9a-f]{16}".prop_map(Value::String),
        1 => "[0-9a-f]{15,17}".prop_map(Value::String),
        1 => string().prop_map(Value::String),
        1 => any::<i64>().prop_map(Value::Int),
        1 => value(),
    ]
}

fn path() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(string(), 0..4)
}

fn hlc() -> impl Strategy<Value = Hlc> {
    prop_oneof![
        any::<u64>().prop_map(Hlc),
        (1_767_225_600_000u64..1_767_225_700_000, 0u16..4).prop_map(|(ms, l)| Hlc::new(ms, l)),
        Just(Hlc(0)),
        Just(Hlc(u64::MAX)),
    ]
}

fn peer() -> impl Strategy<Value = PeerId> {
    prop_oneof![
        prop::sample::select(PEERS).prop_map(PeerId),
        any::<u64>().prop_map(PeerId)
    ]
}

fn stamp() -> impl Strategy<Value = Stamp> {
    (hlc(), peer()).prop_map(|(hlc, peer)| Stamp { hlc, peer })
}

fn num() -> impl Strategy<Value = Num> {
    prop_oneof![any::<i64>().prop_map(Num::Int), float().prop_map(Num::Float)]
}

fn vv() -> impl Strategy<Value = VersionVector> {
    prop::collection::vec((peer(), hlc()), 0..4).prop_map(|entries| entries.into_iter().collect())
}

fn reg_val() -> impl Strategy<Value = RegVal> {
    prop_oneof![
        1 => Just(RegVal::Absent),
        1 => Just(RegVal::Object),
        6 => value().prop_map(RegVal::Value),
        1 => (string(), any::<u64>(), prop::collection::btree_map(string(), value(), 0..3))
            .prop_map(|(id, len, meta)| RegVal::Attachment(Attachment { id, len, meta })),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (path(), stamp(), reg_val()).prop_map(|(path, stamp, val)| Op::Set { path, stamp, val }),
        1 => (path(), stamp(), num()).prop_map(|(path, stamp, total)| Op::Count { path, stamp, total }),
        1 => (path(), stamp(), num()).prop_map(|(path, stamp, base)| Op::Restart { path, stamp, base }),
        1 => (path(), peer(), hlc(), num(), stamp())
            .prop_map(|(path, peer, hlc, total, by)| Op::Floor { path, peer, hlc, total, by }),
        1 => stamp().prop_map(|stamp| Op::Seen { stamp }),
        1 => (stamp(), vv()).prop_map(|(stamp, seen)| Op::Delete { stamp, seen }),
    ]
}

fn change() -> impl Strategy<Value = Change> {
    (
        prop::sample::select(&["tasks", "docs", "", "é"][..]),
        id(),
        prop::collection::vec(op(), 0..5),
    )
        .prop_map(|(collection, id, ops)| Change {
            collection: collection.to_string(),
            id,
            ops,
        })
}

/// Batches shaped like real ones too: one writer, close timestamps, the
/// same stamp repeated across a document's ops.
fn session_batch() -> impl Strategy<Value = Vec<Change>> {
    prop::collection::vec(
        (
            "[0-9a-f]{16}",
            prop::collection::vec((prop::sample::select(KEYS), leaf(), 0u64..3), 1..4),
        ),
        0..20,
    )
    .prop_map(|docs| {
        let mut ms = 1_767_225_600_000u64;
        docs.into_iter()
            .map(|(id, fields)| Change {
                collection: "tasks".into(),
                id: Value::String(id),
                ops: fields
                    .into_iter()
                    .map(|(key, v, step)| {
                        ms += step;
                        Op::Set {
                            path: vec![key.to_string()],
                            stamp: Stamp {
                                hlc: Hlc::new(ms, 0),
                                peer: PeerId(0x1234_5678_9abc_def0),
                            },
                            val: RegVal::Value(v),
                        }
                    })
                    .collect(),
            })
            .collect()
    })
}

fn batch() -> impl Strategy<Value = Vec<Change>> {
    prop_oneof![prop::collection::vec(change(), 0..8), session_batch()]
}

fn round_trip(changes: &[Change]) -> Result<(), TestCaseError> {
    let limits = UnpackLimits::default();
    for coding in [Coding::Plain, Coding::Range] {
        let bytes = pack_as(changes, coding);
        let back = unpack(&bytes, limits);
        prop_assert_eq!(back.as_deref(), Ok(changes), "{:?}", coding);
    }
    let best = pack(changes);
    prop_assert!(best.len() <= pack_as(changes, Coding::Plain).len());
    let back = unpack(&best, limits);
    prop_assert_eq!(back.as_deref(), Ok(changes));
    // Bounded: above the bound the body goes plain without the coder; an
    // unbounded pack is the smaller form.
    prop_assert_eq!(pack_bounded(changes, 0), pack_as(changes, Coding::Plain));
    prop_assert_eq!(pack_bounded(changes, usize::MAX), best);
    Ok(())
}

/// Decoding must end in a value or an error; a panic fails the test.
fn never_panics(bytes: &[u8], limits: UnpackLimits) {
    let _ = unpack(bytes, limits);
}

fn small_limits() -> UnpackLimits {
    UnpackLimits {
        max_changes: 3,
        max_ops: 5,
        max_body_bytes: 200,
        max_output_bytes: 4_000,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn batches_round_trip(changes in batch()) {
        round_trip(&changes)?;
    }

    #[test]
    fn random_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..300), coding in 0u8..3) {
        let mut bytes = vec![1, coding];
        bytes.extend_from_slice(&body);
        never_panics(&bytes, UnpackLimits::default());
        never_panics(&bytes, small_limits());
        never_panics(&body, UnpackLimits::default());
    }

    #[test]
    fn mutated_packs_never_panic(
        changes in batch(),
        range in any::<bool>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..6),
    ) {
        let mut bytes = pack_as(&changes, if range { Coding::Range } else { Coding::Plain });
        for (at, b, how) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            match how {
                0 => bytes[i] = b,
                1 => bytes[i] ^= 1 << (b % 8),
                2 => bytes.truncate(i),
                _ => bytes.insert(i, b),
            }
        }
        never_panics(&bytes, UnpackLimits::default());
        never_panics(&bytes, small_limits());
    }
}

fn tasks_change(i: u64, fields: usize) -> Change {
    Change {
        collection: "tasks".into(),
        id: Value::String(format!("{i:016x}")),
        ops: (0..fields)
            .map(|f| Op::Set {
                path: vec![format!("f{f}")],
                stamp: Stamp {
                    hlc: Hlc::new(1_000 + i, 0),
                    peer: PeerId(7),
                },
                val: RegVal::Value(Value::Int(i as i64)),
            })
            .collect(),
    }
}

#[test]
fn limits_hold() {
    let changes: Vec<Change> = (0..10).map(|i| tasks_change(i, 2)).collect();
    for coding in [Coding::Plain, Coding::Range] {
        let bytes = pack_as(&changes, coding);
        let limits = UnpackLimits::default();
        assert_eq!(unpack(&bytes, limits).as_deref(), Ok(&changes[..]));
        let few_changes = UnpackLimits {
            max_changes: 9,
            ..limits
        };
        assert!(matches!(
            unpack(&bytes, few_changes),
            Err(PackError::TooLarge {
                what: "changes",
                count: 10,
                ..
            })
        ));
        let few_ops = UnpackLimits { max_ops: 19, ..limits };
        assert!(matches!(
            unpack(&bytes, few_ops),
            Err(PackError::TooLarge { what: "ops", .. })
        ));
        let small_body = UnpackLimits {
            max_body_bytes: 40,
            ..limits
        };
        assert!(matches!(unpack(&bytes, small_body), Err(PackError::TooLarge { .. })));
        let small_output = UnpackLimits {
            max_output_bytes: 1_000,
            ..limits
        };
        assert!(matches!(unpack(&bytes, small_output), Err(PackError::TooLarge { .. })));
    }
}

/// A long table string referenced from many changes: the copies count
/// against the output budget, so the bytes cannot multiply into memory.
#[test]
fn table_references_are_charged_at_every_use() {
    let long = "x".repeat(10_000);
    let changes: Vec<Change> = (0..200u64)
        .map(|i| Change {
            collection: "tasks".into(),
            id: Value::Int(i as i64),
            ops: vec![Op::Set {
                path: vec!["body".into()],
                stamp: Stamp {
                    hlc: Hlc(5),
                    peer: PeerId(1),
                },
                val: RegVal::Value(Value::String(long.clone())),
            }],
        })
        .collect();
    let bytes = pack(&changes);
    assert!(bytes.len() < 12_000, "the string travels once: {} bytes", bytes.len());
    assert_eq!(unpack(&bytes, UnpackLimits::default()).as_deref(), Ok(&changes[..]));
    let limits = UnpackLimits {
        max_output_bytes: 1 << 20,
        ..UnpackLimits::default()
    };
    assert!(matches!(unpack(&bytes, limits), Err(PackError::TooLarge { .. })));
}

#[test]
fn errors_name_the_offset_and_reason() {
    let changes = vec![tasks_change(1, 1)];
    let bytes = pack_as(&changes, Coding::Plain);
    assert_eq!(
        unpack(&[], UnpackLimits::default()),
        Err(PackError::Truncated { offset: 0 })
    );
    assert_eq!(
        unpack(&[9, 0], UnpackLimits::default()),
        Err(PackError::UnknownFormat { found: 9 })
    );
    assert_eq!(
        unpack(&[1, 7], UnpackLimits::default()),
        Err(PackError::UnknownCoding { found: 7 })
    );
    let cut = &bytes[..bytes.len() - 1];
    assert_eq!(
        unpack(cut, UnpackLimits::default()),
        Err(PackError::Truncated { offset: cut.len() })
    );
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(
        unpack(&longer, UnpackLimits::default()),
        Err(PackError::TrailingBytes { count: 1 })
    );
    // A peer table announcing more peers than bytes left.
    let err = unpack(&[1, 0, 100, 0], UnpackLimits::default()).unwrap_err();
    assert_eq!(
        err,
        PackError::TooLarge {
            offset: 3,
            what: "peers",
            count: 100,
            limit: 0
        }
    );
    assert!(err.to_string().contains("byte 3"), "{err}");
    // An op repeating the stamp of no earlier op.
    let bad = [1, 0, 0, 0, 0, 1, (1 << 4) | 0b1000 | 2, 1, 2, 0];
    match unpack(&bad, UnpackLimits::default()) {
        Err(PackError::Malformed { offset, reason }) => {
            assert_eq!(offset, 10);
            assert!(reason.contains("stamp of no earlier op"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn ids_and_values_keep_their_exact_form() {
    let odd = [
        Value::String("0123456789ABCDEF".into()),
        Value::String("0123456789abcdef0".into()),
        Value::Float(3.0),
        Value::Int(3),
        Value::Float(-0.0),
        Value::Object(BTreeMap::from([("a".to_string(), Value::Int(1))])),
    ];
    let changes: Vec<Change> = odd
        .iter()
        .map(|id| Change {
            collection: "c".into(),
            id: id.clone(),
            ops: vec![Op::Set {
                path: vec!["v".into()],
                stamp: Stamp {
                    hlc: Hlc(1),
                    peer: PeerId(1),
                },
                val: RegVal::Value(id.clone()),
            }],
        })
        .collect();
    for coding in [Coding::Plain, Coding::Range] {
        assert_eq!(
            unpack(&pack_as(&changes, coding), UnpackLimits::default()).as_deref(),
            Ok(&changes[..])
        );
    }
}

#[test]
fn empty_batch_is_small() {
    let bytes = pack(&[]);
    assert_eq!(bytes, vec![1, 0, 0, 0, 0, 0]);
    assert_eq!(unpack(&bytes, UnpackLimits::default()), Ok(vec![]));
}

//! Byte-level reads (`lookup_field`, `plainly_visible`, `decode_visible`,
//! `visible_json`) against `Doc::render`, on documents built from arbitrary
//! remote-style ops (no root write, tombstones, counters, partial deletes),
//! not only from local edits; plus the bugs a review found, pinned.

use proptest::prelude::*;
use rhizome_engine::codec::{self, Lookup};
use rhizome_engine::doc::{Attachment, Doc, Num, Op, Reg, RegVal, Slot};
use rhizome_engine::hlc::{Hlc, PeerId, Stamp};
use rhizome_engine::value::Value;
use rhizome_engine::vv::VersionVector;
use std::collections::BTreeMap;

const KEYS: &[&str] = &["a", "ab", "b", "A", "Z", "_id", "_", "é", "aé", "", "\u{0}", "z"];

fn stamp(h: u64, p: u64) -> Stamp {
    Stamp {
        hlc: Hlc(h),
        peer: PeerId(p),
    }
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        prop_oneof![
            Just(-0.0f64),
            Just(1e300),
            Just(0.1),
            Just(-1.5e-7),
            Just(2f64.powi(53))
        ]
        .prop_map(Value::Float),
        "[a\"\\\\\u{0}\u{1f}\u{7f}é😀\n]{0,4}".prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(2, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map(prop::sample::select(KEYS).prop_map(str::to_string), inner, 0..3)
                .prop_map(Value::Object),
        ]
    })
}

fn path() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(prop::sample::select(KEYS).prop_map(str::to_string), 0..4)
}

fn reg_val() -> impl Strategy<Value = RegVal> {
    prop_oneof![
        2 => Just(RegVal::Absent),
        3 => Just(RegVal::Object),
        4 => value().prop_map(RegVal::Value),
        1 => (0u64..5).prop_map(|len| RegVal::Attachment(Attachment {
            id: "blake3:x".into(),
            len,
            meta: BTreeMap::new(),
        })),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let st = (1u64..8, 1u64..4).prop_map(|(h, p)| stamp(h, p));
    prop_oneof![
        8 => (path(), st.clone(), reg_val()).prop_map(|(path, stamp, val)| Op::Set { path, stamp, val }),
        1 => (path(), st.clone(), -3i64..3).prop_map(|(path, stamp, n)| Op::Count { path, stamp, total: Num::Int(n) }),
        1 => (path(), st.clone(), -3i64..3).prop_map(|(path, stamp, n)| Op::Restart { path, stamp, base: Num::Int(n) }),
        1 => (st, prop::collection::vec((1u64..8, 1u64..4), 0..3)).prop_map(|(stamp, seen)| {
            let mut vv = VersionVector::new();
            for (h, p) in seen {
                vv.observe(self::stamp(h, p));
            }
            Op::Delete { stamp, seen: vv }
        }),
    ]
}

fn doc_of(ops: &[Op]) -> Doc {
    let mut doc = Doc::new();
    for op in ops.iter().filter(|o| o.validate().is_ok()) {
        doc.apply(op);
    }
    doc
}

fn body_of(doc: &Doc) -> Vec<u8> {
    let mut bytes = Vec::new();
    codec::encode_doc(b"\x04\x01x", doc, &mut bytes);
    let (_, body) = codec::split_record(&bytes);
    body.unwrap().to_vec()
}

/// Every byte-level answer is what rendering gives; none is an error.
fn check(doc: &Doc) -> Result<(), TestCaseError> {
    let body = body_of(doc);
    let rendered = doc.render();
    match codec::plainly_visible(&body) {
        Ok(Some(v)) => prop_assert_eq!(v, rendered.is_some(), "plainly_visible"),
        Ok(None) => {}
        Err(e) => prop_assert!(false, "plainly_visible failed on a valid document: {e}\n{doc:?}"),
    }
    match codec::decode_visible(&body) {
        Ok(Some(fields)) => prop_assert_eq!(Some(fields), rendered.clone(), "decode_visible"),
        Ok(None) => {}
        Err(e) => prop_assert!(false, "decode_visible: {e}"),
    }
    let id = Value::String("x".into());
    let mut json = String::from("pre");
    match codec::visible_json(&body, &id, &mut json) {
        Ok(true) => {
            let mut expected = rendered.clone().expect("visible_json of an invisible document");
            expected.insert("_id".into(), id.clone());
            prop_assert_eq!(&json[3..], Value::Object(expected).to_string(), "visible_json");
        }
        Ok(false) => prop_assert_eq!(json.as_str(), "pre"),
        Err(e) => prop_assert!(false, "visible_json: {e}"),
    }
    // Lookups: only meaningful for visible documents (callers check first).
    let Some(r) = rendered else { return Ok(()) };
    let mut paths: Vec<Vec<&str>> = Vec::new();
    for a in KEYS {
        paths.push(vec![a]);
        for b in KEYS {
            paths.push(vec![a, b]);
            paths.push(vec![a, b, "a"]);
        }
    }
    for p in &paths {
        prop_assert_eq!(
            codec::lookup_field(&body, p),
            codec::lookup_field_from_first_slot(&body, p),
            "{:?}",
            p
        );
        let expected = p[1..]
            .iter()
            .try_fold(r.get(p[0]), |v, k| Some(v?.as_object()?.get(*k)));
        let expected = expected.flatten();
        match codec::lookup_field(&body, p) {
            Ok(Lookup::Unknown) => {}
            Ok(Lookup::Missing) => prop_assert_eq!(expected, None, "{:?} reported missing in {:?}", p, doc),
            Ok(Lookup::Value(v)) => prop_assert_eq!(expected, Some(&v), "{:?} in {:?}", p, doc),
            Err(e) => prop_assert!(false, "lookup {p:?}: {e}"),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn byte_reads_agree_with_rendering_for_any_ops(ops in prop::collection::vec(op(), 0..10)) {
        check(&doc_of(&ops))?;
    }

    #[test]
    fn byte_reads_agree_after_a_replace(fields in prop::collection::btree_map(prop::sample::select(KEYS).prop_map(str::to_string), value(), 0..5),
                                        ops in prop::collection::vec(op(), 0..6)) {
        let mut doc = Doc::new();
        let mut out = Vec::new();
        let mut fields = fields;
        fields.remove("_id");
        doc.ops_replace(&fields, stamp(4, 2), &rhizome_engine::doc::Inferred, &mut out);
        for o in out.iter().chain(ops.iter().filter(|o| o.validate().is_ok())) {
            doc.apply(o);
        }
        check(&doc)?;
    }
}

/// A document that a remote peer created without a root write (e.g. a
/// change with a single `Set ["ab"]`) is valid, but `plainly_visible` reads
/// the first key's length byte as the root register's flag.
#[test]
fn plainly_visible_of_a_document_without_a_root_slot() {
    let doc = doc_of(&[Op::Set {
        path: vec!["ab".into()],
        stamp: stamp(1, 1),
        val: RegVal::Value(Value::Int(1)),
    }]);
    assert!(doc.render().is_some());
    let body = body_of(&doc);
    assert!(codec::decode_visible(&body).unwrap().is_none(), "not simple: fine");
    assert_eq!(
        codec::lookup_field(&body, &["ab"]).unwrap(),
        Lookup::Value(Value::Int(1))
    );
    assert!(
        matches!(codec::plainly_visible(&body), Ok(None | Some(true))),
        "plainly_visible: {:?}",
        codec::plainly_visible(&body)
    );
}

/// A stored top-level `_id` object (only possible in hand-built docs: ops
/// and the store refuse `_id` paths) used to be written next to the real
/// `_id`; such a document now takes the rendering path (not simple).
#[test]
fn visible_json_of_a_stored_top_level_id_object() {
    let s = stamp(1, 1);
    let mut doc = Doc::new();
    let reg = |val| Slot {
        reg: Some(Reg { stamp: s, val }),
        counter: None,
    };
    doc.slots.insert(vec![], reg(RegVal::Object));
    doc.slots.insert(vec!["_id".into()], reg(RegVal::Object));
    doc.slots
        .insert(vec!["_id".into(), "k".into()], reg(RegVal::Value(Value::Int(1))));
    doc.slots.insert(vec!["b".into()], reg(RegVal::Value(Value::Int(2))));
    doc.vv.observe(s);
    let body = body_of(&doc);
    let id = Value::String("x".into());
    let mut expected = doc.render().unwrap();
    expected.insert("_id".into(), id.clone());
    let mut json = String::new();
    if codec::visible_json(&body, &id, &mut json).unwrap() {
        assert_eq!(json, Value::Object(expected).to_string());
    } else {
        assert!(json.is_empty(), "nothing written when not simple");
    }
}

fn any_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
        prop::sample::select(vec![
            -0.0,
            0.0,
            1e15,
            1e16,
            1e17,
            1e21,
            1e22,
            1e-7,
            1e-6,
            5e-324,
            f64::MAX,
            f64::MIN,
            0.1,
            123456789.0,
            9007199254740993.0,
        ]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5000, ..ProptestConfig::default() })]

    /// `write_json` (and so `Display`) is what serde_json writes, for any
    /// finite float and any string (control characters, DEL, NUL, U+2028,
    /// astral characters).
    #[test]
    fn write_json_is_serde_json(f in any_float(), s in "[\u{0}-\u{7f}\u{80}\u{2028}\u{2029}\u{fffd}😀]{0,12}", i in any::<i64>()) {
        let v = Value::Array(vec![
            Value::Float(f),
            Value::String(s.clone()),
            Value::Int(i),
            Value::Object([(s.clone(), Value::Float(f))].into_iter().collect()),
        ]);
        prop_assert_eq!(v.to_string(), serde_json::to_string(&v.to_json()).unwrap());
        let mut out = String::new();
        rhizome_engine::value::write_json_string(&s, &mut out);
        prop_assert_eq!(out, serde_json::to_string(&s).unwrap());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Damaged bodies (a byte changed, or cut short) give answers or errors
    /// from the byte-level lookup, never a panic (its fast paths for
    /// one-byte heads, keys and plain slots fall back on anything unusual).
    #[test]
    fn lookups_of_damaged_bodies_do_not_panic(ops in prop::collection::vec(op(), 0..8),
                                               at in any::<prop::sample::Index>(),
                                               byte in any::<u8>(),
                                               cut in any::<bool>()) {
        let mut body = body_of(&doc_of(&ops));
        if body.is_empty() {
            return Ok(());
        }
        let i = at.index(body.len());
        if cut {
            body.truncate(i);
        } else {
            body[i] = byte;
        }
        // And the same answers as a walk from the first slot.
        for a in KEYS {
            for p in [&[*a][..], &[a, "a"]] {
                prop_assert_eq!(codec::lookup_field(&body, p), codec::lookup_field_from_first_slot(&body, p), "{:?}", p);
            }
        }
    }
}

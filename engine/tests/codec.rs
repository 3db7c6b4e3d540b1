//! Byte formats: round trips, the fresh-insert fast path's equivalence with
//! the general encoder, and hostile bytes (never a panic, always an error).

use proptest::prelude::*;
use rhizome_engine::codec::{self, Change, Lookup};
use rhizome_engine::doc::{Doc, Inferred, Num, Op};
use rhizome_engine::hlc::{Hlc, PeerId, Stamp};
use rhizome_engine::value::Value;
use std::collections::BTreeMap;

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        (-1e9f64..1e9).prop_map(Value::Float),
        ".{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-c_]{0,3}", inner, 0..4).prop_map(Value::Object),
        ]
    })
}

fn fields() -> impl Strategy<Value = BTreeMap<String, Value>> {
    prop::collection::btree_map("(_id|[a-d]{1,2})", value(), 0..6)
}

fn stamp(h: u64, p: u64) -> Stamp {
    Stamp {
        hlc: Hlc(h),
        peer: PeerId(p),
    }
}

fn body_fields(doc: &Doc) -> BTreeMap<String, Value> {
    doc.render().unwrap_or_default()
}

/// Every answer the byte-level field lookup gives agrees with rendering,
/// for the paths the generators use (present and absent, one and two keys).
fn check_lookups(body: &[u8], doc: &Doc) -> Result<(), TestCaseError> {
    let rendered = doc.render();
    let id = Value::String("id\"1".into());
    let mut json = String::from("prefix");
    if codec::visible_json(body, &id, &mut json).unwrap() {
        let mut expected = rendered.clone().expect("visible");
        expected.insert("_id".into(), id.clone());
        prop_assert_eq!(
            &json[6..],
            Value::Object(expected).to_string(),
            "JSON straight from the bytes"
        );
    } else {
        prop_assert_eq!(json.as_str(), "prefix", "nothing written when not simple");
    }
    if let Some(visible) = codec::plainly_visible(body).unwrap() {
        prop_assert_eq!(visible, rendered.is_some());
    }
    let keys = ["a", "b", "c", "d", "aa", "ab", "ba", "zz", "_id"];
    let mut paths: Vec<Vec<&str>> = keys.iter().map(|k| vec![*k]).collect();
    for a in ["a", "b", "aa", "c"] {
        for b in ["a", "b", "c", "ab", "_"] {
            paths.push(vec![a, b]);
        }
    }
    for path in &paths {
        let expected = rendered.as_ref().and_then(|r| {
            let (first, rest) = path.split_first()?;
            rest.iter().try_fold(r.get(*first)?, |v, k| v.as_object()?.get(*k))
        });
        match codec::lookup_field(body, path).unwrap() {
            Lookup::Unknown => {}
            Lookup::Missing => prop_assert_eq!(expected, None, "{:?} reported missing", path),
            Lookup::Value(v) => prop_assert_eq!(expected, Some(&v), "{:?}", path),
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn json_text_is_what_serde_json_writes(v in value()) {
        prop_assert_eq!(v.to_string(), serde_json::to_string(&v.to_json()).unwrap());
    }

    #[test]
    fn fresh_encoding_equals_general_encoding(fields in fields(), h in 1u64..u64::MAX / 2, p in any::<u64>()) {
        let s = stamp(h, p);
        let mut body = fields.clone();
        body.remove("_id");
        let mut doc = Doc::new();
        let mut ops = Vec::new();
        doc.ops_replace(&body, s, &Inferred, &mut ops);
        for op in &ops {
            doc.apply(op);
        }
        let (mut general, mut fresh) = (Vec::new(), Vec::new());
        codec::encode_doc(b"id", &doc, &mut general);
        codec::encode_fresh(b"id", &fields, s, &mut fresh);
        prop_assert_eq!(&general, &fresh);
        let (id, body) = codec::split_record(&fresh);
        let body = body.unwrap();
        prop_assert_eq!(id.unwrap(), b"id");
        prop_assert_eq!(codec::decode_doc(body).unwrap(), doc.clone());
        prop_assert_eq!(codec::decode_visible(body).unwrap(), doc.render(), "fresh documents take the fast path");
        check_lookups(body, &doc)?;
        for (k, v) in &body_fields(&doc) {
            if !matches!(v, Value::Object(_)) {
                let got = codec::lookup_field(body, &[k.as_str()]).unwrap();
                prop_assert_eq!(got, Lookup::Value(v.clone()), "fresh fields are read from the bytes");
            }
        }
    }

    #[test]
    fn edited_documents_round_trip(fields in fields(), edits in prop::collection::vec((0u8..6, "[a-d]{1,2}(\\.[a-c]{1,2})?", value()), 0..8)) {
        let mut doc = Doc::new();
        let mut ops = Vec::new();
        let mut body = fields;
        body.remove("_id");
        doc.ops_replace(&body, stamp(10, 1), &Inferred, &mut ops);
        for (i, (kind, key, v)) in edits.iter().enumerate() {
            let s = stamp(20 + i as u64, 1 + (i as u64 % 3));
            let path: Vec<String> = key.split('.').map(str::to_string).collect();
            match kind {
                0 => doc.ops_set(&path, v, s, &Inferred, &mut ops),
                1 => doc.ops_unset(&path, s, &mut ops),
                2 => doc.ops_increment(&path, Num::Int(3), s, &mut ops),
                3 => doc.ops_restart(&path, Num::Float(1.5), s, &mut ops),
                4 => {
                    let meta = v.as_object().cloned().unwrap_or_default();
                    let token = rhizome_engine::doc::Attachment { id: format!("blake3:{key}"), len: i as u64, meta };
                    doc.ops_attach(&path, token, s, &mut ops)
                }
                _ => doc.ops_delete(s, &mut ops),
            }
            for op in &ops {
                doc.apply(op);
            }
            ops.clear();
        }
        let mut bytes = Vec::new();
        codec::encode_doc(b"x", &doc, &mut bytes);
        let (_, body) = codec::split_record(&bytes);
        let body = body.unwrap();
        prop_assert_eq!(codec::decode_doc(body).unwrap(), doc.clone());
        if let Some(fast) = codec::decode_visible(body).unwrap() {
            prop_assert_eq!(Some(fast), doc.render());
        }
        check_lookups(body, &doc)?;
    }

    #[test]
    fn hostile_record_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let (_, body) = codec::split_record(&bytes);
        if let Ok(body) = body {
            let _ = codec::decode_doc(body);
        }
        let _ = codec::decode_doc(&bytes);
        let _ = codec::decode_visible(&bytes);
        let _ = codec::lookup_field(&bytes, &["a"]);
        let _ = codec::lookup_field(&bytes, &["a", "b"]);
        let _ = codec::plainly_visible(&bytes);
        let _ = codec::visible_json(&bytes, &Value::Int(1), &mut String::new());
        let _ = codec::decode_change(&bytes);
        let _ = codec::decode_id(&bytes);
    }

    #[test]
    fn damaged_bodies_never_panic(fields in fields(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
        // Past the checksum (a bug, or a collision): every body reader still
        // answers with a value or an error, never a panic.
        let mut bytes = Vec::new();
        codec::encode_fresh(b"id", &fields, stamp(5, 1), &mut bytes);
        let (_, body) = codec::split_record(&bytes);
        let mut body = body.unwrap().to_vec();
        for (at, b) in flips {
            let i = at.index(body.len());
            body[i] = b;
        }
        let _ = codec::decode_doc(&body);
        let _ = codec::decode_visible(&body);
        let _ = codec::visible_json(&body, &Value::Int(1), &mut String::new());
        let _ = codec::plainly_visible(&body);
        for path in [&["a"][..], &["b", "a"], &["zz"]] {
            let _ = codec::lookup_field(&body, path);
        }
    }

    #[test]
    fn damaged_records_are_detected(fields in fields(), flip in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut bytes = Vec::new();
        codec::encode_fresh(b"id", &fields, stamp(5, 1), &mut bytes);
        let i = flip.index(bytes.len());
        bytes[i] ^= 1 << bit;
        let (_, body) = codec::split_record(&bytes);
        // Any single flipped bit is caught by the format byte or the checksum.
        prop_assert!(body.is_err());
    }
}

#[test]
fn changes_round_trip_and_refuse_unknown_versions() {
    let c = Change {
        collection: "tasks".into(),
        id: Value::String("a".into()),
        ops: vec![Op::Count {
            path: vec!["n".into()],
            stamp: stamp(9, 2),
            total: Num::Int(4),
        }],
    };
    let bytes = codec::encode_change(&c);
    assert_eq!(codec::decode_change(&bytes).unwrap(), c);
    // Format 1 (deletions' vectors as postcard maps) never shipped.
    let mut v1 = bytes.clone();
    v1[0] = 1;
    assert!(matches!(
        codec::decode_change(&v1),
        Err(codec::CodecError::UnknownFormat { found: 1 })
    ));
    assert!(matches!(
        codec::decode_change(&bytes[..bytes.len() - 1]),
        Err(codec::CodecError::Truncated)
    ));
    assert!(codec::decode_change(&[]).is_err());
}

//! Test suites shared by every backend, so the in-memory and LMDB stores are
//! held to exactly the same contract. Backends call these from their own tests.

use crate::kv::{Kv, KvRead, KvWrite, Table};

fn collect<R: KvRead>(r: &R, table: Table, from: &[u8], to: Option<&[u8]>, reverse: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    r.scan(table, from, to, reverse, &mut |k, v| {
        out.push((k.to_vec(), v.to_vec()));
        true
    })
    .expect("scan");
    out
}

/// The key-value contract: read-your-writes, atomic commit, abort on drop,
/// snapshot isolation, ordered and reverse scans with bounds, table separation.
/// `kv` must be empty.
pub fn kv_conformance<K: Kv>(kv: &K) {
    // Writes are visible inside the transaction, invisible outside until commit.
    let mut w = kv.write().unwrap();
    for i in 0u8..10 {
        w.put(Table::Docs, &[i], &[i, i]).unwrap();
    }
    w.put(Table::Ids, b"a", b"x").unwrap();
    assert_eq!(w.get(Table::Docs, &[3]).unwrap(), Some(&[3u8, 3][..]));
    assert!(w.delete(Table::Docs, &[9]).unwrap());
    assert!(!w.delete(Table::Docs, &[42]).unwrap());
    assert_eq!(w.get(Table::Docs, &[9]).unwrap(), None);
    assert_eq!(collect(&w, Table::Docs, &[2], Some(&[5]), false).len(), 3);
    w.commit().unwrap();

    let r = kv.read().unwrap();
    assert_eq!(r.get(Table::Docs, &[0]).unwrap(), Some(&[0u8, 0][..]));
    assert_eq!(r.get(Table::Docs, &[9]).unwrap(), None);
    assert_eq!(r.get(Table::Meta, b"a").unwrap(), None, "tables are separate");
    assert_eq!(r.get(Table::Ids, b"a").unwrap(), Some(&b"x"[..]));
    let all = collect(&r, Table::Docs, &[], None, false);
    assert_eq!(
        all.iter().map(|(k, _)| k[0]).collect::<Vec<_>>(),
        (0..9).collect::<Vec<_>>()
    );
    let rev = collect(&r, Table::Docs, &[2], Some(&[6]), true);
    assert_eq!(rev.iter().map(|(k, _)| k[0]).collect::<Vec<_>>(), vec![5, 4, 3, 2]);
    assert!(collect(&r, Table::Docs, &[6], Some(&[2]), false).is_empty());
    let mut first_two = Vec::new();
    r.scan(Table::Docs, &[], None, false, &mut |k, _| {
        first_two.push(k[0]);
        first_two.len() < 2
    })
    .unwrap();
    assert_eq!(first_two, vec![0, 1]);
    drop(r);

    // A dropped transaction changes nothing.
    let mut w = kv.write().unwrap();
    w.put(Table::Docs, &[100], b"gone").unwrap();
    w.delete(Table::Docs, &[0]).unwrap();
    drop(w);
    let r = kv.read().unwrap();
    assert_eq!(r.get(Table::Docs, &[100]).unwrap(), None);
    assert!(r.get(Table::Docs, &[0]).unwrap().is_some());

    // A snapshot does not see later commits.
    let mut w = kv.write().unwrap();
    w.put(Table::Docs, &[0], b"new").unwrap();
    w.delete(Table::Docs, &[1]).unwrap();
    // Scans inside a write transaction merge pending writes and deletes.
    let keys: Vec<u8> = collect(&w, Table::Docs, &[], Some(&[4]), false)
        .iter()
        .map(|(k, _)| k[0])
        .collect();
    assert_eq!(keys, vec![0, 2, 3]);
    let keys: Vec<u8> = collect(&w, Table::Docs, &[], Some(&[4]), true)
        .iter()
        .map(|(k, _)| k[0])
        .collect();
    assert_eq!(keys, vec![3, 2, 0]);
    w.commit().unwrap();
    assert_eq!(r.get(Table::Docs, &[0]).unwrap(), Some(&[0u8, 0][..]));
    assert!(r.get(Table::Docs, &[1]).unwrap().is_some());
    drop(r);
    let r = kv.read().unwrap();
    assert_eq!(r.get(Table::Docs, &[0]).unwrap(), Some(&b"new"[..]));
    assert_eq!(r.get(Table::Docs, &[1]).unwrap(), None);
}

use crate::codec::Change;
use crate::store::{Edit, OnConflict, Store, StoreConfig, StoreError};
use crate::value::Value;
use crate::vv::VersionVector;
use crate::{doc::Num, hlc::PeerId};

fn v(s: &str) -> Value {
    Value::parse(s).expect("test JSON")
}

fn path(s: &str) -> Vec<String> {
    s.split('.').map(str::to_string).collect()
}

fn scan_all<K: Kv>(s: &Store<K>, coll: &str) -> Vec<Result<Value, String>> {
    let r = s.read().unwrap();
    let mut out = Vec::new();
    r.scan(coll, &mut |d| {
        out.push(d.map_err(|e| e.to_string()));
        true
    })
    .unwrap();
    out
}

/// Copies every change `to` lacks from `from`, in batches of `batch` documents.
pub fn sync_into<A: Kv, B: Kv>(from: &Store<A>, to: &Store<B>, now_ms: u64, batch: usize) -> usize {
    let mut applied = 0;
    let since = to.read().unwrap().version_vector().unwrap();
    let mut resume = None;
    let mut upto = None;
    loop {
        let got = from
            .read()
            .unwrap()
            .changes_since(&since, resume.as_ref(), batch)
            .unwrap();
        let upto = upto.get_or_insert(got.upto);
        let mut w = to.write(now_ms).unwrap();
        // Through the wire format, as a peer would receive it.
        let wire: Vec<Change> = got
            .changes
            .iter()
            .map(|c| crate::codec::decode_change(&crate::codec::encode_change(c)).unwrap())
            .collect();
        let outcome = w.apply_batch(&wire).unwrap();
        assert!(outcome.refused.is_empty(), "{:?}", outcome.refused);
        applied += outcome.applied;
        if got.resume.is_none() {
            w.mark_synced(upto);
        }
        w.commit().unwrap();
        resume = got.resume;
        if resume.is_none() {
            return applied;
        }
    }
}

/// The document store's contract, run against a fresh backend from `fresh`.
/// Each check gets its own store.
pub fn store_suite<K: Kv>(fresh: &mut dyn FnMut() -> K) {
    let open = |kv: K, peer: u64| Store::open(kv, StoreConfig::default(), PeerId(peer), peer).unwrap();
    crud_and_conflicts(&open(fresh(), 1));
    transactions_are_atomic_and_isolated(&open(fresh(), 1));
    bad_input_is_refused_cleanly(&open(fresh(), 1));
    delete_and_evict(&open(fresh(), 1));
    size_limit(fresh());
    corrupt_records_are_named_and_isolated(&open(fresh(), 1));
    replicas_converge_through_deltas(&open(fresh(), 1), &open(fresh(), 2), &open(fresh(), 3));
    batches_refuse_bad_changes_one_by_one(&open(fresh(), 1), fresh());
    diff_updates_and_initial_documents(&open(fresh(), 1), &open(fresh(), 2));
    indexes_follow_every_write(&open(fresh(), 1), &open(fresh(), 2));
    remote_clock_far_in_future_is_refused(&open(fresh(), 1), &open(fresh(), 2));
    log_heads_are_rebuilt_when_missing(fresh(), &open(fresh(), 2));
    id_index_merges_keep_every_id(fresh());
}

/// The id index's recent level is merged into the main one a slice at a
/// time from a rotating cursor: across many merges, in two collections,
/// every id stays found, a duplicate is still refused, and a damaged cursor
/// (disk bytes) restarts the rotation instead of failing.
fn id_index_merges_keep_every_id<K: Kv>(kv: K) {
    const COMMITS: u64 = 24;
    const PER_COMMIT: u64 = 1_000;
    let kv = std::sync::Arc::new(kv);
    let s = Store::open(kv.clone(), StoreConfig::default(), PeerId(1), 1).unwrap();
    let id = |i: u64| format!("{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    for c in 0..COMMITS {
        if c == COMMITS / 2 {
            let mut w = kv.write().unwrap();
            w.put(Table::Meta, b"ids_cursor", b"\x07garbage").unwrap();
            w.commit().unwrap();
        }
        let mut w = s.write(1_000 + c).unwrap();
        for i in c * PER_COMMIT..(c + 1) * PER_COMMIT {
            let coll = if i % 3 == 0 { "a" } else { "b" };
            w.insert(coll, &v(&format!(r#"{{"_id":"{}","i":{i}}}"#, id(i))), OnConflict::Fail)
                .unwrap();
        }
        w.commit().unwrap();
    }
    let r = s.read().unwrap();
    for i in 0..COMMITS * PER_COMMIT {
        let coll = if i % 3 == 0 { "a" } else { "b" };
        let doc = r.get(coll, &Value::String(id(i))).unwrap();
        assert!(doc.is_some(), "id {i} lost");
        let other = if i % 3 == 0 { "b" } else { "a" };
        assert!(r.get(other, &Value::String(id(i))).unwrap().is_none());
    }
    drop(r);
    let mut w = s.write(5_000).unwrap();
    assert!(w
        .insert("b", &v(&format!(r#"{{"_id":"{}"}}"#, id(1))), OnConflict::Fail)
        .is_err());
}

/// The change log's heads (which origins to visit when serving) are
/// derived data: a store that lacks them (written before they were kept)
/// gets them back from the log on open, and serves every origin.
fn log_heads_are_rebuilt_when_missing<K: Kv>(kv: K, other: &Store<K>) {
    let kv = std::sync::Arc::new(kv);
    let a = Store::open(kv.clone(), StoreConfig::default(), PeerId(1), 1).unwrap();
    let mut w = a.write(1_000).unwrap();
    w.insert("t", &v(r#"{"_id":"from_a","n":1}"#), OnConflict::Fail)
        .unwrap();
    w.commit().unwrap();
    let mut w = other.write(1_000).unwrap();
    w.insert("t", &v(r#"{"_id":"from_b","n":1}"#), OnConflict::Fail)
        .unwrap();
    w.commit().unwrap();
    assert_eq!(sync_into(other, &a, 1_000, 7), 1);
    drop(a);
    let mut w = kv.write().unwrap();
    assert!(w.delete(Table::Meta, b"log_heads").unwrap(), "heads are kept");
    w.commit().unwrap();
    let a = Store::open(kv.clone(), StoreConfig::default(), PeerId(1), 1).unwrap();
    let all = a
        .read()
        .unwrap()
        .changes_since(&VersionVector::new(), None, 10)
        .unwrap();
    let mut ids: Vec<String> = all.changes.iter().map(|c| c.id.to_string()).collect();
    ids.sort();
    assert_eq!(ids, ["\"from_a\"", "\"from_b\""]);
    let none = a.read().unwrap().changes_since(&all.upto, None, 10).unwrap();
    assert!(none.changes.is_empty(), "{:?}", none.changes);
}

fn crud_and_conflicts<K: Kv>(s: &Store<K>) {
    let mut w = s.write(1_000).unwrap();
    let a = w
        .insert(
            "tasks",
            &v(r#"{"_id":"a","title":"x","meta":{"n":1}}"#),
            OnConflict::Fail,
        )
        .unwrap();
    assert_eq!(a.id, v(r#""a""#));
    let gen = w.insert("tasks", &v(r#"{"title":"no id"}"#), OnConflict::Fail).unwrap();
    let Value::String(g) = &gen.id else {
        panic!("generated id is a string")
    };
    assert_eq!(g.len(), 36, "UUID layout: {g}");
    assert_eq!(
        w.insert("tasks", &v(r#"{"_id":3.0}"#), OnConflict::Fail).unwrap().id,
        Value::Int(3),
        "3.0 and 3 are one id"
    );
    let e = w.insert("tasks", &v(r#"{"_id":"a"}"#), OnConflict::Fail).unwrap_err();
    assert!(matches!(e, StoreError::AlreadyExists { .. }), "{e}");
    assert!(
        !w.insert("tasks", &v(r#"{"_id":"a","title":"y"}"#), OnConflict::Ignore)
            .unwrap()
            .written
    );
    w.insert("tasks", &v(r#"{"_id":"a","done":true}"#), OnConflict::Merge)
        .unwrap();
    assert_eq!(
        w.get("tasks", &v(r#""a""#)).unwrap().unwrap(),
        v(r#"{"_id":"a","done":true,"meta":{"n":1},"title":"x"}"#)
    );
    w.insert("tasks", &v(r#"{"_id":"a","only":1}"#), OnConflict::Replace)
        .unwrap();
    assert_eq!(
        w.get("tasks", &v(r#""a""#)).unwrap().unwrap(),
        v(r#"{"_id":"a","only":1}"#)
    );
    let edits = [
        Edit::Set {
            path: path("meta.deep.x"),
            value: v("[1,2]"),
        },
        Edit::Increment {
            path: path("views"),
            by: Num::Int(2),
        },
        Edit::Increment {
            path: path("views"),
            by: Num::Int(3),
        },
        Edit::Unset { path: path("only") },
    ];
    assert!(w.update("tasks", &v(r#""a""#), &edits).unwrap());
    assert!(!w.update("tasks", &v(r#""missing""#), &edits).unwrap());
    w.commit().unwrap();
    let r = s.read().unwrap();
    assert_eq!(
        r.get("tasks", &v(r#""a""#)).unwrap().unwrap(),
        v(r#"{"_id":"a","meta":{"deep":{"x":[1,2]}},"views":5}"#)
    );
    assert_eq!(r.get("tasks", &v("3")).unwrap().unwrap(), v(r#"{"_id":3}"#));
    assert_eq!(r.collections().unwrap(), vec!["tasks".to_string()]);
    assert_eq!(scan_all(s, "tasks").len(), 3);
    assert!(scan_all(s, "nothing").is_empty());
    let composite = v(r#"{"b":2,"a":"x"}"#);
    drop(r);
    let mut w = s.write(1_001).unwrap();
    w.insert("pairs", &v(r#"{"_id":{"a":"x","b":2},"v":1}"#), OnConflict::Fail)
        .unwrap();
    w.commit().unwrap();
    assert!(
        s.read().unwrap().get("pairs", &composite).unwrap().is_some(),
        "object ids match whatever the key order"
    );
}

fn transactions_are_atomic_and_isolated<K: Kv>(s: &Store<K>) {
    let mut w = s.write(1_000).unwrap();
    w.insert("a", &v(r#"{"_id":1,"x":1}"#), OnConflict::Fail).unwrap();
    w.commit().unwrap();
    let before = s.read().unwrap();
    // Many documents in several collections: all or nothing.
    let mut w = s.write(2_000).unwrap();
    for i in 0..50 {
        w.insert("a", &v(&format!(r#"{{"_id":{},"x":{i}}}"#, i + 10)), OnConflict::Fail)
            .unwrap();
        w.insert("b", &v(&format!(r#"{{"_id":{i}}}"#)), OnConflict::Fail)
            .unwrap();
    }
    assert!(w.get("b", &v("7")).unwrap().is_some(), "read-your-writes");
    drop(w);
    assert!(
        s.read().unwrap().get("b", &v("7")).unwrap().is_none(),
        "an aborted transaction leaves nothing"
    );
    let mut w = s.write(3_000).unwrap();
    for i in 0..50 {
        w.insert("b", &v(&format!(r#"{{"_id":{i}}}"#)), OnConflict::Fail)
            .unwrap();
    }
    w.update(
        "a",
        &v("1"),
        &[Edit::Set {
            path: path("x"),
            value: v("2"),
        }],
    )
    .unwrap();
    w.commit().unwrap();
    assert_eq!(
        before.get("a", &v("1")).unwrap().unwrap(),
        v(r#"{"_id":1,"x":1}"#),
        "snapshot is stable"
    );
    assert!(before.get("b", &v("0")).unwrap().is_none());
    assert_eq!(scan_all(s, "b").len(), 50);
    assert_eq!(
        s.read().unwrap().get("a", &v("1")).unwrap().unwrap(),
        v(r#"{"_id":1,"x":2}"#)
    );
}

fn bad_input_is_refused_cleanly<K: Kv>(s: &Store<K>) {
    let mut w = s.write(1_000).unwrap();
    let cases: Vec<(&str, Value)> = vec![
        ("c", v("[1]")),
        ("c", v(r#"{"_id":null}"#)),
        ("c", v(r#"{"_id":[1]}"#)),
        ("c", v(r#"{"_id":{}}"#)),
        ("", v(r#"{"_id":1}"#)),
        ("c", Value::Object([("f".to_string(), Value::Float(f64::NAN))].into())),
        (
            "c",
            Value::Object([("_id".to_string(), Value::String("x".repeat(600)))].into()),
        ),
    ];
    for (coll, doc) in &cases {
        let e = w.insert(coll, doc, OnConflict::Fail).unwrap_err();
        assert!(!e.to_string().is_empty());
    }
    w.insert("c", &v(r#"{"_id":1}"#), OnConflict::Fail).unwrap();
    for edit in [
        Edit::Set {
            path: vec![],
            value: v("1"),
        },
        Edit::Set {
            path: path("_id"),
            value: v("1"),
        },
        Edit::Unset {
            path: vec!["a".into(); 40],
        },
    ] {
        let e = w.update("c", &v("1"), &[edit]).unwrap_err();
        assert!(matches!(e, StoreError::InvalidPath { .. }), "{e}");
    }
    w.commit().unwrap();
    assert_eq!(
        scan_all(s, "c"),
        vec![Ok(v(r#"{"_id":1}"#))],
        "nothing partial was written"
    );
}

fn delete_and_evict<K: Kv>(s: &Store<K>) {
    let mut w = s.write(1_000).unwrap();
    for i in 0..3 {
        w.insert("d", &v(&format!(r#"{{"_id":{i},"x":1}}"#)), OnConflict::Fail)
            .unwrap();
    }
    w.commit().unwrap();
    let other = VersionVector::new();
    let mut w = s.write(2_000).unwrap();
    assert!(w.delete("d", &v("0")).unwrap());
    assert!(!w.delete("d", &v("0")).unwrap(), "already deleted");
    assert!(w.evict("d", &v("1")).unwrap());
    assert!(!w.evict("d", &v("1")).unwrap());
    w.commit().unwrap();
    let r = s.read().unwrap();
    assert!(r.get("d", &v("0")).unwrap().is_none());
    assert!(
        r.get_doc("d", &v("0")).unwrap().unwrap().deleted.is_some(),
        "a delete leaves a tombstone"
    );
    assert!(r.get_doc("d", &v("1")).unwrap().is_none(), "an eviction leaves nothing");
    let batch = r.changes_since(&other, None, 100).unwrap();
    let ids: Vec<&Value> = batch.changes.iter().map(|c| &c.id).collect();
    assert_eq!(
        ids,
        vec![&Value::Int(2), &Value::Int(0)],
        "log order; the tombstone syncs, the evicted document does not"
    );
    drop(r);
    // Re-inserting after delete brings the document back.
    let mut w = s.write(3_000).unwrap();
    w.insert("d", &v(r#"{"_id":0,"y":2}"#), OnConflict::Fail).unwrap();
    w.commit().unwrap();
    assert_eq!(
        s.read().unwrap().get("d", &v("0")).unwrap().unwrap(),
        v(r#"{"_id":0,"y":2}"#)
    );
}

fn size_limit<K: Kv>(kv: K) {
    let config = StoreConfig {
        max_doc_bytes: 10_000,
        ..StoreConfig::default()
    };
    let s = Store::open(kv, config, PeerId(1), 1).unwrap();
    let mut w = s.write(1_000).unwrap();
    w.insert("big", &v(r#"{"_id":"k","small":1}"#), OnConflict::Fail)
        .unwrap();
    let big = Value::String("x".repeat(20_000));
    let e = w
        .insert(
            "big",
            &Value::Object([("blob".to_string(), big.clone())].into()),
            OnConflict::Fail,
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::DocumentTooLarge {
                limit_bytes: 10_000,
                ..
            }
        ),
        "{e}"
    );
    let e = w
        .update(
            "big",
            &v(r#""k""#),
            &[Edit::Set {
                path: path("blob"),
                value: big,
            }],
        )
        .unwrap_err();
    assert!(e.to_string().contains("\"k\""), "the error names the document: {e}");
    w.commit().unwrap();
    assert_eq!(
        s.read().unwrap().get("big", &v(r#""k""#)).unwrap().unwrap(),
        v(r#"{"_id":"k","small":1}"#)
    );
}

fn corrupt_records_are_named_and_isolated<K: Kv>(s: &Store<K>) {
    use crate::kv::{KvRead, KvWrite, Table};
    let mut w = s.write(1_000).unwrap();
    for i in 0..4 {
        w.insert("c", &v(&format!(r#"{{"_id":"doc{i}","x":{i}}}"#)), OnConflict::Fail)
            .unwrap();
    }
    w.commit().unwrap();
    // Damage records behind the store's back: a flipped byte, a truncation, garbage.
    let mut raw = s.kv().write().unwrap();
    let mut records = Vec::new();
    raw.scan(Table::Docs, &[], None, false, &mut |k, v| {
        records.push((k.to_vec(), v.to_vec()));
        true
    })
    .unwrap();
    let (k0, mut v0) = records[0].clone();
    let last = v0.len() - 1;
    v0[last] ^= 0x40;
    raw.put(Table::Docs, &k0, &v0).unwrap();
    let (k1, v1) = records[1].clone();
    raw.put(Table::Docs, &k1, &v1[..v1.len() / 2]).unwrap();
    raw.put(Table::Docs, &records[2].0, &[1, 2]).unwrap();
    raw.commit().unwrap();

    let r = s.read().unwrap();
    let e = r.get("c", &v(r#""doc0""#)).unwrap_err();
    assert!(
        matches!(&e, StoreError::Corrupt { id: Some(id), .. } if id == "\"doc0\""),
        "{e}"
    );
    assert!(e.to_string().contains("doc0") && e.to_string().contains("c"), "{e}");
    let e = r.get("c", &v(r#""doc1""#)).unwrap_err();
    assert!(matches!(&e, StoreError::Corrupt { .. }), "{e}");
    assert!(r.get("c", &v(r#""doc2""#)).is_err());
    assert_eq!(
        r.get("c", &v(r#""doc3""#)).unwrap().unwrap(),
        v(r#"{"_id":"doc3","x":3}"#),
        "the rest stays readable"
    );
    let all = scan_all(s, "c");
    assert_eq!(all.len(), 4);
    assert_eq!(all.iter().filter(|d| d.is_err()).count(), 3);
    drop(r);
    // A damaged document can be evicted and written again.
    let mut w = s.write(2_000).unwrap();
    assert!(w.evict("c", &v(r#""doc0""#)).unwrap());
    w.insert("c", &v(r#"{"_id":"doc0","x":0}"#), OnConflict::Fail).unwrap();
    w.commit().unwrap();
    assert!(s.read().unwrap().get("c", &v(r#""doc0""#)).unwrap().is_some());
}

fn replicas_converge_through_deltas<K: Kv>(a: &Store<K>, b: &Store<K>, c: &Store<K>) {
    let mut w = a.write(1_000).unwrap();
    for i in 0..20 {
        w.insert(
            "t",
            &v(&format!(r#"{{"_id":{i},"n":{i},"m":{{"x":1}}}}"#)),
            OnConflict::Fail,
        )
        .unwrap();
    }
    w.commit().unwrap();
    assert_eq!(sync_into(a, b, 1_000, 7), 20);
    assert_eq!(sync_into(a, b, 1_000, 7), 0, "nothing is sent twice");
    // Concurrent edits on both sides, then a chain a -> b -> c and back.
    let mut w = a.write(2_000).unwrap();
    w.update(
        "t",
        &v("1"),
        &[Edit::Set {
            path: path("m.x"),
            value: v("2"),
        }],
    )
    .unwrap();
    w.update(
        "t",
        &v("2"),
        &[Edit::Increment {
            path: path("views"),
            by: Num::Int(1),
        }],
    )
    .unwrap();
    w.delete("t", &v("3")).unwrap();
    w.commit().unwrap();
    let mut w = b.write(2_000).unwrap();
    w.update(
        "t",
        &v("1"),
        &[Edit::Set {
            path: path("m.y"),
            value: v("3"),
        }],
    )
    .unwrap();
    w.update(
        "t",
        &v("2"),
        &[Edit::Increment {
            path: path("views"),
            by: Num::Int(10),
        }],
    )
    .unwrap();
    w.update(
        "t",
        &v("3"),
        &[Edit::Set {
            path: path("late"),
            value: v("true"),
        }],
    )
    .unwrap();
    w.commit().unwrap();
    let since = b.read().unwrap().version_vector().unwrap();
    let delta = a.read().unwrap().changes_since(&since, None, 100).unwrap();
    assert_eq!(delta.changes.len(), 3, "only the edited documents travel");
    assert!(
        delta.changes.iter().all(|c| c.ops.len() <= 4),
        "field-level deltas, not whole documents: {delta:?}"
    );
    sync_into(a, b, 3_000, 2);
    sync_into(b, c, 3_000, 5);
    sync_into(c, a, 3_000, 100);
    for s in [a, b, c] {
        let r = s.read().unwrap();
        assert_eq!(
            r.get("t", &v("1")).unwrap().unwrap(),
            v(r#"{"_id":1,"m":{"x":2,"y":3},"n":1}"#)
        );
        assert_eq!(
            r.get("t", &v("2")).unwrap().unwrap(),
            v(r#"{"_id":2,"m":{"x":1},"n":2,"views":11}"#)
        );
        assert_eq!(r.get("t", &v("3")).unwrap().unwrap(), v(r#"{"_id":3,"late":true}"#));
    }
    let meta = |s: &Store<K>| {
        (0..20)
            .map(|i| s.read().unwrap().get_doc("t", &Value::Int(i)).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(meta(a), meta(c), "identical CRDT metadata");
    assert_eq!(
        a.read().unwrap().version_vector().unwrap(),
        c.read().unwrap().version_vector().unwrap()
    );
}

fn remote_clock_far_in_future_is_refused<K: Kv>(a: &Store<K>, b: &Store<K>) {
    let hour_ms = 3_600_000;
    let mut w = a.write(10 * hour_ms).unwrap();
    w.insert("t", &v(r#"{"_id":1,"x":1}"#), OnConflict::Fail).unwrap();
    w.commit().unwrap();
    let changes: Vec<Change> = a
        .read()
        .unwrap()
        .changes_since(&VersionVector::new(), None, 10)
        .unwrap()
        .changes;
    let mut w = b.write(8 * hour_ms).unwrap();
    let e = w.apply(&changes[0]).unwrap_err();
    assert!(matches!(e, StoreError::Clock(_)), "{e}");
    drop(w);
    let before = b.clock_high_water();
    assert!(before.wall_ms() < 9 * hour_ms, "the clock was not dragged forward");
    let mut w = b.write(9 * hour_ms + 1).unwrap();
    assert!(w.apply(&changes[0]).unwrap(), "within the bound it merges");
    w.commit().unwrap();
}

fn batches_refuse_bad_changes_one_by_one<K: Kv>(a: &Store<K>, kv: K) {
    let small = Store::open(
        kv,
        StoreConfig {
            max_doc_bytes: 400,
            ..StoreConfig::default()
        },
        PeerId(2),
        2,
    )
    .unwrap();
    let mut w = a.write(1_000).unwrap();
    for i in 0..3 {
        w.insert("t", &v(&format!(r#"{{"_id":{i},"x":{i}}}"#)), OnConflict::Fail)
            .unwrap();
    }
    w.commit().unwrap();
    let mut w = a.write(2_000).unwrap();
    w.update(
        "t",
        &v("1"),
        &[Edit::Set {
            path: path("x"),
            value: v("10"),
        }],
    )
    .unwrap();
    w.update(
        "t",
        &v("2"),
        &[Edit::Set {
            path: path("blob"),
            value: Value::String("z".repeat(500)),
        }],
    )
    .unwrap();
    w.commit().unwrap();
    let mut changes = a
        .read()
        .unwrap()
        .changes_since(&VersionVector::new(), None, 100)
        .unwrap()
        .changes;
    changes.push(changes[0].clone()); // a duplicate
    let mut future = changes[0].clone();
    future.id = v("9");
    if let crate::doc::Op::Set { stamp, .. } = &mut future.ops[0] {
        stamp.hlc = crate::hlc::Hlc::new(10 * 3_600_000, 0);
    }
    changes.push(future);
    let mut w = small.write(2_000).unwrap();
    let out = w.apply_batch(&changes).unwrap();
    let refused: Vec<usize> = out.refused.iter().map(|(i, _)| *i).collect();
    let big = changes.iter().position(|c| c.id == v("2")).unwrap();
    assert_eq!(refused, vec![big, 4], "{:?}", out.refused);
    assert!(matches!(out.refused[0].1, StoreError::DocumentTooLarge { .. }));
    assert!(matches!(out.refused[1].1, StoreError::Clock(_)));
    assert_eq!(out.applied, 3, "two documents, one of them twice");
    w.commit().unwrap();
    let r = small.read().unwrap();
    assert_eq!(r.get("t", &v("1")).unwrap().unwrap(), v(r#"{"_id":1,"x":10}"#));
    assert!(
        r.get("t", &v("2")).unwrap().is_none(),
        "a refused document changes nothing"
    );
    assert!(r.get("t", &v("9")).unwrap().is_none());
}

fn diff_updates_and_initial_documents<K: Kv>(a: &Store<K>, b: &Store<K>) {
    let mut w = a.write(1_000).unwrap();
    w.insert(
        "t",
        &v(r#"{"_id":1,"same":1,"m":{"x":1,"y":2},"chg":1}"#),
        OnConflict::Fail,
    )
    .unwrap();
    w.commit().unwrap();
    let before = a.read().unwrap().get_doc("t", &v("1")).unwrap().unwrap();
    let mut w = a.write(2_000).unwrap();
    let doc = v(r#"{"_id":1,"same":1,"m":{"x":1,"y":3},"chg":2}"#);
    assert!(w.insert("t", &doc, OnConflict::MergeDiff).unwrap().written);
    assert!(
        !w.insert("t", &doc, OnConflict::MergeDiff).unwrap().written,
        "nothing differs any more"
    );
    w.commit().unwrap();
    let after = a.read().unwrap().get_doc("t", &v("1")).unwrap().unwrap();
    let stamp = |d: &crate::doc::Doc, p: &str| d.slots[&path(p)].reg.as_ref().unwrap().stamp;
    assert_eq!(
        stamp(&before, "same"),
        stamp(&after, "same"),
        "unchanged fields are not rewritten"
    );
    assert_eq!(stamp(&before, "m.x"), stamp(&after, "m.x"));
    assert_ne!(stamp(&before, "m.y"), stamp(&after, "m.y"));
    assert_eq!(a.read().unwrap().get("t", &v("1")).unwrap().unwrap(), doc);

    // Initial documents: skipped where the id exists, and never win over a real edit.
    let mut w = a.write(3_000).unwrap();
    assert!(
        !w.insert("t", &v(r#"{"_id":1,"same":0}"#), OnConflict::Initial)
            .unwrap()
            .written
    );
    assert!(
        w.insert(
            "cfg",
            &v(r#"{"_id":"theme","color":"blue","size":1}"#),
            OnConflict::Initial
        )
        .unwrap()
        .written
    );
    w.commit().unwrap();
    let mut w = b.write(500).unwrap();
    w.insert("cfg", &v(r#"{"_id":"theme","color":"red"}"#), OnConflict::Fail)
        .unwrap();
    w.commit().unwrap();
    sync_into(a, b, 4_000, 10);
    sync_into(b, a, 4_000, 10);
    for s in [a, b] {
        let got = s.read().unwrap().get("cfg", &v(r#""theme""#)).unwrap().unwrap();
        assert_eq!(
            got,
            v(r#"{"_id":"theme","color":"red","size":1}"#),
            "the real edit wins, even with an earlier clock; a default it did not write stays"
        );
    }
}

/// Index order must equal a full scan sorted by the indexed values.
fn assert_index_consistent<K: Kv>(s: &Store<K>, name: &str) {
    let r = s.read().unwrap();
    let def = r
        .indexes()
        .unwrap()
        .into_iter()
        .find(|d| d.name == name)
        .expect("index exists");
    let mut via_index = Vec::new();
    let (from, to) = (def.id.to_be_bytes(), (def.id + 1).to_be_bytes());
    r.index_scan(&def, &from, Some(&to), false, &mut |d| {
        via_index.push(d.unwrap());
        true
    })
    .unwrap();
    let mut via_scan: Vec<Value> = Vec::new();
    r.scan(&def.collection, &mut |d| {
        via_scan.push(d.unwrap());
        true
    })
    .unwrap();
    let key = |d: &Value| {
        let mut k = Vec::new();
        for v in def.values(d) {
            crate::store::encode_sort_key(v.as_ref(), &mut k);
        }
        k
    };
    via_scan.sort_by(|a, b| key(a).cmp(&key(b)).then_with(|| a.total_cmp(b)));
    via_index.sort_by(|a, b| key(a).cmp(&key(b)).then_with(|| a.total_cmp(b)));
    assert_eq!(via_index, via_scan, "index {name} disagrees with the documents");
}

fn indexes_follow_every_write<K: Kv>(a: &Store<K>, b: &Store<K>) {
    let mut w = a.write(1_000).unwrap();
    for i in 0..20 {
        w.insert(
            "t",
            &v(&format!(r#"{{"_id":{i},"p":{},"s":"x{}"}}"#, i % 5, i % 3)),
            OnConflict::Fail,
        )
        .unwrap();
    }
    let by = |p: &str| vec![path(p)];
    assert!(w.create_index("t_p", "t", &by("p"), false).unwrap());
    assert!(!w.create_index("t_p", "t", &by("p"), true).unwrap());
    assert!(w.create_index("t_p", "t", &by("p"), false).is_err());
    w.create_index("t_s_p", "t", &[path("s"), path("p")], false).unwrap();
    w.insert("t", &v(r#"{"_id":100,"p":1}"#), OnConflict::Fail).unwrap();
    let committed = w.commit().unwrap();
    assert_eq!(
        committed.changed.get("t"),
        Some(&crate::store::Changed::Many),
        "a new index may change the plans of its collection: live queries look again"
    );
    assert_index_consistent(a, "t_p");
    assert_index_consistent(a, "t_s_p");
    let mut w = a.write(2_000).unwrap();
    w.update(
        "t",
        &v("1"),
        &[Edit::Set {
            path: path("p"),
            value: v("99"),
        }],
    )
    .unwrap();
    w.update("t", &v("2"), &[Edit::Unset { path: path("p") }]).unwrap();
    w.delete("t", &v("3")).unwrap();
    w.evict("t", &v("4")).unwrap();
    w.insert("t", &v(r#"{"_id":5,"p":"str"}"#), OnConflict::Replace)
        .unwrap();
    w.commit().unwrap();
    assert_index_consistent(a, "t_p");
    assert_index_consistent(a, "t_s_p");
    // Remote changes maintain indexes too.
    let mut w = b.write(1_000).unwrap();
    w.create_index("t_p", "t", &by("p"), false).unwrap();
    w.commit().unwrap();
    sync_into(a, b, 3_000, 3);
    assert_index_consistent(b, "t_p");
    let mut w = b.write(3_000).unwrap();
    let remote = a
        .read()
        .unwrap()
        .changes_since(&VersionVector::new(), None, 1)
        .unwrap()
        .changes;
    w.apply_batch(&remote).unwrap();
    assert!(w.commit().unwrap().changed.is_empty(), "nothing new, nothing listed");
    let mut w = b.write(3_000).unwrap();
    assert!(w.drop_index("t_p", false).unwrap());
    assert!(!w.drop_index("t_p", true).unwrap());
    w.commit().unwrap();
    assert!(b.read().unwrap().indexes().unwrap().is_empty());
}

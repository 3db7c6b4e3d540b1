//! The store's contract on the in-memory backend (LMDB runs the same suite).

#[test]
fn kv_contract() {
    rhizome_engine::testing::kv_conformance(&rhizome_engine::mem::MemKv::new());
}

#[test]
fn store_contract() {
    rhizome_engine::testing::store_suite(&mut rhizome_engine::mem::MemKv::new);
}

/// Collection ids are cached from committed snapshots only: a write
/// transaction that created a collection and was dropped leaves nothing
/// behind, an older snapshot still finds nothing, and ids reused by a later
/// transaction for another collection read that collection's documents.
#[test]
fn cached_collection_ids_follow_commits() {
    use rhizome_engine::hlc::PeerId;
    use rhizome_engine::store::{OnConflict, Store, StoreConfig};
    use rhizome_engine::value::Value;
    let store = Store::open(rhizome_engine::mem::MemKv::new(), StoreConfig::default(), PeerId(1), 7).unwrap();
    let doc = |id: &str| Value::parse(&format!(r#"{{"_id":"{id}","n":1}}"#)).unwrap();
    let before = store.read().unwrap();
    // Created, read inside the transaction, dropped: never committed.
    let mut w = store.write(1).unwrap();
    w.insert("gone", &doc("a"), OnConflict::Fail).unwrap();
    assert!(w.get("gone", &Value::from("a")).unwrap().is_some());
    drop(w);
    assert_eq!(store.read().unwrap().get("gone", &Value::from("a")).unwrap(), None);
    // The id the dropped transaction had taken now goes to another collection.
    let mut w = store.write(2).unwrap();
    w.insert("kept", &doc("b"), OnConflict::Fail).unwrap();
    w.commit().unwrap();
    let now = store.read().unwrap();
    assert!(
        now.get("kept", &Value::from("b")).unwrap().is_some(),
        "cached after this read"
    );
    assert!(
        now.get("kept", &Value::from("b")).unwrap().is_some(),
        "read through the cache"
    );
    assert_eq!(now.get("gone", &Value::from("a")).unwrap(), None);
    assert_eq!(
        before.get("kept", &Value::from("b")).unwrap(),
        None,
        "an older snapshot"
    );
    let mut seen = 0;
    before
        .scan("kept", &mut |_| {
            seen += 1;
            true
        })
        .unwrap();
    assert_eq!(seen, 0);
}

/// Decoded version vectors are cached by their stored bytes: every read
/// (a new snapshot, an older one, a write transaction, a sync request
/// reading the log heads) still sees the vector of its own snapshot.
#[test]
fn cached_version_vectors_follow_commits() {
    use rhizome_engine::hlc::{Hlc, PeerId};
    use rhizome_engine::mem::MemKv;
    use rhizome_engine::store::{OnConflict, Store, StoreConfig};
    use rhizome_engine::value::Value;
    let open = |p| Store::open(MemKv::new(), StoreConfig::default(), PeerId(p), 7).unwrap();
    let (a, b, c, d) = (open(1), open(2), open(3), open(4));
    let write = |s: &Store<MemKv>, id: &str, now_ms: u64| {
        let mut w = s.write(now_ms).unwrap();
        let doc = Value::parse(&format!(r#"{{"_id":"{id}","n":1}}"#)).unwrap();
        w.insert("docs", &doc, OnConflict::Fail).unwrap();
        w.commit().unwrap();
    };
    let pull = |from: &Store<MemKv>, to: &Store<MemKv>, now_ms: u64| {
        let since = to.read().unwrap().version_vector().unwrap();
        let batch = from.read().unwrap().changes_since(&since, None, 1_000).unwrap();
        assert!(batch.resume.is_none(), "one batch holds it all");
        let mut w = to.write(now_ms).unwrap();
        w.apply_batch(&batch.changes).unwrap();
        w.mark_synced(&batch.upto);
        w.commit().unwrap();
    };
    write(&a, "a", 1);
    write(&b, "b", 2);
    write(&c, "c", 3);
    let first = a.read().unwrap().version_vector().unwrap();
    let old = a.read().unwrap();
    pull(&b, &a, 4);
    let second = a.read().unwrap().version_vector().unwrap();
    assert_eq!(
        second.get(PeerId(2)),
        b.read().unwrap().version_vector().unwrap().get(PeerId(2))
    );
    assert_ne!(second.get(PeerId(2)), Hlc::ZERO);
    assert_eq!(
        a.read().unwrap().version_vector().unwrap(),
        second,
        "read again (cached)"
    );
    assert_eq!(old.version_vector().unwrap(), first, "an older snapshot");
    pull(&c, &a, 5);
    let third = a.read().unwrap().version_vector().unwrap();
    assert_ne!(third.get(PeerId(3)), Hlc::ZERO);
    assert_eq!(third.get(PeerId(2)), second.get(PeerId(2)));
    // The log heads: a fresh peer gets every origin's document from `a`.
    pull(&a, &d, 6);
    for id in ["a", "b", "c"] {
        assert!(
            d.read().unwrap().get("docs", &Value::from(id)).unwrap().is_some(),
            "{id}"
        );
    }
    assert!(d.read().unwrap().version_vector().unwrap().dominates(&third));
}

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

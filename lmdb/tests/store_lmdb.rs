//! The document store on LMDB: the engine's shared store suite (the contract
//! the in-memory backend is held to) must pass unchanged on the durable
//! backend, and what only a durable store has to get right is checked on top:
//! the hybrid logical clock and the peer identity survive a restart. If the
//! clock restarted from the wall clock alone, a node whose clock stepped
//! backwards would stamp new writes below old ones and lose them to every
//! last-writer-wins merge; if the peer id changed, one replica would pose as
//! two and its version vectors would double-count it.

use rhizome_engine::hlc::PeerId;
use rhizome_engine::store::{OnConflict, Store, StoreConfig};
use rhizome_engine::testing::store_suite;
use rhizome_engine::value::Value;
use rhizome_lmdb::{LmdbConfig, LmdbKv};
use std::path::Path;

/// Small, so the suite's many environments reserve little address space.
fn config() -> LmdbConfig {
    LmdbConfig {
        map_size_bytes: 64 << 20,
        max_readers: 16,
    }
}

fn open_store(dir: &Path, fresh_peer: u64) -> Store<LmdbKv> {
    let kv = LmdbKv::open(dir, &config()).expect("open lmdb");
    Store::open(kv, StoreConfig::default(), PeerId(fresh_peer), fresh_peer).expect("open store")
}

#[test]
fn store_suite_on_lmdb() {
    // The suite drops stores as it goes; the directories must outlive them.
    let mut dirs = Vec::new();
    store_suite(&mut || {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = LmdbKv::open(dir.path(), &config()).expect("open lmdb");
        dirs.push(dir);
        kv
    });
    assert!(dirs.len() > 1, "the suite asked for fresh backends");
}

#[test]
fn clock_and_peer_id_survive_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first_id = Value::from("before-restart");
    let second_id = Value::from("after-restart");

    let (peer, high_water) = {
        let store = open_store(dir.path(), 7);
        assert_eq!(store.peer(), PeerId(7), "a new store takes the fresh peer id");
        let mut w = store.write(5_000_000).expect("write");
        let doc = Value::parse(r#"{"_id":"before-restart","n":1}"#).expect("json");
        w.insert("c", &doc, OnConflict::Fail).expect("insert");
        w.commit().expect("commit");
        let high_water = store.clock_high_water();
        assert!(
            high_water.wall_ms() >= 5_000_000,
            "the write was stamped at its wall clock"
        );
        (store.peer(), high_water)
    };

    // Another fresh id is offered, as a caller that generates one per start would.
    let store = open_store(dir.path(), 8);
    assert_eq!(store.peer(), peer, "an existing store keeps its persisted peer id");
    assert!(
        store.clock_high_water() >= high_water,
        "the clock resumes from its persisted high-water mark, not from zero"
    );

    // The wall clock is now far behind the first write, as after a clock reset.
    let mut w = store.write(1_000).expect("write");
    let doc = Value::parse(r#"{"_id":"after-restart","n":2}"#).expect("json");
    w.insert("c", &doc, OnConflict::Fail).expect("insert");
    w.commit().expect("commit");

    let r = store.read().expect("read");
    let before = r
        .get_doc("c", &first_id)
        .expect("get")
        .expect("first document survives");
    let after = r.get_doc("c", &second_id).expect("get").expect("second document");
    let first_newest = before.vv.iter().map(|(_, hlc)| hlc).max().expect("stamped");
    assert!(first_newest <= high_water);
    assert!(!after.vv.is_empty(), "the second write is stamped");
    for (p, hlc) in after.vv.iter() {
        assert_eq!(p, peer, "written under the persisted peer id");
        assert!(
            hlc > high_water && hlc > first_newest,
            "the write after restart ({hlc:?}) must order after the one before it ({high_water:?})"
        );
    }
    assert!(store.clock_high_water() > high_water);
    assert_eq!(r.version_vector().expect("vv").get(peer), store.clock_high_water());
}

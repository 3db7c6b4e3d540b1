//! The document store's whole contract on LMDB (the same suite the in-memory
//! backend passes), plus what only a durable store has: the clock and the
//! peer identity survive a restart.

use rhizome_engine::hlc::PeerId;
use rhizome_engine::store::{OnConflict, Store, StoreConfig};
use rhizome_engine::testing::store_suite;
use rhizome_engine::value::Value;
use rhizome_lmdb::{LmdbConfig, LmdbKv};

fn small() -> LmdbConfig {
    LmdbConfig {
        map_size_bytes: 64 << 20,
        max_readers: 16,
    }
}

#[test]
fn store_contract_on_lmdb() {
    let mut dirs = Vec::new();
    store_suite(&mut || {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = LmdbKv::open(dir.path(), &small()).expect("open");
        dirs.push(dir);
        kv
    });
}

#[test]
fn clock_and_identity_survive_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = |peer: u64| {
        let kv = LmdbKv::open(dir.path(), &small()).expect("open");
        Store::open(kv, StoreConfig::default(), PeerId(peer), peer).expect("store")
    };
    let (peer, high_water) = {
        let s = open(7);
        let mut w = s.write(5_000_000).expect("write");
        w.insert("c", &Value::parse(r#"{"_id":1}"#).expect("json"), OnConflict::Fail)
            .expect("insert");
        w.commit().expect("commit");
        (s.peer(), s.clock_high_water())
    };
    // Reopened with another fresh id and a wall clock far in the past.
    let s = open(8);
    assert_eq!(s.peer(), peer, "the peer id is persisted");
    let mut w = s.write(1_000).expect("write");
    w.insert("c", &Value::parse(r#"{"_id":2}"#).expect("json"), OnConflict::Fail)
        .expect("insert");
    w.commit().expect("commit");
    let doc = s
        .read()
        .expect("read")
        .get_doc("c", &Value::Int(2))
        .expect("get")
        .expect("doc");
    for (_, hlc) in doc.vv.iter() {
        assert!(hlc > high_water, "a write after restart orders after every earlier one");
    }
}

//! Behaviour of the LMDB backend through the engine's key-value traits: the
//! shared conformance suite plus what only a durable, file-backed store has
//! (reopening, one environment per directory, a bounded map, LMDB's key
//! limit, many environments in one process).

use rhizome_engine::kv::{Kv, KvError, KvRead, KvWrite, Table};
use rhizome_engine::testing::kv_conformance;
use rhizome_lmdb::{AlreadyOpen, LmdbConfig, LmdbKv};

/// Small enough that a test process can hold hundreds of environments.
fn small() -> LmdbConfig {
    LmdbConfig {
        map_size_bytes: 4 << 20,
        max_readers: 16,
    }
}

#[test]
fn conformance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kv = LmdbKv::open(dir.path(), &LmdbConfig::default()).expect("open");
    kv_conformance(&kv);
}

#[test]
fn default_config() {
    let config = LmdbConfig::default();
    assert_eq!(config.max_readers, 126);
    if usize::BITS == 64 {
        assert_eq!(config.map_size_bytes, 16 << 30);
    }
}

#[test]
fn data_survives_close_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A directory that does not exist yet: `open` creates it.
    let path = dir.path().join("nested").join("store");
    {
        let kv = LmdbKv::open(&path, &small()).expect("open");
        let mut w = kv.write().expect("write");
        w.put(Table::Meta, b"version", b"1").expect("put");
        w.put(Table::Log, b"k1", b"v1").expect("put");
        w.put(Table::Log, b"k2", b"v2").expect("put");
        w.commit().expect("commit");
        // Never committed: must not reappear.
        let mut w = kv.write().expect("write");
        w.put(Table::Log, b"k3", b"v3").expect("put");
        drop(w);
    }
    let kv = LmdbKv::open(&path, &small()).expect("reopen");
    let r = kv.read().expect("read");
    assert_eq!(r.get(Table::Meta, b"version").expect("get"), Some(&b"1"[..]));
    let mut keys = Vec::new();
    r.scan(Table::Log, b"", None, false, &mut |k, _| {
        keys.push(k.to_vec());
        true
    })
    .expect("scan");
    assert_eq!(keys, vec![b"k1".to_vec(), b"k2".to_vec()]);
}

fn already_open(err: KvError) -> AlreadyOpen {
    match err {
        KvError::Backend(e) => match e.downcast::<AlreadyOpen>() {
            Ok(e) => *e,
            Err(e) => panic!("expected AlreadyOpen, got {e}"),
        },
        other => panic!("expected AlreadyOpen, got {other}"),
    }
}

#[test]
fn same_directory_twice_is_refused_until_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = LmdbKv::open(dir.path(), &small()).expect("open");
    let err = LmdbKv::open(dir.path(), &small()).expect_err("second open of the same directory");
    let err = already_open(err);
    assert_eq!(err.path, dir.path().canonicalize().expect("canonicalize"));

    // Another spelling of the same directory is the same environment.
    let aliased = dir.path().join("sub").join("..");
    std::fs::create_dir_all(dir.path().join("sub")).expect("mkdir");
    already_open(LmdbKv::open(&aliased, &small()).expect_err("aliased open"));

    drop(first);
    let again = LmdbKv::open(dir.path(), &small()).expect("open after close");
    drop(again);
}

#[test]
fn full_map_fails_the_write_and_keeps_committed_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kv = LmdbKv::open(
        dir.path(),
        &LmdbConfig {
            map_size_bytes: 1 << 20,
            max_readers: 16,
        },
    )
    .expect("open");
    let mut w = kv.write().expect("write");
    w.put(Table::Docs, b"kept", b"committed before the map filled")
        .expect("put");
    w.commit().expect("commit");

    // About 2 MiB in one transaction does not fit in a 1 MiB map.
    let value = vec![7u8; 64 << 10];
    let mut w = kv.write().expect("write");
    let mut outcome = Ok(());
    for i in 0u32..32 {
        outcome = w.put(Table::Docs, &i.to_be_bytes(), &value);
        if outcome.is_err() {
            break;
        }
    }
    let outcome = match outcome {
        Ok(()) => w.commit(),
        Err(e) => {
            drop(w);
            Err(e)
        }
    };
    assert!(matches!(outcome, Err(KvError::Full)), "expected Full, got {outcome:?}");

    let r = kv.read().expect("read");
    assert_eq!(
        r.get(Table::Docs, b"kept").expect("get"),
        Some(&b"committed before the map filled"[..])
    );
    assert_eq!(r.get(Table::Docs, &0u32.to_be_bytes()).expect("get"), None);
    drop(r);

    // The environment itself is still usable for writes that fit.
    let mut w = kv.write().expect("write");
    w.put(Table::Docs, b"small", b"fits").expect("put");
    w.commit().expect("commit");
    assert_eq!(
        kv.read().expect("read").get(Table::Docs, b"small").expect("get"),
        Some(&b"fits"[..])
    );
}

#[test]
fn overlong_and_empty_keys_are_bad_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kv = LmdbKv::open(dir.path(), &small()).expect("open");
    let mut w = kv.write().expect("write");
    let longest = vec![1u8; 511];
    w.put(Table::Ids, &longest, b"ok").expect("511-byte key fits");
    let too_long = vec![1u8; 512];
    match w.put(Table::Ids, &too_long, b"no") {
        Err(KvError::BadKey {
            table: Table::Ids,
            len_bytes: 512,
        }) => {}
        other => panic!("expected BadKey, got {other:?}"),
    }
    match w.put(Table::Ids, b"", b"no") {
        Err(KvError::BadKey {
            table: Table::Ids,
            len_bytes: 0,
        }) => {}
        other => panic!("expected BadKey, got {other:?}"),
    }
    // Keys that cannot be stored are simply absent; the transaction is intact.
    assert_eq!(w.get(Table::Ids, &too_long).expect("get"), None);
    assert_eq!(w.get(Table::Ids, b"").expect("get"), None);
    assert!(!w.delete(Table::Ids, &too_long).expect("delete"));
    w.commit().expect("commit after rejected keys");
    assert_eq!(
        kv.read().expect("read").get(Table::Ids, &longest).expect("get"),
        Some(&b"ok"[..])
    );
}

#[test]
fn two_hundred_environments_with_open_snapshots() {
    const STORES: usize = 200;
    let dirs: Vec<_> = (0..STORES).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let stores: Vec<LmdbKv> = dirs
        .iter()
        .map(|d| LmdbKv::open(d.path(), &small()).expect("open"))
        .collect();
    for (i, kv) in stores.iter().enumerate() {
        let mut w = kv.write().expect("write");
        w.put(Table::Meta, b"id", &(i as u32).to_be_bytes()).expect("put");
        w.commit().expect("commit");
    }
    // Every snapshot open at once, all on this thread.
    let snapshots: Vec<_> = stores.iter().map(|kv| kv.read().expect("read")).collect();
    for (i, r) in snapshots.iter().enumerate() {
        assert_eq!(
            r.get(Table::Meta, b"id").expect("get"),
            Some(&(i as u32).to_be_bytes()[..])
        );
    }
    // Several snapshots of one store on one thread, alongside a writer.
    let extra = stores[0].read().expect("second snapshot");
    let mut w = stores[0].write().expect("write");
    w.put(Table::Meta, b"id", b"changed").expect("put");
    w.commit().expect("commit");
    assert_eq!(
        extra.get(Table::Meta, b"id").expect("get"),
        Some(&0u32.to_be_bytes()[..])
    );
}

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
    assert_eq!(all.iter().map(|(k, _)| k[0]).collect::<Vec<_>>(), (0..9).collect::<Vec<_>>());
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
    let keys: Vec<u8> = collect(&w, Table::Docs, &[], Some(&[4]), false).iter().map(|(k, _)| k[0]).collect();
    assert_eq!(keys, vec![0, 2, 3]);
    let keys: Vec<u8> = collect(&w, Table::Docs, &[], Some(&[4]), true).iter().map(|(k, _)| k[0]).collect();
    assert_eq!(keys, vec![3, 2, 0]);
    w.commit().unwrap();
    assert_eq!(r.get(Table::Docs, &[0]).unwrap(), Some(&[0u8, 0][..]));
    assert!(r.get(Table::Docs, &[1]).unwrap().is_some());
    drop(r);
    let r = kv.read().unwrap();
    assert_eq!(r.get(Table::Docs, &[0]).unwrap(), Some(&b"new"[..]));
    assert_eq!(r.get(Table::Docs, &[1]).unwrap(), None);
}

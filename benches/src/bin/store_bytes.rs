//! Where the bytes of the Insert workload go: inserts the suite's data set
//! into a durable store, then prints per LMDB database the entries, key and
//! value bytes, B-tree pages and page fill (`store_bytes [docs] [txn_docs]`).

use rhizome_benches::dataset;
use rhizome_engine::hlc::PeerId;
use rhizome_engine::kv::Table;
use rhizome_engine::store::{OnConflict, Store, StoreConfig};
use rhizome_engine::value::Value;
use rhizome_lmdb::{LmdbConfig, LmdbKv};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("dump") {
        let v = Value::from_json(&dataset(1)[0]).expect("valid");
        let Value::Object(f) = &v else { return };
        let id = rhizome_engine::codec::encode_id(&f["_id"]);
        let mut out = Vec::new();
        rhizome_engine::codec::encode_fresh(
            &id,
            f,
            rhizome_engine::hlc::Stamp {
                peer: PeerId(0x9f3a_6c2e_51d4_b807),
                hlc: rhizome_engine::hlc::Hlc(1_780_000_000_000 << 16),
            },
            &mut out,
        );
        println!(
            "{} json {}\n{} bytes: {:?}",
            dataset(1)[0],
            dataset(1)[0].to_string().len(),
            out.len(),
            String::from_utf8_lossy(&out)
        );
        return;
    }
    let n: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let txn: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let docs: Vec<Value> = dataset(n).iter().map(|d| Value::from_json(d).expect("valid")).collect();
    let start = std::time::Instant::now();
    {
        let kv = LmdbKv::open(dir.path(), &LmdbConfig::default()).expect("open lmdb");
        let store = Store::open(kv, StoreConfig::default(), PeerId(7), 7).expect("open store");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        for chunk in docs.chunks(txn) {
            let mut w = store.write(now).expect("write");
            for d in chunk {
                w.insert("bench", d, OnConflict::Fail).expect("insert");
            }
            w.commit().expect("commit");
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let file = std::fs::metadata(dir.path().join("data.mdb")).map_or(0, |m| m.len());
    println!(
        "{n} docs, {:.0} docs/s, data.mdb {file} bytes = {:.1} B/doc",
        n as f64 / secs,
        file as f64 / n as f64
    );
    // SAFETY: the store above is dropped; this process opens the env once more.
    let env = unsafe {
        heed::EnvOpenOptions::new()
            .map_size(16 << 30)
            .max_dbs(8)
            .open(dir.path())
    }
    .expect("env");
    let w = env.write_txn().expect("wtxn");
    let created = env
        .create_databases_and_commit(w, |opener, w| {
            let dbs =
                Table::ALL.map(|t| opener.create_database::<heed::types::Bytes, heed::types::Bytes>(w, Some(t.name())));
            let [a, b, c, d, e] = dbs;
            Ok::<_, heed::Error>(heed::CommitOrAbort::<_, ()>::Commit([a?, b?, c?, d?, e?]))
        })
        .expect("dbs");
    let heed::CommitOrAbort::Commit(dbs) = created else {
        unreachable!("never aborted")
    };
    let r = env.read_txn().expect("rtxn");
    println!(
        "{:<6} {:>8} {:>10} {:>11} {:>5} {:>7} {:>7} {:>8} {:>6} {:>8}",
        "table", "entries", "key B", "value B", "depth", "branch", "leaf", "overflow", "fill", "B/doc"
    );
    let mut total_pages = 0;
    for (t, db) in Table::ALL.iter().zip(&dbs) {
        let s = db.stat(&r).expect("stat");
        let (mut kb, mut vb) = (0usize, 0usize);
        for e in db.iter(&r).expect("iter") {
            let (k, v) = e.expect("entry");
            kb += k.len();
            vb += v.len();
        }
        let pages = s.branch_pages + s.leaf_pages + s.overflow_pages;
        total_pages += pages;
        // Node overhead in a leaf: 8-byte header + 2-byte pointer per entry.
        let used = kb + vb + 10 * s.entries;
        let fill = used as f64 / ((s.leaf_pages + s.overflow_pages).max(1) * s.page_size as usize) as f64;
        println!(
            "{:<6} {:>8} {:>10} {:>11} {:>5} {:>7} {:>7} {:>8} {:>5.0}% {:>8.1}",
            t.name(),
            s.entries,
            kb,
            vb,
            s.depth,
            s.branch_pages,
            s.leaf_pages,
            s.overflow_pages,
            fill * 100.0,
            pages as f64 * s.page_size as f64 / n as f64
        );
    }
    let info = env.info();
    println!(
        "pages in tables {total_pages}, last page {} ({} B), file {file}",
        info.last_page_number,
        (info.last_page_number + 1) * 4096
    );
}

#[allow(dead_code)]
fn dump_one() {
    let d = &dataset(1)[0];
    println!("{d}");
}

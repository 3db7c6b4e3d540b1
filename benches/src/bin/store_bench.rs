//! Foundation benchmark: durable inserts and remote-change merging of the
//! Rhizome store on LMDB, against raw LMDB puts of JSON (the storage floor)
//! and SQLite (WAL, synchronous=FULL, JSON text), in one run on one data set.
//!
//! `cargo run --release -p rhizome-benches --bin store_bench [-- --docs N]`

use rhizome_benches::{dataset, print_table, timed, Rng};
use rhizome_engine::codec::Change;
use rhizome_engine::doc::{Op, RegVal};
use rhizome_engine::hlc::{Hlc, PeerId, Stamp};
use rhizome_engine::store::{OnConflict, Store, StoreConfig};
use rhizome_engine::value::Value;
use rhizome_lmdb::{LmdbConfig, LmdbKv};
use std::time::Duration;

const TXN_DOCS: usize = 1_000;
const MERGE_DOCS: usize = 10_000;
const MERGE_CHANGES: usize = 50_000;
/// Changes per durable commit: the smallest batch, and the merger's bound
/// (it takes whatever has arrived, up to this many, into one transaction).
const MERGE_BATCHES: [usize; 2] = [1_000, 65_536];

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn dir_size_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |it| {
        it.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum()
    })
}

fn rhizome_insert(docs: &[Value], dir: &std::path::Path) -> Duration {
    let kv = LmdbKv::open(dir, &LmdbConfig::default()).expect("open lmdb");
    let store = Store::open(kv, StoreConfig::default(), PeerId(1), 1).expect("open store");
    let ((), t) = timed(|| {
        for chunk in docs.chunks(TXN_DOCS) {
            let mut w = store.write(now_ms()).expect("write txn");
            for d in chunk {
                w.insert("docs", d, OnConflict::Fail).expect("insert");
            }
            w.commit().expect("commit");
        }
    });
    t
}

fn heed_insert(docs: &[serde_json::Value], dir: &std::path::Path) -> Duration {
    use heed::types::Bytes;
    // SAFETY: the directory is fresh and opened once in this process.
    let env = unsafe {
        heed::EnvOpenOptions::new()
            .read_txn_without_tls()
            .map_size(16 << 30)
            .max_dbs(1)
            .open(dir)
    }
    .expect("open env");
    let w = env.write_txn().expect("txn");
    let created = env
        .create_databases_and_commit(w, |opener, w| {
            let db = opener.create_database::<Bytes, Bytes>(w, Some("docs"))?;
            Ok::<_, heed::Error>(heed::CommitOrAbort::<_, ()>::Commit(db))
        })
        .expect("db");
    let heed::CommitOrAbort::Commit(db) = created else {
        unreachable!("never aborted")
    };
    let ((), t) = timed(|| {
        for chunk in docs.chunks(TXN_DOCS) {
            let mut w = env.write_txn().expect("txn");
            for d in chunk {
                let id = d["_id"].as_str().unwrap_or_default();
                let body = serde_json::to_vec(d).expect("json");
                db.put(&mut w, id.as_bytes(), &body).expect("put");
            }
            w.commit().expect("commit");
        }
    });
    t
}

fn sqlite_open(dir: &std::path::Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(dir.join("bench.sqlite")).expect("open sqlite");
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
         CREATE TABLE docs (id TEXT PRIMARY KEY, body TEXT NOT NULL);",
    )
    .expect("schema");
    conn
}

fn sqlite_insert(docs: &[serde_json::Value], conn: &mut rusqlite::Connection) -> Duration {
    let ((), t) = timed(|| {
        for chunk in docs.chunks(TXN_DOCS) {
            let tx = conn.transaction().expect("txn");
            {
                let mut st = tx
                    .prepare_cached("INSERT INTO docs (id, body) VALUES (?1, ?2)")
                    .expect("prepare");
                for d in chunk {
                    let id = d["_id"].as_str().unwrap_or_default();
                    st.execute((id, serde_json::to_string(d).expect("json")))
                        .expect("insert");
                }
            }
            tx.commit().expect("commit");
        }
    });
    t
}

/// 50,000 single-field edits on 10,000 documents, made on a remote replica,
/// each shipped as its own change (no coalescing), in edit order.
fn remote_edits(docs: &[serde_json::Value]) -> Vec<Change> {
    let mut rng = Rng::new(7);
    let remote = PeerId(2);
    let base_ms = now_ms();
    (0..MERGE_CHANGES)
        .map(|i| {
            let d = &docs[rng.below(MERGE_DOCS as u64) as usize];
            let (field, value) = match rng.below(3) {
                0 => ("status", Value::from(rhizome_benches::STATUSES[rng.below(4) as usize])),
                1 => ("priority", Value::Int(1 + rng.below(5) as i64)),
                _ => ("done", Value::Bool(rng.below(2) == 1)),
            };
            let stamp = Stamp {
                hlc: Hlc::new(base_ms, 0).max(Hlc((base_ms << 16) + i as u64 + 1)),
                peer: remote,
            };
            Change {
                collection: "docs".into(),
                id: Value::String(d["_id"].as_str().unwrap_or_default().into()),
                ops: vec![Op::Set {
                    path: vec![field.into()],
                    stamp,
                    val: RegVal::Value(value),
                }],
            }
        })
        .collect()
}

fn rhizome_merge(docs: &[Value], changes: &[Change], batch: usize, dir: &std::path::Path) -> Duration {
    let kv = LmdbKv::open(dir, &LmdbConfig::default()).expect("open lmdb");
    let store = Store::open(kv, StoreConfig::default(), PeerId(1), 1).expect("open store");
    let mut w = store.write(now_ms()).expect("txn");
    for d in &docs[..MERGE_DOCS] {
        w.insert("docs", d, OnConflict::Fail).expect("insert");
    }
    w.commit().expect("commit");
    let ((), t) = timed(|| {
        for chunk in changes.chunks(batch) {
            let mut w = store.write(now_ms()).expect("txn");
            let outcome = w.apply_batch(chunk).expect("apply");
            assert!(outcome.refused.is_empty(), "{:?}", outcome.refused);
            w.commit().expect("commit");
        }
    });
    t
}

fn sqlite_merge(docs: &[serde_json::Value], changes: &[Change], batch: usize, dir: &std::path::Path) -> Duration {
    let mut conn = sqlite_open(dir);
    sqlite_insert(&docs[..MERGE_DOCS], &mut conn);
    let ((), t) = timed(|| {
        for chunk in changes.chunks(batch) {
            let tx = conn.transaction().expect("txn");
            {
                let mut st = tx
                    .prepare_cached("UPDATE docs SET body = json_set(body, ?1, json(?2)) WHERE id = ?3")
                    .expect("prepare");
                for c in chunk {
                    let Op::Set {
                        path,
                        val: RegVal::Value(v),
                        ..
                    } = &c.ops[0]
                    else {
                        continue;
                    };
                    let id = c.id.as_str().unwrap_or_default();
                    st.execute((format!("$.{}", path[0]), v.to_string(), id))
                        .expect("update");
                }
            }
            tx.commit().expect("commit");
        }
    });
    t
}

fn per_sec(n: usize, t: Duration) -> f64 {
    n as f64 / t.as_secs_f64()
}

fn main() {
    let n: usize = std::env::args()
        .skip_while(|a| a != "--docs")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let json_docs = dataset(n as u64);
    let docs: Vec<Value> = json_docs.iter().map(|d| Value::from_json(d).expect("valid")).collect();
    let avg_json = json_docs.iter().map(|d| d.to_string().len()).sum::<usize>() as f64 / n as f64;
    println!(
        "data: {n} documents, {avg_json:.0} bytes of JSON on average, transactions of {TXN_DOCS}, durable commits"
    );

    let root = tempfile::tempdir().expect("tempdir");
    let mk = |name: &str| {
        let d = root.path().join(name);
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    };

    // Insert: run each system twice, interleaved, and keep each one's best,
    // so a burst of noise hurts no system more than another.
    let mut best = [Duration::MAX; 3];
    let mut bytes = [0u64; 3];
    for round in 0..2 {
        let d = mk(&format!("rhizome-{round}"));
        best[0] = best[0].min(rhizome_insert(&docs, &d));
        bytes[0] = dir_size_bytes(&d);
        let d = mk(&format!("heed-{round}"));
        best[1] = best[1].min(heed_insert(&json_docs, &d));
        bytes[1] = dir_size_bytes(&d);
        let d = mk(&format!("sqlite-{round}"));
        let mut conn = sqlite_open(&d);
        best[2] = best[2].min(sqlite_insert(&json_docs, &mut conn));
        drop(conn);
        bytes[2] = dir_size_bytes(&d);
    }
    let names = [
        "rhizome (LMDB, CRDT metadata)",
        "raw heed (JSON values)",
        "SQLite (WAL, FULL, JSON text)",
    ];
    let rows: Vec<Vec<String>> = (0..3)
        .map(|i| {
            vec![
                names[i].to_string(),
                format!("{:.0}", per_sec(n, best[i])),
                format!("{:.0}", bytes[i] as f64 / n as f64),
                format!("{:.2}x", best[1].as_secs_f64() / best[i].as_secs_f64()),
                format!("{:.2}x", best[2].as_secs_f64() / best[i].as_secs_f64()),
            ]
        })
        .collect();
    print_table(
        &format!("insert {n} documents"),
        &["system", "docs/s", "disk bytes/doc", "speed vs heed", "speed vs SQLite"],
        &rows,
    );

    // Merge of remote single-field changes, at two batch sizes.
    let changes = remote_edits(&json_docs[..MERGE_DOCS.min(n)]);
    let mut rows = Vec::new();
    for batch in MERGE_BATCHES {
        let mut best = [Duration::MAX; 2];
        for round in 0..2 {
            best[0] = best[0].min(rhizome_merge(
                &docs,
                &changes,
                batch,
                &mk(&format!("merge-rhizome-{batch}-{round}")),
            ));
            best[1] = best[1].min(sqlite_merge(
                &json_docs,
                &changes,
                batch,
                &mk(&format!("merge-sqlite-{batch}-{round}")),
            ));
        }
        let commits = MERGE_CHANGES.div_ceil(batch);
        rows.push(vec![
            format!("rhizome apply_batch (CRDT merge), {commits} commits"),
            format!("{:.0}", per_sec(MERGE_CHANGES, best[0])),
            format!("{:.2}x", best[1].as_secs_f64() / best[0].as_secs_f64()),
            format!("{:.2}x", per_sec(MERGE_CHANGES, best[0]) / 250_000.0),
        ]);
        rows.push(vec![
            format!("SQLite json_set UPDATE, {commits} commits"),
            format!("{:.0}", per_sec(MERGE_CHANGES, best[1])),
            "1.00x".to_string(),
            format!("{:.2}x", per_sec(MERGE_CHANGES, best[1]) / 250_000.0),
        ]);
    }
    print_table(
        &format!("merge {MERGE_CHANGES} remote single-field changes over {MERGE_DOCS} documents, durable"),
        &["system", "changes/s", "speed vs SQLite", "vs 250k/s target"],
        &rows,
    );
}

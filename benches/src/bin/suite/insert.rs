//! Workloads 1 (durable inserts) and 2 (queries).
//!
//! Inserts: every system commits durably every `txn_docs` documents.
//! Rhizome, raw heed and SQLite commit their transactions (fsync); the CRDT
//! libraries, which have no storage of their own, append each
//! transaction's update (what an app would persist) to a log file and
//! fsync it. Bytes on disk are file sizes after the last commit.
//!
//! Queries run on the Rhizome store and the SQLite database the inserts
//! left, as `query_bench` measures them: point lookups by id and the
//! filtered, ordered, limited query without and with an index.

use crate::crdt::{Automerge, Crdt, Loro, Yrs};
use crate::rhizome::{self, COLLECTION};
use crate::{Sizes, Target};
use rhizome_benches::{dataset, print_table, timed, Rng};
use rhizome_engine::dql::{self, eval::Params, item::Item, Prepared};
use rhizome_engine::store::Store;
use rhizome_engine::value::Value;
use rhizome_lmdb::LmdbKv;
use serde_json::Value as Json;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// Peer ids of the two replicas of every workload (fixed, so runs repeat).
pub const PEER_A: u64 = 0x9f3a_6c2e_51d4_b807;
/// The second replica.
pub const PEER_B: u64 = 0x2b7e_1516_28ae_d2a6;

/// Milliseconds since the epoch: stamps on durable stores (the HLC takes
/// the wall clock).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What the inserts leave for the later workloads.
pub struct Built {
    /// The data set as JSON.
    pub json: Vec<Json>,
    /// The Rhizome store holding it (peer [`PEER_A`]).
    pub store: Store<LmdbKv>,
    /// The SQLite database holding it.
    pub sqlite: rusqlite::Connection,
    /// The CRDT replicas holding it (peer [`PEER_A`]).
    pub yrs: Yrs,
    /// See `yrs`.
    pub loro: Loro,
    /// See `yrs`.
    pub automerge: Automerge,
}

/// Bytes of the files in `dir` (not recursive: every system writes flat).
pub fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |it| {
        it.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum()
    })
}

fn fresh(root: &Path, name: &str) -> std::path::PathBuf {
    let d = root.join(name);
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

fn rhizome_insert(docs: &[Value], txn: usize, dir: &Path) -> (Store<LmdbKv>, Duration) {
    let store = rhizome::open_lmdb(dir, PEER_A);
    let ((), t) = timed(|| {
        for chunk in docs.chunks(txn) {
            rhizome::insert(&store, chunk, now_ms());
        }
    });
    (store, t)
}

/// An LMDB environment with one table `docs`, as raw as heed allows.
pub fn heed_open(
    dir: &Path,
) -> (
    heed::Env<heed::WithoutTls>,
    heed::Database<'_, heed::types::Bytes, heed::types::Bytes>,
) {
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
            let db = opener.create_database::<heed::types::Bytes, heed::types::Bytes>(w, Some("docs"))?;
            Ok::<_, heed::Error>(heed::CommitOrAbort::<_, ()>::Commit(db))
        })
        .expect("db");
    let heed::CommitOrAbort::Commit(db) = created else {
        unreachable!("never aborted")
    };
    (env, db)
}

/// Puts documents as JSON keyed by id, one transaction per `txn` documents.
pub fn heed_insert<'d>(docs: impl Iterator<Item = &'d Json>, txn: usize, dir: &Path) -> Duration {
    let (env, db) = heed_open(dir);
    let start = Instant::now();
    let mut w = env.write_txn().expect("txn");
    for (i, d) in docs.enumerate() {
        let id = d["_id"].as_str().unwrap_or_default();
        db.put(&mut w, id.as_bytes(), &serde_json::to_vec(d).expect("json"))
            .expect("put");
        if (i + 1) % txn == 0 {
            w.commit().expect("commit");
            w = env.write_txn().expect("txn");
        }
    }
    w.commit().expect("commit");
    start.elapsed()
}

/// A SQLite database as the issue sets it up: WAL, synchronous=FULL, JSON text.
pub fn sqlite_open(dir: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(dir.join("bench.sqlite")).expect("open sqlite");
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
         CREATE TABLE docs (id TEXT PRIMARY KEY, body TEXT NOT NULL);",
    )
    .expect("schema");
    conn
}

/// Inserts documents, one transaction per `txn` documents.
pub fn sqlite_insert<'d>(
    docs: impl Iterator<Item = &'d Json>,
    txn: usize,
    conn: &mut rusqlite::Connection,
) -> Duration {
    let start = Instant::now();
    let mut docs = docs.peekable();
    while docs.peek().is_some() {
        let tx = conn.transaction().expect("txn");
        {
            let mut st = tx
                .prepare_cached("INSERT INTO docs (id, body) VALUES (?1, ?2)")
                .expect("prepare");
            for d in docs.by_ref().take(txn) {
                let id = d["_id"].as_str().unwrap_or_default();
                st.execute((id, serde_json::to_string(d).expect("json")))
                    .expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    start.elapsed()
}

/// Builds a CRDT replica of `docs` durably: each transaction's update is
/// appended to a log file (length-prefixed) and fsynced.
pub fn crdt_insert<C: Crdt>(docs: &[Json], txn: usize, dir: &Path) -> (C, Duration) {
    let mut log = std::fs::File::create(dir.join("updates.log")).expect("log");
    let mut c = C::new(PEER_A);
    let ((), t) = timed(|| {
        for chunk in docs.chunks(txn) {
            c.insert(chunk);
            let update = c.increment();
            log.write_all(&(update.len() as u32).to_le_bytes()).expect("write");
            log.write_all(&update).expect("write");
            log.sync_data().expect("fsync");
        }
    });
    (c, t)
}

/// Workload 1; returns the stores and replicas for 2 and 4.
pub fn run(sizes: &Sizes, root: &Path, print: bool, targets: &mut Vec<Target>) -> Built {
    let n = sizes.docs;
    let json = dataset(n as u64);
    let docs: Vec<Value> = json.iter().map(|d| Value::from_json(d).expect("valid")).collect();
    let mean_json = json.iter().map(|d| d.to_string().len()).sum::<usize>() / n.max(1);
    // Rhizome, heed and SQLite take turns, best of `insert_runs`.
    let mut best = [Duration::MAX; 3];
    let mut bytes = [0u64; 3];
    let mut kept = None;
    for run in 0..sizes.insert_runs {
        let d = fresh(root, &format!("w1-rhizome-{run}"));
        let (store, t) = rhizome_insert(&docs, sizes.txn_docs, &d);
        best[0] = best[0].min(t);
        bytes[0] = dir_bytes(&d);
        let d = fresh(root, &format!("w1-heed-{run}"));
        best[1] = best[1].min(heed_insert(json.iter(), sizes.txn_docs, &d));
        bytes[1] = dir_bytes(&d);
        let d = fresh(root, &format!("w1-sqlite-{run}"));
        let mut conn = sqlite_open(&d);
        best[2] = best[2].min(sqlite_insert(json.iter(), sizes.txn_docs, &mut conn));
        bytes[2] = dir_bytes(&d);
        kept = Some((store, conn));
    }
    let (store, sqlite) = kept.expect("at least one run");
    let d = fresh(root, "w1-yrs");
    let (yrs, ty) = crdt_insert::<Yrs>(&json, sizes.txn_docs, &d);
    let by = dir_bytes(&d);
    let d = fresh(root, "w1-loro");
    let (loro, tl) = crdt_insert::<Loro>(&json, sizes.txn_docs, &d);
    let bl = dir_bytes(&d);
    let d = fresh(root, "w1-automerge");
    let am_docs = sizes.automerge_docs.min(n);
    let (automerge, ta) = crdt_insert::<Automerge>(&json[..am_docs], sizes.txn_docs, &d);
    let ba = dir_bytes(&d);

    let am_name = format!("automerge (log, fsync), {am_docs} docs");
    let figures = [
        ("Rhizome (LMDB, durable)", best[0], bytes[0], n),
        ("raw heed (JSON by id)", best[1], bytes[1], n),
        ("SQLite (WAL, FULL, JSON)", best[2], bytes[2], n),
        ("yrs (update log, fsync)", ty, by, n),
        ("loro (update log, fsync)", tl, bl, n),
        (am_name.as_str(), ta, ba, am_docs),
    ];
    let per_sec = |t: Duration, docs: usize| docs as f64 / t.as_secs_f64();
    let (ours_rate, ours_b) = (per_sec(best[0], n), bytes[0] as f64 / n as f64);
    let rows: Vec<Vec<String>> = figures
        .iter()
        .map(|(name, t, b, docs)| {
            let per_doc = *b as f64 / *docs as f64;
            vec![
                name.to_string(),
                format!("{:.0}", per_sec(*t, *docs)),
                format!("{per_doc:.0}"),
                format!("{:.2}", per_sec(*t, *docs) / ours_rate),
                format!("{:.2}", per_doc / ours_b),
            ]
        })
        .collect();
    if print {
        print_table(
            &format!(
                "1. Insert {n} documents ({mean_json} bytes of JSON on average), durable commit every {} (best of {} for the first three)",
                sizes.txn_docs, sizes.insert_runs
            ),
            &["system", "docs/s", "disk bytes/doc", "docs/s vs Rhizome", "bytes vs Rhizome"],
            &rows,
        );
        let (ours, sqlite_rate) = (per_sec(best[0], n), per_sec(best[2], n));
        targets.push(Target::new(
            "1. insert: docs/s >= SQLite's",
            ours >= sqlite_rate,
            format!("{ours:.0} vs {sqlite_rate:.0} docs/s ({:.2}x)", ours / sqlite_rate),
        ));
        let (ob, sb) = (bytes[0] as f64 / n as f64, bytes[2] as f64 / n as f64);
        targets.push(Target::new(
            "1. insert: bytes/doc <= SQLite's",
            ob <= sb,
            format!("{ob:.0} vs {sb:.0} bytes/doc ({:.2}x)", ob / sb),
        ));
    }
    Built {
        json,
        store,
        sqlite,
        yrs,
        loro,
        automerge,
    }
}

const QUERY: &str = "SELECT * FROM tasks WHERE status = 'open' AND priority >= 3 ORDER BY created_at DESC LIMIT 50";
const SQL: &str = "SELECT body FROM docs WHERE json_extract(body, '$.status') = 'open' \
     AND json_extract(body, '$.priority') >= 3 ORDER BY json_extract(body, '$.created_at') DESC LIMIT 50";

/// Median times of `reps` rounds of `run(0)` .. `run(k - 1)` (after one
/// warm-up round); they take turns within each round, so a slow spell of
/// a noisy machine falls on all of them alike.
fn medians(reps: usize, k: usize, run: &mut dyn FnMut(usize)) -> Vec<Duration> {
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(reps); k];
    for round in 0..=reps {
        for (i, t) in times.iter_mut().enumerate() {
            let s = Instant::now();
            run(i);
            if round > 0 {
                t.push(s.elapsed());
            }
        }
    }
    times
        .into_iter()
        .map(|mut t| {
            t.sort();
            t[t.len() / 2]
        })
        .collect()
}

fn sqlite_query(conn: &rusqlite::Connection) {
    let mut st = conn.prepare_cached(SQL).expect("prepare");
    let got: Vec<String> = st
        .query_map([], |r| r.get(0))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect();
    assert_eq!(got.len(), 50);
}

/// Workload 2 on the stores workload 1 left.
pub fn queries(sizes: &Sizes, b: &Built) {
    let n = b.json.len();
    let prepared = Prepared::new();
    let store = &b.store;
    let run = |text: &str, params: &Params| {
        let stmt = prepared.get(text).expect("parse");
        dql::execute(store, &stmt, params, now_ms()).expect("query").0.items
    };
    let json_of = |items: Vec<Item>| -> usize { items.iter().map(|i| i.to_json().expect("json").len()).sum() };
    let mut rows = Vec::new();
    let mut measure = |name: &str, reps: usize, ours: &mut dyn FnMut(bool), theirs: &mut dyn FnMut()| {
        let m = medians(reps, 3, &mut |i| match i {
            0 => theirs(),
            i => ours(i == 2),
        });
        for (label, t) in [("rows", m[1]), ("rows as JSON", m[2])] {
            rows.push(vec![
                format!("{name}: {label}"),
                format!("{t:.2?}"),
                format!("{:.2?}", m[0]),
                format!("{:.2}", t.as_secs_f64() / m[0].as_secs_f64()),
            ]);
        }
    };
    let mut rng = Rng::new(3);
    let picks: Vec<String> = (0..1_000)
        .map(|_| {
            b.json[rng.below(n as u64) as usize]["_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let mut st = b
        .sqlite
        .prepare_cached("SELECT body FROM docs WHERE id = ?1")
        .expect("prepare");
    measure(
        "point lookup by id (x1000)",
        sizes.query_reps,
        &mut |json| {
            for id in &picks {
                let mut p = Params::new();
                p.insert("id", Value::String(id.clone()));
                let items = run("SELECT * FROM tasks WHERE _id = :id", &p);
                assert_eq!(items.len(), 1);
                if json {
                    assert!(json_of(items) > 0);
                }
            }
        },
        &mut || {
            for id in &picks {
                let body: String = st.query_row([id], |r| r.get(0)).expect("row");
                assert!(!body.is_empty());
            }
        },
    );
    drop(st);
    let expected = run(QUERY, &Params::new());
    assert_eq!(expected.len(), 50);
    let mut ours = |json: bool| {
        let items = run(QUERY, &Params::new());
        assert_eq!(items.len(), 50);
        if json {
            assert!(json_of(items) > 0);
        }
    };
    measure(
        "status/priority/order/limit, no index",
        sizes.query_reps,
        &mut ours,
        &mut || sqlite_query(&b.sqlite),
    );
    let mut w = store.write(now_ms()).expect("txn");
    w.create_index(
        "tasks_status_created",
        COLLECTION,
        &[vec!["status".into()], vec!["created_at".into()]],
        false,
    )
    .expect("index");
    w.commit().expect("commit");
    b.sqlite
        .execute_batch(
            "CREATE INDEX docs_status_created ON docs (json_extract(body, '$.status'), json_extract(body, '$.created_at'))",
        )
        .expect("sqlite index");
    assert_eq!(
        run(QUERY, &Params::new()),
        expected,
        "the index plan gives the same result"
    );
    measure(
        "status/priority/order/limit, index (status, created_at)",
        sizes.query_reps * 4,
        &mut ours,
        &mut || sqlite_query(&b.sqlite),
    );
    print_table(
        &format!("2. Queries on {n} documents (median time; last column Rhizome time / SQLite time, lower is better)"),
        &["query", "Rhizome", "SQLite", "Rhizome/SQLite"],
        &rows,
    );
}

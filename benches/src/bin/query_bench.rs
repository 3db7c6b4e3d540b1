//! DQL benchmark: point lookups and a filtered, ordered, limited query
//! through DQL on the LMDB store, against SQLite with `json_extract` (with
//! and without an expression index), in one run on the same 100,000
//! documents; and the latency from a local commit to a live query's diff.
//!
//! `cargo run --release -p rhizome-benches --bin query_bench`

use rhizome_benches::{dataset, print_table, Rng};
use rhizome_engine::dql::{self, eval::Params, item::Item, observe::Observers, Prepared};
use rhizome_engine::hlc::PeerId;
use rhizome_engine::store::{OnConflict, Store, StoreConfig};
use rhizome_engine::value::Value;
use rhizome_lmdb::{LmdbConfig, LmdbKv};
use std::time::{Duration, Instant};

const QUERY: &str = "SELECT * FROM docs WHERE status = 'open' AND priority >= 3 ORDER BY created_at DESC LIMIT 50";
const SQL: &str = "SELECT body FROM docs WHERE json_extract(body, '$.status') = 'open' \
     AND json_extract(body, '$.priority') >= 3 ORDER BY json_extract(body, '$.created_at') DESC LIMIT 50";

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Median times of `reps` rounds of `run(0)` .. `run(k - 1)` (after one
/// warm-up round). They take turns within each round, so a slow spell of a
/// noisy machine falls on all of them alike.
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

/// Runs `f` `runs` times; a function of its own so that a profiler can
/// count only these runs (`valgrind --tool=callgrind --collect-atstart=no
/// --toggle-collect='*profiled_runs*'`).
#[inline(never)]
fn profiled_runs(runs: usize, f: &mut dyn FnMut()) {
    for _ in 0..runs {
        f();
    }
}

/// `QUERY_BENCH_PROFILE=<runs>` with `QUERY_BENCH_QUERY=<name>`: which
/// measurement to run alone that many times, for a profiler.
fn profile_request(query: &str) -> Option<(usize, bool)> {
    let runs = std::env::var("QUERY_BENCH_PROFILE").ok()?.parse::<usize>().ok()?;
    let want = std::env::var("QUERY_BENCH_QUERY").unwrap_or_else(|_| "index-json".into());
    let json = want.ends_with("-json");
    (want.trim_end_matches("-json") == query).then_some((runs, json))
}

fn main() {
    // `QUERY_BENCH_DOCS`: fewer documents, for a profiler's slow runs.
    let n = std::env::var("QUERY_BENCH_DOCS")
        .ok()
        .and_then(|d| d.parse::<u64>().ok())
        .unwrap_or(100_000);
    let json = dataset(n);
    let docs: Vec<Value> = json.iter().map(|d| Value::from_json(d).expect("valid")).collect();
    let ids: Vec<String> = json
        .iter()
        .map(|d| d["_id"].as_str().unwrap_or_default().to_string())
        .collect();
    let root = tempfile::tempdir().expect("tempdir");

    let kv = LmdbKv::open(&root.path().join("rhizome"), &LmdbConfig::default()).expect("lmdb");
    let store = Store::open(kv, StoreConfig::default(), PeerId(1), 1).expect("store");
    for chunk in docs.chunks(10_000) {
        let mut w = store.write(now_ms()).expect("txn");
        for d in chunk {
            w.insert("docs", d, OnConflict::Fail).expect("insert");
        }
        w.commit().expect("commit");
    }
    let mut conn = rusqlite::Connection::open(root.path().join("q.sqlite")).expect("sqlite");
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; CREATE TABLE docs (id TEXT PRIMARY KEY, body TEXT NOT NULL);")
        .expect("schema");
    let tx = conn.transaction().expect("txn");
    for d in &json {
        tx.execute(
            "INSERT INTO docs VALUES (?1, ?2)",
            (d["_id"].as_str().unwrap_or_default(), d.to_string()),
        )
        .expect("insert");
    }
    tx.commit().expect("commit");

    let prepared = Prepared::new();
    let run = |text: &str, params: &Params| {
        let stmt = prepared.get(text).expect("parse");
        dql::execute(&store, &stmt, params, now_ms()).expect("query").0.items
    };
    // Rhizome returns rows as result items that decode on demand; SQLite's
    // rows are the JSON text of the body column. Each query is measured
    // twice on our side: rows as returned, and every row read as JSON text
    // (what SQLite hands back), against the same SQLite run.
    let json_of = |items: Vec<Item>| -> usize { items.iter().map(|i| i.to_json().expect("json").len()).sum() };
    let mut rows = Vec::new();
    let mut rng = Rng::new(3);
    let mut measure = |name: &str, reps: usize, ours: &mut dyn FnMut(bool), theirs: &mut dyn FnMut()| {
        let m = medians(reps, 3, &mut |i| match i {
            0 => theirs(),
            i => ours(i == 2),
        });
        rows.push(row(&format!("{name}: rows"), m[1], m[0]));
        rows.push(row(&format!("{name}: rows as JSON"), m[2], m[0]));
    };

    // Point lookups by _id (1,000 random ids per measurement).
    let picks: Vec<String> = (0..1_000).map(|_| ids[rng.below(n) as usize].clone()).collect();
    let point = |json: bool| {
        for id in &picks {
            let mut p = Params::new();
            p.insert("id", Value::String(id.clone()));
            let items = run("SELECT * FROM docs WHERE _id = :id", &p);
            assert_eq!(items.len(), 1);
            if json {
                assert!(json_of(items) > 0);
            }
        }
    };
    if let Some((runs, json)) = profile_request("point") {
        profiled_runs(runs, &mut || point(json));
        return;
    }
    let mut st = conn
        .prepare_cached("SELECT body FROM docs WHERE id = ?1")
        .expect("prepare");
    measure(
        "point lookup by _id (x1000)",
        // Each round is short (about 10 ms a side), so a slow spell of a
        // shared machine can take a whole round: more rounds steady the median.
        15,
        &mut |json| point(json),
        &mut || {
            for id in &picks {
                let body: String = st.query_row([id], |r| r.get(0)).expect("row");
                assert!(!body.is_empty());
            }
        },
    );
    drop(st);

    // The filtered, ordered, limited query: no index on either side.
    let expected = run(QUERY, &Params::new());
    assert_eq!(expected.len(), 50);
    let sqlite_query = |conn: &rusqlite::Connection| {
        let mut st = conn.prepare_cached(SQL).expect("prepare");
        let got: Vec<String> = st
            .query_map([], |r| r.get(0))
            .expect("query")
            .map(|r| r.expect("row"))
            .collect();
        assert_eq!(got.len(), 50);
    };
    let mut ours = |json: bool| {
        let items = run(QUERY, &Params::new());
        assert_eq!(items.len(), 50);
        if json {
            assert!(json_of(items) > 0);
        }
    };
    if let Some((runs, json)) = profile_request("scan") {
        profiled_runs(runs, &mut || ours(json));
        return;
    }
    measure("status/priority/order/limit, no index", 7, &mut ours, &mut || {
        sqlite_query(&conn)
    });

    // With the same index on each side, the one that serves SQLite best
    // (10-30% faster for it than (status, created_at)): equality, then the
    // order, then the range, which SQLite checks from the index entry.
    let mut w = store.write(now_ms()).expect("txn");
    w.create_index(
        "docs_status_created_priority",
        "docs",
        &[
            vec!["status".into()],
            vec!["created_at".into()],
            vec!["priority".into()],
        ],
        false,
    )
    .expect("index");
    w.commit().expect("commit");
    conn.execute_batch(
        "CREATE INDEX docs_status_created_priority ON docs (json_extract(body, '$.status'), \
         json_extract(body, '$.created_at'), json_extract(body, '$.priority'))",
    )
    .expect("sqlite index");
    assert_eq!(
        run(QUERY, &Params::new()),
        expected,
        "the index plan gives the same result"
    );
    if let Some((runs, json)) = profile_request("index") {
        profiled_runs(runs, &mut || ours(json));
        return;
    }
    measure(
        "status/priority/order/limit, index (status, created_at, priority)",
        21,
        &mut ours,
        &mut || sqlite_query(&conn),
    );

    print_table(
        &format!("DQL on {n} documents (median time; ratio = SQLite time / Rhizome time, higher is better)"),
        &["query", "rhizome", "SQLite", "ratio"],
        &rows,
    );

    // Live query latency: commit a change to one of the 50 rows, until the observer has its diff.
    let stmt = prepared.get(QUERY).expect("parse");
    let mut observers = Observers::new();
    observers
        .observe(QUERY, stmt, Params::new(), &mut store.read().expect("read"))
        .expect("observe");
    // `notify`: from the durable commit returning to the observer holding its
    // diff (what the live-query target is about); `total`: the write, the
    // commit with its fsync, and the notification.
    let (mut notify, mut total): (Vec<Duration>, Vec<Duration>) = (Vec::new(), Vec::new());
    for i in 0..200 {
        let id = expected[i % 50]
            .value()
            .ok()
            .and_then(|v| v.as_object()?.get("_id").cloned())
            .expect("id");
        let start = Instant::now();
        let mut w = store.write(now_ms()).expect("txn");
        let edit = rhizome_engine::store::Edit::Set {
            path: vec!["title".into()],
            value: Value::Int(i as i64),
        };
        w.update("docs", &id, &[edit]).expect("update");
        let committed = w.commit().expect("commit");
        let committed_at = Instant::now();
        let events = observers
            .on_commit(&committed, &mut store.read().expect("read"))
            .expect("observe");
        notify.push(committed_at.elapsed());
        total.push(start.elapsed());
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].diff.updated.len(), 1);
    }
    let pct = |lat: &mut Vec<Duration>, q: f64| {
        lat.sort();
        format!("{:.2?}", lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)])
    };
    print_table(
        "live query: 50-row result (index plan), 200 updates of a row in it",
        &["latency", "p50", "p99"],
        &[
            vec![
                "commit returned -> observer has its diff".into(),
                pct(&mut notify, 0.5),
                pct(&mut notify, 0.99),
            ],
            vec![
                "write + durable commit + diff".into(),
                pct(&mut total, 0.5),
                pct(&mut total, 0.99),
            ],
        ],
    );
    println!(
        "(observer: {} query runs, {} results patched from the changed document)",
        observers.runs(),
        observers.patches()
    );
}

fn row(name: &str, ours: Duration, theirs: Duration) -> Vec<String> {
    vec![
        name.to_string(),
        format!("{ours:.2?}"),
        format!("{theirs:.2?}"),
        format!("{:.2}x", theirs.as_secs_f64() / ours.as_secs_f64()),
    ]
}

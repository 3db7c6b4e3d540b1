//! Several statements in one transaction (read-your-writes, atomic commit,
//! abort on the first error, rollback), and PROFILE's operator statistics.

use rhizome_engine::dql::{self, Prepared, Transaction};
use rhizome_engine::hlc::PeerId;
use rhizome_engine::mem::MemKv;
use rhizome_engine::store::{Store, StoreConfig};
use rhizome_engine::value::Value;
use std::cell::Cell;

fn store() -> Store<MemKv> {
    Store::open(MemKv::new(), StoreConfig::default(), PeerId(1), 1).unwrap()
}

fn v(s: &str) -> Value {
    Value::parse(s).unwrap()
}

fn run(tx: &mut Transaction<'_, MemKv>, p: &Prepared, text: &str) -> Result<Vec<Value>, String> {
    let stmt = p.get(text).map_err(|e| e.to_string())?;
    tx.execute(&stmt, &Default::default())
        .map(|o| o.values().expect("rows decode"))
        .map_err(|e| e.to_string())
}

fn query(s: &Store<MemKv>, p: &Prepared, text: &str) -> Vec<Value> {
    dql::execute(s, &p.get(text).unwrap(), &Default::default(), 5)
        .unwrap()
        .0
        .values()
        .unwrap()
}

#[test]
fn statements_of_a_transaction_see_each_other_and_commit_together() {
    let s = store();
    let p = Prepared::new();
    let mut tx = Transaction::begin(&s, 1).unwrap();
    run(&mut tx, &p, r#"INSERT INTO t DOCUMENTS ({"_id":1,"n":1})"#).unwrap();
    run(&mut tx, &p, "UPDATE t SET n = n + 1 WHERE _id = 1").unwrap();
    assert_eq!(run(&mut tx, &p, "SELECT n FROM t").unwrap(), vec![v(r#"{"n":2}"#)]);
    assert!(
        query(&s, &p, "SELECT * FROM t").is_empty(),
        "other readers see nothing before the commit"
    );
    let committed = tx.commit().unwrap();
    assert!(committed.changed.contains_key("t"));
    assert_eq!(query(&s, &p, "SELECT n FROM t"), vec![v(r#"{"n":2}"#)]);
}

#[test]
fn the_first_error_aborts_and_nothing_is_written() {
    let s = store();
    let p = Prepared::new();
    let mut tx = Transaction::begin(&s, 1).unwrap();
    run(&mut tx, &p, r#"INSERT INTO t DOCUMENTS ({"_id":1})"#).unwrap();
    let e = run(&mut tx, &p, r#"INSERT INTO t DOCUMENTS ({"_id":1})"#).unwrap_err();
    assert!(e.contains("1"), "{e}");
    assert!(tx.is_aborted());
    let later = run(&mut tx, &p, "SELECT * FROM t").unwrap_err();
    assert!(later.contains("aborted") && later.contains("statement 2"), "{later}");
    assert!(tx.commit().unwrap_err().to_string().contains("roll it back"));
    assert!(query(&s, &p, "SELECT * FROM t").is_empty());

    let mut tx = Transaction::begin(&s, 2).unwrap();
    run(&mut tx, &p, r#"INSERT INTO t DOCUMENTS ({"_id":2})"#).unwrap();
    tx.rollback();
    assert!(query(&s, &p, "SELECT * FROM t").is_empty(), "rolled back");
}

#[test]
fn profile_reports_rows_per_operator_and_times_with_a_clock() {
    let s = store();
    let p = Prepared::new();
    dql::execute(
        &s,
        &p.get(r#"INSERT INTO t DOCUMENTS ({"_id":1,"x":1}), ({"_id":2,"x":5}), ({"_id":3,"x":9})"#)
            .unwrap(),
        &Default::default(),
        1,
    )
    .unwrap();
    let ticks = Cell::new(0u64);
    let clock = || {
        ticks.set(ticks.get() + 10);
        ticks.get()
    };
    let stmt = p
        .get("PROFILE SELECT * FROM t WHERE x > 2 ORDER BY x DESC LIMIT 1")
        .unwrap();
    let (out, _) = dql::execute_with(&s, &stmt, &Default::default(), 2, Some(&clock)).unwrap();
    let profile = out.items[0].value().unwrap().as_object().unwrap();
    assert_eq!(profile["rows"], Value::Int(1));
    let ops: Vec<(String, i64, bool)> = match &profile["operators"] {
        Value::Array(a) => a
            .iter()
            .map(|o| {
                let o = o.as_object().unwrap();
                let name = o["operator"].as_str().unwrap().to_string();
                let out = match o["rows_out"] {
                    Value::Int(n) => n,
                    _ => -1,
                };
                (name, out, o.contains_key("time_us"))
            })
            .collect(),
        other => panic!("operators: {other}"),
    };
    let names: Vec<&str> = ops.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ["scan", "visible", "filter", "project+top-k", "limit"]);
    let rows: Vec<i64> = ops.iter().map(|(_, r, _)| *r).collect();
    assert_eq!(rows, [3, 3, 2, 2, 1], "{ops:?}");
    assert!(ops.iter().all(|(_, _, timed)| *timed));
    assert!(profile.contains_key("time_us") && profile.contains_key("plan"));

    // Mutations run (and are reported) under PROFILE; without a clock there are no times.
    let stmt = p.get("PROFILE UPDATE t SET y = 1 WHERE x >= 5").unwrap();
    let (out, committed) = dql::execute(&s, &stmt, &Default::default(), 3).unwrap();
    assert_eq!(out.mutated.len(), 2);
    assert!(committed.is_some());
    let profile = out.items[0].value().unwrap().as_object().unwrap();
    assert!(!profile.contains_key("time_us"));
    let text = profile["operators"].to_string();
    assert!(text.contains("\"match\"") && text.contains("\"write\""), "{text}");
    assert_eq!(query(&s, &p, "SELECT _id FROM t WHERE y = 1 ORDER BY _id").len(), 2);
}

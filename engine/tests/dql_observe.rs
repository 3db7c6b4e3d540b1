//! Live queries: first results, diffs after commits (local and merged),
//! skipping commits that cannot matter, and sharing between observers.

use rhizome_engine::dql::observe::{diff, diff_rows, Observers, Rows};
use rhizome_engine::dql::{self, Prepared};
use rhizome_engine::hlc::PeerId;
use rhizome_engine::mem::MemKv;
use rhizome_engine::store::{Store, StoreConfig};
use rhizome_engine::testing::sync_into;
use rhizome_engine::value::Value;

fn v(s: &str) -> Value {
    Value::parse(s).unwrap()
}

fn rows(s: &str) -> Vec<Value> {
    match v(s) {
        Value::Array(a) => a,
        _ => panic!("array"),
    }
}

#[test]
fn list_diff_reports_inserts_deletes_updates_and_moves() {
    let old = rows(r#"[{"_id":1,"x":1},{"_id":2},{"_id":3}]"#);
    let new = rows(r#"[{"_id":0},{"_id":1,"x":2},{"_id":3},{"_id":2}]"#);
    let d = diff(&old, &new);
    assert_eq!(
        (d.inserted.clone(), d.deleted.clone(), d.updated.clone()),
        (vec![0], vec![], vec![1])
    );
    assert_eq!(d.moved.len(), 1, "one of 2 and 3 moved relative to the other: {d:?}");
    let d = diff(&old, &rows(r#"[{"_id":3}]"#));
    assert_eq!(d.deleted, vec![0, 1]);
    assert!(d.moved.is_empty(), "a row left alone is not moved");
    assert!(diff(&old, &old).is_empty());
}

fn exec(s: &Store<MemKv>, p: &Prepared, text: &str, now_ms: u64) -> rhizome_engine::store::Committed {
    let stmt = p.get(text).unwrap();
    let params = dql::params_from_json(&Value::Null).unwrap();
    dql::execute(s, &stmt, &params, now_ms).unwrap().1.unwrap_or_default()
}

#[test]
fn observers_follow_commits_and_skip_what_cannot_matter() {
    let store = Store::open(MemKv::new(), StoreConfig::default(), PeerId(1), 1).unwrap();
    let p = Prepared::new();
    exec(
        &store,
        &p,
        r#"INSERT INTO t DOCUMENTS ({"_id":1,"s":"open","c":5}), ({"_id":2,"s":"done","c":1})"#,
        1_000,
    );
    let text = "SELECT _id, c FROM t WHERE s = :s ORDER BY c LIMIT 2";
    let stmt = p.get(text).unwrap();
    let params = dql::params_from_json(&v(r#"{"s":"open"}"#)).unwrap();
    let mut obs = Observers::new();
    let first = obs
        .observe(text, stmt.clone(), params.clone(), &mut store.read().unwrap())
        .unwrap();
    assert_eq!(first.items, rows(r#"[{"_id":1,"c":5}]"#));
    assert_eq!(first.diff.inserted, vec![0]);
    let second = obs.observe(text, stmt, params, &mut store.read().unwrap()).unwrap();
    assert_eq!(obs.queries(), 1, "observers of one query share it");
    assert_eq!(obs.runs(), 1);

    // Another collection, and a document that neither matches nor was in the result: no re-run.
    let c = exec(&store, &p, r#"INSERT INTO other DOCUMENTS ({"_id":9})"#, 2_000);
    assert!(obs.on_commit(&c, &mut store.read().unwrap()).unwrap().is_empty());
    let c = exec(&store, &p, "UPDATE t SET c = 7 WHERE _id = 2", 3_000);
    assert!(obs.on_commit(&c, &mut store.read().unwrap()).unwrap().is_empty());
    assert_eq!(obs.runs(), 1, "commits that cannot affect the query do not re-run it");

    // A matching insert: both observers get the new result and its diff.
    let c = exec(
        &store,
        &p,
        r#"INSERT INTO t DOCUMENTS ({"_id":3,"s":"open","c":2})"#,
        4_000,
    );
    let events = obs.on_commit(&c, &mut store.read().unwrap()).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].items, rows(r#"[{"_id":3,"c":2},{"_id":1,"c":5}]"#));
    assert_eq!(events[0].diff.inserted, vec![0]);
    assert!(events[0].diff.moved.is_empty());

    // A change merged from another peer triggers observers like a local one.
    let remote = Store::open(MemKv::new(), StoreConfig::default(), PeerId(2), 2).unwrap();
    sync_into(&store, &remote, 5_000, 100);
    exec(&remote, &p, "UPDATE t SET c = 1 WHERE _id = 1", 6_000);
    let since = store.read().unwrap().version_vector().unwrap();
    let batch = remote.read().unwrap().changes_since(&since, None, 100).unwrap();
    let mut w = store.write(7_000).unwrap();
    w.apply_batch(&batch.changes).unwrap();
    let c = w.commit().unwrap();
    obs.cancel(second.observer);
    let events = obs.on_commit(&c, &mut store.read().unwrap()).unwrap();
    assert_eq!(events.len(), 1, "a cancelled observer hears nothing");
    assert_eq!(events[0].items, rows(r#"[{"_id":1,"c":1},{"_id":3,"c":2}]"#));
    assert_eq!(events[0].diff.updated, vec![0]);
    assert_eq!(events[0].diff.moved, vec![(1, 0)]);
    obs.cancel(first.observer);
    assert_eq!(obs.queries(), 0, "the query stops with its last observer");
}

/// One random edit of the property test below.
#[derive(Clone, Debug)]
enum Edit {
    Insert(u8, u8, Option<u8>, u8),
    Set(u8, &'static str, u8),
    Unset(u8, &'static str),
    Delete(u8),
    Evict(u8),
}

fn edit() -> impl proptest::strategy::Strategy<Value = Edit> {
    use proptest::prelude::*;
    let field = prop::sample::select(vec!["s", "p", "c"]);
    prop_oneof![
        (0u8..12, 0u8..2, prop::option::of(0u8..4), 0u8..6).prop_map(|(i, s, p, c)| Edit::Insert(i, s, p, c)),
        (0u8..12, field.clone(), 0u8..6).prop_map(|(i, f, x)| Edit::Set(i, f, x)),
        (0u8..12, field).prop_map(|(i, f)| Edit::Unset(i, f)),
        (0u8..12).prop_map(Edit::Delete),
        (0u8..12).prop_map(Edit::Evict),
    ]
}

fn statement(e: &Edit) -> String {
    let state = |x: u8| if x == 0 { "'a'" } else { "'b'" };
    match e {
        Edit::Insert(i, s, p, c) => {
            let p = p.map_or(String::new(), |p| format!(r#","p":{p}"#));
            let s = if *s == 0 { "a" } else { "b" };
            format!(r#"INSERT INTO t DOCUMENTS ({{"_id":{i},"s":"{s}"{p},"c":{c}}}) ON ID CONFLICT DO UPDATE"#)
        }
        Edit::Set(i, "s", x) => format!("UPDATE t SET s = {} WHERE _id = {i}", state(*x % 2)),
        Edit::Set(i, f, x) => format!("UPDATE t SET {f} = {x} WHERE _id = {i}"),
        Edit::Unset(i, f) => format!("UPDATE t UNSET {f} WHERE _id = {i}"),
        Edit::Delete(i) => format!("DELETE FROM t WHERE _id = {i}"),
        Edit::Evict(i) => format!("EVICT FROM t WHERE _id = {i}"),
    }
}

proptest::proptest! {
    /// Whatever the edits, every observer's result equals a fresh run of its
    /// query, whether it was patched from the changed documents or re-run.
    #[test]
    fn patched_results_equal_fresh_runs(edits in proptest::collection::vec(edit(), 1..40)) {
        let store = Store::open(MemKv::new(), StoreConfig::default(), PeerId(1), 1).unwrap();
        let p = Prepared::new();
        let queries = [
            "SELECT * FROM t WHERE s = 'a' ORDER BY c DESC LIMIT 3",
            "SELECT * FROM t ORDER BY p, c LIMIT 4",
            "SELECT * FROM t WHERE p >= 1 ORDER BY c",
            "SELECT * FROM t ORDER BY c, _id LIMIT 2",
        ];
        let mut obs = Observers::new();
        let mut current = Vec::new();
        for q in queries {
            let stmt = p.get(q).unwrap();
            let first = obs.observe(q, stmt, Default::default(), &mut store.read().unwrap()).unwrap();
            current.push((first.observer, q, first.items));
        }
        for (n, e) in edits.iter().enumerate() {
            let c = exec(&store, &p, &statement(e), 1_000 + n as u64);
            for event in obs.on_commit(&c, &mut store.read().unwrap()).unwrap() {
                let slot = current.iter_mut().find(|(o, _, _)| *o == event.observer).unwrap();
                proptest::prop_assert_eq!(&event.diff, &diff_rows(&slot.2, &event.items), "the diff of a patch is the list diff");
                slot.2 = event.items;
            }
            for (_, q, items) in &current {
                let fresh = dql::execute(&store, &p.get(q).unwrap(), &Default::default(), 0).unwrap().0.values().unwrap();
                proptest::prop_assert_eq!(items, &fresh, "{} after {:?}", q, &edits[..=n]);
            }
        }
    }
}

#[test]
fn window_changes_patch_the_result_without_a_rerun() {
    let store = Store::open(MemKv::new(), StoreConfig::default(), PeerId(1), 1).unwrap();
    let p = Prepared::new();
    exec(
        &store,
        &p,
        r#"INSERT INTO t DOCUMENTS ({"_id":1,"c":1}), ({"_id":2,"c":2}), ({"_id":3,"c":3}), ({"_id":4,"c":4})"#,
        1_000,
    );
    let text = "SELECT * FROM t ORDER BY c LIMIT 3";
    let mut obs = Observers::new();
    obs.observe(
        text,
        p.get(text).unwrap(),
        Default::default(),
        &mut store.read().unwrap(),
    )
    .unwrap();
    // A row of the window moves up, a new row enters, a row beyond stays out.
    for (n, stmt) in [
        "UPDATE t SET c = 0 WHERE _id = 3",
        r#"INSERT INTO t DOCUMENTS ({"_id":5,"c":-1})"#,
        "UPDATE t SET c = 9 WHERE _id = 4",
    ]
    .iter()
    .enumerate()
    {
        let c = exec(&store, &p, stmt, 2_000 + n as u64);
        obs.on_commit(&c, &mut store.read().unwrap()).unwrap();
    }
    assert_eq!((obs.runs(), obs.patches()), (1, 3), "patched, not re-run");
    // A row leaving a full window needs the rows beyond it: a re-run.
    let c = exec(&store, &p, "DELETE FROM t WHERE _id = 5", 3_000);
    let events = obs.on_commit(&c, &mut store.read().unwrap()).unwrap();
    assert_eq!(obs.runs(), 2);
    assert_eq!(
        events[0].items,
        rows(r#"[{"_id":3,"c":0},{"_id":1,"c":1},{"_id":2,"c":2}]"#)
    );
}

/// One step of the unordered property test: a transaction of edits, or a
/// bulk insert (enough documents to cross result chunks), or an index
/// (which changes the plan of some queries from a scan).
#[derive(Clone, Debug)]
enum Step {
    Tx(Vec<Edit>),
    Bulk { first: u16, count: u16, c: u8 },
    DeleteWhere(u8),
    EvictWhere(u8),
    Index,
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        6 => proptest::collection::vec(edit(), 1..5).prop_map(Step::Tx),
        2 => (0u16..1200, 1u16..700, 0u8..6).prop_map(|(first, count, c)| Step::Bulk { first, count, c }),
        1 => (0u8..6).prop_map(Step::DeleteWhere),
        1 => (0u8..6).prop_map(Step::EvictWhere),
        1 => Just(Step::Index),
    ]
}

fn statements(s: &Step) -> Vec<String> {
    match s {
        Step::Tx(edits) => edits.iter().map(statement).collect(),
        Step::Bulk { first, count, c } => {
            let docs: Vec<String> = (*first..first + count)
                .map(|i| {
                    format!(
                        r#"({{"_id":{i},"s":"{}","p":{},"c":{}}})"#,
                        if i % 3 == 0 { "a" } else { "b" },
                        i % 4,
                        (u16::from(*c) + i) % 6
                    )
                })
                .collect();
            vec![format!(
                "INSERT INTO t DOCUMENTS {} ON ID CONFLICT DO UPDATE",
                docs.join(", ")
            )]
        }
        Step::DeleteWhere(c) => vec![format!("DELETE FROM t WHERE c = {c}")],
        Step::EvictWhere(c) => vec![format!("EVICT FROM t WHERE c = {c}")],
        Step::Index => vec!["CREATE INDEX IF NOT EXISTS tc ON t (c)".to_string()],
    }
}

/// Queries of the unordered property test: scans that are patched, and
/// shapes that must re-run (offsets, projections, grouping, distinct).
const UNORDERED: [&str; 10] = [
    "SELECT * FROM t",
    "SELECT * FROM t WHERE s = 'a'",
    "SELECT * FROM t WHERE c > 2",
    "SELECT * FROM t LIMIT 3",
    "SELECT * FROM t WHERE p >= 1 LIMIT 700",
    "SELECT * FROM t LIMIT 2 OFFSET 1",
    "SELECT _id, c FROM t WHERE c < 3",
    "SELECT DISTINCT s FROM t",
    "SELECT s, COUNT(*) AS n FROM t GROUP BY s",
    "SELECT * FROM t WHERE _id = 5",
];

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(48))]
    /// Unordered live queries: after every commit (several edits at once,
    /// bulk inserts, deletes and evictions of many documents, a new index)
    /// each result equals a fresh run exactly, rows and order, and each
    /// event's diff turns the previous result into the new one.
    #[test]
    fn unordered_results_equal_fresh_runs(steps in proptest::collection::vec(step(), 1..24)) {
        let store = Store::open(MemKv::new(), StoreConfig::default(), PeerId(1), 1).unwrap();
        let p = Prepared::new();
        let mut obs = Observers::new();
        let mut current: Vec<(rhizome_engine::dql::observe::ObserverId, &str, Rows)> = Vec::new();
        for q in UNORDERED {
            let first = obs.observe(q, p.get(q).unwrap(), Default::default(), &mut store.read().unwrap()).unwrap();
            current.push((first.observer, q, first.items));
        }
        for (n, st) in steps.iter().enumerate() {
            let mut tx = dql::Transaction::begin(&store, 1_000 + n as u64).unwrap();
            for text in statements(st) {
                tx.execute(&p.get(&text).unwrap(), &Default::default()).unwrap();
            }
            let c = tx.commit().unwrap();
            for event in obs.on_commit(&c, &mut store.read().unwrap()).unwrap() {
                let slot = current.iter_mut().find(|(o, _, _)| *o == event.observer).unwrap();
                let d = &event.diff;
                let mut replay: Vec<Option<Value>> = slot.2.iter().cloned().map(Some).collect();
                for &i in &d.deleted {
                    replay[i] = None;
                }
                let mut replay: Vec<Value> = replay.into_iter().flatten().collect();
                if d.moved.is_empty() {
                    for &j in &d.inserted {
                        replay.insert(j, event.items[j].clone());
                    }
                    for &j in &d.updated {
                        replay[j] = event.items[j].clone();
                    }
                    proptest::prop_assert_eq!(&event.items, &replay, "the diff replays");
                } else {
                    proptest::prop_assert_eq!(d, &diff_rows(&slot.2, &event.items));
                }
                slot.2 = event.items;
            }
            for (_, q, items) in &current {
                let fresh = dql::execute(&store, &p.get(q).unwrap(), &Default::default(), 0).unwrap().0.values().unwrap();
                proptest::prop_assert_eq!(items, &fresh, "{} after {:?}", q, &steps[..=n]);
            }
        }
    }
}

/// A first sync into a live `SELECT * FROM t`, batch by batch, as the
/// receiver of an initial sync sees it: the query runs once, every merged
/// batch is patched in, and the result is what a fresh run returns.
#[test]
fn a_sync_into_a_live_scan_patches_every_batch() {
    let p = Prepared::new();
    let remote = Store::open(MemKv::new(), StoreConfig::default(), PeerId(2), 2).unwrap();
    let docs: Vec<String> = (0..3_000)
        .map(|i| format!(r#"({{"_id":{i},"v":{}}})"#, i % 7))
        .collect();
    exec(
        &remote,
        &p,
        &format!("INSERT INTO t DOCUMENTS {}", docs.join(", ")),
        1_000,
    );
    let store = Store::open(MemKv::new(), StoreConfig::default(), PeerId(1), 1).unwrap();
    let text = "SELECT * FROM t";
    let mut obs = Observers::new();
    let mut seen = obs
        .observe(
            text,
            p.get(text).unwrap(),
            Default::default(),
            &mut store.read().unwrap(),
        )
        .unwrap()
        .items;
    let since = store.read().unwrap().version_vector().unwrap();
    let mut resume = None;
    let mut batches = 0;
    loop {
        let got = remote
            .read()
            .unwrap()
            .changes_since(&since, resume.as_ref(), 250)
            .unwrap();
        let mut w = store.write(2_000).unwrap();
        w.apply_batch(&got.changes).unwrap();
        let c = w.commit().unwrap();
        for ev in obs.on_commit(&c, &mut store.read().unwrap()).unwrap() {
            assert!(ev.diff.deleted.is_empty() && ev.diff.moved.is_empty());
            assert_eq!(ev.items.len(), seen.len() + ev.diff.inserted.len());
            seen = ev.items;
        }
        batches += 1;
        resume = got.resume;
        if resume.is_none() {
            break;
        }
    }
    assert!(batches > 1);
    assert_eq!(seen.len(), 3_000);
    assert_eq!(obs.runs(), 1, "one run, then patches");
    let fresh = dql::execute(&store, &p.get(text).unwrap(), &Default::default(), 0)
        .unwrap()
        .0
        .values()
        .unwrap();
    assert_eq!(seen, fresh);
}

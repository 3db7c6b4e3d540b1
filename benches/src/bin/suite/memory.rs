//! Workload 6, memory: the peak resident memory of each system holding
//! the data set, each in a fresh process (this binary re-executed with
//! `--memory-child SYSTEM DOCS`), so no system pays for another's heap.
//!
//! The child generates documents a transaction at a time (the generator
//! never holds the data set), loads them, and for the databases then reads
//! every document back (LMDB and SQLite pages read through a map or cache
//! count as resident); it reports its resident memory before loading and
//! its peak (`VmHWM`, reset before loading where the kernel allows), both
//! from `/proc/self/status`. Resident memory includes file pages mapped in
//! (LMDB's data file), not the kernel's page cache.

use crate::crdt::{Automerge, Crdt, Loro, Yrs};
use crate::insert::{heed_open, now_ms, sqlite_insert, sqlite_open, PEER_A};
use crate::rhizome::{self, COLLECTION};
use crate::{Sizes, Target};
use rhizome_benches::{dataset_iter, print_table};
use rhizome_engine::value::Value;
use serde_json::Value as Json;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Systems measured, as named on the child's command line.
const SYSTEMS: [&str; 6] = ["rhizome", "heed", "sqlite", "yrs", "loro", "automerge"];

/// Longest a child may take.
const CHILD_TIMEOUT: Duration = Duration::from_secs(300);

/// Documents per transaction (and per generated chunk) in the child.
const CHUNK_DOCS: usize = 1_000;

/// A `/proc/self/status` field in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The data set in chunks of [`CHUNK_DOCS`], generated as consumed.
fn chunks(docs: usize) -> impl Iterator<Item = Vec<Json>> {
    let mut it = dataset_iter(docs as u64).peekable();
    std::iter::from_fn(move || {
        it.peek()?;
        Some(it.by_ref().take(CHUNK_DOCS).collect())
    })
}

fn load_crdt<C: Crdt>(docs: usize) -> C {
    let mut c = C::new(PEER_A);
    for chunk in chunks(docs) {
        c.insert(&chunk);
    }
    c
}

/// Loads and reads back; returns what must stay alive until measured.
fn load(system: &str, docs: usize, dir: &std::path::Path) -> Box<dyn std::any::Any> {
    match system {
        "rhizome" => {
            let store = rhizome::open_lmdb(dir, PEER_A);
            for chunk in chunks(docs) {
                let values: Vec<Value> = chunk.iter().map(|d| Value::from_json(d).expect("valid")).collect();
                rhizome::insert(&store, &values, now_ms());
            }
            let mut seen = 0;
            store
                .read()
                .expect("read")
                .scan(COLLECTION, &mut |d| {
                    seen += usize::from(d.is_ok());
                    true
                })
                .expect("scan");
            assert_eq!(seen, docs);
            Box::new(store)
        }
        "heed" => {
            let (env, db) = heed_open(dir);
            for chunk in chunks(docs) {
                let mut w = env.write_txn().expect("txn");
                for d in &chunk {
                    let id = d["_id"].as_str().unwrap_or_default();
                    db.put(&mut w, id.as_bytes(), &serde_json::to_vec(d).expect("json"))
                        .expect("put");
                }
                w.commit().expect("commit");
            }
            let r = env.read_txn().expect("read");
            let mut seen = 0;
            for item in db.iter(&r).expect("iter") {
                let (_, body) = item.expect("entry");
                let doc: Json = serde_json::from_slice(body).expect("json");
                seen += usize::from(doc.is_object());
            }
            assert_eq!(seen, docs);
            drop(r);
            Box::new(env)
        }
        "sqlite" => {
            let mut conn = sqlite_open(dir);
            for chunk in chunks(docs) {
                sqlite_insert(chunk.iter(), CHUNK_DOCS, &mut conn);
            }
            {
                let mut st = conn.prepare("SELECT body FROM docs").expect("prepare");
                let mut rows = st.query([]).expect("query");
                let mut seen = 0;
                while let Some(row) = rows.next().expect("row") {
                    let body: String = row.get(0).expect("body");
                    let doc: Json = serde_json::from_str(&body).expect("json");
                    seen += usize::from(doc.is_object());
                }
                assert_eq!(seen, docs);
            }
            Box::new(conn)
        }
        "yrs" => Box::new(load_crdt::<Yrs>(docs)),
        "loro" => Box::new(load_crdt::<Loro>(docs)),
        "automerge" => Box::new(load_crdt::<Automerge>(docs)),
        other => panic!("unknown system {other}"),
    }
}

/// The child: loads `docs` documents into `system` and prints
/// `baseline_kib peak_kib anon_kib file_kib`.
pub fn child(system: &str, docs: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let baseline = status_kib("VmRSS");
    // "5" resets the peak to the current resident size (Linux >= 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let held = load(system, docs, dir.path());
    let peak = status_kib("VmHWM").max(status_kib("VmRSS"));
    println!("{baseline} {peak} {} {}", status_kib("RssAnon"), status_kib("RssFile"));
    drop(held);
}

/// Runs one child; `None` if it failed or timed out.
fn measure(system: &str, docs: usize) -> Option<[u64; 4]> {
    let exe = std::env::current_exe().ok()?;
    let mut child = Command::new(exe)
        .args(["--memory-child", system, &docs.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .ok()?;
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().ok()? {
            break status;
        }
        if start.elapsed() > CHILD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("memory: {system} took longer than {CHILD_TIMEOUT:?}");
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    child.stdout.take()?.read_to_string(&mut out).ok()?;
    if !status.success() {
        return None;
    }
    let v: Vec<u64> = out.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    v.try_into().ok()
}

/// Workload 6.
pub fn run(sizes: &Sizes, targets: &mut Vec<Target>) {
    let docs = sizes.docs;
    // Automerge holds fewer documents (see `Sizes::automerge_docs`), so
    // Rhizome is measured at that size too, for a like-for-like ratio.
    let am_docs = sizes.automerge_docs.min(docs);
    let mut figures: Vec<(&str, usize, Option<[u64; 4]>)> = SYSTEMS
        .iter()
        .map(|s| match *s {
            "automerge" => (*s, am_docs, measure(s, am_docs)),
            s => (s, docs, measure(s, docs)),
        })
        .collect();
    figures.push(("rhizome", am_docs, measure("rhizome", am_docs)));
    let held = |f: &Option<[u64; 4]>| f.map(|[base, peak, ..]| peak.saturating_sub(base));
    let ours_at = |n: usize| {
        figures
            .iter()
            .find(|(s, d, _)| *s == "rhizome" && *d == n)
            .and_then(|(_, _, f)| held(f))
            .unwrap_or(0)
            .max(1)
    };
    let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
    let rows: Vec<Vec<String>> = figures
        .iter()
        .map(|(name, n, f)| match f {
            Some([base, peak, anon, file]) => vec![
                name.to_string(),
                n.to_string(),
                mib(peak - base.min(peak)),
                mib(*base),
                format!("{} / {}", mib(*anon), mib(*file)),
                format!("{:.2}", (peak - base.min(peak)) as f64 / ours_at(*n) as f64),
            ],
            None => vec![
                name.to_string(),
                n.to_string(),
                "failed".into(),
                "".into(),
                "".into(),
                "".into(),
            ],
        })
        .collect();
    print_table(
        "6. Memory: peak resident memory holding the documents, fresh process each (databases: after reading every document back; ratio against Rhizome at the same count)",
        &["system", "docs", "peak MiB over baseline", "baseline MiB", "at end: anon / file MiB", "vs Rhizome"],
        &rows,
    );
    let ours = held(&figures[0].2);
    let full_min = figures[3..5].iter().filter_map(|(_, _, f)| held(f)).min();
    let (am, ours_small) = (held(&figures[5].2), held(&figures[6].2));
    let below = |a: Option<u64>, b: Option<u64>| matches!((a, b), (Some(a), Some(b)) if a < b);
    targets.push(Target::new(
        "6. memory: below every CRDT library",
        below(ours, full_min) && below(ours_small, am),
        format!(
            "{} vs {} MiB (yrs, loro: smaller of the two) at {docs} docs; {} vs {} MiB (automerge) at {am_docs}",
            ours.map_or("?".into(), mib),
            full_min.map_or("?".into(), mib),
            ours_small.map_or("?".into(), mib),
            am.map_or("?".into(), mib),
        ),
    ));
}

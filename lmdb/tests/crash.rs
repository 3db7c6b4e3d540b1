//! Durability under a real crash: a child process commits transactions in a
//! loop and reports each one after `commit` returns; the parent kills it with
//! SIGKILL at three moments, reopens the store each time and checks that
//! every acknowledged transaction is complete and that no transaction is
//! visible in part.
//!
//! The test binary re-runs itself as the child (`RHIZOME_CRASH_CHILD`); in a
//! normal run the child test returns at once.

use rhizome_engine::doc::Num;
use rhizome_engine::hlc::PeerId;
use rhizome_engine::store::{Edit, OnConflict, Store, StoreConfig};
use rhizome_engine::value::Value;
use rhizome_lmdb::{LmdbConfig, LmdbKv};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DOCS_PER_TXN: usize = 50;
const CHILD_ENV: &str = "RHIZOME_CRASH_CHILD";

fn open(dir: &Path) -> Store<LmdbKv> {
    let kv = LmdbKv::open(
        dir,
        &LmdbConfig {
            map_size_bytes: 1 << 30,
            max_readers: 16,
        },
    )
    .expect("open lmdb");
    Store::open(kv, StoreConfig::default(), PeerId(1), 1).expect("open store")
}

fn doc_id(txn: u64, j: usize) -> Value {
    Value::String(format!("t{txn}-{j}"))
}

fn collection(j: usize) -> &'static str {
    if j.is_multiple_of(2) {
        "a"
    } else {
        "b"
    }
}

/// The child: commits forever, printing `ACK n` after each commit returns.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else { return };
    let store = open(Path::new(&dir));
    let first = store
        .read()
        .expect("read")
        .get("meta", &Value::from("count"))
        .expect("get")
        .map_or(0, |d| {
            d.as_object()
                .and_then(|o| o.get("n"))
                .and_then(|n| if let Value::Int(n) = n { Some(*n as u64) } else { None })
                .unwrap_or(0)
        });
    let mut out = std::io::stdout().lock();
    for txn in first.. {
        let mut w = store.write(1_000_000 + txn).expect("write");
        for j in 0..DOCS_PER_TXN {
            let doc = Value::parse(&format!(
                r#"{{"_id":"t{txn}-{j}","txn":{txn},"j":{j},"pad":"{}"}}"#,
                "x".repeat(200)
            ))
            .expect("json");
            w.insert(collection(j), &doc, OnConflict::Fail).expect("insert");
        }
        if txn == 0 {
            w.insert(
                "meta",
                &Value::parse(r#"{"_id":"count"}"#).expect("json"),
                OnConflict::Fail,
            )
            .expect("insert");
        }
        w.update(
            "meta",
            &Value::from("count"),
            &[Edit::Increment {
                path: vec!["n".into()],
                by: Num::Int(1),
            }],
        )
        .expect("count");
        w.commit().expect("commit");
        writeln!(out, "ACK {txn}").expect("stdout");
        out.flush().expect("flush");
    }
}

/// Kills and reaps the child even if the parent's assertions fail.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_child_until(dir: &Path, acks_wanted: u64) -> Option<u64> {
    let exe = std::env::current_exe().expect("test binary");
    let child = Command::new(exe)
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let mut reaper = Reaper(child);
    let stdout = reaper.0.stdout.take().expect("stdout");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    let mut seen = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read child");
        if let Some(n) = line.strip_prefix("ACK ") {
            last = Some(n.trim().parse::<u64>().expect("ack number"));
            seen += 1;
            if seen >= acks_wanted {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the child did not acknowledge {acks_wanted} commits in 60 s"
        );
    }
    // SIGKILL: no destructor, no flush, no goodbye.
    reaper.0.kill().expect("kill");
    reaper.0.wait().expect("wait");
    last
}

fn check(dir: &Path, last_ack: u64) -> u64 {
    let store = open(dir);
    let r = store.read().expect("read");
    let mut complete = 0;
    for txn in 0..=last_ack + 5 {
        let present = (0..DOCS_PER_TXN)
            .filter(|&j| {
                let doc = r.get(collection(j), &doc_id(txn, j)).expect("readable");
                if let Some(d) = &doc {
                    let o = d.as_object().expect("object");
                    assert_eq!(o.get("txn"), Some(&Value::Int(txn as i64)));
                    assert_eq!(o.get("pad").and_then(Value::as_str).map(str::len), Some(200));
                }
                doc.is_some()
            })
            .count();
        assert!(
            present == 0 || present == DOCS_PER_TXN,
            "transaction {txn} is partly visible: {present} documents"
        );
        if txn <= last_ack {
            assert_eq!(present, DOCS_PER_TXN, "acknowledged transaction {txn} was lost");
        }
        complete += (present == DOCS_PER_TXN) as u64;
    }
    let count = r.get("meta", &Value::from("count")).expect("get").expect("counter");
    assert_eq!(
        count.as_object().and_then(|o| o.get("n")),
        Some(&Value::Int(complete as i64)),
        "counter"
    );
    complete
}

#[test]
fn sigkill_loses_no_acknowledged_commit() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut total = 0;
    // Three crashes at different moments, on the same store: reopened
    // stores are crash-tested too.
    for (round, acks) in [30u64, 7, 19].into_iter().enumerate() {
        let last = run_child_until(dir.path(), acks).expect("child acknowledged commits");
        let complete = check(dir.path(), last);
        assert!(complete > total, "round {round}: progress");
        total = complete;
    }
}

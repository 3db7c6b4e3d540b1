//! Durability and atomicity under a real crash, not a simulated one.
//!
//! LMDB promises that a commit is durable once it returns and that a
//! transaction is never visible in part; the store builds on that by putting a
//! transaction's documents, id index, change log, version vector and counters
//! in one LMDB transaction. Only killing a writer process while it commits can
//! show that the two fit together, so this test does exactly that.
//!
//! The test binary re-runs itself as the child (`crash_child`, selected with
//! `--exact` and given a store directory in `RHIZOME_CRASH_CHILD_DIR`; in a
//! normal run it returns at once). The child commits transactions of 50
//! documents plus a counter increment in a loop and prints `ACK n` once
//! `commit` has returned. The parent kills it with SIGKILL, reopens the store
//! and checks that every acknowledged transaction is there whole, that no
//! transaction is there in part, and that the counter, the id index, the
//! change log and the version vector all agree with the documents.
//!
//! Three rounds on the same directory, so stores that were themselves
//! recovered from a crash are crashed again, each killing at another point of
//! a transaction: right after an acknowledgement, half a transaction later,
//! and right after the child prints `COMMIT n` on entering `commit` (while
//! LMDB writes and syncs its pages).

#![cfg(unix)]

use rhizome_engine::doc::Num;
use rhizome_engine::hlc::PeerId;
use rhizome_engine::store::{Edit, OnConflict, ReadTx, Store, StoreConfig};
use rhizome_engine::value::Value;
use rhizome_engine::vv::VersionVector;
use rhizome_lmdb::{LmdbConfig, LmdbKv};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const CHILD_ENV: &str = "RHIZOME_CRASH_CHILD_DIR";
const CHILD_TEST: &str = "crash_child";
const COLLECTIONS: [&str; 2] = ["a", "b"];
const DOCS_PER_TXN: u64 = 50;
const PAD_BYTES: usize = 200;
const COUNTER_COLLECTION: &str = "meta";
const COUNTER_ID: &str = "counter";
/// Acknowledged commits before the kill: enough that the store spans many
/// pages and the child is well into its steady state.
const ACKS_BEFORE_KILL: usize = 30;
/// A transaction takes milliseconds; this only turns a hung child into a
/// clear failure instead of a hung test run.
const ROUND_TIMEOUT: Duration = Duration::from_secs(60);
/// Transactions past the last acknowledged one that are probed through the id
/// index (the one in flight at the kill is among them).
const LOOKAHEAD: u64 = 5;

fn open(dir: &Path, fresh_peer: u64) -> Store<LmdbKv> {
    let config = LmdbConfig {
        map_size_bytes: 256 << 20,
        max_readers: 16,
    };
    let kv = LmdbKv::open(dir, &config).expect("open lmdb");
    Store::open(kv, StoreConfig::default(), PeerId(fresh_peer), fresh_peer).expect("open store")
}

/// Spreads each transaction over two collections, so atomicity is checked
/// across collections and not just within one B-tree range.
fn collection(j: u64) -> &'static str {
    COLLECTIONS[(j % 2) as usize]
}

fn doc_id(txn: u64, j: u64) -> Value {
    Value::String(format!("t{txn}-{j}"))
}

/// Every field is derived from (txn, j), so a torn, stale or misplaced record
/// cannot pass for the right one.
fn expected(txn: u64, j: u64) -> Value {
    let pad: String = format!("{txn}.{j}|").chars().cycle().take(PAD_BYTES).collect();
    let fields = [
        ("_id", doc_id(txn, j)),
        ("txn", Value::Int(txn as i64)),
        ("j", Value::Int(j as i64)),
        ("pad", Value::String(pad)),
    ];
    Value::Object(fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

fn counter(r: &ReadTx<'_, LmdbKv>) -> Option<i64> {
    let doc = r
        .get(COUNTER_COLLECTION, &Value::from(COUNTER_ID))
        .expect("get counter")?;
    match doc.as_object().and_then(|o| o.get("n")) {
        Some(Value::Int(n)) => Some(*n),
        other => panic!("counter holds {other:?}"),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// The child: commits until it is killed, acknowledging each commit on stdout.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = open(Path::new(&dir), 1);
    // Transactions are numbered from 0 without gaps, so after a crash the
    // count of complete ones is the next number.
    let mut txn = counter(&store.read().expect("read")).unwrap_or(0) as u64;
    let mut out = std::io::stdout().lock();
    // Only a parent that vanished without killing us lets this run out (a
    // lost parent also breaks the pipe, which fails the next ACK).
    let started = Instant::now();
    while started.elapsed() < 2 * ROUND_TIMEOUT {
        let mut w = store.write(now_ms()).expect("write");
        for j in 0..DOCS_PER_TXN {
            w.insert(collection(j), &expected(txn, j), OnConflict::Fail)
                .expect("insert");
        }
        let increment = Edit::Increment {
            path: vec!["n".into()],
            by: Num::Int(1),
        };
        // Read and rewritten in the same transaction as the documents, so after
        // a crash it must count exactly the transactions that are on disk.
        if !w
            .update(COUNTER_COLLECTION, &Value::from(COUNTER_ID), &[increment])
            .expect("increment")
        {
            let first = Value::parse(&format!(r#"{{"_id":"{COUNTER_ID}","n":1}}"#)).expect("json");
            w.insert(COUNTER_COLLECTION, &first, OnConflict::Fail)
                .expect("create counter");
        }
        // Lets the parent aim a kill at the commit itself (page writes, fsync).
        writeln!(out, "COMMIT {txn}").expect("stdout");
        out.flush().expect("flush");
        w.commit().expect("commit");
        // Only now may the parent count on this transaction.
        writeln!(out, "ACK {txn}").expect("stdout");
        out.flush().expect("flush");
        txn += 1;
    }
}

/// The child process; killed and reaped on drop, so a failed assertion in
/// the parent never leaves a writer running.
struct CrashChild {
    child: Child,
    lines: Receiver<String>,
    stderr_path: PathBuf,
}

impl CrashChild {
    fn spawn(store_dir: &Path, stderr_path: PathBuf) -> CrashChild {
        let exe = std::env::current_exe().expect("test binary");
        let stderr = File::create(&stderr_path).expect("child stderr file");
        let mut child = Command::new(exe)
            .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, store_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        // A thread reads the pipe so the parent can wait with a timeout; it
        // ends when the child dies and the pipe closes.
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        CrashChild {
            child,
            lines,
            stderr_path,
        }
    }

    /// `Child::kill` is SIGKILL on Unix: no destructor, no flush, no exit handler.
    fn kill(&mut self) -> ExitStatus {
        self.child.kill().expect("kill child");
        self.child.wait().expect("reap child")
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for CrashChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test harness prints `test crash_child ... ` before the test's own
/// output on the same line, so a marker is looked for anywhere in a line.
fn marked(line: &str, marker: &str) -> Option<u64> {
    line.rsplit_once(marker)?.1.trim().parse().ok()
}

fn ack_of(line: &str) -> Option<u64> {
    marked(line, "ACK ")
}

/// Where in a transaction the child is killed; one per round.
#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// Right after an acknowledgement: the next transaction's inserts have
    /// at most begun.
    AfterAck,
    /// Half a transaction's time after an acknowledgement: mid-way.
    MidTransaction,
    /// Right after the child announces its commit: while LMDB writes pages
    /// and syncs (or just after, if the commit was quicker than the kill).
    InCommit,
}

const KILL_AT: [KillAt; 3] = [KillAt::AfterAck, KillAt::MidTransaction, KillAt::InCommit];

/// Acknowledged transactions of one child's life.
struct Acked {
    first: u64,
    last: u64,
    count: usize,
    killed_at: Duration,
}

/// Runs a child until it has acknowledged `ACKS_BEFORE_KILL` commits, then
/// kills it at `kill_at`.
fn crash_round(store_dir: &Path, stderr_path: PathBuf, round: usize, kill_at: KillAt) -> Acked {
    let started = Instant::now();
    let mut child = CrashChild::spawn(store_dir, stderr_path);
    let deadline = started + ROUND_TIMEOUT;
    let mut acks: Vec<(u64, Instant)> = Vec::new();
    loop {
        let ready = acks.len() >= ACKS_BEFORE_KILL;
        if ready && !matches!(kill_at, KillAt::InCommit) {
            break;
        }
        match child.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if ready && marked(&line, "COMMIT ").is_some() => break,
            Ok(line) => acks.extend(ack_of(&line).map(|n| (n, Instant::now()))),
            Err(RecvTimeoutError::Timeout) => panic!(
                "round {round}: only {} of {ACKS_BEFORE_KILL} commits acknowledged within {ROUND_TIMEOUT:?}; child stderr:\n{}",
                acks.len(),
                child.stderr()
            ),
            Err(RecvTimeoutError::Disconnected) => panic!(
                "round {round}: the child stopped after {} acknowledged commits ({:?}); child stderr:\n{}",
                acks.len(),
                child.child.try_wait(),
                child.stderr()
            ),
        }
    }
    if let KillAt::MidTransaction = kill_at {
        let per_txn = (acks[acks.len() - 1].1 - acks[0].1) / (acks.len() as u32 - 1);
        std::thread::sleep(per_txn / 2);
    }
    let killed_at = started.elapsed();
    let status = child.kill();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "round {round}: the child must die of the kill, not on its own ({status:?}); stderr:\n{}",
        child.stderr()
    );
    // Acknowledgements still in the pipe count too: their commits had returned.
    let drain_deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match child
            .lines
            .recv_timeout(drain_deadline.saturating_duration_since(Instant::now()))
        {
            Ok(line) => acks.extend(ack_of(&line).map(|n| (n, Instant::now()))),
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => panic!("round {round}: the dead child's stdout did not close"),
        }
    }
    let numbers: Vec<u64> = acks.iter().map(|a| a.0).collect();
    let first = numbers[0];
    assert!(
        numbers.iter().copied().eq(first..first + numbers.len() as u64),
        "round {round}: acknowledgements are consecutive: {numbers:?}"
    );
    Acked {
        first,
        last: first + numbers.len() as u64 - 1,
        count: numbers.len(),
        killed_at,
    }
}

fn txn_and_j(doc: &Value) -> (u64, u64) {
    let field = |name| match doc.as_object().and_then(|o| o.get(name)) {
        Some(Value::Int(n)) if *n >= 0 => *n as u64,
        other => panic!("field {name} of {doc} is {other:?}"),
    };
    (field("txn"), field("j"))
}

/// Reopens the crashed store and checks it; returns how many transactions are
/// complete on disk.
fn check_store(store_dir: &Path, last_ack: u64, round: usize) -> u64 {
    // Another fresh peer id: the persisted one must win, or the version
    // vector check below would look up a peer that never wrote.
    let store = open(store_dir, 2);
    let r = store.read().expect("read");

    // Every document on disk, through the documents table.
    let mut docs_per_txn: BTreeMap<u64, u64> = BTreeMap::new();
    for coll in COLLECTIONS {
        r.scan(coll, &mut |doc| {
            let doc = doc.expect("every record decodes");
            let (txn, j) = txn_and_j(&doc);
            assert_eq!(doc, expected(txn, j), "round {round}: content of t{txn}-{j}");
            assert_eq!(collection(j), coll, "round {round}: t{txn}-{j} in its collection");
            *docs_per_txn.entry(txn).or_default() += 1;
            true
        })
        .expect("scan");
    }
    for (&txn, &n) in &docs_per_txn {
        assert_eq!(
            n, DOCS_PER_TXN,
            "round {round}: transaction {txn} is partly visible ({n} of {DOCS_PER_TXN} documents)"
        );
    }
    let complete = docs_per_txn.len() as u64;
    assert!(
        docs_per_txn.keys().copied().eq(0..complete),
        "round {round}: complete transactions have a gap: {:?}",
        docs_per_txn.keys().collect::<Vec<_>>()
    );

    // The same through the id index, as applications look documents up.
    for txn in 0..=last_ack + LOOKAHEAD {
        let mut present = 0;
        for j in 0..DOCS_PER_TXN {
            if let Some(doc) = r.get(collection(j), &doc_id(txn, j)).expect("get") {
                assert_eq!(doc, expected(txn, j), "round {round}: content of t{txn}-{j}");
                present += 1;
            }
        }
        if txn <= last_ack {
            assert_eq!(
                present, DOCS_PER_TXN,
                "round {round}: acknowledged transaction {txn} was lost ({present} of {DOCS_PER_TXN} documents)"
            );
        }
        assert!(
            present == 0 || present == DOCS_PER_TXN,
            "round {round}: transaction {txn} is partly visible by id ({present} of {DOCS_PER_TXN})"
        );
        assert_eq!(
            present == DOCS_PER_TXN,
            txn < complete,
            "round {round}: the id index and the documents table disagree on transaction {txn}"
        );
    }

    assert_eq!(
        counter(&r),
        Some(complete as i64),
        "round {round}: the counter counts the complete transactions"
    );

    // Sync reads the change log and the version vector: both must have
    // committed with the documents, neither ahead nor behind.
    let batch = r
        .changes_since(&VersionVector::new(), None, usize::MAX)
        .expect("changes");
    assert!(batch.resume.is_none());
    assert_eq!(
        batch.changes.len() as u64,
        complete * DOCS_PER_TXN + 1,
        "round {round}: one change per document (and the counter)"
    );
    let counter_doc = r
        .get_doc(COUNTER_COLLECTION, &Value::from(COUNTER_ID))
        .expect("get")
        .expect("counter");
    // The counter's increment is the last write of every transaction.
    assert_eq!(
        batch.upto, counter_doc.vv,
        "round {round}: the version vector ends at the newest committed write"
    );
    assert_eq!(
        batch.upto.get(store.peer()),
        store.clock_high_water(),
        "round {round}: the clock resumes from the newest committed write"
    );
    complete
}

#[test]
fn sigkill_loses_no_acknowledged_commit_and_shows_no_partial_one() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let store_dir = dir.path().join("store");
    let mut complete = 0;
    for (round, kill_at) in KILL_AT.into_iter().enumerate() {
        let round_started = Instant::now();
        let stderr_path = dir.path().join(format!("child-{round}.stderr"));
        let acked = crash_round(&store_dir, stderr_path, round, kill_at);
        assert_eq!(
            acked.first, complete,
            "round {round}: the child resumes right after the last complete transaction"
        );
        let now_complete = check_store(&store_dir, acked.last, round);
        // The transaction in flight at the kill either committed whole (and was
        // not yet acknowledged) or left no trace; there can be no other.
        assert!(
            now_complete == acked.last + 1 || now_complete == acked.last + 2,
            "round {round}: {now_complete} complete transactions after acknowledgements {}..={}",
            acked.first,
            acked.last
        );
        eprintln!(
            "round {round}: {} commits acknowledged ({}..={}), killed {kill_at:?} {:?} after spawn, {} complete on disk, round took {:?}",
            acked.count,
            acked.first,
            acked.last,
            acked.killed_at,
            now_complete,
            round_started.elapsed()
        );
        complete = now_complete;
    }
    eprintln!("{} crash rounds in {:?}", KILL_AT.len(), started.elapsed());
}

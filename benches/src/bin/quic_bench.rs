//! Sync over real loopback QUIC between separate processes: initial sync of
//! the benchmark data set to a fresh peer, commit-to-remote-observer
//! latency, sustained field-change throughput across one link, and the
//! extra latency of a second hop on a chain A—B—C.
//!
//! Peer A runs in this process; B and C are this binary re-executed with
//! the hidden `--peer-process` flag, each a `Peer` on LMDB in a temporary
//! directory with a `QuicTransport` on 127.0.0.1, driven by lines on its
//! stdin and reporting on its stdout (see [`child`]). Times that cross
//! processes are wall-clock nanoseconds (both ends on one machine).
//! Every figure is printed with the target and a baseline measured
//! in the same run (a local insert, a local observer).
//!
//! `cargo run --release -p rhizome-benches --bin quic_bench [-- --quick] [--sync-only]`

use rhizome_actors::{Peer, PeerConfig};
use rhizome_benches::{dataset, print_table};
use rhizome_transports::quic::{AppKey, QuicConfig, QuicTransport};
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// The hidden flag that makes this binary a remote peer.
const CHILD_FLAG: &str = "--peer-process";
/// The app key every peer of the bench shares.
const APP_KEY: &[u8] = b"rhizome quic_bench app key";
/// Longest wait for any one step, in seconds (a stuck run fails, not hangs).
const STEP_TIMEOUT_S: u64 = 600;
/// Documents per transaction when loading the data set.
const INSERT_BATCH: usize = 1_000;
/// Lines kept queued from a child's stdout.
const LINE_QUEUE: usize = 4_096;

/// The sizes of one run.
struct Sizes {
    docs: u64,
    latency_updates: usize,
    latency_warmup: usize,
    tp_docs: usize,
    tp_rounds: usize,
}

impl Sizes {
    fn full() -> Sizes {
        Sizes {
            docs: 100_000,
            latency_updates: 1_000,
            latency_warmup: 50,
            tp_docs: 1_000,
            tp_rounds: 200,
        }
    }
    fn quick() -> Sizes {
        Sizes {
            docs: 10_000,
            latency_updates: 200,
            latency_warmup: 20,
            tp_docs: 1_000,
            tp_rounds: 20,
        }
    }
}

type Res<T> = Result<T, String>;

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// CPU time this process has used (all threads, user and system), in ns.
fn cpu_ns() -> u64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0;
    }
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
    ns(usage.ru_utime) + ns(usage.ru_stime)
}

fn quic_config(connect: Vec<SocketAddr>) -> Res<QuicConfig> {
    let mut c = QuicConfig::new(AppKey::new(APP_KEY).map_err(|e| e.to_string())?);
    c.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.connect = connect;
    Ok(c)
}

async fn open_peer(dir: &Path, collections: &[&str]) -> Res<Peer> {
    let peer = Peer::open(PeerConfig::directory(dir))
        .await
        .map_err(|e| format!("open {}: {e}", dir.display()))?;
    for c in collections {
        peer.sync()
            .subscribe(&format!("SELECT * FROM {c}"), json!({}))
            .await
            .map_err(|e| format!("subscribe {c}: {e}"))?;
    }
    Ok(peer)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let out = if args.first().map(String::as_str) == Some(CHILD_FLAG) {
        runtime.block_on(child::run(&args[1..]))
    } else {
        let quick = args.iter().any(|a| a == "--quick");
        let sync_only = args.iter().any(|a| a == "--sync-only");
        if let Some(bad) = args.iter().find(|a| *a != "--quick" && *a != "--sync-only") {
            eprintln!("unknown argument {bad:?}; usage: quic_bench [--quick] [--sync-only]");
            std::process::exit(2);
        }
        let sizes = if quick { Sizes::quick() } else { Sizes::full() };
        runtime.block_on(driver(sizes, sync_only))
    };
    if let Err(e) = out {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// A peer process: its stdin (commands) and a queue of its stdout lines.
/// Dropping it kills the process if it has not exited.
struct Remote {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    addr: SocketAddr,
    start_ns: u64,
    start_cpu_ns: u64,
}

impl Remote {
    /// Starts a peer process on `dir` subscribed to `collections`, dialling
    /// `connect`; returns once its observers are set (`observe`) and its
    /// transport is listening.
    async fn spawn(
        name: &'static str,
        dir: &Path,
        collections: &str,
        connect: Option<SocketAddr>,
        setup: &[String],
    ) -> Res<Remote> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(exe);
        cmd.arg(CHILD_FLAG).arg(dir).arg(collections);
        if let Some(a) = connect {
            cmd.arg(a.to_string());
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn {name}: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = mpsc::channel(LINE_QUEUE);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.blocking_send(line).is_err() {
                    return;
                }
            }
        });
        let mut remote = Remote {
            name,
            stdin: child.stdin.take(),
            child,
            lines,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            start_ns: 0,
            start_cpu_ns: 0,
        };
        for cmd in setup {
            remote.send(cmd)?;
        }
        remote.send("start")?;
        let line = remote.expect("listening").await?;
        let mut words = line.split_whitespace().skip(1);
        remote.addr = words
            .next()
            .and_then(|a| a.parse().ok())
            .ok_or(format!("{name}: bad line {line:?}"))?;
        remote.start_ns = words
            .next()
            .and_then(|a| a.parse().ok())
            .ok_or(format!("{name}: bad line {line:?}"))?;
        remote.start_cpu_ns = words
            .next()
            .and_then(|a| a.parse().ok())
            .ok_or(format!("{name}: bad line {line:?}"))?;
        Ok(remote)
    }

    fn send(&mut self, line: &str) -> Res<()> {
        let stdin = self.stdin.as_mut().ok_or("stdin closed")?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("{}: write: {e}", self.name))
    }

    /// The next line starting with `prefix` (others are skipped).
    async fn expect(&mut self, prefix: &str) -> Res<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(STEP_TIMEOUT_S);
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .map_err(|_| format!("{}: no {prefix:?} line within {STEP_TIMEOUT_S} s", self.name))?
                .ok_or(format!("{}: exited before {prefix:?}", self.name))?;
            if line.split_whitespace().next() == Some(prefix) {
                return Ok(line);
            }
        }
    }

    /// Waits for `rows NAME NS CPU_NS` and returns NS (wall clock) and
    /// CPU_NS (the process's CPU time then).
    async fn rows_at(&mut self, name: &str) -> Res<(u64, u64)> {
        let line = self.expect("rows").await?;
        let w: Vec<&str> = line.split_whitespace().collect();
        let bad = || format!("{}: expected rows {name} NS CPU_NS, got {line:?}", self.name);
        match w.as_slice() {
            [_, n, ns, cpu] if *n == name => Ok((ns.parse().map_err(|_| bad())?, cpu.parse().map_err(|_| bad())?)),
            _ => Err(bad()),
        }
    }

    /// Waits for `lat V NS` with V = `value` and returns NS.
    async fn latency_of(&mut self, value: u64) -> Res<u64> {
        loop {
            let line = self.expect("lat").await?;
            let w: Vec<&str> = line.split_whitespace().collect();
            if let [_, v, ns] = w.as_slice() {
                if v.parse() == Ok(value) {
                    return ns.parse().map_err(|_| format!("bad line {line:?}"));
                }
            }
        }
    }

    /// Ends the process: end of input, then a kill if it lingers.
    async fn stop(mut self) {
        self.stdin = None;
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The peer of this process, with its transport.
struct Local {
    peer: Peer,
    transport: QuicTransport,
}

impl Local {
    async fn close(self) {
        self.transport.close().await;
        self.peer.close().await;
    }
    fn addr(&self) -> Res<SocketAddr> {
        self.transport.local_addr().map_err(|e| e.to_string())
    }
}

async fn start_local(peer: Peer) -> Res<Local> {
    let transport = QuicTransport::start(peer.clone(), quic_config(vec![])?)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Local { peer, transport })
}

/// Loads `docs` into `peer` in transactions of [`INSERT_BATCH`].
async fn insert_all(peer: &Peer, coll: &str, docs: &[serde_json::Value]) -> Res<Duration> {
    let start = Instant::now();
    for chunk in docs.chunks(INSERT_BATCH) {
        let chunk = chunk.to_vec();
        let stmt = format!("INSERT INTO {coll} DOCUMENTS (:d)");
        peer.store()
            .transaction(move |tx| {
                for d in chunk {
                    tx.execute(&stmt, json!({ "d": d }))?;
                }
                Ok(())
            })
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(start.elapsed())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn us(ns: u64) -> String {
    format!("{:.0} µs", ns as f64 / 1e3)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn verdict(ok: bool) -> String {
    if ok { "met" } else { "MISSED" }.to_string()
}

async fn driver(sizes: Sizes, sync_only: bool) -> Res<()> {
    let root = tempfile::tempdir().map_err(|e| e.to_string())?;
    let dir = |n: &str| -> PathBuf { root.path().join(n) };
    println!(
        "quic_bench: {} documents, {} latency updates, {} x {} field changes; peers in separate processes on loopback QUIC, LMDB, durable commits",
        sizes.docs, sizes.latency_updates, sizes.tp_rounds, sizes.tp_docs
    );

    // 1. Initial sync. Baseline: the same documents inserted locally into
    // a fresh peer (A itself).
    let docs = dataset(sizes.docs);
    let json_bytes: usize = docs.iter().map(|d| d.to_string().len()).sum();
    let a = open_peer(&dir("a"), &["t", "lat", "tp"]).await?;
    let insert_cpu_ns = cpu_ns();
    let local_insert = insert_all(&a, "t", &docs).await?;
    let insert_cpu = Duration::from_nanos(cpu_ns().saturating_sub(insert_cpu_ns));
    drop(docs);
    let a = start_local(a).await?;
    let setup = [format!("observe sync {} SELECT * FROM t", sizes.docs)];
    let a_cpu_ns = cpu_ns();
    let mut b = Remote::spawn("B", &dir("b"), "t,lat,tp", Some(a.addr()?), &setup).await?;
    let (synced_ns, b_cpu_ns) = b.rows_at("sync").await?;
    let a_cpu = Duration::from_nanos(cpu_ns().saturating_sub(a_cpu_ns));
    let b_cpu = Duration::from_nanos(b_cpu_ns.saturating_sub(b.start_cpu_ns));
    let sync = Duration::from_nanos(synced_ns.saturating_sub(b.start_ns));
    let ratio = sync.as_secs_f64() / local_insert.as_secs_f64();
    print_table(
        &format!(
            "1. initial sync of {} documents ({} B of JSON each on average) to a fresh peer",
            sizes.docs,
            json_bytes / sizes.docs.max(1) as usize
        ),
        &[
            "measure",
            "time",
            "docs/s",
            "vs local insert",
            "CPU time",
            "target",
            "verdict",
        ],
        &[
            vec![
                "local insert into a fresh peer (baseline)".into(),
                ms(local_insert),
                format!("{:.0}", sizes.docs as f64 / local_insert.as_secs_f64()),
                "1.00x".into(),
                ms(insert_cpu),
                String::new(),
                String::new(),
            ],
            vec![
                "sync A -> fresh B until B's observer has all".into(),
                ms(sync),
                format!("{:.0}", sizes.docs as f64 / sync.as_secs_f64()),
                format!("{ratio:.2}x"),
                format!("A {}, B {}", ms(a_cpu), ms(b_cpu)),
                "< 3 s (100k)".into(),
                verdict(sync < Duration::from_secs(3) * (sizes.docs as u32).div_ceil(100_000)),
            ],
        ],
    );

    if sync_only {
        b.stop().await;
        a.close().await;
        return Ok(());
    }

    // 2. Latency A -> B, with a local observer as the baseline.
    let local_lat = local_latency(&a.peer, &sizes).await?;
    let (b_lat, _) = remote_latency(&a.peer, &mut b, None, &sizes, "x").await?;
    print_latency(
        "2. latency: commit on A -> B's observer, sequential single-field updates",
        &[
            ("A's own observer (baseline)", &local_lat),
            ("B's observer (1 hop)", &b_lat),
        ],
        &local_lat,
    );

    // 3. Throughput across one link.
    throughput(&a.peer, &mut b, &sizes).await?;

    // 4. Chain A—B—C: C dials B only.
    let setup = ["latency SELECT * FROM lat".to_string()];
    let mut c = Remote::spawn("C", &dir("c"), "lat", Some(b.addr), &setup).await?;
    // C catches up with the latency document before the run.
    let (b_lat2, c_lat) = remote_latency(&a.peer, &mut b, Some(&mut c), &sizes, "y").await?;
    let c_lat = c_lat.unwrap_or_default();
    print_latency(
        "4. chain A—B—C (A and C not linked): commit on A -> observers",
        &[("B (1 hop)", &b_lat2), ("C (2 hops)", &c_lat)],
        &local_lat,
    );
    let extra = |p: f64| percentile(&c_lat, p) as i64 - percentile(&b_lat2, p) as i64;
    println!(
        "extra latency of the second hop: p50 {:.0} µs, p99 {:.0} µs (target p50 < 2 ms per hop: {})",
        extra(0.5) as f64 / 1e3,
        extra(0.99) as f64 / 1e3,
        verdict(extra(0.5) < 2_000_000)
    );

    c.stop().await;
    b.stop().await;
    a.close().await;
    Ok(())
}

/// Commit on `peer` -> its own observer, the same updates as the remote run.
async fn local_latency(peer: &Peer, sizes: &Sizes) -> Res<Vec<u64>> {
    // A collection no remote subscribes to: only A's own observer works.
    exec(peer, "INSERT INTO loc DOCUMENTS ({'_id': 'local', 'v': 0})").await?;
    let mut live = peer
        .store()
        .observe("SELECT * FROM loc WHERE _id = 'local'", json!({}))
        .await
        .map_err(|e| e.to_string())?;
    let _ = live.next().await;
    let mut out = Vec::new();
    for i in 0..sizes.latency_warmup + sizes.latency_updates {
        let v = now_ns();
        update_v(peer, "loc", "local", v).await?;
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(STEP_TIMEOUT_S), live.next())
                .await
                .map_err(|_| "local observer timed out")?
                .ok_or("observer ended")?
                .map_err(|e| e.to_string())?;
            let seen = ev.items.first().and_then(|d| d.to_json()["v"].as_u64());
            if seen == Some(v) {
                break;
            }
        }
        if i >= sizes.latency_warmup {
            out.push(now_ns() - v);
        }
    }
    out.sort_unstable();
    Ok(out)
}

async fn exec(peer: &Peer, dql: &str) -> Res<()> {
    peer.store()
        .execute(dql, json!({}))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn update_v(peer: &Peer, coll: &str, id: &str, v: u64) -> Res<()> {
    peer.store()
        .execute(
            &format!("UPDATE {coll} SET v = :v WHERE _id = :id"),
            json!({"v": v, "id": id}),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Sequential updates of one field of document `id` on A, each sent once
/// B (and C when given) reported the previous one; returns the sorted
/// latencies seen by B and C.
async fn remote_latency(
    a: &Peer,
    b: &mut Remote,
    mut c: Option<&mut Remote>,
    sizes: &Sizes,
    id: &str,
) -> Res<(Vec<u64>, Option<Vec<u64>>)> {
    exec(a, &format!("INSERT INTO lat DOCUMENTS ({{'_id': '{id}', 'v': 0}})")).await?;
    if c.is_none() {
        b.send("latency SELECT * FROM lat")?;
    }
    let (mut on_b, mut on_c) = (Vec::new(), Vec::new());
    for i in 0..sizes.latency_warmup + sizes.latency_updates {
        let v = now_ns();
        update_v(a, "lat", id, v).await?;
        let lb = b.latency_of(v).await?;
        let lc = match c.as_deref_mut() {
            Some(c) => Some(c.latency_of(v).await?),
            None => None,
        };
        if i >= sizes.latency_warmup {
            on_b.push(lb);
            on_c.extend(lc);
        }
    }
    on_b.sort_unstable();
    on_c.sort_unstable();
    Ok((on_b, c.map(|_| on_c)))
}

fn print_latency(title: &str, rows: &[(&str, &Vec<u64>)], base: &[u64]) {
    let base50 = percentile(base, 0.5).max(1) as f64;
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|(name, l)| {
            let p50 = percentile(l, 0.5);
            vec![
                name.to_string(),
                l.len().to_string(),
                us(p50),
                us(percentile(l, 0.99)),
                us(*l.last().unwrap_or(&0)),
                format!("{:.2}x", p50 as f64 / base50),
            ]
        })
        .collect();
    print_table(
        title,
        &["observer", "updates", "p50", "p99", "max", "p50 vs local observer"],
        &table,
    );
    if let Some((_, l)) = rows.get(1).or(rows.first()) {
        let p50 = percentile(l, 0.5);
        println!("target p50 < 2 ms per hop: {}", verdict(p50 < 2_000_000));
    }
}

/// A commits `tp_rounds` transactions, each setting one field of all
/// `tp_docs` documents; timed until B's observer sees the last round.
async fn throughput(a: &Peer, b: &mut Remote, sizes: &Sizes) -> Res<()> {
    let docs: Vec<serde_json::Value> = (0..sizes.tp_docs).map(|i| json!({"_id": i, "v": 0})).collect();
    b.send(&format!("observe tp0 {} SELECT * FROM tp WHERE v = 0", sizes.tp_docs))?;
    insert_all(a, "tp", &docs).await?;
    b.rows_at("tp0").await?;
    b.send(&format!(
        "observe tpend {} SELECT * FROM tp WHERE v = {}",
        sizes.tp_docs, sizes.tp_rounds
    ))?;
    let start_ns = now_ns();
    let start = Instant::now();
    for round in 1..=sizes.tp_rounds {
        a.store()
            .execute("UPDATE tp SET v = :v", json!({ "v": round }))
            .await
            .map_err(|e| e.to_string())?;
    }
    let local = start.elapsed();
    let (end_ns, _) = b.rows_at("tpend").await?;
    let remote = Duration::from_nanos(end_ns.saturating_sub(start_ns));
    let changes = (sizes.tp_rounds * sizes.tp_docs) as f64;
    let local_rate = changes / local.as_secs_f64();
    let remote_rate = changes / remote.as_secs_f64();
    print_table(
        &format!(
            "3. throughput: {} transactions of {} single-field changes on A",
            sizes.tp_rounds, sizes.tp_docs
        ),
        &["measure", "time", "changes/s", "vs local commits", "target", "verdict"],
        &[
            vec![
                "A commits them (baseline)".into(),
                ms(local),
                format!("{local_rate:.0}"),
                "1.00x".into(),
                String::new(),
                String::new(),
            ],
            vec![
                "until B's observer has the last".into(),
                ms(remote),
                format!("{remote_rate:.0}"),
                format!("{:.2}x", remote_rate / local_rate),
                ">= 100000/s".into(),
                verdict(remote_rate >= 100_000.0),
            ],
        ],
    );
    Ok(())
}

/// The remote peer process. Arguments: `DIR COLLECTIONS [CONNECT]`.
/// Commands on stdin, one a line, set up before `start` or any time after:
/// - `observe NAME N QUERY`: prints `rows NAME NS` (wall-clock ns) once
///   the query's result first has at least N rows;
/// - `latency QUERY`: for every new value of field `v` of the result's
///   first row, prints `lat V NS` with NS = now minus V;
/// - `start`: starts the transport, prints `listening ADDR NS`.
///
/// End of input closes the peer and exits.
mod child {
    use super::*;
    use std::collections::BTreeMap;

    pub async fn run(args: &[String]) -> Res<()> {
        let [dir, colls, rest @ ..] = args else {
            return Err("usage: --peer-process DIR COLLECTIONS [CONNECT]".into());
        };
        let connect: Vec<SocketAddr> = rest
            .iter()
            .map(|a| a.parse().map_err(|e| format!("{a}: {e}")))
            .collect::<Res<_>>()?;
        let collections: Vec<&str> = colls.split(',').collect();
        let peer = open_peer(Path::new(dir), &collections).await?;
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
        // Lines go out through one writer so they never interleave.
        let writer = std::thread::spawn(move || {
            let mut out = std::io::stdout().lock();
            while let Some(line) = out_rx.blocking_recv() {
                if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                    return;
                }
            }
        });
        let (cmd_tx, mut cmds) = mpsc::channel::<String>(16);
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { return };
                if cmd_tx.blocking_send(line).is_err() {
                    return;
                }
            }
        });
        let mut transport = None;
        let mut handles = Vec::new();
        while let Some(cmd) = cmds.recv().await {
            let (verb, rest) = cmd.split_once(' ').unwrap_or((cmd.as_str(), ""));
            match verb {
                "start" => {
                    let (start_ns, start_cpu_ns) = (now_ns(), cpu_ns());
                    let t = QuicTransport::start(peer.clone(), quic_config(connect.clone())?)
                        .await
                        .map_err(|e| e.to_string())?;
                    let addr = t.local_addr().map_err(|e| e.to_string())?;
                    let _ = out_tx.send(format!("listening {addr} {start_ns} {start_cpu_ns}"));
                    transport = Some(t);
                }
                "observe" => handles.push(observe_rows(&peer, rest, out_tx.clone()).await?),
                "latency" => handles.push(observe_latency(&peer, rest, out_tx.clone()).await?),
                other => return Err(format!("unknown command {other:?}")),
            }
        }
        drop(handles);
        if let Some(t) = transport {
            t.close().await;
        }
        peer.close().await;
        drop(out_tx);
        let _ = writer.join();
        Ok(())
    }

    async fn observe_rows(
        peer: &Peer,
        args: &str,
        out: mpsc::UnboundedSender<String>,
    ) -> Res<rhizome_actors::ObserverHandle> {
        let mut w = args.splitn(3, ' ');
        let (Some(name), Some(n), Some(query)) = (w.next(), w.next(), w.next()) else {
            return Err(format!("observe NAME N QUERY, not {args:?}"));
        };
        let n: usize = n.parse().map_err(|_| format!("bad count {n:?}"))?;
        let name = name.to_string();
        let mut done = false;
        peer.store()
            .observe_with(query, json!({}), move |ev| {
                if let Ok(ev) = ev {
                    if !done && ev.items.len() >= n {
                        done = true;
                        let _ = out.send(format!("rows {name} {} {}", now_ns(), cpu_ns()));
                    }
                }
            })
            .await
            .map_err(|e| e.to_string())
    }

    async fn observe_latency(
        peer: &Peer,
        query: &str,
        out: mpsc::UnboundedSender<String>,
    ) -> Res<rhizome_actors::ObserverHandle> {
        // The value of `v` last reported, per document.
        let mut last: BTreeMap<String, u64> = BTreeMap::new();
        peer.store()
            .observe_with(query, json!({}), move |ev| {
                let Ok(ev) = ev else { return };
                let now = now_ns();
                for item in ev.items.iter() {
                    let doc = item.to_json();
                    let (Some(id), Some(v)) = (doc["_id"].as_str(), doc["v"].as_u64()) else {
                        continue;
                    };
                    if v != 0 && last.get(id) != Some(&v) && v <= now {
                        last.insert(id.to_string(), v);
                        let _ = out.send(format!("lat {v} {}", now - v));
                    }
                }
            })
            .await
            .map_err(|e| e.to_string())
    }
}

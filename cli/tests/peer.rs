//! Three `rhizome peer` processes on loopback QUIC write concurrently and
//! converge; then one stops on SIGTERM and the others on end of input, all
//! cleanly. Real processes, real sockets; every wait is bounded and the
//! children are killed by a guard if the test fails.

#![cfg(not(madsim))]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `rhizome peer` child: its stdin, its stdout lines, its stderr text.
/// Dropping it kills the process (if it still runs) and reaps it.
struct PeerProcess {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl PeerProcess {
    fn start(name: &'static str, dir: &std::path::Path, connect: &[String], subscribe: bool) -> PeerProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rhizome"));
        cmd.args(["peer", "--data"]).arg(dir.join(name)).args([
            "--listen",
            "127.0.0.1:0",
            "--app-key",
            "three peers test key",
            // Static links only: discovery could meet other runs' peers.
            "--no-mdns",
        ]);
        if subscribe {
            cmd.args(["--subscribe", "SELECT * FROM t"]);
        }
        for addr in connect {
            cmd.args(["--connect", addr]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rhizome peer");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let (err_pipe, err_text) = (child.stderr.take().expect("stderr"), stderr.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
                let mut t = err_text.lock().unwrap_or_else(|p| p.into_inner());
                t.push_str(&line);
                t.push('\n');
            }
        });
        let stdin = child.stdin.take();
        PeerProcess {
            name,
            child,
            stdin,
            lines,
            stderr,
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to the peer");
        stdin.flush().expect("flush");
    }

    /// The next stdout line satisfying `want`, within `timeout`.
    fn wait_line(&self, timeout: Duration, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if want(&line) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!("{}: no expected line in {timeout:?}", self.name),
                Err(RecvTimeoutError::Disconnected) => panic!("{}: stdout ended", self.name),
            }
        }
    }

    /// Runs a query and returns its result lines (a `.peer` line marks
    /// their end; event lines are skipped).
    fn query(&mut self, dql: &str) -> Vec<String> {
        self.send(dql);
        self.send(".peer");
        let mut rows = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).expect("a query's answer in time");
            if line.starts_with("peer ") {
                return rows;
            }
            if line.starts_with('{') {
                rows.push(line);
            }
        }
    }

    /// Waits for the process to exit by itself, within `timeout`.
    fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{} did not exit in {timeout:?}", self.name);
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let err = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
            eprintln!("--- stderr of {} ---\n{err}", self.name);
        }
    }
}

/// The address in a `listening ADDR peer ID` line.
fn listening(p: &PeerProcess) -> String {
    let line = p.wait_line(Duration::from_secs(10), |l| l.starts_with("listening "));
    line.split_whitespace().nth(1).expect("address").to_string()
}

#[test]
fn three_peer_processes_converge_on_concurrent_writes() {
    three_peers(true);
}

/// The peers subscribe only as their first statement runs, while their
/// sessions are coming up and documents flow (this once lost a peer's own
/// documents: a subscription made during the handshake never reached the
/// remote, which then vouched for writes it never sent).
#[test]
fn three_peer_processes_converge_when_subscribing_mid_session() {
    for _ in 0..8 {
        three_peers(false);
    }
}

fn three_peers(subscribe_first: bool) {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut p1 = PeerProcess::start("p1", dir.path(), &[], subscribe_first);
    let a1 = listening(&p1);
    let mut p2 = PeerProcess::start("p2", dir.path(), std::slice::from_ref(&a1), subscribe_first);
    let a2 = listening(&p2);
    let mut p3 = PeerProcess::start("p3", dir.path(), &[a1, a2], subscribe_first);
    listening(&p3);

    // Concurrent writes: own documents, and the same document from all.
    for i in 0..20 {
        for (n, p) in [(1, &mut p1), (2, &mut p2), (3, &mut p3)] {
            p.send(&format!("INSERT INTO t DOCUMENTS ({{'_id': 'p{n}-{i}', 'n': {i}}})"));
        }
    }
    for (n, p) in [(1, &mut p1), (2, &mut p2), (3, &mut p3)] {
        p.send(&format!(
            "INSERT INTO t DOCUMENTS ({{'_id': 'shared', 'from_p{n}': true}}) ON ID CONFLICT DO UPDATE"
        ));
    }

    let deadline = Instant::now() + Duration::from_secs(15);
    let converged = loop {
        let all = [
            p1.query("SELECT * FROM t ORDER BY _id"),
            p2.query("SELECT * FROM t ORDER BY _id"),
            p3.query("SELECT * FROM t ORDER BY _id"),
        ];
        if all[0].len() == 61 && all[0] == all[1] && all[1] == all[2] {
            break all[0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "no convergence: {} / {} / {} documents",
            all[0].len(),
            all[1].len(),
            all[2].len()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let shared = converged
        .iter()
        .find(|l| l.contains("\"shared\""))
        .expect("the shared document");
    for n in 1..=3 {
        assert!(shared.contains(&format!("\"from_p{n}\":true")), "{shared}");
    }

    // SIGTERM: p3 closes cleanly.
    let term = Command::new("kill")
        .args(["-TERM", &p3.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(term.success());
    assert!(p3.wait_exit(Duration::from_secs(10)).success());
    // End of input: p1 and p2 close cleanly.
    for p in [&mut p1, &mut p2] {
        drop(p.stdin.take());
        assert!(p.wait_exit(Duration::from_secs(10)).success());
    }
    assert!(started.elapsed() < Duration::from_secs(30));
}

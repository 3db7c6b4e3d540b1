//! A `rhizome peer` child process driven through its stdin and stdout, for
//! the multi-process tests (`peer.rs` on loopback, `netns.rs` in network
//! namespaces). Every wait is bounded, and dropping a `PeerProcess` kills
//! and reaps the child, so a failing test leaves no process behind; its
//! event lines and stderr are printed when the test panics.

// Each test binary compiles this module and uses a part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a statement's answer may take.
const ANSWER: Duration = Duration::from_secs(10);

/// A `rhizome peer` child: its stdin, its stdout lines, and a log of its
/// event lines and stderr for the report of a failed test.
pub struct PeerProcess {
    pub name: String,
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    log: Arc<Mutex<String>>,
}

fn append(log: &Mutex<String>, line: &str) {
    let mut t = log.lock().unwrap_or_else(|p| p.into_inner());
    t.push_str(line);
    t.push('\n');
}

impl PeerProcess {
    /// Spawns `cmd` (a `rhizome peer` command line) with piped stdio.
    pub fn spawn(name: &str, mut cmd: Command) -> PeerProcess {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rhizome peer");
        let (tx, lines) = mpsc::channel();
        let log = Arc::new(Mutex::new(String::new()));
        let (stdout, events) = (child.stdout.take().expect("stdout"), log.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // Link and discovery events go with stderr into the report
                // of a failed test.
                if !line.starts_with('{') && !line.starts_with("peer ") {
                    append(&events, &line);
                }
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let (err_pipe, err_text) = (child.stderr.take().expect("stderr"), log.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
                append(&err_text, &line);
            }
        });
        let stdin = child.stdin.take();
        PeerProcess {
            name: name.to_string(),
            child,
            stdin,
            lines,
            log,
        }
    }

    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to the peer");
        stdin.flush().expect("flush");
    }

    /// The next stdout line satisfying `want`, within `timeout`.
    pub fn wait_line(&self, timeout: Duration, want: impl Fn(&str) -> bool) -> String {
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

    /// Sends `dql` and returns the lines it printed up to the end marker
    /// (a `.peer` line), keeping those `keep` accepts.
    pub fn ask(&mut self, dql: &str, keep: impl Fn(&str) -> bool) -> Vec<String> {
        self.send(dql);
        self.send(".peer");
        let mut rows = Vec::new();
        let deadline = Instant::now() + ANSWER;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).expect("an answer in time");
            if line.starts_with("peer ") {
                return rows;
            }
            if keep(&line) {
                rows.push(line);
            }
        }
    }

    /// The documents a query returns (acknowledgements of earlier inserts
    /// may come first; they are left out).
    pub fn query(&mut self, dql: &str) -> Vec<String> {
        self.ask(dql, |l| l.starts_with('{') && !l.starts_with("{\"mutated\""))
    }

    /// The first `listening ADDR peer ID` line, within `timeout`.
    pub fn listening(&self, timeout: Duration) -> String {
        self.wait_line(timeout, |l| l.starts_with("listening "))
    }

    /// Waits for the process to exit by itself, within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{} did not exit in {timeout:?}", self.name);
    }

    /// Closes its stdin and waits for it to exit cleanly.
    pub fn finish(&mut self) {
        drop(self.stdin.take());
        let status = self.wait_exit(Duration::from_secs(10));
        assert!(status.success(), "{} exited with {status}", self.name);
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
            eprintln!("--- events and stderr of {} ---\n{log}", self.name);
        }
    }
}

/// Polls every peer's documents of `t` (every 250 ms, for at most
/// `within`) until all hold the same `want` documents; returns them.
/// Panics with each peer's count when they do not.
pub fn converge(peers: &mut [&mut PeerProcess], want: usize, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let all: Vec<Vec<String>> = peers
            .iter_mut()
            .map(|p| p.query("SELECT * FROM t ORDER BY _id"))
            .collect();
        if all[0].len() == want && all.iter().all(|d| *d == all[0]) {
            return all[0].clone();
        }
        let counts: Vec<usize> = all.iter().map(Vec::len).collect();
        assert!(
            Instant::now() < deadline,
            "no convergence on {want} documents: {counts:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

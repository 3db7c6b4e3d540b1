//! `rhizome demo` end to end, as a newcomer runs it: four peer processes,
//! links cut and restored through relays, and the final check. The test
//! asserts the exit code and the convergence line; the demo bounds its own
//! waits, and the test kills it if it still runs after a generous bound
//! (its peers then exit on the end of their input).

#![cfg(not(madsim))]

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Far above the demo's own worst case (every wait timing out).
const BOUND: Duration = Duration::from_secs(240);

/// Kills the demo if the test fails while it runs.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `rhizome ARGS` to its end within [`BOUND`]; (success, stdout, stderr).
fn run(args: &[&str]) -> (bool, String, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_rhizome"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rhizome");
    let mut guard = Guard(child);
    let mut pipes = (
        guard.0.stdout.take().expect("stdout"),
        guard.0.stderr.take().expect("stderr"),
    );
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipes.0.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipes.1.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + BOUND;
    let status = loop {
        if let Some(status) = guard.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "rhizome {args:?} still runs after {BOUND:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (out.join().expect("stdout"), err.join().expect("stderr"));
    (status.success(), out, err)
}

#[test]
fn the_demo_converges() {
    let (ok, out, err) = run(&["demo"]);
    assert!(ok, "rhizome demo failed\n--- stdout ---\n{out}\n--- stderr ---\n{err}");
    assert!(out.contains("every peer converged"), "{out}");
    // The script showed what it promises: links cut and healed, observers.
    assert!(out.contains("(2 of 4 up)") && out.contains("(4 of 4 up)"), "{out}");
    assert!(out.contains("observes"), "{out}");
}

#[test]
fn the_local_demo_converges() {
    let (ok, out, err) = run(&["demo", "--local"]);
    assert!(
        ok,
        "rhizome demo --local failed\n--- stdout ---\n{out}\n--- stderr ---\n{err}"
    );
    assert!(out.contains("every peer converged"), "{out}");
}

#[test]
fn the_demo_refuses_a_data_folder_in_use() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("something"), b"x").expect("write");
    let path = dir.path().to_str().expect("utf-8 path");
    let (ok, _, err) = run(&["demo", "--data", path]);
    assert!(!ok);
    assert!(err.contains("is not empty"), "{err}");
}

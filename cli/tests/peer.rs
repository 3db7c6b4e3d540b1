//! Three `rhizome peer` processes on loopback QUIC write concurrently and
//! converge; then one stops on SIGTERM and the others on end of input, all
//! cleanly. Real processes, real sockets; every wait is bounded and the
//! children are killed by a guard if the test fails.

#![cfg(not(madsim))]

mod common;

use common::{converge, PeerProcess};
use std::process::Command;
use std::time::{Duration, Instant};

/// Starts `rhizome peer` on loopback with static links only.
fn start(name: &str, dir: &std::path::Path, connect: &[String], subscribe: bool) -> PeerProcess {
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
    PeerProcess::spawn(name, cmd)
}

/// The address in a `listening ADDR peer ID` line.
fn listening(p: &PeerProcess) -> String {
    let line = p.listening(Duration::from_secs(10));
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
    let mut p1 = start("p1", dir.path(), &[], subscribe_first);
    let a1 = listening(&p1);
    let mut p2 = start("p2", dir.path(), std::slice::from_ref(&a1), subscribe_first);
    let a2 = listening(&p2);
    let mut p3 = start("p3", dir.path(), &[a1, a2], subscribe_first);
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

    let converged = converge(&mut [&mut p1, &mut p2, &mut p3], 61, Duration::from_secs(15));
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
        p.finish();
    }
    assert!(started.elapsed() < Duration::from_secs(30));
}

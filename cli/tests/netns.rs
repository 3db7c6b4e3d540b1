//! `rhizome peer` processes in Linux network namespaces, linked by veth
//! pairs that carry only IPv6 link-local addresses: the shape of a
//! peer-to-peer Wi-Fi link (AWDL, Wi-Fi Direct), found by mDNS on the
//! interface and dialled at link-local addresses with the interface scope.
//!
//! - a chain A—B—C where A and C cannot reach each other converges
//!   through B (B runs a link on each of its two interfaces);
//! - cutting B's link to C (`ip link set ... down`) while both ends write,
//!   then bringing it back, heals;
//! - a peer killed with SIGKILL and restarted on the same data keeps every
//!   write it acknowledged, and converges;
//! - two peers with no `--connect` find each other by mDNS on loopback
//!   (inside a namespace, so nothing else on the machine interferes).
//!
//! Needs root and iproute2 (`ip`); without them each test prints why and
//! passes without running. Every namespace is uniquely named; a guard
//! kills the peers and deletes the namespaces (and with them the veths)
//! even when a test fails, and every wait is bounded.

#![cfg(not(madsim))]

mod common;

use common::{converge, PeerProcess};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long peers get to converge, each time they must.
const CONVERGE: Duration = Duration::from_secs(40);

/// Why these tests cannot run here, if they cannot.
fn skip_reason() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    if euid != "0" {
        return Some(format!("not root (effective uid {euid})"));
    }
    match Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!("`ip -V` failed: {}", String::from_utf8_lossy(&out.stderr))),
        Err(e) => Some(format!("iproute2's `ip` is missing: {e}")),
    }
}

macro_rules! require_netns {
    () => {
        if let Some(reason) = skip_reason() {
            eprintln!("SKIPPED {}: {reason}", module_path!());
            return;
        }
    };
}

/// Runs `ip ARGS`; panics with its stderr if it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Uniquely named network namespaces; dropping it kills what runs in
/// them and deletes them (their veths go with them).
struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    /// Namespaces for `roles` (short labels), named after this process and
    /// a counter so parallel tests and runs never clash.
    fn new(roles: &[&str]) -> Namespaces {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut ns = Namespaces { names: Vec::new() };
        for role in roles {
            let name = format!("rhz-{}-{n}-{role}", std::process::id());
            ip(&["netns", "add", &name]);
            ns.names.push(name.clone());
            ip(&["-n", &name, "link", "set", "lo", "up"]);
        }
        ns
    }

    fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// A veth pair between namespaces `a` and `b` with interfaces `if_a`
    /// and `if_b`, each with only the IPv6 link-local address the kernel
    /// makes from its MAC address, as a peer-to-peer Wi-Fi interface has:
    /// it goes when the link goes down and comes back with it (duplicate
    /// address detection off, so it is usable at once).
    fn veth(&self, (a, if_a): (usize, &str), (b, if_b): (usize, &str)) {
        let (na, nb) = (self.name(a), self.name(b));
        ip(&[
            "link", "add", if_a, "netns", na, "type", "veth", "peer", "name", if_b, "netns", nb,
        ]);
        for (ns, ifname) in [(na, if_a), (nb, if_b)] {
            let no_dad = format!("echo 0 > /proc/sys/net/ipv6/conf/{ifname}/accept_dad");
            let status = Command::new("ip")
                .args(["netns", "exec", ns, "sh", "-c", &no_dad])
                .status()
                .expect("run sh");
            assert!(status.success(), "accept_dad on {ifname}");
            ip(&["-n", ns, "link", "set", ifname, "up"]);
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            // Stragglers (the peers' guards normally got them first).
            if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Starts `rhizome peer` in namespace `netns`, subscribed to `t`.
fn start(name: &str, netns: &str, dir: &std::path::Path, args: &[&str]) -> PeerProcess {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns, env!("CARGO_BIN_EXE_rhizome"), "peer", "--data"])
        .arg(dir.join(name))
        .args([
            "--app-key",
            "netns test key, not a secret",
            "--subscribe",
            "SELECT * FROM t",
        ])
        .args(args);
    PeerProcess::spawn(name, cmd)
}

/// The peer ids it is linked with and the link kinds, from `.presence`.
fn presence(p: &mut PeerProcess) -> Vec<String> {
    p.ask(".presence", |l| l.starts_with("presence "))
}

/// The peer id from its first `listening` line.
fn peer_id(p: &PeerProcess) -> String {
    let line = p.listening(Duration::from_secs(20));
    line.split_whitespace().nth(3).expect("peer id").to_string()
}

/// Inserts documents `{prefix}-{i}` for `i` in `range`.
fn write(p: &mut PeerProcess, prefix: &str, range: std::ops::Range<u32>) {
    for i in range {
        p.send(&format!(
            "INSERT INTO t DOCUMENTS ({{'_id': '{prefix}-{i:03}', 'n': {i}}})"
        ));
    }
}

/// The chain: namespaces A, B, C; veths A:xa—B:xba and B:xbc—C:xc.
fn chain() -> Namespaces {
    let ns = Namespaces::new(&["a", "b", "c"]);
    ns.veth((0, "xa"), (1, "xba"));
    ns.veth((1, "xbc"), (2, "xc"));
    ns
}

fn start_chain(ns: &Namespaces, dir: &std::path::Path) -> [PeerProcess; 3] {
    let b = start("b", ns.name(1), dir, &["--interface", "xba", "--interface", "xbc"]);
    let a = start("a", ns.name(0), dir, &["--interface", "xa"]);
    let c = start("c", ns.name(2), dir, &["--interface", "xc"]);
    [a, b, c]
}

/// A and C write; they never meet, yet converge through B, over links of
/// the peer-to-peer Wi-Fi kind found by mDNS on each interface.
#[test]
fn chain_of_link_local_links_converges_through_the_middle() {
    require_netns!();
    let started = Instant::now();
    let ns = chain();
    let dir = tempfile::tempdir().expect("temp dir");
    let [mut a, mut b, mut c] = start_chain(&ns, dir.path());
    let (ida, idb, idc) = (peer_id(&a), peer_id(&b), peer_id(&c));
    write(&mut a, "a", 0..20);
    write(&mut c, "c", 0..20);
    write(&mut b, "b", 0..1);
    converge(&mut [&mut a, &mut b, &mut c], 41, CONVERGE);

    // A and C are not linked: each sees only B, over a p2p Wi-Fi link.
    for (p, only) in [(&mut a, &idb), (&mut c, &idb)] {
        let seen = presence(p);
        assert_eq!(seen, [format!("presence {only} p2p-wifi")], "{}", p.name);
    }
    let mut seen_by_b = presence(&mut b);
    seen_by_b.sort();
    let mut want = vec![format!("presence {ida} p2p-wifi"), format!("presence {idc} p2p-wifi")];
    want.sort();
    assert_eq!(seen_by_b, want);
    for p in [&mut a, &mut b, &mut c] {
        p.finish();
    }
    eprintln!("chain converged in {:?}", started.elapsed());
}

/// B's link to C goes down while A and C write, and comes back: all
/// converge.
#[test]
fn cut_link_heals_when_it_comes_back() {
    require_netns!();
    let started = Instant::now();
    let ns = chain();
    let dir = tempfile::tempdir().expect("temp dir");
    let [mut a, mut b, mut c] = start_chain(&ns, dir.path());
    write(&mut a, "a", 0..5);
    write(&mut c, "c", 0..5);
    converge(&mut [&mut a, &mut b, &mut c], 10, CONVERGE);

    ip(&["-n", ns.name(1), "link", "set", "xbc", "down"]);
    write(&mut a, "a", 5..25);
    write(&mut c, "c", 5..25);
    // A and B still reach each other; C is cut off.
    converge(&mut [&mut a, &mut b], 30, CONVERGE);
    let c_alone = c.query("SELECT * FROM t");
    assert_eq!(
        c_alone.len(),
        30,
        "C, cut off, has its own and what it had: {c_alone:?}"
    );
    std::thread::sleep(Duration::from_secs(2));
    ip(&["-n", ns.name(1), "link", "set", "xbc", "up"]);
    converge(&mut [&mut a, &mut b, &mut c], 50, CONVERGE);
    for p in [&mut a, &mut b, &mut c] {
        p.finish();
    }
    eprintln!("cut and healed in {:?}", started.elapsed());
}

/// C is killed with SIGKILL right after its inserts are acknowledged;
/// restarted alone on the same data it has them all, and restarted on
/// the link it converges with A and B.
#[test]
fn peer_killed_and_restarted_keeps_what_it_acknowledged() {
    require_netns!();
    let started = Instant::now();
    let ns = chain();
    let dir = tempfile::tempdir().expect("temp dir");
    let [mut a, mut b, mut c] = start_chain(&ns, dir.path());
    write(&mut a, "a", 0..10);
    write(&mut c, "c", 0..20);
    let mut acked = Vec::new();
    while acked.len() < 20 {
        let line = c.wait_line(Duration::from_secs(10), |l| l.starts_with("{\"mutated\""));
        acked.push(line);
    }
    // More writes in flight as it dies: those need not survive.
    write(&mut c, "c", 20..40);
    c.kill();

    let mut alone = start("c", ns.name(2), dir.path(), &["--no-mdns"]);
    let kept: Vec<String> = alone
        .query("SELECT * FROM t ORDER BY _id")
        .into_iter()
        .filter(|d| d.contains("\"c-"))
        .collect();
    for i in 0..20 {
        let id = format!("\"c-{i:03}\"");
        assert!(
            kept.iter().any(|d| d.contains(&id)),
            "acknowledged {id} lost: kept {kept:?}"
        );
    }
    alone.finish();
    drop(alone);

    let mut c = start("c", ns.name(2), dir.path(), &["--interface", "xc"]);
    converge(&mut [&mut a, &mut b, &mut c], 10 + kept.len(), CONVERGE);
    for p in [&mut a, &mut b, &mut c] {
        p.finish();
    }
    eprintln!("killed, restarted and converged in {:?}", started.elapsed());
}

/// Two peers with no `--connect` find each other by mDNS on loopback (in a
/// namespace of their own, where `lo` is the only interface).
#[test]
fn peers_find_each_other_by_mdns_on_loopback() {
    require_netns!();
    let started = Instant::now();
    let ns = Namespaces::new(&["lo"]);
    ip(&["-n", ns.name(0), "link", "set", "lo", "multicast", "on"]);
    let out = Command::new("ip")
        .args(["-n", ns.name(0), "link", "show", "lo"])
        .output()
        .expect("ip link show");
    if !String::from_utf8_lossy(&out.stdout).contains("MULTICAST") {
        eprintln!("SKIPPED: multicast cannot be turned on for loopback here");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut p = start("p", ns.name(0), dir.path(), &["--listen", "127.0.0.1:0"]);
    let mut q = start("q", ns.name(0), dir.path(), &["--listen", "127.0.0.1:0"]);
    let (idp, idq) = (peer_id(&p), peer_id(&q));
    write(&mut p, "p", 0..5);
    write(&mut q, "q", 0..5);
    converge(&mut [&mut p, &mut q], 10, CONVERGE);
    assert_eq!(presence(&mut p), [format!("presence {idq} lan")]);
    assert_eq!(presence(&mut q), [format!("presence {idp} lan")]);
    for x in [&mut p, &mut q] {
        x.finish();
    }
    eprintln!("found by mDNS and converged in {:?}", started.elapsed());
}

//! `rhizome demo`: the main job, live. Four peers (alice, bob, carol,
//! dave) run as separate `rhizome peer` processes on this machine, each
//! with its own LMDB store, syncing over QUIC on loopback.
//!
//! They are linked in a ring, alice ─ bob ─ carol ─ dave ─ alice, and
//! every link goes through a UDP relay inside this process (see
//! [`relay`]), so the demo can cut a link the way a radio link fails
//! (datagrams vanish) and restore it; the peers notice only through
//! QUIC's idle timeout, and redial. Not a full mesh, so changes hop.
//!
//! The script, bounded in time: everyone writes the same documents and
//! fields and a counter at once; two links are cut, splitting the ring in
//! two halves that keep writing offline (a delete on one side, an update
//! of the same document on the other); the links come back and the halves
//! merge; one link is cut again and a change travels the long way round.
//! Meanwhile it prints each peer's live observer (`--observe`) and the
//! link graph whenever it changes (from the peers' `link up`/`link down`
//! lines). At the end it asks every peer for its documents over stdin and
//! compares them, and checks that no write was lost (every note there, the
//! counter the sum of every increment): `every peer converged` and exit 0,
//! or the differences and exit 1.
//!
//! Not built under `--cfg madsim` (real processes and sockets).

/// `println!` that ignores a closed stdout (`rhizome demo | head`): the
/// demo still runs to its end, cleans up and exits with its verdict.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

mod children;
mod relay;

use children::{Children, Output};
use relay::Relay;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The peers, in ring order.
const NAMES: [&str; 4] = ["alice", "bob", "carol", "dave"];

/// Each peer's colour for the car everyone paints at once.
const COLOURS: [&str; 4] = ["red", "yellow", "silver", "black"];

/// The ring's links as (dialler, listener); link `i` joins peer `i` to the
/// next, through relay `i`.
const LINKS: [(usize, usize); 4] = [(0, 1), (1, 2), (2, 3), (3, 0)];

/// The peers' QUIC idle timeout: how long a cut link takes to be seen.
const IDLE_TIMEOUT_MS: u64 = 2_000;

/// Longest wait for links to come up or go down.
const LINK_WAIT: Duration = Duration::from_secs(12);

/// Longest wait for the peers to agree at a step.
const CONVERGE_WAIT: Duration = Duration::from_secs(15);

/// Longest wait for the answers to statements sent to the peers.
const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// Longest wait for the peers to exit after their input ends.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// Options of `rhizome demo`: the same `[--data DIR]` as `demo --local`.
pub use crate::local_demo::Options;

/// Why the demo could not run to its end.
#[derive(Debug)]
enum DemoError {
    /// Setting up (folders, sockets, processes) failed.
    Io(&'static str, std::io::Error),
    /// `--data DIR` holds something already (the demo's checks count
    /// every write, so it starts from empty stores).
    NotEmpty(PathBuf),
    /// A peer process ended before the demo did.
    PeerExited(&'static str),
    /// A peer did not answer its statements in time.
    NoAnswer(&'static str),
    /// A peer printed something that is not JSON where a document was due.
    BadOutput(&'static str, String),
    /// Ctrl-C or SIGTERM.
    Interrupted,
}

impl fmt::Display for DemoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DemoError::Io(what, e) => write!(f, "{what}: {e}"),
            DemoError::NotEmpty(dir) => write!(f, "{} is not empty (the demo starts from empty stores)", dir.display()),
            DemoError::PeerExited(name) => write!(f, "{name} exited before the end of the demo"),
            DemoError::NoAnswer(name) => write!(f, "{name} did not answer within {ANSWER_WAIT:?}"),
            DemoError::BadOutput(name, line) => write!(f, "{name} printed {line:?} where a document was due"),
            DemoError::Interrupted => write!(f, "interrupted; the peers were stopped"),
        }
    }
}

/// Runs the demo; exit code 0 when every peer converged with every write.
pub fn run(opts: &Options) -> ExitCode {
    let tmp = match tempfile::tempdir() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("rhizome demo: cannot make a temporary folder: {e}");
            return ExitCode::FAILURE;
        }
    };
    let root = opts.data.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    match script(&root) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(DemoError::Interrupted) => {
            eprintln!("rhizome demo: {}", DemoError::Interrupted);
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("rhizome demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What every peer holds: its `cars` and its `notes`, as JSON.
#[derive(Clone, PartialEq)]
struct Snapshot {
    cars: Vec<Value>,
    notes: Vec<Value>,
}

impl Snapshot {
    fn car(&self, id: &str) -> Option<&Value> {
        self.cars.iter().find(|c| c["_id"] == id)
    }

    /// `car1` in a few words: colour and counter.
    fn car1(&self) -> String {
        match self.car("car1") {
            Some(c) => format!("car1 {} km {}", c["color"], c["km"]),
            None => "no car1".to_string(),
        }
    }
}

/// The running mesh: the peer processes, the relays, and what their lines
/// have told so far.
struct Mesh {
    started: Instant,
    children: Children,
    relays: Vec<Relay>,
    /// Each peer's id and listening address, from its `listening` line.
    ids: Vec<Option<String>>,
    addrs: Vec<Option<SocketAddr>>,
    /// Per peer, how many links it reports up to each remote peer id
    /// (a count, as an old connection's `down` may follow a new `up`).
    links: Vec<BTreeMap<String, i64>>,
    /// Per ring link, whether both ends report it up.
    edges: Vec<bool>,
    /// Per peer, answers still awaited (a `.peer` line ends each batch).
    pending: Vec<usize>,
    /// Per peer, the JSON lines of the batches awaited.
    rows: Vec<Vec<String>>,
}

impl Mesh {
    /// Prints a line stamped with the seconds since the start.
    fn say(&self, text: &str) {
        out!("[{:>5.1}s] {text}", self.started.elapsed().as_secs_f64());
    }

    /// Takes one line of a peer into account (and shows what matters).
    fn handle(&mut self, peer: usize, output: Output) -> Result<(), DemoError> {
        let name = NAMES[peer];
        let line = match output {
            Output::Closed if children::interrupted() => return Err(DemoError::Interrupted),
            Output::Closed => return Err(DemoError::PeerExited(name)),
            Output::Err(line) => {
                self.say(&format!("{name:>5} (stderr) {line}"));
                return Ok(());
            }
            Output::Out(line) => line,
        };
        let mut words = line.split_whitespace();
        match (words.next(), self.pending[peer] > 0) {
            (Some(w), true) if w.starts_with('{') => self.rows[peer].push(line),
            (Some("peer"), true) => self.pending[peer] -= 1,
            (Some("listening"), _) => {
                let (addr, id) = (words.next(), words.nth(1));
                self.say(&format!(
                    "{name:>5}  peer {} listening on {}",
                    id.unwrap_or("?"),
                    addr.unwrap_or("?")
                ));
                self.ids[peer] = id.map(str::to_string);
                self.addrs[peer] = addr.and_then(|a| a.parse().ok());
            }
            (Some("link"), _) => {
                let (kind, remote) = (words.next(), words.next());
                let delta = match kind {
                    Some("up") => 1,
                    Some("down") => -1,
                    // Failed dials while a link is cut: the graph says it.
                    _ => return Ok(()),
                };
                if let Some(remote) = remote {
                    *self.links[peer].entry(remote.to_string()).or_insert(0) += delta;
                }
                self.update_graph();
            }
            (Some("observe"), _) => {
                // `observe 1: N items +I -D ~U`
                let rest: Vec<&str> = words.skip(1).collect();
                if let [n, _, changes @ ..] = rest.as_slice() {
                    let notes = if *n == "1" { "note" } else { "notes" };
                    let changes: Vec<&str> = changes.iter().copied().filter(|c| c.get(1..) != Some("0")).collect();
                    let text = format!("{name:>5}  observes {n} {notes}  {}", changes.join(" "));
                    self.say(text.trim_end());
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Recomputes the ring's edges; prints the graph if it changed.
    fn update_graph(&mut self) {
        let sees = |a: usize, b: usize| {
            let id = self.ids[b].as_deref().unwrap_or("");
            self.links[a].get(id).is_some_and(|n| *n > 0)
        };
        let edges: Vec<bool> = LINKS.iter().map(|&(a, b)| sees(a, b) && sees(b, a)).collect();
        if edges == self.edges {
            return;
        }
        self.edges = edges;
        let mut ring = NAMES[0].to_string();
        for (i, &(_, b)) in LINKS.iter().enumerate() {
            ring.push_str(if self.edges[i] { " ─── " } else { " ─╳─ " });
            ring.push_str(NAMES[b]);
        }
        let up = self.edges.iter().filter(|e| **e).count();
        self.say(&format!("links  {ring}   ({up} of {} up)", LINKS.len()));
    }

    /// Reads lines until `done` holds or `wait` passes; true if it held.
    fn pump(&mut self, wait: Duration, done: impl Fn(&Mesh) -> bool) -> Result<bool, DemoError> {
        let deadline = Instant::now() + wait;
        // Bounded by the deadline.
        loop {
            if children::interrupted() {
                return Err(DemoError::Interrupted);
            }
            if done(self) {
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            if let Some((peer, output)) = self.children.next(left.min(Duration::from_millis(100))) {
                self.handle(peer, output)?;
            }
        }
    }

    /// Shows what happens for `wait`.
    fn pause(&mut self, wait: Duration) -> Result<(), DemoError> {
        self.pump(wait, |_| false).map(drop)
    }

    /// Sends each peer its statements at once (so they run concurrently)
    /// and waits for every answer; returns the JSON lines per peer.
    fn run_all(&mut self, batches: &[(usize, Vec<String>)]) -> Result<Vec<Vec<String>>, DemoError> {
        self.pump(ANSWER_WAIT, |m| m.pending.iter().all(|n| *n == 0))?;
        for (peer, statements) in batches {
            self.rows[*peer].clear();
            let mut lines = statements.clone();
            lines.push(".peer".to_string());
            self.children
                .send(*peer, &lines)
                .map_err(|_| DemoError::PeerExited(NAMES[*peer]))?;
            self.pending[*peer] += 1;
        }
        if !self.pump(ANSWER_WAIT, |m| m.pending.iter().all(|n| *n == 0))? {
            let late = self.pending.iter().position(|n| *n > 0).unwrap_or(0);
            return Err(DemoError::NoAnswer(NAMES[late]));
        }
        Ok(self.rows.iter_mut().map(std::mem::take).collect())
    }

    /// Runs one query on every peer; its documents per peer.
    fn query_all(&mut self, dql: &str) -> Result<Vec<Vec<Value>>, DemoError> {
        let batches: Vec<(usize, Vec<String>)> = (0..NAMES.len()).map(|p| (p, vec![dql.to_string()])).collect();
        let rows = self.run_all(&batches)?;
        rows.into_iter()
            .enumerate()
            .map(|(p, lines)| {
                lines
                    .into_iter()
                    .map(|l| serde_json::from_str(&l).map_err(|_| DemoError::BadOutput(NAMES[p], l)))
                    .collect()
            })
            .collect()
    }

    /// Every peer's documents.
    fn snapshots(&mut self) -> Result<Vec<Snapshot>, DemoError> {
        let cars = self.query_all("SELECT * FROM cars ORDER BY _id")?;
        let notes = self.query_all("SELECT * FROM notes ORDER BY _id")?;
        Ok(cars
            .into_iter()
            .zip(notes)
            .map(|(cars, notes)| Snapshot { cars, notes })
            .collect())
    }

    /// Polls until every peer holds the same documents or `wait` passes;
    /// the last snapshots either way.
    fn converge(&mut self, wait: Duration) -> Result<(bool, Vec<Snapshot>), DemoError> {
        let deadline = Instant::now() + wait;
        // Bounded by the deadline.
        loop {
            let snaps = self.snapshots()?;
            let same = snaps.windows(2).all(|w| w[0] == w[1]);
            if same || Instant::now() >= deadline {
                return Ok((same, snaps));
            }
            self.pause(Duration::from_millis(150))?;
        }
    }

    /// Waits for the given ring links to be up (or down) as the peers see
    /// them; says so if they are not in time.
    fn wait_links(&mut self, links: &[usize], up: bool) -> Result<(), DemoError> {
        let list = links.to_vec();
        if !self.pump(LINK_WAIT, |m| list.iter().all(|&i| m.edges[i] == up))? {
            let state = if up { "up" } else { "down" };
            self.say(&format!("(links not all {state} after {LINK_WAIT:?}; going on)"));
        }
        Ok(())
    }

    fn link_name(i: usize) -> String {
        format!("{}─{}", NAMES[LINKS[i].0], NAMES[LINKS[i].1])
    }

    fn cut(&mut self, links: &[usize]) {
        for &i in links {
            self.relays[i].cut();
        }
        let names: Vec<String> = links.iter().map(|&i| Self::link_name(i)).collect();
        self.say(&format!(
            "cut {} (their relays drop every datagram)",
            names.join(" and ")
        ));
    }

    fn restore(&mut self, links: &[usize]) {
        for &i in links {
            self.relays[i].restore();
        }
        let names: Vec<String> = links
            .iter()
            .map(|&i| {
                format!(
                    "{} ({} datagrams dropped)",
                    Self::link_name(i),
                    self.relays[i].dropped_datagrams()
                )
            })
            .collect();
        self.say(&format!("restore {}", names.join(" and ")));
    }
}

/// A statement for peer `p`, with `{name}` and `{colour}` filled in.
fn stmt(p: usize, text: &str) -> String {
    text.replace("{name}", NAMES[p]).replace("{colour}", COLOURS[p])
}

/// The same statements on every peer.
fn everyone(texts: &[&str]) -> Vec<(usize, Vec<String>)> {
    (0..NAMES.len())
        .map(|p| (p, texts.iter().map(|t| stmt(p, t)).collect()))
        .collect()
}

/// A fresh folder for the stores (or the given one, if empty).
fn prepare(root: &Path) -> Result<(), DemoError> {
    std::fs::create_dir_all(root).map_err(|e| DemoError::Io("cannot create the data folder", e))?;
    let mut entries = std::fs::read_dir(root).map_err(|e| DemoError::Io("cannot read the data folder", e))?;
    if entries.next().is_some() {
        return Err(DemoError::NotEmpty(root.to_path_buf()));
    }
    Ok(())
}

/// Starts the relays and the peers, and reads their addresses.
fn start(root: &Path) -> Result<Mesh, DemoError> {
    prepare(root)?;
    let relays = (0..LINKS.len())
        .map(|_| Relay::start())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| DemoError::Io("cannot start a relay", e))?;
    let mut mesh = Mesh {
        started: Instant::now(),
        children: Children::new(),
        relays,
        ids: vec![None; NAMES.len()],
        addrs: vec![None; NAMES.len()],
        links: vec![BTreeMap::new(); NAMES.len()],
        edges: vec![false; LINKS.len()],
        pending: vec![0; NAMES.len()],
        rows: vec![Vec::new(); NAMES.len()],
    };
    // A key of this run only: no other peer on the machine can join.
    let key = format!("rhizome demo {} {:?}", std::process::id(), std::time::SystemTime::now());
    for (p, name) in NAMES.iter().enumerate() {
        let mut args: Vec<String> = vec!["--data".into(), root.join(name).display().to_string()];
        for (flag, value) in [
            ("--listen", "127.0.0.1:0"),
            ("--app-key", key.as_str()),
            ("--subscribe", "SELECT * FROM cars"),
            ("--subscribe", "SELECT * FROM notes"),
            ("--observe", "SELECT * FROM notes"),
        ] {
            args.extend([flag.to_string(), value.to_string()]);
        }
        args.extend(["--idle-timeout-ms".to_string(), IDLE_TIMEOUT_MS.to_string()]);
        // Links go only through the relays, which the demo cuts: no discovery.
        args.push("--no-mdns".to_string());
        for (i, &(dialler, _)) in LINKS.iter().enumerate() {
            if dialler == p {
                args.extend(["--connect".to_string(), mesh.relays[i].addr().to_string()]);
            }
        }
        mesh.children
            .spawn(&args)
            .map_err(|e| DemoError::Io("cannot start a peer", e))?;
    }
    Ok(mesh)
}

/// Waits for every peer's address, then points each relay at its
/// listening peer.
fn connect_relays(mesh: &mut Mesh) -> Result<(), DemoError> {
    if !mesh.pump(LINK_WAIT, |m| m.addrs.iter().all(Option::is_some))? {
        let late = mesh.addrs.iter().position(Option::is_none).unwrap_or(0);
        return Err(DemoError::NoAnswer(NAMES[late]));
    }
    for (i, &(_, listener)) in LINKS.iter().enumerate() {
        if let Some(addr) = mesh.addrs[listener] {
            mesh.relays[i].set_target(addr);
        }
    }
    Ok(())
}

fn script(root: &Path) -> Result<bool, DemoError> {
    out!(
        "rhizome demo: {} peers as separate processes, each with its own store in {}",
        NAMES.len(),
        root.display()
    );
    out!("linked in a ring through UDP relays in this process, which can cut a link (drop its datagrams)");
    out!("and restore it; a cut link is noticed by QUIC's idle timeout ({IDLE_TIMEOUT_MS} ms), then redialled.\n");
    let mut mesh = start(root)?;
    connect_relays(&mut mesh)?;
    let all: Vec<usize> = (0..LINKS.len()).collect();
    mesh.wait_links(&all, true)?;

    mesh.say("1. everyone writes at once: a note each, the same car's colour and driver, +10 km on its counter");
    let mut batches = everyone(&[
        "INSERT INTO notes DOCUMENTS ({'_id': '{name}-1', 'by': '{name}', 'text': 'hello from {name}'})",
        "INSERT INTO cars DOCUMENTS ({'_id': 'car1', 'color': '{colour}', 'driver': '{name}', '{name}': 'was here'}) \
         ON ID CONFLICT DO UPDATE",
        "UPDATE cars APPLY km INCREMENT BY 10 WHERE _id = 'car1'",
    ]);
    batches[3]
        .1
        .push("INSERT INTO cars DOCUMENTS ({'_id': 'car2', 'color': 'white', 'owner': 'dave'})".to_string());
    mesh.run_all(&batches)?;
    let (same, snaps) = mesh.converge(CONVERGE_WAIT)?;
    let verdict = if same { "all agree" } else { "not yet in agreement" };
    mesh.say(&format!("{verdict}: {}", snaps[0].car1()));

    let halves = [1, 3];
    mesh.cut(&halves);
    mesh.say("2. the ring is split in two halves, alice+bob and carol+dave; both keep writing offline:");
    mesh.say("   alice paints car1 green, dave paints it blue, bob deletes car2 while carol notes on it, +5 km each");
    let mut batches = everyone(&[
        "INSERT INTO notes DOCUMENTS ({'_id': '{name}-2', 'by': '{name}', 'text': 'offline note'})",
        "UPDATE cars APPLY km INCREMENT BY 5 WHERE _id = 'car1'",
    ]);
    batches[0]
        .1
        .push("UPDATE cars SET color = 'green' WHERE _id = 'car1'".to_string());
    batches[1].1.push("DELETE FROM cars WHERE _id = 'car2'".to_string());
    batches[2]
        .1
        .push("UPDATE cars SET note = 'needs new tyres' WHERE _id = 'car2'".to_string());
    batches[3]
        .1
        .push("UPDATE cars SET color = 'blue' WHERE _id = 'car1'".to_string());
    mesh.run_all(&batches)?;
    mesh.wait_links(&halves, false)?;
    mesh.say("   still offline: alice and bob write another note each, everyone +1 km");
    let mut batches = everyone(&["UPDATE cars APPLY km INCREMENT BY 1 WHERE _id = 'car1'"]);
    for (p, statements) in batches.iter_mut().take(2) {
        statements.push(stmt(
            *p,
            "INSERT INTO notes DOCUMENTS ({'_id': '{name}-3', 'by': '{name}', 'text': 'still offline'})",
        ));
    }
    mesh.run_all(&batches)?;
    mesh.pause(Duration::from_millis(500))?;
    let snaps = mesh.snapshots()?;
    for (p, s) in snaps.iter().enumerate() {
        let car2 = if s.car("car2").is_some() {
            "has car2"
        } else {
            "car2 deleted"
        };
        mesh.say(&format!(
            "{:>5}  sees {}, {car2}, {} notes",
            NAMES[p],
            s.car1(),
            s.notes.len()
        ));
    }

    mesh.restore(&halves);
    mesh.wait_links(&halves, true)?;
    let (same, snaps) = mesh.converge(CONVERGE_WAIT)?;
    let verdict = if same { "the halves merged" } else { "not yet merged" };
    let show = |id: &str| snaps[0].car(id).map_or("deleted".to_string(), Value::to_string);
    mesh.say(&format!(
        "{verdict}, field by field (the later write wins a field, increments add up):"
    ));
    mesh.say(&format!("   car1 {}", show("car1")));
    mesh.say(&format!(
        "   car2 {}  (bob's delete took what he had seen; carol's concurrent note stays)",
        show("car2")
    ));

    let long_way = [0];
    mesh.cut(&long_way);
    mesh.say("3. alice writes a note; it reaches bob the long way round: alice → dave → carol → bob");
    let sent = Instant::now();
    mesh.run_all(&[(
        0,
        vec![stmt(
            0,
            "INSERT INTO notes DOCUMENTS ({'_id': 'alice-4', 'by': 'alice', 'text': 'the long way round'})",
        )],
    )])?;
    let mut arrived = false;
    while !arrived && sent.elapsed() < CONVERGE_WAIT {
        let rows = mesh.run_all(&[(1, vec!["SELECT _id FROM notes WHERE _id = 'alice-4'".to_string()])])?;
        arrived = !rows[1].is_empty();
        if !arrived {
            mesh.pause(Duration::from_millis(50))?;
        }
    }
    let how = if arrived { "got it" } else { "did not get it" };
    mesh.say(&format!("  bob {how} after {} ms", sent.elapsed().as_millis()));
    mesh.wait_links(&long_way, false)?;
    mesh.restore(&long_way);
    mesh.wait_links(&long_way, true)?;

    let (same, snaps) = mesh.converge(CONVERGE_WAIT)?;
    let ok = verdict_at_end(&mesh, same, &snaps);
    let clean = mesh.children.shutdown(EXIT_GRACE);
    mesh.say(&format!("{clean} of {} peers closed cleanly", NAMES.len()));
    Ok(ok)
}

/// Compares the peers and checks that no write was lost; prints the result.
fn verdict_at_end(mesh: &Mesh, same: bool, snaps: &[Snapshot]) -> bool {
    // 4 peers × (10 + 5 + 1) km; 2 notes each, alice's and bob's third,
    // alice's fourth.
    let (want_km, want_notes) = (NAMES.len() as i64 * 16, NAMES.len() * 2 + 3);
    out!();
    for (p, s) in snaps.iter().enumerate() {
        out!(
            "  {:>5}: {} cars, {} notes, {}",
            NAMES[p],
            s.cars.len(),
            s.notes.len(),
            s.car1()
        );
    }
    let first = &snaps[0];
    let km = first.car("car1").and_then(|c| c["km"].as_i64());
    let complete = km == Some(want_km) && first.notes.len() == want_notes;
    if same && complete {
        mesh.say(&format!(
            "every peer converged: identical documents on all {} peers, all {want_notes} notes, km {want_km} = every increment",
            NAMES.len()
        ));
        return true;
    }
    if !same {
        out!("NOT CONVERGED: the peers differ");
        for (p, s) in snaps.iter().enumerate().skip(1) {
            for (what, mine, theirs) in [("cars", &s.cars, &first.cars), ("notes", &s.notes, &first.notes)] {
                for doc in mine.iter().filter(|d| !theirs.contains(d)) {
                    out!("  {} has in {what} (unlike {}): {doc}", NAMES[p], NAMES[0]);
                }
                for doc in theirs.iter().filter(|d| !mine.contains(d)) {
                    out!("  {} lacks in {what} (unlike {}): {doc}", NAMES[p], NAMES[0]);
                }
            }
        }
    }
    if !complete {
        out!(
            "WRITES LOST: want {want_notes} notes and km {want_km}, {} has {} notes and km {km:?}",
            NAMES[0],
            first.notes.len()
        );
    }
    false
}

//! The demo's peers as child processes: `rhizome peer` re-executed from
//! this binary, their stdout and stderr lines gathered on one bounded
//! channel, their stdin for statements.
//!
//! Children are killed and reaped on every path: when [`Children`] drops
//! (normal end, error, panic), when the demo gets Ctrl-C or SIGTERM (a
//! watcher thread kills them), and if the demo itself is killed outright
//! their stdin ends, on which `rhizome peer` exits by itself.

use std::io::{self, BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lines waiting for the demo to read them; readers block beyond that,
/// and so do the children writing them.
const LINE_CAPACITY: usize = 4_096;

/// What a child said.
pub enum Output {
    /// A line on stdout.
    Out(String),
    /// A line on stderr.
    Err(String),
    /// Its stdout ended (it exited or is exiting).
    Closed,
}

/// Set once Ctrl-C or SIGTERM arrived.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether the demo was interrupted.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// The running peers.
pub struct Children {
    procs: Arc<Mutex<Vec<Child>>>,
    stdins: Vec<Option<ChildStdin>>,
    lines: Receiver<(usize, Output)>,
    tx: SyncSender<(usize, Output)>,
}

impl Children {
    /// No children yet; starts the thread that kills them on Ctrl-C.
    pub fn new() -> Children {
        let (tx, lines) = mpsc::sync_channel(LINE_CAPACITY);
        let procs = Arc::new(Mutex::new(Vec::new()));
        watch_signals(procs.clone());
        Children {
            procs,
            stdins: Vec::new(),
            lines,
            tx,
        }
    }

    /// Starts `rhizome peer ARGS` (this very binary); returns its index.
    pub fn spawn(&mut self, args: &[String]) -> io::Result<usize> {
        let exe = std::env::current_exe()?;
        let mut procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        let mut child = Command::new(exe)
            .arg("peer")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let index = procs.len();
        if let Some(out) = child.stdout.take() {
            let tx = self.tx.clone();
            std::thread::spawn(move || read_lines(out, index, &tx, Output::Out, Some(Output::Closed)));
        }
        if let Some(err) = child.stderr.take() {
            let tx = self.tx.clone();
            std::thread::spawn(move || read_lines(err, index, &tx, Output::Err, None));
        }
        self.stdins.push(child.stdin.take());
        procs.push(child);
        Ok(index)
    }

    /// Writes lines to child `index`'s stdin.
    pub fn send(&mut self, index: usize, lines: &[String]) -> io::Result<()> {
        let gone = || io::Error::new(io::ErrorKind::BrokenPipe, "the peer's input is closed");
        let stdin = self.stdins.get_mut(index).and_then(Option::as_mut).ok_or_else(gone)?;
        for line in lines {
            writeln!(stdin, "{line}")?;
        }
        stdin.flush()
    }

    /// The next line of any child, waiting at most `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<(usize, Output)> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Ends every child's input (they close cleanly), waits up to `grace`
    /// for them to exit, then kills the rest. Returns how many exited by
    /// themselves.
    pub fn shutdown(&mut self, grace: Duration) -> usize {
        self.stdins.clear();
        let deadline = Instant::now() + grace;
        let mut procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        let mut clean = 0;
        for child in procs.iter_mut() {
            // Bounded by the deadline.
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        clean += usize::from(status.success());
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        procs.clear();
        clean
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        kill_all(&self.procs);
    }
}

fn kill_all(procs: &Mutex<Vec<Child>>) {
    let mut procs = procs.lock().unwrap_or_else(|p| p.into_inner());
    for child in procs.iter_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
    procs.clear();
}

/// Forwards the lines of one pipe until it ends (then `at_end`, if any)
/// or the demo stops reading.
fn read_lines(
    pipe: impl io::Read,
    index: usize,
    tx: &SyncSender<(usize, Output)>,
    wrap: fn(String) -> Output,
    at_end: Option<Output>,
) {
    for line in BufReader::new(pipe).lines().map_while(Result::ok) {
        if tx.send((index, wrap(line))).is_err() {
            return;
        }
    }
    if let Some(last) = at_end {
        let _ = tx.send((index, last));
    }
}

/// On the first Ctrl-C or SIGTERM, kills the children and flags the demo
/// (which then unwinds and cleans up); on a second, exits at once.
fn watch_signals(procs: Arc<Mutex<Vec<Child>>>) {
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        runtime.block_on(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
                return;
            };
            for round in 0..2 {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                if round == 1 {
                    std::process::exit(130);
                }
                INTERRUPTED.store(true, Ordering::SeqCst);
                kill_all(&procs);
            }
        });
    });
}

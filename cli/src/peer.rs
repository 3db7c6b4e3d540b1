//! `rhizome peer`: a long-lived peer on LMDB that syncs over QUIC.
//!
//! It listens on UDP, dials the `--connect` addresses (redialling when a
//! link drops), prints what happens to its links as lines on stdout, and
//! runs DQL statements read from stdin, one per line, printing results
//! the way `rhizome exec` does (one JSON document per line, mutations as
//! `{"mutated":[ids]}`; errors on stderr). So a person can type at it and
//! a test can drive it. It exits cleanly on end of input or SIGTERM.
//!
//! Sync subscriptions: each `--subscribe DQL`, or by default every
//! collection this peer has subscribed to before or names in a statement
//! (so a peer that writes or reads `t` gets the other peers' `t`).
//!
//! Lines on stdout besides results:
//! `listening ADDR peer ID`, `link up ID ADDR dialled|accepted`,
//! `link down ID ADDR: REASON`, `link failed ADDR: REASON`,
//! `subscribed COLLECTION`, `closed`, and for each `--observe DQL` (K
//! counts them from 1) `observe K: N items +INSERTED -DELETED ~UPDATED`
//! whenever its result changes (the first line has every item inserted).
//!
//! `--idle-timeout-ms MS` declares a silent link down after MS (default
//! 10 s); keep-alives go out every MS/4, and dialling and the redial
//! backoff are capped at MS, so a demo can cut a link and see it heal soon.
//!
//! Not built under `--cfg madsim` (the simulator has no real sockets).

use rhizome_actors::{ObserverHandle, Peer, PeerConfig, QueryEvent};
use rhizome_transports::quic::{AppKey, LinkEvent, QuicConfig, QuicTransport};
use std::collections::BTreeSet;
use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::sync::mpsc;

/// The key used when none is given: public, so anyone can join. For
/// trying things out only; `--app-key` or `RHIZOME_APP_KEY` for real use.
const DEV_APP_KEY: &str = "rhizome public development key";

/// Longest stdin line taken, in bytes (longer ones are refused).
const MAX_LINE_BYTES: usize = 1 << 20;

/// Options of `rhizome peer`.
pub struct Options {
    data: PathBuf,
    listen: SocketAddr,
    connect: Vec<SocketAddr>,
    app_key: Option<String>,
    subscribe: Vec<String>,
    observe: Vec<String>,
    idle_timeout_ms: Option<u64>,
}

/// Shortest `--idle-timeout-ms` taken (shorter ones would drop healthy
/// links on a busy machine).
const MIN_IDLE_TIMEOUT_MS: u64 = 100;

fn resolve(text: &str) -> Result<SocketAddr, String> {
    text.to_socket_addrs()
        .map_err(|e| format!("address {text:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("address {text:?} resolves to nothing"))
}

impl Options {
    /// Parses `--data DIR [--listen ADDR] [--connect ADDR]... [--app-key
    /// KEY] [--subscribe DQL]... [--observe DQL]... [--idle-timeout-ms MS]`.
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut data = None;
        let mut opts = Options {
            data: PathBuf::new(),
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            connect: Vec::new(),
            app_key: std::env::var("RHIZOME_APP_KEY").ok(),
            subscribe: Vec::new(),
            observe: Vec::new(),
            idle_timeout_ms: None,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |what: &str| it.next().cloned().ok_or(format!("{a} needs {what}"));
            match a.as_str() {
                "--data" => data = Some(PathBuf::from(value("a directory")?)),
                "--listen" => opts.listen = resolve(&value("an address")?)?,
                "--connect" => opts.connect.push(resolve(&value("an address")?)?),
                "--app-key" => opts.app_key = Some(value("a key")?),
                "--subscribe" => opts.subscribe.push(value("a DQL query")?),
                "--observe" => opts.observe.push(value("a DQL query")?),
                "--idle-timeout-ms" => {
                    let ms = value("milliseconds")?;
                    match ms.parse::<u64>() {
                        Ok(ms) if ms >= MIN_IDLE_TIMEOUT_MS => opts.idle_timeout_ms = Some(ms),
                        _ => {
                            return Err(format!(
                                "--idle-timeout-ms {ms:?}: not a number of at least {MIN_IDLE_TIMEOUT_MS}"
                            ))
                        }
                    }
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        opts.data = data.ok_or("--data DIR is required")?;
        Ok(opts)
    }
}

/// Prints one line and flushes (a test reads it at once).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// `rhizome peer ...`
pub fn run(opts: Options) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(opts: Options) -> Result<(), String> {
    let key = match &opts.app_key {
        Some(k) => k.clone(),
        None => {
            eprintln!("warning: no --app-key: using the public development key, so anyone can join");
            DEV_APP_KEY.to_string()
        }
    };
    let app_key = AppKey::new(key.into_bytes()).map_err(|e| format!("--app-key: {e}"))?;
    let peer = Peer::open(PeerConfig::directory(&opts.data))
        .await
        .map_err(|e| format!("cannot open {}: {e}", opts.data.display()))?;
    let mut subscribed = Subscriptions::load(&peer, opts.subscribe.is_empty()).await?;
    for query in &opts.subscribe {
        peer.sync()
            .subscribe(query, serde_json::json!({}))
            .await
            .map_err(|e| format!("--subscribe {query:?}: {e}"))?;
    }
    let _observers = observe(&peer, &opts.observe).await?;
    let mut config = QuicConfig::new(app_key);
    config.listen = opts.listen;
    config.connect = opts.connect.clone();
    if let Some(ms) = opts.idle_timeout_ms {
        shorten_timeouts(&mut config, ms);
    }
    let transport = QuicTransport::start(peer.clone(), config)
        .await
        .map_err(|e| e.to_string())?;
    let local = transport.local_addr().map_err(|e| e.to_string())?;
    say(&format!("listening {local} peer {}", peer.id()));
    let mut events = transport.take_events().ok_or("the transport's events were taken")?;
    let mut lines = stdin_lines();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    // Bounded by the input and the signal: each pass takes one line or
    // one event, and the loop ends at end of input or SIGTERM.
    loop {
        tokio::select! {
            line = lines.recv() => match line {
                Some(Ok(line)) => run_line(&peer, &transport, &mut subscribed, &line).await,
                Some(Err(e)) => eprintln!("error: {e}"),
                None => break,
            },
            Some(ev) = events.recv() => say(&describe(&ev)),
            _ = term.recv() => break,
        }
    }
    transport.close().await;
    peer.close().await;
    say("closed");
    Ok(())
}

/// Starts the `--observe` queries; each prints a line per result change
/// until the returned handles drop.
async fn observe(peer: &Peer, queries: &[String]) -> Result<Vec<ObserverHandle>, String> {
    let mut handles = Vec::with_capacity(queries.len());
    for (k, query) in (1..).zip(queries) {
        let on_event = move |ev: Result<QueryEvent, _>| match ev {
            Ok(ev) => say(&format!(
                "observe {k}: {} items +{} -{} ~{}",
                ev.items.len(),
                ev.diff.inserted.len(),
                ev.diff.deleted.len(),
                ev.diff.updated.len()
            )),
            Err(e) => eprintln!("error: --observe {k}: {e}"),
        };
        let handle = peer
            .store()
            .observe_with(query, serde_json::json!({}), on_event)
            .await
            .map_err(|e| format!("--observe {query:?}: {e}"))?;
        handles.push(handle);
    }
    Ok(handles)
}

/// `--idle-timeout-ms`: links idle for `idle_ms` are down; the other
/// timings follow so that a cut is seen and healed at that pace.
fn shorten_timeouts(config: &mut QuicConfig, idle_ms: u64) {
    config.idle_timeout_ms = idle_ms;
    config.keep_alive_ms = (idle_ms / 4).max(1);
    config.handshake_timeout_ms = config.handshake_timeout_ms.min(idle_ms);
    config.backoff_max_ms = config.backoff_max_ms.min(idle_ms);
}

fn describe(ev: &LinkEvent) -> String {
    match ev {
        LinkEvent::Up { remote, addr, dialled } => {
            let how = if *dialled { "dialled" } else { "accepted" };
            format!("link up {remote} {addr} {how}")
        }
        LinkEvent::Down { remote, addr, reason } => format!("link down {remote} {addr}: {reason}"),
        LinkEvent::Failed { addr, reason } => format!("link failed {addr}: {reason}"),
        other => format!("link event {other:?}"),
    }
}

/// Lines of stdin, read on a thread of their own (stdin blocks), at most
/// a few queued; the channel closes at end of input.
fn stdin_lines() -> mpsc::Receiver<Result<String, String>> {
    let (tx, rx) = mpsc::channel(4);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut reader = stdin.lock();
        let mut buf = String::new();
        loop {
            buf.clear();
            let line = match (&mut reader).take(MAX_LINE_BYTES as u64 + 1).read_line(&mut buf) {
                Ok(0) => return,
                Ok(_) if buf.len() > MAX_LINE_BYTES && !buf.ends_with('\n') => {
                    // Skip the rest of the overlong line.
                    let mut rest = Vec::new();
                    let _ = reader.read_until(b'\n', &mut rest);
                    Err(format!("a line is over {MAX_LINE_BYTES} bytes; skipped"))
                }
                Ok(_) => Ok(buf.trim().to_string()),
                Err(e) => Err(format!("stdin: {e}")),
            };
            if tx.blocking_send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// The collections this peer subscribes to whole, and whether statements
/// add theirs.
struct Subscriptions {
    collections: BTreeSet<String>,
    auto: bool,
}

impl Subscriptions {
    async fn load(peer: &Peer, auto: bool) -> Result<Subscriptions, String> {
        let subs = peer.sync().subscriptions().await.map_err(|e| e.to_string())?;
        let collections = subs
            .iter()
            .filter_map(|s| s.query().strip_prefix("SELECT * FROM "))
            .map(str::to_string)
            .collect();
        Ok(Subscriptions { collections, auto })
    }

    /// Subscribes to the collections `statement` names, if not yet.
    async fn add_from(&mut self, peer: &Peer, statement: &str) {
        if !self.auto {
            return;
        }
        for coll in collections_named(statement) {
            if self.collections.contains(&coll) {
                continue;
            }
            let query = format!("SELECT * FROM {coll}");
            match peer.sync().subscribe(&query, serde_json::json!({})).await {
                Ok(_) => {
                    say(&format!("subscribed {coll}"));
                    self.collections.insert(coll);
                }
                // Not a plain collection name: the statement reports it.
                Err(_) => continue,
            }
        }
    }
}

/// The words after FROM, INTO and UPDATE: the collections a statement
/// names (a guess from the text; what is not a name fails to subscribe).
fn collections_named(statement: &str) -> Vec<String> {
    let words: Vec<&str> = statement
        .split(|c: char| c.is_whitespace() || c == '(' || c == ';' || c == ',')
        .filter(|w| !w.is_empty())
        .collect();
    words
        .windows(2)
        .filter(|w| ["FROM", "INTO", "UPDATE"].iter().any(|k| w[0].eq_ignore_ascii_case(k)))
        .map(|w| w[1].to_string())
        .filter(|c| c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') && !c.is_empty())
        .collect()
}

async fn run_line(peer: &Peer, transport: &QuicTransport, subscribed: &mut Subscriptions, line: &str) {
    let statement = line.trim().trim_end_matches(';').trim();
    match statement {
        "" => {}
        ".links" => {
            for (remote, addr) in transport.links() {
                say(&format!("link {remote} {addr}"));
            }
        }
        ".peer" => say(&format!("peer {}", peer.id())),
        _ => {
            subscribed.add_from(peer, statement).await;
            match peer.store().execute(statement, serde_json::json!({})).await {
                Ok(out) => {
                    for item in &out.items {
                        say(&item.to_string());
                    }
                    if !out.mutated_ids.is_empty() {
                        say(&format!("{{\"mutated\":{}}}", serde_json::Value::from(out.mutated_ids)));
                    }
                }
                Err(e) => eprintln!("error: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::collections_named;

    #[test]
    fn statements_name_their_collections() {
        assert_eq!(collections_named("INSERT INTO t DOCUMENTS ({'a': 1})"), ["t"]);
        assert_eq!(collections_named("select * from tasks where x = 1"), ["tasks"]);
        assert_eq!(collections_named("UPDATE cars SET a = 1"), ["cars"]);
        assert!(collections_named("SHOW ALL").is_empty());
    }
}

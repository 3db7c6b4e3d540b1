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
//! Discovery: unless `--no-mdns`, each transport advertises itself by
//! DNS-SD over mDNS and dials the app's peers it finds
//! (`rhizome_transports::discovery`). Each `--interface NAME` adds a
//! peer-to-peer Wi-Fi link on that interface: QUIC on its IPv6 link-local
//! address, discovery on it alone; the LAN transport's discovery leaves
//! such interfaces out.
//!
//! Lines on stdout besides results:
//! `listening ADDR peer ID [on NAME]`, `link up ID ADDR dialled|accepted`,
//! `link down ID ADDR: REASON`, `link failed ADDR: REASON`,
//! `discovered ID ADDR dialling|awaiting`, `lost ID`,
//! `subscribed COLLECTION`, `closed`, and for each `--observe DQL` (K
//! counts them from 1) `observe K: N items +INSERTED -DELETED ~UPDATED`
//! whenever its result changes (the first line has every item inserted).
//!
//! `--idle-timeout-ms MS` declares a silent link down after MS (default
//! 10 s); keep-alives go out every MS/4, and dialling and the redial
//! backoff are capped at MS, so a demo can cut a link and see it heal soon.
//!
//! `.links` prints `link ID ADDR` per link, `.presence` prints `presence ID KIND...` per linked peer (kinds
//! as the presence graph has them: `lan`, `p2p-wifi`, ...).
//!
//! Not built under `--cfg madsim` (the simulator has no real sockets).

use rhizome_actors::conns::{conns_config, ConnDriver};
use rhizome_actors::{LinkKind, ObserverHandle, Peer, PeerConfig, QueryEvent};
use rhizome_transports::discovery::{Discovery, DiscoveryConfig, DiscoveryEvent, LinkLocal, Scope};
use rhizome_transports::planned::LinkPlanner;
use rhizome_transports::quic::{AppKey, LinkEvent, Planned, QuicConfig, QuicError, QuicTransport};
use std::collections::BTreeSet;
use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The key used when none is given: public, so anyone can join. For
/// trying things out only; `--app-key` or `RHIZOME_APP_KEY` for real use.
const DEV_APP_KEY: &str = "rhizome public development key";

/// Longest stdin line taken, in bytes (longer ones are refused).
const MAX_LINE_BYTES: usize = 1 << 20;

/// Most `--interface` options taken.
const MAX_INTERFACES: usize = 16;

/// How long to wait for an interface's link-local address to be usable
/// (it is tentative while duplicate address detection runs), in
/// milliseconds.
const LINK_LOCAL_WAIT_MS: u64 = 5_000;

/// Event lines queued for stdout from all transports and discoveries.
const EVENT_LINES: usize = 256;

/// Options of `rhizome peer`.
pub struct Options {
    data: PathBuf,
    listen: SocketAddr,
    connect: Vec<SocketAddr>,
    app_key: Option<String>,
    subscribe: Vec<String>,
    observe: Vec<String>,
    idle_timeout_ms: Option<u64>,
    interfaces: Vec<String>,
    mdns: bool,
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
    /// KEY] [--subscribe DQL]... [--observe DQL]... [--idle-timeout-ms MS]
    /// [--interface NAME]... [--no-mdns]`.
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
            interfaces: Vec::new(),
            mdns: true,
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
                "--interface" => {
                    let name = value("an interface name")?;
                    if opts.interfaces.len() >= MAX_INTERFACES {
                        return Err(format!("at most {MAX_INTERFACES} --interface options"));
                    }
                    if !opts.interfaces.contains(&name) {
                        opts.interfaces.push(name);
                    }
                }
                "--no-mdns" => opts.mdns = false,
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
    let mut links = Links::start(&peer, &app_key, &opts).await?;
    let mut events = links.take_events();
    let mut lines = stdin_lines();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    // Bounded by the input and the signal: each pass takes one line or
    // one event, and the loop ends at end of input or SIGTERM.
    loop {
        tokio::select! {
            line = lines.recv() => match line {
                Some(Ok(line)) => run_line(&peer, &links, &mut subscribed, &line).await,
                Some(Err(e)) => eprintln!("error: {e}"),
                None => break,
            },
            Some(line) = events.recv() => say(&line),
            _ = term.recv() => break,
        }
    }
    links.close().await;
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

/// The transports of this peer (the LAN one, then one per `--interface`)
/// and their discoveries.
struct Links {
    /// Decides whom the transports link with (at most a few sessions per
    /// kind, rotated); shared by all of them.
    planner: Arc<LinkPlanner>,
    transports: Vec<Arc<QuicTransport>>,
    discoveries: Vec<Discovery>,
    events: Option<mpsc::Receiver<String>>,
}

impl Links {
    /// Starts the transports and discoveries `opts` ask for, printing a
    /// `listening` line for each transport.
    async fn start(peer: &Peer, app_key: &AppKey, opts: &Options) -> Result<Links, String> {
        let (tx, rx) = mpsc::channel(EVENT_LINES);
        let plan = conns_config(peer.sync_config(), peer.id(), peer.id().0);
        let driver = ConnDriver::for_peer(peer, plan, || {}).map_err(|e| format!("connection planner: {e}"))?;
        let mut links = Links {
            planner: LinkPlanner::start(driver),
            transports: Vec::new(),
            discoveries: Vec::new(),
            events: Some(rx),
        };
        let mut lan = QuicConfig::new(app_key.clone());
        lan.listen = opts.listen;
        lan.connect = opts.connect.clone();
        if let Some(ms) = opts.idle_timeout_ms {
            shorten_timeouts(&mut lan, ms);
        }
        links
            .add(
                peer,
                app_key,
                lan,
                Scope::AllExcept(opts.interfaces.clone()),
                None,
                opts.mdns,
                &tx,
            )
            .await?;
        for name in &opts.interfaces {
            let ll = wait_link_local(name).await?;
            let mut config = QuicConfig::new(app_key.clone());
            config.listen = ll.socket_addr(0);
            config.kind = LinkKind::P2pWifi;
            if let Some(ms) = opts.idle_timeout_ms {
                shorten_timeouts(&mut config, ms);
            }
            let scope = Scope::Interface(ll);
            links
                .add(peer, app_key, config, scope, Some(name), opts.mdns, &tx)
                .await?;
        }
        Ok(links)
    }

    #[allow(clippy::too_many_arguments)]
    async fn add(
        &mut self,
        peer: &Peer,
        app_key: &AppKey,
        config: QuicConfig,
        scope: Scope,
        interface: Option<&str>,
        mdns: bool,
        lines: &mpsc::Sender<String>,
    ) -> Result<(), String> {
        let mut config = config;
        config.planner = Planned(Some(self.planner.clone()));
        let transport = Arc::new(start_transport(peer, config).await?);
        self.planner.add_transport(&transport);
        let local = transport.local_addr().map_err(|e| e.to_string())?;
        let on = interface.map(|n| format!(" on {n}")).unwrap_or_default();
        say(&format!("listening {local} peer {}{on}", peer.id()));
        let link_events = transport.take_events().ok_or("the transport's events were taken")?;
        tokio::spawn(forward(link_events, lines.clone(), describe));
        if mdns {
            let mut found_config = DiscoveryConfig::new(scope);
            found_config.planner = Some(self.planner.clone());
            let discovery = Discovery::start(transport.clone(), peer.id(), app_key, found_config)
                .map_err(|e| format!("discovery{on}: {e}"))?;
            let found = discovery.take_events().ok_or("discovery's events were taken")?;
            tokio::spawn(forward(found, lines.clone(), describe_found));
            self.discoveries.push(discovery);
        }
        self.transports.push(transport);
        Ok(())
    }

    fn take_events(&mut self) -> mpsc::Receiver<String> {
        // Taken once, right after start; an empty channel otherwise.
        self.events.take().unwrap_or_else(|| mpsc::channel(1).1)
    }

    /// Says goodbye on mDNS, then closes the links.
    async fn close(&self) {
        for d in &self.discoveries {
            d.close().await;
        }
        for t in &self.transports {
            t.close().await;
        }
    }
}

/// Starts a transport; a link-local address still tentative (duplicate
/// address detection) cannot be bound yet, so binding is retried for a
/// while.
async fn start_transport(peer: &Peer, config: QuicConfig) -> Result<QuicTransport, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(LINK_LOCAL_WAIT_MS);
    loop {
        match QuicTransport::start(peer.clone(), config.clone()).await {
            Err(QuicError::Bind(e))
                if e.kind() == std::io::ErrorKind::AddrNotAvailable && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(format!("{}: {e}", config.listen)),
            Ok(t) => return Ok(t),
        }
    }
}

/// Interface `name`'s link-local address, waiting a while for one to
/// appear (an interface just brought up gets it shortly after).
async fn wait_link_local(name: &str) -> Result<LinkLocal, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(LINK_LOCAL_WAIT_MS);
    loop {
        match LinkLocal::of(name) {
            Ok(ll) => return Ok(ll),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(format!("--interface {name}: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Turns each event into a line for stdout, until either side closes.
async fn forward<E>(mut events: mpsc::Receiver<E>, lines: mpsc::Sender<String>, show: fn(&E) -> String) {
    while let Some(ev) = events.recv().await {
        if lines.send(show(&ev)).await.is_err() {
            return;
        }
    }
}

fn describe_found(ev: &DiscoveryEvent) -> String {
    match ev {
        DiscoveryEvent::Found { remote, addr, dialling } => {
            let how = if *dialling { "dialling" } else { "awaiting" };
            format!("discovered {remote} {addr} {how}")
        }
        DiscoveryEvent::Lost { remote } => format!("lost {remote}"),
        other => format!("discovery event {other:?}"),
    }
}

/// A link kind as `.presence` prints it.
fn kind_name(kind: LinkKind) -> &'static str {
    match kind {
        LinkKind::InProcess => "in-process",
        LinkKind::Lan => "lan",
        LinkKind::P2pWifi => "p2p-wifi",
        LinkKind::Ble => "ble",
        LinkKind::Cloud => "cloud",
        _ => "other",
    }
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

async fn run_line(peer: &Peer, links: &Links, subscribed: &mut Subscriptions, line: &str) {
    let statement = line.trim().trim_end_matches(';').trim();
    match statement {
        "" => {}
        ".links" => {
            for (remote, addr) in links.transports.iter().flat_map(|t| t.links()) {
                say(&format!("link {remote} {addr}"));
            }
        }
        ".presence" => {
            for (remote, kinds) in peer.presence().graph().peers {
                let kinds: Vec<_> = kinds.iter().map(|l| kind_name(l.kind)).collect();
                say(&format!("presence {remote} {}", kinds.join(" ")));
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

//! QUIC links between peers on a LAN (quinn, rustls on ring).
//!
//! A [`QuicTransport`] listens on one UDP socket (port configurable, 0 =
//! any), dials the addresses it is given, and redials with a jittered,
//! doubling backoff when a link drops. Each connection carries one sync
//! session ([`Peer::attach_link`]) on one bidirectional stream:
//!
//! 1. TLS 1.3 with mutual authentication: both certificates must chain to
//!    the app CA derived from the app key ([`tls`] says how and its limits).
//! 2. A preamble each way: [`PREAMBLE_MAGIC`] and the sender's peer id
//!    (u64, big-endian). The other side checks that the sender's
//!    certificate names that peer; the session then checks its Hello.
//! 3. Frames, each as a u32 big-endian length and that many bytes (a sync
//!    frame, `docs/format.md` "Sync frames"). A length above the session's
//!    frame limit closes the connection with [`CLOSE_PROTOCOL`] and a
//!    reason; nothing is allocated for it.
//!
//! One connection per remote peer: when two peers dial each other, both
//! keep the connection dialled by the lower peer id and close the other
//! with [`CLOSE_DUPLICATE`] (the same rule on both sides, so they agree).
//! Every queue is bounded: frames to send (a full queue holds the session
//! back), frames received (the reader waits on the session's mailbox, so
//! QUIC flow control holds the remote back), incoming connections being
//! set up ([`QuicConfig::max_incoming`]), and events ([`LinkEvent`]s are
//! dropped, not queued without end, when nobody reads them).
//!
//! The simulator (madsim) has no real UDP, so this module is built only
//! without `--cfg madsim`.

pub mod tls;

use crate::Transport;
use rhizome_actors::{AttachedLink, LinkKind, Peer, PeerError, PeerId};
use rhizome_engine::sync::wire::DEFAULT_MAX_FRAME_BYTES;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
pub use tls::{AppKey, IdentityError};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;

/// First bytes of the preamble each side sends on the stream.
pub const PREAMBLE_MAGIC: [u8; 4] = *b"RHZQ";
/// Bytes of the preamble: the magic and a peer id.
pub const PREAMBLE_BYTES: usize = 12;
/// QUIC application close code: the link ended normally (a session ended,
/// the transport closed).
pub const CLOSE_NORMAL: u32 = 0;
/// Close code: the remote broke the link's framing (bad preamble, a frame
/// over the limit).
pub const CLOSE_PROTOCOL: u32 = 1;
/// Close code: the remote's certificate does not name the peer its
/// preamble claims.
pub const CLOSE_IDENTITY: u32 = 2;
/// Close code: another link to the same peer is kept.
pub const CLOSE_DUPLICATE: u32 = 3;
/// Close code: the remote is this peer itself.
pub const CLOSE_SELF: u32 = 4;
/// Close code: this peer's connection planner has no room for the link
/// (or took it down to make room or rotate).
pub const CLOSE_BUSY: u32 = 5;

/// The session accounting of a connection planner, which a transport
/// consults and informs ([`crate::planned::LinkPlanner`] is the one in use):
/// whether to take an incoming link, and which links are up.
pub trait Admission: Send + Sync + 'static {
    /// Whether a link from `remote` over `kind`, which it dialled, would be
    /// kept now.
    fn would_accept(&self, remote: PeerId, kind: LinkKind) -> bool;
    /// A link with `remote` over `kind` is up (a session started).
    fn up(&self, remote: PeerId, kind: LinkKind);
    /// The link with `remote` over `kind` that was up went down.
    fn down(&self, remote: PeerId, kind: LinkKind);
}

/// A transport's [`Admission`], if any (a wrapper so [`QuicConfig`] stays
/// `Debug`).
#[derive(Clone, Default)]
pub struct Planned(pub Option<Arc<dyn Admission>>);

impl fmt::Debug for Planned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Planned(Some(..))"
        } else {
            "Planned(None)"
        })
    }
}

/// How a [`QuicTransport`] runs. Build with [`QuicConfig::new`] and set
/// fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct QuicConfig {
    /// The UDP address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// Addresses to dial (and redial while the transport runs).
    pub connect: Vec<SocketAddr>,
    /// Admission to the app's links.
    pub app_key: AppKey,
    /// Largest frame accepted from the wire, in bytes (the session's limit).
    pub max_frame_bytes: u32,
    /// Frames a session may queue for the wire before it is held back.
    pub outbound_frames: usize,
    /// Incoming connections being set up at once; more are refused.
    pub max_incoming: usize,
    /// How long dialling, the TLS handshake and the preamble may take, in
    /// milliseconds.
    pub handshake_timeout_ms: u64,
    /// A link with nothing received for this long is down, in milliseconds.
    pub idle_timeout_ms: u64,
    /// Keep-alive interval, in milliseconds (below the idle timeout).
    pub keep_alive_ms: u64,
    /// First redial delay, in milliseconds (doubles after each failure).
    pub backoff_min_ms: u64,
    /// Longest redial delay, in milliseconds.
    pub backoff_max_ms: u64,
    /// Events kept for [`QuicTransport::take_events`]'s reader; more are
    /// dropped while it lags.
    pub event_capacity: usize,
    /// The kind its links report in presence: [`LinkKind::Lan`], or
    /// [`LinkKind::P2pWifi`] for a transport bound to a peer-to-peer Wi-Fi
    /// interface's link-local address.
    pub kind: LinkKind,
    /// The connection planner that bounds its sessions (none: every link
    /// is taken, as with static `connect` addresses alone).
    pub planner: Planned,
}

impl QuicConfig {
    /// Listens on all interfaces at a free port, dials nothing.
    pub fn new(app_key: AppKey) -> QuicConfig {
        QuicConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            connect: Vec::new(),
            app_key,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            outbound_frames: 16,
            max_incoming: 64,
            handshake_timeout_ms: 5_000,
            idle_timeout_ms: 10_000,
            keep_alive_ms: 2_000,
            backoff_min_ms: 100,
            backoff_max_ms: 5_000,
            event_capacity: 1_024,
            kind: LinkKind::Lan,
            planner: Planned::default(),
        }
    }
}

/// Why the transport could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum QuicError {
    /// The TLS identity could not be made.
    Identity(IdentityError),
    /// The UDP socket could not be bound.
    Bind(std::io::Error),
    /// A setting is out of range.
    Config {
        /// Which setting, and why.
        reason: &'static str,
    },
}

impl fmt::Display for QuicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuicError::Identity(e) => write!(f, "TLS identity: {e}"),
            QuicError::Bind(e) => write!(f, "cannot listen: {e}"),
            QuicError::Config { reason } => write!(f, "configuration: {reason}"),
        }
    }
}

impl std::error::Error for QuicError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            QuicError::Identity(e) => Some(e),
            QuicError::Bind(e) => Some(e),
            QuicError::Config { .. } => None,
        }
    }
}

/// Why a link failed or ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum LinkError {
    /// Dialling could not start (bad address, endpoint closed).
    Connect(quinn::ConnectError),
    /// The connection failed or was closed (a refused handshake, such as
    /// a certificate not from the app CA, shows here; so does the
    /// remote's close code and reason).
    Connection(quinn::ConnectionError),
    /// A step took longer than allowed.
    Timeout {
        /// The step.
        step: &'static str,
        /// The limit, in milliseconds.
        after_ms: u64,
    },
    /// The remote's preamble is not one.
    BadPreamble,
    /// The remote's certificate does not name the peer it claims to be.
    NotCertified {
        /// The peer id its preamble claimed.
        claimed: PeerId,
    },
    /// The remote is this peer.
    SelfLink,
    /// Another link to the same peer is kept.
    Duplicate,
    /// The connection planner has no room for the link, or took it down.
    Busy,
    /// The remote announced a frame over the limit.
    FrameTooLarge {
        /// The announced length, in bytes.
        len: u32,
        /// The limit, in bytes.
        max_bytes: u32,
    },
    /// Reading the stream failed.
    Read(quinn::ReadExactError),
    /// Writing the stream failed.
    Write(quinn::WriteError),
    /// The sync session could not start.
    Session(PeerError),
    /// The sync session ended (closed, refused or failed).
    SessionEnded,
    /// The transport is closing.
    Closing,
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Connect(e) => write!(f, "cannot dial: {e}"),
            LinkError::Connection(e) => write!(f, "connection: {e}"),
            LinkError::Timeout { step, after_ms } => write!(f, "{step} took over {after_ms} ms"),
            LinkError::BadPreamble => f.write_str("the remote's preamble is malformed"),
            LinkError::NotCertified { claimed } => {
                write!(
                    f,
                    "the remote claims to be peer {claimed}, which its certificate does not say"
                )
            }
            LinkError::SelfLink => f.write_str("the remote is this peer"),
            LinkError::Duplicate => f.write_str("another link to this peer is kept"),
            LinkError::Busy => f.write_str("no room for the link in the connection plan"),
            LinkError::FrameTooLarge { len, max_bytes } => {
                write!(f, "a frame of {len} bytes is over the limit of {max_bytes}")
            }
            LinkError::Read(e) => write!(f, "read: {e}"),
            LinkError::Write(e) => write!(f, "write: {e}"),
            LinkError::Session(e) => write!(f, "sync session: {e}"),
            LinkError::SessionEnded => f.write_str("the sync session ended"),
            LinkError::Closing => f.write_str("the transport is closing"),
        }
    }
}

impl std::error::Error for LinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LinkError::Connect(e) => Some(e),
            LinkError::Connection(e) => Some(e),
            LinkError::Read(e) => Some(e),
            LinkError::Write(e) => Some(e),
            LinkError::Session(e) => Some(e),
            _ => None,
        }
    }
}

impl LinkError {
    /// The close code and reason sent to the remote for this error.
    fn close(&self) -> (u32, &'static [u8]) {
        match self {
            LinkError::BadPreamble => (CLOSE_PROTOCOL, b"malformed preamble"),
            LinkError::FrameTooLarge { .. } => (CLOSE_PROTOCOL, b"frame over the limit"),
            LinkError::NotCertified { .. } => (CLOSE_IDENTITY, b"certificate does not name the claimed peer"),
            LinkError::SelfLink => (CLOSE_SELF, b"a peer cannot link to itself"),
            LinkError::Duplicate => (CLOSE_DUPLICATE, b"another link to this peer is kept"),
            LinkError::Busy => (CLOSE_BUSY, b"no room in the connection plan"),
            LinkError::Closing => (CLOSE_NORMAL, b"closing"),
            _ => (CLOSE_NORMAL, b"link ended"),
        }
    }
}

/// What happened to a link (see [`QuicTransport::take_events`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum LinkEvent {
    /// A link is up and its sync session started.
    Up {
        /// The remote peer (as its certificate says).
        remote: PeerId,
        /// Its address.
        addr: SocketAddr,
        /// Whether this peer dialled it.
        dialled: bool,
    },
    /// A link that was up went down.
    Down {
        /// The remote peer.
        remote: PeerId,
        /// Its address.
        addr: SocketAddr,
        /// Why.
        reason: LinkError,
    },
    /// A connection failed before its link was up (dial, handshake,
    /// preamble, identity, duplicate).
    Failed {
        /// The remote address.
        addr: SocketAddr,
        /// Why.
        reason: LinkError,
    },
}

/// A live link in the table of links.
struct Entry {
    conn: quinn::Connection,
    dialler: PeerId,
    generation: u64,
}

/// What the transport's tasks share.
struct Shared {
    peer: Peer,
    me: PeerId,
    config: QuicConfig,
    endpoint: quinn::Endpoint,
    links: Mutex<HashMap<PeerId, Entry>>,
    generations: AtomicU64,
    events: mpsc::Sender<LinkEvent>,
    dropped_events: AtomicU64,
    shutdown: watch::Sender<bool>,
}

/// QUIC links of one peer (see the module doc).
pub struct QuicTransport {
    shared: Arc<Shared>,
    events: Mutex<Option<mpsc::Receiver<LinkEvent>>>,
}

impl fmt::Debug for QuicTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuicTransport")
            .field("me", &self.shared.me)
            .field("local_addr", &self.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl QuicTransport {
    /// Makes the peer's TLS identity, binds the socket, and starts
    /// accepting and dialling. Must be called inside a tokio runtime.
    pub async fn start(peer: Peer, config: QuicConfig) -> Result<QuicTransport, QuicError> {
        if config.outbound_frames == 0 || config.max_incoming == 0 || config.event_capacity == 0 {
            return Err(QuicError::Config {
                reason: "outbound_frames, max_incoming and event_capacity must be at least 1",
            });
        }
        if config.keep_alive_ms == 0 || config.keep_alive_ms >= config.idle_timeout_ms {
            return Err(QuicError::Config {
                reason: "keep_alive_ms must be above 0 and below idle_timeout_ms",
            });
        }
        let me = peer.id();
        let (mut server, mut client) = tls::configs(&config.app_key, me).map_err(QuicError::Identity)?;
        let mut transport = quinn::TransportConfig::default();
        let idle = quinn::IdleTimeout::try_from(Duration::from_millis(config.idle_timeout_ms)).map_err(|_| {
            QuicError::Config {
                reason: "idle_timeout_ms is too long",
            }
        })?;
        transport
            .max_idle_timeout(Some(idle))
            .keep_alive_interval(Some(Duration::from_millis(config.keep_alive_ms)))
            // One stream per connection; the remote may not open more.
            .max_concurrent_bidi_streams(1u32.into())
            .max_concurrent_uni_streams(0u32.into());
        let transport = Arc::new(transport);
        server.transport_config(transport.clone());
        client.transport_config(transport);
        let mut endpoint = quinn::Endpoint::server(server, config.listen).map_err(QuicError::Bind)?;
        endpoint.set_default_client_config(client);
        let (events_tx, events_rx) = mpsc::channel(config.event_capacity);
        let (shutdown, _) = watch::channel(false);
        let connect = config.connect.clone();
        let shared = Arc::new(Shared {
            peer,
            me,
            config,
            endpoint,
            links: Mutex::default(),
            generations: AtomicU64::new(1),
            events: events_tx,
            dropped_events: AtomicU64::new(0),
            shutdown,
        });
        tokio::spawn(accept_loop(shared.clone()));
        let t = QuicTransport {
            shared,
            events: Mutex::new(Some(events_rx)),
        };
        for addr in connect {
            t.connect(addr);
        }
        Ok(t)
    }

    /// The address the transport listens on (with the port picked).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.shared.endpoint.local_addr()
    }

    /// Dials `addr`, and redials it with backoff whenever its link is down,
    /// until the transport closes.
    pub fn connect(&self, addr: SocketAddr) {
        tokio::spawn(dial_loop(self.shared.clone(), addr, None));
    }

    /// Dials `addr` as [`QuicTransport::connect`] does, but only while the
    /// returned [`Dial`] lives: dropping it stops the redialling (a link
    /// that is up stays up until it ends by itself). Discovery dials this
    /// way, so a peer that left is not dialled for ever.
    pub fn dial(&self, addr: SocketAddr) -> Dial {
        let (stop, wanted) = watch::channel(());
        tokio::spawn(dial_loop(self.shared.clone(), addr, Some(wanted)));
        Dial { addr, _stop: stop }
    }

    /// Takes the link with `peer` down (the connection planner's decision);
    /// nothing if there is none.
    pub fn disconnect(&self, peer: PeerId) {
        let links = self.shared.links.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = links.get(&peer) {
            let (code, reason) = LinkError::Busy.close();
            entry.conn.close(code.into(), reason);
        }
    }

    /// The events of the links (once: later calls get `None`).
    pub fn take_events(&self) -> Option<mpsc::Receiver<LinkEvent>> {
        self.shared_events().take()
    }

    fn shared_events(&self) -> std::sync::MutexGuard<'_, Option<mpsc::Receiver<LinkEvent>>> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Events dropped so far because nobody read them.
    pub fn dropped_events(&self) -> u64 {
        self.shared.dropped_events.load(Ordering::Relaxed)
    }

    /// The peers with a link up, with their addresses.
    pub fn links(&self) -> Vec<(PeerId, SocketAddr)> {
        let links = self.shared.links.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = links.iter().map(|(p, e)| (*p, e.conn.remote_address())).collect();
        out.sort();
        out
    }

    /// Closes every link and stops listening and dialling; waits (up to
    /// a second) for the remotes to hear of it.
    pub async fn close(&self) {
        self.shared.shutdown.send_replace(true);
        self.shared.endpoint.close(CLOSE_NORMAL.into(), b"closing");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.shared.endpoint.wait_idle()).await;
    }
}

/// Redialling of one address while it lives (see [`QuicTransport::dial`]).
#[derive(Debug)]
pub struct Dial {
    addr: SocketAddr,
    // Never sent on: dropping it closes the channel, which the dial loop
    // takes as "stop".
    _stop: watch::Sender<()>,
}

impl Dial {
    /// The address dialled.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for QuicTransport {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
        self.shared.endpoint.close(CLOSE_NORMAL.into(), b"closing");
    }
}

impl Transport for QuicTransport {
    fn kind(&self) -> LinkKind {
        self.shared.config.kind
    }

    fn linked_peers(&self) -> Vec<PeerId> {
        self.links().into_iter().map(|(p, _)| p).collect()
    }

    async fn close(&self) {
        QuicTransport::close(self).await
    }
}

impl Shared {
    fn emit(&self, event: LinkEvent) {
        if self.events.try_send(event).is_err() {
            self.dropped_events.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn closing(&self) -> bool {
        *self.shutdown.borrow()
    }

    fn has_link(&self, peer: PeerId) -> bool {
        self.links.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&peer)
    }

    /// Enters a link in the table, or refuses it as a duplicate: of two
    /// links to one peer, the one dialled by the lower peer id is kept (a
    /// newer link from the same dialler replaces the old, which is dying).
    fn register(&self, remote: PeerId, conn: &quinn::Connection, dialler: PeerId) -> Result<u64, LinkError> {
        let preferred = self.me.min(remote);
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = links.get(&remote) {
            let keep_old = old.dialler == preferred && dialler != preferred;
            if keep_old {
                return Err(LinkError::Duplicate);
            }
            let (code, reason) = LinkError::Duplicate.close();
            old.conn.close(code.into(), reason);
        }
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        links.insert(
            remote,
            Entry {
                conn: conn.clone(),
                dialler,
                generation,
            },
        );
        Ok(generation)
    }

    /// Removes a link from the table unless a newer one replaced it; says
    /// whether it did.
    fn unregister(&self, remote: PeerId, generation: u64) -> bool {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        let ours = links.get(&remote).is_some_and(|e| e.generation == generation);
        if ours {
            links.remove(&remote);
        }
        ours
    }

    /// Whether the planner (if any) takes a link from `remote`.
    fn admits(&self, remote: PeerId) -> bool {
        let kind = self.config.kind;
        self.config
            .planner
            .0
            .as_ref()
            .is_none_or(|p| p.would_accept(remote, kind))
    }

    fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.config.handshake_timeout_ms)
    }
}

/// Accepts incoming connections (at most `max_incoming` being set up at
/// once) until the endpoint closes.
async fn accept_loop(shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(shared.config.max_incoming));
    while let Some(incoming) = shared.endpoint.accept().await {
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            incoming.refuse();
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let addr = incoming.remote_address();
            let connecting = match incoming.accept() {
                Ok(c) => c,
                Err(e) => {
                    return shared.emit(LinkEvent::Failed {
                        addr,
                        reason: LinkError::Connection(e),
                    })
                }
            };
            let conn = match tokio::time::timeout(shared.handshake_timeout(), connecting).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => {
                    return shared.emit(LinkEvent::Failed {
                        addr,
                        reason: LinkError::Connection(e),
                    })
                }
                Err(_) => {
                    return shared.emit(LinkEvent::Failed {
                        addr,
                        reason: LinkError::Timeout {
                            step: "the TLS handshake",
                            after_ms: shared.config.handshake_timeout_ms,
                        },
                    })
                }
            };
            // The slot covers setting up only; a live link holds none.
            drop(slot);
            run_link(&shared, conn, false).await;
        });
    }
}

/// Dials `addr` until the transport closes: after a link ends, or a dial
/// fails, waits a jittered backoff (doubling up to the maximum, back to the
/// minimum after a link that lived long); while a link to the peer at
/// `addr` is up (the remote dialled us), waits for it to go down. With
/// `wanted`, also stops (between links) once its sender is dropped.
async fn dial_loop(shared: Arc<Shared>, addr: SocketAddr, mut wanted: Option<watch::Receiver<()>>) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut backoff_ms = shared.config.backoff_min_ms.max(1);
    let mut known: Option<PeerId> = None;
    let stable = Duration::from_millis(shared.config.idle_timeout_ms);
    // Bounded by the transport's life: every pass waits at least the
    // minimum backoff, and the loop ends when the transport closes.
    for attempt in 0u64.. {
        if shared.closing() || wanted.as_ref().is_some_and(|w| w.has_changed().is_err()) {
            return;
        }
        while known.is_some_and(|p| shared.has_link(p)) {
            if sleep_or_shutdown(&mut shutdown, &mut wanted, 250).await {
                return;
            }
        }
        let started = Instant::now();
        match shared.endpoint.connect(addr, tls::SERVER_NAME) {
            Err(e) => shared.emit(LinkEvent::Failed {
                addr,
                reason: LinkError::Connect(e),
            }),
            Ok(connecting) => match tokio::time::timeout(shared.handshake_timeout(), connecting).await {
                Ok(Ok(conn)) => known = run_link(&shared, conn, true).await.or(known),
                Ok(Err(e)) => shared.emit(LinkEvent::Failed {
                    addr,
                    reason: LinkError::Connection(e),
                }),
                Err(_) => shared.emit(LinkEvent::Failed {
                    addr,
                    reason: LinkError::Timeout {
                        step: "dialling",
                        after_ms: shared.config.handshake_timeout_ms,
                    },
                }),
            },
        }
        if started.elapsed() >= stable {
            backoff_ms = shared.config.backoff_min_ms.max(1);
        }
        // Jitter (up to half the delay) from the peer id and the attempt,
        // so peers that lost a link together do not redial in step.
        let jitter = splitmix(shared.me.0 ^ attempt) % (backoff_ms / 2 + 1);
        if sleep_or_shutdown(&mut shutdown, &mut wanted, backoff_ms + jitter).await {
            return;
        }
        backoff_ms = (backoff_ms * 2).min(shared.config.backoff_max_ms.max(1));
    }
}

/// Sleeps `ms`; true if the transport began closing meanwhile (or the
/// dial is no longer wanted).
async fn sleep_or_shutdown(
    shutdown: &mut watch::Receiver<bool>,
    wanted: &mut Option<watch::Receiver<()>>,
    ms: u64,
) -> bool {
    if *shutdown.borrow() {
        return true;
    }
    let unwanted = async {
        match wanted {
            // Nothing is ever sent: it returns only once the sender drops.
            Some(w) => while w.changed().await.is_ok() {},
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(ms)) => false,
        _ = shutdown.changed() => true,
        _ = unwanted => true,
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Runs one authenticated connection until its link ends; returns the
/// remote peer if its preamble was read.
async fn run_link(shared: &Arc<Shared>, conn: quinn::Connection, dialled: bool) -> Option<PeerId> {
    let addr = conn.remote_address();
    let (remote, send, recv) = match establish(shared, &conn, dialled).await {
        Ok(x) => x,
        Err((remote, reason)) => {
            let (code, text) = reason.close();
            conn.close(code.into(), text);
            shared.emit(LinkEvent::Failed { addr, reason });
            return remote;
        }
    };
    if !dialled && !shared.admits(remote) {
        let reason = LinkError::Busy;
        let (code, text) = reason.close();
        conn.close(code.into(), text);
        shared.emit(LinkEvent::Failed { addr, reason });
        return Some(remote);
    }
    let dialler = if dialled { shared.me } else { remote };
    let generation = match shared.register(remote, &conn, dialler) {
        Ok(g) => g,
        Err(reason) => {
            let (code, text) = reason.close();
            conn.close(code.into(), text);
            shared.emit(LinkEvent::Failed { addr, reason });
            return Some(remote);
        }
    };
    let planner = shared.config.planner.0.as_ref();
    if let Some(p) = planner {
        p.up(remote, shared.config.kind);
    }
    let (outbound, frames) = mpsc::channel(shared.config.outbound_frames);
    let reason = match shared.peer.attach_link(remote, shared.config.kind, outbound).await {
        Ok(link) => {
            tracing::info!(me = %shared.me, %remote, %addr, dialled, "QUIC link up");
            shared.emit(LinkEvent::Up { remote, addr, dialled });
            pump(shared, &conn, link, frames, send, recv).await
        }
        Err(e) => LinkError::Session(e),
    };
    if shared.unregister(remote, generation) {
        if let Some(p) = planner {
            p.down(remote, shared.config.kind);
        }
    }
    let (code, text) = reason.close();
    conn.close(code.into(), text);
    tracing::info!(me = %shared.me, %remote, %addr, %reason, "QUIC link down");
    shared.emit(LinkEvent::Down { remote, addr, reason });
    Some(remote)
}

/// The stream and the preambles: who the remote is, vouched for by its
/// certificate. On failure, the remote if its preamble was read.
async fn establish(
    shared: &Shared,
    conn: &quinn::Connection,
    dialled: bool,
) -> Result<(PeerId, quinn::SendStream, quinn::RecvStream), (Option<PeerId>, LinkError)> {
    let exchange = async {
        // The dialler opens the stream; the other side sees it once the
        // dialler's preamble arrives.
        let (mut send, mut recv) = if dialled {
            conn.open_bi().await
        } else {
            conn.accept_bi().await
        }
        .map_err(LinkError::Connection)?;
        let mut ours = [0u8; PREAMBLE_BYTES];
        ours[..4].copy_from_slice(&PREAMBLE_MAGIC);
        ours[4..].copy_from_slice(&shared.me.0.to_be_bytes());
        send.write_all(&ours).await.map_err(LinkError::Write)?;
        let mut theirs = [0u8; PREAMBLE_BYTES];
        recv.read_exact(&mut theirs).await.map_err(LinkError::Read)?;
        if theirs[..4] != PREAMBLE_MAGIC {
            return Err(LinkError::BadPreamble);
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&theirs[4..]);
        Ok((PeerId(u64::from_be_bytes(id)), send, recv))
    };
    let (remote, send, recv) = match tokio::time::timeout(shared.handshake_timeout(), exchange).await {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return Err((None, e)),
        Err(_) => {
            return Err((
                None,
                LinkError::Timeout {
                    step: "the preamble",
                    after_ms: shared.config.handshake_timeout_ms,
                },
            ))
        }
    };
    if remote == shared.me {
        return Err((None, LinkError::SelfLink));
    }
    if !tls::certifies(conn, remote) {
        return Err((None, LinkError::NotCertified { claimed: remote }));
    }
    Ok((remote, send, recv))
}

/// Moves frames between the stream and the session until one side ends;
/// says why.
async fn pump(
    shared: &Shared,
    conn: &quinn::Connection,
    link: AttachedLink,
    mut frames: mpsc::Receiver<Vec<u8>>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) -> LinkError {
    let max_bytes = shared.config.max_frame_bytes;
    let writer = async {
        // Ends when the session ends (it held the only sender).
        while let Some(frame) = frames.recv().await {
            let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
            send.write_all(&len.to_be_bytes()).await.map_err(LinkError::Write)?;
            send.write_all(&frame).await.map_err(LinkError::Write)?;
        }
        let _ = send.finish();
        Ok::<_, LinkError>(())
    };
    let reader = async {
        // Bounded by the connection: every pass reads from the stream,
        // which ends with it.
        loop {
            let mut len = [0u8; 4];
            recv.read_exact(&mut len).await.map_err(LinkError::Read)?;
            let len = u32::from_be_bytes(len);
            if len > max_bytes {
                return Err::<(), _>(LinkError::FrameTooLarge { len, max_bytes });
            }
            // Allocated only once the length is known to be in bounds.
            let mut frame = vec![0u8; len as usize];
            recv.read_exact(&mut frame).await.map_err(LinkError::Read)?;
            // Waits while the session's mailbox is full: QUIC flow control
            // then holds the remote back.
            link.deliver(frame).await.map_err(|_| LinkError::SessionEnded)?;
        }
    };
    let mut shutdown = shared.shutdown.subscribe();
    let reason = tokio::select! {
        r = writer => r.err().unwrap_or(LinkError::SessionEnded),
        r = reader => r.err().unwrap_or(LinkError::SessionEnded),
        e = conn.closed() => LinkError::Connection(e),
        _ = shutdown.wait_for(|closing| *closing) => LinkError::Closing,
    };
    // Ends the session (if it has not ended already); bounded, and if it
    // times out, dropping the handle ends the session all the same.
    let _ = tokio::time::timeout(Duration::from_secs(2), link.close()).await;
    reason
}

#[cfg(test)]
mod tests;

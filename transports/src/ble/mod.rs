//! Bluetooth LE links (feature `ble`, Linux: BlueZ over D-Bus).
//!
//! Every peer plays both roles at once: a *peripheral* ([`peripheral`],
//! bluer) advertises [`SERVICE_UUID`] and serves a GATT service, and a
//! *central* ([`central`], btleplug) scans for that service and connects to
//! the peripherals it finds. Each connection carries one sync session
//! ([`Peer::attach_link`], [`LinkKind::Ble`]). The service:
//!
//! - [`INFO_UUID`] (read, write with response): read, it gives the
//!   peripheral's [`Info`] (peer id, app tag, the *slot* it gave the
//!   reading central, a fresh nonce); written, it takes the central's
//!   [`Hello`] (peer id, app tag, nonce, MAC), which starts the link, or is
//!   refused with an ATT error; read again after that, it gives the
//!   peripheral's [`Proof`].
//! - [`WRITE_UUID`] (write without response): chunks central → peripheral.
//! - [`NOTIFY_UUID`] (notify): the slot byte, then a chunk, peripheral →
//!   central. BlueZ sends a served characteristic's notifications to every
//!   subscribed central, so each central keeps only those of its slot.
//!
//! Chunks are the shared framing of `rhizome_engine::sync::chunk` (the
//! simulator's modelled links use the same code), cut to the connection's
//! ATT MTU less 3 bytes (less one more for the slot on notifications).
//! The byte layouts are in `docs/format.md` ("Bluetooth LE links").
//!
//! **Admission and encryption** are [`crate::ble_auth`]'s: both ends prove
//! they hold the app key with MACs over fresh nonces, and every frame is
//! sealed (ChaCha20-Poly1305, one key per direction and link). A device
//! without the app key can neither join a link nor read or alter one; a
//! frame that does not open ends its link. As on QUIC, any holder of the
//! app key may claim any peer id until the identity issue.
//!
//! One link per remote peer, as on QUIC: when two peers connect to each
//! other (each a central of the other), both keep the link whose central
//! has the lower peer id. Every queue is bounded: chunks received per
//! central, notifications waiting for the radio, frames the session may
//! queue, centrals served at once ([`BleConfig::max_centrals`]), links
//! dialled at once ([`BleConfig::max_links`]), and events.

pub mod central;
pub mod peripheral;

use crate::ble_auth::{AuthError, AuthKey, Opener, Sealer};
use crate::quic::AppKey;
use crate::Transport;
use rhizome_actors::{LinkKind, Peer, PeerId};
use rhizome_engine::sync::chunk::{Chunker, Reassembler, MIN_CHUNK_BYTES};
use rhizome_engine::sync::wire::DEFAULT_MAX_FRAME_BYTES;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

/// The Rhizome sync GATT service.
pub const SERVICE_UUID: Uuid = Uuid::from_u128(0x3e1f_6a52_9c1d_4b8e_a7f0_5248_5a00_0000);
/// Central → peripheral chunks (write without response).
pub const WRITE_UUID: Uuid = Uuid::from_u128(0x3e1f_6a52_9c1d_4b8e_a7f0_5248_5a00_0001);
/// Peripheral → central chunks behind a slot byte (notify).
pub const NOTIFY_UUID: Uuid = Uuid::from_u128(0x3e1f_6a52_9c1d_4b8e_a7f0_5248_5a00_0002);
/// The peripheral's [`Info`] (read) and the central's [`Hello`] (write).
pub const INFO_UUID: Uuid = Uuid::from_u128(0x3e1f_6a52_9c1d_4b8e_a7f0_5248_5a00_0003);
pub use crate::ble_auth::{
    AppTag, Hello, Info, InfoError, Proof, APP_TAG_BYTES, HELLO_BYTES, INFO_BYTES, INFO_MAGIC, PROOF_BYTES, PROOF_MAGIC,
};

/// How a [`BleTransport`] runs. Build with [`BleConfig::new`] and set
/// fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BleConfig {
    /// The app key (its [`AppTag`] filters, its [`AuthKey`] admits).
    pub app_key: AppKey,
    /// Run the central role (scan and connect).
    pub central: bool,
    /// Run the peripheral role (advertise and serve).
    pub peripheral: bool,
    /// Largest frame accepted from the wire, in bytes.
    pub max_frame_bytes: u32,
    /// Frames a session may queue for the radio before it is held back.
    pub outbound_frames: usize,
    /// Chunks received from one central waiting for reassembly.
    pub inbound_chunks: usize,
    /// Notifications waiting for the radio (all centrals together).
    pub notify_queue: usize,
    /// Centrals served at once (at most 255: one slot byte each).
    pub max_centrals: usize,
    /// Links this peer dials as a central at once.
    pub max_links: usize,
    /// How often the central looks at what the scan found, in
    /// milliseconds.
    pub scan_interval_ms: u64,
    /// How often a link checks that its device is still connected, in
    /// milliseconds.
    pub link_check_ms: u64,
    /// How long connecting, discovery and the hello may take, in
    /// milliseconds.
    pub handshake_timeout_ms: u64,
    /// How long a peripheral that failed (or is another app's) is left
    /// alone, in milliseconds.
    pub retry_after_ms: u64,
    /// Events kept for [`BleTransport::take_events`]'s reader.
    pub event_capacity: usize,
    /// The advertised local name.
    pub local_name: String,
}

impl BleConfig {
    /// Both roles, the planner's default of 3 BLE links.
    pub fn new(app_key: AppKey) -> BleConfig {
        BleConfig {
            app_key,
            central: true,
            peripheral: true,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            outbound_frames: 16,
            inbound_chunks: 64,
            notify_queue: 64,
            max_centrals: 3,
            max_links: 3,
            scan_interval_ms: 1_000,
            link_check_ms: 1_000,
            handshake_timeout_ms: 10_000,
            retry_after_ms: 10_000,
            event_capacity: 1_024,
            local_name: "rhizome".to_string(),
        }
    }

    fn check(&self) -> Result<(), BleError> {
        let zero = [
            self.outbound_frames,
            self.inbound_chunks,
            self.notify_queue,
            self.max_centrals,
            self.max_links,
            self.event_capacity,
        ]
        .contains(&0);
        if zero || self.max_centrals > 255 || self.link_check_ms == 0 || self.scan_interval_ms == 0 {
            return Err(BleError::Config {
                reason: "queues, limits and intervals must be at least 1, max_centrals at most 255",
            });
        }
        Ok(())
    }
}

/// Why the transport could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum BleError {
    /// No Bluetooth adapter, or BlueZ / D-Bus could not be reached.
    NoAdapter {
        /// What the stack said.
        reason: String,
    },
    /// The central role could not start (btleplug).
    Central(btleplug::Error),
    /// The peripheral role could not start (bluer).
    Peripheral(bluer::Error),
    /// A setting is out of range.
    Config {
        /// Which setting, and why.
        reason: &'static str,
    },
}

impl fmt::Display for BleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BleError::NoAdapter { reason } => write!(f, "no Bluetooth adapter: {reason}"),
            BleError::Central(e) => write!(f, "central role: {e}"),
            BleError::Peripheral(e) => write!(f, "peripheral role: {e}"),
            BleError::Config { reason } => write!(f, "configuration: {reason}"),
        }
    }
}

impl std::error::Error for BleError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BleError::Central(e) => Some(e),
            BleError::Peripheral(e) => Some(e),
            _ => None,
        }
    }
}

/// Why a link failed or ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum LinkError {
    /// The central's BLE operation failed (connect, discover, read,
    /// subscribe, write).
    Central(btleplug::Error),
    /// A step took longer than allowed.
    Timeout {
        /// The step.
        step: &'static str,
        /// The limit, in milliseconds.
        after_ms: u64,
    },
    /// The peripheral does not serve the whole Rhizome service.
    MissingCharacteristic,
    /// The remote's info, hello or proof is malformed.
    BadInfo(InfoError),
    /// The remote did not prove that it holds the app key.
    NotAdmitted(AuthError),
    /// A frame from the remote did not open (altered, replayed or
    /// foreign): the link ends.
    BadFrame(AuthError),
    /// The remote belongs to another app (its app tag differs).
    OtherApp,
    /// The remote is this peer.
    SelfLink,
    /// Another link to the same peer is kept.
    Duplicate,
    /// The device disconnected.
    Disconnected,
    /// The system gave no randomness for a nonce.
    Randomness,
    /// The sync session could not start.
    Session(rhizome_actors::PeerError),
    /// The sync session ended.
    SessionEnded,
    /// The transport is closing.
    Closing,
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Central(e) => write!(f, "BLE: {e}"),
            LinkError::Timeout { step, after_ms } => write!(f, "{step} took over {after_ms} ms"),
            LinkError::MissingCharacteristic => f.write_str("the device lacks the Rhizome service"),
            LinkError::BadInfo(e) => write!(f, "the remote's handshake: {e}"),
            LinkError::NotAdmitted(e) => write!(f, "not admitted: {e}"),
            LinkError::BadFrame(e) => write!(f, "frame refused: {e}"),
            LinkError::OtherApp => f.write_str("the remote belongs to another app"),
            LinkError::SelfLink => f.write_str("the remote is this peer"),
            LinkError::Duplicate => f.write_str("another link to this peer is kept"),
            LinkError::Disconnected => f.write_str("the device disconnected"),
            LinkError::Randomness => f.write_str("no randomness for a nonce"),
            LinkError::Session(e) => write!(f, "sync session: {e}"),
            LinkError::SessionEnded => f.write_str("the sync session ended"),
            LinkError::Closing => f.write_str("the transport is closing"),
        }
    }
}

impl std::error::Error for LinkError {}

/// What happened to a link (see [`BleTransport::take_events`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum LinkEvent {
    /// A link is up and its sync session started.
    Up {
        /// The remote peer (as it claims).
        remote: PeerId,
        /// Its Bluetooth address.
        address: String,
        /// Whether this peer was the central.
        central: bool,
    },
    /// A link that was up went down.
    Down {
        /// The remote peer.
        remote: PeerId,
        /// Why.
        reason: LinkError,
    },
    /// A connection failed before its link was up.
    Failed {
        /// The remote's Bluetooth address.
        address: String,
        /// Why.
        reason: LinkError,
    },
}

/// A live link in the table of links.
struct Entry {
    central: PeerId,
    generation: u64,
    /// Set to true to end the link (another replaced it).
    stop: watch::Sender<bool>,
}

/// What both roles share.
pub(crate) struct Shared {
    peer: Peer,
    me: PeerId,
    app: AppTag,
    auth: AuthKey,
    config: BleConfig,
    links: Mutex<BTreeMap<PeerId, Entry>>,
    generations: AtomicU64,
    events: mpsc::Sender<LinkEvent>,
    dropped_events: AtomicU64,
    shutdown: watch::Sender<bool>,
}

impl Shared {
    fn emit(&self, event: LinkEvent) {
        if self.events.try_send(event).is_err() {
            self.dropped_events.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn has_link(&self, peer: PeerId) -> bool {
        self.links.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&peer)
    }

    fn link_count(&self) -> usize {
        self.links.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The early filter on a remote's info or hello: same app tag, not
    /// this peer. (Admission is the MAC check that follows.)
    fn filter(&self, peer: PeerId, app: AppTag) -> Result<(), LinkError> {
        if app != self.app {
            return Err(LinkError::OtherApp);
        }
        if peer == self.me {
            return Err(LinkError::SelfLink);
        }
        Ok(())
    }

    /// Enters a link in the table, or refuses it as a duplicate: of two
    /// links to one peer, the one whose central has the lower peer id is
    /// kept (both sides apply the same rule, so they agree). Returns the
    /// link's generation and the signal that ends it.
    fn register(&self, remote: PeerId, central: PeerId) -> Result<(u64, watch::Receiver<bool>), LinkError> {
        let preferred = self.me.min(remote);
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = links.get(&remote) {
            if old.central == preferred && central != preferred {
                return Err(LinkError::Duplicate);
            }
            old.stop.send_replace(true);
        }
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        let (stop, stopped) = watch::channel(false);
        links.insert(
            remote,
            Entry {
                central,
                generation,
                stop,
            },
        );
        Ok((generation, stopped))
    }

    fn unregister(&self, remote: PeerId, generation: u64) {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if links.get(&remote).is_some_and(|e| e.generation == generation) {
            links.remove(&remote);
        }
    }
}

/// A fresh handshake nonce from the system's randomness.
fn fresh_nonce() -> Result<[u8; crate::ble_auth::NONCE_BYTES], LinkError> {
    use ring::rand::SecureRandom;
    let mut nonce = [0u8; crate::ble_auth::NONCE_BYTES];
    ring::rand::SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| LinkError::Randomness)?;
    Ok(nonce)
}

/// One connection's ends, as both roles hand them to [`run_link`].
pub(crate) struct LinkIo {
    /// The remote peer and its Bluetooth address.
    remote: PeerId,
    address: String,
    /// The peer id of the link's central (for the duplicate rule).
    central: PeerId,
    /// Largest chunk the radio carries this way, in bytes (the slot byte
    /// not counted).
    chunk_bytes: usize,
    /// The slot byte to put before each outgoing chunk (peripheral).
    slot: Option<u8>,
    /// Chunks from the remote.
    chunks_in: mpsc::Receiver<Vec<u8>>,
    /// Chunks to the remote (the role's writer sends them).
    chunks_out: mpsc::Sender<Vec<u8>>,
    /// Seals this peer's frames, and opens the remote's.
    sealer: Sealer,
    opener: Opener,
}

/// Runs one admitted connection's sync session until the link ends
/// (`gone` resolves when the device disconnects); says why it ended.
/// Failures before the session starts are reported as `Failed`.
pub(crate) async fn run_link(
    shared: &Arc<Shared>,
    io: LinkIo,
    gone: impl std::future::Future<Output = LinkError>,
) -> Result<(), LinkError> {
    let (generation, mut stopped) = shared.register(io.remote, io.central)?;
    let (outbound, frames) = mpsc::channel(shared.config.outbound_frames);
    let link = match shared.peer.attach_link(io.remote, LinkKind::Ble, outbound).await {
        Ok(link) => link,
        Err(e) => {
            shared.unregister(io.remote, generation);
            return Err(LinkError::Session(e));
        }
    };
    let (remote, address) = (io.remote, io.address.clone());
    let central = io.central == shared.me;
    tracing::info!(me = %shared.me, %remote, %address, central, "BLE link up");
    shared.emit(LinkEvent::Up {
        remote,
        address,
        central,
    });
    let mut shutdown = shared.shutdown.subscribe();
    // A sealed frame carries its counter and tag besides the frame.
    let max_frame_bytes = shared.config.max_frame_bytes as usize + crate::ble_auth::SEAL_OVERHEAD_BYTES;
    let reason = tokio::select! {
        r = write_frames(frames, io.sealer, io.chunks_out, io.chunk_bytes, io.slot) => r,
        r = read_chunks(&link, io.opener, io.chunks_in, max_frame_bytes) => r,
        r = gone => r,
        _ = stopped.wait_for(|stop| *stop) => LinkError::Duplicate,
        _ = shutdown.wait_for(|closing| *closing) => LinkError::Closing,
    };
    // Bounded; if it times out, dropping the handle ends the session.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), link.close()).await;
    shared.unregister(remote, generation);
    tracing::info!(me = %shared.me, %remote, %reason, "BLE link down");
    shared.emit(LinkEvent::Down { remote, reason });
    Ok(())
}

/// Cuts the session's frames into chunks for the radio, until the session
/// ends (it held the only sender) or the role's writer is gone.
async fn write_frames(
    mut frames: mpsc::Receiver<Vec<u8>>,
    mut sealer: Sealer,
    chunks_out: mpsc::Sender<Vec<u8>>,
    chunk_bytes: usize,
    slot: Option<u8>,
) -> LinkError {
    let mut chunker = Chunker::new();
    let chunk_bytes = chunk_bytes.max(MIN_CHUNK_BYTES);
    while let Some(frame) = frames.recv().await {
        let frame = match sealer.seal(&frame) {
            Ok(sealed) => sealed,
            Err(e) => return LinkError::BadFrame(e),
        };
        // Only a frame over 4 GiB fails to split; the session never makes
        // one.
        let Ok(chunks) = chunker.split(&frame, chunk_bytes) else {
            continue;
        };
        for chunk in chunks {
            let chunk = match slot {
                Some(slot) => [&[slot][..], &chunk].concat(),
                None => chunk,
            };
            if chunks_out.send(chunk).await.is_err() {
                return LinkError::Disconnected;
            }
        }
    }
    LinkError::SessionEnded
}

/// Rebuilds frames from the remote's chunks, opens them and hands them to
/// the session, until the chunks stop (the device is gone), the session
/// ends, or a frame does not open. A damaged or lost chunk drops its frame
/// (the session asks again).
async fn read_chunks(
    link: &rhizome_actors::AttachedLink,
    mut opener: Opener,
    mut chunks_in: mpsc::Receiver<Vec<u8>>,
    max_frame_bytes: usize,
) -> LinkError {
    let mut frames = Reassembler::new(max_frame_bytes);
    while let Some(chunk) = chunks_in.recv().await {
        let frame = match frames.push(&chunk) {
            Ok(Some(frame)) => frame,
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!(remote = %link.remote(), error = %e, "BLE chunk refused; its frame is dropped");
                // The refused chunk may start the next frame.
                match frames.push(&chunk) {
                    Ok(Some(frame)) => frame,
                    _ => continue,
                }
            }
        };
        let frame = match opener.open(&frame) {
            Ok(frame) => frame,
            Err(e) => return LinkError::BadFrame(e),
        };
        // Waits while the session's mailbox is full: the chunk queue then
        // fills and the role stops taking chunks from the radio.
        if link.deliver(frame).await.is_err() {
            return LinkError::SessionEnded;
        }
    }
    LinkError::Disconnected
}

/// Waits until the device at `address` is no longer connected, checking
/// every `link_check_ms` with `connected` (false or an error: gone).
pub(crate) async fn watch_connected<F, Fut>(link_check_ms: u64, mut connected: F) -> LinkError
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    // Bounded by the connection's life: each pass waits the interval.
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(link_check_ms)).await;
        if !connected().await {
            return LinkError::Disconnected;
        }
    }
}

/// Whether this machine has a Bluetooth adapter BlueZ can use, or why not
/// (no D-Bus system bus, no BlueZ, no adapter). Tests skip on `Err`.
pub async fn adapter_present() -> Result<String, BleError> {
    let no = |reason: String| BleError::NoAdapter { reason };
    let session = bluer::Session::new().await.map_err(|e| no(e.to_string()))?;
    let adapter = session.default_adapter().await.map_err(|e| no(e.to_string()))?;
    Ok(adapter.name().to_string())
}

/// Bluetooth LE links of one peer (see the module doc).
pub struct BleTransport {
    shared: Arc<Shared>,
    events: Mutex<Option<mpsc::Receiver<LinkEvent>>>,
    /// Keeps the advertisement and the GATT application up.
    _peripheral: Option<peripheral::Running>,
}

impl fmt::Debug for BleTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BleTransport")
            .field("me", &self.shared.me)
            .finish_non_exhaustive()
    }
}

impl BleTransport {
    /// Starts the roles the config asks for on the default adapter. Must
    /// be called inside a tokio runtime; fails with
    /// [`BleError::NoAdapter`] when there is no usable adapter.
    pub async fn start(peer: Peer, config: BleConfig) -> Result<BleTransport, BleError> {
        config.check()?;
        adapter_present().await?;
        let (events_tx, events_rx) = mpsc::channel(config.event_capacity);
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            me: peer.id(),
            app: AppTag::of(&config.app_key),
            auth: AuthKey::of(&config.app_key),
            peer,
            config,
            links: Mutex::default(),
            generations: AtomicU64::new(1),
            events: events_tx,
            dropped_events: AtomicU64::new(0),
            shutdown,
        });
        let running = if shared.config.peripheral {
            Some(peripheral::start(shared.clone()).await?)
        } else {
            None
        };
        if shared.config.central {
            central::start(shared.clone()).await?;
        }
        Ok(BleTransport {
            shared,
            events: Mutex::new(Some(events_rx)),
            _peripheral: running,
        })
    }

    /// The events of the links (once: later calls get `None`).
    pub fn take_events(&self) -> Option<mpsc::Receiver<LinkEvent>> {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Events dropped so far because nobody read them.
    pub fn dropped_events(&self) -> u64 {
        self.shared.dropped_events.load(Ordering::Relaxed)
    }

    /// Ends every link, stops advertising, serving and scanning.
    pub async fn close(&self) {
        self.shared.shutdown.send_replace(true);
        // The link tasks see the shutdown and end their sessions (bounded
        // waits); give them a moment to tell the remotes.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

impl Drop for BleTransport {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
    }
}

impl Transport for BleTransport {
    fn kind(&self) -> LinkKind {
        LinkKind::Ble
    }

    fn linked_peers(&self) -> Vec<PeerId> {
        let links = self.shared.links.lock().unwrap_or_else(|p| p.into_inner());
        links.keys().copied().collect()
    }

    async fn close(&self) {
        BleTransport::close(self).await
    }
}

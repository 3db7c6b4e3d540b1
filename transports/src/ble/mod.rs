//! Bluetooth LE links (feature `ble`, Linux: BlueZ over D-Bus).
//!
//! Every peer plays both roles at once: a *peripheral* ([`peripheral`],
//! bluer) advertises [`SERVICE_UUID`] and serves a GATT service, and a
//! *central* ([`central`], btleplug) scans for that service and connects to
//! the peripherals it finds. Each connection carries one sync session
//! ([`Peer::attach_link`], [`LinkKind::Ble`]). The service:
//!
//! - [`INFO_UUID`] (read, write with response): read, it gives the
//!   peripheral's [`Info`] (peer id, app tag, and the *slot* it gave the
//!   reading central); written, it takes the central's [`Hello`] (peer id,
//!   app tag), which starts the link, or is refused with an ATT error.
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
//! **Admission: none yet.** BLE has no TLS here. The app tag (derived from
//! the app key) only keeps apart peers of different apps that are honest;
//! anyone can read it from [`INFO_UUID`] and replay it, and nothing
//! authenticates the peer id either side claims. Until the identity issue,
//! a BLE link is unauthenticated: use it only where every device in radio
//! range may read and write the app's synced data.
//!
//! One link per remote peer, as on QUIC: when two peers connect to each
//! other (each a central of the other), both keep the link whose central
//! has the lower peer id. Every queue is bounded: chunks received per
//! central, notifications waiting for the radio, frames the session may
//! queue, centrals served at once ([`BleConfig::max_centrals`]), links
//! dialled at once ([`BleConfig::max_links`]), and events.

pub mod central;
pub mod peripheral;

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
/// First bytes of [`Info`] and [`Hello`] (format version 1).
pub const INFO_MAGIC: [u8; 4] = *b"RZB1";
/// Bytes of an app tag.
pub const APP_TAG_BYTES: usize = 8;
/// Bytes of a [`Hello`]: magic, peer id, app tag.
pub const HELLO_BYTES: usize = 4 + 8 + APP_TAG_BYTES;
/// Bytes of an [`Info`]: a hello's fields and the slot.
pub const INFO_BYTES: usize = HELLO_BYTES + 1;

/// A short tag naming an app's peers, derived from its app key
/// (HMAC-SHA256 of `rhizome ble app tag v1`, first 8 bytes). It filters:
/// it does not authenticate (anyone in range can read and replay it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppTag(pub [u8; APP_TAG_BYTES]);

impl AppTag {
    /// The tag of the app with this key.
    pub fn of(key: &AppKey) -> AppTag {
        let mac_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.bytes());
        let tag = ring::hmac::sign(&mac_key, b"rhizome ble app tag v1");
        let mut out = [0u8; APP_TAG_BYTES];
        out.copy_from_slice(&tag.as_ref()[..APP_TAG_BYTES]);
        AppTag(out)
    }
}

/// What a central writes to [`INFO_UUID`] to start a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The central's peer id (claimed, not authenticated).
    pub peer: PeerId,
    /// The central's app tag.
    pub app: AppTag,
}

/// What a central reads from [`INFO_UUID`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Info {
    /// The peripheral's peer id and app tag.
    pub hello: Hello,
    /// The byte before every notification meant for the reading central.
    pub slot: u8,
}

/// Why bytes read or written on the service are not what they should be.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InfoError {
    /// Wrong length.
    Length {
        /// Bytes expected.
        expected: usize,
        /// Bytes there.
        got: usize,
    },
    /// Not [`INFO_MAGIC`].
    BadMagic,
}

impl fmt::Display for InfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InfoError::Length { expected, got } => write!(f, "{got} bytes where {expected} were expected"),
            InfoError::BadMagic => f.write_str("not a Rhizome BLE hello (bad magic)"),
        }
    }
}

impl std::error::Error for InfoError {}

impl Hello {
    /// Its bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(INFO_BYTES);
        out.extend_from_slice(&INFO_MAGIC);
        out.extend_from_slice(&self.peer.0.to_be_bytes());
        out.extend_from_slice(&self.app.0);
        out
    }

    /// Reads a hello from exactly [`HELLO_BYTES`] bytes.
    pub fn decode(bytes: &[u8]) -> Result<Hello, InfoError> {
        let fixed: &[u8; HELLO_BYTES] = bytes.try_into().map_err(|_| InfoError::Length {
            expected: HELLO_BYTES,
            got: bytes.len(),
        })?;
        Hello::decode_fixed(fixed)
    }

    fn decode_fixed(bytes: &[u8; HELLO_BYTES]) -> Result<Hello, InfoError> {
        if bytes[..4] != INFO_MAGIC {
            return Err(InfoError::BadMagic);
        }
        let mut peer = [0u8; 8];
        peer.copy_from_slice(&bytes[4..12]);
        let mut app = [0u8; APP_TAG_BYTES];
        app.copy_from_slice(&bytes[12..]);
        Ok(Hello {
            peer: PeerId(u64::from_be_bytes(peer)),
            app: AppTag(app),
        })
    }
}

impl Info {
    /// Its bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.hello.encode();
        out.push(self.slot);
        out
    }

    /// Reads an info from exactly [`INFO_BYTES`] bytes.
    pub fn decode(bytes: &[u8]) -> Result<Info, InfoError> {
        let (&slot, hello) = bytes
            .split_last()
            .filter(|_| bytes.len() == INFO_BYTES)
            .ok_or(InfoError::Length {
                expected: INFO_BYTES,
                got: bytes.len(),
            })?;
        Ok(Info {
            hello: Hello::decode(hello)?,
            slot,
        })
    }
}

/// How a [`BleTransport`] runs. Build with [`BleConfig::new`] and set
/// fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BleConfig {
    /// The app key (only its [`AppTag`] is used: see the module doc).
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
    /// The remote's info or hello is malformed.
    BadInfo(InfoError),
    /// The remote belongs to another app (its app tag differs).
    OtherApp,
    /// The remote is this peer.
    SelfLink,
    /// Another link to the same peer is kept.
    Duplicate,
    /// The device disconnected.
    Disconnected,
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
            LinkError::BadInfo(e) => write!(f, "the remote's hello: {e}"),
            LinkError::OtherApp => f.write_str("the remote belongs to another app"),
            LinkError::SelfLink => f.write_str("the remote is this peer"),
            LinkError::Duplicate => f.write_str("another link to this peer is kept"),
            LinkError::Disconnected => f.write_str("the device disconnected"),
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

    /// Checks a remote's hello: same app, not this peer.
    fn admit(&self, hello: &Hello) -> Result<(), LinkError> {
        if hello.app != self.app {
            return Err(LinkError::OtherApp);
        }
        if hello.peer == self.me {
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
    let max_frame_bytes = shared.config.max_frame_bytes as usize;
    let reason = tokio::select! {
        r = write_frames(frames, io.chunks_out, io.chunk_bytes, io.slot) => r,
        r = read_chunks(&link, io.chunks_in, max_frame_bytes) => r,
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
    chunks_out: mpsc::Sender<Vec<u8>>,
    chunk_bytes: usize,
    slot: Option<u8>,
) -> LinkError {
    let mut chunker = Chunker::new();
    let chunk_bytes = chunk_bytes.max(MIN_CHUNK_BYTES);
    while let Some(frame) = frames.recv().await {
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

/// Rebuilds frames from the remote's chunks and hands them to the
/// session, until the chunks stop (the device is gone) or the session
/// ends. A damaged or lost chunk drops its frame (the session asks again).
async fn read_chunks(
    link: &rhizome_actors::AttachedLink,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> AppKey {
        AppKey::new(vec![byte; 32]).expect("a long enough key")
    }

    #[test]
    fn info_and_hello_round_trip() {
        let hello = Hello {
            peer: PeerId(0x0102_0304_0506_0708),
            app: AppTag::of(&key(1)),
        };
        assert_eq!(hello.encode().len(), HELLO_BYTES);
        assert_eq!(Hello::decode(&hello.encode()), Ok(hello));
        let info = Info { hello, slot: 7 };
        assert_eq!(info.encode().len(), INFO_BYTES);
        assert_eq!(Info::decode(&info.encode()), Ok(info));
    }

    #[test]
    fn malformed_info_is_an_error() {
        assert_eq!(
            Info::decode(&[]),
            Err(InfoError::Length {
                expected: INFO_BYTES,
                got: 0
            })
        );
        assert_eq!(
            Hello::decode(&[0; HELLO_BYTES + 1]),
            Err(InfoError::Length {
                expected: HELLO_BYTES,
                got: HELLO_BYTES + 1
            })
        );
        assert_eq!(Hello::decode(&[0; HELLO_BYTES]), Err(InfoError::BadMagic));
        assert_eq!(Info::decode(&[0; INFO_BYTES]), Err(InfoError::BadMagic));
    }

    #[test]
    fn app_tags_differ_between_apps_and_agree_within_one() {
        assert_eq!(AppTag::of(&key(1)), AppTag::of(&key(1)));
        assert_ne!(AppTag::of(&key(1)), AppTag::of(&key(2)));
    }
}

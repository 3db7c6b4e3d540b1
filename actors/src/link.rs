//! Modelled links: an in-process link that behaves like a radio or a LAN,
//! with the faults a simulator injects.
//!
//! Each direction is a pipe of two stages. The *transmitter* cuts every
//! frame into chunks of the link's MTU with the framing the real BLE
//! transport uses ([`rhizome_engine::sync::chunk`]), and
//! spends each chunk's serialization time (its bytes at the link's rate);
//! the *propagator* delivers each chunk after the link's latency. Chunks
//! keep their order, a slow link never delays a fast one (each link has its
//! own pipe), and the bytes in flight are bounded by the pipe's queues.
//! The receiving side reassembles frames and hands them to its session.
//!
//! Faults ([`Faults`], per direction, set in the [`LinkModel`] and changed
//! at run time with [`InProcessLink::set_faults`]):
//! - *loss* drops chunks on the air (their airtime is spent); the
//!   receiver's reassembler sees the gap in the chunks' sequence numbers,
//!   discards the frame the lost chunk belonged to, and starts afresh at
//!   the next first chunk;
//! - *duplication* delivers a whole frame twice, *reordering* holds a
//!   whole frame back and delivers it after the next one (or after a short
//!   hold if none comes): what a transport that reconnects or retries
//!   mid-message does;
//! - *delay spikes* hold one chunk, and so everything behind it, for extra
//!   time (a retransmitting radio);
//! - a *clog* stops a direction from delivering until it is lifted; nothing
//!   is lost, the queues fill and the sender is held back. Clogging one
//!   direction only is an asymmetric partition.
//!
//! Every random choice comes from a generator seeded by
//! [`LinkModel::with_seed`] (one stream per direction), never from the
//! thread's generator, so the same seed gives the same faults. Time comes
//! from `tokio::time`, so under madsim a BLE sync of megabytes takes virtual
//! seconds and no real ones.

use crate::actor::WeakAddr;
use crate::peer::InProcessLink;
use crate::presence::LinkKind;
use crate::session::{SessionActor, SessionMsg};
use rhizome_engine::sync::chunk::{Chunker, Reassembler, MIN_CHUNK_BYTES};
use rhizome_engine::sync::wire::DEFAULT_MAX_FRAME_BYTES;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Faults of one direction of a link. Probabilities are in parts per
/// million; the default is a perfect link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Chance that a chunk is lost (its frame is then discarded).
    pub loss_ppm: u32,
    /// Chance that a frame is delivered twice.
    pub duplicate_ppm: u32,
    /// Chance that a frame is held back and delivered after the next one.
    pub reorder_ppm: u32,
    /// Chance that a chunk is delayed by `spike_ms` (and everything behind
    /// it with it).
    pub spike_ppm: u32,
    /// Length of a delay spike, in milliseconds.
    pub spike_ms: u64,
    /// The direction delivers nothing until unclogged (nothing is lost).
    pub clogged: bool,
}

impl Faults {
    /// A perfect link.
    pub fn none() -> Faults {
        Faults::default()
    }

    /// Whether any fault is set.
    pub fn any(&self) -> bool {
        *self != Faults::default()
    }
}

/// A direction of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// From the peer that connected (`a` in
    /// `a.connect_in_process_with(&b, ..)`) to the other.
    Forward,
    /// From the other peer back to the one that connected.
    Backward,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::Forward => 0,
            Direction::Backward => 1,
        }
    }
}

/// How a link behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkModel {
    /// Its kind (shown in presence).
    pub kind: LinkKind,
    /// Largest packet, in bytes (frames are cut into chunks of this size;
    /// below [`MIN_CHUNK_BYTES`] counts as that).
    pub mtu_bytes: usize,
    /// Throughput, in bytes per second.
    pub bytes_per_sec: u64,
    /// One-way latency, in milliseconds.
    pub latency_ms: u64,
    /// Faults, the same in both directions at first.
    pub faults: Faults,
    /// Seed of the fault generators.
    pub seed: u64,
}

impl LinkModel {
    /// Bluetooth LE: 244-byte packets, about 100 kB/s, 30 ms.
    pub fn ble() -> LinkModel {
        LinkModel {
            kind: LinkKind::Ble,
            mtu_bytes: 244,
            bytes_per_sec: 100_000,
            latency_ms: 30,
            faults: Faults::none(),
            seed: 0,
        }
    }

    /// Peer-to-peer Wi-Fi: about 20 MB/s, 5 ms.
    pub fn p2p_wifi() -> LinkModel {
        LinkModel {
            kind: LinkKind::P2pWifi,
            mtu_bytes: 1_400,
            bytes_per_sec: 20_000_000,
            latency_ms: 5,
            ..LinkModel::ble()
        }
    }

    /// A LAN: about 100 MB/s, under a millisecond.
    pub fn lan() -> LinkModel {
        LinkModel {
            kind: LinkKind::Lan,
            mtu_bytes: 1_400,
            bytes_per_sec: 100_000_000,
            latency_ms: 0,
            ..LinkModel::ble()
        }
    }

    /// The same link with another latency.
    pub fn with_latency_ms(mut self, latency_ms: u64) -> LinkModel {
        self.latency_ms = latency_ms;
        self
    }

    /// The same link with these faults (both directions).
    pub fn with_faults(mut self, faults: Faults) -> LinkModel {
        self.faults = faults;
        self
    }

    /// The same link with its fault generators seeded by `seed`.
    pub fn with_seed(mut self, seed: u64) -> LinkModel {
        self.seed = seed;
        self
    }

    fn serialization(&self, bytes: usize) -> Duration {
        let nanos = (bytes as u128 * 1_000_000_000) / u128::from(self.bytes_per_sec.max(1));
        Duration::from_nanos(nanos.min(u128::from(u64::MAX)) as u64)
    }
}

/// What crossed a link so far (both directions), and the link's current
/// faults (shared by its two pipes, so they can be changed at run time).
#[derive(Debug, Default)]
pub struct LinkStats {
    frames: AtomicU64,
    chunks: AtomicU64,
    bytes: AtomicU64,
    lost_chunks: AtomicU64,
    dropped_frames: AtomicU64,
    duplicated_frames: AtomicU64,
    reordered_frames: AtomicU64,
    spikes: AtomicU64,
    /// Faults per direction ([`Direction::index`]).
    faults: Mutex<[Faults; 2]>,
    /// Pipes started so far: the first is [`Direction::Forward`].
    pipes: AtomicUsize,
}

impl LinkStats {
    /// Frames (protocol messages) sent.
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    /// Chunks (link packets) sent.
    pub fn chunks(&self) -> u64 {
        self.chunks.load(Ordering::Relaxed)
    }

    /// Bytes sent, chunk headers included (lost chunks too: they took
    /// their airtime).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Chunks lost on the air.
    pub fn lost_chunks(&self) -> u64 {
        self.lost_chunks.load(Ordering::Relaxed)
    }

    /// Frames the receiver discarded (a chunk of theirs was lost).
    pub fn dropped_frames(&self) -> u64 {
        self.dropped_frames.load(Ordering::Relaxed)
    }

    /// Frames delivered twice.
    pub fn duplicated_frames(&self) -> u64 {
        self.duplicated_frames.load(Ordering::Relaxed)
    }

    /// Frames delivered after a later one.
    pub fn reordered_frames(&self) -> u64 {
        self.reordered_frames.load(Ordering::Relaxed)
    }

    /// Chunks held by a delay spike.
    pub fn spikes(&self) -> u64 {
        self.spikes.load(Ordering::Relaxed)
    }

    /// The faults of one direction now.
    pub fn faults(&self, direction: Direction) -> Faults {
        self.faults.lock().unwrap_or_else(|p| p.into_inner())[direction.index()]
    }

    fn set_faults(&self, direction: Direction, faults: Faults) {
        self.faults.lock().unwrap_or_else(|p| p.into_inner())[direction.index()] = faults;
    }

    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl InProcessLink {
    /// Changes the faults of one direction from now on (a modelled link
    /// only; an unmodelled one has none). Clogging or unclogging is
    /// `set_faults(dir, Faults { clogged, ..link.faults(dir) })`.
    pub fn set_faults(&self, direction: Direction, faults: Faults) {
        self.stats().set_faults(direction, faults);
    }

    /// The faults of one direction now.
    pub fn faults(&self, direction: Direction) -> Faults {
        self.stats().faults(direction)
    }
}

/// A small seeded generator (SplitMix64) for fault draws.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `ppm` parts per million (no draw when 0, so a
    /// perfect link spends no randomness).
    fn chance(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.next() % 1_000_000 < u64::from(ppm)
    }
}

/// Frames a pipe takes before the sender must wait (its outbox holds the
/// rest).
const PIPE_FRAMES: usize = 8;
/// Chunks in flight (sent, not yet delivered) per direction.
const IN_FLIGHT_CHUNKS: usize = 1_024;
/// How often a clogged direction looks whether it was unclogged.
const CLOG_POLL: Duration = Duration::from_millis(5);
/// Longest a frame held back for reordering waits for a later one.
const REORDER_HOLD: Duration = Duration::from_millis(50);

/// The sending end of one direction of a modelled link.
pub(crate) type Pipe = mpsc::Sender<Vec<u8>>;

/// Starts one direction of a link delivering to `to`; returns its sending
/// end. The first pipe started on `stats` is [`Direction::Forward`], the
/// second [`Direction::Backward`]. The tasks end when the sending end is
/// dropped or `to` is gone.
pub(crate) fn pipe(model: LinkModel, to: WeakAddr<SessionActor>, stats: Arc<LinkStats>) -> Pipe {
    let dir = stats.pipes.fetch_add(1, Ordering::Relaxed).min(1);
    stats.faults.lock().unwrap_or_else(|p| p.into_inner())[dir] = model.faults;
    let (frames_tx, mut frames_rx) = mpsc::channel::<Vec<u8>>(PIPE_FRAMES);
    let (air_tx, air_rx) = mpsc::channel::<(Instant, Vec<u8>)>(IN_FLIGHT_CHUNKS);
    let latency = Duration::from_millis(model.latency_ms);
    let seed = model.seed ^ (dir as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407);
    let mut draw = Draw(seed);
    let rx_stats = stats.clone();
    // Transmitter: serialization time per chunk, in order. Times under a
    // millisecond are owed and slept in one go (a real timer's resolution;
    // the rate is the same). Lost chunks spend their airtime too.
    tokio::spawn(async move {
        let mut owed = Duration::ZERO;
        let mut chunker = Chunker::new();
        let chunk_bytes = model.mtu_bytes.max(MIN_CHUNK_BYTES);
        while let Some(frame) = frames_rx.recv().await {
            LinkStats::count(&stats.frames);
            // Only a frame over 4 GiB fails to split; the session never
            // makes one, and a link would drop it all the same.
            let Ok(chunks) = chunker.split(&frame, chunk_bytes) else {
                LinkStats::count(&stats.dropped_frames);
                continue;
            };
            for chunk in chunks {
                owed += model.serialization(chunk.len());
                if owed >= Duration::from_millis(1) {
                    tokio::time::sleep(std::mem::take(&mut owed)).await;
                }
                stats.chunks.fetch_add(1, Ordering::Relaxed);
                stats.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                let faults = stats.faults.lock().unwrap_or_else(|p| p.into_inner())[dir];
                if draw.chance(faults.loss_ppm) {
                    LinkStats::count(&stats.lost_chunks);
                    continue;
                }
                let mut due = Instant::now() + latency;
                if draw.chance(faults.spike_ppm) {
                    LinkStats::count(&stats.spikes);
                    due += Duration::from_millis(faults.spike_ms);
                }
                if air_tx.send((due, chunk)).await.is_err() {
                    return;
                }
            }
        }
    });
    let draw = Draw(seed.rotate_left(17) ^ 0x5851_F42D_4C95_7F2D);
    tokio::spawn(receive(air_rx, to, rx_stats, dir, draw));
    frames_tx
}

/// Propagator and receiver of one direction: latency (and clogs), then
/// reassembly, frame faults and delivery.
async fn receive(
    mut air_rx: mpsc::Receiver<(Instant, Vec<u8>)>,
    to: WeakAddr<SessionActor>,
    stats: Arc<LinkStats>,
    dir: usize,
    mut draw: Draw,
) {
    let limit = DEFAULT_MAX_FRAME_BYTES as usize;
    let mut frames = Reassembler::new(limit);
    // A frame held back to be delivered after the next one.
    let mut held: Option<Vec<u8>> = None;
    loop {
        let next = match &held {
            None => air_rx.recv().await,
            Some(_) => match tokio::time::timeout(REORDER_HOLD, air_rx.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    // Nothing came after it: deliver it now.
                    let frame = held.take().unwrap_or_default();
                    if !deliver(&to, frame).await {
                        return;
                    }
                    continue;
                }
            },
        };
        let Some((due, chunk)) = next else { return };
        // Only a chunk still in the air waits: madsim rounds every sleep
        // up to the next millisecond, so sleeping for one already due
        // delivered a burst at one chunk per millisecond (1.4 MB/s on a
        // 20 MB/s Wi-Fi link) and cost a timer per chunk.
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        while stats.faults.lock().unwrap_or_else(|p| p.into_inner())[dir].clogged {
            tokio::time::sleep(CLOG_POLL).await;
        }
        let in_step = frames.in_step();
        let frame = match frames.push(&chunk) {
            Ok(Some(frame)) => frame,
            Ok(None) => continue,
            Err(_) => {
                // A chunk before this one was lost (a gap in the sequence
                // numbers): the partial frame is gone (the reassembler
                // dropped it). Counted once per loss: until the next first
                // chunk the reassembler is out of step and refuses the rest.
                // This chunk may start the next frame.
                if in_step {
                    LinkStats::count(&stats.dropped_frames);
                }
                match frames.push(&chunk) {
                    Ok(Some(frame)) => frame,
                    _ => continue,
                }
            }
        };
        let faults = stats.faults.lock().unwrap_or_else(|p| p.into_inner())[dir];
        if held.is_none() && draw.chance(faults.reorder_ppm) {
            LinkStats::count(&stats.reordered_frames);
            held = Some(frame);
            continue;
        }
        let twice = draw.chance(faults.duplicate_ppm);
        if twice {
            LinkStats::count(&stats.duplicated_frames);
            if !deliver(&to, frame.clone()).await {
                return;
            }
        }
        if !deliver(&to, frame).await {
            return;
        }
        if let Some(frame) = held.take() {
            if !deliver(&to, frame).await {
                return;
            }
        }
    }
}

/// Hands a frame to the receiving session; false once it is gone.
async fn deliver(to: &WeakAddr<SessionActor>, frame: Vec<u8>) -> bool {
    let Some(session) = to.upgrade() else { return false };
    session.tell(SessionMsg::Frame(frame)).await.is_ok()
}

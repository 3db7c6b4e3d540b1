//! Modelled links: an in-process link that behaves like a radio or a LAN.
//!
//! Each direction is a pipe of two stages. The *transmitter* cuts every
//! frame into chunks of the link's MTU (the same framing BLE uses) and
//! spends each chunk's serialization time (its bytes at the link's rate);
//! the *propagator* delivers each chunk after the link's latency. Chunks
//! keep their order, a slow link never delays a fast one (each link has its
//! own pipe), and the bytes in flight are bounded by the pipe's queues.
//! The receiving side reassembles frames and hands them to its session.
//!
//! Time comes from `tokio::time`, so under madsim a BLE sync of megabytes
//! takes virtual seconds and no real ones.

use crate::actor::WeakAddr;
use crate::presence::LinkKind;
use crate::session::{SessionActor, SessionMsg};
use rhizome_engine::sync::wire::{chunks, Reassembler, DEFAULT_MAX_FRAME_BYTES};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How a link behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkModel {
    /// Its kind (shown in presence).
    pub kind: LinkKind,
    /// Largest packet, in bytes (frames are cut into chunks of this size).
    pub mtu_bytes: usize,
    /// Throughput, in bytes per second.
    pub bytes_per_sec: u64,
    /// One-way latency, in milliseconds.
    pub latency_ms: u64,
}

impl LinkModel {
    /// Bluetooth LE: 244-byte packets, about 100 kB/s, 30 ms.
    pub fn ble() -> LinkModel {
        LinkModel {
            kind: LinkKind::Ble,
            mtu_bytes: 244,
            bytes_per_sec: 100_000,
            latency_ms: 30,
        }
    }

    /// Peer-to-peer Wi-Fi: about 20 MB/s, 5 ms.
    pub fn p2p_wifi() -> LinkModel {
        LinkModel {
            kind: LinkKind::P2pWifi,
            mtu_bytes: 1_400,
            bytes_per_sec: 20_000_000,
            latency_ms: 5,
        }
    }

    /// A LAN: about 100 MB/s, under a millisecond.
    pub fn lan() -> LinkModel {
        LinkModel {
            kind: LinkKind::Lan,
            mtu_bytes: 1_400,
            bytes_per_sec: 100_000_000,
            latency_ms: 0,
        }
    }

    /// The same link with another latency.
    pub fn with_latency_ms(mut self, latency_ms: u64) -> LinkModel {
        self.latency_ms = latency_ms;
        self
    }

    fn serialization(&self, bytes: usize) -> Duration {
        let nanos = (bytes as u128 * 1_000_000_000) / u128::from(self.bytes_per_sec.max(1));
        Duration::from_nanos(nanos.min(u128::from(u64::MAX)) as u64)
    }
}

/// What crossed a link so far (both directions).
#[derive(Debug, Default)]
pub struct LinkStats {
    frames: AtomicU64,
    chunks: AtomicU64,
    bytes: AtomicU64,
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

    /// Bytes sent, chunk headers included.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// Frames a pipe takes before the sender must wait (its outbox holds the
/// rest).
const PIPE_FRAMES: usize = 8;
/// Chunks in flight (sent, not yet delivered) per direction.
const IN_FLIGHT_CHUNKS: usize = 1_024;

/// The sending end of one direction of a modelled link.
pub(crate) type Pipe = mpsc::Sender<Vec<u8>>;

/// Starts one direction of a link delivering to `to`; returns its sending
/// end. The tasks end when the sending end is dropped or `to` is gone.
pub(crate) fn pipe(model: LinkModel, to: WeakAddr<SessionActor>, stats: Arc<LinkStats>) -> Pipe {
    let (frames_tx, mut frames_rx) = mpsc::channel::<Vec<u8>>(PIPE_FRAMES);
    let (air_tx, mut air_rx) = mpsc::channel::<(Instant, Vec<u8>)>(IN_FLIGHT_CHUNKS);
    let latency = Duration::from_millis(model.latency_ms);
    // Transmitter: serialization time per chunk, in order. Times under a
    // millisecond are owed and slept in one go (a real timer's resolution;
    // the rate is the same).
    tokio::spawn(async move {
        let mut owed = Duration::ZERO;
        while let Some(frame) = frames_rx.recv().await {
            stats.frames.fetch_add(1, Ordering::Relaxed);
            for chunk in chunks(&frame, model.mtu_bytes) {
                owed += model.serialization(chunk.len());
                if owed >= Duration::from_millis(1) {
                    tokio::time::sleep(std::mem::take(&mut owed)).await;
                }
                stats.chunks.fetch_add(1, Ordering::Relaxed);
                stats.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                if air_tx.send((Instant::now() + latency, chunk)).await.is_err() {
                    return;
                }
            }
        }
    });
    // Propagator and receiver: latency, then reassembly and delivery.
    tokio::spawn(async move {
        let mut frames = Reassembler::new(DEFAULT_MAX_FRAME_BYTES as usize);
        while let Some((due, chunk)) = air_rx.recv().await {
            tokio::time::sleep_until(due).await;
            let frame = match frames.push(&chunk) {
                Ok(Some(frame)) => frame,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "link: undecodable chunk; closing");
                    return;
                }
            };
            let Some(session) = to.upgrade() else { return };
            if session.tell(SessionMsg::Frame(frame)).await.is_err() {
                return;
            }
        }
    });
    frames_tx
}

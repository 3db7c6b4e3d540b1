//! The central role (btleplug): scan for the Rhizome service, connect,
//! discover, read the peripheral's info, subscribe to its notifications,
//! write the hello, then carry chunks (writes without response out,
//! notifications of this central's slot in).
//!
//! At most [`super::BleConfig::max_links`] links at once (counting those
//! where this peer is the peripheral); a peripheral that failed, or is
//! another app's, is left alone for [`super::BleConfig::retry_after_ms`].

use super::{fresh_nonce, Hello, Proof, INFO_UUID, SERVICE_UUID, WRITE_UUID};
use super::{run_link, watch_connected, BleError, Info, LinkError, LinkEvent, LinkIo, Shared, NOTIFY_UUID};
use crate::ble_auth::{Role, Transcript};
use btleplug::api::{Central as _, Characteristic, Manager as _, Peripheral as _, ScanFilter, WriteType};
use btleplug::platform::{Adapter, Manager, Peripheral, PeripheralId};
use futures_util::StreamExt;
use rhizome_engine::sync::chunk::chunk_bytes_for_att_mtu;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Chunks queued for the radio on one link (writes wait for D-Bus).
const WRITE_QUEUE_CHUNKS: usize = 16;
/// Peripherals remembered as failed (the oldest entries go first).
const MAX_RETRY_ENTRIES: usize = 1_024;

/// Peripherals being dialled or linked, and those left alone until a time.
#[derive(Default)]
struct Dialing {
    busy: BTreeSet<PeripheralId>,
    retry_at: BTreeMap<PeripheralId, Instant>,
}

/// Starts scanning on the first adapter and dialling what the scan finds.
pub(crate) async fn start(shared: Arc<Shared>) -> Result<(), BleError> {
    let manager = Manager::new().await.map_err(BleError::Central)?;
    let adapter = manager
        .adapters()
        .await
        .map_err(BleError::Central)?
        .into_iter()
        .next()
        .ok_or_else(|| BleError::NoAdapter {
            reason: "btleplug found no adapter".to_string(),
        })?;
    adapter
        .start_scan(ScanFilter {
            services: vec![SERVICE_UUID],
        })
        .await
        .map_err(BleError::Central)?;
    tokio::spawn(scan_loop(shared, adapter));
    Ok(())
}

/// Every scan interval, dials the peripherals of the service not yet
/// linked, until the transport closes.
async fn scan_loop(shared: Arc<Shared>, adapter: Adapter) {
    let dialing = Arc::new(Mutex::new(Dialing::default()));
    let mut shutdown = shared.shutdown.subscribe();
    let interval = Duration::from_millis(shared.config.scan_interval_ms);
    // Bounded by the transport's life: each pass waits the interval.
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|closing| *closing) => break,
        }
        let Ok(found) = adapter.peripherals().await else {
            continue;
        };
        for p in found {
            if !offers_service(&p).await || !claim(&shared, &dialing, p.id()) {
                continue;
            }
            let (shared, dialing) = (shared.clone(), dialing.clone());
            tokio::spawn(async move {
                let id = p.id();
                let failed = dial(&shared, &p).await.is_err();
                let _ = p.disconnect().await;
                let mut d = dialing.lock().unwrap_or_else(|e| e.into_inner());
                d.busy.remove(&id);
                if failed {
                    if d.retry_at.len() >= MAX_RETRY_ENTRIES {
                        d.retry_at.pop_first();
                    }
                    let wait = Duration::from_millis(shared.config.retry_after_ms);
                    d.retry_at.insert(id, Instant::now() + wait);
                }
            });
        }
    }
    let _ = adapter.stop_scan().await;
}

/// Whether the scan saw the peripheral advertise the service.
async fn offers_service(p: &Peripheral) -> bool {
    matches!(p.properties().await, Ok(Some(props)) if props.services.contains(&SERVICE_UUID))
}

/// Marks a peripheral as being dialled, if it is not already, is not left
/// alone, and a link slot is free.
fn claim(shared: &Shared, dialing: &Mutex<Dialing>, id: PeripheralId) -> bool {
    let mut d = dialing.lock().unwrap_or_else(|e| e.into_inner());
    if d.busy.contains(&id) || d.busy.len() + shared.link_count() >= shared.config.max_links {
        return false;
    }
    if d.retry_at.get(&id).is_some_and(|at| *at > Instant::now()) {
        return false;
    }
    d.retry_at.remove(&id);
    d.busy.insert(id)
}

/// Connects to one peripheral and runs its link until it ends. `Err`:
/// it failed before the link was up (reported as `Failed`).
async fn dial(shared: &Arc<Shared>, p: &Peripheral) -> Result<(), ()> {
    let address = p.address().to_string();
    let setup = tokio::time::timeout(
        Duration::from_millis(shared.config.handshake_timeout_ms),
        handshake(shared, p),
    )
    .await
    .unwrap_or(Err(LinkError::Timeout {
        step: "connecting",
        after_ms: shared.config.handshake_timeout_ms,
    }));
    let outcome = match setup {
        Ok((io, writer)) => {
            let gone = async {
                tokio::select! {
                    r = watch_connected(shared.config.link_check_ms, || async {
                        p.is_connected().await.unwrap_or(false)
                    }) => r,
                    _ = writer => LinkError::Disconnected,
                }
            };
            run_link(shared, io, gone).await
        }
        Err(e) => Err(e),
    };
    outcome.map_err(|reason| shared.emit(LinkEvent::Failed { address, reason }))
}

/// Connect, discover, read the info, subscribe, write the hello, read and
/// check the proof; gives the link's ends and the task that writes its
/// chunks.
async fn handshake(shared: &Arc<Shared>, p: &Peripheral) -> Result<(LinkIo, tokio::task::JoinHandle<()>), LinkError> {
    p.connect().await.map_err(LinkError::Central)?;
    p.discover_services().await.map_err(LinkError::Central)?;
    let find = |uuid| -> Result<Characteristic, LinkError> {
        p.characteristics()
            .into_iter()
            .find(|c| c.uuid == uuid && c.service_uuid == SERVICE_UUID)
            .ok_or(LinkError::MissingCharacteristic)
    };
    let (info_c, write_c, notify_c) = (find(INFO_UUID)?, find(WRITE_UUID)?, find(NOTIFY_UUID)?);
    let info = Info::decode(&p.read(&info_c).await.map_err(LinkError::Central)?).map_err(LinkError::BadInfo)?;
    shared.filter(info.peer, info.app)?;
    let remote = info.peer;
    if shared.has_link(remote) && shared.me > remote {
        // The remote is our central already, and its link is the one kept.
        return Err(LinkError::Duplicate);
    }
    // Subscribe before the hello: the peripheral's first frames follow it.
    let notifications = p.notifications().await.map_err(LinkError::Central)?;
    p.subscribe(&notify_c).await.map_err(LinkError::Central)?;
    let (in_tx, chunks_in) = mpsc::channel(shared.config.inbound_chunks);
    let slot = info.slot;
    tokio::spawn(async move {
        let mut ours = notifications.filter(|n| std::future::ready(n.uuid == NOTIFY_UUID));
        // Ends with the connection (the stream ends) or the link (its
        // receiver is dropped, even if no notification comes again).
        loop {
            let n = tokio::select! {
                n = ours.next() => n,
                _ = in_tx.closed() => return,
            };
            let Some(n) = n else { return };
            if let Some((&s, chunk)) = n.value.split_first() {
                if s == slot && in_tx.send(chunk.to_vec()).await.is_err() {
                    return;
                }
            }
        }
    });
    let transcript = Transcript {
        peripheral: remote,
        central: shared.me,
        slot,
        peripheral_nonce: info.nonce,
        central_nonce: fresh_nonce()?,
    };
    let hello = Hello {
        peer: shared.me,
        app: shared.app,
        nonce: transcript.central_nonce,
        mac: transcript.central_mac(&shared.auth),
    };
    p.write(&info_c, &hello.encode(), WriteType::WithResponse)
        .await
        .map_err(LinkError::Central)?;
    // Nothing is sent on the link before the peripheral has proved the key
    // (its early frames wait in the bounded chunk queue).
    let proof = Proof::decode(&p.read(&info_c).await.map_err(LinkError::Central)?).map_err(LinkError::BadInfo)?;
    transcript
        .verify_peripheral(&shared.auth, &proof.mac)
        .map_err(LinkError::NotAdmitted)?;
    let (sealer, opener) = transcript.frame_keys(&shared.auth, Role::Central);
    let (chunks_out, mut out_rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE_CHUNKS);
    let writer_p = p.clone();
    let writer = tokio::spawn(async move {
        // Ends when the link drops its sender or a write fails.
        while let Some(chunk) = out_rx.recv().await {
            if writer_p
                .write(&write_c, &chunk, WriteType::WithoutResponse)
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let io = LinkIo {
        remote,
        address: p.address().to_string(),
        central: shared.me,
        chunk_bytes: chunk_bytes_for_att_mtu(p.mtu()),
        slot: None,
        chunks_in,
        chunks_out,
        sealer,
        opener,
    };
    Ok((io, writer))
}

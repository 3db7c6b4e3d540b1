//! The peripheral role (bluer, BlueZ's GATT server API): advertise the
//! Rhizome service and serve its three characteristics to the centrals
//! that connect.
//!
//! A central first reads the info (which gives it a slot, one of
//! [`super::BleConfig::max_centrals`], and a fresh nonce; a slot not
//! followed by a hello within the handshake timeout is given to the next
//! asker), subscribes to notifications, then writes its hello. A hello
//! whose MAC proves the app key ([`crate::ble_auth`]) starts the link; the
//! central then reads this peer's proof from the same characteristic. Its
//! chunks
//! come on the write characteristic (told apart by the central's address)
//! and go out as notifications behind the slot byte. BlueZ calls the
//! application once for all subscribers, so one task owns the notifier
//! and sends every central's chunks from one bounded queue.

use super::{
    fresh_nonce, run_link, watch_connected, BleError, Hello, Info, LinkError, LinkEvent, LinkIo, Proof, Shared,
    HELLO_BYTES, INFO_UUID, NOTIFY_UUID, SERVICE_UUID, WRITE_UUID,
};
use crate::ble_auth::{read_at, PieceWrite, Role, Transcript, NONCE_BYTES};
use bluer::adv::{Advertisement, AdvertisementHandle};
use bluer::gatt::local::{
    Application, ApplicationHandle, Characteristic, CharacteristicNotifier, CharacteristicNotify,
    CharacteristicNotifyMethod, CharacteristicRead, CharacteristicWrite, CharacteristicWriteMethod, ReqError,
    ReqResult, Service,
};
use bluer::{Adapter, Address};
use rhizome_engine::sync::chunk::chunk_bytes_for_att_mtu;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Keeps the advertisement and the GATT application published; dropping
/// it unpublishes both.
pub(crate) struct Running {
    _advertisement: AdvertisementHandle,
    _application: ApplicationHandle,
}

/// A central that was given a slot.
struct Central {
    slot: u8,
    given_at: Instant,
    /// The nonce given with the slot (`Np`).
    nonce: [u8; NONCE_BYTES],
    /// The hello, as its pieces come.
    hello: PieceWrite,
    /// This peer's proof, once the central's hello was admitted.
    proof: Option<Proof>,
    /// Where its chunks go, once its hello started a link.
    chunks: Option<mpsc::Sender<Vec<u8>>>,
}

/// What the GATT callbacks share.
struct Serving {
    shared: Arc<Shared>,
    adapter: Adapter,
    centrals: Mutex<BTreeMap<Address, Central>>,
    notifier: tokio::sync::Mutex<Option<CharacteristicNotifier>>,
    notify_tx: mpsc::Sender<Vec<u8>>,
}

type Reply<T> = Pin<Box<dyn Future<Output = ReqResult<T>> + Send>>;

/// Powers the default adapter, publishes the service and advertises it.
pub(crate) async fn start(shared: Arc<Shared>) -> Result<Running, BleError> {
    let session = bluer::Session::new().await.map_err(BleError::Peripheral)?;
    let adapter = session.default_adapter().await.map_err(BleError::Peripheral)?;
    adapter.set_powered(true).await.map_err(BleError::Peripheral)?;
    let (notify_tx, notify_rx) = mpsc::channel(shared.config.notify_queue);
    let serving = Arc::new(Serving {
        shared: shared.clone(),
        adapter: adapter.clone(),
        centrals: Mutex::default(),
        notifier: tokio::sync::Mutex::new(None),
        notify_tx,
    });
    tokio::spawn(notify_loop(serving.clone(), notify_rx));
    let application = adapter
        .serve_gatt_application(application(&serving))
        .await
        .map_err(BleError::Peripheral)?;
    let advertisement = adapter
        .advertise(Advertisement {
            service_uuids: [SERVICE_UUID].into_iter().collect(),
            discoverable: Some(true),
            local_name: Some(shared.config.local_name.clone()),
            ..Default::default()
        })
        .await
        .map_err(BleError::Peripheral)?;
    Ok(Running {
        _advertisement: advertisement,
        _application: application,
    })
}

/// The GATT service and its callbacks.
fn application(serving: &Arc<Serving>) -> Application {
    let (read_s, hello_s, chunk_s, notify_s) = (serving.clone(), serving.clone(), serving.clone(), serving.clone());
    let info = Characteristic {
        uuid: INFO_UUID,
        read: Some(CharacteristicRead {
            read: true,
            fun: Box::new(move |req| {
                let s = read_s.clone();
                Box::pin(async move { s.info_for(req.device_address, req.offset.into()) }) as Reply<Vec<u8>>
            }),
            ..Default::default()
        }),
        write: Some(CharacteristicWrite {
            write: true,
            method: CharacteristicWriteMethod::Fun(Box::new(move |value, req| {
                let s = hello_s.clone();
                Box::pin(async move { s.hello_from(req.device_address, req.mtu, req.offset.into(), &value) })
                    as Reply<()>
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let write = Characteristic {
        uuid: WRITE_UUID,
        write: Some(CharacteristicWrite {
            write: true,
            write_without_response: true,
            method: CharacteristicWriteMethod::Fun(Box::new(move |value, req| {
                let s = chunk_s.clone();
                Box::pin(async move { s.chunk_from(req.device_address, value).await }) as Reply<()>
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let notify = Characteristic {
        uuid: NOTIFY_UUID,
        notify: Some(CharacteristicNotify {
            notify: true,
            method: CharacteristicNotifyMethod::Fun(Box::new(move |notifier| {
                let s = notify_s.clone();
                Box::pin(async move {
                    *s.notifier.lock().await = Some(notifier);
                })
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    Application {
        services: vec![Service {
            uuid: SERVICE_UUID,
            primary: true,
            characteristics: vec![info, write, notify],
            ..Default::default()
        }],
        ..Default::default()
    }
}

impl Serving {
    fn centrals(&self) -> std::sync::MutexGuard<'_, BTreeMap<Address, Central>> {
        self.centrals.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What a central reads from `offset` on: its proof once its hello was
    /// admitted, else the info with its slot and nonce (given now if it has
    /// none). No slot free, or no randomness: refused.
    fn info_for(&self, address: Address, offset: usize) -> ReqResult<Vec<u8>> {
        let shared = &self.shared;
        let expiry = Duration::from_millis(shared.config.handshake_timeout_ms);
        let mut centrals = self.centrals();
        // Slots given to centrals that never sent a hello go back.
        centrals.retain(|_, c| c.chunks.is_some() || c.given_at.elapsed() < expiry);
        let (slot, nonce) = match centrals.get(&address) {
            Some(Central { proof: Some(proof), .. }) => return Ok(read_at(&proof.encode(), offset).to_vec()),
            Some(c) => (c.slot, c.nonce),
            // The rest of a value whose start was never read.
            None if offset > 0 => return Err(ReqError::InvalidOffset),
            None => {
                let taken: Vec<u8> = centrals.values().map(|c| c.slot).collect();
                let slot = (0..shared.config.max_centrals.min(255) as u8)
                    .find(|s| !taken.contains(s))
                    .ok_or(ReqError::NotPermitted)?;
                let nonce = fresh_nonce().map_err(|_| ReqError::Failed)?;
                centrals.insert(
                    address,
                    Central {
                        slot,
                        given_at: Instant::now(),
                        nonce,
                        hello: PieceWrite::default(),
                        proof: None,
                        chunks: None,
                    },
                );
                (slot, nonce)
            }
        };
        let info = Info {
            peer: shared.me,
            app: shared.app,
            slot,
            nonce,
        };
        Ok(read_at(&info.encode(), offset).to_vec())
    }

    /// A piece of a central's hello; once whole, checks it, admits the
    /// central and starts its link.
    fn hello_from(self: &Arc<Self>, address: Address, att_mtu: u16, offset: usize, piece: &[u8]) -> ReqResult<()> {
        let whole = {
            let mut centrals = self.centrals();
            let central = centrals.get_mut(&address).ok_or(ReqError::NotPermitted)?;
            central
                .hello
                .push(offset, piece, HELLO_BYTES)
                .map_err(|_| ReqError::InvalidValueLength)?
        };
        match whole {
            Some(value) => self.admit(address, att_mtu, &value),
            None => Ok(()),
        }
    }

    /// Checks a whole hello and, if its MAC proves the app key, starts the
    /// link and keeps the proof for the central to read.
    fn admit(self: &Arc<Self>, address: Address, att_mtu: u16, value: &[u8]) -> ReqResult<()> {
        let hello = Hello::decode(value).map_err(|_| ReqError::InvalidValueLength)?;
        self.shared.filter(hello.peer, hello.app).map_err(|e| match e {
            LinkError::OtherApp => ReqError::NotAuthorized,
            _ => ReqError::NotPermitted,
        })?;
        let remote = hello.peer;
        // A link to the remote where this peer is the central is kept when
        // this peer's id is the lower (the rule of `Shared::register`).
        if self.shared.has_link(remote) && self.shared.me < remote {
            return Err(ReqError::NotPermitted);
        }
        let auth = &self.shared.auth;
        let (slot, chunks_in, transcript) = {
            let mut centrals = self.centrals();
            let central = centrals.get_mut(&address).ok_or(ReqError::NotPermitted)?;
            if central.chunks.is_some() {
                return Err(ReqError::InProgress);
            }
            let transcript = Transcript {
                peripheral: self.shared.me,
                central: remote,
                slot: central.slot,
                peripheral_nonce: central.nonce,
                central_nonce: hello.nonce,
            };
            if transcript.verify_central(auth, &hello.mac).is_err() {
                // The slot and its nonce go: the next try starts afresh.
                centrals.remove(&address);
                return Err(ReqError::NotAuthorized);
            }
            let (tx, rx) = mpsc::channel(self.shared.config.inbound_chunks);
            central.chunks = Some(tx);
            central.proof = Some(Proof {
                mac: transcript.peripheral_mac(auth),
            });
            (central.slot, rx, transcript)
        };
        let (sealer, opener) = transcript.frame_keys(auth, Role::Peripheral);
        let io = LinkIo {
            remote,
            address: address.to_string(),
            central: remote,
            // Notifications carry the slot byte too.
            chunk_bytes: chunk_bytes_for_att_mtu(att_mtu).saturating_sub(1),
            slot: Some(slot),
            chunks_in,
            chunks_out: self.notify_tx.clone(),
            sealer,
            opener,
        };
        tokio::spawn(self.clone().serve(address, io));
        Ok(())
    }

    /// Runs a central's link; then frees its slot and disconnects it.
    async fn serve(self: Arc<Self>, address: Address, io: LinkIo) {
        let shared = &self.shared;
        let device = self.adapter.device(address);
        let gone = async {
            let Ok(device) = &device else {
                return LinkError::Disconnected;
            };
            watch_connected(shared.config.link_check_ms, || async {
                device.is_connected().await.unwrap_or(false)
            })
            .await
        };
        if let Err(reason) = run_link(shared, io, gone).await {
            shared.emit(LinkEvent::Failed {
                address: address.to_string(),
                reason,
            });
        }
        self.centrals().remove(&address);
        if let Ok(device) = device {
            let _ = device.disconnect().await;
        }
    }

    /// A chunk from a central with a link; waits while its queue is full
    /// (the D-Bus call, and so BlueZ, is held back meanwhile).
    async fn chunk_from(&self, address: Address, value: Vec<u8>) -> ReqResult<()> {
        let chunks = self
            .centrals()
            .get(&address)
            .and_then(|c| c.chunks.clone())
            .ok_or(ReqError::NotPermitted)?;
        chunks.send(value).await.map_err(|_| ReqError::NotPermitted)
    }
}

/// Sends every queued notification through the notifier BlueZ gave (to
/// every subscribed central; each keeps its slot's). Without a notifier,
/// or once it fails, notifications are dropped (the sessions ask again).
async fn notify_loop(serving: Arc<Serving>, mut notify_rx: mpsc::Receiver<Vec<u8>>) {
    let mut shutdown = serving.shared.shutdown.subscribe();
    // Bounded by the transport's life: ends when it closes.
    loop {
        let value = tokio::select! {
            v = notify_rx.recv() => v,
            _ = shutdown.wait_for(|closing| *closing) => None,
        };
        let Some(value) = value else { return };
        let mut notifier = serving.notifier.lock().await;
        if let Some(n) = notifier.as_mut() {
            if n.notify(value).await.is_err() {
                *notifier = None;
            }
        }
    }
}

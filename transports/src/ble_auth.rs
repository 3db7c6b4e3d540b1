//! Admission and encryption of Bluetooth LE links by the app key.
//!
//! BLE here has no TLS, so the `ble` transport runs this small handshake on
//! its GATT service instead, and seals every sync frame afterwards. It is
//! pure code (no radio, no clock; randomness comes in as arguments), so
//! its whole behaviour is tested without an adapter, and built in every
//! configuration but the simulator's.
//!
//! The exchange (byte layouts in `docs/format.md`, "Bluetooth LE links"):
//!
//! 1. The central reads the peripheral's info: its peer id, app tag, the
//!    slot it gives this central, and a fresh 16-byte nonce `Np`.
//! 2. The central writes its hello: its peer id, app tag, its own fresh
//!    nonce `Nc`, and `mac_c`, an HMAC under the app's auth key of the
//!    [`Transcript`] (both peer ids, the slot, both nonces). The peripheral
//!    checks it: only a holder of the app key could make it, and `Np` is
//!    fresh, so a recorded hello cannot be replayed.
//! 3. The central reads the peripheral's proof `mac_p`, an HMAC of the same
//!    transcript under another label. `Nc` is fresh, so only a holder of
//!    the key, answering now, could make it.
//! 4. Each direction then has its own ChaCha20-Poly1305 key, derived by
//!    HKDF from the auth key with both nonces as salt and the transcript as
//!    info. A sealed frame is an 8-byte counter, the ciphertext and a
//!    16-byte tag. Counters only rise, so a frame can be lost (the session
//!    asks again) but not replayed, and a frame from the other direction
//!    or another link does not open.
//!
//! What it gives: a device without the app key can neither join a link nor
//! read or alter one it overhears, which is what QUIC's mutual TLS gives on
//! a LAN. What it does not: peer ids are vouched for by the app key alone
//! (any holder may claim any id), as on QUIC until the identity issue.

use crate::quic::AppKey;
use rhizome_actors::PeerId;
use ring::{aead, hkdf, hmac};
use std::fmt;

/// Bytes of each side's nonce.
pub const NONCE_BYTES: usize = 16;
/// Bytes of a handshake MAC (HMAC-SHA256, truncated).
pub const MAC_BYTES: usize = 16;
/// Bytes a sealed frame adds to its frame: counter and tag.
pub const SEAL_OVERHEAD_BYTES: usize = COUNTER_BYTES + TAG_BYTES;

const COUNTER_BYTES: usize = 8;
const TAG_BYTES: usize = 16;
const AUTH_KEY_LABEL: &[u8] = b"rhizome ble auth key v2";
const CENTRAL_MAC_LABEL: &[u8] = b"rhizome ble central proof v2";
const PERIPHERAL_MAC_LABEL: &[u8] = b"rhizome ble peripheral proof v2";
const CENTRAL_TO_PERIPHERAL: &[u8] = b"rhizome ble frames central to peripheral v2";
const PERIPHERAL_TO_CENTRAL: &[u8] = b"rhizome ble frames peripheral to central v2";

/// First bytes of [`Info`] and [`Hello`] (format version 2: nonces and
/// MACs; version 1 had neither and is refused as a bad magic).
pub const INFO_MAGIC: [u8; 4] = *b"RZB2";
/// First bytes of a [`Proof`].
pub const PROOF_MAGIC: [u8; 4] = *b"RZP2";
/// Bytes of an app tag.
pub const APP_TAG_BYTES: usize = 8;
/// Bytes of a [`Hello`]: magic, peer id, app tag, nonce, MAC.
pub const HELLO_BYTES: usize = 4 + 8 + APP_TAG_BYTES + NONCE_BYTES + MAC_BYTES;
/// Bytes of an [`Info`]: magic, peer id, app tag, slot, nonce.
pub const INFO_BYTES: usize = 4 + 8 + APP_TAG_BYTES + 1 + NONCE_BYTES;
/// Bytes of a [`Proof`]: magic, MAC.
pub const PROOF_BYTES: usize = 4 + MAC_BYTES;

/// A short tag naming an app's peers, derived from its app key
/// (HMAC-SHA256 of `rhizome ble app tag v1`, first 8 bytes). It only
/// filters early (a peer of another app is dropped before any MAC is
/// made); admission is the handshake's MACs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppTag(pub [u8; APP_TAG_BYTES]);

impl AppTag {
    /// The tag of the app with this key.
    pub fn of(key: &AppKey) -> AppTag {
        let mac_key = hmac::Key::new(hmac::HMAC_SHA256, key.bytes());
        let tag = hmac::sign(&mac_key, b"rhizome ble app tag v1");
        let mut out = [0u8; APP_TAG_BYTES];
        out.copy_from_slice(&tag.as_ref()[..APP_TAG_BYTES]);
        AppTag(out)
    }
}

/// What a central reads first from the info characteristic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Info {
    /// The peripheral's peer id.
    pub peer: PeerId,
    /// The peripheral's app tag.
    pub app: AppTag,
    /// The byte before every notification meant for the reading central.
    pub slot: u8,
    /// The peripheral's fresh nonce for this central (`Np`).
    pub nonce: [u8; NONCE_BYTES],
}

/// What a central writes to the info characteristic to start a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The central's peer id.
    pub peer: PeerId,
    /// The central's app tag.
    pub app: AppTag,
    /// The central's fresh nonce (`Nc`).
    pub nonce: [u8; NONCE_BYTES],
    /// [`Transcript::central_mac`].
    pub mac: [u8; MAC_BYTES],
}

/// What a central reads from the info characteristic once its hello was
/// admitted: the peripheral's [`Transcript::peripheral_mac`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proof {
    /// The peripheral's MAC.
    pub mac: [u8; MAC_BYTES],
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
    /// Not the magic of this message and version.
    BadMagic,
}

impl fmt::Display for InfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InfoError::Length { expected, got } => write!(f, "{got} bytes where {expected} were expected"),
            InfoError::BadMagic => f.write_str("not a Rhizome BLE v2 handshake message (bad magic)"),
        }
    }
}

impl std::error::Error for InfoError {}

/// Reads fixed fields from a message already checked for length.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        head.try_into().expect("split at N")
    }

    fn peer(&mut self) -> PeerId {
        PeerId(u64::from_be_bytes(self.take()))
    }
}

/// Checks a message's length and magic; gives the fields after the magic.
fn open_message<'a>(bytes: &'a [u8], magic: &[u8; 4], expected: usize) -> Result<Fields<'a>, InfoError> {
    if bytes.len() != expected {
        return Err(InfoError::Length {
            expected,
            got: bytes.len(),
        });
    }
    if bytes[..4] != magic[..] {
        return Err(InfoError::BadMagic);
    }
    Ok(Fields(&bytes[4..]))
}

impl Info {
    /// Its bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(INFO_BYTES);
        out.extend_from_slice(&INFO_MAGIC);
        out.extend_from_slice(&self.peer.0.to_be_bytes());
        out.extend_from_slice(&self.app.0);
        out.push(self.slot);
        out.extend_from_slice(&self.nonce);
        debug_assert_eq!(out.len(), INFO_BYTES);
        out
    }

    /// Reads an info from exactly [`INFO_BYTES`] bytes.
    pub fn decode(bytes: &[u8]) -> Result<Info, InfoError> {
        let mut f = open_message(bytes, &INFO_MAGIC, INFO_BYTES)?;
        Ok(Info {
            peer: f.peer(),
            app: AppTag(f.take()),
            slot: f.take::<1>()[0],
            nonce: f.take(),
        })
    }
}

impl Hello {
    /// Its bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HELLO_BYTES);
        out.extend_from_slice(&INFO_MAGIC);
        out.extend_from_slice(&self.peer.0.to_be_bytes());
        out.extend_from_slice(&self.app.0);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.mac);
        debug_assert_eq!(out.len(), HELLO_BYTES);
        out
    }

    /// Reads a hello from exactly [`HELLO_BYTES`] bytes.
    pub fn decode(bytes: &[u8]) -> Result<Hello, InfoError> {
        let mut f = open_message(bytes, &INFO_MAGIC, HELLO_BYTES)?;
        Ok(Hello {
            peer: f.peer(),
            app: AppTag(f.take()),
            nonce: f.take(),
            mac: f.take(),
        })
    }
}

impl Proof {
    /// Its bytes.
    pub fn encode(&self) -> Vec<u8> {
        [&PROOF_MAGIC[..], &self.mac].concat()
    }

    /// Reads a proof from exactly [`PROOF_BYTES`] bytes.
    pub fn decode(bytes: &[u8]) -> Result<Proof, InfoError> {
        let mut f = open_message(bytes, &PROOF_MAGIC, PROOF_BYTES)?;
        Ok(Proof { mac: f.take() })
    }
}

/// The slice of a characteristic value a GATT read at `offset` returns
/// (BlueZ reads values longer than the ATT MTU in pieces); empty past the
/// end.
pub fn read_at(value: &[u8], offset: usize) -> &[u8] {
    value.get(offset..).unwrap_or(&[])
}

/// Collects a value a GATT client writes in pieces (BlueZ hands a long
/// write over as one call per prepared piece, each with its offset).
/// Bounded by the value's known length.
#[derive(Debug, Default)]
pub struct PieceWrite {
    buf: Vec<u8>,
}

impl PieceWrite {
    /// Adds a piece written at `offset`; gives the whole value once
    /// `expected` bytes are in. A piece that does not follow the last, or
    /// runs past `expected`, is refused and the value starts over.
    pub fn push(&mut self, offset: usize, piece: &[u8], expected: usize) -> Result<Option<Vec<u8>>, InfoError> {
        let got = offset.saturating_add(piece.len());
        if offset != self.buf.len() || got > expected {
            self.buf.clear();
            return Err(InfoError::Length { expected, got });
        }
        self.buf.extend_from_slice(piece);
        if self.buf.len() < expected {
            return Ok(None);
        }
        Ok(Some(std::mem::take(&mut self.buf)))
    }
}

/// Why a handshake step or a sealed frame was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// The central's hello MAC is wrong: it lacks the app key, or replays
    /// a hello made for another nonce, slot or peer.
    CentralNotAdmitted,
    /// The peripheral's proof is wrong: it lacks the app key, or replays an
    /// old proof.
    PeripheralNotAdmitted,
    /// A sealed frame shorter than its counter and tag.
    ShortFrame {
        /// Its length, in bytes.
        got: usize,
    },
    /// A sealed frame whose counter is not above the last one opened.
    Replayed {
        /// Its counter.
        counter: u64,
        /// The smallest counter still accepted.
        lowest_accepted: u64,
    },
    /// A sealed frame that does not open: altered, or sealed with another
    /// key.
    Forged {
        /// Its counter.
        counter: u64,
    },
    /// This direction sealed 2^64 - 1 frames; the link must be made anew.
    CounterExhausted,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::CentralNotAdmitted => f.write_str("the central's hello does not prove the app key"),
            AuthError::PeripheralNotAdmitted => f.write_str("the peripheral's proof does not prove the app key"),
            AuthError::ShortFrame { got } => {
                write!(
                    f,
                    "sealed frame of {got} bytes, under the {SEAL_OVERHEAD_BYTES} of its counter and tag"
                )
            }
            AuthError::Replayed {
                counter,
                lowest_accepted,
            } => write!(f, "sealed frame {counter} replayed (next accepted: {lowest_accepted})"),
            AuthError::Forged { counter } => write!(f, "sealed frame {counter} does not open (altered or foreign)"),
            AuthError::CounterExhausted => f.write_str("frame counter exhausted"),
        }
    }
}

impl std::error::Error for AuthError {}

/// The app's key for BLE handshakes: HMAC-SHA256 of the app key, so the
/// app key itself is used for nothing else here.
#[derive(Clone)]
pub struct AuthKey([u8; 32]);

impl AuthKey {
    /// The auth key of the app with this key.
    pub fn of(app: &AppKey) -> AuthKey {
        let key = hmac::Key::new(hmac::HMAC_SHA256, app.bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(hmac::sign(&key, AUTH_KEY_LABEL).as_ref());
        AuthKey(out)
    }
}

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthKey(..)")
    }
}

/// Everything one link's handshake agrees on; both MACs and both frame
/// keys are bound to all of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transcript {
    /// The peripheral's peer id.
    pub peripheral: PeerId,
    /// The central's peer id.
    pub central: PeerId,
    /// The slot the peripheral gave the central.
    pub slot: u8,
    /// The peripheral's nonce (`Np`).
    pub peripheral_nonce: [u8; NONCE_BYTES],
    /// The central's nonce (`Nc`).
    pub central_nonce: [u8; NONCE_BYTES],
}

/// Which end of a link this peer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// It dialled (btleplug).
    Central,
    /// It served (bluer).
    Peripheral,
}

impl Transcript {
    fn bytes(&self) -> [u8; 8 + 8 + 1 + 2 * NONCE_BYTES] {
        let mut out = [0u8; 8 + 8 + 1 + 2 * NONCE_BYTES];
        out[..8].copy_from_slice(&self.peripheral.0.to_be_bytes());
        out[8..16].copy_from_slice(&self.central.0.to_be_bytes());
        out[16] = self.slot;
        out[17..17 + NONCE_BYTES].copy_from_slice(&self.peripheral_nonce);
        out[17 + NONCE_BYTES..].copy_from_slice(&self.central_nonce);
        out
    }

    fn mac(&self, key: &AuthKey, label: &[u8]) -> [u8; MAC_BYTES] {
        let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, &key.0));
        ctx.update(label);
        ctx.update(&self.bytes());
        let mut out = [0u8; MAC_BYTES];
        out.copy_from_slice(&ctx.sign().as_ref()[..MAC_BYTES]);
        out
    }

    /// The MAC the central puts in its hello.
    pub fn central_mac(&self, key: &AuthKey) -> [u8; MAC_BYTES] {
        self.mac(key, CENTRAL_MAC_LABEL)
    }

    /// The proof the peripheral gives after admitting the central.
    pub fn peripheral_mac(&self, key: &AuthKey) -> [u8; MAC_BYTES] {
        self.mac(key, PERIPHERAL_MAC_LABEL)
    }

    /// Peripheral side: checks the central's hello MAC.
    pub fn verify_central(&self, key: &AuthKey, mac: &[u8; MAC_BYTES]) -> Result<(), AuthError> {
        equal_in_constant_time(&self.central_mac(key), mac)
            .then_some(())
            .ok_or(AuthError::CentralNotAdmitted)
    }

    /// Central side: checks the peripheral's proof.
    pub fn verify_peripheral(&self, key: &AuthKey, mac: &[u8; MAC_BYTES]) -> Result<(), AuthError> {
        equal_in_constant_time(&self.peripheral_mac(key), mac)
            .then_some(())
            .ok_or(AuthError::PeripheralNotAdmitted)
    }

    /// The link's frame keys for this end: what it seals and what it
    /// opens. Call only after the handshake's MAC checks passed.
    pub fn frame_keys(&self, key: &AuthKey, role: Role) -> (Sealer, Opener) {
        let (out_label, in_label) = match role {
            Role::Central => (CENTRAL_TO_PERIPHERAL, PERIPHERAL_TO_CENTRAL),
            Role::Peripheral => (PERIPHERAL_TO_CENTRAL, CENTRAL_TO_PERIPHERAL),
        };
        let sealer = Sealer {
            key: self.frame_key(key, out_label),
            next: 0,
        };
        let opener = Opener {
            key: self.frame_key(key, in_label),
            lowest_accepted: 0,
        };
        (sealer, opener)
    }

    fn frame_key(&self, key: &AuthKey, label: &[u8]) -> aead::LessSafeKey {
        let mut salt = [0u8; 2 * NONCE_BYTES];
        salt[..NONCE_BYTES].copy_from_slice(&self.peripheral_nonce);
        salt[NONCE_BYTES..].copy_from_slice(&self.central_nonce);
        let transcript = self.bytes();
        let info = [label, &transcript[..]];
        // Only an output over 255 hash blocks fails to expand; a 32-byte
        // key never does.
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &salt).extract(&key.0);
        let okm = prk
            .expand(&info, &aead::CHACHA20_POLY1305)
            .expect("a 32-byte HKDF output always expands");
        aead::LessSafeKey::new(aead::UnboundKey::from(okm))
    }
}

fn equal_in_constant_time(a: &[u8; MAC_BYTES], b: &[u8; MAC_BYTES]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn nonce_of(counter: u64) -> aead::Nonce {
    let mut bytes = [0u8; aead::NONCE_LEN];
    bytes[aead::NONCE_LEN - COUNTER_BYTES..].copy_from_slice(&counter.to_be_bytes());
    aead::Nonce::assume_unique_for_key(bytes)
}

/// Seals one direction's frames.
pub struct Sealer {
    key: aead::LessSafeKey,
    next: u64,
}

impl Sealer {
    /// The frame sealed: counter, ciphertext, tag.
    pub fn seal(&mut self, frame: &[u8]) -> Result<Vec<u8>, AuthError> {
        let counter = self.next;
        // The last counter is never used, so `next` never wraps.
        self.next = counter
            .checked_add(1)
            .filter(|n| *n < u64::MAX)
            .ok_or(AuthError::CounterExhausted)?;
        let mut out = Vec::with_capacity(frame.len() + SEAL_OVERHEAD_BYTES);
        out.extend_from_slice(&counter.to_be_bytes());
        out.extend_from_slice(frame);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                nonce_of(counter),
                aead::Aad::from(counter.to_be_bytes()),
                &mut out[COUNTER_BYTES..],
            )
            .map_err(|_| AuthError::CounterExhausted)?;
        out.extend_from_slice(tag.as_ref());
        debug_assert_eq!(out.len(), frame.len() + SEAL_OVERHEAD_BYTES);
        Ok(out)
    }
}

/// Opens the other direction's frames.
pub struct Opener {
    key: aead::LessSafeKey,
    lowest_accepted: u64,
}

impl Opener {
    /// The frame inside a sealed frame. A refused frame changes nothing, so
    /// the frames after it still open.
    pub fn open(&mut self, sealed: &[u8]) -> Result<Vec<u8>, AuthError> {
        if sealed.len() < SEAL_OVERHEAD_BYTES {
            return Err(AuthError::ShortFrame { got: sealed.len() });
        }
        let (counter_bytes, rest) = sealed.split_at(COUNTER_BYTES);
        let counter = u64::from_be_bytes(counter_bytes.try_into().expect("split at 8"));
        if counter < self.lowest_accepted {
            return Err(AuthError::Replayed {
                counter,
                lowest_accepted: self.lowest_accepted,
            });
        }
        let mut buf = rest.to_vec();
        let plain_len = self
            .key
            .open_in_place(nonce_of(counter), aead::Aad::from(counter.to_be_bytes()), &mut buf)
            .map_err(|_| AuthError::Forged { counter })?
            .len();
        buf.truncate(plain_len);
        self.lowest_accepted = counter.saturating_add(1);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> AuthKey {
        AuthKey::of(&AppKey::new(vec![byte; 32]).expect("long enough"))
    }

    fn app_key(byte: u8) -> AppKey {
        AppKey::new(vec![byte; 32]).expect("long enough")
    }

    #[test]
    fn handshake_messages_round_trip() {
        let info = Info {
            peer: PeerId(0x0102_0304_0506_0708),
            app: AppTag::of(&app_key(1)),
            slot: 7,
            nonce: [3; NONCE_BYTES],
        };
        assert_eq!(info.encode().len(), INFO_BYTES);
        assert_eq!(Info::decode(&info.encode()), Ok(info));
        let hello = Hello {
            peer: PeerId(9),
            app: info.app,
            nonce: [4; NONCE_BYTES],
            mac: [5; MAC_BYTES],
        };
        assert_eq!(hello.encode().len(), HELLO_BYTES);
        assert_eq!(Hello::decode(&hello.encode()), Ok(hello));
        let proof = Proof { mac: [6; MAC_BYTES] };
        assert_eq!(Proof::decode(&proof.encode()), Ok(proof));
    }

    #[test]
    fn malformed_handshake_messages_are_errors() {
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
        assert_eq!(Proof::decode(&[0; PROOF_BYTES]), Err(InfoError::BadMagic));
        // A version-1 hello (no nonce, no MAC) is refused.
        let v1: Vec<u8> = b"RZB1".iter().copied().chain([0u8; 16]).collect();
        assert!(Hello::decode(&v1).is_err());
        // An info is not a proof, nor the other way round.
        let info = Info::decode(&[&INFO_MAGIC[..], &[0; INFO_BYTES - 4]].concat()).expect("an info");
        assert!(Proof::decode(&info.encode()).is_err());
    }

    #[test]
    fn app_tags_differ_between_apps_and_agree_within_one() {
        assert_eq!(AppTag::of(&app_key(1)), AppTag::of(&app_key(1)));
        assert_ne!(AppTag::of(&app_key(1)), AppTag::of(&app_key(2)));
    }

    #[test]
    fn long_values_are_read_and_written_in_pieces() {
        let value: Vec<u8> = (0..HELLO_BYTES as u8).collect();
        assert_eq!(read_at(&value, 0), &value[..]);
        assert_eq!(read_at(&value, 22), &value[22..]);
        assert!(read_at(&value, HELLO_BYTES + 5).is_empty());
        let mut w = PieceWrite::default();
        assert_eq!(w.push(0, &value[..22], HELLO_BYTES), Ok(None));
        assert_eq!(w.push(22, &value[22..44], HELLO_BYTES), Ok(None));
        assert_eq!(w.push(44, &value[44..], HELLO_BYTES), Ok(Some(value.clone())));
        // Out of order, or too long: refused, and it starts over.
        assert!(w.push(22, &value[..22], HELLO_BYTES).is_err());
        assert!(w.push(0, &[0; HELLO_BYTES + 1], HELLO_BYTES).is_err());
        assert_eq!(w.push(0, &value, HELLO_BYTES), Ok(Some(value)));
    }

    fn transcript() -> Transcript {
        Transcript {
            peripheral: PeerId(7),
            central: PeerId(9),
            slot: 2,
            peripheral_nonce: [1; NONCE_BYTES],
            central_nonce: [2; NONCE_BYTES],
        }
    }

    #[test]
    fn both_ends_admit_each_other_with_the_same_app_key() {
        let (k, t) = (key(1), transcript());
        assert_eq!(t.verify_central(&k, &t.central_mac(&k)), Ok(()));
        assert_eq!(t.verify_peripheral(&k, &t.peripheral_mac(&k)), Ok(()));
    }

    #[test]
    fn a_device_without_the_key_is_refused_either_way() {
        let (ours, theirs, t) = (key(1), key(2), transcript());
        assert_eq!(
            t.verify_central(&ours, &t.central_mac(&theirs)),
            Err(AuthError::CentralNotAdmitted)
        );
        assert_eq!(
            t.verify_peripheral(&ours, &t.peripheral_mac(&theirs)),
            Err(AuthError::PeripheralNotAdmitted)
        );
    }

    #[test]
    fn a_mac_made_for_another_transcript_is_refused() {
        let (k, t) = (key(1), transcript());
        let mac = t.central_mac(&k);
        let changes: [fn(&mut Transcript); 5] = [
            |t| t.peripheral_nonce[0] ^= 1,
            |t| t.central_nonce[15] ^= 1,
            |t| t.slot += 1,
            |t| t.central = PeerId(10),
            |t| t.peripheral = PeerId(8),
        ];
        for change in changes {
            let mut other = t;
            change(&mut other);
            assert_eq!(other.verify_central(&k, &mac), Err(AuthError::CentralNotAdmitted));
        }
        // A central's MAC is not a peripheral's proof (no reflection).
        assert_eq!(t.verify_peripheral(&k, &mac), Err(AuthError::PeripheralNotAdmitted));
    }

    #[test]
    fn frames_open_at_the_other_end_only() {
        let (k, t) = (key(1), transcript());
        let (mut c_seal, mut c_open) = t.frame_keys(&k, Role::Central);
        let (mut p_seal, mut p_open) = t.frame_keys(&k, Role::Peripheral);
        let sealed = c_seal.seal(b"hello peripheral").expect("seals");
        assert_eq!(sealed.len(), 16 + SEAL_OVERHEAD_BYTES);
        assert!(!sealed.windows(5).any(|w| w == b"hello"), "the frame is encrypted");
        // Reflected back to its sender, it does not open.
        assert_eq!(c_open.open(&sealed), Err(AuthError::Forged { counter: 0 }));
        assert_eq!(p_open.open(&sealed).expect("opens"), b"hello peripheral");
        let back = p_seal.seal(b"").expect("seals");
        assert_eq!(c_open.open(&back).expect("opens"), b"");
    }

    #[test]
    fn frames_may_be_lost_but_not_replayed_or_altered() {
        let (k, t) = (key(1), transcript());
        let (mut seal, _) = t.frame_keys(&k, Role::Central);
        let (_, mut open) = t.frame_keys(&k, Role::Peripheral);
        let frames: Vec<Vec<u8>> = (0..4u8).map(|i| seal.seal(&[i; 3]).expect("seals")).collect();
        assert_eq!(open.open(&frames[0]).expect("opens"), vec![0; 3]);
        // Frame 1 is lost: frame 2 still opens.
        assert_eq!(open.open(&frames[2]).expect("opens"), vec![2; 3]);
        assert_eq!(
            open.open(&frames[1]),
            Err(AuthError::Replayed {
                counter: 1,
                lowest_accepted: 3
            })
        );
        let mut altered = frames[3].clone();
        altered[COUNTER_BYTES] ^= 0x80;
        assert_eq!(open.open(&altered), Err(AuthError::Forged { counter: 3 }));
        let mut renumbered = frames[3].clone();
        renumbered[..COUNTER_BYTES].copy_from_slice(&9u64.to_be_bytes());
        assert_eq!(open.open(&renumbered), Err(AuthError::Forged { counter: 9 }));
        // Refusals changed nothing: the genuine frame 3 opens.
        assert_eq!(open.open(&frames[3]).expect("opens"), vec![3; 3]);
        assert_eq!(open.open(&frames[3][..5]), Err(AuthError::ShortFrame { got: 5 }));
    }

    #[test]
    fn frame_keys_differ_between_links_and_apps() {
        let (k, t) = (key(1), transcript());
        let (mut seal, _) = t.frame_keys(&k, Role::Central);
        let sealed = seal.seal(b"x").expect("seals");
        let mut other_link = t;
        other_link.central_nonce[0] ^= 1;
        let (_, mut open_other_link) = other_link.frame_keys(&k, Role::Peripheral);
        assert_eq!(open_other_link.open(&sealed), Err(AuthError::Forged { counter: 0 }));
        let (_, mut open_other_app) = t.frame_keys(&key(2), Role::Peripheral);
        assert_eq!(open_other_app.open(&sealed), Err(AuthError::Forged { counter: 0 }));
    }

    #[test]
    fn random_bytes_never_open_and_never_panic() {
        let (k, t) = (key(1), transcript());
        let (_, mut open) = t.frame_keys(&k, Role::Peripheral);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..200usize {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            assert!(open.open(&bytes).is_err());
        }
    }
}

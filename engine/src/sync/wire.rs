//! The sync protocol's bytes: messages and their frames. (Links with small
//! packets cut frames into chunks: [`super::chunk`].)
//!
//! Every byte here may come from a hostile or broken peer. Decoding checks
//! the frame's length against the receiver's limit before reading anything
//! else, then its checksum, then the body; it returns an error, never
//! panics, and allocates nothing larger than the frame it was given. The
//! format is in `docs/format.md` ("Sync frames").

use crate::hlc::PeerId;
use crate::vv::VersionVector;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 6;
/// The oldest protocol version this build still speaks (none of version
/// 1, which carried changes unpacked and had no batch sequence, 2, whose
/// requests carried the whole version vector, 3, whose first request of
/// a session always did, 4, which sent version vectors as postcard maps
/// instead of packed (`vv::packed`), and 5, whose pokes named no news and
/// were always answered with a round, ever shipped).
pub const MIN_PROTOCOL_VERSION: u16 = 6;
/// Largest frame a peer accepts unless it says otherwise in its `Hello`.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 4 << 20;
/// Largest frame any peer may ask for.
pub const MAX_FRAME_BYTES: u32 = 64 << 20;
/// Frame header: magic (2), protocol version (2), body length (4), CRC-32 (4).
pub const FRAME_HEADER_BYTES: usize = 12;
const MAGIC: [u8; 2] = *b"RZ";

/// A sync subscription as sent to the other side: a query and its
/// parameters (JSON text).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SubscriptionSpec {
    /// `SELECT * FROM coll [WHERE ...]`.
    pub query: String,
    /// Parameters as a JSON object.
    pub params: String,
}

/// The first message of each side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol versions the sender speaks, oldest and newest.
    pub versions: (u16, u16),
    /// The sender.
    pub peer: PeerId,
    /// What the sender wants from the receiver.
    pub subscriptions: Vec<SubscriptionSpec>,
    /// Largest frame the sender accepts.
    pub max_frame_bytes: u32,
    /// Whether the sender has received the receiver's `Hello` (a side that
    /// has not is answered with one: a lost `Hello` is sent again).
    pub heard: bool,
    /// What kind of peer the sender is (sync scopes depend on it).
    pub role: Role,
    /// [`VersionVector::digest`] of the sender's version vector when it
    /// said hello (0: none given). An asker whose vector has the same
    /// digest sends a `Request` with `of_hello` (the digest) instead of
    /// the vector.
    pub vv_digest: u64,
}

/// What kind of peer a peer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Role {
    /// A device embedding the database.
    SmallPeer,
    /// A server of the big peer (cloud sync).
    BigPeer,
}

/// Why a side ends the session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Refusal {
    /// No protocol version in common.
    UnsupportedVersion {
        /// The refusing side's (oldest, newest).
        ours: (u16, u16),
        /// The other side's (oldest, newest).
        theirs: (u16, u16),
    },
    /// A message broke the protocol; `reason` says how.
    ProtocolViolation {
        /// What was wrong.
        reason: String,
    },
    /// A peer cannot sync with itself.
    SamePeer,
    /// The other side never completed the handshake.
    HandshakeTimedOut,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::UnsupportedVersion { ours, theirs } => write!(
                f,
                "no protocol version in common: we speak {}..={}, the peer {}..={}",
                ours.0, ours.1, theirs.0, theirs.1
            ),
            Refusal::ProtocolViolation { reason } => write!(f, "protocol violation: {reason}"),
            Refusal::SamePeer => f.write_str("a peer cannot sync with itself"),
            Refusal::HandshakeTimedOut => f.write_str("the peer did not complete the handshake"),
        }
    }
}

/// A protocol message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Message {
    /// Opens the session.
    Hello(Hello),
    /// Ends the session, saying why.
    Refuse(Refusal),
    /// "Send me what I lack since `since`", in round `round`.
    Request {
        /// The asker's round number.
        round: u64,
        /// What the asker has completely received; with `delta`, only the
        /// entries that grew past the asker's last answered request of
        /// this session.
        since: VersionVector,
        /// `since` is a delta: the receiver joins it with every `since` it
        /// heard in this session. The asker's vector only grows (it sends
        /// a delta only when it dominates every `since` it sent), so the
        /// join is exactly the asker's vector, and a request costs the
        /// origins with news instead of every origin ever heard of.
        delta: bool,
        /// With a fresh request (subscriptions grew): all of the asker's
        /// subscriptions, in case its `Subscribe` was lost.
        subscriptions: Option<Vec<SubscriptionSpec>>,
        /// Not 0: `since` (sent empty) is the vector of the receiver's own
        /// `Hello`, whose digest this is (the asker's vector has that
        /// digest). Peers that meet when they already agree (most
        /// meetings in a settled mesh) spend 8 bytes instead of a vector.
        /// A receiver whose `Hello` vector has another digest (it started
        /// over since) serves from nothing: more bytes, nothing missed.
        of_hello: u64,
    },
    /// Changes answering a request.
    Changes {
        /// The request's round.
        round: u64,
        /// This batch's place in the round (0, 1, ...): a batch out of
        /// sequence (lost, duplicated, reordered) is ignored.
        seq: u32,
        /// The changes, packed ([`super::pack`]; "Packed changes" in
        /// `docs/format.md`).
        #[serde(with = "byte_string")]
        changes: Vec<u8>,
        /// The sender's version vector when this batch was read.
        upto: VersionVector,
        /// Whether this batch completes the round.
        last: bool,
        /// Whether the sender holds completely what the receiver wants (it
        /// wants at least as much): only then may the receiver record the
        /// round's `upto` as complete for every peer.
        complete: bool,
    },
    /// Answers a request whose version vector has not seen deletions the
    /// sender has since reaped: the asker may hold documents that are gone
    /// and would never hear of it, so it drops what the sender knows in
    /// full and asks afresh (see `Session`).
    Rebase {
        /// The request's round.
        round: u64,
        /// The sender's version vector.
        upto: VersionVector,
        /// Whether the sender holds completely what the asker wants (else
        /// the asker drops nothing and just asks afresh).
        complete: bool,
    },
    /// "I have news": the receiver asks with a `Request` when it is ready,
    /// or answers `Have` when it already holds the news.
    Poke {
        /// Numbers the poke in the sender's session: a `Have` names the
        /// newest poke it answers.
        nonce: u64,
        /// The news: for each origin, the newest write of it the sender
        /// merged since its last poke was answered (`None`: unknown, e.g.
        /// a write of the sender's own; then the receiver always asks). A
        /// receiver whose version vector dominates it holds every change
        /// of that news it wants, so a round would bring nothing of it.
        moved: Option<VersionVector>,
        /// Also answers the receiver's poke (or push) of this nonce, as a
        /// `Have` would (a `Have` waits a little to ride on a poke).
        ack: Option<u64>,
    },
    /// The sender's subscriptions changed: from now on it wants these.
    Subscribe {
        /// Every subscription of the sender.
        subscriptions: Vec<SubscriptionSpec>,
    },
    /// Answers a `Poke` whose news the sender already holds (instead of a
    /// `Request` and an empty round), or takes a `Push`.
    Have {
        /// The newest poke (or the push) answered.
        nonce: u64,
    },
    /// A poke carrying its news: the changes the receiver lacks since
    /// what it is known to hold (its newest request's `since`, joined with
    /// the `upto` of every push it took since), when they are few. The
    /// receiver applies them and answers `Have`, or, when it cannot take
    /// them (see `Session`), treats it as a poke naming no news.
    Push {
        /// Numbers the push among the sender's pokes.
        nonce: u64,
        /// As in `Poke`.
        ack: Option<u64>,
        /// The round of the receiver's newest request the sender had
        /// heard when it read the changes (their base).
        asked: u64,
        /// The changes, packed as in `Changes`.
        #[serde(with = "byte_string")]
        changes: Vec<u8>,
        /// The sender's version vector when the changes were read: only
        /// the entries ahead of the base.
        upto: VersionVector,
        /// As in `Changes`: whether the receiver may record `upto` as
        /// complete.
        complete: bool,
    },
}

/// A byte string as one block: postcard writes a `Vec<u8>` field as a
/// length and its bytes either way, but as a sequence it goes through
/// serde one byte at a time (about 10 instructions a byte on each side of
/// every frame); as bytes it is one copy. Same bytes on the wire.
mod byte_string {
    use serde::de::{Deserializer, SeqAccess, Visitor};
    use serde::Serializer;
    use std::fmt;

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(Bytes)
    }

    struct Bytes;

    impl<'de> Visitor<'de> for Bytes {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        /// Formats without byte strings send a sequence: the length it
        /// claims reserves at most a page, the bytes present grow the rest.
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }
}

/// Why bytes are not a message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// Fewer bytes than the frame says.
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes there.
        got: usize,
    },
    /// Not a frame of this protocol.
    BadMagic,
    /// The frame is larger than the receiver accepts.
    TooLarge {
        /// Its size.
        size_bytes: usize,
        /// The limit.
        limit_bytes: usize,
    },
    /// Bytes after the frame's end.
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// The checksum does not match: the bytes were damaged.
    Checksum,
    /// The body does not decode as a message; `reason` says where.
    Malformed {
        /// What was wrong.
        reason: String,
    },
    /// A frame of a protocol version older than this build speaks (its
    /// body is not read: old shapes are not known here).
    OldVersion {
        /// The frame's version.
        version: u16,
    },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Truncated { needed, got } => write!(f, "truncated frame: {got} of {needed} bytes"),
            WireError::BadMagic => f.write_str("not a Rhizome sync frame (bad magic)"),
            WireError::TooLarge {
                size_bytes,
                limit_bytes,
            } => {
                write!(f, "frame of {size_bytes} bytes exceeds the limit of {limit_bytes}")
            }
            WireError::TrailingBytes { count } => write!(f, "{count} bytes after the frame"),
            WireError::Checksum => f.write_str("frame checksum mismatch (damaged bytes)"),
            WireError::Malformed { reason } => write!(f, "malformed message: {reason}"),
            WireError::OldVersion { version } => write!(
                f,
                "protocol version {version} is older than this build speaks ({MIN_PROTOCOL_VERSION})"
            ),
        }
    }
}

impl std::error::Error for WireError {}

/// Encodes a message as one frame (protocol version `version`).
pub fn encode(msg: &Message, version: u16) -> Vec<u8> {
    let mut out = vec![0; FRAME_HEADER_BYTES];
    // Serializing our own message types into a Vec cannot fail.
    out = postcard::to_extend(msg, out).unwrap_or_default();
    let body_len = out.len().saturating_sub(FRAME_HEADER_BYTES);
    let crc = crc32fast::hash(&out[FRAME_HEADER_BYTES..]);
    out[..2].copy_from_slice(&MAGIC);
    out[2..4].copy_from_slice(&version.to_be_bytes());
    out[4..8].copy_from_slice(&(body_len as u32).to_be_bytes());
    out[8..12].copy_from_slice(&crc.to_be_bytes());
    out
}

/// The header of a frame: (protocol version, total frame length). Enough to
/// know how many bytes to wait for on a stream.
pub fn frame_header(bytes: &[u8], limit_bytes: usize) -> Result<(u16, usize), WireError> {
    let header = bytes.get(..FRAME_HEADER_BYTES).ok_or(WireError::Truncated {
        needed: FRAME_HEADER_BYTES,
        got: bytes.len(),
    })?;
    if header[..2] != MAGIC {
        return Err(WireError::BadMagic);
    }
    let version = u16::from_be_bytes([header[2], header[3]]);
    let body_len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let size_bytes = FRAME_HEADER_BYTES.saturating_add(body_len);
    if size_bytes > limit_bytes {
        return Err(WireError::TooLarge {
            size_bytes,
            limit_bytes,
        });
    }
    Ok((version, size_bytes))
}

/// Decodes exactly one frame of at most `limit_bytes`: (protocol version,
/// message).
pub fn decode(bytes: &[u8], limit_bytes: usize) -> Result<(u16, Message), WireError> {
    let (version, size) = frame_header(bytes, limit_bytes)?;
    if bytes.len() < size {
        return Err(WireError::Truncated {
            needed: size,
            got: bytes.len(),
        });
    }
    if bytes.len() > size {
        return Err(WireError::TrailingBytes {
            count: bytes.len() - size,
        });
    }
    let crc = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let body = &bytes[FRAME_HEADER_BYTES..];
    if crc32fast::hash(body) != crc {
        return Err(WireError::Checksum);
    }
    if version < MIN_PROTOCOL_VERSION {
        return Err(WireError::OldVersion { version });
    }
    let (msg, rest) =
        postcard::take_from_bytes::<Message>(body).map_err(|e| WireError::Malformed { reason: e.to_string() })?;
    // A newer peer's Hello may carry fields this build does not know, after
    // the ones it does: the handshake must still reach a clean refusal or
    // an agreement.
    let newer_hello = version > PROTOCOL_VERSION && matches!(msg, Message::Hello(_));
    if !rest.is_empty() && !newer_hello {
        return Err(WireError::Malformed {
            reason: format!("{} bytes after the message", rest.len()),
        });
    }
    Ok((version, msg))
}

/// The version both sides speak (the newest in common), or why there is
/// none.
pub fn negotiate(ours: &Hello, theirs: &Hello) -> Result<u16, Refusal> {
    if ours.peer == theirs.peer {
        return Err(Refusal::SamePeer);
    }
    let low = ours.versions.0.max(theirs.versions.0);
    let high = ours.versions.1.min(theirs.versions.1);
    if low > high || theirs.versions.0 > theirs.versions.1 {
        return Err(Refusal::UnsupportedVersion {
            ours: ours.versions,
            theirs: theirs.versions,
        });
    }
    Ok(high)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct AsSeq(Vec<u8>);

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct AsBlock(#[serde(with = "byte_string")] Vec<u8>);

    /// A byte string is written exactly as serde's sequence of bytes was
    /// (the wire format did not change), and both read back either way.
    #[test]
    fn byte_strings_keep_the_sequence_encoding() {
        for len in [0usize, 1, 127, 128, 300, 16_383, 16_384, 70_000] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let seq = postcard::to_allocvec(&AsSeq(bytes.clone())).unwrap();
            let block = postcard::to_allocvec(&AsBlock(bytes.clone())).unwrap();
            assert_eq!(seq, block, "length {len}");
            assert_eq!(postcard::from_bytes::<AsBlock>(&seq).unwrap().0, bytes);
            assert_eq!(postcard::from_bytes::<AsSeq>(&block).unwrap().0, bytes);
            // Formats without byte strings take the sequence path.
            let json = serde_json::to_string(&AsBlock(bytes.clone())).unwrap();
            assert_eq!(serde_json::from_str::<AsBlock>(&json).unwrap().0, bytes);
        }
        // A length past the input is an error, not an allocation.
        assert!(postcard::from_bytes::<AsBlock>(&[0xff, 0xff, 0xff, 0x7f, 1, 2]).is_err());
    }
}

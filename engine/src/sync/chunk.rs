//! Chunks: how a sync frame crosses a link that carries only small packets
//! (a Bluetooth LE characteristic, whose writes and notifications hold at
//! most the negotiated ATT MTU less 3 bytes), and how the receiver rebuilds
//! it.
//!
//! This is the one framing both the real BLE transport
//! (`rhizome-transports`, feature `ble`) and the simulator's modelled links
//! (`rhizome-actors`' `link.rs`) use, so what the simulator shows about
//! lost or damaged chunks holds for the radio. Pure code, no I/O.
//!
//! Every chunk carries a header with the format version, first/last flags
//! and a sequence number that counts every chunk of one direction of a
//! link; the first chunk of a frame also carries the frame's length. The
//! receiver ([`Reassembler`]) checks each header before it buffers the
//! piece, so a lost, duplicated or reordered chunk, a frame over the
//! receiver's limit, or a length that does not add up gives a
//! [`ChunkError`] (never a panic), and it holds at most one partial frame,
//! never larger than its limit. After an error it drops the partial frame
//! and starts afresh at the next first chunk: the sync session above
//! repairs a lost frame (it asks again). The format is in
//! `docs/format.md` ("Chunks").

use std::fmt;

/// The chunk format this build writes and reads.
pub const CHUNK_FORMAT_VERSION: u8 = 1;
/// Header of every chunk: version and flags (1), sequence number (1).
pub const CHUNK_HEADER_BYTES: usize = 2;
/// Header of a frame's first chunk: the chunk header and the frame's length
/// (u32, big-endian).
pub const FIRST_CHUNK_HEADER_BYTES: usize = CHUNK_HEADER_BYTES + 4;
/// Smallest chunk size the writer accepts: a first chunk's header and one
/// byte of the frame.
pub const MIN_CHUNK_BYTES: usize = FIRST_CHUNK_HEADER_BYTES + 1;
/// Bytes of an ATT write or notification that are not its value (opcode
/// and attribute handle): a chunk holds at most the ATT MTU less these.
pub const ATT_OVERHEAD_BYTES: usize = 3;
/// The ATT MTU every BLE link supports before any exchange.
pub const DEFAULT_ATT_MTU: u16 = 23;

/// Flag: the chunk starts a frame (and carries its length).
const FIRST: u8 = 0b01;
/// Flag: the chunk ends a frame.
const LAST: u8 = 0b10;
/// Bits of the first byte that must be zero in format version 1.
const RESERVED: u8 = 0b1100;

/// The largest chunk that fits one ATT write or notification on a link
/// whose negotiated ATT MTU is `att_mtu`.
pub fn chunk_bytes_for_att_mtu(att_mtu: u16) -> usize {
    usize::from(att_mtu).saturating_sub(ATT_OVERHEAD_BYTES)
}

/// Why chunks cannot be made or are not a frame's.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChunkError {
    /// The writer was given a chunk size too small to carry a first chunk.
    ChunkSizeTooSmall {
        /// The size given, in bytes.
        chunk_bytes: usize,
        /// The smallest size that works ([`MIN_CHUNK_BYTES`]).
        min_bytes: usize,
    },
    /// The chunk is shorter than its header.
    Truncated {
        /// Header bytes needed.
        needed: usize,
        /// Bytes there.
        got: usize,
    },
    /// The chunk is of a format version this build does not read.
    UnknownVersion {
        /// The chunk's version.
        version: u8,
    },
    /// Reserved flag bits are set.
    ReservedFlags {
        /// The first byte of the chunk.
        flags: u8,
    },
    /// The sequence number is not the next one: a chunk was lost,
    /// duplicated or reordered.
    Sequence {
        /// The number expected.
        expected: u8,
        /// The number that came.
        got: u8,
    },
    /// A chunk continuing a frame came with no frame started.
    NoFrameStarted,
    /// A first chunk came while a frame was incomplete.
    FrameInterrupted {
        /// Bytes of the incomplete frame received.
        got_bytes: usize,
        /// Its length.
        declared_bytes: usize,
    },
    /// The frame is larger than the receiver accepts (or, when writing,
    /// than a length field holds).
    TooLarge {
        /// The frame's length, in bytes.
        size_bytes: usize,
        /// The limit, in bytes.
        limit_bytes: usize,
    },
    /// The pieces do not add up to the frame's length: more bytes than it
    /// declared, a last chunk before its end, or its end without a last
    /// chunk.
    LengthMismatch {
        /// The length the first chunk declared.
        declared_bytes: usize,
        /// Bytes received so far.
        got_bytes: usize,
    },
    /// A chunk after the first carries no bytes of the frame.
    EmptyPiece,
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkError::ChunkSizeTooSmall { chunk_bytes, min_bytes } => {
                write!(
                    f,
                    "chunk size of {chunk_bytes} bytes is below the minimum of {min_bytes}"
                )
            }
            ChunkError::Truncated { needed, got } => {
                write!(f, "chunk of {got} bytes is shorter than its header ({needed})")
            }
            ChunkError::UnknownVersion { version } => write!(
                f,
                "chunk format version {version} is unknown (this build reads {CHUNK_FORMAT_VERSION})"
            ),
            ChunkError::ReservedFlags { flags } => write!(f, "reserved chunk flag bits set ({flags:#04x})"),
            ChunkError::Sequence { expected, got } => {
                write!(
                    f,
                    "chunk {got} came where {expected} was expected (lost, duplicated or reordered)"
                )
            }
            ChunkError::NoFrameStarted => f.write_str("a chunk continuing a frame came with no frame started"),
            ChunkError::FrameInterrupted {
                got_bytes,
                declared_bytes,
            } => write!(
                f,
                "a new frame started after {got_bytes} of {declared_bytes} bytes of the last"
            ),
            ChunkError::TooLarge {
                size_bytes,
                limit_bytes,
            } => write!(f, "frame of {size_bytes} bytes exceeds the limit of {limit_bytes}"),
            ChunkError::LengthMismatch {
                declared_bytes,
                got_bytes,
            } => write!(
                f,
                "chunks carried {got_bytes} bytes of a frame declared as {declared_bytes}"
            ),
            ChunkError::EmptyPiece => f.write_str("a chunk after the first carries no bytes"),
        }
    }
}

impl std::error::Error for ChunkError {}

/// Cuts frames into chunks for one direction of a link; numbers every
/// chunk it makes, in order.
#[derive(Clone, Debug, Default)]
pub struct Chunker {
    next_seq: u8,
}

impl Chunker {
    /// A chunker whose first chunk is number 0.
    pub fn new() -> Chunker {
        Chunker::default()
    }

    /// The chunks of `frame`, each at most `chunk_bytes` long, to be sent
    /// in order. Their sequence numbers are taken now: send every one, or
    /// the receiver sees a gap and drops the frame.
    pub fn split<'a>(&mut self, frame: &'a [u8], chunk_bytes: usize) -> Result<Chunks<'a>, ChunkError> {
        if chunk_bytes < MIN_CHUNK_BYTES {
            return Err(ChunkError::ChunkSizeTooSmall {
                chunk_bytes,
                min_bytes: MIN_CHUNK_BYTES,
            });
        }
        let declared = u32::try_from(frame.len()).map_err(|_| ChunkError::TooLarge {
            size_bytes: frame.len(),
            limit_bytes: u32::MAX as usize,
        })?;
        let chunks = Chunks {
            frame,
            offset: 0,
            chunk_bytes,
            seq: self.next_seq,
            declared,
            started: false,
        };
        self.next_seq = self.next_seq.wrapping_add(chunks.count_left() as u8);
        Ok(chunks)
    }
}

/// The chunks of one frame, in order (see [`Chunker::split`]).
#[derive(Clone, Debug)]
pub struct Chunks<'a> {
    frame: &'a [u8],
    offset: usize,
    chunk_bytes: usize,
    seq: u8,
    declared: u32,
    started: bool,
}

impl Chunks<'_> {
    /// How many chunks are left to take.
    fn count_left(&self) -> usize {
        let rest = self.frame.len() - self.offset;
        if self.started {
            return rest.div_ceil(self.chunk_bytes - CHUNK_HEADER_BYTES);
        }
        let first = self.chunk_bytes - FIRST_CHUNK_HEADER_BYTES;
        1 + rest
            .saturating_sub(first)
            .div_ceil(self.chunk_bytes - CHUNK_HEADER_BYTES)
    }
}

impl Iterator for Chunks<'_> {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        if self.started && self.offset >= self.frame.len() {
            return None;
        }
        let first = !self.started;
        let header = if first {
            FIRST_CHUNK_HEADER_BYTES
        } else {
            CHUNK_HEADER_BYTES
        };
        let end = (self.offset + self.chunk_bytes - header).min(self.frame.len());
        let mut flags = CHUNK_FORMAT_VERSION << 4;
        if first {
            flags |= FIRST;
        }
        if end == self.frame.len() {
            flags |= LAST;
        }
        let mut chunk = Vec::with_capacity(header + end - self.offset);
        chunk.push(flags);
        chunk.push(self.seq);
        if first {
            chunk.extend_from_slice(&self.declared.to_be_bytes());
        }
        chunk.extend_from_slice(&self.frame[self.offset..end]);
        self.seq = self.seq.wrapping_add(1);
        self.offset = end;
        self.started = true;
        Some(chunk)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = if self.started && self.offset >= self.frame.len() {
            0
        } else {
            self.count_left()
        };
        (left, Some(left))
    }
}

impl ExactSizeIterator for Chunks<'_> {}

/// A frame being rebuilt.
#[derive(Debug)]
struct Partial {
    declared_bytes: usize,
    bytes: Vec<u8>,
}

/// Rebuilds frames from the chunks of one direction of a link. Holds at
/// most one partial frame, never more than its limit.
#[derive(Debug)]
pub struct Reassembler {
    limit_bytes: usize,
    /// The sequence number the next chunk must carry: 0 on a fresh link;
    /// `None` after an error (the next first chunk sets it).
    expected_seq: Option<u8>,
    partial: Option<Partial>,
}

/// A chunk's header, read.
struct Header<'a> {
    first: bool,
    last: bool,
    seq: u8,
    /// The frame's length (first chunks only).
    declared_bytes: usize,
    piece: &'a [u8],
}

fn parse(chunk: &[u8]) -> Result<Header<'_>, ChunkError> {
    let [flags, seq, rest @ ..] = chunk else {
        return Err(ChunkError::Truncated {
            needed: CHUNK_HEADER_BYTES,
            got: chunk.len(),
        });
    };
    let version = flags >> 4;
    if version != CHUNK_FORMAT_VERSION {
        return Err(ChunkError::UnknownVersion { version });
    }
    if flags & RESERVED != 0 {
        return Err(ChunkError::ReservedFlags { flags: *flags });
    }
    let first = flags & FIRST != 0;
    let (declared_bytes, piece) = if first {
        let [a, b, c, d, piece @ ..] = rest else {
            return Err(ChunkError::Truncated {
                needed: FIRST_CHUNK_HEADER_BYTES,
                got: chunk.len(),
            });
        };
        (u32::from_be_bytes([*a, *b, *c, *d]) as usize, piece)
    } else {
        (0, rest)
    };
    Ok(Header {
        first,
        last: flags & LAST != 0,
        seq: *seq,
        declared_bytes,
        piece,
    })
}

impl Reassembler {
    /// A reassembler of frames of at most `limit_bytes`.
    pub fn new(limit_bytes: usize) -> Reassembler {
        Reassembler {
            limit_bytes,
            expected_seq: Some(0),
            partial: None,
        }
    }

    /// Takes the next chunk; returns the frame when this chunk completed
    /// one. After an error the partial frame is dropped and the next first
    /// chunk starts afresh (a caller may push the refused chunk again: if
    /// it was a first chunk, it now starts a frame).
    pub fn push(&mut self, chunk: &[u8]) -> Result<Option<Vec<u8>>, ChunkError> {
        let out = self.push_inner(chunk);
        if out.is_err() {
            self.partial = None;
            self.expected_seq = None;
        }
        out
    }

    /// Whether the reassembler follows the sender's chunk numbers: false
    /// after an error, until the next first chunk.
    pub fn in_step(&self) -> bool {
        self.expected_seq.is_some()
    }

    /// Whether a frame is partly received.
    pub fn is_partial(&self) -> bool {
        self.partial.is_some()
    }

    fn push_inner(&mut self, chunk: &[u8]) -> Result<Option<Vec<u8>>, ChunkError> {
        let h = parse(chunk)?;
        if let Some(expected) = self.expected_seq {
            if h.seq != expected {
                return Err(ChunkError::Sequence { expected, got: h.seq });
            }
        }
        let mut partial = self.start_or_continue(&h)?;
        let got_bytes = partial.bytes.len() + h.piece.len();
        let complete = got_bytes == partial.declared_bytes;
        if got_bytes > partial.declared_bytes || complete != h.last {
            return Err(ChunkError::LengthMismatch {
                declared_bytes: partial.declared_bytes,
                got_bytes,
            });
        }
        partial.bytes.extend_from_slice(h.piece);
        self.expected_seq = Some(h.seq.wrapping_add(1));
        if complete {
            return Ok(Some(partial.bytes));
        }
        self.partial = Some(partial);
        Ok(None)
    }

    /// The frame this chunk belongs to: a new one for a first chunk (its
    /// length checked against the limit before anything is buffered), else
    /// the one in progress.
    fn start_or_continue(&mut self, h: &Header<'_>) -> Result<Partial, ChunkError> {
        match (h.first, self.partial.take()) {
            (true, None) => {
                if h.declared_bytes > self.limit_bytes {
                    return Err(ChunkError::TooLarge {
                        size_bytes: h.declared_bytes,
                        limit_bytes: self.limit_bytes,
                    });
                }
                // Grows with the pieces: a declared length is not trusted
                // with an allocation before its bytes arrive.
                Ok(Partial {
                    declared_bytes: h.declared_bytes,
                    bytes: Vec::with_capacity(h.piece.len()),
                })
            }
            (true, Some(p)) => Err(ChunkError::FrameInterrupted {
                got_bytes: p.bytes.len(),
                declared_bytes: p.declared_bytes,
            }),
            (false, None) => Err(ChunkError::NoFrameStarted),
            (false, Some(_)) if h.piece.is_empty() => Err(ChunkError::EmptyPiece),
            (false, Some(p)) => Ok(p),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(c: &mut Chunker, frame: &[u8], chunk_bytes: usize) -> Vec<Vec<u8>> {
        c.split(frame, chunk_bytes).expect("chunk size in range").collect()
    }

    #[test]
    fn a_small_frame_is_one_chunk_with_both_flags() {
        let parts = split(&mut Chunker::new(), b"hello", 20);
        assert_eq!(parts, vec![vec![0x13, 0, 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o']]);
        let mut r = Reassembler::new(100);
        assert_eq!(r.push(&parts[0]), Ok(Some(b"hello".to_vec())));
    }

    #[test]
    fn an_empty_frame_is_one_header_only_chunk() {
        let parts = split(&mut Chunker::new(), b"", MIN_CHUNK_BYTES);
        assert_eq!(parts, vec![vec![0x13, 0, 0, 0, 0, 0]]);
        assert_eq!(Reassembler::new(0).push(&parts[0]), Ok(Some(Vec::new())));
    }

    #[test]
    fn sequence_numbers_run_on_across_frames_and_wrap() {
        let mut c = Chunker::new();
        let mut r = Reassembler::new(1 << 16);
        let frame = vec![7u8; 1000];
        for _ in 0..5 {
            let chunks = c.split(&frame, 20).expect("size in range");
            let n = chunks.len();
            let parts: Vec<_> = chunks.collect();
            assert_eq!(parts.len(), n, "exact size");
            let mut out = None;
            for p in &parts {
                assert!(p.len() <= 20);
                out = r.push(p).expect("in order").or(out);
            }
            assert_eq!(out.as_ref(), Some(&frame));
        }
    }

    #[test]
    fn a_chunk_size_below_the_minimum_is_refused() {
        assert_eq!(
            Chunker::new().split(b"x", MIN_CHUNK_BYTES - 1).err(),
            Some(ChunkError::ChunkSizeTooSmall {
                chunk_bytes: MIN_CHUNK_BYTES - 1,
                min_bytes: MIN_CHUNK_BYTES
            })
        );
        assert_eq!(chunk_bytes_for_att_mtu(DEFAULT_ATT_MTU), 20);
        assert_eq!(chunk_bytes_for_att_mtu(0), 0);
    }

    #[test]
    fn lost_duplicated_and_reordered_chunks_are_errors() {
        let parts = split(&mut Chunker::new(), &[1u8; 50], 10);
        assert!(parts.len() >= 4);
        // A fresh link starts at 0: a lost first chunk is seen too.
        assert_eq!(
            Reassembler::new(100).push(&parts[1]),
            Err(ChunkError::Sequence { expected: 0, got: 1 })
        );
        let mut r = Reassembler::new(100);
        r.push(&parts[0]).expect("first");
        assert_eq!(r.push(&parts[2]), Err(ChunkError::Sequence { expected: 1, got: 2 }));
        assert!(!r.is_partial(), "the partial frame is dropped");
        let mut r = Reassembler::new(100);
        r.push(&parts[0]).expect("first");
        r.push(&parts[1]).expect("second");
        assert_eq!(r.push(&parts[1]), Err(ChunkError::Sequence { expected: 2, got: 1 }));
        // After an error, a middle chunk cannot start anything.
        assert_eq!(r.push(&parts[2]), Err(ChunkError::NoFrameStarted));
        // The same frame sent again (new numbers) goes through.
        assert!(r.push(&parts[0]).expect("restart").is_none());
    }

    #[test]
    fn hostile_headers_are_errors() {
        let mut r = Reassembler::new(100);
        assert_eq!(r.push(&[]), Err(ChunkError::Truncated { needed: 2, got: 0 }));
        assert_eq!(r.push(&[0x11, 0, 0]), Err(ChunkError::Truncated { needed: 6, got: 3 }));
        assert_eq!(r.push(&[0x23, 0]), Err(ChunkError::UnknownVersion { version: 2 }));
        assert_eq!(r.push(&[0x17, 0]), Err(ChunkError::ReservedFlags { flags: 0x17 }));
        assert_eq!(
            r.push(&[0x11, 0, 0xff, 0xff, 0xff, 0xff, 1]),
            Err(ChunkError::TooLarge {
                size_bytes: u32::MAX as usize,
                limit_bytes: 100
            })
        );
        // Declares 3 bytes, carries 4.
        assert_eq!(
            r.push(&[0x13, 0, 0, 0, 0, 3, 1, 2, 3, 4]),
            Err(ChunkError::LengthMismatch {
                declared_bytes: 3,
                got_bytes: 4
            })
        );
        // Declares 3 bytes, says last after 2.
        assert_eq!(
            r.push(&[0x13, 0, 0, 0, 0, 3, 1, 2]),
            Err(ChunkError::LengthMismatch {
                declared_bytes: 3,
                got_bytes: 2
            })
        );
        // Reaches its length without saying last.
        assert_eq!(
            r.push(&[0x11, 0, 0, 0, 0, 2, 1, 2]),
            Err(ChunkError::LengthMismatch {
                declared_bytes: 2,
                got_bytes: 2
            })
        );
        assert_eq!(r.push(&[0x11, 5, 0, 0, 0, 4, 1]), Ok(None));
        assert_eq!(r.push(&[0x10, 6]), Err(ChunkError::EmptyPiece));
        assert_eq!(r.push(&[0x11, 9, 0, 0, 0, 4, 1]), Ok(None));
        assert_eq!(
            r.push(&[0x11, 10, 0, 0, 0, 4, 1]),
            Err(ChunkError::FrameInterrupted {
                got_bytes: 1,
                declared_bytes: 4
            })
        );
        for e in [ChunkError::NoFrameStarted, ChunkError::EmptyPiece] {
            assert!(!e.to_string().is_empty());
        }
    }
}

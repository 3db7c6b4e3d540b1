//! One sync session as a sans-IO state machine: bytes and events in,
//! frames to send, store work to do, and timers out. No socket, clock, task
//! or store inside; the driver (the session actor, a test, the simulator)
//! feeds it with `handle_*` and drains [`Session::poll_output`].
//!
//! The exchange: both sides send `Hello`, agree on the newest protocol
//! version both speak (or refuse with the reason), then either side may
//! *poke* ("I have news"); the other answers with a `Request` carrying its
//! version vector and a fresh round number, and the poked side sends the
//! changes it lacks in `Changes` batches of that round, the last one marked.
//! The receiver applies each batch and, after the last, records the claim
//! of the round's *first* batch (later batches may come from a newer state
//! that was not sent in full). A batch of another round is ignored; a
//! failed apply abandons the round and asks again after a pause.
//!
//! Any malformed, oversized or out-of-place message ends the session with a
//! `Refuse` saying why, and changes nothing.

use super::wire::{self, Hello, Message, Refusal, SubscriptionSpec, WireError};
use crate::codec::Change;
use crate::hlc::PeerId;
use crate::vv::VersionVector;
use std::collections::VecDeque;

/// How the session behaves.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// This peer.
    pub me: PeerId,
    /// What this peer wants from the other.
    pub subscriptions: Vec<SubscriptionSpec>,
    /// Largest frame this peer accepts.
    pub max_frame_bytes: u32,
    /// Pause before asking again after a failed apply.
    pub retry_ms: u64,
}

/// Timers the session asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// Ask again after an abandoned round.
    Retry,
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Put this frame on the link.
    Send(Vec<u8>),
    /// The handshake is done.
    Established {
        /// The other peer.
        remote: PeerId,
        /// The protocol version in use.
        version: u16,
        /// What the other peer wants from us.
        subscriptions: Vec<SubscriptionSpec>,
    },
    /// Read the changes the remote lacks since `since` and hand them to
    /// [`Session::send_changes`], batch by batch, with this round.
    Serve {
        /// The remote's round.
        round: u64,
        /// The remote's version vector.
        since: VersionVector,
    },
    /// Merge these changes; after the last batch of a round, record
    /// `claim` (with `WriteTx::mark_synced`) if nothing was refused. Report
    /// with [`Session::handle_applied`].
    Apply {
        /// The round.
        round: u64,
        /// The changes.
        changes: Vec<Change>,
        /// The claim to record once applied (last batch only).
        claim: Option<VersionVector>,
    },
    /// Call [`Session::handle_timer`] after this long.
    SetTimer {
        /// Which.
        timer: Timer,
        /// In how many milliseconds.
        after_ms: u64,
    },
    /// The session is over (after sending the refusal, if any).
    Closed {
        /// Why, when it was not a clean end.
        refusal: Option<Refusal>,
    },
}

#[derive(Clone, Debug, PartialEq)]
enum State {
    /// Waiting for the other side's `Hello`.
    Handshake,
    Open {
        version: u16,
    },
    Closed,
}

/// Bound on outputs queued between drains (a driver that never drains is
/// a bug; the bound makes it loud instead of unbounded memory).
const MAX_QUEUED_OUTPUTS: usize = 4_096;

/// A sync session with one remote peer.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    state: State,
    remote: Option<PeerId>,
    /// The limit the remote announced for frames we send.
    remote_max_frame_bytes: u32,
    next_round: u64,
    /// The round we are receiving, with its first batch's claim.
    receiving: Option<(u64, Option<VersionVector>)>,
    /// News came while receiving: ask again when the round ends.
    poked: bool,
    outputs: VecDeque<Output>,
}

impl Session {
    /// A session that has not started; `first_round` makes round numbers
    /// unique across restarts of the driver.
    pub fn new(config: SessionConfig, first_round: u64) -> Session {
        Session {
            config,
            state: State::Handshake,
            remote: None,
            remote_max_frame_bytes: wire::DEFAULT_MAX_FRAME_BYTES,
            next_round: first_round,
            receiving: None,
            poked: false,
            outputs: VecDeque::new(),
        }
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The other peer, once known.
    pub fn remote(&self) -> Option<PeerId> {
        self.remote
    }

    fn push(&mut self, out: Output) {
        assert!(
            self.outputs.len() < MAX_QUEUED_OUTPUTS,
            "session outputs are not being drained"
        );
        self.outputs.push_back(out);
    }

    fn version(&self) -> u16 {
        match self.state {
            State::Open { version } => version,
            _ => wire::PROTOCOL_VERSION,
        }
    }

    fn send(&mut self, msg: &Message) {
        let frame = wire::encode(msg, self.version());
        self.push(Output::Send(frame));
    }

    fn close(&mut self, refusal: Option<Refusal>) {
        if self.state == State::Closed {
            return;
        }
        if let Some(r) = &refusal {
            self.send(&Message::Refuse(r.clone()));
        }
        self.state = State::Closed;
        self.push(Output::Closed { refusal });
    }

    fn violation(&mut self, reason: impl Into<String>) {
        self.close(Some(Refusal::ProtocolViolation { reason: reason.into() }));
    }

    /// The link is up: say hello.
    pub fn handle_connected(&mut self) {
        let hello = Hello {
            versions: (wire::MIN_PROTOCOL_VERSION, wire::PROTOCOL_VERSION),
            peer: self.config.me,
            subscriptions: self.config.subscriptions.clone(),
            max_frame_bytes: self.config.max_frame_bytes,
        };
        self.send(&Message::Hello(hello));
    }

    /// This peer committed something the remote may want.
    pub fn handle_local_commit(&mut self) {
        if matches!(self.state, State::Open { .. }) {
            self.send(&Message::Poke);
        }
    }

    /// A frame from the remote. `local` is this peer's version vector now
    /// (sent with a request the frame may trigger).
    pub fn handle_frame(&mut self, frame: &[u8], local: &VersionVector) {
        if self.state == State::Closed {
            return;
        }
        match wire::decode(frame, self.config.max_frame_bytes as usize) {
            Ok((_, msg)) => self.handle_message(msg, local),
            Err(e) => self.violation(describe(&e)),
        }
    }

    fn handle_message(&mut self, msg: Message, local: &VersionVector) {
        match (self.state.clone(), msg) {
            (_, Message::Refuse(r)) => {
                self.state = State::Closed;
                self.push(Output::Closed { refusal: Some(r) });
            }
            (State::Handshake, Message::Hello(theirs)) => self.handle_hello(theirs, local),
            (State::Open { .. }, Message::Poke) => self.ask(local),
            (State::Open { .. }, Message::Request { round, since }) => self.push(Output::Serve { round, since }),
            (
                State::Open { .. },
                Message::Changes {
                    round,
                    changes,
                    upto,
                    last,
                },
            ) => self.receive(round, changes, upto, last),
            (state, msg) => self.violation(format!("{} during {}", kind(&msg), phase(&state))),
        }
    }

    fn handle_hello(&mut self, theirs: Hello, local: &VersionVector) {
        let ours = Hello {
            versions: (wire::MIN_PROTOCOL_VERSION, wire::PROTOCOL_VERSION),
            peer: self.config.me,
            subscriptions: Vec::new(),
            max_frame_bytes: self.config.max_frame_bytes,
        };
        match wire::negotiate(&ours, &theirs) {
            Ok(version) => {
                self.state = State::Open { version };
                self.remote = Some(theirs.peer);
                self.remote_max_frame_bytes = theirs.max_frame_bytes.clamp(1024, wire::MAX_FRAME_BYTES);
                self.push(Output::Established {
                    remote: theirs.peer,
                    version,
                    subscriptions: theirs.subscriptions,
                });
                // First contact: ask for what we lack.
                self.ask(local);
            }
            Err(refusal) => self.close(Some(refusal)),
        }
    }

    /// Asks the remote for what this peer lacks, unless a round is running.
    fn ask(&mut self, local: &VersionVector) {
        if self.receiving.is_some() {
            self.poked = true;
            return;
        }
        let round = self.next_round;
        self.next_round += 1;
        self.receiving = Some((round, None));
        self.send(&Message::Request {
            round,
            since: local.clone(),
        });
    }

    fn receive(&mut self, round: u64, changes: Vec<Change>, upto: VersionVector, last: bool) {
        let Some((current, first)) = self.receiving.as_mut() else {
            return; // a batch of an abandoned round
        };
        if *current != round {
            return;
        }
        let first = first.get_or_insert(upto);
        let claim = last.then(|| first.clone());
        self.push(Output::Apply { round, changes, claim });
    }

    /// The driver applied a batch (`ok` false: it failed, or a change was
    /// refused). `local` is this peer's version vector now.
    pub fn handle_applied(&mut self, round: u64, last: bool, ok: bool, local: &VersionVector) {
        if self.receiving.as_ref().map(|r| r.0) != Some(round) {
            return;
        }
        if !ok {
            // Nothing more of this round is applied or claimed.
            self.receiving = None;
            self.push(Output::SetTimer {
                timer: Timer::Retry,
                after_ms: self.config.retry_ms,
            });
            return;
        }
        if last {
            self.receiving = None;
            if std::mem::take(&mut self.poked) {
                self.ask(local);
            }
        }
    }

    /// A timer fired.
    pub fn handle_timer(&mut self, timer: Timer, local: &VersionVector) {
        match timer {
            Timer::Retry if matches!(self.state, State::Open { .. }) => self.ask(local),
            Timer::Retry => {}
        }
    }

    /// Sends one batch answering the remote's request of `round`. The
    /// driver keeps batches under the remote's frame limit
    /// ([`Session::remote_max_frame_bytes`]); a batch that would exceed it
    /// is refused here rather than sent.
    pub fn send_changes(
        &mut self,
        round: u64,
        changes: Vec<Change>,
        upto: VersionVector,
        last: bool,
    ) -> Result<(), WireError> {
        if !matches!(self.state, State::Open { .. }) {
            return Ok(());
        }
        let frame = wire::encode(
            &Message::Changes {
                round,
                changes,
                upto,
                last,
            },
            self.version(),
        );
        let limit = self.remote_max_frame_bytes as usize;
        if frame.len() > limit {
            return Err(WireError::TooLarge {
                size_bytes: frame.len(),
                limit_bytes: limit,
            });
        }
        self.push(Output::Send(frame));
        Ok(())
    }

    /// Largest frame the remote accepts.
    pub fn remote_max_frame_bytes(&self) -> u32 {
        self.remote_max_frame_bytes
    }

    /// Ends the session cleanly (the link is going down).
    pub fn handle_close(&mut self) {
        self.close(None);
    }
}

fn describe(e: &WireError) -> String {
    format!("undecodable frame: {e}")
}

fn kind(msg: &Message) -> &'static str {
    match msg {
        Message::Hello(_) => "Hello",
        Message::Refuse(_) => "Refuse",
        Message::Request { .. } => "Request",
        Message::Changes { .. } => "Changes",
        Message::Poke => "Poke",
    }
}

fn phase(state: &State) -> &'static str {
    match state {
        State::Handshake => "the handshake",
        State::Open { .. } => "the session",
        State::Closed => "a closed session",
    }
}

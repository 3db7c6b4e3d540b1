//! The one error type of the embedding API.

use crate::actor::{AskError, Escalation};
use rhizome_engine::dql::exec::DqlError;
use rhizome_engine::store::StoreError;
use std::fmt;

/// Why a [`crate::Peer`] call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum PeerError {
    /// The statement failed: syntax (with line and column), evaluation, or
    /// the store refused it. Nothing it wrote was committed.
    Dql(DqlError),
    /// The store could not be opened or read.
    Store(StoreError),
    /// An argument was refused before anything ran.
    InvalidInput {
        /// What was wrong.
        reason: String,
    },
    /// The subsystem that would serve the call has stopped: the peer was
    /// closed, or it gave up after a restart storm.
    Stopped {
        /// The subsystem (actor) name.
        subsystem: String,
    },
    /// The subsystem failed while serving this call and was restarted. A
    /// read had no effect; a write may or may not have committed (the
    /// failure may have come after the commit), so check before retrying
    /// one that is not idempotent.
    Interrupted {
        /// The subsystem (actor) name.
        subsystem: String,
    },
    /// A subsystem failed repeatedly and the peer shut it down.
    Failed(Escalation),
    /// A result row does not have the shape of the requested type.
    Decode {
        /// The row's position in the result.
        index: usize,
        /// What serde said.
        reason: String,
    },
    /// A live query could not be brought up to date (for instance a
    /// function refused a value that just arrived). The query keeps its last
    /// result and is tried again at the next commit.
    LiveQuery {
        /// Why, as the statement's error says it.
        reason: String,
    },
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerError::Dql(e) => write!(f, "{e}"),
            PeerError::Store(e) => write!(f, "{e}"),
            PeerError::InvalidInput { reason } => write!(f, "invalid input: {reason}"),
            PeerError::Stopped { subsystem } => write!(f, "the {subsystem} has stopped"),
            PeerError::Interrupted { subsystem } => {
                write!(
                    f,
                    "the {subsystem} failed while serving the call and restarted; nothing was committed"
                )
            }
            PeerError::Decode { index, reason } => write!(f, "row {index}: {reason}"),
            PeerError::LiveQuery { reason } => write!(f, "live query not updated: {reason}"),
            PeerError::Failed(e) => write!(
                f,
                "the {} failed {} times and was shut down: {}",
                e.actor, e.restarts, e.reason
            ),
        }
    }
}

impl std::error::Error for PeerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PeerError::Dql(e) => Some(e),
            PeerError::Store(e) => Some(e),
            _ => None,
        }
    }
}

impl From<DqlError> for PeerError {
    fn from(e: DqlError) -> Self {
        PeerError::Dql(e)
    }
}

impl From<StoreError> for PeerError {
    fn from(e: StoreError) -> Self {
        PeerError::Store(e)
    }
}

impl From<AskError> for PeerError {
    fn from(e: AskError) -> Self {
        match e {
            AskError::Stopped { actor } => PeerError::Stopped {
                subsystem: actor.to_string(),
            },
            AskError::NoReply { actor } => PeerError::Interrupted {
                subsystem: actor.to_string(),
            },
            // `AskError` is non-exhaustive for other crates only.
        }
    }
}

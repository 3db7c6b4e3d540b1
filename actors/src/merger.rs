//! The merger actor: applies changes that arrive from other peers.
//!
//! Sync sessions hand it [`MergerMsg::Merge`] with one batch each (bounded
//! by the frame it arrived in); it applies each batch in one write
//! transaction through the store actor, so a batch is merged atomically and
//! its version-vector claim is recorded only with it. It
//! counts what each origin brought, for monitoring, and it is where merge
//! work queues up (its bounded mailbox pushes back on the sessions) rather
//! than in the store actor, whose mailbox also serves the app.

use crate::actor::{Actor, Addr, Ctx, Reply};
use crate::error::PeerError;
use crate::store::{RemoteBatch, StoreActor, StoreMsg};
use rhizome_engine::hlc::PeerId;
use rhizome_engine::store::BatchOutcome;
use std::collections::BTreeMap;

/// Most changes one batch may carry; larger batches are refused whole.
pub const MAX_BATCH_CHANGES: usize = 10_000;

/// What the merger counted for one origin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeStats {
    /// Batches applied.
    pub batches: u64,
    /// Changes received (in batches that were applied).
    pub received: u64,
    /// Changes that brought something new.
    pub applied: u64,
    /// Changes refused (invalid, or too large).
    pub refused: u64,
}

/// Messages of the merger actor.
pub(crate) enum MergerMsg {
    /// Apply one batch from `from`.
    Merge {
        from: PeerId,
        batch: RemoteBatch,
        reply: Reply<Result<BatchOutcome, PeerError>>,
    },
    /// Counts per origin.
    Stats(Reply<BTreeMap<PeerId, MergeStats>>),
}

/// The merger's state.
pub(crate) struct MergerActor {
    store: Addr<StoreActor>,
    stats: BTreeMap<PeerId, MergeStats>,
}

impl MergerActor {
    pub(crate) fn new(store: Addr<StoreActor>) -> MergerActor {
        MergerActor {
            store,
            stats: BTreeMap::new(),
        }
    }

    async fn merge(&mut self, from: PeerId, batch: RemoteBatch) -> Result<BatchOutcome, PeerError> {
        if batch.changes.len() > MAX_BATCH_CHANGES {
            return Err(PeerError::InvalidInput {
                reason: format!(
                    "a batch from {from} has {} changes; at most {MAX_BATCH_CHANGES} are taken",
                    batch.changes.len()
                ),
            });
        }
        let received = batch.changes.len() as u64;
        let outcome = self.store.ask(|reply| StoreMsg::Apply { from, batch, reply }).await??;
        let s = self.stats.entry(from).or_default();
        s.batches += 1;
        s.received += received;
        s.applied += outcome.applied as u64;
        s.refused += outcome.refused.len() as u64;
        Ok(outcome)
    }
}

impl Actor for MergerActor {
    type Msg = MergerMsg;

    async fn handle(&mut self, msg: MergerMsg, _ctx: &mut Ctx<Self>) {
        match msg {
            MergerMsg::Merge { from, batch, reply } => {
                let out = self.merge(from, batch).await;
                reply.send(out);
            }
            MergerMsg::Stats(reply) => reply.send(self.stats.clone()),
        }
    }
}

//! The merger actor: applies changes that arrive from other peers.
//!
//! Sync sessions hand it [`MergerMsg::Merge`] with one batch each (bounded
//! by the frame it arrived in). A durable commit costs far more than
//! merging a batch, so when it takes a batch it also takes the batches
//! already queued behind it (at most [`MAX_JOINED_BATCHES`], and
//! [`MAX_BATCH_CHANGES`] changes plus one batch) and applies them, in
//! mailbox order, in one write transaction through the store actor. Each
//! batch keeps its own answer, and its version-vector claim is recorded
//! only with it (only if none of its own changes was refused). If the
//! joined transaction fails, the store applies the batches one transaction
//! each, so one bad batch never refuses the others.
//!
//! It counts what each origin brought, for monitoring, and it is where
//! merge work queues up (its bounded mailbox pushes back on the sessions)
//! rather than in the store actor, whose mailbox also serves the app.

use crate::actor::{Actor, Addr, Ctx, Reply};
use crate::error::PeerError;
use crate::store::{RemoteBatch, StoreActor, StoreMsg};
use rhizome_engine::hlc::PeerId;
use rhizome_engine::store::BatchOutcome;
use std::collections::BTreeMap;

/// Most changes one batch may carry; larger batches are refused whole.
pub const MAX_BATCH_CHANGES: usize = 10_000;

/// Most batches applied in one write transaction.
pub const MAX_JOINED_BATCHES: usize = 16;

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

/// One batch waiting to be applied, and who waits for its outcome.
struct Job {
    from: PeerId,
    batch: RemoteBatch,
    reply: Reply<Result<BatchOutcome, PeerError>>,
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

    /// Refuses a batch too large to take, else hands it back as a job.
    fn admit(from: PeerId, batch: RemoteBatch, reply: Reply<Result<BatchOutcome, PeerError>>) -> Option<Job> {
        if batch.changes.len() > MAX_BATCH_CHANGES {
            reply.send(Err(PeerError::InvalidInput {
                reason: format!(
                    "a batch from {from} has {} changes; at most {MAX_BATCH_CHANGES} are taken",
                    batch.changes.len()
                ),
            }));
            return None;
        }
        Some(Job { from, batch, reply })
    }

    /// Applies `jobs` (in order) in one transaction when there are several
    /// (the store falls back to one each if that fails), answers each.
    async fn apply(&mut self, jobs: Vec<Job>) {
        debug_assert!(jobs.len() <= MAX_JOINED_BATCHES);
        let mut replies = Vec::with_capacity(jobs.len());
        let mut batches = Vec::with_capacity(jobs.len());
        for job in jobs {
            replies.push((job.from, job.batch.changes.len() as u64, job.reply));
            batches.push((job.from, job.batch));
        }
        let outcomes: Vec<Result<BatchOutcome, PeerError>> = match batches.len() {
            0 => return,
            1 => {
                let (from, batch) = batches.pop().expect("one batch");
                vec![self
                    .store
                    .ask(|reply| StoreMsg::Apply { from, batch, reply })
                    .await
                    .map_err(PeerError::from)
                    .and_then(|r| r)]
            }
            n => match self.store.ask(|reply| StoreMsg::ApplyMany { batches, reply }).await {
                Ok(outcomes) if outcomes.len() == n => outcomes,
                Ok(_) => (0..n)
                    .map(|_| {
                        Err(PeerError::InvalidInput {
                            reason: "internal: the store answered a joined merge with another count".into(),
                        })
                    })
                    .collect(),
                Err(e) => (0..n).map(|_| Err(PeerError::from(e.clone()))).collect(),
            },
        };
        debug_assert_eq!(outcomes.len(), replies.len());
        for ((from, received, reply), outcome) in replies.into_iter().zip(outcomes) {
            if let Ok(o) = &outcome {
                let s = self.stats.entry(from).or_default();
                s.batches += 1;
                s.received += received;
                s.applied += o.applied as u64;
                s.refused += o.refused.len() as u64;
            }
            reply.send(outcome);
        }
    }

    /// Takes `first` and the merges queued behind it, up to the bounds;
    /// a message of another kind taken on the way is handed back (to be
    /// handled after these merges, in mailbox order).
    fn gather(first: Job, ctx: &mut Ctx<Self>) -> (Vec<Job>, Option<MergerMsg>) {
        let mut changes = first.batch.changes.len();
        let mut jobs = vec![first];
        // Bounded by MAX_JOINED_BATCHES taken (refused ones count too).
        for _ in 1..MAX_JOINED_BATCHES {
            if changes >= MAX_BATCH_CHANGES {
                break;
            }
            match ctx.try_next() {
                Some(MergerMsg::Merge { from, batch, reply }) => {
                    if let Some(job) = Self::admit(from, batch, reply) {
                        changes += job.batch.changes.len();
                        jobs.push(job);
                    }
                }
                Some(other) => return (jobs, Some(other)),
                None => break,
            }
        }
        (jobs, None)
    }

    fn handle_other(&mut self, msg: MergerMsg) {
        match msg {
            MergerMsg::Stats(reply) => reply.send(self.stats.clone()),
            MergerMsg::Merge { reply, .. } => {
                // Never handed here: merges go through `gather`.
                reply.send(Err(PeerError::InvalidInput {
                    reason: "internal: a merge was not gathered".into(),
                }))
            }
        }
    }
}

impl Actor for MergerActor {
    type Msg = MergerMsg;

    async fn handle(&mut self, msg: MergerMsg, ctx: &mut Ctx<Self>) {
        match msg {
            MergerMsg::Merge { from, batch, reply } => {
                let Some(first) = Self::admit(from, batch, reply) else {
                    return;
                };
                let (jobs, later) = Self::gather(first, ctx);
                self.apply(jobs).await;
                if let Some(msg) = later {
                    self.handle_other(msg);
                }
            }
            other => self.handle_other(other),
        }
    }
}

//! What a peer wants from another: its sync subscriptions compiled into an
//! [`Interest`] that the serving side asks of every document it could send.
//!
//! A subscription is `SELECT * FROM coll [USE IDS ...] [WHERE ...]`: a set
//! of whole documents. A whole-collection subscription takes field-level
//! deltas. A filtered one takes a matching document with news *whole* (its
//! full CRDT state, each origin's part in that origin's order): the
//! receiver may have missed writes made while the document did not match,
//! and a delta would leave it with a state no other replica has. A document
//! that stops matching is no longer updated there; deletions in a
//! subscribed collection always travel (the receiver may hold the
//! document).
//!
//! Subscriptions come from the remote, so compiling one is validation: a
//! malformed or unsupported query is an error that names it.

use super::wire::{Role, SubscriptionSpec};
use crate::doc::Doc;
use crate::dql::ast::{Expr, SelectItem, Statement};
use crate::dql::eval::{self, Params};
use crate::dql::exec::DqlError;
use crate::dql::{params_from_json, parse};
use crate::value::Value;
use std::collections::BTreeMap;
use std::fmt;

/// Most subscriptions one peer may announce.
pub const MAX_SUBSCRIPTIONS: usize = 256;

/// How a document is sent to a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selection {
    /// Not at all: the peer does not want it.
    Skip,
    /// The writes the peer lacks.
    Delta,
    /// The whole state (it matches a filtered subscription).
    Whole,
}

/// Why a subscription cannot be used.
#[derive(Debug)]
#[non_exhaustive]
pub enum ScopeError {
    /// The query or its parameters do not compile.
    Dql {
        /// The query.
        query: String,
        /// What is wrong.
        error: DqlError,
    },
    /// Valid DQL that is not a set of whole documents.
    Unsupported {
        /// The query.
        query: String,
        /// What it has that a subscription cannot.
        what: &'static str,
    },
    /// More than [`MAX_SUBSCRIPTIONS`].
    TooMany {
        /// How many were given.
        count: usize,
    },
}

impl fmt::Display for ScopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeError::Dql { query, error } => write!(f, "subscription `{query}`: {error}"),
            ScopeError::Unsupported { query, what } => write!(
                f,
                "subscription `{query}`: a sync subscription is a set of whole documents; it cannot have {what}"
            ),
            ScopeError::TooMany { count } => {
                write!(f, "{count} subscriptions (at most {MAX_SUBSCRIPTIONS})")
            }
        }
    }
}

impl std::error::Error for ScopeError {}

/// One compiled filtered subscription.
#[derive(Debug)]
struct Filter {
    use_ids: Option<Vec<Expr>>,
    filter: Option<Expr>,
    params: Params,
}

/// What one collection is wanted for.
#[derive(Debug)]
enum Wanted {
    /// Every document.
    All,
    /// Those matching any of these.
    Matching(Vec<Filter>),
}

/// The union of a peer's subscriptions, per collection.
#[derive(Debug, Default)]
pub struct Interest {
    collections: BTreeMap<String, Wanted>,
    /// The subscriptions compiled, sorted and without repeats: what
    /// [`Interest::same_as`] compares.
    specs: Vec<SubscriptionSpec>,
}

/// Checks one subscription and splits it into its collection and filter
/// (`None`: the whole collection).
fn compile_one(spec: &SubscriptionSpec) -> Result<(String, Option<Filter>), ScopeError> {
    let dql = |error: DqlError| ScopeError::Dql {
        query: spec.query.clone(),
        error,
    };
    let unsupported = |what| ScopeError::Unsupported {
        query: spec.query.clone(),
        what,
    };
    let params_json = Value::parse(&spec.params).map_err(|e| {
        dql(DqlError::Invalid {
            reason: format!("parameters are not JSON: {e}"),
        })
    })?;
    let params = params_from_json(&params_json).map_err(dql)?;
    let stmt = parse::parse(&spec.query).map_err(|e| dql(e.into()))?;
    eval::check(&stmt).map_err(|e| dql(e.into()))?;
    eval::check_params(&stmt, &params).map_err(|e| dql(e.into()))?;
    let Statement::Select(s) = stmt else {
        return Err(unsupported("anything but a SELECT"));
    };
    if !s.joins.is_empty() {
        return Err(unsupported("a JOIN (subscribe to each collection instead)"));
    }
    if !matches!(s.items.as_slice(), [SelectItem::All(_)]) {
        return Err(unsupported("a projection (use SELECT *)"));
    }
    if s.distinct || !s.group_by.is_empty() || s.having.is_some() {
        return Err(unsupported("DISTINCT, GROUP BY or HAVING"));
    }
    if !s.order_by.is_empty() || s.limit.is_some() || s.offset.is_some() {
        return Err(unsupported("ORDER BY, LIMIT or OFFSET"));
    }
    if s.from.collection.starts_with("system:") {
        return Err(unsupported("a system collection"));
    }
    let filter = (s.use_ids.is_some() || s.filter.is_some()).then(|| Filter {
        use_ids: s.use_ids.clone(),
        filter: s.filter.clone(),
        params,
    });
    Ok((s.from.collection.clone(), filter))
}

/// Checks that `spec` can be a sync subscription.
pub fn check(spec: &SubscriptionSpec) -> Result<(), ScopeError> {
    compile_one(spec).map(drop)
}

impl Interest {
    /// Nothing wanted (a peer without subscriptions).
    pub fn none() -> Interest {
        Interest::default()
    }

    /// The union of `specs`.
    pub fn compile(specs: &[SubscriptionSpec]) -> Result<Interest, ScopeError> {
        if specs.len() > MAX_SUBSCRIPTIONS {
            return Err(ScopeError::TooMany { count: specs.len() });
        }
        let mut collections: BTreeMap<String, Wanted> = BTreeMap::new();
        for spec in specs {
            let (coll, filter) = compile_one(spec)?;
            let wanted = collections.entry(coll).or_insert(Wanted::Matching(Vec::new()));
            match (wanted, filter) {
                (Wanted::All, _) => {}
                (w, None) => *w = Wanted::All,
                (Wanted::Matching(fs), Some(f)) => fs.push(f),
            }
        }
        let mut specs = specs.to_vec();
        specs.sort_unstable();
        specs.dedup();
        Ok(Interest { collections, specs })
    }

    /// Whether `other` was compiled from the same subscriptions (in any
    /// order), so wants exactly the same documents. Several remotes usually
    /// subscribe alike; a read for one then serves the others.
    pub fn same_as(&self, other: &Interest) -> bool {
        self.specs == other.specs
    }

    /// Whether any document of `collection` may be wanted.
    pub fn wants_collection(&self, collection: &str) -> bool {
        self.collections.contains_key(collection)
    }

    /// Whether some collection is wanted only in part (a filter).
    pub fn has_filters(&self) -> bool {
        self.collections.values().any(|w| matches!(w, Wanted::Matching(_)))
    }

    /// Whether nothing at all is wanted.
    pub fn is_empty(&self) -> bool {
        self.collections.is_empty()
    }

    /// How the document `id` of `collection`, in state `doc`, is sent.
    pub fn select(&self, collection: &str, id: &Value, doc: &Doc) -> Selection {
        match self.collections.get(collection) {
            None => Selection::Skip,
            Some(Wanted::All) => Selection::Delta,
            Some(Wanted::Matching(filters)) => {
                let Some(mut fields) = doc.render() else {
                    // Deleted: the peer may hold it, so the deletion goes.
                    return Selection::Delta;
                };
                fields.insert("_id".into(), id.clone());
                let row = Value::Object(fields);
                match filters.iter().any(|f| f.matches(id, &row)) {
                    true => Selection::Whole,
                    // A deletion the peer may lack still travels.
                    false if doc.deleted.is_some() => Selection::Delta,
                    false => Selection::Skip,
                }
            }
        }
    }

    /// Whether a peer holding completely what `self` wants also holds all
    /// that `other` wants: then what it claims to have seen is complete
    /// for `other` too. Conservative: a filtered subscription is covered
    /// only by its collection being wanted whole.
    pub fn covers(&self, other: &Interest) -> bool {
        other
            .collections
            .keys()
            .all(|c| matches!(self.collections.get(c), Some(Wanted::All)))
    }
}

impl Filter {
    fn matches(&self, id: &Value, row: &Value) -> bool {
        // A filter that fails to evaluate on a document does not match it.
        let ids_ok = self.use_ids.as_ref().is_none_or(|ids| {
            ids.iter()
                .any(|e| eval::eval(e, row, &self.params).ok().flatten().as_ref() == Some(id))
        });
        ids_ok
            && self
                .filter
                .as_ref()
                .is_none_or(|f| eval::truthy(&eval::eval(f, row, &self.params).unwrap_or(None)))
    }
}

/// The setting that gives collections a sync scope.
pub const SYNC_SCOPES_SETTING: &str = "USER_COLLECTION_SYNC_SCOPES";

/// Where a collection's documents may go (`USER_COLLECTION_SYNC_SCOPES`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncScope {
    /// Every peer (the default).
    AllPeers,
    /// Only the big peer (cloud sync), never other devices.
    BigPeerOnly,
    /// Only other small peers, never the big peer.
    SmallPeersOnly,
    /// Nowhere: the collection never leaves the device.
    LocalPeerOnly,
}

impl SyncScope {
    /// The scope named `name`, as written in the setting.
    pub fn parse(name: &str) -> Option<SyncScope> {
        match name {
            "AllPeers" => Some(SyncScope::AllPeers),
            "BigPeerOnly" => Some(SyncScope::BigPeerOnly),
            "SmallPeersOnly" => Some(SyncScope::SmallPeersOnly),
            "LocalPeerOnly" => Some(SyncScope::LocalPeerOnly),
            _ => None,
        }
    }

    /// Whether documents in this scope may be sent to a peer of `role`.
    pub fn allows(self, role: Role) -> bool {
        match self {
            SyncScope::AllPeers => true,
            SyncScope::BigPeerOnly => role == Role::BigPeer,
            SyncScope::SmallPeersOnly => role == Role::SmallPeer,
            SyncScope::LocalPeerOnly => false,
        }
    }
}

/// Checks a value for [`SYNC_SCOPES_SETTING`]: an object from collection
/// names to scope names. The error says which entry is wrong and why.
pub fn check_sync_scopes(value: &Value) -> Result<(), String> {
    let Value::Object(o) = value else {
        return Err(format!(
            "{SYNC_SCOPES_SETTING} is an object of collection names to scopes, got {value}"
        ));
    };
    for (coll, scope) in o {
        if scope.as_str().and_then(SyncScope::parse).is_none() {
            return Err(format!(
                "{SYNC_SCOPES_SETTING}: collection {coll}: {scope} is not a scope \
                 (AllPeers, BigPeerOnly, SmallPeersOnly or LocalPeerOnly)"
            ));
        }
    }
    Ok(())
}

/// The scope of every collection, from the store's settings.
#[derive(Clone, Debug, Default)]
pub struct SyncScopes(BTreeMap<String, SyncScope>);

impl SyncScopes {
    /// From the settings (an unreadable entry counts as the default).
    pub fn from_settings(settings: &[(String, Value)]) -> SyncScopes {
        let Some((_, Value::Object(o))) = settings.iter().find(|(n, _)| n == SYNC_SCOPES_SETTING) else {
            return SyncScopes::default();
        };
        SyncScopes(
            o.iter()
                .filter_map(|(c, s)| Some((c.clone(), s.as_str().and_then(SyncScope::parse)?)))
                .collect(),
        )
    }

    /// The scope of `collection`.
    pub fn of(&self, collection: &str) -> SyncScope {
        self.0.get(collection).copied().unwrap_or(SyncScope::AllPeers)
    }
}

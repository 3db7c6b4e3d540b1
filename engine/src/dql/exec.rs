//! Runs DQL statements against a store transaction.
//!
//! Reads take a snapshot (`ReadTx`), mutations the write transaction
//! (`WriteTx`), so a statement sees a consistent state and several
//! statements in one transaction see each other's writes. The pipeline of a
//! `SELECT` is: source rows (a scan, or `USE IDS`) -> filter -> join ->
//! group and aggregate -> project -> distinct -> order (a bounded top-k when
//! there is a `LIMIT`) -> offset and limit.

use super::ast::{
    Conflict, CrdtType, Delete, Expr, Insert, JoinKind, Mutation, OrderItem, Path, Segment, Select, SelectItem,
    Statement, TypeDecl, Update,
};
use super::eval::{self, Accumulator, EvalError, Params, Row};
use super::item::Item;
use super::parse::ParseError;
use super::plan::{self, Access};
use super::profile::{step, ClockUs, Profile};
use super::source::LazyRow;
use crate::doc::{Attachment, FieldKind, Num, Schema};
use crate::kv::Kv;
use crate::store::{Edit, IndexDef, OnConflict, RawDoc, StoreError, WriteTx};
use crate::value::Value;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;
use std::sync::Arc;

/// The largest result a query may materialize (rows), so a mistaken query
/// cannot exhaust memory; `LIMIT` lifts nothing above it.
pub const MAX_RESULT_ROWS: usize = 1_000_000;

/// Errors of running DQL.
#[derive(Debug)]
#[non_exhaustive]
pub enum DqlError {
    /// The text is not a DQL statement.
    Parse(ParseError),
    /// An expression could not be evaluated (missing parameter, bad argument).
    Eval(EvalError),
    /// The store refused or failed.
    Store(StoreError),
    /// The statement is well-formed but cannot run; `reason` says why.
    Invalid {
        /// Why.
        reason: String,
    },
    /// A mutation was given to a read-only entry point.
    NotReadOnly,
}

impl fmt::Display for DqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DqlError::Parse(e) => write!(f, "syntax error: {e}"),
            DqlError::Eval(e) => write!(f, "{e}"),
            DqlError::Store(e) => write!(f, "{e}"),
            DqlError::Invalid { reason } => f.write_str(reason),
            DqlError::NotReadOnly => f.write_str("this statement changes data; run it in a write transaction"),
        }
    }
}

impl std::error::Error for DqlError {}

impl From<ParseError> for DqlError {
    fn from(e: ParseError) -> Self {
        DqlError::Parse(e)
    }
}
impl From<EvalError> for DqlError {
    fn from(e: EvalError) -> Self {
        DqlError::Eval(e)
    }
}
impl From<StoreError> for DqlError {
    fn from(e: StoreError) -> Self {
        DqlError::Store(e)
    }
}

fn invalid(reason: impl Into<String>) -> DqlError {
    DqlError::Invalid { reason: reason.into() }
}

/// What a statement returned.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Output {
    /// Result rows (`SELECT`, `RETURNING`, `EXPLAIN`, `SHOW`).
    pub items: Vec<Item>,
    /// Ids of the documents a mutation changed.
    pub mutated: Vec<Value>,
}

impl Output {
    /// The rows as values (decoding stored documents).
    pub fn values(&self) -> Result<Vec<Value>, DqlError> {
        Ok(self
            .items
            .iter()
            .map(|i| i.value().cloned())
            .collect::<Result<_, _>>()?)
    }
}

pub use super::source::Docs;

/// Settings the engine knows, with their defaults.
pub const SETTINGS: &[(&str, &str)] = &[("DQL_STRICT_MODE", "false"), ("USER_COLLECTION_SYNC_SCOPES", "{}")];

fn strict_mode(docs: &dyn Docs) -> Result<bool, DqlError> {
    Ok(docs
        .settings()?
        .iter()
        .any(|(n, v)| n == "DQL_STRICT_MODE" && *v == Value::Bool(true)))
}

/// Runs a statement that only reads.
pub fn run_read(docs: &mut dyn Docs, stmt: &Statement, params: &Params) -> Result<Output, DqlError> {
    run_read_with(docs, stmt, params, None)
}

/// [`run_read`] with a microsecond clock, which `PROFILE` uses for timings.
pub fn run_read_with(
    docs: &mut dyn Docs,
    stmt: &Statement,
    params: &Params,
    clock: Option<ClockUs<'_>>,
) -> Result<Output, DqlError> {
    if let Statement::Select(s) = stmt {
        if let Some(id) = plan::point_read_id(s) {
            if let Some(items) = point_read(docs, s, id, params)? {
                return Ok(Output {
                    items,
                    mutated: Vec::new(),
                });
            }
        }
    }
    checked(stmt, params)?;
    read(docs, stmt, params, None, clock)
}

/// A point read ([`plan::point_read_id`]): the document read straight from
/// the id index, without the general checks, planning and top-k (the
/// statement holds no call for [`checked`]; its one parameter is checked
/// here). The same rows as the general path, which answers when this
/// returns `None`: an id that is null or that no document can have.
fn point_read(docs: &mut dyn Docs, s: &Select, id: &Expr, params: &Params) -> Result<Option<Vec<Item>>, DqlError> {
    let id = match id {
        Expr::Param { name, pos } => params.get(name).ok_or_else(|| EvalError::MissingParam {
            name: name.clone(),
            pos: *pos,
        })?,
        Expr::Literal(v) => v,
        _ => return Ok(None),
    };
    let coll = s.from.collection.as_str();
    let id = match crate::store::into_canonical_id(coll, id.clone()) {
        Ok(id) if !matches!(id, Value::Null) => id,
        _ => return Ok(None),
    };
    let mut found = Ok(None);
    docs.get_raw(coll, &id, &mut |raw| found = visible_record(raw))?;
    Ok(Some(
        found?
            .map(|record| Item::stored(coll.into(), record))
            .into_iter()
            .collect(),
    ))
}

/// The record of a row if it is visible (not deleted).
fn visible_record(raw: RawDoc<'_>) -> Result<Option<Vec<u8>>, DqlError> {
    let row = LazyRow::new(raw)?;
    if !row.is_visible()? {
        return Ok(None);
    }
    row.check()?;
    Ok(Some(row.raw().record().to_vec()))
}

/// The checks every statement passes before it runs, whatever the data:
/// functions, argument counts and literal arguments, then parameters.
fn checked(stmt: &Statement, params: &Params) -> Result<(), DqlError> {
    eval::check(stmt)?;
    Ok(eval::check_params(stmt, params)?)
}

fn read(
    docs: &mut dyn Docs,
    stmt: &Statement,
    params: &Params,
    prof: Option<&Profile<'_>>,
    clock: Option<ClockUs<'_>>,
) -> Result<Output, DqlError> {
    match stmt {
        Statement::Select(s) => Ok(Output {
            items: select(docs, s, params, prof)?,
            mutated: Vec::new(),
        }),
        Statement::Show { name } => show(docs, name.as_deref()),
        Statement::Explain(inner) => Ok(Output {
            items: vec![explain(docs, inner, params)?.into()],
            mutated: Vec::new(),
        }),
        Statement::Profile(inner) if is_read_only(inner) => {
            let p = Profile::new(clock);
            let start = p.now_us();
            let out = read(docs, inner, params, Some(&p), clock)?;
            profiled(docs, inner, params, &p, start, &out)
        }
        _ => Err(DqlError::NotReadOnly),
    }
}

/// Runs any statement inside the write transaction.
pub fn run_write<K: Kv>(tx: &mut WriteTx<'_, K>, stmt: &Statement, params: &Params) -> Result<Output, DqlError> {
    run_write_with(tx, stmt, params, None)
}

/// [`run_write`] with a microsecond clock, which `PROFILE` uses for timings.
pub fn run_write_with<K: Kv>(
    tx: &mut WriteTx<'_, K>,
    stmt: &Statement,
    params: &Params,
    clock: Option<ClockUs<'_>>,
) -> Result<Output, DqlError> {
    checked(stmt, params)?;
    write(tx, stmt, params, None, clock)
}

fn write<K: Kv>(
    tx: &mut WriteTx<'_, K>,
    stmt: &Statement,
    params: &Params,
    prof: Option<&Profile<'_>>,
    clock: Option<ClockUs<'_>>,
) -> Result<Output, DqlError> {
    match stmt {
        Statement::Insert(i) => insert(tx, i, params),
        Statement::Update(u) => update(tx, u, params, prof),
        Statement::Delete(d) => remove(tx, d, params, false, prof),
        Statement::Evict(d) => remove(tx, d, params, true, prof),
        Statement::AlterSystem { name, value } => alter(tx, name, value, params),
        Statement::CreateIndex {
            name,
            collection,
            paths,
            if_not_exists,
        } => {
            let keys = paths
                .iter()
                .map(|p| {
                    p.keys()
                        .ok_or_else(|| invalid(format!("index {name}: {p} has an array index; index whole fields")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            tx.create_index(name, collection, &keys, *if_not_exists)?;
            Ok(Output::default())
        }
        Statement::DropIndex { name, if_exists } => {
            tx.drop_index(name, *if_exists)?;
            Ok(Output::default())
        }
        Statement::Profile(inner) => {
            let p = Profile::new(clock);
            let start = p.now_us();
            let out = write(tx, inner, params, Some(&p), clock)?;
            if !is_read_only(inner) {
                let matched = p.spent_us();
                let written = out.mutated.len() as u64;
                p.add("write", written, written, p.now_us().saturating_sub(start + matched));
            }
            profiled(tx, inner, params, &p, start, &out)
        }
        other => read(tx, other, params, prof, clock),
    }
}

/// Whether a statement changes nothing (can run on a snapshot).
pub fn is_read_only(stmt: &Statement) -> bool {
    match stmt {
        Statement::Select(_) | Statement::Show { .. } | Statement::Explain(_) => true,
        Statement::Profile(inner) => is_read_only(inner),
        _ => false,
    }
}

/// The output of `PROFILE`: one document with the plan (as `EXPLAIN` gives
/// it), the operators, the number of rows returned and mutated, and the
/// total time; the statement's own mutations are reported as usual.
fn profiled(
    docs: &dyn Docs,
    inner: &Statement,
    params: &Params,
    p: &Profile<'_>,
    start_us: u64,
    out: &Output,
) -> Result<Output, DqlError> {
    let total_us = p.now_us().saturating_sub(start_us);
    let mut o = match explain(docs, inner, params)? {
        Value::Object(o) => o,
        _ => BTreeMap::new(),
    };
    o.insert("operators".to_string(), p.operators());
    o.insert("rows".to_string(), Value::Int(out.items.len() as i64));
    o.insert("mutated".to_string(), Value::Int(out.mutated.len() as i64));
    if p.timed() {
        o.insert("time_us".to_string(), Value::Int(total_us as i64));
    }
    Ok(Output {
        items: vec![Value::Object(o).into()],
        mutated: out.mutated.clone(),
    })
}

// ---- rows ----

/// The row of a joined query: documents by alias; paths may start with an alias.
struct Joined<'a> {
    parts: Vec<(&'a str, Option<&'a Value>)>,
}

impl Row for Joined<'_> {
    fn field(&self, path: &Path) -> Option<Value> {
        if let Some(Segment::Key(first)) = path.segments.first() {
            if let Some((_, doc)) = self.parts.iter().find(|(alias, _)| alias == first) {
                let rest = Path {
                    segments: path.segments[1..].to_vec(),
                };
                return match doc {
                    None => Some(Value::Null),
                    Some(d) if rest.segments.is_empty() => Some((*d).clone()),
                    Some(d) => d.field(&rest),
                };
            }
        }
        // Unqualified paths read the first (driving) document.
        self.parts.first().and_then(|(_, d)| d.and_then(|d| d.field(path)))
    }
}

// ---- SELECT ----

fn select(docs: &mut dyn Docs, s: &Select, params: &Params, prof: Option<&Profile<'_>>) -> Result<Vec<Item>, DqlError> {
    if s.from.collection == "system:indexes" {
        let rows: Vec<Value> = docs.indexes()?.iter().map(index_row).collect();
        let out = project_all(s, &rows, params)?;
        return Ok(order_and_limit(s, out, params)?.into_iter().map(Item::from).collect());
    }
    if s.joins.is_empty() && !grouped(s) && !s.distinct {
        return select_stream(docs, s, params, prof);
    }
    let rows = phase(prof, "read+filter", 0, || source_rows(docs, s, params))?;
    let rows = match s.joins.is_empty() {
        true => rows,
        false => phase(prof, "join", rows.len(), || join_rows(docs, s, rows, params))?,
    };
    let mut out = if grouped(s) {
        phase(prof, "group", rows.len(), || group(s, &rows, params))?
    } else {
        phase(prof, "project", rows.len(), || project_all(s, &rows, params))?
    };
    if s.distinct {
        out = phase(prof, "distinct", out.len(), || {
            dedupe(&mut out);
            Ok(out)
        })?;
    }
    let rows = phase(prof, "order+limit", out.len(), || order_and_limit(s, out, params))?;
    Ok(rows.into_iter().map(Item::from).collect())
}

/// Runs a whole operator over a batch of rows, profiled when asked.
fn phase<T>(
    prof: Option<&Profile<'_>>,
    op: &'static str,
    rows_in: usize,
    run: impl FnOnce() -> Result<Vec<T>, DqlError>,
) -> Result<Vec<T>, DqlError> {
    let Some(p) = prof else { return run() };
    let start = p.now_us();
    let out = run()?;
    p.add(op, rows_in as u64, out.len() as u64, p.now_us().saturating_sub(start));
    Ok(out)
}

/// A result row: what is returned, and what `ORDER BY` reads.
struct Projected {
    value: Value,
    keys: Vec<Option<Value>>,
}

/// Visits the stored records the plan reads, in its order, until `visit`
/// returns false. An index range passes over the entries whose key fails
/// the plan's key tests without reading their documents.
fn read_source(
    docs: &mut dyn Docs,
    coll: &str,
    access: &Access,
    prof: Option<&Profile<'_>>,
    visit: &mut dyn FnMut(RawDoc<'_>) -> bool,
) -> Result<(), DqlError> {
    match access {
        Access::Ids(ids) => {
            let mut go = true;
            for id in ids {
                docs.get_raw(coll, id, &mut |raw| go = visit(raw))?;
                if !go {
                    break;
                }
            }
        }
        Access::Index(a) if a.key_tests.is_empty() => docs.index_scan(a, &mut |_| true, visit)?,
        Access::Index(a) => {
            let mut damaged = false;
            let mut keep_key = |key: &[u8]| {
                // After a damaged key, the rest of the range is passed over.
                let passed = step(prof, "key filter", || match a.key_passes(key) {
                    Some(ok) => Ok(ok),
                    None => Err(()),
                });
                damaged |= passed.is_err();
                passed == Ok(true) && !damaged
            };
            docs.index_scan(a, &mut keep_key, visit)?;
            if damaged {
                return Err(DqlError::Store(StoreError::Corrupt {
                    collection: coll.to_string(),
                    id: None,
                    reason: crate::codec::CodecError::Malformed {
                        reason: format!("an entry key of index {} does not split into its paths", a.def.name),
                    },
                }));
            }
        }
        Access::Scan => docs.scan(coll, visit)?,
    }
    Ok(())
}

/// Whether a visible row passes the filter.
fn passes(filter: Option<&Expr>, row: &LazyRow<'_>, params: &Params) -> Result<bool, DqlError> {
    Ok(row.is_visible()? && matches_filter(filter, row, params)?)
}

fn matches_filter(filter: Option<&Expr>, row: &LazyRow<'_>, params: &Params) -> Result<bool, DqlError> {
    let Some(f) = filter else { return Ok(true) };
    let v = eval::eval(f, row, params);
    row.check()?;
    Ok(eval::truthy(&v?))
}

/// Documents of the driving collection that pass `WHERE` (for joined
/// queries the filter runs after the join), read as planned and rendered.
fn source_rows(docs: &mut dyn Docs, s: &Select, params: &Params) -> Result<Vec<Value>, DqlError> {
    let access = access(docs, s, params)?;
    let filter = if s.joins.is_empty() { s.filter.as_ref() } else { None };
    let mut rows = Vec::new();
    let mut failure = None;
    let mut keep = |raw: RawDoc<'_>| -> bool {
        match LazyRow::new(raw)
            .map_err(DqlError::from)
            .and_then(|row| Ok((passes(filter, &row, params)?, row)))
            .and_then(|(ok, row)| Ok(ok.then(|| row.into_value()).transpose()?))
        {
            Ok(Some(doc)) => rows.push(doc),
            Ok(None) => {}
            Err(e) => failure = Some(e),
        }
        failure.is_none() && rows.len() < MAX_RESULT_ROWS
    };
    read_source(docs, &s.from.collection, &access, None, &mut keep)?;
    failure.map_or(Ok(rows), Err)
}

/// What the streaming pipeline keeps of a row: a `SELECT *` row stays an
/// undecoded record (a top-k pushes most out, and the result decodes rows
/// only when they are read).
enum Kept {
    Value(Value),
    Record(Vec<u8>),
}

/// `SELECT` without joins, grouping or `DISTINCT`: rows stream from the
/// source through the filter into a bounded top-k (or straight out when the
/// source order is the requested one, stopping after `OFFSET + LIMIT`), and
/// only rows that are returned are rendered.
fn select_stream(
    docs: &mut dyn Docs,
    s: &Select,
    params: &Params,
    prof: Option<&Profile<'_>>,
) -> Result<Vec<Item>, DqlError> {
    let (access, pinned) = access_pinned(docs, s, params)?;
    let limit = count_param(&s.limit, "LIMIT", params)?;
    let offset = count_param(&s.offset, "OFFSET", params)?.unwrap_or(0);
    let wanted = limit.map(|l| l.saturating_add(offset));
    let presorted = s.order_by.is_empty() || matches!(&access, Access::Index(a) if a.ordered);
    let filter = match pinned {
        Some(at) => plan::residual_pinned(s, at),
        None => plan::residual(s, &access, params)?,
    };
    let stream = Stream {
        s,
        filter: filter.as_deref(),
        params,
        order: if presorted { &[] } else { &s.order_by },
        star: matches!(s.items.as_slice(), [SelectItem::All(None)]),
        whole: s.items.iter().any(|i| matches!(i, SelectItem::All(None))),
        prof,
    };
    let enough = if presorted { wanted } else { None }.unwrap_or(MAX_RESULT_ROWS);
    let mut top = TopK::new(stream.order, if presorted { None } else { wanted });
    let mut failure = None;
    let mut visited = 0u64;
    let (start, source) = (prof.map(|p| p.now_us()), source_name(&access));
    if let Some(p) = prof {
        p.add(source, 0, 0, 0); // listed first
    }
    read_source(docs, &s.from.collection, &access, prof, &mut |raw| {
        visited += 1;
        match stream.offer(&mut top, raw) {
            Ok(()) => top.len() < enough,
            Err(e) => {
                failure = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    if let (Some(p), Some(start)) = (prof, start) {
        // The source's own time: the whole loop less the per-row operators in it.
        let elapsed = p.now_us().saturating_sub(start);
        p.add(source, 0, visited, elapsed.saturating_sub(p.spent_us()));
    }
    let kept = top.len();
    let coll: Arc<str> = s.from.collection.as_str().into();
    phase(prof, "limit", kept, || {
        Ok(top
            .finish()
            .into_iter()
            .skip(offset)
            .take(limit.unwrap_or(usize::MAX))
            .map(|kept| match kept {
                Kept::Value(v) => Item::from(v),
                Kept::Record(bytes) => Item::stored(coll.clone(), bytes),
            })
            .collect())
    })
}

/// How the driving collection is read; the index catalogue is only loaded
/// when no point read decides.
fn access(docs: &dyn Docs, s: &Select, params: &Params) -> Result<Access, DqlError> {
    Ok(access_pinned(docs, s, params)?.0)
}

/// [`access`], with the position of the conjunct that pins the ids of
/// point reads (see [`plan::direct_pinned`]).
fn access_pinned(docs: &dyn Docs, s: &Select, params: &Params) -> Result<(Access, Option<usize>), DqlError> {
    match plan::direct_pinned(s, params)? {
        Some(planned) => Ok(planned),
        None => Ok((plan::plan(s, &docs.indexes()?, params)?, None)),
    }
}

fn source_name(access: &Access) -> &'static str {
    match access {
        Access::Ids(_) => "read ids",
        Access::Index(_) => "index scan",
        Access::Scan => "scan",
    }
}

/// One streaming `SELECT`: what each row goes through.
struct Stream<'q> {
    s: &'q Select,
    /// What is left of `WHERE` once the access path has applied its part.
    filter: Option<&'q Expr>,
    params: &'q Params,
    /// The sort, or nothing when the source already reads in order.
    order: &'q [OrderItem],
    /// `SELECT *` alone: rows are documents.
    star: bool,
    /// The projection includes `*`: it needs the whole document.
    whole: bool,
    prof: Option<&'q Profile<'q>>,
}

impl Stream<'_> {
    /// Filters, projects and ranks one stored record.
    fn offer(&self, top: &mut TopK<'_, Kept>, raw: RawDoc<'_>) -> Result<(), DqlError> {
        let row = LazyRow::new(raw)?;
        if !step(self.prof, "visible", || row.is_visible().map_err(DqlError::from))? {
            return Ok(());
        }
        let filter = self.filter;
        if filter.is_some() && !step(self.prof, "filter", || matches_filter(filter, &row, self.params))? {
            return Ok(());
        }
        let op = if self.order.is_empty() {
            "project"
        } else {
            "project+top-k"
        };
        step(self.prof, op, || self.rank(top, row))?;
        Ok(())
    }

    /// Projects a row and offers it to the top-k; whether it was kept.
    fn rank(&self, top: &mut TopK<'_, Kept>, row: LazyRow<'_>) -> Result<bool, DqlError> {
        if self.star {
            let keys = eval_keys(self.order, &row, self.params);
            row.check()?;
            let keys = keys?;
            if !top.would_keep(&keys) {
                return Ok(false);
            }
            top.push(keys, Kept::Record(row.raw().record().to_vec()));
            return Ok(true);
        }
        let doc = if self.whole { row.value()? } else { Value::Null };
        let value = project(&self.s.items, &row, &doc, self.params);
        row.check()?;
        let value = value?;
        let keys = sort_keys(self.order, &row, &value, self.params);
        row.check()?;
        let keys = keys?;
        if !top.would_keep(&keys) {
            return Ok(false);
        }
        top.push(keys, Kept::Value(value));
        Ok(true)
    }
}

pub(crate) fn eval_keys(order: &[OrderItem], row: &dyn Row, params: &Params) -> Result<Vec<Option<Value>>, DqlError> {
    Ok(order
        .iter()
        .map(|o| eval::eval(&o.expr, row, params))
        .collect::<Result<_, _>>()?)
}

fn grouped(s: &Select) -> bool {
    !s.group_by.is_empty()
        || s.items
            .iter()
            .any(|i| matches!(i, SelectItem::Expr { expr, .. } if eval::contains_aggregate(expr)))
        || s.having.as_ref().is_some_and(eval::contains_aggregate)
        || s.order_by.iter().any(|o| eval::contains_aggregate(&o.expr))
}

/// Nested-loop joins whose inner side is served by `_id` (the inner lookup
/// is a point read, never a scan).
fn join_rows(docs: &mut dyn Docs, s: &Select, rows: Vec<Value>, params: &Params) -> Result<Vec<Value>, DqlError> {
    if s.joins.is_empty() {
        return Ok(rows);
    }
    let left_alias = s.from.alias.clone().unwrap_or_else(|| s.from.collection.clone());
    let mut out = Vec::new();
    for left in &rows {
        let mut combos: Vec<Vec<(String, Option<Value>)>> = vec![vec![(left_alias.clone(), Some(left.clone()))]];
        for j in &s.joins {
            let alias = j.source.alias.clone().unwrap_or_else(|| j.source.collection.clone());
            let key = join_key(&j.on, &alias).ok_or_else(|| {
                invalid(format!(
                    "JOIN {}: the ON condition must be {alias}._id = <expression>",
                    alias
                ))
            })?;
            let mut next = Vec::new();
            for combo in combos {
                let row = Joined {
                    parts: combo.iter().map(|(a, d)| (a.as_str(), d.as_ref())).collect(),
                };
                let id = eval::eval(key, &row, params)?;
                let inner = match id {
                    Some(id) if !matches!(id, Value::Null) => docs.get(&j.source.collection, &id).unwrap_or(None),
                    _ => None,
                };
                match (inner, j.kind) {
                    (Some(doc), _) => {
                        let mut c = combo.clone();
                        c.push((alias.clone(), Some(doc)));
                        next.push(c);
                    }
                    (None, JoinKind::Left) => {
                        let mut c = combo.clone();
                        c.push((alias.clone(), None));
                        next.push(c);
                    }
                    (None, JoinKind::Inner) => {}
                }
            }
            combos = next;
        }
        for combo in combos {
            let row = Joined {
                parts: combo.iter().map(|(a, d)| (a.as_str(), d.as_ref())).collect(),
            };
            if let Some(f) = &s.filter {
                if !eval::truthy(&eval::eval(f, &row, params)?) {
                    continue;
                }
            }
            let mut o = BTreeMap::new();
            for (a, d) in combo {
                o.insert(a, d.unwrap_or(Value::Null));
            }
            out.push(Value::Object(o));
            if out.len() >= MAX_RESULT_ROWS {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

/// The expression an `ON alias._id = expr` condition gives for the inner `_id`.
fn join_key<'e>(on: &'e Expr, alias: &str) -> Option<&'e Expr> {
    let Expr::Binary(super::ast::BinaryOp::Eq, a, b) = on else {
        return None;
    };
    let is_inner_id = |e: &Expr| matches!(e, Expr::Field(p) if p.segments == [Segment::Key(alias.to_string()), Segment::Key("_id".into())]);
    if is_inner_id(a) {
        Some(b)
    } else if is_inner_id(b) {
        Some(a)
    } else {
        None
    }
}

fn output_name(item_expr: &Expr, alias: &Option<String>, n: usize) -> String {
    if let Some(a) = alias {
        return a.clone();
    }
    match item_expr {
        Expr::Field(p) => match p.segments.last() {
            Some(Segment::Key(k)) => k.clone(),
            _ => format!("${n}"),
        },
        Expr::Call { name, .. } => name.clone(),
        Expr::CountStar => "count".to_string(),
        _ => format!("${n}"),
    }
}

/// Evaluates the projection of one row.
fn project(items: &[SelectItem], row: &dyn Row, doc: &Value, params: &Params) -> Result<Value, DqlError> {
    if let [SelectItem::All(None)] = items {
        return Ok(doc.clone());
    }
    let mut out = BTreeMap::new();
    for (n, item) in items.iter().enumerate() {
        match item {
            SelectItem::All(None) => {
                if let Value::Object(o) = doc {
                    out.extend(o.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
            SelectItem::All(Some(alias)) => {
                if let Some(Value::Object(o)) = row.field(&Path::key(alias)) {
                    out.extend(o);
                }
            }
            SelectItem::Expr { expr, alias } => {
                if let Some(v) = eval::eval(expr, row, params)? {
                    out.insert(output_name(expr, alias, n + 1), v);
                }
            }
        }
    }
    Ok(Value::Object(out))
}

/// Sort keys of a row: an `ORDER BY` term that names an output column reads
/// it; anything else is evaluated on the source row.
fn sort_keys(order: &[OrderItem], row: &dyn Row, out: &Value, params: &Params) -> Result<Vec<Option<Value>>, DqlError> {
    order
        .iter()
        .map(|o| {
            if let Expr::Field(p) = &o.expr {
                if let [Segment::Key(k)] = p.segments.as_slice() {
                    if let Some(v) = out.as_object().and_then(|m| m.get(k)) {
                        return Ok(Some(v.clone()));
                    }
                }
            }
            Ok(eval::eval(&o.expr, row, params)?)
        })
        .collect()
}

fn project_all(s: &Select, rows: &[Value], params: &Params) -> Result<Vec<Projected>, DqlError> {
    let joined = !s.joins.is_empty();
    let mut out = Vec::with_capacity(rows.len());
    for doc in rows {
        let value = if joined {
            let row = joined_row(doc);
            project(&s.items, &row, doc, params)?
        } else {
            project(&s.items, doc, doc, params)?
        };
        let keys = if joined {
            sort_keys(&s.order_by, &joined_row(doc), &value, params)?
        } else {
            sort_keys(&s.order_by, doc, &value, params)?
        };
        out.push(Projected { value, keys });
    }
    Ok(out)
}

fn joined_row(combined: &Value) -> Joined<'_> {
    let parts = combined
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(a, d)| (a.as_str(), (!matches!(d, Value::Null)).then_some(d)))
                .collect()
        })
        .unwrap_or_default();
    Joined { parts }
}

// ---- GROUP BY ----

/// Collects the aggregate calls of an expression (outermost first).
fn aggregates<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    match e {
        Expr::CountStar => out.push(e),
        Expr::Call { name, .. } if eval::is_aggregate(name) => out.push(e),
        _ => e.for_children(&mut |c| aggregates(c, out)),
    }
}

/// Replaces each aggregate call by its value.
fn substitute(e: &Expr, values: &[(&Expr, Option<Value>)]) -> Expr {
    if let Some((_, v)) = values.iter().find(|(a, _)| std::ptr::eq(*a, e) || *a == e) {
        // Aggregates of nothing are null (COUNT is 0), never missing.
        return Expr::Literal(v.clone().unwrap_or(Value::Null));
    }
    let sub = |x: &Expr| Box::new(substitute(x, values));
    match e {
        Expr::Object(fields) => Expr::Object(fields.iter().map(|(k, v)| (k.clone(), substitute(v, values))).collect()),
        Expr::Array(items) => Expr::Array(items.iter().map(|x| substitute(x, values)).collect()),
        Expr::Call {
            name,
            args,
            distinct,
            pos,
        } => Expr::Call {
            name: name.clone(),
            args: args.iter().map(|x| substitute(x, values)).collect(),
            distinct: *distinct,
            pos: *pos,
        },
        Expr::Unary(op, a) => Expr::Unary(*op, sub(a)),
        Expr::Binary(op, a, b) => Expr::Binary(*op, sub(a), sub(b)),
        Expr::In { expr, list, negated } => Expr::In {
            expr: sub(expr),
            list: match list {
                super::ast::InList::List(l) => {
                    super::ast::InList::List(l.iter().map(|x| substitute(x, values)).collect())
                }
                super::ast::InList::Array(a) => super::ast::InList::Array(sub(a)),
            },
            negated: *negated,
        },
        Expr::Between {
            expr,
            low,
            high,
            negated,
        } => Expr::Between {
            expr: sub(expr),
            low: sub(low),
            high: sub(high),
            negated: *negated,
        },
        Expr::Like {
            expr,
            pattern,
            case_insensitive,
            negated,
        } => Expr::Like {
            expr: sub(expr),
            pattern: sub(pattern),
            case_insensitive: *case_insensitive,
            negated: *negated,
        },
        Expr::Is { expr, test, negated } => Expr::Is {
            expr: sub(expr),
            test: *test,
            negated: *negated,
        },
        Expr::Any { var, array, cond } => Expr::Any {
            var: var.clone(),
            array: sub(array),
            cond: sub(cond),
        },
        other => other.clone(),
    }
}

/// A key of values for grouping and de-duplication: the index sort-key
/// encoding, which is equal exactly when the values compare equal (an
/// integer and a float of the same number share it, at any magnitude and
/// inside arrays and objects too).
fn group_key(v: &[Option<Value>]) -> Vec<u8> {
    let mut out = Vec::new();
    for x in v {
        crate::store::encode_sort_key(x.as_ref(), &mut out);
    }
    out
}

/// The row of the one group of an aggregate over no rows: `*` gives `{}`.
static EMPTY_ROW: Value = Value::Object(BTreeMap::new());

fn group(s: &Select, rows: &[Value], params: &Params) -> Result<Vec<Projected>, DqlError> {
    let mut aggs = Vec::new();
    for item in &s.items {
        if let SelectItem::Expr { expr, .. } = item {
            aggregates(expr, &mut aggs);
        }
    }
    if let Some(h) = &s.having {
        aggregates(h, &mut aggs);
    }
    for o in &s.order_by {
        aggregates(&o.expr, &mut aggs);
    }
    struct Group<'r> {
        first: &'r Value,
        accs: Vec<Accumulator>,
    }
    let mut groups: BTreeMap<Vec<u8>, Group<'_>> = BTreeMap::new();
    for doc in rows {
        let key: Vec<Option<Value>> = s
            .group_by
            .iter()
            .map(|g| eval::eval(g, doc, params))
            .collect::<Result<_, _>>()?;
        let g = match groups.entry(group_key(&key)) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let accs = aggs.iter().map(|a| new_acc(a)).collect::<Result<_, _>>()?;
                e.insert(Group { first: doc, accs })
            }
        };
        for (acc, a) in g.accs.iter_mut().zip(&aggs) {
            acc.push(match a {
                Expr::CountStar => Some(Value::Bool(true)),
                Expr::Call { args, .. } => match args.first() {
                    Some(arg) => eval::eval(arg, doc, params)?,
                    None => Some(Value::Bool(true)),
                },
                _ => None,
            });
        }
    }
    // Aggregates over no rows at all still give one row (COUNT(*) = 0).
    if groups.is_empty() && s.group_by.is_empty() {
        let accs = aggs.iter().map(|a| new_acc(a)).collect::<Result<_, _>>()?;
        groups.insert(
            Vec::new(),
            Group {
                first: &EMPTY_ROW,
                accs,
            },
        );
    }
    let mut out = Vec::new();
    for (_, g) in groups {
        let values: Vec<(&Expr, Option<Value>)> = aggs
            .iter()
            .copied()
            .zip(g.accs.into_iter().map(|a| a.finish()))
            .collect();
        if let Some(h) = &s.having {
            if !eval::truthy(&eval::eval(&substitute(h, &values), g.first, params)?) {
                continue;
            }
        }
        let items: Vec<SelectItem> = s
            .items
            .iter()
            .enumerate()
            .map(|(n, i)| match i {
                // Named as the ungrouped projection names them (`$1`, `$2`, ...).
                SelectItem::Expr { expr, alias } => SelectItem::Expr {
                    alias: Some(alias.clone().unwrap_or_else(|| output_name(expr, alias, n + 1))),
                    expr: substitute(expr, &values),
                },
                other => other.clone(),
            })
            .collect();
        let value = project(&items, g.first, g.first, params)?;
        let order: Vec<OrderItem> = s
            .order_by
            .iter()
            .map(|o| OrderItem {
                expr: substitute(&o.expr, &values),
                desc: o.desc,
            })
            .collect();
        let keys = sort_keys(&order, g.first, &value, params)?;
        out.push(Projected { value, keys });
    }
    Ok(out)
}

fn new_acc(a: &Expr) -> Result<Accumulator, DqlError> {
    let (name, distinct) = match a {
        Expr::CountStar => ("count*", false),
        Expr::Call { name, distinct, .. } => (name.as_str(), *distinct),
        _ => return Err(invalid("not an aggregate")),
    };
    Accumulator::new(name, distinct).ok_or_else(|| invalid(format!("{name} is not an aggregate")))
}

fn dedupe(rows: &mut Vec<Projected>) {
    let mut seen = std::collections::BTreeSet::new();
    rows.retain(|r| seen.insert(group_key(&[Some(r.value.clone())])));
}

// ---- ORDER BY, LIMIT, OFFSET ----

/// The engine's total order, with missing first.
pub fn cmp_opt(a: &Option<Value>, b: &Option<Value>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => x.total_cmp(y),
    }
}

pub(crate) fn cmp_keys(order: &[OrderItem], a: &[Option<Value>], b: &[Option<Value>]) -> Ordering {
    for ((o, x), y) in order.iter().zip(a).zip(b) {
        let c = cmp_opt(x, y);
        let c = if o.desc { c.reverse() } else { c };
        if c != Ordering::Equal {
            return c;
        }
    }
    Ordering::Equal
}

pub(crate) fn count_param(e: &Option<Expr>, what: &str, params: &Params) -> Result<Option<usize>, DqlError> {
    let Some(e) = e else { return Ok(None) };
    match eval::eval(e, &Value::Null, params)? {
        Some(Value::Int(n)) if n >= 0 => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
        Some(Value::Float(f)) if f >= 0.0 && f.fract() == 0.0 => Ok(Some(f as usize)),
        other => {
            let got = other.map_or("missing".to_string(), |v| v.to_string());
            let name = match e {
                Expr::Param { name, pos } => {
                    format!(" (parameter :{name} at line {}, column {})", pos.line, pos.column)
                }
                _ => String::new(),
            };
            Err(invalid(format!(
                "{what} must be a non-negative integer{name}, got {got}"
            )))
        }
    }
}

/// A row in the top-k heap: the greatest (by the requested order) on top,
/// so it is the one dropped when a better row arrives.
struct Ranked<'o, T> {
    order: &'o [OrderItem],
    seq: usize,
    keys: Vec<Option<Value>>,
    item: T,
}

impl<T> PartialEq for Ranked<'_, T> {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl<T> Eq for Ranked<'_, T> {}
impl<T> PartialOrd for Ranked<'_, T> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for Ranked<'_, T> {
    fn cmp(&self, o: &Self) -> Ordering {
        // Ties keep arrival (storage) order, so results are stable and deterministic.
        cmp_keys(self.order, &self.keys, &o.keys).then(self.seq.cmp(&o.seq))
    }
}

/// Rows in the requested order: with a bound `k`, only the best `k` are
/// held (memory is `OFFSET + LIMIT` rows, not the whole result).
struct TopK<'o, T> {
    order: &'o [OrderItem],
    k: Option<usize>,
    heap: BinaryHeap<Ranked<'o, T>>,
    seq: usize,
    /// With no order to sort by, rows stay in arrival order (ties keep
    /// it): a plain list, where the first `k` win.
    arrived: Vec<T>,
}

impl<'o, T> TopK<'o, T> {
    fn new(order: &'o [OrderItem], k: Option<usize>) -> Self {
        let capacity = k.unwrap_or(0).min(MAX_RESULT_ROWS).saturating_add(1).min(1024);
        let (heap, arrived) = if order.is_empty() {
            (BinaryHeap::new(), Vec::with_capacity(capacity))
        } else {
            (BinaryHeap::with_capacity(capacity), Vec::new())
        };
        TopK {
            order,
            k,
            heap,
            seq: 0,
            arrived,
        }
    }

    fn len(&self) -> usize {
        self.heap.len() + self.arrived.len()
    }

    /// Whether a row with these keys, arriving now, would be held: it must
    /// beat the worst held row, since it loses ties (it arrived last).
    fn would_keep(&self, keys: &[Option<Value>]) -> bool {
        if self.order.is_empty() {
            return self.k.is_none_or(|k| self.arrived.len() < k);
        }
        match (self.k, self.heap.peek()) {
            (Some(k), Some(worst)) if self.heap.len() >= k => cmp_keys(self.order, keys, &worst.keys) == Ordering::Less,
            (Some(0), _) => false,
            _ => true,
        }
    }

    fn push(&mut self, keys: Vec<Option<Value>>, item: T) {
        debug_assert_eq!(keys.len(), self.order.len(), "one key per ORDER BY term");
        if self.order.is_empty() {
            if self.would_keep(&keys) {
                self.arrived.push(item);
            }
            return;
        }
        self.heap.push(Ranked {
            order: self.order,
            seq: self.seq,
            keys,
            item,
        });
        self.seq += 1;
        if self.k.is_some_and(|k| self.heap.len() > k) {
            self.heap.pop();
        }
    }

    /// The held rows, best first.
    fn finish(self) -> Vec<T> {
        if self.order.is_empty() {
            return self.arrived;
        }
        self.heap.into_sorted_vec().into_iter().map(|r| r.item).collect()
    }
}

fn order_and_limit(s: &Select, rows: Vec<Projected>, params: &Params) -> Result<Vec<Value>, DqlError> {
    let limit = count_param(&s.limit, "LIMIT", params)?;
    let offset = count_param(&s.offset, "OFFSET", params)?.unwrap_or(0);
    let mut top = TopK::new(&s.order_by, limit.map(|l| l.saturating_add(offset)));
    for row in rows {
        if top.would_keep(&row.keys) {
            top.push(row.keys, row.value);
        }
    }
    Ok(top
        .finish()
        .into_iter()
        .skip(offset)
        .take(limit.unwrap_or(usize::MAX))
        .collect())
}

// ---- types ----

/// Declared CRDT types, plus strict mode for everything undeclared.
pub struct Declared<'a> {
    decls: &'a [TypeDecl],
    strict: bool,
}

impl Declared<'_> {
    fn find<'d>(decls: &'d [TypeDecl], path: &[String]) -> Option<&'d CrdtType> {
        let (first, rest) = path.split_first()?;
        let d = decls.iter().find(|d| &d.field == first)?;
        match (&d.ty, rest.is_empty()) {
            (ty, true) => Some(ty),
            (CrdtType::Map(sub), false) => Self::find(sub, rest),
            _ => None,
        }
    }
}

impl Schema for Declared<'_> {
    fn kind(&self, path: &[String], value: &Value) -> FieldKind {
        match Self::find(self.decls, path) {
            Some(CrdtType::Register) => FieldKind::Register,
            Some(CrdtType::Map(_)) => FieldKind::Map,
            Some(CrdtType::Counter) => FieldKind::Counter,
            Some(CrdtType::Attachment) => FieldKind::Attachment,
            None if self.strict => FieldKind::Register,
            None => crate::doc::Inferred.kind(path, value),
        }
    }
    fn is_inferred(&self) -> bool {
        self.decls.is_empty() && !self.strict
    }
}

// ---- INSERT ----

fn conflict_mode(i: &Insert) -> OnConflict {
    match (i.initial, i.on_conflict) {
        (true, _) => OnConflict::Initial,
        (false, Conflict::Fail) => OnConflict::Fail,
        (false, Conflict::Nothing) => OnConflict::Ignore,
        (false, Conflict::Update) => OnConflict::Merge,
        (false, Conflict::UpdateLocalDiff) => OnConflict::MergeDiff,
    }
}

fn check_attachments(schema: &Declared<'_>, path: &mut Vec<String>, v: &Value) -> Result<(), DqlError> {
    match schema.kind(path, v) {
        FieldKind::Attachment if Attachment::from_value(v).is_none() => Err(invalid(format!(
            "field {} is declared ATTACHMENT: its value must be an attachment token {{\"id\": .., \"len\": .., \"meta\": {{..}}}}",
            path.join(".")
        ))),
        FieldKind::Map => {
            if let Value::Object(o) = v {
                for (k, x) in o {
                    path.push(k.clone());
                    check_attachments(schema, path, x)?;
                    path.pop();
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn insert<K: Kv>(tx: &mut WriteTx<'_, K>, i: &Insert, params: &Params) -> Result<Output, DqlError> {
    let schema = Declared {
        decls: &i.types,
        strict: strict_mode(tx)?,
    };
    let mode = conflict_mode(i);
    let mut out = Output::default();
    for d in &i.documents {
        let doc = eval::eval(d, &Value::Null, params)?.unwrap_or(Value::Null);
        let Value::Object(fields) = &doc else {
            return Err(invalid(format!(
                "INSERT INTO {}: a document must be an object, got {doc}",
                i.collection
            )));
        };
        for (k, v) in fields {
            check_attachments(&schema, &mut vec![k.clone()], v)?;
        }
        let done = tx.insert_with(&i.collection, &doc, mode, &schema)?;
        if done.written {
            out.mutated.push(done.id.clone());
        }
        if let Some(items) = &i.returning {
            if let Some(now) = tx.get(&i.collection, &done.id)? {
                out.items.push(project(items, &now, &now, params)?.into());
            }
        }
    }
    Ok(out)
}

// ---- UPDATE, DELETE, EVICT ----

/// Ids of the live documents a filter selects (collected before any write).
fn matching_ids(
    docs: &mut dyn Docs,
    collection: &str,
    filter: Option<&Expr>,
    use_ids: Option<&Vec<Expr>>,
    params: &Params,
    prof: Option<&Profile<'_>>,
) -> Result<Vec<Value>, DqlError> {
    let s = Select {
        distinct: false,
        items: vec![SelectItem::All(None)],
        from: super::ast::Source {
            collection: collection.to_string(),
            alias: None,
        },
        types: Vec::new(),
        use_ids: use_ids.cloned(),
        joins: Vec::new(),
        filter: filter.cloned(),
        group_by: Vec::new(),
        having: None,
        order_by: Vec::new(),
        limit: None,
        offset: None,
    };
    phase(prof, "match", 0, || source_ids(docs, &s, params))
}

/// The `_id`s of the visible documents `s`'s source and filter select, read
/// from the records without rendering the documents (a mutation renders
/// each one again as it writes it).
fn source_ids(docs: &mut dyn Docs, s: &Select, params: &Params) -> Result<Vec<Value>, DqlError> {
    debug_assert!(s.joins.is_empty(), "mutations select from one collection");
    let access = access(docs, s, params)?;
    let mut ids = Vec::new();
    let mut failure = None;
    let mut keep = |raw: RawDoc<'_>| -> bool {
        let id = raw.id();
        let selected = LazyRow::new(raw).map_err(DqlError::from).and_then(|row| {
            let passed = passes(s.filter.as_ref(), &row, params)?;
            // A storage error met while the filter read fields fails the
            // statement, as rendering the row would.
            row.check()?;
            Ok(passed && row.is_visible()?)
        });
        match selected.and_then(|ok| ok.then(|| id.map_err(DqlError::from)).transpose()) {
            Ok(Some(id)) => ids.push(id),
            Ok(None) => {}
            Err(e) => failure = Some(e),
        }
        failure.is_none() && ids.len() < MAX_RESULT_ROWS
    };
    read_source(docs, &s.from.collection, &access, None, &mut keep)?;
    failure.map_or(Ok(ids), Err)
}

fn field_path(p: &Path, pos: super::ast::Pos) -> Result<Vec<String>, DqlError> {
    let keys = p.keys().ok_or_else(|| {
        invalid(format!(
            "line {}, column {}: {p} writes inside an array; arrays are registers, set the whole array",
            pos.line, pos.column
        ))
    })?;
    if keys.first().is_some_and(|k| k == "_id") {
        return Err(invalid(format!(
            "line {}, column {}: _id cannot be changed",
            pos.line, pos.column
        )));
    }
    Ok(keys)
}

fn number(v: Option<Value>, what: &str, p: &Path) -> Result<Num, DqlError> {
    v.as_ref().and_then(Num::from_value).ok_or_else(|| {
        invalid(format!(
            "{what} of {p} needs a number, got {}",
            v.map_or("missing".to_string(), |v| v.to_string())
        ))
    })
}

fn edits_for(u: &Update, doc: &Value, params: &Params) -> Result<Vec<Edit>, DqlError> {
    let mut edits = Vec::with_capacity(u.mutations.len());
    for m in &u.mutations {
        edits.push(match m {
            Mutation::Set(p, e, pos) => {
                let path = field_path(p, *pos)?;
                match eval::eval(e, doc, params)? {
                    Some(value) => Edit::Set { path, value },
                    // Setting a field to a missing value removes it.
                    None => Edit::Unset { path },
                }
            }
            Mutation::Unset(p, pos) => Edit::Unset {
                path: field_path(p, *pos)?,
            },
            Mutation::Increment(p, e, pos) => Edit::Increment {
                path: field_path(p, *pos)?,
                by: number(eval::eval(e, doc, params)?, "INCREMENT", p)?,
            },
            Mutation::Restart(p, e, pos) => Edit::Restart {
                path: field_path(p, *pos)?,
                to: number(eval::eval(e, doc, params)?, "RESTART", p)?,
            },
        });
    }
    Ok(edits)
}

fn update<K: Kv>(
    tx: &mut WriteTx<'_, K>,
    u: &Update,
    params: &Params,
    prof: Option<&Profile<'_>>,
) -> Result<Output, DqlError> {
    let schema = Declared {
        decls: &u.types,
        strict: strict_mode(tx)?,
    };
    let ids = matching_ids(tx, &u.collection, u.filter.as_ref(), None, params, prof)?;
    let mut out = Output::default();
    for id in ids {
        let Some(doc) = tx.get(&u.collection, &id)? else {
            continue;
        };
        let edits = edits_for(u, &doc, params)?;
        for e in &edits {
            if let Edit::Set { path, value } = e {
                check_attachments(&schema, &mut path.clone(), value)?;
            }
        }
        if tx.update_with(&u.collection, &id, &edits, &schema)? {
            if let Some(items) = &u.returning {
                if let Some(now) = tx.get(&u.collection, &id)? {
                    out.items.push(project(items, &now, &now, params)?.into());
                }
            }
            out.mutated.push(id);
        }
    }
    Ok(out)
}

fn remove<K: Kv>(
    tx: &mut WriteTx<'_, K>,
    d: &Delete,
    params: &Params,
    evict: bool,
    prof: Option<&Profile<'_>>,
) -> Result<Output, DqlError> {
    let ids = matching_ids(tx, &d.collection, d.filter.as_ref(), d.use_ids.as_ref(), params, prof)?;
    let mut out = Output::default();
    for id in ids {
        let before = match &d.returning {
            Some(items) => tx
                .get(&d.collection, &id)?
                .map(|doc| project(items, &doc, &doc, params))
                .transpose()?,
            None => None,
        };
        let done = if evict {
            tx.evict(&d.collection, &id)?
        } else {
            tx.delete(&d.collection, &id)?
        };
        if done {
            out.items.extend(before.map(Item::from));
            out.mutated.push(id);
        }
    }
    Ok(out)
}

// ---- system ----

fn index_row(d: &IndexDef) -> Value {
    let mut o = BTreeMap::new();
    o.insert("_id".to_string(), Value::String(d.name.clone()));
    o.insert("name".to_string(), Value::String(d.name.clone()));
    o.insert("collection".to_string(), Value::String(d.collection.clone()));
    o.insert(
        "paths".to_string(),
        Value::Array(d.paths.iter().map(|p| Value::String(p.join("."))).collect()),
    );
    Value::Object(o)
}

fn alter<K: Kv>(tx: &mut WriteTx<'_, K>, name: &str, value: &Expr, params: &Params) -> Result<Output, DqlError> {
    let Some((_, default)) = SETTINGS.iter().find(|(n, _)| *n == name) else {
        let known: Vec<&str> = SETTINGS.iter().map(|(n, _)| *n).collect();
        return Err(invalid(format!(
            "unknown system setting {name}; known: {}",
            known.join(", ")
        )));
    };
    let v = eval::eval(value, &Value::Null, params)?.unwrap_or(Value::Null);
    let default = Value::parse(default).unwrap_or(Value::Null);
    if v.type_rank() != default.type_rank() {
        return Err(invalid(format!("{name} takes a value like {default}, got {v}")));
    }
    if name == crate::sync::scope::SYNC_SCOPES_SETTING {
        crate::sync::scope::check_sync_scopes(&v).map_err(invalid)?;
    }
    tx.set_setting(name, &v)?;
    Ok(Output::default())
}

fn show(docs: &dyn Docs, name: Option<&str>) -> Result<Output, DqlError> {
    let set = docs.settings()?;
    let mut items = Vec::new();
    for (n, default) in SETTINGS {
        if name.is_some_and(|x| x != *n) {
            continue;
        }
        let value = set.iter().find(|(s, _)| s == n).map(|(_, v)| v.clone());
        let value = value.unwrap_or_else(|| Value::parse(default).unwrap_or(Value::Null));
        let mut o = BTreeMap::new();
        o.insert("name".to_string(), Value::from(*n));
        o.insert("value".to_string(), value);
        items.push(Value::Object(o).into());
    }
    if let (Some(n), true) = (name, items.is_empty()) {
        return Err(invalid(format!("unknown system setting {n}")));
    }
    Ok(Output {
        items,
        mutated: Vec::new(),
    })
}

fn explain(docs: &dyn Docs, stmt: &Statement, params: &Params) -> Result<Value, DqlError> {
    let mut o = BTreeMap::new();
    let (kind, coll) = match stmt {
        Statement::Select(s) => ("select", s.from.collection.clone()),
        Statement::Insert(i) => ("insert", i.collection.clone()),
        Statement::Update(u) => ("update", u.collection.clone()),
        Statement::Delete(d) => ("delete", d.collection.clone()),
        Statement::Evict(d) => ("evict", d.collection.clone()),
        _ => ("other", String::new()),
    };
    o.insert("statement".to_string(), Value::from(kind));
    o.insert("collection".to_string(), Value::String(coll));
    if let Statement::Select(s) = stmt {
        o.insert("plan".to_string(), plan::describe(&access(docs, s, params)?));
        o.insert("grouped".to_string(), Value::Bool(grouped(s)));
        o.insert("joins".to_string(), Value::Int(s.joins.len() as i64));
        let sort = match (s.order_by.is_empty(), s.limit.is_some()) {
            (true, _) => "none",
            (false, true) => "top-k",
            (false, false) => "full",
        };
        o.insert("sort".to_string(), Value::from(sort));
    }
    Ok(Value::Object(o))
}

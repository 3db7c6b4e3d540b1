//! Access planning: how a `SELECT`'s driving collection is read.
//!
//! The filter is split into `AND`ed conjuncts; those of the form
//! `path op constant` (`=`, `<`, `<=`, `>`, `>=`, `BETWEEN`, `LIKE 'prefix%'`,
//! `_id = constant`) can be served by an index whose leading paths they
//! constrain: equalities on a prefix of its paths, then one range. When the
//! `ORDER BY` terms are the next index paths, all in one direction, the index
//! also yields rows in order, and a `LIMIT` stops the scan early.
//!
//! Of the filter, only what the index decides exactly is not re-checked on
//! the documents: the equalities that fixed the range (scalar values), and
//! key tests, the comparisons of an indexed path with a scalar constant
//! (and `IS [NOT] NULL | MISSING`), which are decided from the entry's key
//! bytes before its document is read. The key encodes the engine's total
//! order (missing < null < bool < number < string < array < object) byte
//! for byte, so comparing encodings is comparing values; missing and null
//! never satisfy a comparison, as in the evaluator. Everything else is
//! checked on the documents.

use super::ast::{BinaryOp, Expr, IsTest, OrderItem, Path, Segment, Select};
use super::eval::{self, EvalError, Params};
use crate::store::{encode_sort_key, entry_columns, into_canonical_id, prefix_end, IndexDef};
use crate::value::Value;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// How the driving collection is read.
#[derive(Clone, Debug, PartialEq)]
pub enum Access {
    /// Every document, in storage order.
    Scan,
    /// Point reads of these ids (`USE IDS`, or `_id = c` / `_id IN (..)`).
    Ids(Vec<Value>),
    /// A range of one index.
    Index(IndexAccess),
}

/// An index range scan.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexAccess {
    /// The index.
    pub def: IndexDef,
    /// First entry key (inclusive).
    pub from: Vec<u8>,
    /// End entry key (exclusive).
    pub to: Option<Vec<u8>>,
    /// Scan backwards.
    pub reverse: bool,
    /// Whether rows come out in `ORDER BY` order.
    pub ordered: bool,
    /// Paths fixed by equality, and the path of the range (for `EXPLAIN`).
    pub eq_paths: usize,
    /// Whether a range bounds the scan.
    pub ranged: bool,
    /// Conjuncts of the filter decided from each entry's key, before its
    /// document is read (all must hold).
    pub key_tests: Vec<KeyTest>,
}

/// One conjunct of the filter decided from an index entry's key.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyTest {
    /// Position of the conjunct in the filter (see [`conjuncts`]).
    pub conjunct: usize,
    /// Which index path (key column) it reads.
    pub column: usize,
    /// What the column's encoding must satisfy.
    pub test: KeyCmp,
}

/// A test on the sort-key encoding of one value (see
/// [`crate::store::encode_sort_key`]).
#[derive(Clone, Debug, PartialEq)]
pub enum KeyCmp {
    /// `value op constant` (the constant's encoding; never null).
    Compare {
        /// `=`, `<>`, `<`, `<=`, `>` or `>=`, with the path on the left.
        op: BinaryOp,
        /// The constant, encoded.
        constant: Vec<u8>,
    },
    /// `low <= value <= high` (encodings; never null).
    Between {
        /// Lower bound, encoded.
        low: Vec<u8>,
        /// Upper bound, encoded.
        high: Vec<u8>,
    },
    /// `value IS [NOT] NULL | MISSING`.
    Is {
        /// What is tested.
        test: IsTest,
        /// `IS NOT`.
        negated: bool,
    },
}

/// Encodings of missing and null (a comparison with either is never true).
const KEY_MISSING: u8 = 0x01;
const KEY_NULL: u8 = 0x02;

impl KeyCmp {
    /// Whether a column encoding passes.
    fn holds(&self, column: &[u8]) -> bool {
        let absent = matches!(column.first(), Some(&KEY_MISSING | &KEY_NULL));
        match self {
            KeyCmp::Compare { op, constant } => {
                let test = match op {
                    BinaryOp::Eq => std::cmp::Ordering::is_eq,
                    BinaryOp::Ne => std::cmp::Ordering::is_ne,
                    BinaryOp::Lt => std::cmp::Ordering::is_lt,
                    BinaryOp::Le => std::cmp::Ordering::is_le,
                    BinaryOp::Gt => std::cmp::Ordering::is_gt,
                    _ => std::cmp::Ordering::is_ge,
                };
                !absent && test(column.cmp(constant.as_slice()))
            }
            KeyCmp::Between { low, high } => !absent && low.as_slice() <= column && column <= high.as_slice(),
            KeyCmp::Is { test, negated } => {
                let tag = match test {
                    IsTest::Null => KEY_NULL,
                    IsTest::Missing => KEY_MISSING,
                };
                (column.first() == Some(&tag)) != *negated
            }
        }
    }
}

impl IndexAccess {
    /// Whether an entry key passes every key test: `Some(false)` means its
    /// document cannot match the filter; `None`, the key does not split
    /// into the index's columns (damaged).
    pub fn key_passes(&self, key: &[u8]) -> Option<bool> {
        if self.key_tests.is_empty() {
            return Some(true);
        }
        let columns = entry_columns(key, self.def.paths.len())?;
        Some(self.key_tests.iter().all(|t| t.test.holds(columns[t.column])))
    }
}

/// A constant bound on a path.
#[derive(Clone, Debug)]
enum Bound {
    Eq(Value),
    Range {
        low: Option<(Value, bool)>,
        high: Option<(Value, bool)>,
    },
    Prefix(String),
}

fn constant(e: &Expr, params: &Params) -> Result<Option<Value>, EvalError> {
    match e {
        Expr::Literal(_) | Expr::Param { .. } => eval::eval(e, &Value::Null, params),
        _ => Ok(None),
    }
}

fn keys(p: &Path) -> Option<Vec<String>> {
    p.keys()
}

fn flip(op: BinaryOp) -> BinaryOp {
    match op {
        BinaryOp::Lt => BinaryOp::Gt,
        BinaryOp::Le => BinaryOp::Ge,
        BinaryOp::Gt => BinaryOp::Lt,
        BinaryOp::Ge => BinaryOp::Le,
        other => other,
    }
}

/// The `AND`ed parts of a filter.
pub fn conjuncts(e: &Expr) -> Vec<&Expr> {
    match e {
        Expr::Binary(BinaryOp::And, a, b) => {
            let mut v = conjuncts(a);
            v.extend(conjuncts(b));
            v
        }
        other => vec![other],
    }
}

/// What the filter says about single paths (null and missing constants
/// never match a comparison, so they give no bound).
fn bounds(filter: Option<&Expr>, params: &Params) -> Result<BTreeMap<Vec<String>, Vec<Bound>>, EvalError> {
    let mut out: BTreeMap<Vec<String>, Vec<Bound>> = BTreeMap::new();
    let Some(filter) = filter else { return Ok(out) };
    for c in conjuncts(filter) {
        if let Some((path, b)) = bound_of(c, params)? {
            out.entry(path).or_default().push(b);
        }
    }
    Ok(out)
}

fn bound_of(c: &Expr, params: &Params) -> Result<Option<(Vec<String>, Bound)>, EvalError> {
    let usable = |v: Option<Value>| v.filter(|v| !matches!(v, Value::Null));
    Ok(match c {
        Expr::Binary(op @ (BinaryOp::Eq | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge), a, b) => {
            let (path, value, op) = match (a.as_ref(), b.as_ref()) {
                (Expr::Field(p), other) => (keys(p), usable(constant(other, params)?), *op),
                (other, Expr::Field(p)) => (keys(p), usable(constant(other, params)?), flip(*op)),
                _ => return Ok(None),
            };
            let (Some(path), Some(v)) = (path, value) else {
                return Ok(None);
            };
            let b = match op {
                BinaryOp::Eq => Bound::Eq(v),
                BinaryOp::Lt => Bound::Range {
                    low: None,
                    high: Some((v, false)),
                },
                BinaryOp::Le => Bound::Range {
                    low: None,
                    high: Some((v, true)),
                },
                BinaryOp::Gt => Bound::Range {
                    low: Some((v, false)),
                    high: None,
                },
                _ => Bound::Range {
                    low: Some((v, true)),
                    high: None,
                },
            };
            Some((path, b))
        }
        Expr::Between {
            expr,
            low,
            high,
            negated: false,
        } => {
            let Expr::Field(p) = expr.as_ref() else { return Ok(None) };
            let (Some(path), Some(lo), Some(hi)) =
                (keys(p), usable(constant(low, params)?), usable(constant(high, params)?))
            else {
                return Ok(None);
            };
            Some((
                path,
                Bound::Range {
                    low: Some((lo, true)),
                    high: Some((hi, true)),
                },
            ))
        }
        Expr::Like {
            expr,
            pattern,
            case_insensitive: false,
            negated: false,
        } => {
            let Expr::Field(p) = expr.as_ref() else { return Ok(None) };
            let (Some(path), Some(Value::String(pat))) = (keys(p), constant(pattern, params)?) else {
                return Ok(None);
            };
            let prefix: String = pat.chars().take_while(|c| !matches!(c, '%' | '_' | '\\')).collect();
            (!prefix.is_empty()).then_some((path, Bound::Prefix(prefix)))
        }
        _ => None,
    })
}

fn encoded(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode_sort_key(Some(v), &mut out);
    out
}

/// Byte range of one index column after `prefix`, from a range bound.
fn range_keys(prefix: &[u8], b: &Bound) -> (Vec<u8>, Option<Vec<u8>>) {
    let with = |v: &Value| [prefix, &encoded(v)].concat();
    match b {
        Bound::Range { low, high } => {
            let from = match low {
                None => prefix.to_vec(),
                Some((v, true)) => with(v),
                Some((v, false)) => prefix_end(&with(v)).unwrap_or_else(|| with(v)),
            };
            let to = match high {
                None => prefix_end(prefix),
                Some((v, false)) => Some(with(v)),
                Some((v, true)) => prefix_end(&with(v)),
            };
            (from, to)
        }
        Bound::Prefix(p) => {
            // Strings starting with p: from "p" up to (not including) the
            // first string above every extension of p.
            let mut from = prefix.to_vec();
            from.push(0x06);
            from.extend(p.as_bytes());
            (from.clone(), prefix_end(&from))
        }
        Bound::Eq(v) => (with(v), prefix_end(&with(v))),
    }
}

/// Whether the index can yield rows in this order after `eq` equal paths:
/// `Some(reverse)` if so.
fn order_from(def: &IndexDef, eq: usize, order: &[OrderItem], outputs: Option<&[String]>) -> Option<bool> {
    let outputs = outputs?;
    if order.is_empty() {
        return None;
    }
    let desc = order[0].desc;
    for (i, o) in order.iter().enumerate() {
        let Expr::Field(p) = &o.expr else { return None };
        let path = keys(p)?;
        let shadowed = matches!(path.as_slice(), [k] if outputs.contains(k));
        if o.desc != desc || shadowed || def.paths.get(eq + i) != Some(&path) {
            return None;
        }
    }
    Some(desc)
}

/// Output columns that `ORDER BY name` would read instead of the document
/// field `name` (the executor sorts on an output column of that name): an
/// alias or a projected path whose last key is not the field itself.
/// `None`: unknown names (an `alias.*` spread), so no index order is claimed.
fn shadowing_outputs(s: &Select) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for item in &s.items {
        let (expr, alias) = match item {
            super::ast::SelectItem::Expr { expr, alias } => (expr, alias),
            super::ast::SelectItem::All(None) => continue,
            // `alias.*` spreads an object's fields: any name may be shadowed.
            super::ast::SelectItem::All(Some(_)) => return None,
        };
        let name = match (alias, expr) {
            (Some(a), _) => a.clone(),
            (None, Expr::Field(p)) => match p.segments.last() {
                Some(Segment::Key(k)) => k.clone(),
                _ => continue,
            },
            (None, Expr::Call { name, .. }) => name.clone(),
            (None, Expr::CountStar) => "count".into(),
            _ => continue,
        };
        let is_field = matches!(expr, Expr::Field(p) if p.segments == [Segment::Key(name.clone())]);
        if !is_field {
            out.push(name);
        }
    }
    Some(out)
}

/// The first conjunct that pins `_id` (`_id = c` or `_id IN (c, ..)`), by
/// position, with the ids it pins: in canonical form, each once, in the
/// order written. A value no document can have as its id (null, a
/// boolean, an array) matches nothing, so it is dropped.
fn id_conjunct(
    collection: &str,
    filter: Option<&Expr>,
    params: &Params,
) -> Result<Option<(usize, Vec<Value>)>, EvalError> {
    let Some(filter) = filter else { return Ok(None) };
    for (at, c) in conjuncts(filter).into_iter().enumerate() {
        // Only an equality with `_id` on one side can give an `_id` bound:
        // anything else is passed over without evaluating it.
        let eq_id = matches!(c, Expr::Binary(BinaryOp::Eq, a, b) if is_id(a) || is_id(b));
        if eq_id {
            if let Some((path, Bound::Eq(v))) = bound_of(c, params)? {
                if path == ["_id"] {
                    return Ok(Some((at, canonical_ids(collection, vec![v]))));
                }
            }
        }
        if let Expr::In {
            expr,
            list: super::ast::InList::List(items),
            negated: false,
        } = c
        {
            if is_id(expr) {
                let mut ids = Vec::new();
                for i in items {
                    match constant(i, params)? {
                        Some(v) => ids.push(v),
                        None => return Ok(None),
                    }
                }
                return Ok(Some((at, canonical_ids(collection, ids))));
            }
        }
    }
    Ok(None)
}

/// The id of `SELECT * FROM c WHERE _id = x` with nothing else, `x` a
/// literal or a parameter on either side of the `=`: the commonest read
/// of an app (open one document), which the executor answers from the id
/// index without planning (see `exec::point_read`).
pub fn point_read_id(s: &Select) -> Option<&Expr> {
    let plain = !s.distinct
        && s.types.is_empty()
        && s.use_ids.is_none()
        && s.joins.is_empty()
        && s.group_by.is_empty()
        && s.having.is_none()
        && s.order_by.is_empty()
        && s.limit.is_none()
        && s.offset.is_none()
        && matches!(s.items.as_slice(), [super::ast::SelectItem::All(None)])
        && s.from.collection != "system:indexes";
    let Some(Expr::Binary(BinaryOp::Eq, a, b)) = s.filter.as_ref().filter(|_| plain) else {
        return None;
    };
    let constant = |e: &Expr| matches!(e, Expr::Literal(_) | Expr::Param { .. });
    match (a.as_ref(), b.as_ref()) {
        (f, c) if is_id(f) && constant(c) => Some(c),
        (c, f) if is_id(f) && constant(c) => Some(c),
        _ => None,
    }
}

/// Whether an expression is the path `_id`.
fn is_id(e: &Expr) -> bool {
    matches!(e, Expr::Field(p) if matches!(p.segments.as_slice(), [Segment::Key(k)] if k == "_id"))
}

fn canonical_ids(collection: &str, ids: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = ids
        .into_iter()
        .filter_map(|v| into_canonical_id(collection, v).ok())
        .collect();
    if out.len() > 1 {
        // Each id once, where it first appears.
        let mut seen = std::collections::BTreeSet::new();
        out.retain(|id| seen.insert(crate::codec::encode_id(id)));
    }
    out
}

/// How to read the driving collection of `s` when no index is involved:
/// `USE IDS`, the ids the filter pins, or a scan for joins; `None`: ask
/// [`plan`] with the indexes (so point reads never load the catalogue).
pub fn direct(s: &Select, params: &Params) -> Result<Option<Access>, EvalError> {
    Ok(direct_pinned(s, params)?.map(|(a, _)| a))
}

/// [`direct`], with the position of the conjunct whose ids the point reads
/// pin (for [`residual_pinned`], so it is not looked for again).
pub fn direct_pinned(s: &Select, params: &Params) -> Result<Option<(Access, Option<usize>)>, EvalError> {
    if let Some(ids) = &s.use_ids {
        let ids = ids
            .iter()
            .map(|e| eval::eval(e, &Value::Null, params))
            .collect::<Result<Vec<_>, _>>()?;
        let ids = canonical_ids(&s.from.collection, ids.into_iter().flatten().collect());
        return Ok(Some((Access::Ids(ids), None)));
    }
    if !s.joins.is_empty() {
        // Filters of joins may name other collections; keep it simple and scan.
        return Ok(Some((Access::Scan, None)));
    }
    Ok(id_conjunct(&s.from.collection, s.filter.as_ref(), params)?.map(|(at, ids)| (Access::Ids(ids), Some(at))))
}

/// Chooses how to read the driving collection of `s`.
pub fn plan(s: &Select, indexes: &[IndexDef], params: &Params) -> Result<Access, EvalError> {
    if let Some(a) = direct(s, params)? {
        return Ok(a);
    }
    let bounds = bounds(s.filter.as_ref(), params)?;
    let order = if s.group_by.is_empty() && !s.distinct {
        s.order_by.as_slice()
    } else {
        &[]
    };
    let outputs = shadowing_outputs(s);
    let mut best: Option<(u32, IndexAccess)> = None;
    for def in indexes.iter().filter(|d| d.collection == s.from.collection) {
        let candidate = index_access(def, &bounds, order, outputs.as_deref());
        let score = candidate.eq_paths as u32 * 4
            + candidate.ranged as u32 * 2
            + (candidate.ordered && s.limit.is_some()) as u32 * 3;
        if score > 0 && best.as_ref().is_none_or(|(b, _)| score > *b) {
            best = Some((score, candidate));
        }
    }
    let Some((_, mut best)) = best else {
        return Ok(Access::Scan);
    };
    if let Some(filter) = s.filter.as_ref() {
        let exact = index_conjuncts(filter, &best, params)?;
        best.key_tests = key_tests(filter, &best.def, &exact, params)?;
    }
    Ok(Access::Index(best))
}

/// The conjuncts (other than those at `exact`) that the key of an entry of
/// `def` decides.
fn key_tests(filter: &Expr, def: &IndexDef, exact: &[usize], params: &Params) -> Result<Vec<KeyTest>, EvalError> {
    // Scalars only: their encodings compare exactly as the evaluator does
    // (arrays and objects are left to the documents).
    let scalar = |e: &Expr| -> Result<Option<Vec<u8>>, EvalError> {
        Ok(match constant(e, params)? {
            Some(v @ (Value::Bool(_) | Value::Int(_) | Value::Float(_) | Value::String(_))) => Some(encoded(&v)),
            _ => None,
        })
    };
    let column = |e: &Expr| match e {
        Expr::Field(p) => keys(p).and_then(|k| def.paths.iter().position(|d| *d == k)),
        _ => None,
    };
    let mut out = Vec::new();
    for (at, c) in conjuncts(filter).into_iter().enumerate() {
        if exact.contains(&at) {
            continue;
        }
        let found = match c {
            Expr::Binary(
                op @ (BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge),
                a,
                b,
            ) => match (column(a), column(b)) {
                (Some(col), None) => scalar(b)?.map(|k| (col, KeyCmp::Compare { op: *op, constant: k })),
                (None, Some(col)) => scalar(a)?.map(|k| {
                    (
                        col,
                        KeyCmp::Compare {
                            op: flip(*op),
                            constant: k,
                        },
                    )
                }),
                _ => None,
            },
            Expr::Between {
                expr,
                low,
                high,
                negated: false,
            } => match (column(expr), scalar(low)?, scalar(high)?) {
                (Some(col), Some(low), Some(high)) => Some((col, KeyCmp::Between { low, high })),
                _ => None,
            },
            Expr::Is { expr, test, negated } => column(expr).map(|col| {
                (
                    col,
                    KeyCmp::Is {
                        test: *test,
                        negated: *negated,
                    },
                )
            }),
            _ => None,
        };
        if let Some((column, test)) = found {
            out.push(KeyTest {
                conjunct: at,
                column,
                test,
            });
        }
    }
    Ok(out)
}

fn index_access(
    def: &IndexDef,
    bounds: &BTreeMap<Vec<String>, Vec<Bound>>,
    order: &[OrderItem],
    outputs: Option<&[String]>,
) -> IndexAccess {
    let mut prefix = def.id.to_be_bytes().to_vec();
    let mut eq = 0;
    for p in &def.paths {
        match bounds
            .get(p)
            .and_then(|bs| bs.iter().find(|b| matches!(b, Bound::Eq(_))))
        {
            Some(Bound::Eq(v)) => {
                encode_sort_key(Some(v), &mut prefix);
                eq += 1;
            }
            _ => break,
        }
    }
    let range = def
        .paths
        .get(eq)
        .and_then(|p| bounds.get(p))
        .and_then(|bs| bs.iter().find(|b| matches!(b, Bound::Range { .. } | Bound::Prefix(_))));
    let (from, to) = match range {
        Some(b) => range_keys(&prefix, b),
        None => (prefix.clone(), prefix_end(&prefix)),
    };
    // A range on the next path still yields order on that same path.
    let ordered = order_from(def, eq, order, outputs);
    IndexAccess {
        def: def.clone(),
        from,
        to,
        reverse: ordered.unwrap_or(false),
        ordered: ordered.is_some(),
        eq_paths: eq,
        ranged: range.is_some(),
        key_tests: Vec::new(),
    }
}

/// The filter left to check on the rows an access reads. Point reads of
/// the ids a conjunct pins (canonical ids, read by key) satisfy that
/// conjunct. An index range fixed by equalities holds exactly the documents
/// with those values when the values are strings, numbers or booleans
/// (their keys are exact), so the conjuncts the equalities came from are
/// dropped too, and so are the conjuncts its key tests decide; the rest
/// stays.
pub fn residual<'s>(s: &'s Select, access: &Access, params: &Params) -> Result<Option<Cow<'s, Expr>>, EvalError> {
    let Some(filter) = s.filter.as_ref() else {
        return Ok(None);
    };
    let exact: Vec<usize> = match access {
        Access::Ids(_) if s.use_ids.is_none() => id_conjunct(&s.from.collection, Some(filter), params)?
            .map(|(at, _)| vec![at])
            .unwrap_or_default(),
        Access::Index(a) => {
            let mut exact = index_conjuncts(filter, a, params)?;
            exact.extend(a.key_tests.iter().map(|t| t.conjunct));
            exact
        }
        _ => Vec::new(),
    };
    Ok(without(filter, &exact))
}

/// [`residual`] of point reads whose ids conjunct `pinned` pins (as
/// [`direct_pinned`] found it).
pub fn residual_pinned(s: &Select, pinned: usize) -> Option<Cow<'_, Expr>> {
    s.filter.as_ref().and_then(|f| without(f, &[pinned]))
}

/// The filter without the conjuncts at `exact`.
fn without<'s>(filter: &'s Expr, exact: &[usize]) -> Option<Cow<'s, Expr>> {
    if exact.is_empty() {
        return Some(Cow::Borrowed(filter));
    }
    let kept = conjuncts(filter)
        .into_iter()
        .enumerate()
        .filter(|(at, _)| !exact.contains(at))
        .map(|(_, c)| c.clone());
    kept.reduce(|a, b| Expr::Binary(BinaryOp::And, Box::new(a), Box::new(b)))
        .map(Cow::Owned)
}

/// Positions of the conjuncts an index range's equalities came from, when
/// their values are scalars.
fn index_conjuncts(filter: &Expr, a: &IndexAccess, params: &Params) -> Result<Vec<usize>, EvalError> {
    let fixed = &a.def.paths[..a.eq_paths];
    let mut used: Vec<&Vec<String>> = Vec::new();
    let mut exact = Vec::new();
    for (at, c) in conjuncts(filter).into_iter().enumerate() {
        let Some((path, Bound::Eq(v))) = bound_of(c, params)? else {
            continue;
        };
        // Only the first equality on a path built the range; later ones stay.
        if let Some(p) = fixed.iter().find(|p| **p == path).filter(|p| !used.contains(p)) {
            used.push(p);
            if matches!(v, Value::String(_) | Value::Int(_) | Value::Float(_) | Value::Bool(_)) {
                exact.push(at);
            }
        }
    }
    Ok(exact)
}

/// The plan as JSON, for `EXPLAIN` and `PROFILE`.
pub fn describe(a: &Access) -> Value {
    let mut o = BTreeMap::new();
    match a {
        Access::Scan => {
            o.insert("access".to_string(), Value::from("scan"));
        }
        Access::Ids(ids) => {
            o.insert("access".to_string(), Value::from("ids"));
            o.insert("ids".to_string(), Value::Array(ids.clone()));
        }
        Access::Index(i) => {
            o.insert("access".to_string(), Value::from("index"));
            o.insert("index".to_string(), Value::String(i.def.name.clone()));
            let paths = i.def.paths.iter().map(|p| Value::String(p.join("."))).collect();
            o.insert("paths".to_string(), Value::Array(paths));
            o.insert("equality_paths".to_string(), Value::Int(i.eq_paths as i64));
            o.insert("range".to_string(), Value::Bool(i.ranged));
            o.insert("ordered".to_string(), Value::Bool(i.ordered));
            o.insert("reverse".to_string(), Value::Bool(i.reverse));
            // The paths whose conditions are checked on the index key.
            let keyed = i
                .key_tests
                .iter()
                .map(|t| Value::String(i.def.paths[t.column].join(".")))
                .collect();
            o.insert("key_filter".to_string(), Value::Array(keyed));
        }
    }
    Value::Object(o)
}

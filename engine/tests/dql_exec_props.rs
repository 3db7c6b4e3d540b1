//! Property tests of the DQL executor against an independent reference model.
//!
//! - Random small collections (integers, including the edges near ±2^53 and
//!   ±2^63, and floats equal to them; floats, strings, booleans, null,
//!   missing fields, nested objects, arrays; ids that are small integers,
//!   big integers, floats, strings or objects, some written in another
//!   spelling of the same id, `1.0` for `1`) and random `SELECT`s (`WHERE`
//!   with comparisons, `AND`/`OR`/`NOT` with constants on either side, `IN`,
//!   `BETWEEN`, `LIKE`, `IS [NOT] NULL`/`MISSING`, parameters; `_id = v` and
//!   `_id IN (..)` with ids, their other spellings, repeats and values no id
//!   can be; `USE IDS`; `ORDER BY` one to three keys, including array
//!   elements and aliases named like (indexed) fields; `LIMIT`/`OFFSET`, also
//!   as parameters; `*`, `field.*` spreads, fields and aliases that shadow
//!   fields) are prepared (`dql::Prepared`: parsed and checked, as the CLI
//!   does) and run through `dql::execute` on a `Store<MemKv>`, and the result
//!   is compared with a model written here from the documented semantics
//!   (docs/dql.md and the evaluator's module comment): three-valued logic
//!   with missing distinct from null, one total order missing < null <
//!   booleans < numbers < strings < arrays < objects, integers and floats
//!   compared numerically and exactly.
//! - Ties: the engine breaks `ORDER BY` ties by the order rows were read
//!   (storage order for a scan, index order for an index, reversed for a
//!   descending index scan, list order for `_id IN (...)`), which the model
//!   does not know. So the model checks, for every run of rows with equal
//!   sort keys, that the engine returned rows of that run at those
//!   positions; when the query orders by the document's `_id` the order is
//!   total and the check is exact.
//! - The same query must give the same answer after secondary indexes are
//!   created (the planner then reads index ranges, possibly ordered, and
//!   stops early under `LIMIT`); `EXPLAIN` may claim an index yields the
//!   `ORDER BY` order only when the rows then equal the model's (and,
//!   ordered by `_id`, the unindexed result exactly).
//! - A query that names a parameter fails without it, and one with a bad
//!   call (unknown function, wrong argument count, bad literal pattern or
//!   unit) fails, whatever the data and even where no row reaches it.
//! - Grouped queries (`GROUP BY`, aggregates only in `ORDER BY`) and
//!   `SELECT DISTINCT` against the model's equivalence classes.
//! - Random token soups, random bytes and random statements, run on a small
//!   store with parameters (unchecked, then prepared): errors are fine,
//!   panics are not.
//!
//! Engine bugs these tests found are pinned, with minimal repros, as the
//! `regression_*` tests (fixed) and `bug_*` tests (open, ignored) at the end.

use proptest::prelude::*;
use rhizome_engine::dql::{self, ast::Statement, parse::parse};
use rhizome_engine::hlc::PeerId;
use rhizome_engine::mem::MemKv;
use rhizome_engine::store::{Store, StoreConfig};
use rhizome_engine::value::Value;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::OnceLock;

// ---- running statements ----

fn new_store() -> Store<MemKv> {
    Store::open(MemKv::new(), StoreConfig::default(), PeerId(1), 1).expect("store")
}

/// Runs one statement as the CLI does (prepared: parsed and checked, then
/// executed); `Ok(items)` or the error text.
fn run(store: &Store<MemKv>, text: &str, params: &Value, now: &mut u64) -> Result<Vec<Value>, String> {
    let stmt = dql::Prepared::new().get(text).map_err(|e| e.to_string())?;
    execute(store, &stmt, params, now)
}

/// Runs one statement that is only parsed, not checked.
fn run_unchecked(store: &Store<MemKv>, text: &str, params: &Value, now: &mut u64) -> Result<Vec<Value>, String> {
    let stmt = parse(text).map_err(|e| e.to_string())?;
    execute(store, &stmt, params, now)
}

fn execute(store: &Store<MemKv>, stmt: &Statement, params: &Value, now: &mut u64) -> Result<Vec<Value>, String> {
    *now += 1_000;
    let params = dql::params_from_json(params).map_err(|e| e.to_string())?;
    dql::execute(store, stmt, &params, *now)
        .map(|(out, _)| out.values().expect("rows decode"))
        .map_err(|e| e.to_string())
}

fn obj(pairs: Vec<(&str, Value)>) -> Value {
    Value::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// A store holding `docs` in collection `t`, inserted one by one in order.
fn store_with(docs: &[Value], now: &mut u64) -> Store<MemKv> {
    let store = new_store();
    for d in docs {
        run(
            &store,
            "INSERT INTO t DOCUMENTS (:doc)",
            &obj(vec![("doc", d.clone())]),
            now,
        )
        .expect("insert");
    }
    store
}

// ---- the reference model: values and order ----

/// A result: `None` is missing.
type V = Option<Value>;

fn rank(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Int(_) | Value::Float(_) => 2,
        Value::String(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
    }
}

/// An integer against a float, exactly: neither side is rounded (the
/// generated numbers include integers beyond 2^53 and floats next to them).
fn int_float_cmp(i: i64, f: f64) -> Ordering {
    if f >= 1e30 {
        return Ordering::Less;
    }
    if f <= -1e30 {
        return Ordering::Greater;
    }
    let floor = f.floor();
    // Integral and below 2^100 in magnitude: exact in i128.
    match i128::from(i).cmp(&(floor as i128)) {
        Ordering::Equal if f > floor => Ordering::Less,
        o => o,
    }
}

/// Numbers compare numerically and exactly.
fn num_cmp(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Int(x), Value::Float(y)) => int_float_cmp(*x, *y),
        (Value::Float(x), Value::Int(y)) => int_float_cmp(*y, *x).reverse(),
        (Value::Float(x), Value::Float(y)) => x.partial_cmp(y).expect("finite"),
        _ => unreachable!(),
    }
}

/// The documented total order: null < booleans < numbers < strings (bytes)
/// < arrays (element by element, then length) < objects (by sorted keys,
/// then values, then size).
fn model_cmp(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::String(x), Value::String(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Array(x), Value::Array(y)) => {
            for (p, q) in x.iter().zip(y) {
                let o = model_cmp(p, q);
                if o.is_ne() {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(x), Value::Object(y)) => {
            for ((ka, va), (kb, vb)) in x.iter().zip(y) {
                let o = ka.as_bytes().cmp(kb.as_bytes()).then_with(|| model_cmp(va, vb));
                if o.is_ne() {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        _ if rank(a) == 2 && rank(b) == 2 => num_cmp(a, b),
        _ => rank(a).cmp(&rank(b)),
    }
}

/// Missing first, then the total order.
fn model_cmp_opt(a: &V, b: &V) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => model_cmp(x, y),
    }
}

fn model_eq(a: &V, b: &V) -> bool {
    model_cmp_opt(a, b).is_eq()
}

// ---- the query model ----

#[derive(Clone, Debug, PartialEq)]
enum Seg {
    Key(&'static str),
    Idx(i64),
}

#[derive(Clone, Debug, PartialEq)]
struct FPath(Vec<Seg>);

impl FPath {
    fn key(k: &'static str) -> FPath {
        FPath(vec![Seg::Key(k)])
    }

    fn is_id(&self) -> bool {
        self.0 == [Seg::Key("_id")]
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Seg::Key(k) if i == 0 => out.push_str(k),
                Seg::Key(k) => {
                    let _ = write!(out, ".{k}");
                }
                Seg::Idx(n) => {
                    let _ = write!(out, "[{n}]");
                }
            }
        }
        out
    }

    fn get(&self, doc: &Value) -> V {
        let mut cur = doc;
        for s in &self.0 {
            cur = match (s, cur) {
                (Seg::Key(k), Value::Object(o)) => o.get(*k)?,
                (Seg::Idx(i), Value::Array(a)) => {
                    let at = if *i >= 0 { *i } else { a.len() as i64 + i };
                    a.get(usize::try_from(at).ok()?)?
                }
                _ => return None,
            };
        }
        Some(cur.clone())
    }

    /// The output column name of an unaliased path at item position `n`.
    fn output_name(&self, n: usize) -> String {
        match self.0.last() {
            Some(Seg::Key(k)) => k.to_string(),
            _ => format!("${n}"),
        }
    }
}

/// DQL text for a value; floats print so that they read back exactly.
fn render_value(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => format!("{f:?}"),
        Value::String(s) => format!("'{}'", s.replace('\0', "\\0")),
        Value::Array(a) => format!("[{}]", a.iter().map(render_value).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("\"{k}\": {}", render_value(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

const BIG: i64 = 1 << 53;
/// 2^63, one above `i64::MAX`.
const TWO_63: f64 = 9_223_372_036_854_775_808.0;

/// The parameters every query runs with: `:p0`, `:p1`, ... (a query may
/// name any of them; unnamed ones are ignored).
fn param_values() -> &'static [Value] {
    static P: OnceLock<Vec<Value>> = OnceLock::new();
    P.get_or_init(|| {
        vec![
            Value::Int(1),
            Value::Float(1.0),
            Value::Null,
            Value::String("a".into()),
            Value::Int(BIG + 1),
            Value::Float(BIG as f64),
            Value::Array(vec![Value::Int(1), Value::String("a".into())]),
            Value::Bool(true),
            Value::Int(i64::MAX),
            obj(vec![("x", Value::Float(1.0))]),
            Value::Float(TWO_63),
            Value::Int(i64::MIN),
        ]
    })
}

#[derive(Clone, Debug)]
enum Operand {
    Path(FPath),
    Const(Value),
    /// `:p{n}`: `param_values()[n]`.
    Param(usize),
}

impl Operand {
    fn render(&self) -> String {
        match self {
            Operand::Path(p) => p.render(),
            Operand::Const(v) => render_value(v),
            Operand::Param(n) => format!(":p{n}"),
        }
    }

    fn eval(&self, doc: &Value) -> V {
        match self {
            Operand::Path(p) => p.get(doc),
            Operand::Const(v) => Some(v.clone()),
            Operand::Param(n) => Some(param_values()[*n].clone()),
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    fn render(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }

    fn test(self, o: Ordering) -> bool {
        match self {
            Op::Eq => o.is_eq(),
            Op::Ne => o.is_ne(),
            Op::Lt => o.is_lt(),
            Op::Le => o.is_le(),
            Op::Gt => o.is_gt(),
            Op::Ge => o.is_ge(),
        }
    }
}

#[derive(Clone, Debug)]
enum Cond {
    Cmp(Operand, Op, Operand),
    In {
        x: FPath,
        list: Vec<Operand>,
        /// `x IN [..]` (one array) rather than `x IN (..)` (a list).
        array: bool,
        negated: bool,
    },
    Between {
        x: FPath,
        lo: Value,
        hi: Value,
        negated: bool,
    },
    Is {
        x: FPath,
        null: bool,
        negated: bool,
    },
    Like {
        x: FPath,
        pattern: String,
        negated: bool,
    },
    /// A constant: `true`, `false`, `null`, a number, a string.
    Const(Value),
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
}

impl Cond {
    fn render(&self) -> String {
        let not = |n: bool| if n { "NOT " } else { "" };
        match self {
            Cond::Cmp(a, op, b) => format!("{} {} {}", a.render(), op.render(), b.render()),
            Cond::In {
                x,
                list,
                array,
                negated,
            } => {
                let items = list.iter().map(Operand::render).collect::<Vec<_>>().join(", ");
                let (open, close) = if *array { ("[", "]") } else { ("(", ")") };
                format!("{} {}IN {open}{items}{close}", x.render(), not(*negated))
            }
            Cond::Between { x, lo, hi, negated } => format!(
                "{} {}BETWEEN {} AND {}",
                x.render(),
                not(*negated),
                render_value(lo),
                render_value(hi)
            ),
            Cond::Is { x, null, negated } => format!(
                "{} IS {}{}",
                x.render(),
                not(*negated),
                if *null { "NULL" } else { "MISSING" }
            ),
            Cond::Like { x, pattern, negated } => format!("{} {}LIKE '{pattern}'", x.render(), not(*negated)),
            Cond::Const(v) => render_value(v),
            Cond::And(a, b) => format!("({} AND {})", a.render(), b.render()),
            Cond::Or(a, b) => format!("({} OR {})", a.render(), b.render()),
            Cond::Not(a) => format!("NOT ({})", a.render()),
        }
    }

    /// Three-valued evaluation as documented.
    fn eval(&self, doc: &Value) -> V {
        match self {
            Cond::Cmp(a, op, b) => compare(a.eval(doc), b.eval(doc), *op),
            Cond::In {
                x,
                list,
                array,
                negated,
            } => {
                let candidates: Vec<V> = if *array {
                    // An array literal turns a missing element into null.
                    list.iter().map(|c| Some(c.eval(doc).unwrap_or(Value::Null))).collect()
                } else {
                    list.iter().map(|c| c.eval(doc)).collect()
                };
                let found = match x.get(doc) {
                    None => None,
                    Some(Value::Null) => Some(Value::Null),
                    Some(v) => Some(Value::Bool(
                        candidates.iter().flatten().any(|c| model_cmp(&v, c).is_eq()),
                    )),
                };
                if *negated {
                    not3(found)
                } else {
                    found
                }
            }
            Cond::Between { x, lo, hi, negated } => {
                let v = x.get(doc);
                let within = and3(
                    compare(Some(lo.clone()), v.clone(), Op::Le),
                    compare(v, Some(hi.clone()), Op::Le),
                );
                if *negated {
                    not3(within)
                } else {
                    within
                }
            }
            Cond::Is { x, null, negated } => {
                let v = x.get(doc);
                let hit = if *null { v == Some(Value::Null) } else { v.is_none() };
                Some(Value::Bool(hit != *negated))
            }
            Cond::Like { x, pattern, negated } => {
                let r = match x.get(doc) {
                    None => None,
                    Some(Value::String(s)) => Some(Value::Bool(like(
                        &s.chars().collect::<Vec<_>>(),
                        &pattern.chars().collect::<Vec<_>>(),
                    ))),
                    Some(_) => Some(Value::Null),
                };
                if *negated {
                    not3(r)
                } else {
                    r
                }
            }
            Cond::Const(v) => Some(v.clone()),
            Cond::And(a, b) => and3(a.eval(doc), b.eval(doc)),
            Cond::Or(a, b) => or3(a.eval(doc), b.eval(doc)),
            Cond::Not(a) => not3(a.eval(doc)),
        }
    }
}

fn compare(a: V, b: V, op: Op) -> V {
    let (a, b) = (a?, b?);
    if a == Value::Null || b == Value::Null {
        return Some(Value::Null);
    }
    Some(Value::Bool(op.test(model_cmp(&a, &b))))
}

fn is_bool(v: &V, b: bool) -> bool {
    *v == Some(Value::Bool(b))
}

/// False if either side is false; else missing if either is missing; else
/// null if either is null or not a boolean; else true.
fn and3(a: V, b: V) -> V {
    if is_bool(&a, false) || is_bool(&b, false) {
        Some(Value::Bool(false))
    } else if a.is_none() || b.is_none() {
        None
    } else if is_bool(&a, true) && is_bool(&b, true) {
        Some(Value::Bool(true))
    } else {
        Some(Value::Null)
    }
}

fn or3(a: V, b: V) -> V {
    if is_bool(&a, true) || is_bool(&b, true) {
        Some(Value::Bool(true))
    } else if a.is_none() || b.is_none() {
        None
    } else if is_bool(&a, false) && is_bool(&b, false) {
        Some(Value::Bool(false))
    } else {
        Some(Value::Null)
    }
}

fn not3(v: V) -> V {
    match v? {
        Value::Bool(b) => Some(Value::Bool(!b)),
        _ => Some(Value::Null),
    }
}

/// `%` any run, `_` one character (the generated patterns have no `\`).
fn like(s: &[char], p: &[char]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some(('%', rest)) => (0..=s.len()).any(|i| like(&s[i..], rest)),
        Some(('_', rest)) => !s.is_empty() && like(&s[1..], rest),
        Some((c, rest)) => s.first() == Some(c) && like(&s[1..], rest),
    }
}

#[derive(Clone, Debug)]
enum Item {
    Star,
    Path(FPath),
    Alias(FPath, String),
    /// A condition's value (true, false, null or missing) as a column.
    Cond(Cond, String),
    /// `field.*`: the fields of the document's object `field`.
    Spread(&'static str),
}

impl Item {
    fn render(&self) -> String {
        match self {
            Item::Star => "*".to_string(),
            Item::Path(p) => p.render(),
            Item::Alias(p, a) => format!("{} AS {a}", p.render()),
            Item::Cond(c, a) => format!("({}) AS {a}", c.render()),
            Item::Spread(f) => format!("{f}.*"),
        }
    }
}

/// The projection of one document.
fn project(items: &[Item], doc: &Value) -> Value {
    if let [Item::Star] = items {
        return doc.clone();
    }
    let mut out = BTreeMap::new();
    for (n, item) in items.iter().enumerate() {
        match item {
            Item::Star => {
                if let Value::Object(o) = doc {
                    out.extend(o.clone());
                }
            }
            Item::Spread(f) => {
                if let Some(Value::Object(o)) = FPath::key(f).get(doc) {
                    out.extend(o);
                }
            }
            Item::Path(p) => {
                if let Some(v) = p.get(doc) {
                    out.insert(p.output_name(n + 1), v);
                }
            }
            Item::Alias(p, a) => {
                if let Some(v) = p.get(doc) {
                    out.insert(a.clone(), v);
                }
            }
            Item::Cond(c, a) => {
                if let Some(v) = c.eval(doc) {
                    out.insert(a.clone(), v);
                }
            }
        }
    }
    Value::Object(out)
}

#[derive(Clone, Debug)]
enum Term {
    Path(FPath),
    /// An output column named by its alias.
    Alias(String),
}

#[derive(Clone)]
struct Query {
    items: Vec<Item>,
    /// `USE IDS v, ...`.
    use_ids: Option<Vec<Operand>>,
    filter: Option<Cond>,
    order: Vec<(Term, bool)>,
    /// A final `_id` key (with its direction).
    id_last: Option<bool>,
    limit: Option<usize>,
    offset: Option<usize>,
    /// `LIMIT :plim OFFSET :poff` rather than literals.
    window_params: bool,
}

/// Shown as its DQL text in failure reports.
impl std::fmt::Debug for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

impl Query {
    fn render(&self) -> String {
        let items: Vec<String> = self.items.iter().map(Item::render).collect();
        let mut q = format!("SELECT {} FROM t", items.join(", "));
        if let Some(ids) = &self.use_ids {
            let ids: Vec<String> = ids.iter().map(Operand::render).collect();
            let _ = write!(q, " USE IDS {}", ids.join(", "));
        }
        if let Some(f) = &self.filter {
            let _ = write!(q, " WHERE {}", f.render());
        }
        let mut keys: Vec<String> = self
            .order
            .iter()
            .map(|(t, desc)| {
                let t = match t {
                    Term::Path(p) => p.render(),
                    Term::Alias(a) => a.clone(),
                };
                format!("{t}{}", if *desc { " DESC" } else { "" })
            })
            .collect();
        if let Some(desc) = self.id_last {
            keys.push(format!("_id{}", if desc { " DESC" } else { " ASC" }));
        }
        if !keys.is_empty() {
            let _ = write!(q, " ORDER BY {}", keys.join(", "));
        }
        match (self.limit, self.window_params) {
            (Some(_), true) => q.push_str(" LIMIT :plim"),
            (Some(l), false) => {
                let _ = write!(q, " LIMIT {l}");
            }
            (None, _) => {}
        }
        match (self.offset, self.window_params) {
            (Some(_), true) => q.push_str(" OFFSET :poff"),
            (Some(o), false) => {
                let _ = write!(q, " OFFSET {o}");
            }
            (None, _) => {}
        }
        q
    }

    /// The parameters to run with: every `:p{n}`, and the window's.
    fn params(&self) -> Value {
        let mut o: BTreeMap<String, Value> = param_values()
            .iter()
            .enumerate()
            .map(|(n, v)| (format!("p{n}"), v.clone()))
            .collect();
        if self.window_params {
            if let Some(l) = self.limit {
                o.insert("plim".into(), Value::Int(l as i64));
            }
            if let Some(f) = self.offset {
                o.insert("poff".into(), Value::Int(f as i64));
            }
        }
        Value::Object(o)
    }

    /// Sort keys: a one-key path naming an output column reads the output
    /// (that is how an alias is ordered by); anything else the document.
    fn keys(&self, doc: &Value, out: &Value) -> Vec<V> {
        let from_output = |k: &str| out.as_object().and_then(|o| o.get(k)).cloned();
        let mut keys: Vec<V> = self
            .order
            .iter()
            .map(|(t, _)| match t {
                // The name is read off the output, else off the document.
                Term::Alias(a) => from_output(a).or_else(|| doc.as_object().and_then(|o| o.get(a)).cloned()),
                Term::Path(p) => match p.0.as_slice() {
                    [Seg::Key(k)] => from_output(k).or_else(|| p.get(doc)),
                    _ => p.get(doc),
                },
            })
            .collect();
        if self.id_last.is_some() {
            keys.push(from_output("_id").or_else(|| doc.as_object().and_then(|o| o.get("_id")).cloned()));
        }
        keys
    }

    fn directions(&self) -> Vec<bool> {
        let mut d: Vec<bool> = self.order.iter().map(|(_, desc)| *desc).collect();
        d.extend(self.id_last);
        d
    }

    /// Whether the order is total: some key is `_id` and reads the
    /// document's `_id` (no output column of that name shadows it).
    fn total(&self) -> bool {
        let by_id = self.id_last.is_some()
            || self.order.iter().any(|(t, _)| match t {
                Term::Path(p) => p.is_id(),
                Term::Alias(a) => a == "_id",
            });
        let shadowed = self
            .items
            .iter()
            .any(|i| matches!(i, Item::Alias(_, a) | Item::Cond(_, a) if a == "_id"));
        by_id && !shadowed
    }
}

/// The model's answer: every passing row, sorted (stably), with its keys;
/// and the window `[offset, offset + limit)` that is returned.
struct Expected {
    rows: Vec<(Vec<V>, Value)>,
    window: std::ops::Range<usize>,
}

/// The documents `USE IDS` (the ids whose `_id` equals a listed value; a
/// value no id can be equals none) and `WHERE` (exactly true) keep.
fn passing<'d>(use_ids: Option<&[Operand]>, filter: Option<&Cond>, docs: &'d [Value]) -> Vec<&'d Value> {
    let ids: Option<Vec<Value>> = use_ids.map(|l| l.iter().filter_map(|o| o.eval(&Value::Null)).collect());
    docs.iter()
        .filter(|d| {
            ids.as_ref().is_none_or(|ids| {
                let id = &d.as_object().expect("object")["_id"];
                ids.iter().any(|i| model_cmp(id, i).is_eq())
            })
        })
        .filter(|d| filter.is_none_or(|f| is_bool(&f.eval(d), true)))
        .collect()
}

fn model(q: &Query, docs: &[Value]) -> Expected {
    let dirs = q.directions();
    let mut rows: Vec<(Vec<V>, Value)> = passing(q.use_ids.as_deref(), q.filter.as_ref(), docs)
        .into_iter()
        .map(|d| {
            let out = project(&q.items, d);
            (q.keys(d, &out), out)
        })
        .collect();
    rows.sort_by(|a, b| cmp_keys(&dirs, &a.0, &b.0));
    let from = q.offset.unwrap_or(0).min(rows.len());
    let to = q.limit.map_or(rows.len(), |l| from.saturating_add(l).min(rows.len()));
    Expected { rows, window: from..to }
}

fn cmp_keys(dirs: &[bool], a: &[V], b: &[V]) -> Ordering {
    for ((desc, x), y) in dirs.iter().zip(a).zip(b) {
        let o = model_cmp_opt(x, y);
        let o = if *desc { o.reverse() } else { o };
        if o.is_ne() {
            return o;
        }
    }
    Ordering::Equal
}

/// Checks `got` against the model, allowing any order among rows whose sort
/// keys are equal (within the returned window).
fn check_rows(q: &Query, e: &Expected, got: &[Value]) -> Result<(), String> {
    let show = || {
        let want: Vec<String> = e.rows.iter().map(|(_, v)| v.to_string()).collect();
        let got: Vec<String> = got.iter().map(Value::to_string).collect();
        format!(
            "{}\n  window {:?} of sorted {}\n  got {}",
            q.render(),
            e.window,
            want.join(" "),
            got.join(" ")
        )
    };
    if got.len() != e.window.len() {
        return Err(format!("wrong number of rows\n{}", show()));
    }
    let dirs = q.directions();
    let mut start = 0;
    while start < e.rows.len() {
        let mut end = start + 1;
        while end < e.rows.len() && cmp_keys(&dirs, &e.rows[start].0, &e.rows[end].0).is_eq() {
            end += 1;
        }
        // Rows of this run of ties that fall in the window...
        let lo = start.max(e.window.start);
        let hi = end.min(e.window.end);
        if lo < hi {
            // ...must come from the run, each at most as often as it is there.
            let mut pool: Vec<&Value> = e.rows[start..end].iter().map(|(_, v)| v).collect();
            for g in &got[lo - e.window.start..hi - e.window.start] {
                match pool.iter().position(|p| *p == g) {
                    Some(i) => {
                        pool.swap_remove(i);
                    }
                    None => return Err(format!("row {g} is not one of the expected rows here\n{}", show())),
                }
            }
        }
        start = end;
    }
    Ok(())
}

// ---- strategies ----

/// Integers near ±2^53 and ±2^63 (which f64 cannot tell apart), and floats
/// equal to some of them.
fn edge_numbers() -> Vec<Value> {
    vec![
        Value::Int(BIG - 1),
        Value::Int(BIG),
        Value::Int(BIG + 1),
        Value::Int(BIG + 2),
        Value::Int(-BIG),
        Value::Int(-BIG - 1),
        Value::Int(i64::MAX),
        Value::Int(i64::MAX - 1),
        Value::Int(i64::MAX - 1023),
        Value::Int(i64::MIN),
        Value::Int(i64::MIN + 1),
        Value::Float(BIG as f64),
        Value::Float((BIG + 2) as f64),
        Value::Float(-(BIG as f64)),
        Value::Float(TWO_63),
        Value::Float(-TWO_63),
        Value::Float((i64::MAX - 1023) as f64),
    ]
}

/// Which numbers the generated values favour.
#[derive(Clone, Copy, Debug)]
enum Mix {
    /// Small numbers, some edges.
    Small,
    /// Mostly `edge_numbers`.
    Edges,
    /// Mostly `twins`: numbers equal to others spelled differently.
    Twins,
}

/// Numbers that come in equal pairs (and a triple) spelled differently.
fn twins() -> Vec<Value> {
    vec![
        Value::Int(1),
        Value::Float(1.0),
        Value::Int(0),
        Value::Float(0.0),
        Value::Float(-0.0),
        Value::Int(BIG),
        Value::Float(BIG as f64),
        Value::Int(BIG + 2),
        Value::Float((BIG + 2) as f64),
        Value::Int(i64::MIN),
        Value::Float(-TWO_63),
    ]
}

/// A scalar from small domains, so that equalities and ties are common.
fn scalar(mix: Mix) -> BoxedStrategy<Value> {
    let ints = (-2i64..=3).prop_map(Value::Int);
    let floats = prop::sample::select(vec![-1.5, -0.0, 0.5, 1.0, 2.0, 2.5]).prop_map(Value::Float);
    let strings =
        prop::sample::select(vec!["", "a", "ab", "a\0", "b", "B", "é", "a%"]).prop_map(|s| Value::String(s.into()));
    let bools = any::<bool>().prop_map(Value::Bool);
    let edge = prop::sample::select(edge_numbers());
    match mix {
        Mix::Small => {
            prop_oneof![3 => ints, 2 => floats, 3 => strings, 1 => bools, 1 => Just(Value::Null), 2 => edge].boxed()
        }
        Mix::Edges => {
            prop_oneof![3 => ints, 2 => floats, 3 => strings, 1 => bools, 1 => Just(Value::Null), 8 => edge].boxed()
        }
        Mix::Twins => {
            prop_oneof![1 => ints, 1 => strings, 1 => Just(Value::Null), 6 => prop::sample::select(twins())].boxed()
        }
    }
}

/// A field's value (`None`: the field is missing).
fn field_value(mix: Mix) -> impl Strategy<Value = Option<Value>> {
    let scalars = if matches!(mix, Mix::Twins) { 12 } else { 6 };
    prop_oneof![
        2 => Just(None),
        scalars => scalar(mix).prop_map(Some),
        2 => prop::collection::vec(scalar(mix), 0..3).prop_map(|a| Some(Value::Array(a))),
        2 => (prop::option::of(scalar(mix)), prop::option::of(scalar(mix))).prop_map(|(x, y)| {
            let mut o = BTreeMap::new();
            if let Some(x) = x {
                o.insert("x".to_string(), x);
            }
            if let Some(y) = y {
                o.insert("y".to_string(), y);
            }
            Some(Value::Object(o))
        }),
    ]
}

/// Top-level fields besides `_id`. `x` is also a key of the object fields,
/// so `c.x` (column `x`) and `c.*` shadow it.
const FIELDS: [&str; 5] = ["a", "b", "c", "t", "x"];

/// Document ids as stored (canonical): small integers, integers at the
/// edges (2^53, 2^53 + 1, 2^63 - 1, -2^63, and 2^63 - 1024, which a float
/// holds), floats no integer is (1.5, 2^63), strings, an object.
fn id_pool() -> Vec<Value> {
    let mut ids: Vec<Value> = (0..10).map(Value::Int).collect();
    ids.extend([
        Value::Int(BIG),
        Value::Int(BIG + 1),
        Value::Int(i64::MAX),
        Value::Int(i64::MIN),
        Value::Int(i64::MAX - 1023),
        Value::Float(1.5),
        Value::Float(TWO_63),
        Value::String("a".into()),
        Value::String("b".into()),
        obj(vec![("x", Value::Int(1))]),
    ]);
    ids
}

/// Another spelling of the same id where there is one: the float of an
/// integer it holds exactly (`1.0`, `-2^63`), `{"x": 1.0}` for `{"x": 1}`.
fn float_form(v: &Value) -> Value {
    match v {
        Value::Int(i) if (*i as f64) as i128 == i128::from(*i) => Value::Float(*i as f64),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), float_form(v))).collect()),
        other => other.clone(),
    }
}

/// Values compared with `_id`: ids, their other spellings, and values that
/// no document has as its id (null, booleans, arrays, `{}`, others).
fn id_constant() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => (0i64..10).prop_map(Value::Int),
        4 => prop::sample::select(id_pool()),
        3 => prop::sample::select(id_pool()).prop_map(|v| float_form(&v)),
        2 => prop::sample::select(vec![
            Value::Null,
            Value::Bool(true),
            Value::Bool(false),
            Value::Array(vec![Value::Int(1)]),
            Value::Array(vec![]),
            Value::Object(BTreeMap::new()),
            Value::Float(2.5),
            Value::Float(-0.0),
            Value::Int(-1),
            Value::Int(BIG - 1),
            Value::String("zz".into()),
        ]),
    ]
    .boxed()
}

fn param() -> impl Strategy<Value = Operand> {
    (0..param_values().len()).prop_map(Operand::Param)
}

fn id_operand() -> impl Strategy<Value = Operand> {
    prop_oneof![4 => id_constant().prop_map(Operand::Const), 1 => param()]
}

/// A list of `_id` operands, sometimes with one repeated as written or in
/// its other spelling (`1, 1.0`).
fn id_list() -> impl Strategy<Value = Vec<Operand>> {
    (
        prop::collection::vec(id_operand(), 1..4),
        any::<prop::sample::Index>(),
        0u8..4,
    )
        .prop_map(|(mut list, at, how)| {
            let again = list[at.index(list.len())].clone();
            match (how, again) {
                (1, again) => list.push(again),
                (2, Operand::Const(v)) => list.push(Operand::Const(float_form(&v))),
                _ => {}
            }
            list
        })
}

/// Documents as written and as stored, shown as written in failure reports.
#[derive(Clone)]
struct Docs {
    /// What is inserted, in order (some ids in another spelling).
    written: Vec<Value>,
    /// The same documents with canonical ids.
    stored: Vec<Value>,
}

impl std::fmt::Debug for Docs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let docs: Vec<String> = self.written.iter().map(Value::to_string).collect();
        write!(f, "[{}]", docs.join(", "))
    }
}

/// Documents with distinct ids, in a random insertion order.
fn docs(mix: Mix) -> impl Strategy<Value = Docs> {
    prop_oneof![1 => Just(0usize), 20 => 1usize..=10]
        .prop_flat_map(|n| prop::sample::subsequence(id_pool(), n))
        .prop_shuffle()
        .prop_flat_map(move |ids| {
            let n = ids.len();
            (
                Just(ids),
                prop::collection::vec(prop::collection::vec(field_value(mix), FIELDS.len()), n),
                prop::collection::vec(prop::bool::weighted(0.3), n),
            )
        })
        .prop_map(|(ids, fields, spelled)| {
            let (mut written, mut stored) = (Vec::new(), Vec::new());
            for ((id, vals), as_float) in ids.into_iter().zip(fields).zip(spelled) {
                let mut o = BTreeMap::new();
                for (name, v) in FIELDS.iter().zip(vals) {
                    if let Some(v) = v {
                        o.insert(name.to_string(), v);
                    }
                }
                let mut w = o.clone();
                w.insert("_id".into(), if as_float { float_form(&id) } else { id.clone() });
                o.insert("_id".into(), id);
                written.push(Value::Object(w));
                stored.push(Value::Object(o));
            }
            Docs { written, stored }
        })
}

fn fpath() -> impl Strategy<Value = FPath> {
    prop::sample::select(vec![
        vec![Seg::Key("a")],
        vec![Seg::Key("b")],
        vec![Seg::Key("c")],
        vec![Seg::Key("t")],
        vec![Seg::Key("x")],
        vec![Seg::Key("_id")],
        vec![Seg::Key("c"), Seg::Key("x")],
        vec![Seg::Key("c"), Seg::Key("y")],
        vec![Seg::Key("t"), Seg::Idx(0)],
        vec![Seg::Key("t"), Seg::Idx(1)],
        vec![Seg::Key("t"), Seg::Idx(-1)],
    ])
    .prop_map(FPath)
}

/// Paths that may be indexed, and that `ORDER BY` may read straight off an
/// index: the ones the generated comparisons mostly use.
fn key_path() -> impl Strategy<Value = FPath> {
    prop::sample::select(vec![
        vec![Seg::Key("a")],
        vec![Seg::Key("b")],
        vec![Seg::Key("x")],
        vec![Seg::Key("_id")],
        vec![Seg::Key("c"), Seg::Key("x")],
    ])
    .prop_map(FPath)
}

fn constant(mix: Mix) -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => scalar(mix),
        1 => prop::collection::vec(scalar(mix), 0..3).prop_map(Value::Array),
        1 => scalar(mix).prop_map(|x| obj(vec![("x", x)])),
        1 => id_constant(),
    ]
}

fn operand(mix: Mix) -> impl Strategy<Value = Operand> {
    prop_oneof![3 => constant(mix).prop_map(Operand::Const), 1 => fpath().prop_map(Operand::Path), 1 => param()]
}

fn op() -> impl Strategy<Value = Op> {
    prop::sample::select(vec![Op::Eq, Op::Ne, Op::Lt, Op::Le, Op::Gt, Op::Ge])
}

fn any_path() -> impl Strategy<Value = FPath> {
    prop_oneof![2 => key_path(), 1 => fpath()]
}

/// A constant condition: booleans, null, and values that are not booleans.
fn const_value() -> impl Strategy<Value = Value> {
    prop::sample::select(vec![
        Value::Bool(true),
        Value::Bool(true),
        Value::Bool(true),
        Value::Bool(false),
        Value::Null,
        Value::Int(1),
        Value::String("a".into()),
    ])
}

fn leaf(mix: Mix) -> BoxedStrategy<Cond> {
    let id = || Operand::Path(FPath::key("_id"));
    prop_oneof![
        6 => (any_path(), op(), constant(mix)).prop_map(|(p, o, c)| Cond::Cmp(Operand::Path(p), o, Operand::Const(c))),
        2 => (constant(mix), op(), any_path()).prop_map(|(c, o, p)| Cond::Cmp(Operand::Const(c), o, Operand::Path(p))),
        1 => (any_path(), op(), any_path()).prop_map(|(a, o, b)| Cond::Cmp(Operand::Path(a), o, Operand::Path(b))),
        2 => (any_path(), op(), param(), any::<bool>()).prop_map(|(p, o, v, flip)| if flip {
            Cond::Cmp(v, o, Operand::Path(p))
        } else {
            Cond::Cmp(Operand::Path(p), o, v)
        }),
        2 => (any_path(), prop::collection::vec(operand(mix), 0..4), any::<bool>(), prop::bool::weighted(0.3))
            // `IN ()` is not DQL; `IN []` is.
            .prop_map(|(x, list, array, negated)| Cond::In { x, array: array || list.is_empty(), list, negated }),
        2 => (any_path(), scalar(mix), scalar(mix), prop::bool::weighted(0.3))
            .prop_map(|(x, lo, hi, negated)| Cond::Between { x, lo, hi, negated }),
        2 => (any_path(), any::<bool>(), any::<bool>()).prop_map(|(x, null, negated)| Cond::Is { x, null, negated }),
        2 => (
            any_path(),
            prop::sample::select(vec!["a%", "%b", "_", "a_", "%", "ab", "", "B%", "é%", "%a%"]),
            prop::bool::weighted(0.3)
        )
            .prop_map(|(x, p, negated)| Cond::Like { x, pattern: p.to_string(), negated }),
        // `_id = v` / `v = _id`: point reads when v is a constant.
        2 => (id_operand(), any::<bool>()).prop_map(move |(v, flip)| if flip {
            Cond::Cmp(v, Op::Eq, id())
        } else {
            Cond::Cmp(id(), Op::Eq, v)
        }),
        // `_id IN (..)`: point reads when every value is a constant.
        2 => (id_list(), prop::bool::weighted(0.15))
            .prop_map(|(list, negated)| Cond::In { x: FPath::key("_id"), list, array: false, negated }),
        1 => const_value().prop_map(Cond::Const),
    ]
    .boxed()
}

fn cond(mix: Mix) -> impl Strategy<Value = Cond> {
    leaf(mix).prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            2 => (inner.clone(), inner.clone()).prop_map(|(a, b)| Cond::And(Box::new(a), Box::new(b))),
            2 => (inner.clone(), inner.clone()).prop_map(|(a, b)| Cond::Or(Box::new(a), Box::new(b))),
            1 => inner.clone().prop_map(|a| Cond::Not(Box::new(a))),
            // A constant on either side of AND / OR.
            2 => (inner, const_value(), any::<bool>(), any::<bool>()).prop_map(|(c, k, first, and)| {
                let (a, b) = if first { (Cond::Const(k), c) } else { (c, Cond::Const(k)) };
                if and {
                    Cond::And(Box::new(a), Box::new(b))
                } else {
                    Cond::Or(Box::new(a), Box::new(b))
                }
            }),
        ]
    })
}

/// Names an alias may take instead of `al{n}`: fields' (indexed or not)
/// and `_id`.
const SHADOWING: [&str; 6] = ["a", "b", "c", "t", "x", "_id"];

fn items(mix: Mix) -> impl Strategy<Value = Vec<Item>> {
    let item = prop_oneof![
        2 => fpath().prop_map(Item::Path),
        2 => fpath().prop_map(|p| Item::Alias(p, String::new())),
        2 => cond(mix).prop_map(|c| Item::Cond(c, String::new())),
        1 => Just(Item::Star),
        1 => prop::sample::select(vec!["a", "c", "t", "x", "_id"]).prop_map(Item::Spread),
    ];
    let items = prop_oneof![
        1 => Just(vec![Item::Star]),
        3 => prop::collection::vec(item, 1..4),
    ];
    (
        items,
        prop::collection::vec(prop::option::weighted(0.3, prop::sample::select(SHADOWING.to_vec())), 4),
    )
        .prop_map(|(mut items, names)| {
            // Aliases are `al{n}`, or a field's name, which `ORDER BY` then
            // reads from the output.
            for (n, i) in items.iter_mut().enumerate() {
                if let Item::Alias(_, a) | Item::Cond(_, a) = i {
                    *a = names[n].map_or_else(|| format!("al{n}"), str::to_string);
                }
            }
            items
        })
}

fn aliases(items: &[Item]) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Alias(_, a) | Item::Cond(_, a) => Some(a.clone()),
            _ => None,
        })
        .collect()
}

fn query(mix: Mix) -> impl Strategy<Value = Query> {
    let order_term = prop_oneof![3 => key_path().prop_map(Term::Path), 1 => fpath().prop_map(Term::Path), 1 => Just(Term::Alias(String::new()))];
    (
        items(mix),
        prop::option::weighted(0.12, id_list()),
        prop::option::weighted(0.7, cond(mix)),
        // A conjunct an index can serve: `path op constant`.
        prop::option::weighted(0.5, (key_path(), op(), scalar(mix))),
        prop::collection::vec((order_term, prop::bool::weighted(0.4)), 0..4),
        prop::option::weighted(0.3, any::<bool>()),
        prop::option::weighted(0.5, 0usize..6),
        prop::option::weighted(0.3, 0usize..5),
        prop::bool::weighted(0.15),
    )
        .prop_map(
            |(items, use_ids, filter, bound, order, id_last, limit, offset, window_params)| {
                let filter = match (bound, filter) {
                    (Some((p, o, c)), f) => {
                        let b = Cond::Cmp(Operand::Path(p), o, Operand::Const(c));
                        Some(f.map_or(b.clone(), |f| Cond::And(Box::new(b), Box::new(f))))
                    }
                    (None, f) => f,
                };
                let aliases = aliases(&items);
                // An alias term names one of the query's aliases, or becomes `a`.
                let order = order
                    .into_iter()
                    .enumerate()
                    .map(|(n, (t, desc))| match t {
                        Term::Alias(_) if !aliases.is_empty() => {
                            (Term::Alias(aliases[n % aliases.len()].clone()), desc)
                        }
                        Term::Alias(_) => (Term::Path(FPath::key("a")), desc),
                        t => (t, desc),
                    })
                    .collect();
                Query {
                    items,
                    use_ids,
                    filter,
                    order,
                    id_last,
                    limit,
                    offset,
                    window_params,
                }
            },
        )
}

/// Index definitions (as DQL path lists).
const INDEXES: [&str; 13] = [
    "a",
    "b",
    "x",
    "c.x",
    "_id",
    "t",
    "c",
    "a, b",
    "b, a",
    "c.x, a",
    "a, _id",
    "x, _id",
    "b, x, _id",
];

/// The indexes to create for the second run.
fn index_sets() -> impl Strategy<Value = Vec<&'static str>> {
    prop::collection::vec(prop::sample::select(INDEXES.to_vec()), 1..4)
}

/// The paths of an index definition.
fn index_paths(def: &'static str) -> Vec<FPath> {
    def.split(", ")
        .map(|p| FPath(p.split('.').map(Seg::Key).collect()))
        .collect()
}

// ---- executor against the model; with and without indexes ----

fn create_indexes(store: &Store<MemKv>, indexes: &[&str], now: &mut u64) -> Result<(), TestCaseError> {
    for (n, paths) in indexes.iter().enumerate() {
        run(
            store,
            &format!("CREATE INDEX IF NOT EXISTS i{n} ON t ({paths})"),
            &Value::Null,
            now,
        )
        .map_err(TestCaseError::fail)?;
    }
    Ok(())
}

/// The store with `docs`, checked to read back as stored.
fn loaded(docs: &Docs, now: &mut u64) -> Result<Store<MemKv>, TestCaseError> {
    let store = store_with(&docs.written, now);
    let by_id = |a: &Value, b: &Value| model_cmp(&a.as_object().unwrap()["_id"], &b.as_object().unwrap()["_id"]);
    let mut back = run(&store, "SELECT * FROM t", &Value::Null, now).map_err(TestCaseError::fail)?;
    back.sort_by(by_id);
    let mut sorted = docs.stored.clone();
    sorted.sort_by(by_id);
    prop_assert_eq!(&back, &sorted, "documents do not read back with canonical ids");
    Ok(store)
}

/// Calls that are wrong whatever the data: an unknown function, wrong
/// argument counts (aggregates too), an invalid literal pattern, unknown
/// literal date units and parts.
const BAD_CALLS: [&str; 7] = [
    "nosuch(a)",
    "lower()",
    "lower(a, b)",
    "count(a, b)",
    "regexp_like(b, '(')",
    "date_add(a, 1, 'eon')",
    "date_part(a, 'eon')",
];

fn check_query(docs: &Docs, q: &Query, indexes: &[&str]) -> Result<(), TestCaseError> {
    let mut now = 1_000_000;
    let store = loaded(docs, &mut now)?;
    let text = q.render();
    let params = q.params();
    let expected = model(q, &docs.stored);
    let plain = run(&store, &text, &params, &mut now).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
    check_rows(q, &expected, &plain).map_err(TestCaseError::fail)?;
    if text.contains(":p") {
        // Parameters are checked before the run, whatever the data and
        // whether or not evaluation would reach them.
        let none = Value::Object(BTreeMap::new());
        let r = run(&store, &text, &none, &mut now);
        prop_assert!(
            r.as_ref().is_err_and(|e| e.contains("missing parameter")),
            "{} without parameters gave {:?}",
            text,
            r
        );
    }

    // So are function names, argument counts and literal arguments: a bad
    // call fails the statement even where no row reaches it.
    let bad = BAD_CALLS[text.len() % BAD_CALLS.len()];
    let name = &bad[..bad.find('(').expect("a call")];
    let mut variants = vec![text.replacen("SELECT ", &format!("SELECT {bad} AS zz, "), 1)];
    if q.filter.is_some() {
        variants.push(text.replacen(" WHERE ", &format!(" WHERE (false AND {bad}) OR "), 1));
    }
    for v in variants {
        let r = run(&store, &v, &params, &mut now);
        prop_assert!(r.as_ref().is_err_and(|e| e.contains(name)), "{} gave {:?}", v, r);
    }

    create_indexes(&store, indexes, &mut now)?;
    let indexed = run(&store, &text, &params, &mut now).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
    let plan = run(&store, &format!("EXPLAIN {text}"), &params, &mut now).map_err(TestCaseError::fail)?;
    check_rows(q, &expected, &indexed)
        .map_err(|e| TestCaseError::fail(format!("with indexes {indexes:?}, plan {}: {e}", plan[0])))?;
    if q.total() {
        // A total order gives one answer.
        prop_assert_eq!(&plain, &indexed, "{} differs with indexes {:?}", text, indexes);
    } else if q.order.is_empty() && q.id_last.is_none() && q.limit.is_none() && q.offset.is_none() {
        // No order and no window: one set (equal rows spelled differently,
        // `{"x": 0}` and `{"x": 0.0}`, are still two rows).
        let by_value_then_spelling =
            |x: &Value, y: &Value| model_cmp(x, y).then_with(|| format!("{x:?}").cmp(&format!("{y:?}")));
        let (mut a, mut b) = (plain, indexed);
        a.sort_by(by_value_then_spelling);
        b.sort_by(by_value_then_spelling);
        prop_assert_eq!(a, b, "{} differs with indexes {:?}", text, indexes);
    }
    Ok(())
}

/// Queries whose `ORDER BY` an index may serve: one of `indexes` is picked,
/// its leading path maybe fixed by an equality, and the query ordered by the
/// next paths (some of them, in one direction, mostly), maybe followed by a
/// further term (an array element, an alias) and `_id`. The projection may
/// shadow any of these names.
fn ordered_case() -> impl Strategy<Value = (Vec<&'static str>, Query)> {
    let extra = prop_oneof![fpath().prop_map(Term::Path), Just(Term::Alias(String::new()))];
    (
        index_sets(),
        any::<prop::sample::Index>(),
        query(Mix::Small),
        (0usize..2, 1usize..4, any::<bool>(), prop::bool::weighted(0.1)),
        prop::option::weighted(0.3, extra),
        prop::option::weighted(0.5, any::<bool>()),
        prop::bool::weighted(0.4),
        scalar(Mix::Small),
        prop::option::weighted(0.85, 0usize..5),
    )
        .prop_map(
            |(indexes, pick, mut q, (eq, len, desc, flip), extra, id_last, keep_filter, c, limit)| {
                let paths = index_paths(indexes[pick.index(indexes.len())]);
                let eq = eq.min(paths.len() - 1);
                if !keep_filter {
                    q.filter = None;
                }
                if eq == 1 {
                    let fixed = Cond::Cmp(Operand::Path(paths[0].clone()), Op::Eq, Operand::Const(c));
                    q.filter = Some(match q.filter.take() {
                        Some(f) => Cond::And(Box::new(fixed), Box::new(f)),
                        None => fixed,
                    });
                }
                let mut order: Vec<(Term, bool)> = paths[eq..]
                    .iter()
                    .take(len)
                    .map(|p| (Term::Path(p.clone()), desc))
                    .collect();
                let aliases = aliases(&q.items);
                match extra {
                    Some(Term::Alias(_)) if !aliases.is_empty() => order.push((Term::Alias(aliases[0].clone()), desc)),
                    Some(Term::Path(p)) => order.push((Term::Path(p), desc)),
                    _ => {}
                }
                if flip {
                    let last = order.len() - 1;
                    order[last].1 = !desc;
                }
                q.order = order;
                q.id_last = id_last.map(|same| if same { desc } else { !desc });
                q.limit = limit;
                q.use_ids = None;
                (indexes, q)
            },
        )
}

/// `EXPLAIN` claims `"ordered": true` only when the index order is the
/// query's: the rows are then the model's (in order, ties aside) and, when
/// the order is total, exactly the rows of the run without indexes.
fn check_ordered_claim(docs: &Docs, q: &Query, indexes: &[&str]) -> Result<(), TestCaseError> {
    let mut now = 1_000_000;
    let store = loaded(docs, &mut now)?;
    let text = q.render();
    let params = q.params();
    let plain = run(&store, &text, &params, &mut now).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
    create_indexes(&store, indexes, &mut now)?;
    let explain = run(&store, &format!("EXPLAIN {text}"), &params, &mut now).map_err(TestCaseError::fail)?;
    let plan = explain[0]
        .as_object()
        .and_then(|o| o.get("plan"))
        .and_then(Value::as_object);
    let ordered = plan.and_then(|p| p.get("ordered")) == Some(&Value::Bool(true));
    if !ordered {
        return Ok(());
    }
    let indexed = run(&store, &text, &params, &mut now).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
    check_rows(q, &model(q, &docs.stored), &indexed)
        .map_err(|e| TestCaseError::fail(format!("claimed ordered with indexes {indexes:?}: {}: {e}", explain[0])))?;
    if q.total() {
        prop_assert_eq!(
            &plain,
            &indexed,
            "{} claimed ordered with indexes {:?} ({})",
            text,
            indexes,
            explain[0]
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// SELECT results match the model, before and after creating indexes.
    #[test]
    fn select_matches_the_model(
        docs in prop_oneof![2 => docs(Mix::Small), 1 => docs(Mix::Twins)],
        q in query(Mix::Small),
        indexes in index_sets(),
    ) {
        check_query(&docs, &q, &indexes)?;
    }

    /// The same with numbers mostly near ±2^53 and ±2^63, integers and the
    /// floats equal to them (index keys must be exact there).
    #[test]
    fn select_matches_the_model_with_edge_numbers(docs in docs(Mix::Edges), q in query(Mix::Edges), indexes in index_sets()) {
        check_query(&docs, &q, &indexes)?;
    }

    /// `EXPLAIN` never claims an index order the rows do not have.
    #[test]
    fn explained_index_order_is_the_query_order(
        docs in prop_oneof![2 => docs(Mix::Small), 1 => docs(Mix::Twins)],
        (indexes, q) in ordered_case(),
    ) {
        check_ordered_claim(&docs, &q, &indexes)?;
    }
}

// ---- grouping and DISTINCT against the model's classes of equal values ----

/// The aggregate an `OrderedByAggregate` query sorts by (`?` is the path).
const ORDER_AGGREGATES: [&str; 6] = [
    "COUNT(*)",
    "count(?)",
    "count(DISTINCT ?)",
    "min(?)",
    "max(?)",
    "sum(?)",
];

#[derive(Clone, Debug)]
enum Grouping {
    /// `SELECT g AS k, COUNT(*) AS n, count(p) AS c, count(DISTINCT p) AS d,
    /// min(p) AS lo, max(p) AS hi FROM t GROUP BY g`.
    By { g: FPath, p: FPath },
    /// `SELECT items FROM t ORDER BY agg(p)`: an aggregate in `ORDER BY`
    /// alone makes the query one group (one row, of the group's first
    /// document, or of no document when none passes).
    OrderedByAggregate {
        items: Vec<Item>,
        agg: &'static str,
        p: FPath,
        desc: bool,
    },
    /// `SELECT DISTINCT items FROM t`.
    Distinct { items: Vec<Item> },
}

#[derive(Clone)]
struct GroupQuery {
    kind: Grouping,
    filter: Option<Cond>,
}

impl std::fmt::Debug for GroupQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

impl GroupQuery {
    fn render(&self) -> String {
        let filter = self
            .filter
            .as_ref()
            .map_or(String::new(), |f| format!(" WHERE {}", f.render()));
        let list = |items: &[Item]| items.iter().map(Item::render).collect::<Vec<_>>().join(", ");
        match &self.kind {
            Grouping::By { g, p } => {
                let (g, p) = (g.render(), p.render());
                format!(
                    "SELECT {g} AS k, COUNT(*) AS n, count({p}) AS c, count(DISTINCT {p}) AS d, min({p}) AS lo, \
                     max({p}) AS hi FROM t{filter} GROUP BY {g}"
                )
            }
            Grouping::OrderedByAggregate { items, agg, p, desc } => format!(
                "SELECT {} FROM t{filter} ORDER BY {}{}",
                list(items),
                agg.replace('?', &p.render()),
                if *desc { " DESC" } else { "" }
            ),
            Grouping::Distinct { items } => format!("SELECT DISTINCT {} FROM t{filter}", list(items)),
        }
    }
}

fn group_query() -> impl Strategy<Value = GroupQuery> {
    let kind = prop_oneof![
        2 => (fpath(), fpath()).prop_map(|(g, p)| Grouping::By { g, p }),
        1 => (items(Mix::Small), prop::sample::select(ORDER_AGGREGATES.to_vec()), fpath(), any::<bool>()).prop_map(
            |(items, agg, p, desc)| {
                // Unnamed columns of a grouped query are all called `$0`
                // (`bug_grouped_query_unnamed_columns_collide`): name them.
                let items = items
                    .into_iter()
                    .enumerate()
                    .map(|(n, i)| match i {
                        Item::Path(p) if matches!(p.0.last(), Some(Seg::Idx(_))) => Item::Alias(p, format!("al{n}")),
                        other => other,
                    })
                    .collect();
                Grouping::OrderedByAggregate { items, agg, p, desc }
            }
        ),
        1 => items(Mix::Small).prop_map(|items| Grouping::Distinct { items }),
        // One or two columns, so that equal rows are common.
        2 => {
            let column = || prop_oneof![
                3 => fpath().prop_filter("not _id", |p| !p.is_id()).prop_map(Item::Path),
                1 => cond(Mix::Small).prop_map(|c| Item::Cond(c, "al0".into())),
            ];
            (column(), prop::option::weighted(0.3, column())).prop_map(|(first, second)| {
                let mut items = vec![first];
                items.extend(second.map(|i| match i {
                    Item::Cond(c, _) => Item::Cond(c, "al1".into()),
                    other => other,
                }));
                Grouping::Distinct { items }
            })
        },
    ];
    (kind, prop::option::weighted(0.5, cond(Mix::Small))).prop_map(|(kind, filter)| GroupQuery { kind, filter })
}

/// The classes of model-equal values among `values`, in first-seen order,
/// each with its members.
fn classes<T>(values: impl IntoIterator<Item = (V, T)>) -> Vec<(V, Vec<T>)> {
    let mut out: Vec<(V, Vec<T>)> = Vec::new();
    for (v, t) in values {
        match out.iter_mut().find(|(k, _)| model_eq(k, &v)) {
            Some((_, members)) => members.push(t),
            None => out.push((v, vec![t])),
        }
    }
    out
}

/// The least (or greatest) value, ignoring null; null if there is none.
fn extreme(values: &[Value], greatest: bool) -> Value {
    values
        .iter()
        .filter(|v| **v != Value::Null)
        .cloned()
        .reduce(|a, b| {
            let o = model_cmp(&b, &a);
            if (greatest && o.is_gt()) || (!greatest && o.is_lt()) {
                b
            } else {
                a
            }
        })
        .unwrap_or(Value::Null)
}

fn check_grouped(docs: &Docs, q: &GroupQuery) -> Result<(), TestCaseError> {
    let mut now = 1_000_000;
    let store = loaded(docs, &mut now)?;
    let text = q.render();
    let params = Query {
        items: Vec::new(),
        use_ids: None,
        filter: None,
        order: Vec::new(),
        id_last: None,
        limit: None,
        offset: None,
        window_params: false,
    }
    .params();
    let got = run(&store, &text, &params, &mut now).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
    let pass = passing(None, q.filter.as_ref(), &docs.stored);
    let show = |rows: &[Value]| rows.iter().map(Value::to_string).collect::<Vec<_>>().join(" ");
    match &q.kind {
        Grouping::By { g, p } => {
            // One row per class of equal keys (missing is a key too).
            let want = classes(pass.iter().map(|d| (g.get(d), *d)));
            prop_assert_eq!(got.len(), want.len(), "{}: groups\n  got {}", text, show(&got));
            for (key, members) in &want {
                let row = got
                    .iter()
                    .find(|r| model_eq(&r.as_object().and_then(|o| o.get("k")).cloned(), key));
                let Some(Value::Object(row)) = row else {
                    return Err(TestCaseError::fail(format!(
                        "{text}: no group {key:?}\n  got {}",
                        show(&got)
                    )));
                };
                let values: Vec<Value> = members
                    .iter()
                    .filter_map(|d| p.get(d))
                    .filter(|v| *v != Value::Null)
                    .collect();
                let distinct = classes(values.iter().map(|v| (Some(v.clone()), ()))).len();
                let int = |n: usize| Some(Value::Int(n as i64));
                let ok = row.get("n").cloned() == int(members.len())
                    && row.get("c").cloned() == int(values.len())
                    && row.get("d").cloned() == int(distinct)
                    && model_eq(&row.get("lo").cloned(), &Some(extreme(&values, false)))
                    && model_eq(&row.get("hi").cloned(), &Some(extreme(&values, true)));
                prop_assert!(
                    ok,
                    "{}: group {:?} has {} {} values, {} distinct, least {}, greatest {}\n  got {}",
                    text,
                    key,
                    members.len(),
                    values.len(),
                    distinct,
                    extreme(&values, false),
                    extreme(&values, true),
                    show(&got)
                );
            }
        }
        Grouping::OrderedByAggregate { items, .. } => {
            let candidates: Vec<Value> = if pass.is_empty() {
                // No document: a row without fields (`SELECT *` alone gives
                // null instead: `bug_star_over_no_rows_is_null`).
                match items.as_slice() {
                    [Item::Star] => vec![Value::Object(BTreeMap::new()), Value::Null],
                    _ => vec![project(items, &Value::Null)],
                }
            } else {
                pass.iter().map(|d| project(items, d)).collect()
            };
            prop_assert!(
                got.len() == 1 && candidates.contains(&got[0]),
                "{}: want one of {}\n  got {}",
                text,
                show(&candidates),
                show(&got)
            );
        }
        Grouping::Distinct { items } => {
            // One row of each class of equal rows (`{"a": 1}` and
            // `{"a": 1.0}` are one class), as read first.
            let want = classes(pass.iter().map(|d| {
                let row = project(items, d);
                (Some(row.clone()), row)
            }));
            prop_assert_eq!(got.len(), want.len(), "{}: rows\n  got {}", text, show(&got));
            for (_, members) in &want {
                prop_assert!(
                    got.iter().filter(|g| members.contains(g)).count() == 1,
                    "{}: want one of {}\n  got {}",
                    text,
                    show(members),
                    show(&got)
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Groups are the classes of equal keys; `DISTINCT` keeps one row of
    /// each class of equal rows; an aggregate in `ORDER BY` alone gives one
    /// group.
    #[test]
    fn grouping_matches_the_model(
        docs in prop_oneof![docs(Mix::Small), docs(Mix::Edges), docs(Mix::Twins), docs(Mix::Twins)],
        q in group_query(),
    ) {
        check_grouped(&docs, &q)?;
    }
}

// ---- no input makes the parser or the executor panic ----

const VOCABULARY: &[&str] = &[
    "SELECT",
    "select",
    "*",
    "FROM",
    "t",
    "u",
    "WHERE",
    "a",
    "b",
    "c",
    "c.x",
    "t[0]",
    "tags[-1]",
    "_id",
    "AS",
    "x",
    "AND",
    "OR",
    "NOT",
    "IN",
    "BETWEEN",
    "IS",
    "NULL",
    "MISSING",
    "LIKE",
    "ILIKE",
    "ORDER",
    "BY",
    "ASC",
    "DESC",
    "LIMIT",
    "OFFSET",
    "GROUP",
    "HAVING",
    "DISTINCT",
    "COUNT(*)",
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "length",
    "lower",
    "substr",
    "regexp_like",
    "date_add",
    "date_diff",
    "date_part",
    "deserialize_json",
    "coalesce",
    "if_missing",
    "round",
    "type",
    "object_keys",
    "array_contains",
    "nosuch",
    "ANY",
    "SATISFIES",
    "END",
    "JOIN",
    "LEFT",
    "ON",
    "USE",
    "IDS",
    "INSERT",
    "INTO",
    "DOCUMENTS",
    "INITIAL",
    "CONFLICT",
    "DO",
    "NOTHING",
    "UPDATE",
    "UPDATE_LOCAL_DIFF",
    "SET",
    "UNSET",
    "APPLY",
    "INCREMENT",
    "PN_INCREMENT",
    "RESTART",
    "WITH",
    "RETURNING",
    "DELETE",
    "EVICT",
    "CREATE",
    "DROP",
    "INDEX",
    "IF",
    "EXISTS",
    "ALTER",
    "SYSTEM",
    "SHOW",
    "ALL",
    "EXPLAIN",
    "PROFILE",
    "COLLECTION",
    "COUNTER",
    "REGISTER",
    "MAP",
    "ATTACHMENT",
    "DQL_STRICT_MODE",
    "system:indexes",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    ";",
    ".",
    "=",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "+",
    "-",
    "/",
    "%",
    "||",
    "0",
    "1",
    "-1",
    "2.5",
    "1e400",
    "9223372036854775807",
    "-9223372036854775808",
    "'x'",
    "'a%'",
    "'('",
    "'day'",
    "'eon'",
    "\"{\\\"a\\\": 1}\"",
    "'{'",
    "true",
    "false",
    "null",
    ":p",
    ":ids",
    ":doc",
    ":text",
    ":missing",
    "`odd`",
    "--",
    "/*",
    "*/",
    "é",
];

/// The fuzzers' parameters, and the `:p{n}` of generated queries.
fn fuzz_params() -> Value {
    let Value::Object(mut o) = obj(vec![
        ("p", Value::Int(1)),
        ("ids", Value::Array(vec![Value::Int(1), Value::String("k".into())])),
        ("doc", obj(vec![("_id", Value::Int(9)), ("a", Value::Int(1))])),
        ("text", Value::String("{\"_id\": 7, \"a\": [1]}".into())),
    ]) else {
        unreachable!()
    };
    o.extend(
        param_values()
            .iter()
            .enumerate()
            .map(|(n, v)| (format!("p{n}"), v.clone())),
    );
    Value::Object(o)
}

/// A small store to run random statements on.
fn fuzz_store(now: &mut u64) -> Store<MemKv> {
    let docs = [
        obj(vec![
            ("_id", Value::Int(1)),
            ("a", Value::Int(1)),
            ("b", Value::String("x".into())),
        ]),
        obj(vec![
            ("_id", Value::String("k".into())),
            ("a", Value::Float(2.5)),
            ("c", obj(vec![("x", Value::Null)])),
            ("t", Value::Array(vec![Value::Int(1), Value::String("a".into())])),
        ]),
        obj(vec![("_id", Value::Int(2)), ("b", Value::Bool(true))]),
    ];
    let store = store_with(&docs, now);
    run(
        &store,
        "INSERT INTO u DOCUMENTS ({\"_id\": 1, \"name\": \"one\"}), ({\"_id\": \"k\"})",
        &Value::Null,
        now,
    )
    .expect("insert");
    run(&store, "CREATE INDEX ia ON t (a)", &Value::Null, now).expect("index");
    store
}

fn run_anything(text: &str) {
    let mut now = 1_000_000;
    let store = fuzz_store(&mut now);
    let params = fuzz_params();
    // Twice: a statement that changed the store runs again on the result;
    // unchecked first (the evaluator meets what the checks would refuse).
    let _ = run_unchecked(&store, text, &params, &mut now);
    let _ = run(&store, text, &params, &mut now);
    // The store still answers.
    run(&store, "SELECT * FROM t ORDER BY _id", &Value::Null, &mut now).expect("store still readable");
}

/// Random well-formed expressions: literals, fields, parameters, every
/// function (and aggregates, and unknown names) with any number of
/// arguments, operators, collections, `ANY`.
fn arb_expr() -> BoxedStrategy<String> {
    let leaf = prop::sample::select(vec![
        "1",
        "-2",
        "2.5",
        "0",
        "9223372036854775807",
        "'x'",
        "'a%'",
        "'2024-03-10'",
        "'day'",
        "'eon'",
        "'('",
        "'{\"a\": 1}'",
        "'['",
        "true",
        "false",
        "null",
        "a",
        "b",
        "c",
        "c.x",
        "t",
        "t[0]",
        "t[-1]",
        "_id",
        "missing_field",
        ":p",
        ":ids",
        ":doc",
        ":text",
        "[]",
        "{}",
        "u._id",
        "COUNT(*)",
    ])
    .prop_map(str::to_string);
    let mut names: Vec<&'static str> = dql::eval::function_names();
    names.extend(["count", "sum", "avg", "min", "max", "nosuch"]);
    leaf.prop_recursive(4, 24, 3, move |inner| {
        let args = prop::collection::vec(inner.clone(), 0..4).prop_map(|a| a.join(", "));
        prop_oneof![
            3 => (prop::sample::select(names.clone()), prop::bool::weighted(0.05), args.clone())
                .prop_map(|(f, d, a)| format!("{f}({}{a})", if d { "DISTINCT " } else { "" })),
            3 => (
                inner.clone(),
                prop::sample::select(vec![
                    "=", "!=", "<", ">=", "AND", "OR", "+", "-", "*", "/", "%", "||", "LIKE", "ILIKE", "NOT LIKE",
                ]),
                inner.clone()
            )
                .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            1 => inner.clone().prop_map(|a| format!("NOT {a}")),
            1 => inner.clone().prop_map(|a| format!("-({a})")),
            1 => (inner.clone(), prop::sample::select(vec!["IS NULL", "IS NOT MISSING"])).prop_map(|(a, t)| format!("({a} {t})")),
            1 => (inner.clone(), args.clone()).prop_map(|(a, l)| format!("({a} IN ({l}))")),
            1 => (inner.clone(), inner.clone()).prop_map(|(a, l)| format!("({a} NOT IN {l})")),
            1 => (inner.clone(), inner.clone(), inner.clone()).prop_map(|(a, l, h)| format!("({a} BETWEEN {l} AND {h})")),
            1 => args.clone().prop_map(|a| format!("[{a}]")),
            1 => (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{{\"k\": {a}, \"l\": {b}}}")),
            1 => (inner.clone(), inner).prop_map(|(a, c)| format!("ANY v IN {a} SATISFIES {c} END")),
        ]
    })
    .boxed()
}

/// Random well-formed statements of every kind over collections `t`, `u`.
fn arb_statement() -> impl Strategy<Value = String> {
    let e = arb_expr;
    let items = prop::collection::vec((e(), prop::bool::ANY), 1..3)
        .prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(n, (x, alias))| if alias { format!("{x} AS c{n}") } else { x })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .boxed();
    let opt = |s: BoxedStrategy<String>| prop::option::of(s).prop_map(|o| o.unwrap_or_default());
    let select = (
        prop::bool::weighted(0.2),
        prop_oneof![Just("*".to_string()), items.clone()],
        prop::sample::select(vec!["t", "t AS x", "u", "nothing", "system:indexes"]),
        opt(e().prop_map(|x| format!(" JOIN u ON u._id = {x}")).boxed()),
        opt(e().prop_map(|x| format!(" WHERE {x}")).boxed()),
        opt(e().prop_map(|x| format!(" GROUP BY {x}")).boxed()),
        opt(e().prop_map(|x| format!(" HAVING {x}")).boxed()),
        opt((e(), prop::bool::ANY)
            .prop_map(|(x, d)| format!(" ORDER BY {x}{}", if d { " DESC" } else { "" }))
            .boxed()),
        opt(
            prop::sample::select(vec![" LIMIT 2", " LIMIT 0 OFFSET 1", " LIMIT :p", " OFFSET 1"])
                .prop_map(str::to_string)
                .boxed(),
        ),
    )
        .prop_map(|(d, items, from, join, filter, group, having, order, limit)| {
            format!(
                "SELECT {}{items} FROM {from}{join}{filter}{group}{having}{order}{limit}",
                if d { "DISTINCT " } else { "" }
            )
        })
        .boxed();
    let returning = opt(items.prop_map(|i| format!(" RETURNING {i}")).boxed());
    prop_oneof![
        4 => select.clone(),
        1 => select.prop_map(|s| format!("EXPLAIN {s}")),
        1 => (e(), e(), prop::sample::select(vec!["", " ON ID CONFLICT DO NOTHING", " ON ID CONFLICT DO UPDATE"]), returning.clone())
            .prop_map(|(a, b, c, r)| format!("INSERT INTO t DOCUMENTS ({{\"_id\": {a}, \"v\": {b}}}), ({b}){c}{r}")),
        1 => (prop::sample::select(vec!["v", "c.x", "t", "n.m.o"]), e(), e(), returning.clone())
            .prop_map(|(p, x, w, r)| format!("UPDATE t SET {p} = {x} WHERE {w}{r}")),
        1 => (e(), e()).prop_map(|(x, w)| format!("UPDATE t APPLY n INCREMENT BY {x}, UNSET b WHERE {w}")),
        1 => (e(), returning).prop_map(|(w, r)| format!("DELETE FROM t WHERE {w}{r}")),
        1 => e().prop_map(|w| format!("EVICT FROM u WHERE {w}")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn random_token_statements_never_panic(
        prefix in prop::sample::select(vec!["", "SELECT * FROM t WHERE", "SELECT a, b AS y FROM t ORDER BY", "UPDATE t SET a =", "INSERT INTO t DOCUMENTS (", "SELECT COUNT(*) FROM t GROUP BY", "DELETE FROM t WHERE"]),
        tokens in prop::collection::vec(prop::sample::select(VOCABULARY), 0..25),
    ) {
        run_anything(&format!("{prefix} {}", tokens.join(" ")));
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..120)) {
        run_anything(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn random_statements_never_panic(stmt in arb_statement()) {
        run_anything(&stmt);
    }

    /// Valid generated queries with one token dropped, repeated or swapped.
    #[test]
    fn mangled_queries_never_panic(q in query(Mix::Edges), at in any::<prop::sample::Index>(), how in 0u8..3) {
        let text = q.render();
        let mut tokens: Vec<&str> = text.split(' ').collect();
        let i = at.index(tokens.len());
        match how {
            0 => {
                tokens.remove(i);
            }
            1 => tokens.insert(i, tokens[i]),
            _ => {
                let j = (i + 1) % tokens.len();
                tokens.swap(i, j);
            }
        }
        run_anything(&tokens.join(" "));
    }
}

// ---- engine bugs: fixed (`regression_*`) and open (`bug_*`, ignored) ----

fn expect_items(setup: &[&str], query: &str, want: &str) {
    let mut now = 1_000_000;
    let store = new_store();
    for s in setup {
        run(&store, s, &Value::Null, &mut now).expect(s);
    }
    let got = run(&store, query, &Value::Null, &mut now);
    let want = match Value::parse(want).expect("want") {
        Value::Array(a) => a,
        other => vec![other],
    };
    assert_eq!(got, Ok(want), "{query}");
}

/// Index keys used to encode integers as f64 only, so 2^53 and 2^53 + 1
/// shared a key and a strict bound `> 2^53` skipped 2^53 + 1.
#[test]
fn regression_index_range_loses_big_integers() {
    expect_items(
        &[
            "INSERT INTO t DOCUMENTS ({\"_id\":1,\"a\":9007199254740992}), ({\"_id\":2,\"a\":9007199254740993})",
            "CREATE INDEX ta ON t (a)",
        ],
        "SELECT _id FROM t WHERE a > 9007199254740992",
        "[{\"_id\":2}]",
    );
}

/// The same key collision broke an ordered index scan that stops early.
#[test]
fn regression_index_order_loses_big_integers() {
    expect_items(
        &[
            "INSERT INTO t DOCUMENTS ({\"_id\":1,\"a\":9007199254740993}), ({\"_id\":2,\"a\":9007199254740992})",
            "CREATE INDEX ta ON t (a)",
        ],
        "SELECT _id FROM t ORDER BY a LIMIT 1",
        "[{\"_id\":2}]",
    );
}

/// The planner matched `ORDER BY` paths to index paths by their keys; a
/// path with an array index has none, and neither has the index past its
/// last path, so `ORDER BY a, t[0]` counted as served by an index on `a`
/// (also `WHERE a = 1 ORDER BY t[0]`).
#[test]
fn regression_ordered_index_ignores_array_element_key() {
    expect_items(
        &[
            "INSERT INTO t DOCUMENTS ({\"_id\":1,\"a\":1,\"t\":[5]}), ({\"_id\":2,\"a\":1,\"t\":[3]})",
            "CREATE INDEX ta ON t (a)",
        ],
        "SELECT _id FROM t ORDER BY a, t[0] LIMIT 1",
        "[{\"_id\":2}]",
    );
    expect_items(
        &[
            "INSERT INTO t DOCUMENTS ({\"_id\":1,\"a\":1,\"t\":[5]}), ({\"_id\":2,\"a\":1,\"t\":[3]})",
            "CREATE INDEX ta ON t (a)",
        ],
        "SELECT _id FROM t WHERE a = 1 ORDER BY t[0] LIMIT 1",
        "[{\"_id\":2}]",
    );
}

/// `ORDER BY a` where `a` is also an output alias sorts by the output
/// column; with an index on the field `a` the planner used to read the
/// index in the field's order and stop after `LIMIT` rows.
#[test]
fn regression_ordered_index_ignores_alias() {
    expect_items(
        &[
            "INSERT INTO t DOCUMENTS ({\"_id\":1,\"a\":1,\"b\":9}), ({\"_id\":2,\"a\":2,\"b\":0})",
            "CREATE INDEX ta ON t (a)",
        ],
        "SELECT b AS a FROM t ORDER BY a LIMIT 1",
        "[{\"a\":0}]",
    );
}

/// `_id = <not an id type>` was planned as a point read and failed, where
/// the documented comparison is simply false.
#[test]
fn regression_id_compared_with_non_id_value() {
    expect_items(
        &["INSERT INTO t DOCUMENTS ({\"_id\":1})"],
        "SELECT _id FROM t WHERE _id = true",
        "[]",
    );
    expect_items(
        &["INSERT INTO t DOCUMENTS ({\"_id\":1})"],
        "SELECT _id FROM t WHERE _id IN (1, null)",
        "[{\"_id\":1}]",
    );
}

/// `_id IN (..)` with a repeated id (also `1` and `1.0`) returned the
/// document once per repetition.
#[test]
fn regression_id_in_repeated_ids_duplicates_rows() {
    expect_items(
        &["INSERT INTO t DOCUMENTS ({\"_id\":1})"],
        "SELECT _id FROM t WHERE _id IN (1, 1.0)",
        "[{\"_id\":1}]",
    );
}

/// Grouping and `DISTINCT` keyed values by their id encoding with only
/// top-level integral floats below 9e15 made integers, so equal values
/// (2^53 and 2^53 as a float, `[1]` and `[1.0]`, `{"a": 1}` and
/// `{"a": 1.0}`) were separate groups and rows, while `COUNT(DISTINCT a)`
/// counted them once.
#[test]
fn regression_grouping_splits_equal_values() {
    let setup = [
        "INSERT INTO t DOCUMENTS ({\"_id\":1,\"a\":9007199254740992,\"t\":[1]}), \
         ({\"_id\":2,\"a\":9007199254740992.0,\"t\":[1.0]})",
    ];
    expect_items(&setup, "SELECT COUNT(*) AS n FROM t GROUP BY a", "[{\"n\":2}]");
    expect_items(&setup, "SELECT COUNT(*) AS n FROM t GROUP BY t", "[{\"n\":2}]");
    expect_items(&setup, "SELECT DISTINCT t FROM t", "[{\"t\":[1]}]");
    expect_items(
        &["INSERT INTO t DOCUMENTS ({\"_id\":1,\"a\":1}), ({\"_id\":2,\"a\":1.0})"],
        "SELECT DISTINCT a FROM t",
        "[{\"a\":1}]",
    );
}

/// Was: a grouped query named every unnamed computed column `$0` (ungrouped
/// queries name them `$1`, `$2`, ... by position), so each overwrites the
/// one before: `SELECT t[0], t[1] FROM t ORDER BY count(*)` returns
/// `[{"$0":2}]`, and with `GROUP BY t` `[{"$0":2,"n":1}]`.
#[test]
fn regression_grouped_query_unnamed_columns_collide() {
    let setup = ["INSERT INTO t DOCUMENTS ({\"_id\":1,\"t\":[1,2]})"];
    expect_items(&setup, "SELECT t[0], t[1] FROM t", "[{\"$1\":1,\"$2\":2}]");
    expect_items(
        &setup,
        "SELECT t[0], t[1] FROM t ORDER BY count(*)",
        "[{\"$1\":1,\"$2\":2}]",
    );
    expect_items(
        &setup,
        "SELECT t[0], t[1], COUNT(*) AS n FROM t GROUP BY t",
        "[{\"$1\":1,\"$2\":2,\"n\":1}]",
    );
}

/// Was: ids were canonical at the top level and inside objects (`{"x": 1.0}` is
/// refused after `{"x": 1}`: the same id) but not inside arrays in
/// objects: `{"x": [1]}` and `{"x": [1.0]}` are two documents whose ids
/// compare equal. A point read of `_id = :p` (p = `{"x": [1]}`) returns
/// `[{"n":1}]`, the same comparison with an object literal (a scan)
/// `[{"n":1},{"n":2}]`, and `USE IDS` finds one.
#[test]
fn regression_object_ids_with_equal_arrays_are_two_documents() {
    let mut now = 1_000_000;
    let store = new_store();
    let insert = |text: &str, now: &mut u64| run(&store, text, &Value::Null, now);
    insert("INSERT INTO t DOCUMENTS ({\"_id\":{\"x\":[1]},\"n\":1})", &mut now).expect("insert");
    let second = insert("INSERT INTO t DOCUMENTS ({\"_id\":{\"x\":[1.0]},\"n\":2})", &mut now);
    let p = obj(vec![("p", Value::parse("{\"x\": [1]}").expect("json"))]);
    let point = run(&store, "SELECT n FROM t WHERE _id = :p", &p, &mut now);
    let scan = run(&store, "SELECT n FROM t WHERE _id = {\"x\": [1]}", &p, &mut now);
    assert_eq!(point, scan, "a point read and a scan of the same comparison");
    assert!(second.is_err(), "{{\"x\":[1.0]}} is the id {{\"x\":[1]}}: {second:?}");
}

/// Was: `SELECT *` alone over no row with an aggregate in `ORDER BY` (one group,
/// no document) returns the row `null`; with any other item (`SELECT *, a`,
/// `SELECT a`) the row is `{}`.
#[test]
fn regression_star_over_no_rows_is_null() {
    expect_items(&[], "SELECT *, a FROM t ORDER BY count(*)", "[{}]");
    expect_items(&[], "SELECT * FROM t ORDER BY count(*)", "[{}]");
}

/// Was: `dql::execute` checked a statement's parameters before it ran but not
/// its functions (only `Prepared::get` does), so a statement the docs say
/// is an error "whatever the data" runs on an empty collection:
/// `SELECT lower() AS x FROM t` gives `Ok([])` there and an arity error
/// once a document exists.
#[test]
fn regression_execute_skips_statement_checks() {
    let store = new_store();
    let got = run_unchecked(&store, "SELECT lower() AS x FROM t", &Value::Null, &mut 1_000);
    assert!(got.is_err(), "on an empty collection: {got:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// `SELECT * FROM t WHERE _id = x` (a literal or a parameter, on either
    /// side), which the executor answers as a point read, gives what the
    /// general path gives for the same filter with `AND true` (which the
    /// point read does not take): ids in other spellings, values no id can
    /// be, deleted documents and a missing parameter included.
    #[test]
    fn point_reads_match_the_general_path(
        docs in docs(Mix::Small),
        id in id_constant(),
        deleted in prop::collection::vec(prop::bool::weighted(0.3), 10),
        form in 0u8..4,
    ) {
        let mut now = 0;
        let store = store_with(&docs.written, &mut now);
        for (doc, _) in docs.stored.iter().zip(&deleted).filter(|(_, &gone)| gone) {
            let id = doc.as_object().and_then(|o| o.get("_id")).cloned().unwrap_or(Value::Null);
            run(&store, "DELETE FROM t WHERE _id = :id", &obj(vec![("id", id)]), &mut now).expect("delete");
        }
        let lit = render_value(&id);
        let with_id = obj(vec![("id", id)]);
        let (filter, params) = match form {
            0 => ("_id = :id".to_string(), with_id),
            1 => (":id = _id".to_string(), with_id),
            2 => (format!("_id = {lit}"), obj(vec![])),
            _ => ("_id = :id".to_string(), obj(vec![])), // missing
        };
        let fast = run(&store, &format!("SELECT * FROM t WHERE {filter}"), &params, &mut now);
        let general = run(&store, &format!("SELECT * FROM t WHERE {filter} AND true"), &params, &mut now);
        prop_assert_eq!(fast, general);
    }
}

//! The DQL expression evaluator, its function library and the aggregate
//! accumulators.
//!
//! Evaluation is a pure function of an expression, a row and the statement
//! parameters (no clock, no randomness, no I/O), so the same query gives the
//! same answer on every peer. It never panics: a value, pattern or date that
//! makes no sense gives null, and a statement that is itself wrong gives a
//! typed [`EvalError`] naming the function or parameter and its position.
//!
//! # Missing and null
//!
//! A result is `Option<Value>`: `None` is MISSING (a field that does not
//! exist), distinct from `Some(Value::Null)`. Documents of one collection
//! rarely share a shape, so "the field is absent" and "the field is null" are
//! different facts that `IS MISSING` and `IS NULL` must tell apart. The
//! general rule (after N1QL): an operator or function given a missing operand
//! returns missing; given null or an operand of the wrong type, returns null.
//! The exceptions are listed below.
//!
//! # Rows and parameters
//!
//! - `Expr::Field(path)` reads the current [`Row`]. A row is a trait so the
//!   executor can supply one document or a joined row. For a document
//!   ([`Row`] for [`Value`]) keys walk into objects, indexes into arrays (a
//!   negative index counts from the end); anything else is missing.
//! - `ANY var IN arr SATISFIES cond END` binds `var`: inside `cond`, a path
//!   whose first key is `var` reads from the element, shadowing the row.
//!   It is missing if `arr` is missing, null if `arr` is not an array, else
//!   true if `cond` is true for some element, else false.
//! - `:name` reads [`Params`]; an absent parameter is
//!   [`EvalError::MissingParam`].
//!
//! # Operators
//!
//! - Comparison `= != <> < <= > >=`: missing if either side is missing; else
//!   null if either is null; else a boolean from [`Value::total_cmp`] (one
//!   total order across types: null < bool < number < string < array <
//!   object; integers and floats compare numerically).
//! - `AND`: false if either side is false; else missing if either is missing;
//!   else null if either is null or not a boolean; else true. `OR`: true if
//!   either is true; else missing if either is missing; else null if either is
//!   null or not a boolean; else false. `NOT`: missing stays missing,
//!   null and non-booleans give null. Both sides are always evaluated, so a
//!   missing parameter is reported whatever the data. `WHERE` keeps a row
//!   only when the condition is exactly true ([`truthy`]).
//! - Arithmetic `+ - * / %` and unary `-`: missing if an operand is missing;
//!   null if one is null or not a number. Integers stay exact (checked
//!   operations; on overflow the result is a float); `/` of two integers is
//!   an integer when exact (`6 / 3 = 2`), else a float (`7 / 2 = 3.5`);
//!   division or remainder by zero, and a float result beyond the f64 range,
//!   give null. `-0.0` results are normalized to `0.0`.
//! - `||` concatenates strings: missing if either side is missing, null if
//!   either is not a string.
//! - `x IN (a, b)`: missing if `x` is missing; null if `x` is null; true if
//!   some candidate equals `x` by `total_cmp`, else false (missing candidates
//!   are skipped). `x IN expr`: `expr` must yield an array, else null.
//!   `NOT IN` is the three-valued negation.
//! - `x BETWEEN lo AND hi` is `lo <= x AND x <= hi` under the rules above.
//! - `LIKE` / `ILIKE`: `%` matches any sequence, `_` one character, `\`
//!   escapes the next character (a trailing `\` is literal). `ILIKE` compares
//!   characters by their Unicode lowercase forms. Missing if either side is
//!   missing, null if either is not a string. Linear-space two-pointer
//!   matching: no regex, no exponential backtracking.
//! - `IS [NOT] NULL` is true only for null, `IS [NOT] MISSING` only for
//!   missing; never missing themselves.
//! - Object literals drop a field whose value is missing; array literals
//!   turn a missing element into null.
//!
//! # Functions and aggregates
//!
//! Scalar functions (see `docs/dql-functions.md`, and [`function_names`])
//! check their argument count first ([`EvalError::Arity`]); then, given a
//! missing argument they return missing, given null or a wrong type null —
//! except the type tests (`type`, `is_*`) and the coalesce family
//! (`coalesce`, `if_missing`, `if_null`), which exist to look at missing
//! and null. Statement mistakes (an unknown unit, an invalid regular
//! expression, text that is not JSON) are [`EvalError::BadArgument`].
//!
//! Aggregates (`count`, `sum`, `avg`, `min`, `max`, `COUNT(*)`) are not
//! evaluated here: the executor groups rows and feeds each group's values to
//! an [`Accumulator`]; met by [`eval`], they are
//! [`EvalError::AggregateOutsideGroup`].
//!
//! Recursion follows the expression tree (its depth is bounded by the parser,
//! and again here by [`MAX_EVAL_DEPTH`]); pattern matching and regular
//! expressions are iterative.

mod check;
mod date;
mod func;
mod regex;

pub use func::function_names;

pub use check::{check, check_params};

use super::ast::{BinaryOp, Expr, InList, IsTest, Path, Pos, Segment, UnaryOp};
use crate::value::Value;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Deepest expression nesting [`eval`] accepts. Above the parser's own limit
/// (128) so that expressions the executor rewrites still fit, low enough that
/// a hand-built tree cannot overflow the stack.
pub const MAX_EVAL_DEPTH: usize = 256;

/// A result: `None` is missing.
type Eval = Result<Option<Value>, EvalError>;

// ---- rows ----

/// What `Expr::Field` reads: one document, or a joined row.
pub trait Row {
    /// The value at `path`, or `None` when there is none (missing).
    fn field(&self, path: &Path) -> Option<Value>;
}

impl Row for Value {
    fn field(&self, path: &Path) -> Option<Value> {
        lookup(self, &path.segments).cloned()
    }
}

/// Walks `segments` into `value`: keys into objects, indexes into arrays
/// (negative from the end). `None` when a step does not exist.
pub fn lookup<'v>(value: &'v Value, segments: &[Segment]) -> Option<&'v Value> {
    let mut cur = value;
    for s in segments {
        cur = match (s, cur) {
            (Segment::Key(k), Value::Object(o)) => o.get(k)?,
            (Segment::Index(i), Value::Array(a)) => a.get(array_index(*i, a.len())?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn array_index(i: i64, len: usize) -> Option<usize> {
    if i >= 0 {
        usize::try_from(i).ok()
    } else {
        len.checked_sub(usize::try_from(i.unsigned_abs()).ok()?)
    }
}

/// The row inside `ANY var IN arr SATISFIES ...`: `var` and the paths below
/// it read the element; every other path reads the enclosing row.
struct Bound<'a> {
    var: &'a str,
    element: &'a Value,
    outer: &'a dyn Row,
}

impl Row for Bound<'_> {
    fn field(&self, path: &Path) -> Option<Value> {
        match path.segments.split_first() {
            Some((Segment::Key(k), rest)) if k == self.var => lookup(self.element, rest).cloned(),
            _ => self.outer.field(path),
        }
    }
}

// ---- parameters ----

/// The named parameters of a statement (`:name`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Params(pub BTreeMap<String, Value>);

impl Params {
    /// No parameters.
    pub fn new() -> Params {
        Params::default()
    }

    /// The parameters of a JSON object; `None` if `v` is not an object.
    pub fn from_value(v: Value) -> Option<Params> {
        match v {
            Value::Object(o) => Some(Params(o)),
            _ => None,
        }
    }

    /// Adds or replaces a parameter.
    pub fn insert(&mut self, name: impl Into<String>, value: Value) -> &mut Params {
        self.0.insert(name.into(), value);
        self
    }

    /// A parameter's value.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    /// Bytes equal exactly when the parameter sets are equal (keys are
    /// sorted), so a statement and its parameters can key a cache.
    pub fn fingerprint(&self) -> Vec<u8> {
        Value::Object(self.0.clone()).to_string().into_bytes()
    }
}

impl From<BTreeMap<String, Value>> for Params {
    fn from(map: BTreeMap<String, Value>) -> Params {
        Params(map)
    }
}

impl FromIterator<(String, Value)> for Params {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Params {
        Params(iter.into_iter().collect())
    }
}

// ---- errors ----

/// Why an expression could not be evaluated. Each names what is wrong and,
/// where the syntax tree knows it, the line and column in the statement.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum EvalError {
    /// `:name` was used but not given.
    MissingParam {
        /// Parameter name, without the colon.
        name: String,
        /// Where it was written.
        pos: Pos,
    },
    /// No function has this name.
    UnknownFunction {
        /// The name as written (lower case).
        name: String,
        /// Where it was called.
        pos: Pos,
    },
    /// A function was called with the wrong number of arguments.
    Arity {
        /// Function name.
        name: String,
        /// What it takes, in words ("1", "2 or 3", "at least 1").
        expected: String,
        /// How many it was given.
        found: usize,
        /// Where it was called.
        pos: Pos,
    },
    /// An argument no row can make sense of: an unknown date unit, an invalid
    /// regular expression, text that is not JSON.
    BadArgument {
        /// Function name.
        name: String,
        /// What is wrong.
        reason: String,
        /// Where it was called.
        pos: Pos,
    },
    /// An aggregate met outside a grouped context (`WHERE`, a mutation...).
    AggregateOutsideGroup {
        /// Aggregate name.
        name: String,
        /// Where it was called (the default position for `COUNT(*)`).
        pos: Pos,
    },
    /// The expression is nested deeper than [`MAX_EVAL_DEPTH`].
    TooDeep {
        /// The limit.
        limit: usize,
    },
}

/// " at line L, column C", or nothing for an unknown position.
struct At(Pos);

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.line == 0 {
            return Ok(());
        }
        write!(f, " at line {}, column {}", self.0.line, self.0.column)
    }
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EvalError::MissingParam { name, pos } => write!(f, "missing parameter :{name}{}", At(*pos)),
            EvalError::UnknownFunction { name, pos } => write!(f, "unknown function {name}(){}", At(*pos)),
            EvalError::Arity {
                name,
                expected,
                found,
                pos,
            } => {
                let s = if expected.ends_with(" 1") || expected == "1" {
                    ""
                } else {
                    "s"
                };
                write!(f, "{name}(){} takes {expected} argument{s}, got {found}", At(*pos))
            }
            EvalError::BadArgument { name, reason, pos } => write!(f, "{name}(){}: {reason}", At(*pos)),
            EvalError::AggregateOutsideGroup { name, pos } => write!(
                f,
                "aggregate {name}(){} is not allowed here: aggregates belong in the select list, HAVING or ORDER BY",
                At(*pos)
            ),
            EvalError::TooDeep { limit } => write!(f, "expression nested deeper than {limit} levels"),
        }
    }
}

impl std::error::Error for EvalError {}

// ---- evaluation ----

/// Evaluates `expr` over `row`; `Ok(None)` is missing.
pub fn eval(expr: &Expr, row: &dyn Row, params: &Params) -> Result<Option<Value>, EvalError> {
    eval_at(expr, row, params, 0)
}

/// Whether a condition holds: only `true` does (not null, not missing).
pub fn truthy(v: &Option<Value>) -> bool {
    matches!(v, Some(Value::Bool(true)))
}

fn eval_at(expr: &Expr, row: &dyn Row, params: &Params, depth: usize) -> Eval {
    if depth > MAX_EVAL_DEPTH {
        return Err(EvalError::TooDeep { limit: MAX_EVAL_DEPTH });
    }
    let sub = |e: &Expr| eval_at(e, row, params, depth + 1);
    match expr {
        Expr::Literal(v) => Ok(Some(v.clone())),
        Expr::Param { name, pos } => match params.get(name) {
            Some(v) => Ok(Some(v.clone())),
            None => Err(EvalError::MissingParam {
                name: name.clone(),
                pos: *pos,
            }),
        },
        Expr::Field(path) => Ok(row.field(path)),
        Expr::Object(fields) => {
            let mut out = BTreeMap::new();
            for (k, e) in fields {
                if let Some(v) = sub(e)? {
                    out.insert(k.clone(), v);
                }
            }
            Ok(Some(Value::Object(out)))
        }
        Expr::Array(items) => {
            let out = items.iter().map(|e| Ok(sub(e)?.unwrap_or(Value::Null)));
            Ok(Some(Value::Array(out.collect::<Result<_, EvalError>>()?)))
        }
        Expr::Unary(UnaryOp::Not, e) => Ok(not3(sub(e)?)),
        Expr::Unary(UnaryOp::Neg, e) => Ok(negate(sub(e)?)),
        // false AND x and true OR x do not depend on x: skip reading it.
        // (Statement checks and the parameter check before a run leave x no
        // error that depends on the row.)
        Expr::Binary(BinaryOp::And, l, r) => match sub(l)? {
            f if is_false(&f) => Ok(f),
            a => Ok(and3(a, sub(r)?)),
        },
        Expr::Binary(BinaryOp::Or, l, r) => match sub(l)? {
            t if truthy(&t) => Ok(Some(Value::Bool(true))),
            a => Ok(or3(a, sub(r)?)),
        },
        Expr::Binary(op, l, r) => match (comparison(*op), constant(r, params), constant(l, params)) {
            (Some(test), Some(c), _) => Ok(compare_refs(sub(l)?.as_ref(), Some(c), test)),
            (Some(test), None, Some(c)) => Ok(compare_refs(Some(c), sub(r)?.as_ref(), test)),
            _ => Ok(binary(*op, sub(l)?, sub(r)?)),
        },
        Expr::In { expr, list, negated } => {
            let x = sub(expr)?;
            let found = match list {
                InList::List(items) => {
                    let candidates = items.iter().map(&sub).collect::<Result<Vec<_>, _>>()?;
                    member(x, candidates.iter().flatten())
                }
                InList::Array(e) => match sub(e)? {
                    Some(Value::Array(a)) => member(x, a.iter()),
                    _ => x.map(|_| Value::Null),
                },
            };
            Ok(negate_if(*negated, found))
        }
        Expr::Between {
            expr,
            low,
            high,
            negated,
        } => {
            let (x, lo, hi) = (sub(expr)?, sub(low)?, sub(high)?);
            let within = and3(compare(lo, x.clone(), Ordering::is_le), compare(x, hi, Ordering::is_le));
            Ok(negate_if(*negated, within))
        }
        Expr::Like {
            expr,
            pattern,
            case_insensitive,
            negated,
        } => Ok(negate_if(*negated, like(sub(expr)?, sub(pattern)?, *case_insensitive))),
        Expr::Is { expr, test, negated } => {
            let v = sub(expr)?;
            let hit = match test {
                IsTest::Null => v == Some(Value::Null),
                IsTest::Missing => v.is_none(),
            };
            Ok(Some(Value::Bool(hit != *negated)))
        }
        Expr::Any { var, array, cond } => any(var, sub(array)?, cond, row, params, depth),
        Expr::Call {
            name,
            args,
            distinct,
            pos,
        } => call(name, args, *distinct, *pos, row, params, depth),
        Expr::CountStar => Err(EvalError::AggregateOutsideGroup {
            name: "count".into(),
            pos: Pos::default(),
        }),
    }
}

fn any(var: &str, array: Option<Value>, cond: &Expr, row: &dyn Row, params: &Params, depth: usize) -> Eval {
    let items = match array {
        None => return Ok(None),
        Some(Value::Array(a)) => a,
        Some(_) => return Ok(Some(Value::Null)),
    };
    for element in &items {
        let bound = Bound {
            var,
            element,
            outer: row,
        };
        if truthy(&eval_at(cond, &bound, params, depth + 1)?) {
            return Ok(Some(Value::Bool(true)));
        }
    }
    Ok(Some(Value::Bool(false)))
}

fn call(name: &str, args: &[Expr], distinct: bool, pos: Pos, row: &dyn Row, params: &Params, depth: usize) -> Eval {
    if is_aggregate(name) {
        return Err(EvalError::AggregateOutsideGroup { name: name.into(), pos });
    }
    let site = func::Site { name, pos };
    let f = func::lookup(name).ok_or_else(|| EvalError::UnknownFunction { name: name.into(), pos })?;
    f.check_arity(args.len(), &site)?;
    if distinct {
        return Err(site.bad("DISTINCT applies only to aggregates"));
    }
    let values = args.iter().map(|a| eval_at(a, row, params, depth + 1));
    f.apply(values.collect::<Result<_, _>>()?, &site)
}

// ---- operators ----

fn binary(op: BinaryOp, l: Option<Value>, r: Option<Value>) -> Option<Value> {
    match op {
        BinaryOp::And => and3(l, r),
        BinaryOp::Or => or3(l, r),
        BinaryOp::Eq => compare(l, r, Ordering::is_eq),
        BinaryOp::Ne => compare(l, r, Ordering::is_ne),
        BinaryOp::Lt => compare(l, r, Ordering::is_lt),
        BinaryOp::Le => compare(l, r, Ordering::is_le),
        BinaryOp::Gt => compare(l, r, Ordering::is_gt),
        BinaryOp::Ge => compare(l, r, Ordering::is_ge),
        BinaryOp::Add => arith(Arith::Add, l, r),
        BinaryOp::Sub => arith(Arith::Sub, l, r),
        BinaryOp::Mul => arith(Arith::Mul, l, r),
        BinaryOp::Div => arith(Arith::Div, l, r),
        BinaryOp::Rem => arith(Arith::Rem, l, r),
        BinaryOp::Concat => match (l?, r?) {
            (Value::String(a), Value::String(b)) => Some(Value::String(a + &b)),
            _ => Some(Value::Null),
        },
    }
}

fn compare(l: Option<Value>, r: Option<Value>, test: fn(Ordering) -> bool) -> Option<Value> {
    compare_refs(l.as_ref(), r.as_ref(), test)
}

fn compare_refs(l: Option<&Value>, r: Option<&Value>, test: fn(Ordering) -> bool) -> Option<Value> {
    let (l, r) = (l?, r?);
    if *l == Value::Null || *r == Value::Null {
        return Some(Value::Null);
    }
    Some(Value::Bool(test(l.total_cmp(r))))
}

/// The test of a comparison operator.
fn comparison(op: BinaryOp) -> Option<fn(Ordering) -> bool> {
    Some(match op {
        BinaryOp::Eq => Ordering::is_eq,
        BinaryOp::Ne => Ordering::is_ne,
        BinaryOp::Lt => Ordering::is_lt,
        BinaryOp::Le => Ordering::is_le,
        BinaryOp::Gt => Ordering::is_gt,
        BinaryOp::Ge => Ordering::is_ge,
        _ => return None,
    })
}

/// A constant operand (literal or parameter) by reference: comparing a
/// field with it, the filter's commonest shape, then copies nothing.
fn constant<'e>(e: &'e Expr, params: &'e Params) -> Option<&'e Value> {
    match e {
        Expr::Literal(v) => Some(v),
        Expr::Param { name, .. } => params.get(name),
        _ => None,
    }
}

fn is_false(v: &Option<Value>) -> bool {
    matches!(v, Some(Value::Bool(false)))
}

fn and3(l: Option<Value>, r: Option<Value>) -> Option<Value> {
    if is_false(&l) || is_false(&r) {
        return Some(Value::Bool(false));
    }
    if l.is_none() || r.is_none() {
        return None;
    }
    Some(if truthy(&l) && truthy(&r) {
        Value::Bool(true)
    } else {
        Value::Null
    })
}

fn or3(l: Option<Value>, r: Option<Value>) -> Option<Value> {
    if truthy(&l) || truthy(&r) {
        return Some(Value::Bool(true));
    }
    if l.is_none() || r.is_none() {
        return None;
    }
    Some(if is_false(&l) && is_false(&r) {
        Value::Bool(false)
    } else {
        Value::Null
    })
}

fn not3(v: Option<Value>) -> Option<Value> {
    Some(match v? {
        Value::Bool(b) => Value::Bool(!b),
        _ => Value::Null,
    })
}

fn negate_if(negated: bool, v: Option<Value>) -> Option<Value> {
    if negated {
        not3(v)
    } else {
        v
    }
}

fn member<'a>(x: Option<Value>, mut candidates: impl Iterator<Item = &'a Value>) -> Option<Value> {
    let x = x?;
    if x == Value::Null {
        return Some(Value::Null);
    }
    Some(Value::Bool(candidates.any(|c| x.total_cmp(c).is_eq())))
}

// ---- numbers ----

/// A JSON number, integer or float.
#[derive(Clone, Copy, Debug)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn of(v: &Value) -> Option<Num> {
        match v {
            Value::Int(i) => Some(Num::Int(*i)),
            Value::Float(f) => Some(Num::Float(*f)),
            _ => None,
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    fn value(self) -> Value {
        match self {
            Num::Int(i) => Value::Int(i),
            Num::Float(f) => float_value(f),
        }
    }
}

/// A float result as a value: null when not finite (JSON has no such
/// number), and `-0.0` as `0.0` (they differ under `total_cmp`).
fn float_value(f: f64) -> Value {
    if !f.is_finite() {
        Value::Null
    } else if f == 0.0 {
        Value::Float(0.0)
    } else {
        Value::Float(f)
    }
}

/// An integral float as an integer when it fits, so `ceil(1.5)` is `2`.
fn integral(f: f64) -> Value {
    // 2^63 is exact in f64; every i64 lies in [-2^63, 2^63).
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if (-TWO_63..TWO_63).contains(&f) {
        Value::Int(f as i64)
    } else {
        float_value(f)
    }
}

/// An integer argument: an integer, or a float with no fractional part.
fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::Float(f) if f.fract() == 0.0 => match integral(*f) {
            Value::Int(i) => Some(i),
            _ => None,
        },
        _ => None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

fn arith(op: Arith, l: Option<Value>, r: Option<Value>) -> Option<Value> {
    let (l, r) = (l?, r?);
    Some(match (Num::of(&l), Num::of(&r)) {
        (Some(Num::Int(a)), Some(Num::Int(b))) => int_arith(op, a, b),
        (Some(a), Some(b)) => float_arith(op, a.as_f64(), b.as_f64()),
        _ => Value::Null,
    })
}

fn int_arith(op: Arith, a: i64, b: i64) -> Value {
    if b == 0 && matches!(op, Arith::Div | Arith::Rem) {
        return Value::Null;
    }
    let exact = match op {
        Arith::Add => a.checked_add(b),
        Arith::Sub => a.checked_sub(b),
        Arith::Mul => a.checked_mul(b),
        // Not exact (or i64::MIN / -1): the float quotient.
        Arith::Div => a.checked_rem(b).filter(|r| *r == 0).and_then(|_| a.checked_div(b)),
        // Only i64::MIN % -1 overflows, and its remainder is 0.
        Arith::Rem => Some(a.checked_rem(b).unwrap_or(0)),
    };
    exact.map_or_else(|| float_arith(op, a as f64, b as f64), Value::Int)
}

fn float_arith(op: Arith, a: f64, b: f64) -> Value {
    let r = match op {
        Arith::Add => a + b,
        Arith::Sub => a - b,
        Arith::Mul => a * b,
        Arith::Div | Arith::Rem if b == 0.0 => return Value::Null,
        Arith::Div => a / b,
        Arith::Rem => a % b,
    };
    float_value(r)
}

fn negate(v: Option<Value>) -> Option<Value> {
    Some(match v? {
        Value::Int(i) => i.checked_neg().map_or(Value::Float(-(i as f64)), Value::Int),
        Value::Float(f) => float_value(-f),
        _ => Value::Null,
    })
}

// ---- LIKE ----

/// One element of a `LIKE` pattern.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Wild {
    /// `%`
    Any,
    /// `_`
    One,
    /// A literal character.
    Lit(char),
}

fn like(x: Option<Value>, pattern: Option<Value>, case_insensitive: bool) -> Option<Value> {
    Some(match (x?, pattern?) {
        (Value::String(s), Value::String(p)) => Value::Bool(like_match(&s, &p, case_insensitive)),
        _ => Value::Null,
    })
}

fn like_tokens(pattern: &str) -> Vec<Wild> {
    let mut out = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        let w = match c {
            '%' => Wild::Any,
            '_' => Wild::One,
            '\\' => Wild::Lit(chars.next().unwrap_or('\\')),
            c => Wild::Lit(c),
        };
        // `%%` is `%`: fewer stars, less to retry.
        if !(w == Wild::Any && out.last() == Some(&Wild::Any)) {
            out.push(w);
        }
    }
    out
}

fn same_char(a: char, b: char, case_insensitive: bool) -> bool {
    a == b || (case_insensitive && a.to_lowercase().eq(b.to_lowercase()))
}

/// Wildcard matching with two pointers: on a mismatch, retry from the last
/// `%` one character further. Only the last `%` is ever retried (an earlier
/// one could only absorb what the later one can), so the cost is at most
/// text length times pattern length, with no recursion.
fn like_match(text: &str, pattern: &str, case_insensitive: bool) -> bool {
    let text: Vec<char> = text.chars().collect();
    let pat = like_tokens(pattern);
    let (mut t, mut p) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while let Some(&c) = text.get(t) {
        match pat.get(p) {
            Some(Wild::Any) => {
                star = Some((p + 1, t));
                p += 1;
                continue;
            }
            Some(Wild::One) => {
                (t, p) = (t + 1, p + 1);
                continue;
            }
            Some(Wild::Lit(l)) if same_char(*l, c, case_insensitive) => {
                (t, p) = (t + 1, p + 1);
                continue;
            }
            _ => {}
        }
        let Some((after_star, from)) = star else { return false };
        star = Some((after_star, from + 1));
        (t, p) = (from + 1, after_star);
    }
    pat.get(p..).is_some_and(|rest| rest.iter().all(|w| *w == Wild::Any))
}

// ---- aggregates ----

/// Whether `name` is an aggregate function.
pub fn is_aggregate(name: &str) -> bool {
    matches!(name, "count" | "sum" | "avg" | "min" | "max")
}

/// Whether an aggregate call (or `COUNT(*)`) occurs anywhere in `expr`.
pub fn contains_aggregate(expr: &Expr) -> bool {
    let any = |es: &[Expr]| es.iter().any(contains_aggregate);
    match expr {
        Expr::CountStar => true,
        Expr::Call { name, args, .. } => is_aggregate(name) || any(args),
        Expr::Literal(_) | Expr::Param { .. } | Expr::Field(_) => false,
        Expr::Object(fields) => fields.iter().any(|(_, e)| contains_aggregate(e)),
        Expr::Array(items) => any(items),
        Expr::Unary(_, e) | Expr::Is { expr: e, .. } => contains_aggregate(e),
        Expr::Binary(_, l, r)
        | Expr::Like {
            expr: l, pattern: r, ..
        }
        | Expr::Any { array: l, cond: r, .. } => contains_aggregate(l) || contains_aggregate(r),
        Expr::In { expr, list, .. } => {
            contains_aggregate(expr)
                || match list {
                    InList::List(items) => any(items),
                    InList::Array(e) => contains_aggregate(e),
                }
        }
        Expr::Between { expr, low, high, .. } => {
            contains_aggregate(expr) || contains_aggregate(low) || contains_aggregate(high)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AggKind {
    CountStar,
    Count,
    Sum,
    Avg,
    Min,
    Max,
}

/// A value ordered by [`Value::total_cmp`], for `DISTINCT` sets.
#[derive(Clone, Debug)]
struct Ordered(Value);

impl PartialEq for Ordered {
    fn eq(&self, o: &Ordered) -> bool {
        self.0.total_cmp(&o.0).is_eq()
    }
}
impl Eq for Ordered {}
impl PartialOrd for Ordered {
    fn partial_cmp(&self, o: &Ordered) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Ordered {
    fn cmp(&self, o: &Ordered) -> Ordering {
        self.0.total_cmp(&o.0)
    }
}

/// The running state of one aggregate over one group.
///
/// `count(x)` counts values that are neither null nor missing; `count*`
/// (`COUNT(*)`) counts every pushed row; `sum` and `avg` take numbers only
/// (others are ignored; integers stay exact, overflowing to float); `min`
/// and `max` order by [`Value::total_cmp`], ignoring null and missing. Over
/// no values `sum`, `avg`, `min` and `max` are null and counts are 0. With
/// `distinct`, values equal under `total_cmp` count once.
#[derive(Clone, Debug)]
pub struct Accumulator {
    kind: AggKind,
    seen: Option<BTreeSet<Ordered>>,
    count: i64,
    sum: Option<Num>,
    best: Option<Value>,
}

impl Accumulator {
    /// An empty accumulator for aggregate `name` (`"count*"` for
    /// `COUNT(*)`); `None` if `name` is not an aggregate.
    pub fn new(name: &str, distinct: bool) -> Option<Accumulator> {
        let kind = match name {
            "count*" => AggKind::CountStar,
            "count" => AggKind::Count,
            "sum" => AggKind::Sum,
            "avg" => AggKind::Avg,
            "min" => AggKind::Min,
            "max" => AggKind::Max,
            _ => return None,
        };
        Some(Accumulator {
            kind,
            seen: (distinct && kind != AggKind::CountStar).then(BTreeSet::new),
            count: 0,
            sum: None,
            best: None,
        })
    }

    /// Adds one row's value (`None`: missing).
    pub fn push(&mut self, v: Option<Value>) {
        if self.kind == AggKind::CountStar {
            self.count = self.count.saturating_add(1);
            return;
        }
        let Some(v) = v.filter(|v| *v != Value::Null) else {
            return;
        };
        let num = Num::of(&v);
        if matches!(self.kind, AggKind::Sum | AggKind::Avg) && num.is_none() {
            return;
        }
        if let Some(seen) = &mut self.seen {
            if !seen.insert(Ordered(v.clone())) {
                return;
            }
        }
        self.count = self.count.saturating_add(1);
        match (self.kind, num) {
            (AggKind::Sum | AggKind::Avg, Some(n)) => self.sum = Some(add_num(self.sum, n)),
            (AggKind::Min, _) => self.keep_if(v, Ordering::is_lt),
            (AggKind::Max, _) => self.keep_if(v, Ordering::is_gt),
            _ => {}
        }
    }

    fn keep_if(&mut self, v: Value, better: fn(Ordering) -> bool) {
        if self.best.as_ref().is_none_or(|b| better(v.total_cmp(b))) {
            self.best = Some(v);
        }
    }

    /// The aggregate's value.
    pub fn finish(self) -> Option<Value> {
        Some(match self.kind {
            AggKind::CountStar | AggKind::Count => Value::Int(self.count),
            AggKind::Sum => self.sum.map_or(Value::Null, Num::value),
            AggKind::Avg => match self.sum {
                None => Value::Null,
                Some(Num::Int(s)) => int_arith(Arith::Div, s, self.count),
                Some(Num::Float(s)) => float_arith(Arith::Div, s, self.count as f64),
            },
            AggKind::Min | AggKind::Max => self.best.unwrap_or(Value::Null),
        })
    }
}

fn add_num(sum: Option<Num>, n: Num) -> Num {
    match (sum, n) {
        (None, n) => n,
        (Some(Num::Int(a)), Num::Int(b)) => a.checked_add(b).map_or(Num::Float(a as f64 + b as f64), Num::Int),
        (Some(a), b) => Num::Float(a.as_f64() + b.as_f64()),
    }
}

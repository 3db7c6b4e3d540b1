//! The scalar function library of DQL: one table of name, arity and body.
//!
//! A table rather than one big `match` keeps the arity check, the
//! unknown-function error and the list of names (for documentation and its
//! test) in one place. Most functions are "strict": the table applies the
//! usual missing/null rule before the body runs, so a body only sees
//! non-null values and answers null for a wrong type. The others see the raw
//! arguments because looking at missing and null is their job (type tests,
//! the coalesce family), or because they must reject a bad literal (unit,
//! pattern) whatever the row holds, so an error never depends on the data.

use super::regex::Regex;
use super::{date, float_value, int_of, integral, EvalError, Num};
use crate::dql::ast::Pos;
use crate::value::Value;

/// Where a function is called: for error messages.
pub(super) struct Site<'a> {
    pub(super) name: &'a str,
    pub(super) pos: Pos,
}

impl Site<'_> {
    pub(super) fn bad(&self, reason: impl Into<String>) -> EvalError {
        EvalError::BadArgument {
            name: self.name.to_string(),
            reason: reason.into(),
            pos: self.pos,
        }
    }
}

type Out = Result<Option<Value>, EvalError>;
type Strict = fn(&[Value], &Site<'_>) -> Result<Value, EvalError>;
type Raw = fn(&[Option<Value>], &Site<'_>) -> Out;

enum Body {
    /// Missing in, missing out; null in, null out; the body sees the rest.
    Strict(Strict),
    /// The body sees every argument as given.
    Raw(Raw),
}

/// One function of the library.
pub(super) struct Func {
    name: &'static str,
    min: usize,
    max: usize,
    body: Body,
}

const MANY: usize = usize::MAX;

const fn strict(name: &'static str, min: usize, max: usize, f: Strict) -> Func {
    Func {
        name,
        min,
        max,
        body: Body::Strict(f),
    }
}

const fn raw(name: &'static str, min: usize, max: usize, f: Raw) -> Func {
    Func {
        name,
        min,
        max,
        body: Body::Raw(f),
    }
}

static FUNCS: &[Func] = &[
    // strings
    strict("length", 1, 1, length),
    strict("char_length", 1, 1, length),
    strict("byte_length", 1, 1, byte_length),
    strict("concat", 1, MANY, concat),
    strict("lower", 1, 1, lower),
    strict("upper", 1, 1, upper),
    strict("contains", 2, 2, contains),
    strict("starts_with", 2, 2, starts_with),
    strict("ends_with", 2, 2, ends_with),
    strict("substr", 2, 3, substr),
    strict("trim", 1, 2, trim),
    raw("regexp_like", 2, 2, regexp_like),
    // conditionals
    raw("coalesce", 1, MANY, coalesce),
    raw("if_missing", 2, MANY, if_missing),
    raw("if_null", 2, MANY, coalesce),
    // types
    raw("type", 1, 1, type_name),
    raw("is_string", 1, 1, |a, _| is(a, |v| matches!(v, Value::String(_)))),
    raw("is_number", 1, 1, |a, _| {
        is(a, |v| matches!(v, Value::Int(_) | Value::Float(_)))
    }),
    raw("is_boolean", 1, 1, |a, _| is(a, |v| matches!(v, Value::Bool(_)))),
    raw("is_array", 1, 1, |a, _| is(a, |v| matches!(v, Value::Array(_)))),
    raw("is_object", 1, 1, |a, _| is(a, |v| matches!(v, Value::Object(_)))),
    raw("is_null", 1, 1, |a, _| is(a, |v| *v == Value::Null)),
    raw("is_missing", 1, 1, |a, _| Ok(Some(Value::Bool(matches!(a, [None]))))),
    // arrays and objects
    strict("array_length", 1, 1, array_length),
    strict("array_contains", 2, 2, array_contains),
    strict("object_length", 1, 1, object_length),
    strict("object_keys", 1, 1, object_keys),
    // math
    strict("abs", 1, 1, abs),
    strict("ceil", 1, 1, |a, _| Ok(rounded(a, f64::ceil))),
    strict("floor", 1, 1, |a, _| Ok(rounded(a, f64::floor))),
    strict("round", 1, 2, round),
    // dates
    strict("date_cast", 1, 1, date_cast),
    raw("date_add", 3, 3, date_add),
    raw("date_diff", 3, 3, date_diff),
    raw("date_part", 2, 2, date_part),
    // JSON
    strict("deserialize_json", 1, 1, deserialize_json),
];

/// Every scalar function name, in the library's order.
pub fn function_names() -> Vec<&'static str> {
    FUNCS.iter().map(|f| f.name).collect()
}

pub(super) fn lookup(name: &str) -> Option<&'static Func> {
    FUNCS.iter().find(|f| f.name == name)
}

impl Func {
    pub(super) fn check_arity(&self, found: usize, site: &Site<'_>) -> Result<(), EvalError> {
        if (self.min..=self.max).contains(&found) {
            return Ok(());
        }
        let expected = match (self.min, self.max) {
            (min, MANY) => format!("at least {min}"),
            (min, max) if min == max => min.to_string(),
            (min, max) if max == min + 1 => format!("{min} or {max}"),
            (min, max) => format!("{min} to {max}"),
        };
        Err(EvalError::Arity {
            name: site.name.to_string(),
            expected,
            found,
            pos: site.pos,
        })
    }

    pub(super) fn apply(&self, args: Vec<Option<Value>>, site: &Site<'_>) -> Out {
        match self.body {
            Body::Raw(f) => f(&args, site),
            Body::Strict(f) => {
                if let Some(out) = usual(&args) {
                    return Ok(out);
                }
                let values: Vec<Value> = args.into_iter().flatten().collect();
                f(&values, site).map(Some)
            }
        }
    }
}

/// The usual rule: `Some(missing)` if an argument is missing, `Some(null)` if
/// one is null, `None` when the function body should run.
fn usual(args: &[Option<Value>]) -> Option<Option<Value>> {
    if args.iter().any(Option::is_none) {
        return Some(None);
    }
    if args.iter().any(|a| a.as_ref() == Some(&Value::Null)) {
        return Some(Some(Value::Null));
    }
    None
}

fn count(n: usize) -> Value {
    i64::try_from(n).map_or(Value::Null, Value::Int)
}

fn string(s: impl Into<String>) -> Value {
    Value::String(s.into())
}

// ---- strings ----

fn length(a: &[Value], _: &Site<'_>) -> Result<Value, EvalError> {
    Ok(match a {
        [Value::String(s)] => count(s.chars().count()),
        _ => Value::Null,
    })
}

fn byte_length(a: &[Value], _: &Site<'_>) -> Result<Value, EvalError> {
    Ok(match a {
        [Value::String(s)] => count(s.len()),
        _ => Value::Null,
    })
}

fn concat(a: &[Value], _: &Site<'_>) -> Result<Value, EvalError> {
    let mut out = String::new();
    for v in a {
        match v {
            Value::String(s) => out.push_str(s),
            _ => return Ok(Value::Null),
        }
    }
    Ok(Value::String(out))
}

fn lower(a: &[Value], _: &Site<'_>) -> Result<Value, EvalError> {
    Ok(match a {
        [Value::String(s)] => string(s.to_lowercase()),
        _ => Value::Null,
    })
}

fn upper(a: &[Value], _: &Site<'_>) -> Result<Value, EvalError> {
    Ok(match a {
        [Value::String(s)] => string(s.to_uppercase()),
        _ => Value::Null,
    })
}

fn contains(a: &[Value], _: &Site<'_>) -> Result<Value, EvalError> {
    Ok(match a {
        [Value::String(s), Value::String(sub)] => Value::Bool(s.contains(sub.as_str())),
        _ => Value::Null,
    })
}

fn starts_with(a: &[Value], _: &Site<'_>) -> Result<Value, EvalError> {
    Ok(match a {
        [Value::String(s), Value::String(p)] => Value::Bool(s.starts_with(p.as_str())),
        _ => Value::Null,
    })
}

fn ends_with(a: &[Value], _: &Site<'_>) -> Result<Value, EvalError> {
    Ok(match a {
        [Value::String(s), Value::String(p)] => Value::Bool(s.ends_with(p.as_str())),
        _ => Value::Null,
    })
}

/// `substr(s, start [, len])`: characters from `start` (0-based; negative
/// counts from the end, clamped to the beginning; past the end gives "").
/// A negative length or a non-integer index gives null.
fn substr(a: &[Value], _: &Site<'_>) -> Result<Value, EvalError> {
    let (s, start, len) = match a {
        [Value::String(s), start] => (s, int_of(start), None),
        [Value::String(s), start, len] => match int_of(len) {
            Some(l) if l >= 0 => (s, int_of(start), Some(l)),
            _ => return Ok(Value::Null),
        },
        _ => return Ok(Value::Null),
    };
    let Some(start) = start else { return Ok(Value::Null) };
    let n = i64::try_from(s.chars().count()).unwrap_or(i64::MAX);
    let from = if start < 0 {
        n.saturating_add(start).max(0)
    } else {
        start.min(n)
    };
    let take = len.unwrap_or(n).min(n - from);
    let (from, take) = (usize::try_from(from).unwrap_or(0), usize::try_from(take).unwrap_or(0));
    Ok(string(s.chars().skip(from).take(take).collect::<String>()))
}

/// `trim(s [, chars])`: whitespace, or any of `chars`, off both ends.
fn trim(a: &[Value], _: &Site<'_>) -> Result<Value, EvalError> {
    Ok(match a {
        [Value::String(s)] => string(s.trim()),
        [Value::String(s), Value::String(chars)] => string(s.trim_matches(|c| chars.contains(c))),
        _ => Value::Null,
    })
}

/// The pattern is compiled before the missing/null rule: an invalid pattern
/// is an error on every row, not only on rows that have the field.
fn regexp_like(a: &[Option<Value>], site: &Site<'_>) -> Out {
    let re = match a {
        [_, Some(Value::String(p))] => Some(Regex::new(p).map_err(|e| site.bad(e))?),
        _ => None,
    };
    if let Some(out) = usual(a) {
        return Ok(out);
    }
    Ok(Some(match (a, re) {
        ([Some(Value::String(s)), _], Some(re)) => Value::Bool(re.is_match(s)),
        _ => Value::Null,
    }))
}

// ---- conditionals and types ----

/// The first argument that is neither missing nor null, else null.
fn coalesce(a: &[Option<Value>], _: &Site<'_>) -> Out {
    let first = a.iter().flatten().find(|v| **v != Value::Null);
    Ok(Some(first.cloned().unwrap_or(Value::Null)))
}

/// The first argument that is not missing, else null.
fn if_missing(a: &[Option<Value>], _: &Site<'_>) -> Out {
    Ok(Some(a.iter().flatten().next().cloned().unwrap_or(Value::Null)))
}

fn type_name(a: &[Option<Value>], _: &Site<'_>) -> Out {
    let name = match a {
        [Some(Value::Null)] => "null",
        [Some(Value::Bool(_))] => "boolean",
        [Some(Value::Int(_) | Value::Float(_))] => "number",
        [Some(Value::String(_))] => "string",
        [Some(Value::Array(_))] => "array",
        [Some(Value::Object(_))] => "object",
        _ => "missing",
    };
    Ok(Some(string(name)))
}

/// A type test: false for missing, never missing itself.
fn is(a: &[Option<Value>], test: fn(&Value) -> bool) -> Out {
    Ok(Some(Value::Bool(matches!(a, [Some(v)] if test(v)))))
}

// ---- arrays and objects ----

fn array_length(a: &[Value], _: &Site<'_>) -> Result<Value, EvalError> {
    Ok(match a {
        [Value::Array(x)] => count(x.len()),
        _ => Value::Null,
    })
}

fn array_contains(a: &[Value], _: &Site<'_>) -> Result<Value, EvalError> {
    Ok(match a {
        [Value::Array(x), v] => Value::Bool(x.iter().any(|e| e.total_cmp(v).is_eq())),
        _ => Value::Null,
    })
}

fn object_length(a: &[Value], _: &Site<'_>) -> Result<Value, EvalError> {
    Ok(match a {
        [Value::Object(o)] => count(o.len()),
        _ => Value::Null,
    })
}

fn object_keys(a: &[Value], _: &Site<'_>) -> Result<Value, EvalError> {
    Ok(match a {
        [Value::Object(o)] => Value::Array(o.keys().map(|k| string(k.as_str())).collect()),
        _ => Value::Null,
    })
}

// ---- math ----

fn abs(a: &[Value], _: &Site<'_>) -> Result<Value, EvalError> {
    Ok(match a {
        [Value::Int(i)] => i.checked_abs().map_or(Value::Float(-(*i as f64)), Value::Int),
        [Value::Float(f)] => float_value(f.abs()),
        _ => Value::Null,
    })
}

/// `ceil` / `floor`: integers unchanged, floats to an integer when it fits.
fn rounded(a: &[Value], f: fn(f64) -> f64) -> Value {
    match a {
        [Value::Int(i)] => Value::Int(*i),
        [Value::Float(x)] => integral(f(*x)),
        _ => Value::Null,
    }
}

/// `round(x [, digits])`, half away from zero; negative digits round to tens,
/// hundreds... Integers stay integers.
fn round(a: &[Value], _: &Site<'_>) -> Result<Value, EvalError> {
    let digits = match a {
        [_] => 0,
        [_, d] => match int_of(d) {
            // Beyond +-400 digits every f64 and i64 rounds the same way.
            Some(d) => d.clamp(-400, 400),
            None => return Ok(Value::Null),
        },
        _ => return Ok(Value::Null),
    };
    Ok(match a.first().and_then(Num::of) {
        Some(Num::Int(i)) => round_int(i, digits),
        Some(Num::Float(f)) => round_float(f, digits),
        None => Value::Null,
    })
}

fn round_int(i: i64, digits: i64) -> Value {
    if digits >= 0 {
        return Value::Int(i);
    }
    // |i| < 10^19 / 2 cannot reach a multiple of 10^20 or more.
    let Some(p) = u32::try_from(digits.unsigned_abs())
        .ok()
        .filter(|k| *k <= 20)
        .map(|k| 10i128.pow(k))
    else {
        return Value::Int(0);
    };
    let r = (i128::from(i).abs() + p / 2) / p * p;
    let r = if i < 0 { -r } else { r };
    i64::try_from(r).map_or_else(|_| float_value(r as f64), Value::Int)
}

fn round_float(f: f64, digits: i64) -> Value {
    let Ok(d) = i32::try_from(digits) else {
        return Value::Null;
    };
    if d == 0 {
        return integral(f.round());
    }
    if d > 0 {
        let p = 10f64.powi(d);
        let scaled = f * p;
        // Too many digits to matter: the float is already that precise.
        if !scaled.is_finite() {
            return float_value(f);
        }
        return float_value(scaled.round() / p);
    }
    let p = 10f64.powi(-d);
    if !p.is_finite() {
        return Value::Float(0.0);
    }
    float_value((f / p).round() * p)
}

// ---- dates ----

fn date_cast(a: &[Value], _: &Site<'_>) -> Result<Value, EvalError> {
    Ok(match a {
        [v] => date::from_value(v)
            .and_then(date::format)
            .map_or(Value::Null, Value::String),
        _ => Value::Null,
    })
}

/// A unit or part name given as a string must be known: an error on every
/// row, checked before the missing/null rule.
fn named<T>(
    v: Option<&Option<Value>>,
    parse: fn(&str) -> Option<T>,
    what: &str,
    site: &Site<'_>,
) -> Result<Option<T>, EvalError> {
    match v {
        Some(Some(Value::String(s))) => parse(s)
            .map(Some)
            .ok_or_else(|| site.bad(format!("unknown {what} {:?}", s.as_str()))),
        _ => Ok(None),
    }
}

fn date_add(a: &[Option<Value>], site: &Site<'_>) -> Out {
    let unit = named(a.get(2), date::unit, "unit", site)?;
    if let Some(out) = usual(a) {
        return Ok(out);
    }
    let sum = match (a, unit) {
        ([Some(d), Some(n), _], Some(unit)) => date::from_value(d)
            .zip(int_of(n))
            .and_then(|(ms, n)| date::add(ms, n, unit)),
        _ => None,
    };
    Ok(Some(sum.and_then(date::format).map_or(Value::Null, Value::String)))
}

fn date_diff(a: &[Option<Value>], site: &Site<'_>) -> Out {
    let unit = named(a.get(2), date::unit, "unit", site)?;
    if let Some(out) = usual(a) {
        return Ok(out);
    }
    let diff = match (a, unit) {
        ([Some(x), Some(y), _], Some(unit)) => date::from_value(x)
            .zip(date::from_value(y))
            .and_then(|(x, y)| date::diff(x, y, unit)),
        _ => None,
    };
    Ok(Some(diff.map_or(Value::Null, Value::Int)))
}

fn date_part(a: &[Option<Value>], site: &Site<'_>) -> Out {
    let part = named(a.get(1), date::part_named, "date part", site)?;
    if let Some(out) = usual(a) {
        return Ok(out);
    }
    let value = match (a, part) {
        ([Some(d), _], Some(part)) => date::from_value(d).map(|ms| date::part(ms, part)),
        _ => None,
    };
    Ok(Some(value.map_or(Value::Null, Value::Int)))
}

// ---- JSON ----

fn deserialize_json(a: &[Value], site: &Site<'_>) -> Result<Value, EvalError> {
    match a {
        [Value::String(s)] => Value::parse(s).map_err(|e| site.bad(e.to_string())),
        _ => Ok(Value::Null),
    }
}

//! The DQL evaluator, case by case: every operator, every function, the
//! three-valued logic, pattern matching, dates and aggregates, as tables run
//! through one `check` helper; then property tests that random expressions
//! over random values never panic, and that independent implementations
//! (LIKE against regexp_like, date_add against date_diff) agree.
//!
//! Expressions are built from small constructors, not parsed: the evaluator
//! is tested on its own.

use proptest::prelude::*;
use rhizome_engine::dql::ast::{BinaryOp, Expr, InList, IsTest, Path, Pos, Segment, UnaryOp};
use rhizome_engine::dql::eval::{self, Accumulator, EvalError, Params, Row};
use rhizome_engine::value::Value;
use std::time::{Duration, Instant};

// ---- constructors ----

/// Written where a value is expected, stands for MISSING.
const MISSING: &str = "MISSING";
/// In a JSON argument list, a string that stands for a missing argument.
const MISSING_ARG: &str = "<missing>";

fn v(json: &str) -> Value {
    Value::parse(json).unwrap_or_else(|e| panic!("bad test JSON {json}: {e}"))
}

/// A literal from JSON text, or a read of an absent field for `MISSING`.
fn lit(json: &str) -> Expr {
    if json == MISSING {
        return field("no_such_field");
    }
    Expr::Literal(v(json))
}

fn s(text: &str) -> Expr {
    Expr::Literal(Value::String(text.into()))
}

/// A path: dot-separated, segments that parse as integers are indexes.
fn path(p: &str) -> Path {
    let segments = p
        .split('.')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<i64>().map_or_else(|_| Segment::Key(s.into()), Segment::Index))
        .collect();
    Path { segments }
}

fn field(p: &str) -> Expr {
    Expr::Field(path(p))
}

fn pos() -> Pos {
    Pos { line: 3, column: 7 }
}

fn call(name: &str, args: Vec<Expr>) -> Expr {
    Expr::Call {
        name: name.into(),
        args,
        distinct: false,
        pos: pos(),
    }
}

fn bin(op: BinaryOp, l: Expr, r: Expr) -> Expr {
    Expr::Binary(op, Box::new(l), Box::new(r))
}

fn un(op: UnaryOp, e: Expr) -> Expr {
    Expr::Unary(op, Box::new(e))
}

fn like(x: Expr, p: Expr, case_insensitive: bool, negated: bool) -> Expr {
    Expr::Like {
        expr: Box::new(x),
        pattern: Box::new(p),
        case_insensitive,
        negated,
    }
}

fn any_in(var: &str, array: Expr, cond: Expr) -> Expr {
    Expr::Any {
        var: var.into(),
        array: Box::new(array),
        cond: Box::new(cond),
    }
}

fn param(name: &str) -> Expr {
    Expr::Param {
        name: name.into(),
        pos: pos(),
    }
}

/// The row every table case reads.
fn doc() -> Value {
    v(
        r#"{"a": 1, "s": "hello", "n": null, "arr": [1, 2, 3], "o": {"x": {"y": [10, 20]}},
          "tags": ["x", "y"], "items": [{"k": 1}, {"k": 5}]}"#,
    )
}

fn params() -> Params {
    let mut p = Params::new();
    p.insert("ids", v("[1, 2, 3]")).insert("name", v(r#""hello""#));
    p
}

// ---- the one check ----

/// Evaluates `expr` over [`doc`] and compares with `expected`: JSON text
/// (compared exactly, so `2` is not `2.0`), `MISSING`, `ERROR`, or
/// `ERROR: text` (an error whose message contains `text`).
fn outcome(expr: &Expr, expected: &str) -> Result<(), String> {
    let got = eval::eval(expr, &doc(), &params());
    let ok = match (expected.strip_prefix("ERROR"), &got) {
        (Some(rest), Err(e)) => e.to_string().contains(rest.trim_start_matches(':').trim()),
        (Some(_), Ok(_)) => false,
        (None, Ok(None)) => expected == MISSING,
        (None, Ok(Some(value))) => expected != MISSING && *value == v(expected),
        (None, Err(_)) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{expr:?}\n    expected {expected}, got {got:?}"))
    }
}

fn check(expr: &Expr, expected: &str) {
    if let Err(e) = outcome(expr, expected) {
        panic!("{e}");
    }
}

/// Runs every case and reports all failures together.
fn check_all(cases: impl IntoIterator<Item = (Expr, String)>) {
    let failures: Vec<String> = cases.into_iter().filter_map(|(e, x)| outcome(&e, &x).err()).collect();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Arguments from a JSON array; the string `<missing>` is a missing argument.
fn args(json: &str) -> Vec<Expr> {
    match v(json) {
        Value::Array(items) => items
            .into_iter()
            .map(|a| match a {
                Value::String(s) if s == MISSING_ARG => lit(MISSING),
                a => Expr::Literal(a),
            })
            .collect(),
        other => panic!("arguments must be a JSON array, got {other}"),
    }
}

// ---- functions ----

/// (function, arguments as a JSON array, expected).
const FUNCTION_CASES: &[(&str, &str, &str)] = &[
    // length, char_length, byte_length
    ("length", r#"["abc"]"#, "3"),
    ("length", r#"["héllo"]"#, "5"),
    ("length", r#"[""]"#, "0"),
    ("length", r#"["<missing>"]"#, MISSING),
    ("length", "[null]", "null"),
    ("length", "[5]", "null"),
    (
        "length",
        "[]",
        "ERROR: length() at line 3, column 7 takes 1 argument, got 0",
    ),
    ("length", r#"["a", "b"]"#, "ERROR: takes 1 argument, got 2"),
    ("char_length", r#"["日本"]"#, "2"),
    ("char_length", "[[1]]", "null"),
    ("byte_length", r#"["日本"]"#, "6"),
    ("byte_length", r#"[""]"#, "0"),
    ("byte_length", "[true]", "null"),
    // concat
    ("concat", r#"["a", "b", "c"]"#, r#""abc""#),
    ("concat", r#"["a"]"#, r#""a""#),
    ("concat", r#"["a", 1]"#, "null"),
    ("concat", r#"["a", null]"#, "null"),
    ("concat", r#"["a", "<missing>"]"#, MISSING),
    ("concat", "[]", "ERROR: takes at least 1 argument"),
    // lower, upper
    ("lower", r#"["ÀBC"]"#, r#""àbc""#),
    ("lower", "[1]", "null"),
    ("upper", r#"["straße"]"#, r#""STRASSE""#),
    ("upper", "[null]", "null"),
    ("upper", r#"["<missing>"]"#, MISSING),
    // contains, starts_with, ends_with
    ("contains", r#"["hello", "ell"]"#, "true"),
    ("contains", r#"["hello", "xyz"]"#, "false"),
    ("contains", r#"["hello", ""]"#, "true"),
    ("contains", r#"[["a"], "a"]"#, "null"),
    ("contains", r#"["<missing>", "a"]"#, MISSING),
    ("starts_with", r#"["hello", "he"]"#, "true"),
    ("starts_with", r#"["hello", "lo"]"#, "false"),
    ("starts_with", r#"[1, "1"]"#, "null"),
    ("ends_with", r#"["hello", "lo"]"#, "true"),
    ("ends_with", r#"["hello", "he"]"#, "false"),
    ("ends_with", r#"["hello", null]"#, "null"),
    // substr
    ("substr", r#"["hello", 1]"#, r#""ello""#),
    ("substr", r#"["hello", 1, 3]"#, r#""ell""#),
    ("substr", r#"["hello", -3]"#, r#""llo""#),
    ("substr", r#"["hello", -3, 2]"#, r#""ll""#),
    ("substr", r#"["hello", -10, 2]"#, r#""he""#),
    ("substr", r#"["hello", 10]"#, r#""""#),
    ("substr", r#"["hello", 2, 100]"#, r#""llo""#),
    ("substr", r#"["hello", 0, 0]"#, r#""""#),
    ("substr", r#"["hello", 1, -1]"#, "null"),
    ("substr", r#"["hello", 1.5]"#, "null"),
    ("substr", r#"["hello", 2.0]"#, r#""llo""#),
    ("substr", r#"["héllo", 1, 1]"#, r#""é""#),
    ("substr", r#"["hello", -9223372036854775808]"#, r#""hello""#),
    (
        "substr",
        r#"["hello", 9223372036854775807, 9223372036854775807]"#,
        r#""""#,
    ),
    ("substr", r#"["hello", 1e300]"#, "null"),
    ("substr", "[5, 1]", "null"),
    ("substr", r#"["hello", "<missing>"]"#, MISSING),
    ("substr", r#"["hello"]"#, "ERROR: takes 2 or 3 arguments, got 1"),
    // trim
    ("trim", r#"["  hi  "]"#, r#""hi""#),
    ("trim", "[\"\\t\\n hi \u{3000}\"]", r#""hi""#),
    ("trim", r#"["xxhixx", "x"]"#, r#""hi""#),
    ("trim", r#"["--a-b--", "-"]"#, r#""a-b""#),
    ("trim", r#"["hi", ""]"#, r#""hi""#),
    ("trim", "[3]", "null"),
    ("trim", r#"["a", "b", "c"]"#, "ERROR: takes 1 or 2 arguments, got 3"),
    // regexp_like (more in `regular_expressions`)
    ("regexp_like", r#"["hello", "^h.*o$"]"#, "true"),
    ("regexp_like", r#"["hello", "l+"]"#, "true"),
    ("regexp_like", r#"["hello", "^l"]"#, "false"),
    ("regexp_like", r#"["abc123", "\\d{3}$"]"#, "true"),
    (
        "regexp_like",
        r#"["a", "["]"#,
        "ERROR: regexp_like() at line 3, column 7: missing ']'",
    ),
    ("regexp_like", r#"["<missing>", "("]"#, "ERROR: missing ')'"),
    ("regexp_like", r#"["<missing>", "a"]"#, MISSING),
    ("regexp_like", r#"[null, "a"]"#, "null"),
    ("regexp_like", r#"[1, "a"]"#, "null"),
    ("regexp_like", r#"["a", 1]"#, "null"),
    // coalesce, if_missing, if_null
    ("coalesce", r#"[null, "<missing>", 2, 3]"#, "2"),
    ("coalesce", r#"["<missing>", null]"#, "null"),
    ("coalesce", "[false, 1]", "false"),
    ("coalesce", "[0]", "0"),
    ("coalesce", "[]", "ERROR: takes at least 1 argument"),
    ("if_missing", r#"["<missing>", null, 1]"#, "null"),
    ("if_missing", r#"["<missing>", "<missing>"]"#, "null"),
    ("if_missing", "[1, 2]", "1"),
    ("if_missing", "[1]", "ERROR: takes at least 2 arguments, got 1"),
    ("if_null", r#"[null, "<missing>", 3]"#, "3"),
    ("if_null", "[null, null]", "null"),
    ("if_null", r#"["a", "b"]"#, r#""a""#),
    // type and the type tests
    ("type", r#"["<missing>"]"#, r#""missing""#),
    ("type", "[null]", r#""null""#),
    ("type", "[true]", r#""boolean""#),
    ("type", "[1.5]", r#""number""#),
    ("type", "[7]", r#""number""#),
    ("type", r#"["s"]"#, r#""string""#),
    ("type", "[[]]", r#""array""#),
    ("type", "[{}]", r#""object""#),
    ("is_string", r#"["a"]"#, "true"),
    ("is_string", "[1]", "false"),
    ("is_string", r#"["<missing>"]"#, "false"),
    ("is_number", "[1]", "true"),
    ("is_number", "[1.5]", "true"),
    ("is_number", r#"["1"]"#, "false"),
    ("is_boolean", "[false]", "true"),
    ("is_boolean", "[null]", "false"),
    ("is_array", "[[1]]", "true"),
    ("is_array", "[{}]", "false"),
    ("is_object", "[{}]", "true"),
    ("is_object", "[[]]", "false"),
    ("is_null", "[null]", "true"),
    ("is_null", r#"["<missing>"]"#, "false"),
    ("is_null", "[0]", "false"),
    ("is_missing", r#"["<missing>"]"#, "true"),
    ("is_missing", "[null]", "false"),
    ("is_missing", "[]", "ERROR: takes 1 argument"),
    // arrays and objects
    ("array_length", "[[1, 2, 3]]", "3"),
    ("array_length", "[[]]", "0"),
    ("array_length", r#"["abc"]"#, "null"),
    ("array_length", r#"["<missing>"]"#, MISSING),
    ("array_contains", "[[1, 2, 3], 2]", "true"),
    ("array_contains", "[[1, 2, 3], 2.0]", "true"),
    ("array_contains", "[[1, 2, 3], 4]", "false"),
    ("array_contains", r#"[[[1], {"a": 1}], {"a": 1}]"#, "true"),
    ("array_contains", r#"["x", "x"]"#, "null"),
    ("array_contains", "[[null], null]", "null"),
    ("object_length", r#"[{"a": 1, "b": 2}]"#, "2"),
    ("object_length", "[[1]]", "null"),
    ("object_keys", r#"[{"b": 1, "a": 2}]"#, r#"["a", "b"]"#),
    ("object_keys", "[{}]", "[]"),
    ("object_keys", r#"["x"]"#, "null"),
    // math
    ("abs", "[-3]", "3"),
    ("abs", "[2.5]", "2.5"),
    ("abs", "[-0.0]", "0.0"),
    ("abs", "[-9223372036854775808]", "9223372036854775808.0"),
    ("abs", r#"["x"]"#, "null"),
    ("ceil", "[1.2]", "2"),
    ("ceil", "[-1.2]", "-1"),
    ("ceil", "[5]", "5"),
    ("ceil", "[1e300]", "1e300"),
    ("ceil", "[null]", "null"),
    ("floor", "[1.8]", "1"),
    ("floor", "[-1.2]", "-2"),
    ("floor", r#"["1"]"#, "null"),
    ("round", "[2.5]", "3"),
    ("round", "[-2.5]", "-3"),
    ("round", "[2.4]", "2"),
    ("round", "[7]", "7"),
    ("round", "[7, 2]", "7"),
    ("round", "[1234, -2]", "1200"),
    ("round", "[1250, -2]", "1300"),
    ("round", "[-1250, -2]", "-1300"),
    ("round", "[3.14159, 2]", "3.14"),
    ("round", "[1234.5, -2]", "1200.0"),
    ("round", "[9223372036854775807, -1]", "9223372036854775810.0"),
    ("round", "[5, -400]", "0"),
    ("round", "[5, -9223372036854775808]", "0"),
    ("round", "[1.5, 1000]", "1.5"),
    ("round", "[1.5, -1000]", "0.0"),
    ("round", r#"[1.5, "x"]"#, "null"),
    ("round", "[1.5, 0.5]", "null"),
    ("round", r#"["1.5"]"#, "null"),
    // date_cast
    ("date_cast", r#"["2024-02-29"]"#, r#""2024-02-29T00:00:00Z""#),
    (
        "date_cast",
        r#"["2024-03-10T12:30:00+02:00"]"#,
        r#""2024-03-10T10:30:00Z""#,
    ),
    (
        "date_cast",
        r#"["2024-01-01T00:30:00-01:00"]"#,
        r#""2024-01-01T01:30:00Z""#,
    ),
    (
        "date_cast",
        r#"["2023-12-31T23:30:00.5-01:00"]"#,
        r#""2024-01-01T00:30:00.500Z""#,
    ),
    (
        "date_cast",
        r#"["2024-01-01t10:00:00.123456789z"]"#,
        r#""2024-01-01T10:00:00.123Z""#,
    ),
    ("date_cast", r#"["2024-01-01 10:00:00"]"#, r#""2024-01-01T10:00:00Z""#),
    ("date_cast", r#"["2000-02-29"]"#, r#""2000-02-29T00:00:00Z""#),
    ("date_cast", r#"["2023-02-29"]"#, "null"),
    ("date_cast", r#"["1900-02-29"]"#, "null"),
    ("date_cast", r#"["2024-13-01"]"#, "null"),
    ("date_cast", r#"["2024-04-31"]"#, "null"),
    ("date_cast", r#"["2024-01-01T24:00:00Z"]"#, "null"),
    ("date_cast", r#"["2024-01-01T10:00:60Z"]"#, "null"),
    ("date_cast", r#"["2024-01-01T10:00:00.Z"]"#, "null"),
    ("date_cast", r#"["2024-01-01T10:00:00+0200"]"#, "null"),
    ("date_cast", r#"["2024-01-01T10:00:00Z "]"#, "null"),
    ("date_cast", r#"["0000-01-01T00:30:00+01:00"]"#, "null"),
    ("date_cast", r#"["２０２４-01-01"]"#, "null"),
    ("date_cast", r#"["garbage"]"#, "null"),
    ("date_cast", "[0]", r#""1970-01-01T00:00:00Z""#),
    ("date_cast", "[1700000000123]", r#""2023-11-14T22:13:20.123Z""#),
    ("date_cast", "[-1]", r#""1969-12-31T23:59:59.999Z""#),
    ("date_cast", "[1.9]", r#""1970-01-01T00:00:00.001Z""#),
    ("date_cast", "[253402300799999]", r#""9999-12-31T23:59:59.999Z""#),
    ("date_cast", "[253402300800000]", "null"),
    ("date_cast", "[1e20]", "null"),
    ("date_cast", "[-9223372036854775808]", "null"),
    ("date_cast", "[true]", "null"),
    ("date_cast", r#"["<missing>"]"#, MISSING),
    // date_add
    ("date_add", r#"["2024-01-31", 1, "month"]"#, r#""2024-02-29T00:00:00Z""#),
    ("date_add", r#"["2023-01-31", 1, "month"]"#, r#""2023-02-28T00:00:00Z""#),
    (
        "date_add",
        r#"["2024-03-31T10:00:00Z", -1, "month"]"#,
        r#""2024-02-29T10:00:00Z""#,
    ),
    (
        "date_add",
        r#"["2024-10-31", 3, "months"]"#,
        r#""2025-01-31T00:00:00Z""#,
    ),
    ("date_add", r#"["2024-02-29", 1, "year"]"#, r#""2025-02-28T00:00:00Z""#),
    ("date_add", r#"["2024-02-29", 4, "Years"]"#, r#""2028-02-29T00:00:00Z""#),
    (
        "date_add",
        r#"["2024-12-31T23:59:59Z", 1, "second"]"#,
        r#""2025-01-01T00:00:00Z""#,
    ),
    (
        "date_add",
        r#"["2024-01-01", 90, "minute"]"#,
        r#""2024-01-01T01:30:00Z""#,
    ),
    ("date_add", r#"["2024-01-01", 2, "HOURS"]"#, r#""2024-01-01T02:00:00Z""#),
    ("date_add", r#"["2024-01-01", 1, "week"]"#, r#""2024-01-08T00:00:00Z""#),
    (
        "date_add",
        r#"["2024-01-01", 1500, "millisecond"]"#,
        r#""2024-01-01T00:00:01.500Z""#,
    ),
    ("date_add", r#"["2024-03-01", -1, "day"]"#, r#""2024-02-29T00:00:00Z""#),
    ("date_add", r#"[0, 1, "hour"]"#, r#""1970-01-01T01:00:00Z""#),
    (
        "date_add",
        r#"["2024-01-01T00:00:00+05:00", 0, "day"]"#,
        r#""2023-12-31T19:00:00Z""#,
    ),
    ("date_add", r#"["9999-12-31", 1, "day"]"#, "null"),
    ("date_add", r#"["2024-01-01", 9223372036854775807, "day"]"#, "null"),
    ("date_add", r#"["2024-01-01", 9223372036854775807, "year"]"#, "null"),
    ("date_add", r#"["2024-01-01", -9223372036854775808, "month"]"#, "null"),
    ("date_add", r#"["2024-01-01", 1.5, "day"]"#, "null"),
    ("date_add", r#"["2024-01-01", 2.0, "day"]"#, r#""2024-01-03T00:00:00Z""#),
    ("date_add", r#"["nope", 1, "day"]"#, "null"),
    ("date_add", r#"["2024-01-01", 1, 5]"#, "null"),
    ("date_add", r#"["2024-01-01", null, "day"]"#, "null"),
    ("date_add", r#"["<missing>", 1, "day"]"#, MISSING),
    (
        "date_add",
        r#"["2024-01-01", 1, "fortnight"]"#,
        "ERROR: date_add() at line 3, column 7: unknown unit \"fortnight\"",
    ),
    ("date_add", r#"["<missing>", 1, "fortnight"]"#, "ERROR: unknown unit"),
    ("date_add", r#"["2024-01-01", 1]"#, "ERROR: takes 3 arguments, got 2"),
    // date_diff
    ("date_diff", r#"["2024-01-01", "2024-03-01", "day"]"#, "60"),
    ("date_diff", r#"["2023-01-01", "2023-03-01", "day"]"#, "59"),
    (
        "date_diff",
        r#"["2024-01-01T00:00:00Z", "2024-01-01T23:59:59Z", "hour"]"#,
        "23",
    ),
    ("date_diff", r#"["2024-01-02", "2024-01-01T12:00:00Z", "day"]"#, "0"),
    ("date_diff", r#"["2024-01-03", "2024-01-01", "day"]"#, "-2"),
    (
        "date_diff",
        r#"["2024-01-01T00:00:00+01:00", "2024-01-01T00:00:00Z", "minute"]"#,
        "60",
    ),
    ("date_diff", r#"["2024-01-01", "2024-01-15", "week"]"#, "2"),
    (
        "date_diff",
        r#"["2024-01-01", "2024-01-01T00:00:01.250Z", "millisecond"]"#,
        "1250",
    ),
    ("date_diff", r#"[0, 86400000, "day"]"#, "1"),
    ("date_diff", r#"["2024-01-31", "2024-02-29", "month"]"#, "1"),
    ("date_diff", r#"["2024-01-31", "2024-02-28", "month"]"#, "0"),
    ("date_diff", r#"["2023-01-31", "2023-02-28", "month"]"#, "1"),
    ("date_diff", r#"["2024-03-31", "2024-02-29", "month"]"#, "-1"),
    ("date_diff", r#"["2024-03-15", "2024-02-20", "month"]"#, "0"),
    (
        "date_diff",
        r#"["2024-01-15T12:00:00Z", "2024-02-15T11:59:59Z", "month"]"#,
        "0",
    ),
    ("date_diff", r#"["2020-02-29", "2024-02-28", "year"]"#, "3"),
    ("date_diff", r#"["2020-02-29", "2021-02-28", "year"]"#, "1"),
    ("date_diff", r#"["2024-06-01", "2020-07-01", "year"]"#, "-3"),
    (
        "date_diff",
        r#"["0000-01-01", "9999-12-31T23:59:59.999Z", "millisecond"]"#,
        "315569519999999",
    ),
    ("date_diff", r#"["2024-01-01", "x", "day"]"#, "null"),
    ("date_diff", r#"["2024-01-01", null, "day"]"#, "null"),
    ("date_diff", r#"["2024-01-01", "<missing>", "day"]"#, MISSING),
    (
        "date_diff",
        r#"["2024-01-01", "2024-01-02", "eon"]"#,
        "ERROR: unknown unit \"eon\"",
    ),
    // date_part
    ("date_part", r#"["2024-03-10T12:34:56.789Z", "year"]"#, "2024"),
    ("date_part", r#"["2024-03-10T12:34:56.789Z", "month"]"#, "3"),
    ("date_part", r#"["2024-03-10T12:34:56.789Z", "day"]"#, "10"),
    ("date_part", r#"["2024-03-10T12:34:56.789Z", "hour"]"#, "12"),
    ("date_part", r#"["2024-03-10T12:34:56.789Z", "minute"]"#, "34"),
    ("date_part", r#"["2024-03-10T12:34:56.789Z", "second"]"#, "56"),
    ("date_part", r#"["2024-03-10T12:34:56.789Z", "millisecond"]"#, "789"),
    ("date_part", r#"["2024-03-10", "weekday"]"#, "0"),
    ("date_part", r#"["1970-01-01", "weekday"]"#, "4"),
    ("date_part", r#"["2000-01-01", "weekday"]"#, "6"),
    ("date_part", r#"["0000-01-01", "weekday"]"#, "6"),
    ("date_part", r#"["1969-12-31T23:59:59Z", "weekday"]"#, "3"),
    ("date_part", r#"["2024-12-31", "dayofyear"]"#, "366"),
    ("date_part", r#"["2023-12-31", "dayofyear"]"#, "365"),
    ("date_part", r#"["2024-03-01", "dayofyear"]"#, "61"),
    ("date_part", r#"["2024-01-01T01:00:00+02:00", "day"]"#, "31"),
    ("date_part", r#"["2024-01-01", "YEAR"]"#, "2024"),
    ("date_part", r#"[0, "year"]"#, "1970"),
    ("date_part", r#"["bad", "year"]"#, "null"),
    ("date_part", r#"["<missing>", "year"]"#, MISSING),
    (
        "date_part",
        r#"["2024-01-01", "fortnight"]"#,
        "ERROR: unknown date part \"fortnight\"",
    ),
    // deserialize_json
    ("deserialize_json", r#"["{\"a\": [1, 2.5]}"]"#, r#"{"a": [1, 2.5]}"#),
    ("deserialize_json", r#"["null"]"#, "null"),
    ("deserialize_json", r#"["12"]"#, "12"),
    (
        "deserialize_json",
        r#"["{\"a\":\n  [1,}"]"#,
        "ERROR: deserialize_json() at line 3, column 7: invalid JSON at line 2",
    ),
    (
        "deserialize_json",
        r#"["18446744073709551615"]"#,
        "ERROR: integer outside",
    ),
    ("deserialize_json", "[5]", "null"),
    ("deserialize_json", r#"["<missing>"]"#, MISSING),
];

#[test]
fn functions() {
    check_all(
        FUNCTION_CASES
            .iter()
            .map(|(name, a, x)| (call(name, args(a)), x.to_string())),
    );
}

#[test]
fn every_function_has_cases_and_docs() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/dql-functions.md"))
        .expect("docs/dql-functions.md");
    for name in eval::function_names() {
        let n = FUNCTION_CASES.iter().filter(|(f, _, _)| *f == name).count();
        assert!(n >= 2, "{name}: only {n} test cases");
        assert!(
            docs.contains(&format!("`{name}(")),
            "{name} is not in docs/dql-functions.md"
        );
    }
    for name in ["count", "sum", "avg", "min", "max"] {
        assert!(
            docs.contains(&format!("`{name}(")),
            "aggregate {name} is not documented"
        );
    }
}

#[test]
fn function_errors() {
    check(
        &call("nope", vec![]),
        "ERROR: unknown function nope() at line 3, column 7",
    );
    // Arity is checked before arguments are evaluated: no missing-parameter error.
    check(
        &call("length", vec![param("absent"), param("absent")]),
        "ERROR: takes 1 argument, got 2",
    );
    let distinct = Expr::Call {
        name: "length".into(),
        args: vec![s("a")],
        distinct: true,
        pos: pos(),
    };
    check(&distinct, "ERROR: DISTINCT applies only to aggregates");
    check(
        &call("length", vec![param("absent")]),
        "ERROR: missing parameter :absent at line 3, column 7",
    );
}

// ---- rows and paths ----

#[test]
fn paths_and_literals() {
    let whole = doc().to_string();
    let cases = [
        (field("a"), "1"),
        (field("n"), "null"),
        (field("nope"), MISSING),
        (field("o.x"), r#"{"y": [10, 20]}"#),
        (field("o.x.y.1"), "20"),
        (field("o.x.y.-1"), "20"),
        (field("o.x.y.-2"), "10"),
        (field("o.x.y.-3"), MISSING),
        (field("o.x.y.2"), MISSING),
        (field("arr.0"), "1"),
        (field("arr.-9223372036854775808"), MISSING),
        (field("s.0"), MISSING),
        (field("a.b"), MISSING),
        (field("n.b"), MISSING),
        (field("items.1.k"), "5"),
        (
            Expr::Field(Path {
                segments: vec![Segment::Key("o".into()), Segment::Key("0".into())],
            }),
            MISSING,
        ),
        (Expr::Field(Path { segments: vec![] }), whole.as_str()),
        (param("ids"), "[1, 2, 3]"),
        (param("nope"), "ERROR: missing parameter :nope at line 3, column 7"),
        (
            Expr::Object(vec![
                ("a".into(), lit("1")),
                ("b".into(), lit(MISSING)),
                ("c".into(), lit("null")),
            ]),
            r#"{"a": 1, "c": null}"#,
        ),
        (
            Expr::Object(vec![("a".into(), lit("1")), ("a".into(), lit("2"))]),
            r#"{"a": 2}"#,
        ),
        (
            Expr::Array(vec![lit("1"), lit(MISSING), lit("null"), field("s")]),
            r#"[1, null, null, "hello"]"#,
        ),
        (
            Expr::Object(vec![("x".into(), Expr::Array(vec![field("a")]))]),
            r#"{"x": [1]}"#,
        ),
    ];
    check_all(cases.into_iter().map(|(e, x)| (e, x.to_string())));
}

// ---- operators ----

fn op(name: &str) -> BinaryOp {
    match name {
        "AND" => BinaryOp::And,
        "OR" => BinaryOp::Or,
        "=" => BinaryOp::Eq,
        "!=" | "<>" => BinaryOp::Ne,
        "<" => BinaryOp::Lt,
        "<=" => BinaryOp::Le,
        ">" => BinaryOp::Gt,
        ">=" => BinaryOp::Ge,
        "+" => BinaryOp::Add,
        "-" => BinaryOp::Sub,
        "*" => BinaryOp::Mul,
        "/" => BinaryOp::Div,
        "%" => BinaryOp::Rem,
        "||" => BinaryOp::Concat,
        other => panic!("no operator {other}"),
    }
}

/// (left, operator, right, expected); operands are JSON or `MISSING`.
const BINARY_CASES: &[(&str, &str, &str, &str)] = &[
    // comparison
    ("1", "=", "1", "true"),
    ("1", "=", "1.0", "true"),
    ("1", "=", r#""1""#, "false"),
    ("[1, 2]", "=", "[1, 2.0]", "true"),
    (r#"{"a": 1}"#, "=", r#"{"a": 1}"#, "true"),
    ("null", "=", "null", "null"),
    ("null", "=", "1", "null"),
    ("1", "=", "null", "null"),
    (MISSING, "=", "null", MISSING),
    ("null", "=", MISSING, MISSING),
    (MISSING, "=", "1", MISSING),
    ("1", "!=", "2", "true"),
    (r#""a""#, "<>", r#""a""#, "false"),
    ("null", "!=", "1", "null"),
    ("1", "<", "2", "true"),
    ("2", "<", "1.5", "false"),
    (r#""a""#, "<", r#""b""#, "true"),
    (r#""B""#, "<", r#""a""#, "true"),
    ("1", "<", r#""a""#, "true"),
    ("true", "<", "0", "true"),
    ("false", "<", "true", "true"),
    (r#""z""#, "<", "[]", "true"),
    ("[1]", "<", r#"{"a": 1}"#, "true"),
    ("[1]", "<", "[1, 0]", "true"),
    ("null", "<", "1", "null"),
    (MISSING, "<", "1", MISSING),
    ("2", "<=", "2.0", "true"),
    (r#""b""#, "<=", r#""a""#, "false"),
    (r#""b""#, ">", r#""a""#, "true"),
    ("9223372036854775807", ">", "9.2e18", "true"),
    ("9223372036854775807", "<", "9.3e18", "true"),
    ("1", ">=", "1", "true"),
    ("[1, 2]", ">=", "[1]", "true"),
    ("{}", ">=", "[]", "true"),
    // arithmetic
    ("1", "+", "2", "3"),
    ("1", "+", "2.5", "3.5"),
    ("0.1", "+", "0.2", "0.30000000000000004"),
    ("9223372036854775807", "+", "1", "9223372036854775808.0"),
    ("1e308", "+", "1e308", "null"),
    ("1", "+", r#""a""#, "null"),
    ("1", "+", "null", "null"),
    (MISSING, "+", "null", MISSING),
    ("null", "+", MISSING, MISSING),
    ("5", "-", "7", "-2"),
    ("-9223372036854775808", "-", "1", "-9.223372036854775808e18"),
    ("2.5", "-", "2.5", "0.0"),
    ("3", "*", "4", "12"),
    ("4294967296", "*", "4294967296", "1.8446744073709552e19"),
    ("2.5", "*", "2", "5.0"),
    ("-0.0", "*", "1", "0.0"),
    ("true", "*", "2", "null"),
    ("6", "/", "3", "2"),
    ("7", "/", "2", "3.5"),
    ("-7", "/", "2", "-3.5"),
    ("0", "/", "-5", "0"),
    ("1", "/", "0", "null"),
    ("1.0", "/", "0", "null"),
    ("1", "/", "0.0", "null"),
    ("-9223372036854775808", "/", "-1", "9.223372036854775808e18"),
    ("7.5", "/", "2.5", "3.0"),
    ("1e-320", "/", "1e300", "0.0"),
    (r#""6""#, "/", "3", "null"),
    (MISSING, "/", "0", MISSING),
    ("7", "%", "3", "1"),
    ("-7", "%", "3", "-1"),
    ("7", "%", "-3", "1"),
    ("7", "%", "0", "null"),
    ("5", "%", "0.0", "null"),
    ("7.5", "%", "2", "1.5"),
    ("-9223372036854775808", "%", "-1", "0"),
    ("[]", "%", "2", "null"),
    // concatenation
    (r#""a""#, "||", r#""b""#, r#""ab""#),
    (r#""""#, "||", r#""""#, r#""""#),
    (r#""a""#, "||", "1", "null"),
    (r#""a""#, "||", "null", "null"),
    (MISSING, "||", r#""a""#, MISSING),
    ("1", "||", MISSING, MISSING),
    // AND / OR with non-booleans
    ("1", "AND", "true", "null"),
    ("1", "AND", "false", "false"),
    ("1", "OR", "true", "true"),
    ("1", "OR", "false", "null"),
    (r#""x""#, "OR", MISSING, MISSING),
];

#[test]
fn binary_operators() {
    check_all(
        BINARY_CASES
            .iter()
            .map(|(l, o, r, x)| (bin(op(o), lit(l), lit(r)), x.to_string())),
    );
}

#[test]
fn three_valued_logic() {
    let vals = ["true", "false", "null", MISSING];
    // Rows: left operand; columns: right operand, both in `vals` order.
    let and = [
        ["true", "false", "null", MISSING],
        ["false", "false", "false", "false"],
        ["null", "false", "null", MISSING],
        [MISSING, "false", MISSING, MISSING],
    ];
    let or = [
        ["true", "true", "true", "true"],
        ["true", "false", "null", MISSING],
        ["true", "null", "null", MISSING],
        ["true", MISSING, MISSING, MISSING],
    ];
    let mut cases = Vec::new();
    for (i, l) in vals.iter().enumerate() {
        for (j, r) in vals.iter().enumerate() {
            cases.push((bin(BinaryOp::And, lit(l), lit(r)), and[i][j].to_string()));
            cases.push((bin(BinaryOp::Or, lit(l), lit(r)), or[i][j].to_string()));
        }
    }
    for (x, not) in [
        ("true", "false"),
        ("false", "true"),
        ("null", "null"),
        (MISSING, MISSING),
        ("1", "null"),
        (r#""x""#, "null"),
    ] {
        cases.push((un(UnaryOp::Not, lit(x)), not.to_string()));
    }
    check_all(cases);
    for (value, keep) in [
        ("true", true),
        ("false", false),
        ("null", false),
        (MISSING, false),
        ("1", false),
    ] {
        let r = eval::eval(&lit(value), &doc(), &params()).unwrap();
        assert_eq!(eval::truthy(&r), keep, "truthy({value})");
    }
}

#[test]
fn a_decided_side_skips_the_other() {
    // false AND x and true OR x do not read x. A missing parameter is still
    // an error whatever the data: statements check their parameters before
    // they run (see the conformance files).
    check(&bin(BinaryOp::And, lit("false"), param("absent")), "false");
    check(&bin(BinaryOp::Or, lit("true"), param("absent")), "true");
    check(
        &bin(BinaryOp::And, lit("true"), param("absent")),
        "ERROR: missing parameter :absent",
    );
}

#[test]
fn unary_minus() {
    let cases = [
        ("5", "-5"),
        ("-9223372036854775808", "9.223372036854775808e18"),
        ("9223372036854775807", "-9223372036854775807"),
        ("2.5", "-2.5"),
        ("0.0", "0.0"),
        (r#""a""#, "null"),
        ("null", "null"),
        (MISSING, MISSING),
    ];
    check_all(
        cases
            .iter()
            .map(|(x, want)| (un(UnaryOp::Neg, lit(x)), want.to_string())),
    );
}

fn in_list(x: Expr, items: &[&str], negated: bool) -> Expr {
    Expr::In {
        expr: Box::new(x),
        list: InList::List(items.iter().map(|i| lit(i)).collect()),
        negated,
    }
}

fn in_array(x: Expr, array: Expr, negated: bool) -> Expr {
    Expr::In {
        expr: Box::new(x),
        list: InList::Array(Box::new(array)),
        negated,
    }
}

#[test]
fn in_operator() {
    let cases = [
        (in_list(lit("2"), &["1", "2", "3"], false), "true"),
        (in_list(lit("4"), &["1", "2", "3"], false), "false"),
        (in_list(lit("2.0"), &["1", "2"], false), "true"),
        (in_list(lit("[1]"), &["[1]", "[2]"], false), "true"),
        (in_list(lit(MISSING), &["1"], false), MISSING),
        (in_list(lit("null"), &["1", "null"], false), "null"),
        (in_list(lit("1"), &[MISSING, "1"], false), "true"),
        (in_list(lit("1"), &[MISSING], false), "false"),
        (in_list(lit("1"), &[], false), "false"),
        (in_list(lit("2"), &["1", "2"], true), "false"),
        (in_list(lit("4"), &["1", "2"], true), "true"),
        (in_list(lit(MISSING), &["1"], true), MISSING),
        (in_list(lit("null"), &["1"], true), "null"),
        (in_array(lit("2"), lit("[1, 2]"), false), "true"),
        (in_array(lit("2"), param("ids"), false), "true"),
        (in_array(lit("9"), param("ids"), true), "true"),
        (in_array(lit("2"), lit(r#""x""#), false), "null"),
        (in_array(lit("2"), lit(MISSING), false), "null"),
        (in_array(lit(MISSING), lit("[1]"), false), MISSING),
        (in_array(lit("2"), lit("[1, 3]"), true), "true"),
        (in_array(lit("2"), lit(r#""x""#), true), "null"),
        (in_array(s("y"), field("tags"), false), "true"),
    ];
    check_all(cases.into_iter().map(|(e, x)| (e, x.to_string())));
}

fn between(x: &str, lo: &str, hi: &str, negated: bool) -> Expr {
    Expr::Between {
        expr: Box::new(lit(x)),
        low: Box::new(lit(lo)),
        high: Box::new(lit(hi)),
        negated,
    }
}

#[test]
fn between_operator() {
    let cases = [
        (between("2", "1", "3", false), "true"),
        (between("1", "1", "3", false), "true"),
        (between("3.0", "1", "3", false), "true"),
        (between("3.5", "1", "3", false), "false"),
        (between(r#""b""#, r#""a""#, r#""c""#, false), "true"),
        (between(r#""b""#, "1", "3", false), "false"),
        (between("5", "3", "1", false), "false"),
        (between("null", "1", "3", false), "null"),
        (between(MISSING, "1", "3", false), MISSING),
        (between("5", "1", "null", false), "null"),
        (between("0", "1", "null", false), "false"),
        (between("5", "1", "3", true), "true"),
        (between("2", "1", "3", true), "false"),
        (between("null", "1", "3", true), "null"),
    ];
    check_all(cases.into_iter().map(|(e, x)| (e, x.to_string())));
}

/// (text, pattern, ILIKE, expected); text and pattern are plain strings.
const LIKE_CASES: &[(&str, &str, bool, &str)] = &[
    ("hello", "h%", false, "true"),
    ("hello", "%", false, "true"),
    ("", "%", false, "true"),
    ("", "%%", false, "true"),
    ("", "", false, "true"),
    ("a", "", false, "false"),
    ("", "_", false, "false"),
    ("hello", "h_llo", false, "true"),
    ("hello", "h_lo", false, "false"),
    ("hello", "%%l%%o", false, "true"),
    ("hello", "%l", false, "false"),
    ("hello", "_____", false, "true"),
    ("hello", "______", false, "false"),
    ("hello", "HELLO", false, "false"),
    ("hello", "HELLO", true, "true"),
    ("hello", "H%O", true, "true"),
    ("100%", "100\\%", false, "true"),
    ("1000", "100\\%", false, "false"),
    ("a_b", "a\\_b", false, "true"),
    ("axb", "a\\_b", false, "false"),
    ("a\\b", "a\\\\b", false, "true"),
    ("abc\\", "abc\\", false, "true"),
    ("abc", "\\a\\b\\c", false, "true"),
    ("日本語", "日_語", false, "true"),
    ("日本語", "__", false, "false"),
    ("日本語", "%語", false, "true"),
    ("ÉCOLE", "école", true, "true"),
    ("ÉCOLE", "école", false, "false"),
    ("ΣΊΣΥΦΟΣ", "σ%σ", true, "true"),
    ("Σίσυφος", "σ%Σ", true, "false"),
    ("STRASSE", "straße", true, "false"),
    ("mississippi", "%iss%ip%", false, "true"),
    ("mississippi", "%iss%ipx%", false, "false"),
    ("mississippi", "m%i%s%s%i%p%i", false, "true"),
    ("abc", "abc_", false, "false"),
    ("abc", "ab", false, "false"),
    ("ab", "a%b%", false, "true"),
    ("aXbXc", "a%b%c", false, "true"),
    ("aXbXd", "a%b%c", false, "false"),
];

#[test]
fn like_operator() {
    let mut cases: Vec<(Expr, String)> = LIKE_CASES
        .iter()
        .map(|(t, p, ci, x)| (like(s(t), s(p), *ci, false), x.to_string()))
        .collect();
    cases.extend([
        (like(lit("null"), s("%"), false, false), "null".to_string()),
        (like(lit("1"), s("1"), false, false), "null".into()),
        (like(s("a"), lit("null"), true, false), "null".into()),
        (like(lit(MISSING), s("a"), false, false), MISSING.into()),
        (like(s("a"), lit(MISSING), false, false), MISSING.into()),
        (like(s("abc"), s("a%"), false, true), "false".into()),
        (like(s("abc"), s("b%"), false, true), "true".into()),
        (like(lit("null"), s("a"), false, true), "null".into()),
        (like(lit(MISSING), s("a"), true, true), MISSING.into()),
        (like(field("s"), field("s"), false, false), "true".into()),
    ]);
    check_all(cases);
}

#[test]
fn like_is_never_exponential() {
    let text = "a".repeat(20_000);
    let start = Instant::now();
    check(&like(s(&text), s("%a%a%a%a%a%a%a%b"), false, false), "false");
    check(&like(s(&text), s("%a%a%a%a%a%a%a%"), true, false), "true");
    check(&like(s(&(text.clone() + "b")), s("%a%a%a%a%b"), false, false), "true");
    check(&like(s(&text), s(&"_%".repeat(200)), false, false), "true");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "LIKE took {:?}",
        start.elapsed()
    );
}

#[test]
fn is_tests() {
    let is = |x: &str, test: IsTest, negated: bool| Expr::Is {
        expr: Box::new(lit(x)),
        test,
        negated,
    };
    let cases = [
        (is("null", IsTest::Null, false), "true"),
        (is(MISSING, IsTest::Null, false), "false"),
        (is("1", IsTest::Null, false), "false"),
        (is("null", IsTest::Null, true), "false"),
        (is(MISSING, IsTest::Null, true), "true"),
        (is("0", IsTest::Null, true), "true"),
        (is(MISSING, IsTest::Missing, false), "true"),
        (is("null", IsTest::Missing, false), "false"),
        (is("1", IsTest::Missing, true), "true"),
        (is(MISSING, IsTest::Missing, true), "false"),
        (is("null", IsTest::Missing, true), "true"),
    ];
    check_all(cases.into_iter().map(|(e, x)| (e, x.to_string())));
}

#[test]
fn any_satisfies() {
    let eq = |l: Expr, r: Expr| bin(BinaryOp::Eq, l, r);
    let cases = [
        (any_in("x", field("tags"), eq(field("x"), s("y"))), "true"),
        (any_in("x", field("tags"), eq(field("x"), s("z"))), "false"),
        (any_in("x", field("nope"), eq(field("x"), s("y"))), MISSING),
        (any_in("x", field("s"), eq(field("x"), s("y"))), "null"),
        (any_in("x", field("n"), eq(field("x"), s("y"))), "null"),
        (any_in("x", lit("[]"), lit("true")), "false"),
        (
            any_in("i", field("items"), bin(BinaryOp::Gt, field("i.k"), lit("3"))),
            "true",
        ),
        (
            any_in("i", field("items"), bin(BinaryOp::Gt, field("i.k"), lit("5"))),
            "false",
        ),
        (any_in("i", field("items"), eq(field("i.nope"), lit("1"))), "false"),
        // `a` is shadowed inside, and read from the document outside.
        (any_in("a", lit("[5]"), eq(field("a"), lit("5"))), "true"),
        (any_in("x", field("arr"), eq(field("x"), field("a"))), "true"),
        (
            any_in(
                "x",
                lit("[[1, 2], [3]]"),
                any_in("y", field("x"), eq(field("y"), lit("3"))),
            ),
            "true",
        ),
        (
            any_in(
                "x",
                lit("[[1, 2], [3]]"),
                any_in("y", field("x"), eq(field("y"), lit("4"))),
            ),
            "false",
        ),
        (any_in("x", lit("[1, 2]"), eq(field("x.0"), lit("1"))), "false"),
        (any_in("x", lit("[[7]]"), eq(field("x.0"), lit("7"))), "true"),
        (
            any_in("x", field("tags"), param("absent")),
            "ERROR: missing parameter :absent",
        ),
    ];
    check_all(cases.into_iter().map(|(e, x)| (e, x.to_string())));
}

/// A joined row: paths start with an alias.
struct TwoDocs {
    left: Value,
    right: Value,
}

impl Row for TwoDocs {
    fn field(&self, p: &Path) -> Option<Value> {
        let (first, rest) = p.segments.split_first()?;
        let doc = match first {
            Segment::Key(k) if k == "l" => &self.left,
            Segment::Key(k) if k == "r" => &self.right,
            _ => return None,
        };
        doc.field(&Path {
            segments: rest.to_vec(),
        })
    }
}

#[test]
fn rows_are_pluggable() {
    let row = TwoDocs {
        left: v(r#"{"id": 1, "tags": ["a", "b"]}"#),
        right: v(r#"{"owner": 1, "tag": "b"}"#),
    };
    let p = Params::new();
    let join = bin(BinaryOp::Eq, field("l.id"), field("r.owner"));
    assert_eq!(eval::eval(&join, &row, &p), Ok(Some(Value::Bool(true))));
    let cond = any_in("t", field("l.tags"), bin(BinaryOp::Eq, field("t"), field("r.tag")));
    assert_eq!(eval::eval(&cond, &row, &p), Ok(Some(Value::Bool(true))));
    assert_eq!(eval::eval(&field("x.id"), &row, &p), Ok(None));
}

#[test]
fn params_api() {
    let mut p = Params::from_value(v(r#"{"b": 2, "a": 1}"#)).unwrap();
    assert_eq!(p.get("a"), Some(&Value::Int(1)));
    assert!(Params::from_value(v("[1]")).is_none());
    let q: Params = [("a".to_string(), Value::Int(1)), ("b".to_string(), Value::Int(2))]
        .into_iter()
        .collect();
    assert_eq!(p.fingerprint(), q.fingerprint());
    p.insert("c", Value::Null);
    assert_ne!(p.fingerprint(), q.fingerprint());
}

// ---- errors ----

#[test]
fn error_messages() {
    let at = Pos { line: 2, column: 9 };
    let cases = [
        (
            EvalError::MissingParam {
                name: "ids".into(),
                pos: at,
            },
            "missing parameter :ids at line 2, column 9",
        ),
        (
            EvalError::UnknownFunction {
                name: "foo".into(),
                pos: at,
            },
            "unknown function foo() at line 2, column 9",
        ),
        (
            EvalError::Arity {
                name: "substr".into(),
                expected: "2 or 3".into(),
                found: 1,
                pos: at,
            },
            "substr() at line 2, column 9 takes 2 or 3 arguments, got 1",
        ),
        (
            EvalError::BadArgument {
                name: "date_add".into(),
                reason: "unknown unit \"x\"".into(),
                pos: at,
            },
            "date_add() at line 2, column 9: unknown unit \"x\"",
        ),
        (
            EvalError::AggregateOutsideGroup {
                name: "sum".into(),
                pos: at,
            },
            "aggregate sum() at line 2, column 9 is not allowed here",
        ),
        (
            EvalError::TooDeep { limit: 256 },
            "expression nested deeper than 256 levels",
        ),
    ];
    for (e, want) in cases {
        assert!(e.to_string().starts_with(want), "{e} does not start with {want}");
    }
}

#[test]
fn aggregates_are_refused_outside_groups() {
    check(
        &call("sum", vec![field("a")]),
        "ERROR: aggregate sum() at line 3, column 7",
    );
    check(&call("count", vec![]), "ERROR: aggregate count()");
    check(
        &bin(BinaryOp::Add, lit("1"), Expr::CountStar),
        "ERROR: aggregate count()",
    );
}

#[test]
fn depth_is_bounded() {
    let mut e = lit("true");
    for _ in 0..300 {
        e = un(UnaryOp::Not, e);
    }
    assert!(matches!(
        eval::eval(&e, &doc(), &params()),
        Err(EvalError::TooDeep { .. })
    ));
    let mut e = lit("true");
    for _ in 0..200 {
        e = un(UnaryOp::Not, e);
    }
    check(&e, "true");
}

// ---- regular expressions ----

/// (text, pattern, expected: "true", "false" or "ERROR[: text]").
const REGEX_CASES: &[(&str, &str, &str)] = &[
    ("abc", "b", "true"),
    ("abc", "^b", "false"),
    ("abc", "c$", "true"),
    ("abc", "^abc$", "true"),
    ("abcd", "^abc$", "false"),
    ("", "", "true"),
    ("", "^$", "true"),
    ("a", "^$", "false"),
    ("aaa", "a{3}", "true"),
    ("aa", "^a{3}$", "false"),
    ("aaaa", "^a{2,3}$", "false"),
    ("aaa", "^a{2,3}$", "true"),
    ("aaaaa", "^a{2,}$", "true"),
    ("b", "^a{0}b$", "true"),
    ("a{b", "a{b", "true"),
    ("{", "^{$", "true"),
    ("a{,2}", "^a{,2}$", "true"),
    ("color", "^colou?r$", "true"),
    ("colour", "^colou?r$", "true"),
    ("cat", "^(cat|dog)$", "true"),
    ("dog", "^(?:cat|dog)$", "true"),
    ("cow", "^(cat|dog)$", "false"),
    ("", "^(a|)$", "true"),
    ("abab", "^(ab)+$", "true"),
    ("aba", "^(ab)+$", "false"),
    ("x-9", "^[a-z]-\\d$", "true"),
    ("X-9", "^[a-z]-\\d$", "false"),
    ("b", "[^abc]", "false"),
    ("d", "[^abc]", "true"),
    ("]", "^[]]$", "true"),
    ("-", "^[a-]$", "true"),
    ("5", "^[\\d.]$", "true"),
    (".", "^[\\d.]$", "true"),
    ("x", "^[\\d.]$", "false"),
    ("a b", "\\s", "true"),
    ("ab", "\\s", "false"),
    ("_", "^\\w$", "true"),
    ("é", "^\\w$", "true"),
    ("!", "\\W", "true"),
    ("123", "^\\D+$", "false"),
    ("abc", "^\\S+$", "true"),
    ("a.b", "a\\.b", "true"),
    ("axb", "a\\.b", "false"),
    ("axb", "a.b", "true"),
    ("a\nb", "a.b", "false"),
    ("tab\there", "\\t", "true"),
    ("a+b", "^a\\+b$", "true"),
    ("a\\b", "a\\\\b", "true"),
    ("日本語", "^.{3}$", "true"),
    ("日本語", "本", "true"),
    ("日本語", "^[日-語]+$", "true"),
    ("日本語", "^[一-三]+$", "false"),
    ("aaa", "^a*?$", "true"),
    ("aaa", "^a+?$", "true"),
    ("aaa", "^(a*)*$", "true"),
    ("x^y", "x\\^y", "true"),
    ("x$", "x\\$$", "true"),
    ("(", "(", "ERROR: missing ')'"),
    (")", ")", "ERROR: unmatched ')'"),
    ("a", "[a", "ERROR: missing ']'"),
    ("a", "a***", "ERROR: too many quantifiers"),
    ("a", "*a", "ERROR: nothing to repeat"),
    ("a", "a|*", "ERROR: nothing to repeat"),
    ("a", "^*", "ERROR: nothing to repeat"),
    ("a", "\\", "ERROR: lone backslash"),
    ("a", "\\q", "ERROR: unsupported escape \\q"),
    ("a", "\\b", "ERROR: unsupported escape"),
    ("a", "[z-a]", "ERROR: out of order"),
    ("a", "a{3,1}", "ERROR: reversed"),
    ("a", "a{1001}", "ERROR: above 1000"),
    ("a", "(?=a)", "ERROR: only (?: ) groups"),
    ("a", "(a{1000}){1000}", "ERROR: too complex"),
    (
        "a",
        "((((((((((){1000}){1000}){1000}){1000}){1000}){1000}){1000}){1000}){1000}){1000}",
        "ERROR: too complex",
    ),
];

fn regexp(text: &str, pattern: &str) -> Expr {
    call("regexp_like", vec![s(text), s(pattern)])
}

#[test]
fn regular_expressions() {
    check_all(REGEX_CASES.iter().map(|(t, p, x)| (regexp(t, p), x.to_string())));
    let long = "x".repeat(1000);
    check(&regexp(&long, &long), "true");
    check(&regexp("x", &(long + "x")), "ERROR: longer than 1000 characters");
    let nested = "(".repeat(33) + &")".repeat(33);
    check(&regexp("", &nested), "ERROR: nested deeper than 32");
    let nested = "(".repeat(32) + "a" + &")".repeat(32);
    check(&regexp("a", &nested), "true");
}

#[test]
fn regular_expressions_are_linear() {
    let a = "a".repeat(30_000);
    let start = Instant::now();
    check(&regexp(&a, "a*a*a*a*a*b"), "false");
    check(&regexp(&a, "(a*)*b"), "false");
    check(&regexp(&a, "^(a+)+$"), "true");
    check(&regexp(&(a.clone() + "!"), "^(a|a)*$"), "false");
    check(&regexp(&(a.clone() + "b"), "(a|aa)*b"), "true");
    check(&regexp(&a, "(x+x+)+y"), "false");
    check(&regexp(&a, "^(a?){30}a{30}$"), "false");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "regexp took {:?}",
        start.elapsed()
    );
}

// ---- accumulators ----

/// (aggregate, DISTINCT, pushed values as a JSON array with `<missing>`, expected).
const ACCUMULATOR_CASES: &[(&str, bool, &str, &str)] = &[
    ("count*", false, r#"[1, null, "<missing>"]"#, "3"),
    ("count*", false, "[]", "0"),
    ("count", false, r#"[1, null, "<missing>", "a", false]"#, "3"),
    ("count", false, "[]", "0"),
    ("count", true, r#"[1, 1.0, 2, "a", "a", null]"#, "3"),
    ("sum", false, "[1, 2, 3]", "6"),
    ("sum", false, "[1, 2.5]", "3.5"),
    ("sum", false, r#"[1, "x", null, true, "<missing>"]"#, "1"),
    ("sum", false, "[]", "null"),
    ("sum", false, r#"["x"]"#, "null"),
    ("sum", false, "[9223372036854775807, 1]", "9223372036854775808.0"),
    ("sum", false, "[1e308, 1e308]", "null"),
    ("sum", true, "[1, 1, 2]", "3"),
    ("avg", false, "[10, 20, 40]", "23.333333333333332"),
    ("avg", false, "[10, 20]", "15"),
    ("avg", false, "[1, 2]", "1.5"),
    ("avg", false, "[1.5, 2.5]", "2.0"),
    ("avg", false, "[]", "null"),
    ("avg", false, r#"["a", null]"#, "null"),
    ("avg", true, "[1, 1, 4]", "2.5"),
    ("min", false, "[3, 1, 2]", "1"),
    ("min", false, r#"[3, "a", null]"#, "3"),
    ("min", false, r#"["b", "a", [1]]"#, r#""a""#),
    ("min", false, "[1, 1.0]", "1"),
    ("min", false, "[]", "null"),
    ("min", false, r#"[null, "<missing>"]"#, "null"),
    ("max", false, r#"[3, "a", [1], {"x": 1}]"#, r#"{"x": 1}"#),
    ("max", false, "[true, false]", "true"),
    ("max", false, "[]", "null"),
    ("max", true, "[2, 2.0, 1]", "2"),
];

#[test]
fn accumulators() {
    let mut failures = Vec::new();
    for (name, distinct, pushed, want) in ACCUMULATOR_CASES {
        let mut acc = Accumulator::new(name, *distinct).unwrap_or_else(|| panic!("{name} is an aggregate"));
        let Value::Array(items) = v(pushed) else {
            panic!("pushed values must be an array")
        };
        for item in items {
            acc.push(match item {
                Value::String(s) if s == MISSING_ARG => None,
                other => Some(other),
            });
        }
        let got = acc.finish();
        if got != Some(v(want)) {
            failures.push(format!(
                "{name}(distinct={distinct}) over {pushed}: expected {want}, got {got:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(Accumulator::new("median", false).is_none());
    assert!(Accumulator::new("length", false).is_none());
}

#[test]
fn aggregate_detection() {
    for name in ["count", "sum", "avg", "min", "max"] {
        assert!(eval::is_aggregate(name), "{name}");
    }
    assert!(!eval::is_aggregate("length"));
    let sum = || call("sum", vec![field("a")]);
    let yes = [
        sum(),
        Expr::CountStar,
        bin(BinaryOp::Add, sum(), lit("1")),
        call("round", vec![call("avg", vec![field("a")])]),
        un(UnaryOp::Neg, sum()),
        any_in("x", field("arr"), bin(BinaryOp::Eq, field("x"), sum())),
        in_array(sum(), lit("[1]"), false),
        Expr::In {
            expr: Box::new(lit("1")),
            list: InList::List(vec![Expr::CountStar]),
            negated: false,
        },
        Expr::Between {
            expr: Box::new(lit("1")),
            low: Box::new(lit("0")),
            high: Box::new(sum()),
            negated: false,
        },
        like(s("a"), call("max", vec![field("s")]), false, false),
        Expr::Object(vec![("k".into(), sum())]),
        Expr::Array(vec![sum()]),
        Expr::Is {
            expr: Box::new(sum()),
            test: IsTest::Null,
            negated: false,
        },
    ];
    for e in &yes {
        assert!(eval::contains_aggregate(e), "{e:?}");
    }
    let no = [
        lit("1"),
        field("a"),
        param("p"),
        call("length", vec![field("s")]),
        any_in("x", field("arr"), lit("true")),
    ];
    for e in &no {
        assert!(!eval::contains_aggregate(e), "{e:?}");
    }
}

// ---- properties ----

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        prop_oneof![Just(0i64), Just(1), Just(-1), Just(2), Just(i64::MAX), Just(i64::MIN)].prop_map(Value::Int),
        any::<f64>().prop_filter_map("finite", |f| Value::float(f).ok()),
        prop_oneof![Just(0.5f64), Just(-0.0), Just(1e308), Just(2.0)].prop_map(Value::Float),
        "[a-c%_\\\\.*+?()\\[\\]{}^$|0-9: T-]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("2024-02-29"),
            Just("2024-01-31T10:00:00.5+02:00"),
            Just("month"),
            Just("day"),
            Just("weekday"),
            Just("(a*)*b"),
            Just("日本語"),
            Just("{\"a\": 1}"),
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-c]", inner, 0..4).prop_map(Value::Object),
        ]
    })
}

fn arb_path() -> impl Strategy<Value = Path> {
    let seg = prop_oneof![
        prop_oneof![Just("a"), Just("b"), Just("c"), Just("x"), Just("s")].prop_map(|k| Segment::Key(k.into())),
        (-3i64..3).prop_map(Segment::Index),
    ];
    prop::collection::vec(seg, 0..3).prop_map(|segments| Path { segments })
}

fn arb_binop() -> impl Strategy<Value = BinaryOp> {
    prop::sample::select(vec![
        BinaryOp::Or,
        BinaryOp::And,
        BinaryOp::Eq,
        BinaryOp::Ne,
        BinaryOp::Lt,
        BinaryOp::Le,
        BinaryOp::Gt,
        BinaryOp::Ge,
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Rem,
        BinaryOp::Concat,
    ])
}

/// Every (function, argument count) the library accepts, found by asking it.
fn valid_calls() -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for name in eval::function_names() {
        for n in 0..5 {
            let e = call(name, vec![lit("null"); n]);
            if !matches!(
                eval::eval(&e, &Value::Null, &Params::new()),
                Err(EvalError::Arity { .. })
            ) {
                out.push((name.to_string(), n));
            }
        }
    }
    out
}

fn arb_expr() -> impl Strategy<Value = Expr> {
    // Errors end an evaluation early, so the leaves and calls that raise
    // them are kept rare: most trees should be evaluated all the way.
    let leaf = prop_oneof![
        12 => arb_value().prop_map(Expr::Literal),
        8 => arb_path().prop_map(Expr::Field),
        3 => Just(param("p")),
        1 => prop_oneof![Just(param("absent")), Just(Expr::CountStar)],
    ];
    let calls = valid_calls();
    leaf.prop_recursive(4, 48, 4, move |inner| {
        prop_oneof![
            1 => (prop::sample::select(vec![UnaryOp::Not, UnaryOp::Neg]), inner.clone()).prop_map(|(o, e)| Expr::Unary(o, Box::new(e))),
            1 => (arb_binop(), inner.clone(), inner.clone()).prop_map(move |(o, l, r)| Expr::Binary(o, Box::new(l), Box::new(r))),
            1 => (inner.clone(), prop::collection::vec(inner.clone(), 0..3), any::<bool>()).prop_map(move |(e, l, n)| {
                Expr::In { expr: Box::new(e), list: InList::List(l), negated: n }
            }),
            1 => (inner.clone(), inner.clone(), any::<bool>()).prop_map(move |(e, a, n)| Expr::In {
                expr: Box::new(e),
                list: InList::Array(Box::new(a)),
                negated: n
            }),
            1 => (inner.clone(), inner.clone(), inner.clone(), any::<bool>()).prop_map(move |(e, l, h, n)| {
                Expr::Between { expr: Box::new(e), low: Box::new(l), high: Box::new(h), negated: n }
            }),
            1 => (inner.clone(), inner.clone(), any::<bool>(), any::<bool>()).prop_map(move |(e, p, ci, n)| {
                like(e, p, ci, n)
            }),
            1 => (inner.clone(), any::<bool>(), any::<bool>()).prop_map(move |(e, m, n)| Expr::Is {
                expr: Box::new(e),
                test: if m { IsTest::Missing } else { IsTest::Null },
                negated: n
            }),
            1 => (prop_oneof![Just("x"), Just("a")], inner.clone(), inner.clone()).prop_map(|(v, a, c)| any_in(v, a, c)),
            4 => prop::sample::select(calls.clone()).prop_flat_map({
                let inner = inner.clone();
                move |(name, n)| (Just(name), prop::collection::vec(inner.clone(), n..=n), prop::bool::weighted(0.02))
            })
            .prop_map(|(name, args, distinct)| Expr::Call { name, args, distinct, pos: Pos::default() }),
            1 => (prop::sample::select(vec!["count", "sum", "bogus", "length", "date_add"]), prop::collection::vec(inner.clone(), 0..5))
                .prop_map(|(name, args)| call(name, args)),
            1 => prop::collection::vec(("[a-c]", inner.clone()), 0..3).prop_map(Expr::Object),
            1 => prop::collection::vec(inner, 0..3).prop_map(Expr::Array),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Any expression over any row: no panic, only valid values, and the
    /// tests that must never be missing are not.
    #[test]
    fn random_expressions_never_panic(e in arb_expr(), row in arb_value(), p in arb_value()) {
        let mut params = Params::new();
        params.insert("p", p);
        if let Ok(Some(v)) = eval::eval(&e, &row, &params) {
            prop_assert!(v.validate().is_ok() || matches!(v.validate(), Err(rhizome_engine::value::ValueError::TooDeep { .. })), "{v:?}");
        }
        let is = Expr::Is { expr: Box::new(e.clone()), test: IsTest::Missing, negated: false };
        if let Ok(r) = eval::eval(&is, &row, &params) {
            prop_assert!(matches!(r, Some(Value::Bool(_))));
        }
        // NOT is an involution on booleans, and keeps missing and null.
        let not_not = un(UnaryOp::Not, un(UnaryOp::Not, e.clone()));
        if let (Ok(a), Ok(b)) = (eval::eval(&e, &row, &params), eval::eval(&not_not, &row, &params)) {
            let expect = match a {
                None => None,
                Some(Value::Bool(x)) => Some(Value::Bool(x)),
                Some(_) => Some(Value::Null),
            };
            prop_assert_eq!(b, expect);
        }
    }

    /// LIKE and regexp_like are separate matchers; on patterns both can
    /// express they must agree.
    #[test]
    fn like_agrees_with_regexp(text in "[ab]{0,12}", pattern in "[ab%_]{0,8}", ci in any::<bool>()) {
        let re: String = pattern.chars().map(|c| match c { '%' => ".*".to_string(), '_' => ".".into(), c => c.to_string() }).collect();
        let p = Params::new();
        let l = eval::eval(&like(s(&text), s(&pattern), ci, false), &Value::Null, &p);
        let r = eval::eval(&regexp(&text, &format!("^{re}$")), &Value::Null, &p);
        prop_assert_eq!(l, r);
    }

    /// Patterns of metacharacters: an error or an answer, never a panic.
    #[test]
    fn any_pattern_compiles_or_errs(text in "[ab\n]{0,20}", pattern in "[ab.*+?()|\\[\\]{}^$\\\\0-9,dws-]{0,24}") {
        let r = eval::eval(&regexp(&text, &pattern), &Value::Null, &Params::new());
        prop_assert!(matches!(r, Ok(Some(Value::Bool(_))) | Err(EvalError::BadArgument { .. })), "{r:?}");
    }

    /// date_diff undoes date_add, and date_cast is idempotent.
    #[test]
    fn dates_round_trip(ms in 0i64..253_402_300_799_999, n in -2000i64..2000, unit in prop::sample::select(vec!["millisecond", "second", "minute", "hour", "day", "week", "month", "year"])) {
        let p = Params::new();
        let cast = eval::eval(&call("date_cast", vec![Expr::Literal(Value::Int(ms))]), &Value::Null, &p).unwrap();
        let Some(Value::String(text)) = cast else { panic!("{ms} did not cast") };
        let again = eval::eval(&call("date_cast", vec![s(&text)]), &Value::Null, &p).unwrap();
        prop_assert_eq!(again, Some(Value::String(text.clone())));
        let back = eval::eval(&call("date_diff", vec![Expr::Literal(Value::Int(0)), s(&text), s("millisecond")]), &Value::Null, &p).unwrap();
        prop_assert_eq!(back, Some(Value::Int(ms)));
        let added = eval::eval(&call("date_add", vec![s(&text), Expr::Literal(Value::Int(n)), s(unit)]), &Value::Null, &p).unwrap();
        if let Some(Value::String(later)) = added {
            let diff = eval::eval(&call("date_diff", vec![s(&text), s(&later), s(unit)]), &Value::Null, &p).unwrap();
            prop_assert_eq!(diff, Some(Value::Int(n)), "{} + {} {} = {}", text, n, unit, later);
        }
    }

    /// Date-like text: never a panic, and whatever parses casts stably.
    #[test]
    fn date_text_never_panics(text in "[0-9]{4}-[0-9]{2}-[0-9]{2}([Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,10})?([Zz]|[+-][0-9]{2}:[0-9]{2})?)?", part in prop::sample::select(vec!["year", "month", "day", "hour", "minute", "second", "millisecond", "weekday", "dayofyear"])) {
        let p = Params::new();
        let cast = eval::eval(&call("date_cast", vec![s(&text)]), &Value::Null, &p).unwrap();
        let got = eval::eval(&call("date_part", vec![s(&text), s(part)]), &Value::Null, &p).unwrap();
        match cast {
            Some(Value::String(c)) => {
                let again = eval::eval(&call("date_cast", vec![s(&c)]), &Value::Null, &p).unwrap();
                prop_assert_eq!(again, Some(Value::String(c)));
                prop_assert!(matches!(got, Some(Value::Int(_))));
            }
            other => {
                prop_assert_eq!(other, Some(Value::Null));
                prop_assert_eq!(got, Some(Value::Null));
            }
        }
    }
}

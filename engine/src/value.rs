//! JSON values as the engine holds them.
//!
//! JSON numbers are split into exact 64-bit integers and finite floats, so an
//! integer written on one peer reads back bit-identical everywhere (no silent
//! trip through f64). Object keys are kept sorted (`BTreeMap`), which makes
//! every rendering of a document byte-identical across replicas. Values that
//! JSON cannot represent (NaN, infinities) are refused at construction.

use serde::de::{self, DeserializeSeed, EnumAccess, SeqAccess, VariantAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, SerializeTupleVariant};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

/// Deepest nesting of arrays and objects accepted anywhere (input, disk, wire).
/// Bounds recursion so hostile bytes cannot overflow the stack.
pub const MAX_DEPTH: usize = 64;

/// A JSON value.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Value {
    /// `null`.
    #[default]
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer, exact.
    Int(i64),
    /// A finite float (never NaN or infinite).
    Float(f64),
    /// A UTF-8 string.
    String(String),
    /// An array.
    Array(Vec<Value>),
    /// An object with sorted keys.
    Object(BTreeMap<String, Value>),
}

/// Why a value was refused.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ValueError {
    /// NaN or an infinity: JSON has no such number.
    NotFinite {
        /// Where in the value (a JSON path like `a.b[2]`).
        path: String,
    },
    /// An integer outside the signed 64-bit range.
    IntegerOutOfRange {
        /// Where in the value.
        path: String,
    },
    /// Arrays and objects nested deeper than [`MAX_DEPTH`].
    TooDeep {
        /// Where the limit was crossed.
        path: String,
    },
    /// Text that is not JSON; `line` and `column` are 1-based.
    Syntax {
        /// Line of the error.
        line: usize,
        /// Column of the error.
        column: usize,
        /// What the parser expected.
        reason: String,
    },
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueError::NotFinite { path } => write!(f, "{path}: NaN and infinities are not JSON numbers"),
            ValueError::IntegerOutOfRange { path } => write!(f, "{path}: integer outside the 64-bit signed range"),
            ValueError::TooDeep { path } => write!(f, "{path}: nested deeper than {MAX_DEPTH} levels"),
            ValueError::Syntax { line, column, reason } => {
                write!(f, "invalid JSON at line {line}, column {column}: {reason}")
            }
        }
    }
}

impl std::error::Error for ValueError {}

fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl Value {
    /// A float, refusing NaN and infinities.
    pub fn float(f: f64) -> Result<Value, ValueError> {
        if f.is_finite() {
            Ok(Value::Float(f))
        } else {
            Err(ValueError::NotFinite { path: String::new() })
        }
    }

    /// Parses JSON text.
    pub fn parse(text: &str) -> Result<Value, ValueError> {
        let json: serde_json::Value = serde_json::from_str(text).map_err(|e| ValueError::Syntax {
            line: e.line(),
            column: e.column(),
            reason: e.to_string(),
        })?;
        Value::from_json(&json)
    }

    /// Converts from `serde_json`, refusing what the engine cannot hold exactly.
    pub fn from_json(json: &serde_json::Value) -> Result<Value, ValueError> {
        from_json_at(json, "", 0)
    }

    /// Converts to `serde_json`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, serde_json::Value::Number)
            }
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::Array(a) => serde_json::Value::Array(a.iter().map(Value::to_json).collect()),
            Value::Object(o) => serde_json::Value::Object(o.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
        }
    }

    /// Checks the invariants a `Value` built by hand might break.
    pub fn validate(&self) -> Result<(), ValueError> {
        // Fast check first: the path of an error is only built when there is one.
        if is_valid(self, 0) {
            return Ok(());
        }
        validate_at(self, "", 0)
    }

    /// The object's fields, if it is one.
    pub fn as_object(&self) -> Option<&BTreeMap<String, Value>> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    /// The string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// Rank of the value's type in the engine's total order across types:
    /// null < bool < number < string < array < object.
    pub fn type_rank(&self) -> u8 {
        match self {
            Value::Null => 1,
            Value::Bool(_) => 2,
            Value::Int(_) | Value::Float(_) => 3,
            Value::String(_) => 4,
            Value::Array(_) => 5,
            Value::Object(_) => 6,
        }
    }

    /// The total order used wherever values must be ordered deterministically:
    /// by type rank, then numbers numerically (integers and floats together),
    /// strings bytewise, arrays and objects lexicographically.
    pub fn total_cmp(&self, other: &Value) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        match (self, other) {
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::Int(a), Value::Int(b)) => a.cmp(b),
            (Value::Int(a), Value::Float(b)) => cmp_int_float(*a, *b),
            (Value::Float(a), Value::Int(b)) => cmp_int_float(*b, *a).reverse(),
            // -0.0 and 0.0 are one number; NaN never occurs.
            (Value::Float(a), Value::Float(b)) if a == b => Ordering::Equal,
            (Value::Float(a), Value::Float(b)) => a.total_cmp(b),
            (Value::String(a), Value::String(b)) => a.cmp(b),
            (Value::Array(a), Value::Array(b)) => {
                for (x, y) in a.iter().zip(b) {
                    let o = x.total_cmp(y);
                    if o != Ordering::Equal {
                        return o;
                    }
                }
                a.len().cmp(&b.len())
            }
            (Value::Object(a), Value::Object(b)) => {
                for ((ka, va), (kb, vb)) in a.iter().zip(b) {
                    let o = ka.cmp(kb).then_with(|| va.total_cmp(vb));
                    if o != Ordering::Equal {
                        return o;
                    }
                }
                a.len().cmp(&b.len())
            }
            _ => self.type_rank().cmp(&other.type_rank()),
        }
    }
}

fn cmp_int_float(i: i64, f: f64) -> std::cmp::Ordering {
    // Compare exactly: i64 -> f64 can round, so split the float instead.
    use std::cmp::Ordering;
    // 2^63, exactly representable: every i64 is below it.
    const TWO_POW_63: f64 = i64::MAX as f64;
    if f >= TWO_POW_63 {
        return Ordering::Less;
    }
    if f < -TWO_POW_63 {
        return Ordering::Greater;
    }
    let t = f.trunc();
    match i.cmp(&(t as i64)) {
        Ordering::Equal => 0.0f64.partial_cmp(&(f - t)).unwrap_or(Ordering::Equal),
        o => o,
    }
}

fn from_json_at(json: &serde_json::Value, path: &str, depth: usize) -> Result<Value, ValueError> {
    Ok(match json {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if n.is_u64() {
                return Err(ValueError::IntegerOutOfRange { path: path.to_string() });
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                Value::float(f).map_err(|_| ValueError::NotFinite { path: path.to_string() })?
            }
        }
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Array(a) => {
            check_depth(path, depth)?;
            let mut out = Vec::with_capacity(a.len());
            for (i, v) in a.iter().enumerate() {
                out.push(from_json_at(v, &format!("{path}[{i}]"), depth + 1)?);
            }
            Value::Array(out)
        }
        serde_json::Value::Object(o) => {
            check_depth(path, depth)?;
            let mut out = BTreeMap::new();
            for (k, v) in o {
                out.insert(k.clone(), from_json_at(v, &child_path(path, k), depth + 1)?);
            }
            Value::Object(out)
        }
    })
}

fn check_depth(path: &str, depth: usize) -> Result<(), ValueError> {
    if depth >= MAX_DEPTH {
        return Err(ValueError::TooDeep { path: path.to_string() });
    }
    Ok(())
}

fn is_valid(v: &Value, depth: usize) -> bool {
    match v {
        Value::Float(f) => f.is_finite(),
        Value::Array(a) => depth < MAX_DEPTH && a.iter().all(|x| is_valid(x, depth + 1)),
        Value::Object(o) => depth < MAX_DEPTH && o.values().all(|x| is_valid(x, depth + 1)),
        _ => true,
    }
}

fn validate_at(v: &Value, path: &str, depth: usize) -> Result<(), ValueError> {
    match v {
        Value::Float(f) if !f.is_finite() => Err(ValueError::NotFinite { path: path.to_string() }),
        Value::Array(a) => {
            check_depth(path, depth)?;
            a.iter()
                .enumerate()
                .try_for_each(|(i, x)| validate_at(x, &format!("{path}[{i}]"), depth + 1))
        }
        Value::Object(o) => {
            check_depth(path, depth)?;
            o.iter()
                .try_for_each(|(k, x)| validate_at(x, &child_path(path, k), depth + 1))
        }
        _ => Ok(()),
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        self.write_json(&mut out);
        f.write_str(&out)
    }
}

impl Value {
    /// Appends the value as compact JSON (what `Display` prints): keys in
    /// order, strings escaped as serde_json escapes them, numbers as
    /// serde_json prints them.
    pub fn write_json(&self, out: &mut String) {
        write_value(self, out);
    }

    /// [`Value::write_json`] into bytes (UTF-8 text).
    pub fn write_json_bytes(&self, out: &mut Vec<u8>) {
        write_value(self, out);
    }
}

/// Where JSON text goes: a `String`, or bytes that hold UTF-8 text. One
/// writer serves both, so text and bytes are always the same JSON.
pub(crate) trait JsonOut {
    /// Appends text.
    fn text(&mut self, s: &str);
    /// Appends one ASCII byte.
    fn ascii(&mut self, b: u8);
    /// Appends an integer as serde_json prints it.
    fn int(&mut self, i: i64);
    /// Appends a finite float as serde_json prints it.
    fn float(&mut self, f: f64);
}

impl JsonOut for String {
    fn text(&mut self, s: &str) {
        self.push_str(s);
    }
    fn ascii(&mut self, b: u8) {
        self.push(char::from(b));
    }
    fn int(&mut self, i: i64) {
        let mut buf = NumBuf::new();
        self.push_str(buf.int(i));
    }
    fn float(&mut self, f: f64) {
        let mut buf = NumBuf::new();
        match buf.float(f) {
            Some(text) => self.push_str(text),
            None => float_slow(f, self),
        }
    }
}

impl JsonOut for Vec<u8> {
    fn text(&mut self, s: &str) {
        self.extend_from_slice(s.as_bytes());
    }
    fn ascii(&mut self, b: u8) {
        self.push(b);
    }
    fn int(&mut self, i: i64) {
        // Writing into a Vec cannot fail.
        let _ = serde_json::ser::Formatter::write_i64(&mut serde_json::ser::CompactFormatter, self, i);
    }
    fn float(&mut self, f: f64) {
        if f.is_finite() {
            let _ = serde_json::ser::Formatter::write_f64(&mut serde_json::ser::CompactFormatter, self, f);
        } else {
            self.extend_from_slice(b"null");
        }
    }
}

/// A stack buffer for one number's text. serde_json's own formatter
/// (itoa and its shortest-float printer) writes the digits, so the text is
/// the same as printing a `serde_json::Number`, without `core::fmt`.
struct NumBuf {
    bytes: [u8; 40],
}

impl NumBuf {
    fn new() -> NumBuf {
        NumBuf { bytes: [0; 40] }
    }

    fn int(&mut self, i: i64) -> &str {
        let mut w = &mut self.bytes[..];
        let ok = serde_json::ser::Formatter::write_i64(&mut serde_json::ser::CompactFormatter, &mut w, i).is_ok();
        let len = 40 - w.len();
        match std::str::from_utf8(&self.bytes[..len]) {
            Ok(s) if ok => s,
            _ => "0", // cannot happen: 20 ASCII digits at most
        }
    }

    /// `None` for a float that needs the slow path (not finite: `null`).
    fn float(&mut self, f: f64) -> Option<&str> {
        if !f.is_finite() {
            return None;
        }
        let mut w = &mut self.bytes[..];
        serde_json::ser::Formatter::write_f64(&mut serde_json::ser::CompactFormatter, &mut w, f).ok()?;
        let len = 40 - w.len();
        std::str::from_utf8(&self.bytes[..len]).ok()
    }
}

/// Floats through `serde_json::Number`'s `Display` (non-finite: `null`).
#[cold]
fn float_slow(f: f64, out: &mut String) {
    use std::fmt::Write;
    match serde_json::Number::from_f64(f) {
        Some(n) => {
            let _ = write!(out, "{n}");
        }
        None => out.push_str("null"),
    }
}

fn write_value(v: &Value, out: &mut impl JsonOut) {
    match v {
        Value::Null => out.text("null"),
        Value::Bool(b) => out.text(if *b { "true" } else { "false" }),
        Value::Int(i) => out.int(*i),
        Value::Float(f) => out.float(*f),
        Value::String(s) => write_str(s, out),
        Value::Array(a) => {
            out.ascii(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.ascii(b',');
                }
                write_value(x, out);
            }
            out.ascii(b']');
        }
        Value::Object(o) => {
            out.ascii(b'{');
            for (i, (k, x)) in o.iter().enumerate() {
                if i > 0 {
                    out.ascii(b',');
                }
                write_str(k, out);
                out.ascii(b':');
                write_value(x, out);
            }
            out.ascii(b'}');
        }
    }
}

/// Bytes that must be escaped in a JSON string (as serde_json escapes):
/// control characters, `"` and `\`.
#[inline]
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Whether any byte of `s` must be escaped: eight bytes at a time (the
/// classic "has a byte less than n" and "has a zero byte" word tricks,
/// exact for the question whether any byte matches), then the tail.
#[inline]
pub(crate) fn any_escape(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut words = s.chunks_exact(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        let x = u64::from_le_bytes(w);
        let control = x.wrapping_sub(ONES * 0x20) & !x;
        let quote = x ^ (ONES * u64::from(b'"'));
        let quote = quote.wrapping_sub(ONES) & !quote;
        let backslash = x ^ (ONES * u64::from(b'\\'));
        let backslash = backslash.wrapping_sub(ONES) & !backslash;
        if (control | quote | backslash) & HIGH != 0 {
            return true;
        }
    }
    words.remainder().iter().any(|&b| needs_escape(b))
}

/// The escape sequence of a byte that needs one (`None`: `\u00XX`).
fn escape_of(b: u8) -> Option<&'static str> {
    Some(match b {
        b'"' => "\\\"",
        b'\\' => "\\\\",
        b'\n' => "\\n",
        b'\r' => "\\r",
        b'\t' => "\\t",
        0x08 => "\\b",
        0x0c => "\\f",
        _ => return None,
    })
}

fn write_str(s: &str, out: &mut impl JsonOut) {
    out.ascii(b'"');
    if !any_escape(s.as_bytes()) {
        out.text(s); // the common case: nothing to escape
    } else {
        write_escaped(s, out);
    }
    out.ascii(b'"');
}

#[cold]
fn write_escaped(s: &str, out: &mut impl JsonOut) {
    let mut plain = 0;
    for (i, b) in s.bytes().enumerate() {
        if !needs_escape(b) {
            continue;
        }
        // `i` is at an ASCII byte, so both slices are on char boundaries.
        out.text(s.get(plain..i).unwrap_or_default());
        match escape_of(b) {
            Some(e) => out.text(e),
            None => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.text("\\u00");
                out.ascii(HEX[usize::from(b >> 4)]);
                out.ascii(HEX[usize::from(b & 0xf)]);
            }
        }
        plain = i + 1;
    }
    out.text(s.get(plain..).unwrap_or_default());
}

/// Appends `s` as a JSON string literal.
pub fn write_json_string(s: &str, out: &mut String) {
    write_str(s, out);
}

/// Appends bytes as a JSON string literal, escaped as [`write_json_string`]
/// escapes text. The bytes are not checked here: whoever turns `out` into
/// text checks it is UTF-8 (escaping never splits a multi-byte character,
/// whose bytes are all above 0x7f).
pub(crate) fn push_json_string(s: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    if !any_escape(s) {
        out.extend_from_slice(s);
    } else {
        push_escaped(s, out);
    }
    out.push(b'"');
}

#[cold]
fn push_escaped(s: &[u8], out: &mut Vec<u8>) {
    let mut plain = 0;
    for (i, &b) in s.iter().enumerate() {
        if !needs_escape(b) {
            continue;
        }
        out.extend_from_slice(&s[plain..i]);
        match escape_of(b) {
            Some(e) => out.extend_from_slice(e.as_bytes()),
            None => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
        }
        plain = i + 1;
    }
    out.extend_from_slice(&s[plain..]);
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::String(s.to_string())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::String(s)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Int(i)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

// Serde: natural JSON for human-readable formats (serde_json), a tagged
// variant form for binary formats (postcard), which cannot deserialize
// "any" and must know each value's type from a tag.

const VARIANTS: &[&str] = &["Null", "Bool", "Int", "Float", "String", "Array", "Object"];

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return self.to_json().serialize(s);
        }
        match self {
            Value::Null => s.serialize_unit_variant("Value", 0, "Null"),
            Value::Bool(b) => s.serialize_newtype_variant("Value", 1, "Bool", b),
            Value::Int(i) => s.serialize_newtype_variant("Value", 2, "Int", i),
            Value::Float(f) => s.serialize_newtype_variant("Value", 3, "Float", f),
            Value::String(x) => s.serialize_newtype_variant("Value", 4, "String", x),
            Value::Array(a) => {
                let mut t = s.serialize_tuple_variant("Value", 5, "Array", 1)?;
                t.serialize_field(&SeqOf(a))?;
                t.end()
            }
            Value::Object(o) => {
                let mut t = s.serialize_tuple_variant("Value", 6, "Object", 1)?;
                t.serialize_field(&MapOf(o))?;
                t.end()
            }
        }
    }
}

struct SeqOf<'a>(&'a [Value]);
impl Serialize for SeqOf<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for v in self.0 {
            seq.serialize_element(v)?;
        }
        seq.end()
    }
}
struct MapOf<'a>(&'a BTreeMap<String, Value>);
impl Serialize for MapOf<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        if d.is_human_readable() {
            let json = serde_json::Value::deserialize(d)?;
            return Value::from_json(&json).map_err(de::Error::custom);
        }
        Depth(0).deserialize(d)
    }
}

/// Binary deserialization with the nesting depth carried along.
#[derive(Clone, Copy)]
struct Depth(usize);

impl<'de> DeserializeSeed<'de> for Depth {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        if self.0 > MAX_DEPTH {
            return Err(de::Error::custom(format!(
                "value nested deeper than {MAX_DEPTH} levels"
            )));
        }
        d.deserialize_enum("Value", VARIANTS, self)
    }
}

impl<'de> Visitor<'de> for Depth {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a tagged JSON value")
    }
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        let (tag, variant): (u32, _) = data.variant()?;
        Ok(match tag {
            0 => {
                variant.unit_variant()?;
                Value::Null
            }
            1 => Value::Bool(variant.newtype_variant()?),
            2 => Value::Int(variant.newtype_variant()?),
            3 => {
                let f: f64 = variant.newtype_variant()?;
                Value::float(f).map_err(de::Error::custom)?
            }
            4 => Value::String(variant.newtype_variant()?),
            5 => variant.tuple_variant(
                1,
                Inner {
                    depth: self.0 + 1,
                    object: false,
                },
            )?,
            6 => variant.tuple_variant(
                1,
                Inner {
                    depth: self.0 + 1,
                    object: true,
                },
            )?,
            _ => return Err(de::Error::custom(format!("unknown value tag {tag}"))),
        })
    }
}

/// Reads the single field of the Array/Object variants.
struct Inner {
    depth: usize,
    object: bool,
}

impl<'de> Visitor<'de> for Inner {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("array or object body")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let missing = || de::Error::custom("missing array/object body");
        if self.object {
            seq.next_element_seed(ObjectBody(self.depth))?.ok_or_else(missing)
        } else {
            seq.next_element_seed(ArrayBody(self.depth))?.ok_or_else(missing)
        }
    }
}

struct ArrayBody(usize);
impl<'de> DeserializeSeed<'de> for ArrayBody {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_seq(self)
    }
}
impl<'de> Visitor<'de> for ArrayBody {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("array elements")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        // Never trust a length prefix from hostile bytes with an allocation.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element_seed(Depth(self.0))? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
}

struct ObjectBody(usize);
impl<'de> DeserializeSeed<'de> for ObjectBody {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_map(self)
    }
}
impl<'de> Visitor<'de> for ObjectBody {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("object entries")
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(k) = map.next_key::<String>()? {
            let v = map.next_value_seed(Depth(self.0))?;
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_roundtrip() {
        let v = Value::parse(r#"{"a":[1,2.5,"x",null,true,{"b":[]}],"c":-9223372036854775808}"#).unwrap();
        let bytes = postcard::to_allocvec(&v).unwrap();
        let back: Value = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(v, back);
        assert_eq!(serde_json::to_string(&v).unwrap(), v.to_string());
    }

    #[test]
    fn refuses_what_json_cannot_hold() {
        assert!(matches!(Value::float(f64::NAN), Err(ValueError::NotFinite { .. })));
        assert!(matches!(
            Value::parse("18446744073709551615"),
            Err(ValueError::IntegerOutOfRange { .. })
        ));
        let e = Value::parse("{\"a\":\n  [1,}").unwrap_err();
        assert!(matches!(e, ValueError::Syntax { line: 2, .. }), "{e}");
        assert!(
            matches!(
                Value::parse("{1: 2}"),
                Err(ValueError::Syntax { line: 1, column: 2, .. })
            ),
            "keys are strings"
        );
        assert!(matches!(Value::parse("NaN"), Err(ValueError::Syntax { .. })));
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert!(matches!(Value::parse(&deep), Err(ValueError::TooDeep { .. })));
    }

    #[test]
    fn hostile_binary_depth_is_bounded() {
        // Tag 5 (array) of length 1, repeated: a deep nest in very few bytes.
        let mut bytes = Vec::new();
        for _ in 0..100_000 {
            bytes.extend_from_slice(&[5, 1]);
        }
        bytes.push(0);
        assert!(postcard::from_bytes::<Value>(&bytes).is_err());
    }

    /// Text and bytes are serde_json's JSON, numbers and escapes included.
    #[test]
    fn json_text_is_serde_json_text() {
        let floats = [
            0.0,
            -0.0,
            1.5,
            0.1,
            -2.5e-7,
            1e300,
            123456789012345680.0,
            f64::MIN_POSITIVE,
            5e-324,
            f64::MAX,
            f64::MIN,
        ];
        let mut values: Vec<Value> = floats.iter().map(|&f| Value::Float(f)).collect();
        values.extend([0, 1, -1, 42, i64::MIN, i64::MAX].map(Value::Int));
        let strings = [
            "",
            "plain",
            "q\"uote",
            "back\\slash",
            "\u{1}\u{1f}\n\r\t\u{8}\u{c}",
            "é ☃ \u{7f}",
            "long enough to take words: \" at 30",
        ];
        values.extend(strings.map(Value::from));
        values.push(Value::Array(values.clone()));
        for v in values {
            let expected = serde_json::to_string(&v.to_json()).unwrap();
            assert_eq!(v.to_string(), expected);
            let mut bytes = b"x".to_vec();
            v.write_json_bytes(&mut bytes);
            assert_eq!(&bytes[1..], expected.as_bytes());
        }
    }

    /// The word-at-a-time escape check agrees with the byte-wise one, for
    /// every byte at every place of a word and of the tail.
    #[test]
    fn escape_check_is_exact() {
        for len in [1usize, 7, 8, 9, 16, 19] {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut s = vec![b'a'; len];
                    s[at] = b;
                    assert_eq!(any_escape(&s), needs_escape(b), "byte {b:#x} at {at} of {len}");
                    // Bytes just above and below what is escaped, around it.
                    s.iter_mut().filter(|c| **c == b'a').for_each(|c| *c = 0x80);
                    assert_eq!(any_escape(&s), needs_escape(b), "byte {b:#x} among 0x80s");
                }
            }
        }
    }

    #[test]
    fn numbers_compare_across_int_and_float() {
        use std::cmp::Ordering::*;
        assert_eq!(Value::Int(3).total_cmp(&Value::Float(3.0)), Equal);
        assert_eq!(Value::Int(3).total_cmp(&Value::Float(3.5)), Less);
        assert_eq!(Value::Int(i64::MAX).total_cmp(&Value::Float(9.3e18)), Less);
        assert_eq!(Value::Int(-4).total_cmp(&Value::Float(-3.5)), Less);
        assert_eq!(Value::Null.total_cmp(&Value::Bool(false)), Less);
        assert_eq!(Value::String("a".into()).total_cmp(&Value::Array(vec![])), Less);
    }
}

//! Secondary indexes: sort keys, the catalogue, and entry maintenance.
//!
//! An index orders a collection's documents by the values at some paths. Its
//! entries live in the `index` table as `index id (4) + sort key + document
//! number (8)` with an empty value, and change in the same transaction as the
//! documents. The sort key encodes values so that byte order is the engine's
//! total order (missing < null < bool < number < string < array < object),
//! each value self-delimiting so a tuple of them is a plain concatenation.
//! A number is its `f64` in order-preserving bits, then the integer's exact
//! distance from that `f64` (0 for floats), so integers beyond 2^53, which
//! share an `f64`, still get distinct keys in numeric order, and an integer
//! and a float that are equal share one. Because byte order is value order
//! (and equal bytes are equal values for scalars), a reader may decide a
//! comparison of an indexed value with a scalar from the key alone
//! (`dql::plan` key tests); anything else is checked on the document.

use crate::value::Value;
use serde::{Deserialize, Serialize};

/// An index definition, as stored in the catalogue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IndexDef {
    /// Name, unique per store.
    pub name: String,
    /// Internal id: the prefix of its entries.
    pub id: u32,
    /// Collection indexed.
    pub collection: String,
    /// Indexed paths, in order (keys from the document root).
    pub paths: Vec<Vec<String>>,
}

impl IndexDef {
    /// The values this index takes from a document (missing where absent).
    pub fn values(&self, doc: &Value) -> Vec<Option<Value>> {
        self.paths.iter().map(|p| lookup(doc, p)).collect()
    }

    /// The entry key of a document with these values.
    pub fn entry(&self, values: &[Option<Value>], num: u64) -> Vec<u8> {
        let mut k = self.id.to_be_bytes().to_vec();
        for v in values {
            encode_sort_key(v.as_ref(), &mut k);
        }
        k.extend_from_slice(&num.to_be_bytes());
        k
    }
}

fn lookup(doc: &Value, path: &[String]) -> Option<Value> {
    let mut v = doc;
    for k in path {
        v = v.as_object()?.get(k)?;
    }
    Some(v.clone())
}

/// Appends the order-preserving encoding of a value (`None`: missing).
pub fn encode_sort_key(v: Option<&Value>, out: &mut Vec<u8>) {
    match v {
        None => out.push(0x01),
        Some(Value::Null) => out.push(0x02),
        Some(Value::Bool(b)) => out.push(0x03 + *b as u8),
        Some(Value::Int(i)) => number(*i as f64, rounding_error(*i), out),
        Some(Value::Float(f)) => number(*f, 0, out),
        Some(Value::String(s)) => {
            out.push(0x06);
            string(s, out);
        }
        Some(Value::Array(a)) => {
            out.push(0x07);
            a.iter().for_each(|x| encode_sort_key(Some(x), out));
            out.push(0x00);
        }
        Some(Value::Object(o)) => {
            out.push(0x08);
            for (k, x) in o {
                out.push(0x01);
                string(k, out);
                encode_sort_key(Some(x), out);
            }
            out.push(0x00);
        }
    }
}

/// How far an integer is from its nearest `f64`: at most half the gap
/// between neighbouring `f64`s there, so it never reorders two of them.
fn rounding_error(i: i64) -> i64 {
    // `i as f64` is integral and below 2^64 in magnitude: exact in i128.
    (i128::from(i) - (i as f64) as i128) as i64
}

fn number(f: f64, error: i64, out: &mut Vec<u8>) {
    out.push(0x05);
    let f = if f == 0.0 { 0.0 } else { f }; // -0.0 and 0.0 are one number
    let bits = f.to_bits();
    let ordered = if bits >> 63 == 1 { !bits } else { bits | (1 << 63) };
    out.extend_from_slice(&ordered.to_be_bytes());
    out.extend_from_slice(&((error as u64) ^ (1 << 63)).to_be_bytes());
}

/// Zero bytes are escaped as `00 FF` and the end is `00 00`, so a string
/// sorts before every longer string it prefixes.
fn string(s: &str, out: &mut Vec<u8>) {
    for &b in s.as_bytes() {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

/// Deepest array/object nesting [`sort_key_len`] follows in a key.
const MAX_KEY_DEPTH: usize = 64;

/// The length of the one encoded value (see [`encode_sort_key`]) that
/// `key` starts with, or `None` if the bytes are not a whole encoding (a
/// damaged key: callers then fall back to reading the document).
pub fn sort_key_len(key: &[u8]) -> Option<usize> {
    value_len(key, 0)
}

/// The column encodings of an index entry key (`index id (4) + one
/// encoding per path + document number (8)`), or `None` if it does not
/// split into `columns` whole encodings.
pub fn entry_columns(key: &[u8], columns: usize) -> Option<Vec<&[u8]>> {
    let body = key.get(4..key.len().checked_sub(8)?)?;
    let mut out = Vec::with_capacity(columns);
    let mut at = 0;
    for _ in 0..columns {
        let n = sort_key_len(body.get(at..)?)?;
        out.push(&body[at..at + n]);
        at += n;
    }
    (at == body.len()).then_some(out)
}

fn value_len(key: &[u8], depth: usize) -> Option<usize> {
    if depth > MAX_KEY_DEPTH {
        return None;
    }
    match *key.first()? {
        0x01..=0x04 => Some(1),
        0x05 => (key.len() >= 17).then_some(17),
        0x06 => string_len(&key[1..]).map(|n| n + 1),
        0x07 => {
            let mut at = 1;
            while *key.get(at)? != 0x00 {
                at += value_len(&key[at..], depth + 1)?;
            }
            Some(at + 1)
        }
        0x08 => {
            let mut at = 1;
            while *key.get(at)? != 0x00 {
                if key[at] != 0x01 {
                    return None;
                }
                at += 1;
                at += string_len(key.get(at..)?)?;
                at += value_len(key.get(at..)?, depth + 1)?;
            }
            Some(at + 1)
        }
        _ => None,
    }
}

/// Length of an escaped string body with its `00 00` end.
fn string_len(key: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        match *key.get(at)? {
            0x00 => match *key.get(at + 1)? {
                0x00 => return Some(at + 2),
                0xFF => at += 2,
                _ => return None,
            },
            _ => at += 1,
        }
    }
}

/// The smallest key above every key that starts with `prefix` (for an
/// exclusive upper bound), or `None` if there is none.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(v: Option<&str>) -> Vec<u8> {
        let mut out = Vec::new();
        let v = v.map(|t| Value::parse(t).unwrap());
        encode_sort_key(v.as_ref(), &mut out);
        out
    }

    #[test]
    fn byte_order_is_the_total_order() {
        let ordered = [
            None,
            Some("null"),
            Some("false"),
            Some("true"),
            Some("-1e300"),
            Some("-2"),
            Some("-1.5"),
            Some("0"),
            Some("0.5"),
            Some("1"),
            Some("3"),
            Some("1e300"),
            Some(r#""""#),
            Some(r#""a""#),
            Some(r#""a\u0000""#),
            Some(r#""ab""#),
            Some(r#""b""#),
            Some("[]"),
            Some("[1]"),
            Some("[1,2]"),
            Some("[2]"),
            Some("{}"),
            Some(r#"{"a":1}"#),
            Some(r#"{"a":2}"#),
            Some(r#"{"b":0}"#),
        ];
        for w in ordered.windows(2) {
            assert!(key(w[0]) < key(w[1]), "{:?} < {:?}", w[0], w[1]);
        }
        assert_eq!(key(Some("-0.0")), key(Some("0")));
        assert_eq!(key(Some("3.0")), key(Some("3")));
    }

    #[test]
    fn sort_key_len_finds_each_value() {
        let samples = [
            None,
            Some("null"),
            Some("true"),
            Some("-1.5"),
            Some(r#""a\u0000b""#),
            Some(r#""""#),
            Some(r#"[1,"x",[null,{}]]"#),
            Some(r#"{"a":{"b":[1]},"c":"\u0000"}"#),
        ];
        let mut entry = 7u32.to_be_bytes().to_vec();
        for v in samples {
            let k = key(v);
            assert_eq!(sort_key_len(&k), Some(k.len()), "{v:?}");
            assert_eq!(sort_key_len(&k[..k.len() - 1]), None, "{v:?} cut short");
            entry.extend(&k);
        }
        entry.extend(42u64.to_be_bytes());
        let cols = entry_columns(&entry, samples.len()).unwrap();
        let want: Vec<Vec<u8>> = samples.iter().map(|v| key(*v)).collect();
        assert_eq!(cols, want.iter().map(Vec::as_slice).collect::<Vec<_>>());
        assert_eq!(entry_columns(&entry, samples.len() - 1), None);
        assert_eq!(entry_columns(&entry[..10], 1), None);
    }

    #[test]
    fn prefix_end_bounds_a_prefix() {
        assert_eq!(prefix_end(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF]), None);
    }
}

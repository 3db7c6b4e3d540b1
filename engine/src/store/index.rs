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
//! and a float that are equal share one. Readers still re-check the
//! predicate on the document: an index only finds candidates.

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
    fn prefix_end_bounds_a_prefix() {
        assert_eq!(prefix_end(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF]), None);
    }
}

//! Local records: small named JSON values an embedding layer keeps beside
//! the documents, in the same transactions, never synced (sync
//! subscriptions, for one). They live in the meta table under `l/` + name,
//! as JSON text, like system settings under `s/`.

use super::{corrupt, ReadTx, StoreError, WriteTx};
use crate::codec::CodecError;
use crate::kv::{Kv, KvRead, KvWrite, Table};
use crate::value::Value;

/// Longest name of a local record, in bytes.
pub const MAX_LOCAL_NAME_BYTES: usize = 256;

fn key(name: &str) -> Result<Vec<u8>, StoreError> {
    if name.is_empty() || name.len() > MAX_LOCAL_NAME_BYTES {
        return Err(StoreError::InvalidLocalName {
            length_bytes: name.len(),
        });
    }
    Ok([b"l/".as_slice(), name.as_bytes()].concat())
}

/// Every local record whose name starts with `prefix`, in name order.
fn scan<R: KvRead + ?Sized>(r: &R, prefix: &str) -> Result<Vec<(String, Value)>, StoreError> {
    let from = [b"l/".as_slice(), prefix.as_bytes()].concat();
    json_records(r, &from, "local record")
}

/// The meta records whose keys start with `from`, named by their key after
/// its two-byte kind (`s/`, `l/`), each a JSON value; `what` names them in
/// the error a damaged one gives.
pub(super) fn json_records<R: KvRead + ?Sized>(
    r: &R,
    from: &[u8],
    what: &str,
) -> Result<Vec<(String, Value)>, StoreError> {
    let to = super::prefix_end(from);
    let mut out = Vec::new();
    let mut bad = None;
    r.scan(Table::Meta, from, to.as_deref(), false, &mut |k, v| {
        let name = String::from_utf8_lossy(k.get(2..).unwrap_or_default()).into_owned();
        match std::str::from_utf8(v).ok().and_then(|t| Value::parse(t).ok()) {
            Some(value) => out.push((name, value)),
            None => bad = Some(name),
        }
        bad.is_none()
    })?;
    match bad {
        Some(name) => Err(corrupt(
            &format!("({what}s)"),
            None,
            CodecError::Malformed {
                reason: format!("{what} {name}"),
            },
        )),
        None => Ok(out),
    }
}

impl<K: Kv> ReadTx<'_, K> {
    /// Local records whose names start with `prefix`.
    pub fn locals(&self, prefix: &str) -> Result<Vec<(String, Value)>, StoreError> {
        scan(&self.kv, prefix)
    }
}

impl<K: Kv> WriteTx<'_, K> {
    /// Writes (or replaces) a local record; it commits with the transaction.
    pub fn put_local(&mut self, name: &str, value: &Value) -> Result<(), StoreError> {
        let key = key(name)?;
        self.kv.put(Table::Meta, &key, value.to_string().as_bytes())?;
        Ok(())
    }

    /// Removes a local record; returns whether it existed.
    pub fn delete_local(&mut self, name: &str) -> Result<bool, StoreError> {
        let key = key(name)?;
        Ok(self.kv.delete(Table::Meta, &key)?)
    }

    /// Local records whose names start with `prefix`, this transaction's
    /// writes included.
    pub fn locals(&self, prefix: &str) -> Result<Vec<(String, Value)>, StoreError> {
        scan(&self.kv, prefix)
    }
}

//! Stored documents as reads find them, before decoding.
//!
//! A query reads a few fields of many documents and returns few of them, so
//! reads hand out [`RawDoc`]s: the record with its envelope checked, whose
//! fields are read from the bytes on demand ([`crate::codec::lookup_field`])
//! and which is rendered to JSON only if it is returned. A kept record
//! ([`RawDoc::record`]) can be re-opened later with [`RawDoc::open`].

use super::{corrupt, split_checked, with_id, StoreError};
use crate::codec::{self, FieldReader, Lookup};
use crate::value::Value;

/// A stored document: envelope and checksum verified, body not decoded.
#[derive(Clone, Copy, Debug)]
pub struct RawDoc<'a> {
    collection: &'a str,
    record: &'a [u8],
    id: &'a [u8],
    body: &'a [u8],
}

impl<'a> RawDoc<'a> {
    /// Opens a stored record of `collection`; damage is an error naming the
    /// document where its id can still be read.
    pub fn open(collection: &'a str, record: &'a [u8]) -> Result<RawDoc<'a>, StoreError> {
        let (id, body) = split_checked(collection, record)?;
        Ok(RawDoc {
            collection,
            record,
            id,
            body,
        })
    }

    /// Opens a record that [`RawDoc::open`] checked when it was read and
    /// that was kept unchanged since ([`RawDoc::record`]): the envelope is
    /// split again, the checksum not recomputed.
    pub(crate) fn reopen(collection: &'a str, record: &'a [u8]) -> Result<RawDoc<'a>, StoreError> {
        let (id, body) = codec::split_checked_record(record);
        let body = body.map_err(|e| corrupt(collection, id.as_ref().ok().copied(), e))?;
        let id = id.map_err(|e| corrupt(collection, None, e))?;
        Ok(RawDoc {
            collection,
            record,
            id,
            body,
        })
    }

    /// The whole stored record, to keep the document without decoding it.
    pub fn record(&self) -> &'a [u8] {
        self.record
    }

    /// The collection the document belongs to.
    pub fn collection(&self) -> &'a str {
        self.collection
    }

    /// The document's `_id`.
    pub fn id(&self) -> Result<Value, StoreError> {
        codec::decode_id(self.id).map_err(|e| corrupt(self.collection, None, e))
    }

    /// The document with its header read, for reading fields.
    pub fn fields(&self) -> Result<Fields<'a>, StoreError> {
        Ok(Fields {
            raw: *self,
            reader: FieldReader::new(self.body).map_err(|e| self.damaged(e))?,
        })
    }

    /// Whether the document is visible (not deleted, or revived by writes
    /// its deletion had not seen).
    pub fn is_visible(&self) -> Result<bool, StoreError> {
        self.fields()?.is_visible()
    }

    /// The visible document as JSON with its `_id`, or `None` if it is not
    /// visible. Simple documents are read straight from the bytes
    /// (`codec::decode_visible`); the others are decoded and rendered.
    pub fn render(&self) -> Result<Option<Value>, StoreError> {
        let fields = match codec::decode_visible(self.body).map_err(|e| self.damaged(e))? {
            Some(fields) => Some(fields),
            None => codec::decode_doc(self.body).map_err(|e| self.damaged(e))?.render(),
        };
        match fields {
            Some(f) => Ok(Some(with_id(&self.id()?, f))),
            None => Ok(None),
        }
    }

    /// The document's full CRDT state.
    pub fn doc(&self) -> Result<crate::doc::Doc, StoreError> {
        codec::decode_doc(self.body).map_err(|e| self.damaged(e))
    }

    /// The document's `_id` as stored (encoded).
    pub(crate) fn id_bytes(&self) -> &'a [u8] {
        self.id
    }

    /// The document body (after the envelope).
    pub(crate) fn body(&self) -> &'a [u8] {
        self.body
    }

    pub(crate) fn damaged(&self, e: codec::CodecError) -> StoreError {
        corrupt(self.collection, Some(self.id), e)
    }
}

/// A stored document whose header was read, answering field lookups.
pub struct Fields<'a> {
    raw: RawDoc<'a>,
    reader: FieldReader<'a>,
}

impl<'a> Fields<'a> {
    /// The stored record.
    pub fn raw(&self) -> RawDoc<'a> {
        self.raw
    }

    /// See [`RawDoc::is_visible`].
    pub fn is_visible(&self) -> Result<bool, StoreError> {
        match self.reader.plainly_visible().map_err(|e| self.raw.damaged(e))? {
            Some(visible) => Ok(visible),
            None => Ok(self.raw.render()?.is_some()),
        }
    }

    /// The field at `keys` (object keys from the top, `_id` included) of a
    /// visible document, read from the bytes when they alone can say.
    /// [`Lookup::Unknown`]: render the document to know.
    pub fn field(&self, keys: &[&str]) -> Result<Lookup, StoreError> {
        let Some((first, rest)) = keys.split_first() else {
            return Ok(Lookup::Unknown);
        };
        if *first != "_id" {
            return self.reader.lookup(keys).map_err(|e| self.raw.damaged(e));
        }
        let id = self.raw.id()?;
        let mut at = &id;
        for k in rest {
            match at.as_object().and_then(|o| o.get(*k)) {
                Some(v) => at = v,
                None => return Ok(Lookup::Missing),
            }
        }
        Ok(Lookup::Value(at.clone()))
    }
}

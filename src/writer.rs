//! Streaming insert: `write` chunks, then `commit` or `abort`. The body is
//! invisible until commit; a dropped writer is an abort.

use crate::cache::{Cache, Commit};
use crate::error::{Error, Result};
use crate::meta::Meta;
use crate::through::WriteThrough;
use bytes::{Bytes, BytesMut};

/// Initial buffer when the size is unknown; it grows by doubling.
const UNKNOWN_SIZE_START: usize = 16 * 1024;

/// An insert in progress. Not `Clone`: one writer, one body.
pub struct Writer {
    cache: Cache,
    key: Box<[u8]>,
    /// Hash of `key`, kept to unregister after `key` moved into the cache.
    hash: u128,
    meta: Meta,
    declared: Option<u64>,
    buf: BytesMut,
    born: u64,
    failed: Option<Error>,
    finished: bool,
}

impl Writer {
    pub(crate) fn new(
        cache: Cache,
        key: Box<[u8]>,
        meta: Meta,
        declared: Option<u64>,
        born: u64,
    ) -> Self {
        let start = declared.map_or(UNKNOWN_SIZE_START, |n| n as usize);
        Writer {
            cache,
            hash: crate::KeyHash::of(&key).0,
            key,
            meta,
            declared,
            buf: BytesMut::with_capacity(start),
            born,
            failed: None,
            finished: false,
        }
    }

    /// Appends a chunk. Past the object size limit the writer fails for
    /// good: this and every later call, and `commit`, return the error.
    pub fn write(&mut self, chunk: &[u8]) -> Result<()> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let size = (self.buf.len() + chunk.len()) as u64;
        let over_declared = self.declared.is_some_and(|d| size > d);
        let check = if over_declared {
            Err(Error::SizeMismatch {
                declared: self.declared.unwrap_or(0),
                written: size,
            })
        } else {
            self.cache.check_size(size)
        };
        if let Err(e) = check {
            self.buf = BytesMut::new(); // release what was buffered
            self.failed = Some(e.clone());
            return Err(e);
        }
        self.buf.extend_from_slice(chunk);
        Ok(())
    }

    /// Body bytes written so far.
    pub fn written(&self) -> u64 {
        self.buf.len() as u64
    }

    /// Metadata to be stored; may still be changed before commit (e.g. once
    /// trailers arrive).
    pub fn meta_mut(&mut self) -> &mut Meta {
        &mut self.meta
    }

    /// Makes the object visible, unless the writer failed, the body does not
    /// match the declared size, or a purge covered it during the fill.
    pub fn commit(self) -> Result<Commit> {
        let (commit, through) = self.commit_deferred()?;
        if let Some(t) = through {
            t.run();
        }
        Ok(commit)
    }

    /// Like [`Writer::commit`], but the block-tier write-through is returned
    /// to run later (see [`WriteThrough`]); the object is in memory already.
    pub fn commit_deferred(mut self) -> Result<(Commit, Option<WriteThrough>)> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let written = self.buf.len() as u64;
        if let Some(declared) = self.declared.filter(|&d| d != written) {
            return Err(Error::SizeMismatch { declared, written });
        }
        let body: Bytes = std::mem::take(&mut self.buf).freeze();
        let key = std::mem::take(&mut self.key);
        let meta = std::mem::take(&mut self.meta);
        let result = self.cache.store_deferred(key, meta, body, Some(self.born));
        self.finished = result.is_ok();
        result
    }

    /// Ends the writer without storing anything and returns what was
    /// written (size and checksum filled in), or the write's failure.
    pub fn into_parts(mut self) -> Result<(Meta, Bytes)> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let body: Bytes = std::mem::take(&mut self.buf).freeze();
        let mut meta = std::mem::take(&mut self.meta);
        meta.size = body.len() as u64;
        meta.checksum = xxhash_rust::xxh3::xxh3_64(&body);
        Ok((meta, body))
    }

    /// Drops the body; nothing was ever visible.
    pub fn abort(self) {}
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.cache.writer_done(self.hash, self.born, self.finished);
    }
}

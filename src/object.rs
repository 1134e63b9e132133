//! A cached object: key, metadata and body, shared and immutable. With
//! block tiers the body of an object in the memory tier is usually a
//! *handle*: `Bytes` over the shared RAM tier's mapping plus where it lies
//! there, so every process serves the one copy in RAM.

use crate::block::{BodyAt, Extent};
use crate::meta::Meta;
use crate::purge::Facts;
use bytes::Bytes;
use std::sync::OnceLock;

/// Bytes charged per object beyond body, key and metadata (node, map slot,
/// `Arc` header).
const OVERHEAD: u64 = 128;

/// A cached object: shared, immutable, and cheap to hand out (`Arc`).
#[derive(Debug)]
pub struct Object {
    pub(crate) key: Box<[u8]>,
    pub(crate) meta: Meta,
    pub(crate) body: Bytes,
    pub(crate) born: u64,
    pub(crate) facts: Facts,
    /// Found in a block tier by this lookup (not in this process's memory).
    pub(crate) from_block: bool,
    /// Where its body lies in a block tier's region file, if it is one
    /// record there (for a memory-tier handle: in the RAM tier).
    pub(crate) at: Option<BodyAt>,
    /// A sliced object's slices, verified, in order (then `body` is empty).
    pub(crate) slices: Vec<Extent>,
    /// A sliced object's body copied into one buffer, made on the first
    /// call of [`Object::body`] only.
    pub(crate) joined: OnceLock<Bytes>,
}

impl Object {
    pub(crate) fn new(key: Box<[u8]>, meta: Meta, body: Bytes, born: u64, facts: Facts) -> Object {
        Object {
            key,
            meta,
            body,
            born,
            facts,
            from_block: false,
            at: None,
            slices: Vec::new(),
            joined: OnceLock::new(),
        }
    }

    pub fn key(&self) -> &[u8] {
        &self.key
    }
    pub fn meta(&self) -> &Meta {
        &self.meta
    }
    /// The body; cloning it is a reference-count bump, not a copy. For an
    /// object stored as slices (see [`Object::extents`]) the first call
    /// copies them into one buffer, kept as long as this object: callers
    /// that can send file extents should use those instead.
    pub fn body(&self) -> &Bytes {
        if self.slices.is_empty() {
            return &self.body;
        }
        self.joined.get_or_init(|| {
            let mut b = Vec::with_capacity(self.size() as usize);
            self.slices
                .iter()
                .for_each(|e| b.extend_from_slice(e.bytes()));
            b.into()
        })
    }

    /// Body length in bytes (whole or sliced), without joining slices.
    pub fn size(&self) -> u64 {
        match self.slices.is_empty() {
            true => self.body.len() as u64,
            false => self.slices.iter().map(|e| e.len).sum(),
        }
    }

    /// Whether the body is stored as slices (several extents).
    pub fn is_sliced(&self) -> bool {
        !self.slices.is_empty()
    }
    /// Purge sequence at which its fill began.
    pub fn born(&self) -> u64 {
        self.born
    }
    /// True when this lookup found it in a block tier rather than in this
    /// process's memory tier.
    pub fn from_block(&self) -> bool {
        self.from_block
    }
    /// The region-file extent of a body stored as one record in a block
    /// tier (the RAM tier included; already verified), for `sendfile`.
    /// `None` for a body only in this process's heap (just filled, not yet
    /// written through, or no block tier), and for a sliced one.
    pub fn extent(&self) -> Option<Extent> {
        let at = self.at.as_ref()?;
        Some(at.extent(self.body.len() as u64))
    }

    /// The body as verified file extents, in order, to send one after the
    /// other (`sendfile` each): one for a whole body in a region file, one
    /// per slice for a sliced one; empty for a body only in the heap (then
    /// send [`Object::body`]). Cloning an extent is a reference-count bump.
    pub fn extents(&self) -> Vec<Extent> {
        match &self.at {
            Some(at) => vec![at.extent(self.body.len() as u64)],
            None => self.slices.clone(),
        }
    }
    /// An object held by no cache (e.g. a peer's answer the hot cache did
    /// not admit), so it can be handed out like a cached one.
    pub fn detached(key: &[u8], meta: Meta, body: Bytes) -> Object {
        let facts = Facts::new(
            key,
            meta.group.as_deref(),
            &meta.tags,
            &meta.surrogate_keys,
            meta.mask,
        );
        Object::new(key.into(), meta, body, 0, facts)
    }

    /// The same object with its body in a region file (after the
    /// write-through landed): the heap copy can go.
    pub(crate) fn rebound(&self, body: Bytes, at: Option<BodyAt>, slices: Vec<Extent>) -> Object {
        Object {
            at,
            slices,
            ..Object::new(
                self.key.clone(),
                self.meta.clone(),
                body,
                self.born,
                self.facts.clone(),
            )
        }
    }

    /// Memory-tier budget it uses: as if its body were in memory, so a
    /// memory tier of handles mirrors the RAM tier it points into.
    pub(crate) fn charged(&self) -> u64 {
        self.size() + self.key.len() as u64 + self.meta.footprint() as u64 + OVERHEAD
    }

    /// Heap bytes this object takes when its body lies in a block tier (a
    /// handle): the struct, key, metadata, purge facts and the ARC node.
    pub(crate) fn handle_heap(&self) -> u64 {
        let facts =
            8 * (self.facts.dirs.len() + self.facts.surrogates.len()) + 2 * self.facts.tags.len();
        let slices = self.slices.len() * std::mem::size_of::<Extent>();
        (std::mem::size_of::<Object>() + self.key.len() + self.meta.footprint() + facts + slices)
            as u64
            + OVERHEAD
    }
}

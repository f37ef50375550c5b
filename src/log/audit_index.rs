//! The audit index on disk: one entry per commit and the keys `GET /api/v1/audit` filters by,
//! in the store's `audit` table, so that the cost of history is disk, not memory.
//!
//! Commits are grouped in blocks of 64 consecutive seqs (`block = seq / 64`): a key per commit
//! and per filter cost more than the commit itself when the store was sled (several
//! microseconds per key written), and blocks write about eight keys per 64 commits. Keys (one
//! table, so one transaction writes entries and filters together):
//!
//! ```text
//! 's' ‖ block                      → version(1) ‖ postcard(Vec<AuditEntry>)  the block's entries
//! 'p' ‖ project ‖ 0x00 ‖ block     → u64 (BE) bitmask of the block's seqs acting in the project
//! 'u' ‖ principal(17) ‖ block      → u64 bitmask (0 ‖ zeros for reeve itself, 1 ‖ token id)
//! 'l' ‖ plane(1) ‖ block           → u64 bitmask
//! 'o' ‖ accepted(1) ‖ block        → u64 bitmask
//! ```
//!
//! `block` is 8 bytes big-endian, so each prefix iterates in commit order; bit `seq % 64` is
//! set when that seq matches. Project ids are slugs (no 0x00), so the separator is unambiguous.
//! Writing an entry again is harmless (the block keeps one entry per seq; masks are ORed). The
//! index is derived: it is rebuilt by folding the log whenever it is behind (see
//! `control::restore`).

use std::collections::BTreeMap;

use crate::domain::{AuditEntry, Plane, Principal};

use std::ops::Bound;

use super::LogError;
use super::kv::{Batch, Tree};

/// Consecutive seqs per block (one bit each in a mask).
const BLOCK: u64 = 64;

const ENTRY_V1: u8 = 1;

/// What a page of the audit trail is filtered by; `None` matches anything.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub project: Option<String>,
    pub principal: Option<Principal>,
    pub plane: Option<Plane>,
    pub accepted: Option<bool>,
}

impl AuditFilter {
    pub fn matches(&self, e: &AuditEntry) -> bool {
        self.project
            .as_ref()
            .is_none_or(|p| e.project.as_ref() == Some(p))
            && self.principal.is_none_or(|p| p == e.principal)
            && self.plane.is_none_or(|p| p == e.plane)
            && self.accepted.is_none_or(|a| a == e.accepted)
    }

    /// The key prefixes whose seqs must all hold an entry for it to match.
    fn prefixes(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        if let Some(p) = &self.project {
            out.push(project_prefix(p));
        }
        if let Some(p) = self.principal {
            out.push(principal_prefix(p));
        }
        if let Some(p) = self.plane {
            out.push(vec![b'l', plane_byte(p)]);
        }
        if let Some(a) = self.accepted {
            out.push(vec![b'o', u8::from(a)]);
        }
        out
    }
}

fn project_prefix(project: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(project.len() + 2);
    k.push(b'p');
    k.extend_from_slice(project.as_bytes());
    k.push(0);
    k
}

fn principal_prefix(p: Principal) -> Vec<u8> {
    let mut k = Vec::with_capacity(18);
    k.push(b'u');
    match p {
        Principal::System => k.extend_from_slice(&[0u8; 17]),
        Principal::Token(id) => {
            k.push(1);
            k.extend_from_slice(id.as_bytes());
        }
    }
    k
}

/// Stable bytes for planes: never renumber, only add.
fn plane_byte(p: Plane) -> u8 {
    match p {
        Plane::System => 0,
        Plane::Rest => 1,
        Plane::Mcp => 2,
        Plane::Cli => 3,
        Plane::Scheduler => 4,
        Plane::Runner => 5,
        Plane::Web => 6,
    }
}

fn with_block(mut prefix: Vec<u8>, block: u64) -> Vec<u8> {
    prefix.extend_from_slice(&block.to_be_bytes());
    prefix
}

fn entries_key(block: u64) -> Vec<u8> {
    with_block(vec![b's'], block)
}

fn bit(seq: u64) -> u64 {
    1 << (seq % BLOCK)
}

fn block_of(key: &[u8], prefix_len: usize) -> Option<u64> {
    key.get(prefix_len..)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
}

/// The filter keys an entry sets its bit in.
fn filter_prefixes(e: &AuditEntry) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(4);
    if let Some(p) = &e.project {
        out.push(project_prefix(p));
    }
    out.push(principal_prefix(e.principal));
    out.push(vec![b'l', plane_byte(e.plane)]);
    out.push(vec![b'o', u8::from(e.accepted)]);
    out
}

fn decode_block(block: u64, value: &[u8]) -> Result<Vec<AuditEntry>, LogError> {
    let corrupt = |why: String| LogError::Corrupt {
        seq: block * BLOCK,
        why: format!("audit index block {block}: {why}"),
    };
    match value.split_first() {
        Some((&ENTRY_V1, rest)) => {
            postcard::from_bytes(rest).map_err(|e| corrupt(format!("does not decode: {e}")))
        }
        Some((v, _)) => Err(corrupt(format!("unknown version {v}"))),
        None => Err(corrupt("empty".into())),
    }
}

fn decode_mask(key: &[u8], value: &[u8]) -> Result<u64, LogError> {
    <[u8; 8]>::try_from(value)
        .map(u64::from_be_bytes)
        .map_err(|_| LogError::Corrupt {
            seq: 0,
            why: format!(
                "the audit index holds a {}-byte mask under a {}-byte key",
                value.len(),
                key.len()
            ),
        })
}

type StoreErr<'a> = &'a dyn Fn(redb::Error) -> LogError;

/// The writes that index entries (any seqs, any order) and their filter bits, merged with
/// what their blocks already hold; `None` when there is nothing to index.
pub(super) fn batch<'a>(
    tree: &Tree,
    entries: impl IntoIterator<Item = &'a AuditEntry>,
    store_err: StoreErr<'_>,
) -> Result<Option<Batch>, LogError> {
    let mut blocks: BTreeMap<u64, BTreeMap<u64, &AuditEntry>> = BTreeMap::new();
    let mut masks: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    for e in entries {
        let block = e.seq / BLOCK;
        blocks.entry(block).or_default().insert(e.seq, e);
        for prefix in filter_prefixes(e) {
            *masks.entry(with_block(prefix, block)).or_default() |= bit(e.seq);
        }
    }
    if blocks.is_empty() {
        return Ok(None);
    }
    let mut batch = Batch::default();
    for (block, new) in blocks {
        let key = entries_key(block);
        let old = match tree.get(&key).map_err(store_err)? {
            Some(v) => decode_block(block, &v)?,
            None => Vec::new(),
        };
        let mut merged: BTreeMap<u64, &AuditEntry> = old.iter().map(|e| (e.seq, e)).collect();
        merged.extend(new);
        let all: Vec<&AuditEntry> = merged.into_values().collect();
        let value = postcard::to_extend(&all, vec![ENTRY_V1]).map_err(|err| LogError::Corrupt {
            seq: block * BLOCK,
            why: format!("audit index block {block} does not encode: {err}"),
        })?;
        batch.insert(key, value);
    }
    for (key, mask) in masks {
        let old = match tree.get(&key).map_err(store_err)? {
            Some(v) => decode_mask(&key, &v)?,
            None => 0,
        };
        batch.insert(key, (old | mask).to_be_bytes());
    }
    Ok(Some(batch))
}

/// The highest seq the index holds an entry for (0: none). Blocks are written in seq order
/// and a crash leaves the store at its last durable commit, a prefix of its writes, so every
/// seq up to it has one.
pub(super) fn last_seq(tree: &Tree, store_err: StoreErr<'_>) -> Result<u64, LogError> {
    let Some((key, value)) = tree
        .scan_prefix_rev(b"s")
        .next()
        .transpose()
        .map_err(store_err)?
    else {
        return Ok(0);
    };
    let block = block_of(&key, 1).unwrap_or(0);
    Ok(decode_block(block, &value)?.last().map_or(0, |e| e.seq))
}

/// The first block at or after `from` under `prefix`, with its mask.
fn seek(
    tree: &Tree,
    prefix: &[u8],
    from: u64,
    store_err: StoreErr<'_>,
) -> Result<Option<(u64, u64)>, LogError> {
    let start = with_block(prefix.to_vec(), from);
    let end = with_block(prefix.to_vec(), u64::MAX);
    match tree
        .range(Bound::Included(start), Bound::Included(end))
        .next()
        .transpose()
        .map_err(store_err)?
    {
        Some((k, v)) => {
            let mask = decode_mask(&k, &v)?;
            Ok(block_of(&k, prefix.len()).map(|b| (b, mask)))
        }
        None => Ok(None),
    }
}

/// Up to `limit` entries after `since` that match `filter`, in seq order, from the index on
/// disk. Several filters are intersected block by block, leapfrogging: each is sought to the
/// highest block any of them is at until all agree, then their masks are ANDed. A page costs
/// a few seeks per block it returns entries from, not a scan of what lies between. An entry
/// that does not decode is damage, reported as such, never skipped.
pub(super) fn page(
    tree: &Tree,
    filter: &AuditFilter,
    since: u64,
    limit: usize,
    store_err: StoreErr<'_>,
) -> Result<Vec<AuditEntry>, LogError> {
    let prefixes = filter.prefixes();
    let mut out = Vec::new();
    let first = since.saturating_add(1);
    let mut block = first / BLOCK;
    if prefixes.is_empty() {
        for item in tree.range(
            Bound::Included(entries_key(block)),
            Bound::Included(entries_key(u64::MAX)),
        ) {
            let (k, v) = item.map_err(store_err)?;
            let b = block_of(&k, 1).unwrap_or(0);
            for e in decode_block(b, &v)? {
                if out.len() >= limit {
                    return Ok(out);
                }
                if e.seq > since {
                    out.push(e);
                }
            }
        }
        return Ok(out);
    }
    'search: while out.len() < limit {
        let mut mask = u64::MAX;
        for prefix in &prefixes {
            match seek(tree, prefix, block, store_err)? {
                None => break 'search,
                Some((b, _)) if b > block => {
                    block = b;
                    continue 'search;
                }
                Some((_, m)) => mask &= m,
            }
        }
        if mask != 0 {
            let value = tree
                .get(entries_key(block))
                .map_err(store_err)?
                .ok_or_else(|| LogError::Corrupt {
                    seq: block * BLOCK,
                    why: format!("audit index block {block} has filter bits but no entries"),
                })?;
            for e in decode_block(block, &value)? {
                if out.len() >= limit {
                    break;
                }
                if e.seq > since && mask & bit(e.seq) != 0 {
                    out.push(e);
                }
            }
        }
        match block.checked_add(1) {
            Some(next) => block = next,
            None => break,
        }
    }
    Ok(out)
}

//! The audit index on disk: one entry per commit and the keys `GET /api/v1/audit` filters by,
//! in sled's `audit` tree, so that the cost of history is disk, not memory.
//!
//! Keys (one tree, so one sled batch writes an entry and its filter keys together):
//!
//! ```text
//! 's' ‖ seq                       → version(1) ‖ postcard(AuditEntry)
//! 'p' ‖ project ‖ 0x00 ‖ seq      → ()        (commits acting in a project)
//! 'u' ‖ principal(17) ‖ seq       → ()        (0 ‖ zeros for reeve itself, 1 ‖ token id)
//! 'l' ‖ plane(1) ‖ seq            → ()
//! 'o' ‖ accepted(1) ‖ seq         → ()
//! ```
//!
//! seq is 8 bytes big-endian, so each prefix iterates in commit order. Project ids are slugs
//! (no 0x00), so the separator is unambiguous. The index is derived: it is rebuilt by folding
//! the log whenever it is behind (see `control::restore`).

use crate::domain::{AuditEntry, Plane, Principal};

use super::LogError;

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
    }
}

fn with_seq(mut prefix: Vec<u8>, seq: u64) -> Vec<u8> {
    prefix.extend_from_slice(&seq.to_be_bytes());
    prefix
}

fn entry_key(seq: u64) -> Vec<u8> {
    with_seq(vec![b's'], seq)
}

/// Adds an entry and its filter keys to `batch`.
pub(super) fn index(batch: &mut sled::Batch, e: &AuditEntry) -> Result<(), LogError> {
    let value = postcard::to_extend(e, vec![ENTRY_V1]).map_err(|err| LogError::Corrupt {
        seq: e.seq,
        why: format!("its audit entry does not encode: {err}"),
    })?;
    batch.insert(entry_key(e.seq), value);
    let empty: &[u8] = &[];
    if let Some(p) = &e.project {
        batch.insert(with_seq(project_prefix(p), e.seq), empty);
    }
    batch.insert(with_seq(principal_prefix(e.principal), e.seq), empty);
    batch.insert(with_seq(vec![b'l', plane_byte(e.plane)], e.seq), empty);
    batch.insert(with_seq(vec![b'o', u8::from(e.accepted)], e.seq), empty);
    Ok(())
}

fn decode(seq: u64, value: &[u8]) -> Result<AuditEntry, LogError> {
    let corrupt = |why: String| LogError::Corrupt { seq, why };
    match value.split_first() {
        Some((&ENTRY_V1, rest)) => postcard::from_bytes(rest)
            .map_err(|e| corrupt(format!("its audit entry does not decode: {e}"))),
        Some((v, _)) => Err(corrupt(format!("its audit entry has unknown version {v}"))),
        None => Err(corrupt("its audit entry is empty".into())),
    }
}

fn seq_of(key: &[u8], prefix_len: usize) -> Option<u64> {
    key.get(prefix_len..)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
}

/// The highest seq the index holds an entry for (0: none). Entries are written in seq order
/// and sled recovers a prefix of its writes, so every seq up to it has one.
pub(super) fn last_seq(tree: &sled::Tree) -> Result<Option<u64>, sled::Error> {
    Ok(tree
        .scan_prefix([b's'])
        .next_back()
        .transpose()?
        .and_then(|(k, _)| seq_of(&k, 1)))
}

/// The first seq at or after `from` under `prefix`.
fn seek(tree: &sled::Tree, prefix: &[u8], from: u64) -> Result<Option<u64>, sled::Error> {
    let start = with_seq(prefix.to_vec(), from);
    let end = with_seq(prefix.to_vec(), u64::MAX);
    Ok(tree
        .range(start..=end)
        .next()
        .transpose()?
        .and_then(|(k, _)| seq_of(&k, prefix.len())))
}

/// Up to `limit` entries after `since` that match `filter`, in seq order, from the index on
/// disk. Several filters are intersected by leapfrogging their key ranges, so a page costs a
/// few seeks per entry returned rather than a scan of everything in between. An entry that
/// does not decode is damage, reported as such, never skipped.
pub(super) fn page(
    tree: &sled::Tree,
    filter: &AuditFilter,
    since: u64,
    limit: usize,
    sled_err: &dyn Fn(sled::Error) -> LogError,
) -> Result<Vec<AuditEntry>, LogError> {
    let prefixes = filter.prefixes();
    let mut out = Vec::new();
    let mut candidate = since.saturating_add(1);
    if prefixes.is_empty() {
        for item in tree.range(entry_key(candidate)..=entry_key(u64::MAX)) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(sled_err)?;
            let seq = seq_of(&k, 1).ok_or_else(|| LogError::Corrupt {
                seq: 0,
                why: format!("the audit index holds a malformed key of {} bytes", k.len()),
            })?;
            out.push(decode(seq, &v)?);
        }
        return Ok(out);
    }
    'search: while out.len() < limit {
        let mut agreed = true;
        for prefix in &prefixes {
            match seek(tree, prefix, candidate).map_err(sled_err)? {
                None => break 'search,
                Some(seq) if seq > candidate => {
                    candidate = seq;
                    agreed = false;
                    break;
                }
                Some(_) => {}
            }
        }
        if !agreed {
            continue;
        }
        let value = tree
            .get(entry_key(candidate))
            .map_err(sled_err)?
            .ok_or_else(|| LogError::Corrupt {
                seq: candidate,
                why: "the audit index has filter keys for it but no entry".into(),
            })?;
        out.push(decode(candidate, &value)?);
        match candidate.checked_add(1) {
            Some(next) => candidate = next,
            None => break,
        }
    }
    Ok(out)
}

//! Builds that left memory, on disk: the store's `cold` table, written from the [`ColdOp`]s the
//! fold hands out (see `domain/cold.rs`), in commit order, by the store's background thread.
//!
//! ```text
//! 'b' ‖ build(16)                          → version(1) ‖ postcard(ColdBuild)
//! 'j' ‖ job(16)                            → build(16)
//! 'p' ‖ project ‖ 0x00 ‖ order(8) ‖ build  → ()      a project's builds by creation order
//! 'n' ‖ project ‖ 0x00 ‖ number(8) ‖ build → ()      the generations of one build number
//! 'x' ‖ ended(8) ‖ job(16)                 → ()      cold output retention may still prune
//! 'w'                                      → seq(8)  every op of commits up to it is here
//! ```
//!
//! Integers are big-endian (times are never negative), so each prefix iterates in order.
//! Like the audit index, the tree is derived: an op written again changes nothing, and a
//! start folds the commits after `'w'` to write whatever a crash kept from it. A recalled
//! build keeps its record (a reader holding the state from before the recall may still look
//! for it there); memory has it as it is now, and every read prefers memory. Its `'x'` keys
//! go, since retention finds its jobs in memory again.

use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;

use std::ops::Bound;

use super::LogError;
use super::kv::{Batch, Tree};
use crate::domain::{ColdBuild, ColdOp, Millis};

const RECORD_V1: u8 = 1;
const THROUGH_KEY: &[u8] = b"w";

fn build_key(id: Uuid) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(b'b');
    k.extend_from_slice(id.as_bytes());
    k
}

fn job_key(id: Uuid) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(b'j');
    k.extend_from_slice(id.as_bytes());
    k
}

fn project_prefix(tag: u8, project: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(project.len() + 26);
    k.push(tag);
    k.extend_from_slice(project.as_bytes());
    k.push(0);
    k
}

fn ranked_key(tag: u8, project: &str, rank: u64, id: Uuid) -> Vec<u8> {
    let mut k = project_prefix(tag, project);
    k.extend_from_slice(&rank.to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

fn expiry_key(ended: Millis, job: Uuid) -> Vec<u8> {
    let mut k = Vec::with_capacity(25);
    k.push(b'x');
    k.extend_from_slice(&u64::try_from(ended).unwrap_or(0).to_be_bytes());
    k.extend_from_slice(job.as_bytes());
    k
}

fn uuid_at(bytes: &[u8], at: usize) -> Option<Uuid> {
    bytes
        .get(at..at + 16)
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .map(Uuid::from_bytes)
}

fn encode(b: &ColdBuild) -> Result<Vec<u8>, String> {
    let mut out = vec![RECORD_V1];
    out.extend(postcard::to_allocvec(b).map_err(|e| e.to_string())?);
    Ok(out)
}

fn decode(raw: &[u8]) -> Result<ColdBuild, String> {
    match raw.split_first() {
        Some((&RECORD_V1, body)) => postcard::from_bytes(body).map_err(|e| e.to_string()),
        Some((v, _)) => Err(format!("a cold build record of unknown version {v}")),
        None => Err("an empty cold build record".into()),
    }
}

type Err<'a> = &'a dyn Fn(redb::Error) -> LogError;

fn damaged(what: String, why: String) -> LogError {
    LogError::Failed(format!("the cold build record of {what} is damaged: {why}"))
}

/// A record as the store has it.
pub fn get(tree: &Tree, id: Uuid, err: Err<'_>) -> Result<Option<ColdBuild>, LogError> {
    tree.get(build_key(id))
        .map_err(err)?
        .map(|raw| decode(&raw).map_err(|why| damaged(format!("build {id}"), why)))
        .transpose()
}

pub fn build_of_job(tree: &Tree, job: Uuid, err: Err<'_>) -> Result<Option<Uuid>, LogError> {
    Ok(tree
        .get(job_key(job))
        .map_err(err)?
        .and_then(|raw| uuid_at(&raw, 0)))
}

pub fn generations(
    tree: &Tree,
    project: &str,
    number: u64,
    err: Err<'_>,
) -> Result<Vec<Uuid>, LogError> {
    let mut prefix = project_prefix(b'n', project);
    prefix.extend_from_slice(&number.to_be_bytes());
    let at = prefix.len();
    tree.scan_prefix(&prefix)
        .keys()
        .map(|k| k.map_err(err).map(|k| uuid_at(&k, at)))
        .filter_map(Result::transpose)
        .collect()
}

/// A project's cold build ids with `order` below `before`, newest first: (order, id).
pub fn page(
    tree: &Tree,
    project: &str,
    before: Option<u64>,
    limit: usize,
    err: Err<'_>,
) -> Result<Vec<(u64, Uuid)>, LogError> {
    let prefix = project_prefix(b'p', project);
    let at = prefix.len();
    let mut end = prefix.clone();
    match before {
        Some(order) => end.extend_from_slice(&order.to_be_bytes()),
        None => end.extend_from_slice(&[0xff; 8]),
    }
    let mut out = Vec::new();
    for k in tree
        .range_rev(Bound::Included(prefix.clone()), Bound::Excluded(end))
        .keys()
    {
        let k = k.map_err(err)?;
        let order = k
            .get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes);
        if let (Some(order), Some(id)) = (order, uuid_at(&k, at + 8)) {
            out.push((order, id));
        }
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// Cold jobs whose output ended before `before`, oldest first: (end time, job).
pub fn prunable(
    tree: &Tree,
    before: Millis,
    limit: usize,
    err: Err<'_>,
) -> Result<Vec<(Millis, Uuid)>, LogError> {
    let end = expiry_key(before, Uuid::nil());
    let mut out = Vec::new();
    for k in tree
        .range(Bound::Included(b"x".to_vec()), Bound::Excluded(end))
        .keys()
        .take(limit)
    {
        let k = k.map_err(err)?;
        let ended = k
            .get(1..9)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(|b| Millis::try_from(u64::from_be_bytes(b)).unwrap_or(Millis::MAX));
        if let (Some(ended), Some(job)) = (ended, uuid_at(&k, 9)) {
            out.push((ended, job));
        }
    }
    Ok(out)
}

pub fn through(tree: &Tree, err: Err<'_>) -> Result<u64, LogError> {
    Ok(tree
        .get(THROUGH_KEY)
        .map_err(err)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map_or(0, u64::from_be_bytes))
}

/// The writes of the ops of the commits up to `through`, in order, and of `'w'` moved to
/// `through`. (The chunks of pruned output are the caller's to delete, before these.)
pub fn batch(
    tree: &Tree,
    ops: &[(u64, ColdOp)],
    through: u64,
    err: Err<'_>,
) -> Result<Batch, LogError> {
    let mut batch = Batch::default();
    // Records this batch already wrote, for the ops after them.
    let mut written: HashMap<Uuid, ColdBuild> = HashMap::new();
    let mut owner: HashMap<Uuid, Uuid> = HashMap::new();
    let encode_err = |id: Uuid| move |why| damaged(format!("build {id}"), why);
    for (_, op) in ops {
        match op {
            ColdOp::Evicted(b) => {
                let id = b.build.id;
                batch.insert(build_key(id), encode(b).map_err(encode_err(id))?);
                for j in &b.jobs {
                    batch.insert(job_key(j.id), id.as_bytes());
                    owner.insert(j.id, id);
                }
                batch.insert(
                    ranked_key(b'p', &b.build.project, b.build.order, id),
                    Vec::new(),
                );
                batch.insert(
                    ranked_key(b'n', &b.build.project, b.build.number, id),
                    Vec::new(),
                );
                for (ended, job) in b.prunable() {
                    batch.insert(expiry_key(ended, job), Vec::new());
                }
                written.insert(id, (**b).clone());
            }
            ColdOp::Recalled(id) => {
                let record = match written.get(id) {
                    Some(b) => Some(b.clone()),
                    None => get(tree, *id, err)?,
                };
                if let Some(b) = record {
                    for (ended, job) in b.prunable() {
                        batch.remove(expiry_key(ended, job));
                    }
                }
            }
            ColdOp::LogsPruned { jobs, at } => {
                let mut builds: Vec<Uuid> = Vec::new();
                for job in jobs {
                    let b = match owner.get(job) {
                        Some(b) => Some(*b),
                        None => build_of_job(tree, *job, err)?,
                    };
                    if let Some(b) = b
                        && !builds.contains(&b)
                    {
                        builds.push(b);
                    }
                }
                for id in builds {
                    let record = match written.remove(&id) {
                        Some(b) => Some(b),
                        None => get(tree, id, err)?,
                    };
                    let Some(mut b) = record else { continue };
                    for (ended, job) in b.prunable().filter(|(_, j)| jobs.contains(j)) {
                        batch.remove(expiry_key(ended, job));
                    }
                    b.mark_pruned(jobs, *at);
                    batch.insert(build_key(id), encode(&b).map_err(encode_err(id))?);
                    written.insert(id, b);
                }
            }
        }
    }
    batch.insert(THROUGH_KEY, through.to_be_bytes());
    Ok(batch)
}

/// The newest version of a record: the store's, with the ops not yet written laid over it.
/// `pending` must have been taken before the store was read (an op leaves it only once the
/// store holds its effect, so nothing falls between the two).
pub fn overlay(
    mut record: Option<ColdBuild>,
    id: Uuid,
    pending: &[(u64, ColdOp)],
) -> Option<ColdBuild> {
    for (_, op) in pending {
        match op {
            ColdOp::Evicted(b) if b.build.id == id => record = Some((**b).clone()),
            ColdOp::LogsPruned { jobs, at } => {
                if let Some(b) = record.as_mut() {
                    b.mark_pruned(jobs, *at);
                }
            }
            _ => {}
        }
    }
    record
}

/// The pending evictions, for reads that look for builds the store does not have yet.
pub fn pending_builds(pending: &[(u64, ColdOp)]) -> impl Iterator<Item = &Arc<ColdBuild>> {
    pending.iter().filter_map(|(_, op)| match op {
        ColdOp::Evicted(b) => Some(b),
        _ => None,
    })
}

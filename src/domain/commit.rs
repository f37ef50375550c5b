//! What a commit says: the types of one entry of the log, as the fold reads it. How a commit
//! is encoded, hash-chained, stored and verified is the log's (`crate::log`); the domain only
//! reads commits, so it depends on nothing outside itself.

use serde::{Deserialize, Serialize};

use super::{Command, Event, Plane, Principal};

pub type Hash = [u8; 32];

/// The hash that the first commit chains from.
pub const GENESIS: Hash = [0u8; 32];

/// Who asked, through which door, and what they asked for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub principal: Principal,
    pub plane: Plane,
    pub request_id: String,
    pub idempotency_key: Option<String>,
    pub command: Command,
}

/// Whether `decide` accepted the command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    Accepted,
    Rejected {
        status: u16,
        code: String,
        reason: String,
        field: Option<String>,
    },
}

/// Everything a commit says, apart from its place in the chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommitBody {
    /// Unix milliseconds, stamped by the writer (never earlier than the previous commit).
    pub at: i64,
    pub meta: Meta,
    pub outcome: Outcome,
    pub events: Vec<Event>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Commit {
    pub seq: u64,
    pub prev_hash: Hash,
    pub hash: Hash,
    pub body: CommitBody,
}

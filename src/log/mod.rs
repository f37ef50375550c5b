//! The event log: one [`Commit`] per command, hash-chained, written to reeve's own
//! write-ahead log ([`wal`], framed by [`frame`]) and kept in a redb file behind it ([`Store`], [`kv`]).
//!
//! A stored record is `version(1) ‖ seq(8, BE) ‖ prev_hash(32) ‖ hash(32) ‖ body`, where `body`
//! is the postcard encoding of [`CommitBody`] and `hash = SHA-256(prev_hash ‖ seq ‖ body)`.
//! The hash covers the body bytes exactly as stored, so verifying a record never depends on
//! re-encoding it: a later version that upcasts old bodies still verifies old records.

pub mod audit_index;
mod cold;
pub mod frame;
pub mod jetstream;
pub mod kv;
mod migrate;
pub mod snapshot;
mod store;
pub mod wal;

pub use store::{Note, STORE_FILE, Store, SyncMode};

use sha2::{Digest, Sha256};

/// The version byte that leads every record written by this code.
pub const FORMAT_V1: u8 = 1;
const HEADER_LEN: usize = 1 + 8 + 32 + 32;

// The record's types are the domain's (the fold reads commits); this module owns how they
// are sealed, stored and checked.
pub use crate::domain::commit::{Commit, CommitBody, GENESIS, Hash, Meta, Outcome};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("storage error in {dir}: {source}")]
    Store {
        dir: String,
        #[source]
        source: Box<redb::Error>,
    },
    /// sled, read only to move a data dir written by an older reeve into the store.
    #[error("storage error in {dir}: {source}")]
    Sled {
        dir: String,
        #[source]
        source: sled::Error,
    },
    #[error("i/o error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "data dir {dir} is in use by another reeve process; stop it first, or read it through the server"
    )]
    Locked { dir: String },
    #[error("commit {seq} is corrupt: {why}")]
    Corrupt { seq: u64, why: String },
    /// The data dir is damaged: reeve must not serve it. The message says what to do.
    #[error("{0}")]
    Damaged(Box<Damage>),
    #[error("the log cannot be written: {0}")]
    Failed(String),
    #[error("could not encode commit {seq}: {source}")]
    Encode {
        seq: u64,
        #[source]
        source: postcard::Error,
    },
}

/// Damage in a data dir: where it is, which commit it reaches first, and how many commits
/// from there on cannot be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub dir: String,
    /// The first commit that is damaged or missing, when one can be named.
    pub first_seq: Option<u64>,
    /// The file (and byte offset) where the damage was found.
    pub location: Option<String>,
    /// How many commits, from `first_seq` to the newest one any copy holds, are affected.
    pub affected: Option<u64>,
    pub why: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the log in {} is damaged", self.dir)?;
        if let Some(seq) = self.first_seq {
            write!(f, " from commit seq {seq} on")?;
        }
        write!(f, ": {}", self.why)?;
        if let Some(at) = &self.location {
            write!(f, " [{at}]")?;
        }
        match (self.first_seq, self.affected) {
            (Some(seq), Some(n)) => write!(
                f,
                ". {n} commit{} (seq {seq} to {}) cannot be served as recorded",
                if n == 1 { "" } else { "s" },
                seq + n.saturating_sub(1)
            )?,
            _ => f.write_str(". Which commits are affected cannot be told from the files")?,
        }
        write!(
            f,
            ". reeve will not serve a damaged log, since that would hide or lose acknowledged commands: restore the data dir from a backup, and run `reeve audit verify --data-dir {}` to see the damage",
            self.dir
        )
    }
}

impl Commit {
    /// Seals a body into the chain after `prev_hash`.
    pub fn seal(
        seq: u64,
        prev_hash: Hash,
        body: CommitBody,
    ) -> Result<(Commit, Vec<u8>), LogError> {
        let body_bytes =
            postcard::to_stdvec(&body).map_err(|source| LogError::Encode { seq, source })?;
        let hash = chain_hash(&prev_hash, seq, &body_bytes);
        let mut record = Vec::with_capacity(HEADER_LEN + body_bytes.len());
        record.push(FORMAT_V1);
        record.extend_from_slice(&seq.to_be_bytes());
        record.extend_from_slice(&prev_hash);
        record.extend_from_slice(&hash);
        record.extend_from_slice(&body_bytes);
        Ok((
            Commit {
                seq,
                prev_hash,
                hash,
                body,
            },
            record,
        ))
    }

    /// Decodes one stored record and checks that its hash covers its body.
    /// Chain continuity (seq gaps, `prev_hash`) is the reader's job: see [`Verifier`].
    pub fn decode(record: &[u8]) -> Result<Commit, LogError> {
        let seq_hint = record
            .get(1..9)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        let corrupt = |why: String| LogError::Corrupt { seq: seq_hint, why };
        if record.len() < HEADER_LEN {
            return Err(corrupt(format!(
                "record is {} bytes, shorter than its {HEADER_LEN}-byte header",
                record.len()
            )));
        }
        match record[0] {
            FORMAT_V1 => {}
            v => return Err(corrupt(format!("unknown format version {v}"))),
        }
        let (seq_bytes, rest) = record[1..].split_at(8);
        let (prev, rest) = rest.split_at(32);
        let (hash, body_bytes) = rest.split_at(32);
        let mut seq_buf = [0u8; 8];
        seq_buf.copy_from_slice(seq_bytes);
        let seq = u64::from_be_bytes(seq_buf);
        let mut prev_hash = [0u8; 32];
        prev_hash.copy_from_slice(prev);
        let mut stored_hash = [0u8; 32];
        stored_hash.copy_from_slice(hash);
        if chain_hash(&prev_hash, seq, body_bytes) != stored_hash {
            return Err(corrupt("hash does not match its contents".into()));
        }
        let body: CommitBody = postcard::from_bytes(body_bytes)
            .map_err(|e| corrupt(format!("body does not decode: {e}")))?;
        Ok(Commit {
            seq,
            prev_hash,
            hash: stored_hash,
            body,
        })
    }
}

pub fn chain_hash(prev_hash: &Hash, seq: u64, body: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(prev_hash);
    h.update(seq.to_be_bytes());
    h.update(body);
    h.finalize().into()
}

/// Checks that commits arrive gapless from 1 and that each chains from the one before.
#[derive(Debug, Clone)]
pub struct Verifier {
    pub head_seq: u64,
    pub head_hash: Hash,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier {
            head_seq: 0,
            head_hash: GENESIS,
        }
    }
}

impl Verifier {
    pub fn check(&mut self, c: &Commit) -> Result<(), LogError> {
        let expected = self.head_seq + 1;
        if c.seq != expected {
            return Err(LogError::Corrupt {
                seq: expected,
                why: format!("missing: the log jumps from {} to {}", self.head_seq, c.seq),
            });
        }
        if c.prev_hash != self.head_hash {
            return Err(LogError::Corrupt {
                seq: c.seq,
                why: "prev_hash does not match the hash of the commit before it".into(),
            });
        }
        self.head_seq = c.seq;
        self.head_hash = c.hash;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Command, Plane, Principal};

    fn body(n: u8) -> CommitBody {
        CommitBody {
            at: 1_700_000_000_000 + i64::from(n),
            meta: Meta {
                principal: Principal::System,
                plane: Plane::System,
                request_id: format!("r{n}"),
                idempotency_key: None,
                command: Command::CreateProject {
                    id: format!("p{n}"),
                    name: None,
                },
            },
            outcome: Outcome::Accepted,
            events: vec![],
        }
    }

    #[test]
    fn a_sealed_record_decodes_to_the_same_commit() {
        let (commit, record) = Commit::seal(1, GENESIS, body(1)).unwrap();
        assert_eq!(Commit::decode(&record).unwrap(), commit);
    }

    #[test]
    fn any_flipped_byte_is_detected() {
        let (_, record) = Commit::seal(7, GENESIS, body(1)).unwrap();
        for i in 0..record.len() {
            let mut bad = record.clone();
            bad[i] ^= 0x01;
            assert!(
                Commit::decode(&bad).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn the_verifier_names_gaps_and_broken_links() {
        let (c1, _) = Commit::seal(1, GENESIS, body(1)).unwrap();
        let (c2, _) = Commit::seal(2, c1.hash, body(2)).unwrap();
        let (c3, _) = Commit::seal(3, c2.hash, body(3)).unwrap();
        let mut v = Verifier::default();
        v.check(&c1).unwrap();
        match v.check(&c3) {
            Err(LogError::Corrupt { seq: 2, .. }) => {}
            other => panic!("a gap must name seq 2, got {other:?}"),
        }
        let (forged, _) = Commit::seal(2, GENESIS, body(2)).unwrap();
        match v.check(&forged) {
            Err(LogError::Corrupt { seq: 2, why }) => assert!(why.contains("prev_hash")),
            other => panic!("a broken link must name seq 2, got {other:?}"),
        }
        v.check(&c2).unwrap();
        v.check(&c3).unwrap();
        assert_eq!(v.head_hash, c3.hash);
    }
}

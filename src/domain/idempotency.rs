//! Idempotency: a fold of its own beside the aggregates. `(token, Idempotency-Key)` → the
//! request's fingerprint and its first answer, filled as commits are folded and kept for
//! [`IDEMPOTENCY_TTL_MS`] of commit time. A retry is answered from it without a new commit;
//! the same key with another request is refused.

use uuid::Uuid;

use super::commit::{Commit, Hash};
use super::refusal::AccessRefused;
use super::{Command, Millis, Principal, Rejection, Reply, State};

/// How long an `Idempotency-Key` is remembered, measured in commit time.
pub const IDEMPOTENCY_TTL_MS: Millis = 24 * 60 * 60 * 1000;

/// Persisted in snapshots (inside [`State`]): its shape changes only with the snapshot layout.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) struct Remembered {
    fingerprint: Hash,
    result: Result<Reply, Rejection>,
}

impl State {
    /// The first answer given to `key` from `principal`, if the same request was seen before.
    /// A different request under the same key is refused by [`State::idempotency_conflict`].
    pub fn remembered(
        &self,
        principal: Principal,
        key: &str,
        cmd: &Command,
    ) -> Option<Result<Reply, Rejection>> {
        let Principal::Token(t) = principal else {
            return None;
        };
        self.idempotency
            .get(&(t, key.to_string()))
            .filter(|r| r.fingerprint == cmd.fingerprint())
            .map(|r| r.result.clone())
    }

    pub fn idempotency_conflict(
        &self,
        principal: Principal,
        key: &str,
        cmd: &Command,
    ) -> Result<(), AccessRefused> {
        let Principal::Token(t) = principal else {
            return Ok(());
        };
        match self.idempotency.get(&(t, key.to_string())) {
            Some(r) if r.fingerprint != cmd.fingerprint() => {
                Err(AccessRefused::IdempotencyKeyReused)
            }
            _ => Ok(()),
        }
    }

    /// Folds one commit into the idempotency projection: the first answer under a key is kept
    /// (`reply`, computed here if the caller did not need it), and keys older than the TTL go.
    pub(super) fn remember(&mut self, c: &Commit, reply: &mut Option<Result<Reply, Rejection>>) {
        let body = &c.body;
        if let (Principal::Token(t), Some(key)) =
            (body.meta.principal, body.meta.idempotency_key.as_ref())
        {
            let slot: (Uuid, String) = (t, key.clone());
            if !self.idempotency.contains_key(&slot) {
                let result = reply.get_or_insert_with(|| self.reply_for(c)).clone();
                self.idempotency.insert(
                    slot,
                    Remembered {
                        fingerprint: body.meta.command.fingerprint(),
                        result,
                    },
                );
                self.idempotency_expiry.push_back((body.at, t, key.clone()));
            }
        }
        while let Some((at, _, _)) = self.idempotency_expiry.front() {
            if body.at - *at <= IDEMPOTENCY_TTL_MS {
                break;
            }
            if let Some((_, t, key)) = self.idempotency_expiry.pop_front() {
                self.idempotency.remove(&(t, key));
            }
        }
    }
}

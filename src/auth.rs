//! Token secrets and how a bearer token becomes a [`Principal`].
//!
//! A secret is 32 random bytes shown once; the log and the state hold only its SHA-256. Lookup
//! is by that hash: a lookup's timing can reveal something about a hash, never about a secret,
//! and the final comparison is constant-time anyway.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::{Millis, Principal, Rejection, State};
use crate::log::Hash;

pub const SECRET_PREFIX: &str = "reeve_";

#[derive(Debug, thiserror::Error)]
#[error("the operating system's random source failed: {0}")]
pub struct RandomError(String);

/// A fresh token secret: `reeve_` followed by 64 hex digits.
pub fn new_secret() -> Result<String, RandomError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| RandomError(e.to_string()))?;
    Ok(format!("{SECRET_PREFIX}{}", hex::encode(bytes)))
}

pub fn hash_secret(secret: &str) -> Hash {
    Sha256::digest(secret.as_bytes()).into()
}

/// The secret in an `Authorization: Bearer <secret>` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, rest) = header.split_once(' ')?;
    let secret = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !secret.is_empty()).then_some(secret)
}

fn unauthorized() -> Rejection {
    Rejection::new(
        401,
        "unauthorized",
        "send a valid token as 'Authorization: Bearer <token>'; this one is missing, unknown, revoked or expired",
    )
}

/// The principal a secret stands for, if its token is live at `at`.
pub fn authenticate(
    state: &State,
    secret: Option<&str>,
    at: Millis,
) -> Result<Principal, Rejection> {
    let secret = secret.ok_or_else(unauthorized)?;
    let hash = hash_secret(secret);
    let token = state
        .token_by_secret_hash(&hash)
        .filter(|t| bool::from(t.secret_hash.ct_eq(&hash)))
        .filter(|t| t.is_active(at))
        .ok_or_else(unauthorized)?;
    Ok(Principal::Token(token.id))
}

//! Tokens: who may call reeve, on which plane, in which projects, and whether they may change
//! anything. Only a SHA-256 of each secret is ever stored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::commit::Hash;
use super::refusal::TokenRefused;
use super::{Command, Ctx, Event, Millis, Principal, Refused, Reply, State};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    Admin,
    Api,
    Mcp,
    Runner,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Token {
    pub id: Uuid,
    pub secret_hash: Hash,
    pub kind: TokenKind,
    pub description: String,
    /// Project → optional expiry for that project; empty means every project.
    pub enabled_projects: BTreeMap<String, Option<Millis>>,
    pub allow_trigger: bool,
    pub expires_at: Option<Millis>,
    pub created_at: Millis,
    pub created_by: Principal,
    pub revoked_at: Option<Millis>,
}

impl Token {
    pub fn is_active(&self, at: Millis) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > at)
    }
}

pub const MAX_DESCRIPTION_LEN: usize = super::bounds::TOKEN_DESCRIPTION;

pub(super) struct Issue<'a> {
    pub secret_hash: Hash,
    pub kind: TokenKind,
    pub description: &'a str,
    pub enabled_projects: &'a BTreeMap<String, Option<Millis>>,
    pub allow_trigger: bool,
    pub expires_at: Option<Millis>,
}

pub(super) fn issue(state: &State, ctx: &Ctx, req: Issue<'_>) -> Result<Vec<Event>, Refused> {
    if req.description.chars().count() > MAX_DESCRIPTION_LEN {
        return Err(TokenRefused::DescriptionTooLong {
            max: MAX_DESCRIPTION_LEN,
        }
        .into());
    }
    if req.expires_at.is_some_and(|e| e <= ctx.at) {
        return Err(TokenRefused::ExpiresInPast.into());
    }
    for (project, expiry) in req.enabled_projects {
        if !state.projects.contains_key(project) {
            return Err(TokenRefused::UnknownProject {
                project: project.clone(),
            }
            .into());
        }
        if expiry.is_some_and(|e| e <= ctx.at) {
            return Err(TokenRefused::ProjectExpiryInPast {
                project: project.clone(),
            }
            .into());
        }
    }
    if state.token_by_secret_hash(&req.secret_hash).is_some() {
        return Err(TokenRefused::Exists.into());
    }
    Ok(vec![Event::TokenIssued {
        id: ctx.new_id,
        secret_hash: req.secret_hash,
        kind: req.kind,
        description: req.description.to_string(),
        enabled_projects: req.enabled_projects.clone(),
        allow_trigger: req.allow_trigger,
        expires_at: req.expires_at,
    }])
}

pub(super) fn revoke(state: &State, ctx: &Ctx, id: Uuid) -> Result<Vec<Event>, Refused> {
    let token = state.tokens.get(&id).ok_or(TokenRefused::NotFound { id })?;
    if token.revoked_at.is_some() {
        return Err(TokenRefused::AlreadyRevoked { id }.into());
    }
    if token.kind == TokenKind::Admin {
        let other_admins = state
            .tokens
            .values()
            .filter(|t| t.id != id && t.kind == TokenKind::Admin && t.is_active(ctx.at))
            .count();
        if other_admins == 0 {
            return Err(TokenRefused::LastAdmin.into());
        }
    }
    Ok(vec![Event::TokenRevoked { id }])
}

/// Folds this aggregate's events into the state: the one place they change it.
pub(super) fn apply(state: &mut State, at: Millis, by: Principal, event: &Event) {
    match event {
        Event::TokenIssued {
            id,
            secret_hash,
            kind,
            description,
            enabled_projects,
            allow_trigger,
            expires_at,
        } => {
            state.token_by_hash.insert(*secret_hash, *id);
            state.tokens.insert(
                *id,
                Token {
                    id: *id,
                    secret_hash: *secret_hash,
                    kind: *kind,
                    description: description.clone(),
                    enabled_projects: enabled_projects.clone(),
                    allow_trigger: *allow_trigger,
                    expires_at: *expires_at,
                    created_at: at,
                    created_by: by,
                    revoked_at: None,
                },
            );
        }
        Event::TokenRevoked { id } => {
            if let Some(t) = state.tokens.get_mut(id) {
                t.revoked_at = Some(at);
            }
        }
        _ => {}
    }
}

/// The answer to an accepted token command: the token as it now is.
pub(super) fn reply(state: &State, events: &[Event]) -> Option<Reply> {
    match events.first()? {
        Event::TokenIssued { id, .. } => state.tokens.get(id).cloned().map(Reply::Token),
        Event::TokenRevoked { id } => state.tokens.get(id).cloned().map(Reply::TokenRevoked),
        _ => None,
    }
}

/// What a token command acted on, for its audit entry: (target, project). Tokens belong to
/// no project.
pub(super) fn audit_target(
    command: &Command,
    events: &[Event],
) -> (Option<String>, Option<String>) {
    match (command, events.first()) {
        (Command::IssueToken { .. }, Some(Event::TokenIssued { id, .. }))
        | (Command::RevokeToken { id }, _) => (Some(format!("token:{id}")), None),
        _ => (None, None),
    }
}

//! `/api/v1/audit`: the trail of every commit, filtered from the audit projection and rendered
//! from the log records themselves.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::io::Write;

use utoipa::{IntoParams, ToSchema};

use super::{AppState, Problem, admin_read, rfc3339};
use crate::domain::{AuditEntry, Plane, Principal};
use crate::log::Outcome;
use crate::log::audit_index::AuditFilter;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/audit", get(list))
        .route("/audit/export", get(export))
        .route("/state/digest", get(digest))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Entries after this sequence number.
    pub since_seq: Option<u64>,
    /// 1-1000, default 100.
    pub limit: Option<usize>,
    pub project: Option<String>,
    /// `token:<id>`, a bare token id, or `system`.
    pub principal: Option<String>,
    /// rest, cli, web, mcp, scheduler, runner, system.
    pub plane: Option<String>,
    /// accepted or rejected.
    pub outcome: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditView {
    pub seq: u64,
    pub at: String,
    pub plane: String,
    pub principal: String,
    pub request_id: String,
    pub idempotency_key: Option<String>,
    /// `{"<op>": {...arguments}}`, or `"<op>"` for a command without arguments.
    #[schema(value_type = CommandDoc)]
    pub command: serde_json::Value,
    pub target: Option<String>,
    pub project: Option<String>,
    /// accepted or rejected
    pub outcome: String,
    pub status: Option<u16>,
    pub code: Option<String>,
    pub reason: Option<String>,
    #[schema(value_type = Vec<Object>)]
    pub events: serde_json::Value,
    /// SHA-256 chaining this commit to the one before, hex.
    pub hash: String,
}

impl AuditView {
    /// An audit entry rendered with its commit (the one stored under `e.seq`).
    pub fn of(e: &AuditEntry, commit: &crate::log::Commit) -> AuditView {
        let body = &commit.body;
        let (outcome, status, code, reason) = match &body.outcome {
            Outcome::Accepted => ("accepted", None, None, None),
            Outcome::Rejected {
                status,
                code,
                reason,
                ..
            } => (
                "rejected",
                Some(*status),
                Some(code.clone()),
                Some(reason.clone()),
            ),
        };
        AuditView {
            seq: e.seq,
            at: rfc3339(e.at),
            plane: e.plane.as_str().to_string(),
            principal: e.principal.to_string(),
            request_id: body.meta.request_id.clone(),
            idempotency_key: body.meta.idempotency_key.clone(),
            command: serde_json::to_value(&body.meta.command).unwrap_or_default(),
            target: e.target.clone(),
            project: e.project.clone(),
            outcome: outcome.to_string(),
            status,
            code,
            reason,
            events: serde_json::to_value(&body.events).unwrap_or_default(),
            hash: hex::encode(commit.hash),
        }
    }
}

/// A command as the audit shows it (documentation only).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum CommandDoc {
    /// A command without arguments: its op.
    Bare(String),
    /// `{"<op>": {...arguments}}`
    WithArguments(std::collections::BTreeMap<String, serde_json::Value>),
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditView>,
    /// Pass as `since_seq` for the next page; null when there is nothing more yet.
    pub next_since: Option<u64>,
}

const DEFAULT_LIMIT: usize = 100;
/// The largest page `GET /audit` gives.
pub const MAX_LIMIT: usize = 1000;

fn invalid(detail: impl Into<String>) -> Problem {
    Problem::bad_request("invalid_query", detail)
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, body = AuditPage),
    ))]
pub async fn list(
    State(app): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    // The caller must be an admin; the page itself comes from the index on disk.
    admin_read(&app, &headers, |_, _| Ok(()))?;
    let Query(q) =
        q.map_err(|e| invalid(format!("the query string is invalid: {}", e.body_text())))?;
    if let Some(p) = &q.project
        && !super::is_project_id(p)
    {
        return Err(invalid(format!(
            "project {p:?} is not a project id (1-63 characters of a-z, 0-9 and '-')"
        )));
    }
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(invalid(format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    let plane = q
        .plane
        .as_deref()
        .map(|p| {
            Plane::parse(p).ok_or_else(|| {
                invalid(format!(
                    "unknown plane {p:?}; use rest, cli, web, mcp, scheduler, runner or system"
                ))
            })
        })
        .transpose()?;
    let accepted = match q.outcome.as_deref() {
        None => None,
        Some("accepted") => Some(true),
        Some("rejected") => Some(false),
        Some(o) => {
            return Err(invalid(format!(
                "unknown outcome {o:?}; use accepted or rejected"
            )));
        }
    };
    // A principal that is neither `system` nor a token id matches nothing, as before.
    let principal = match q.principal.as_deref() {
        None => None,
        Some("system") => Some(Some(Principal::System)),
        Some(p) => Some(
            uuid::Uuid::parse_str(p.strip_prefix("token:").unwrap_or(p))
                .ok()
                .map(Principal::Token),
        ),
    };
    let since = q.since_seq.unwrap_or(0);
    let (picked, more) = match principal {
        Some(None) => (Vec::new(), false),
        Some(Some(_)) | None => {
            let filter = AuditFilter {
                project: q.project.clone(),
                principal: principal.flatten(),
                plane,
                accepted,
            };
            let mut picked = app
                .control
                .store()
                .audit_page(&filter, since, limit + 1)
                .map_err(|err| {
                    Problem::internal(format!("the audit index could not be read: {err}"))
                })?;
            let more = picked.len() > limit;
            picked.truncate(limit);
            (picked, more)
        }
    };
    let store = app.control.store();
    let mut entries = Vec::with_capacity(picked.len());
    for e in &picked {
        let commit = store
            .get(e.seq)
            .map_err(|err| Problem::internal(format!("the log could not be read: {err}")))?
            .ok_or_else(|| {
                Problem::internal(format!("commit {} is missing from the log", e.seq))
            })?;
        entries.push(AuditView::of(e, &commit));
    }
    let next_since = if more {
        picked.last().map(|e| e.seq)
    } else {
        None
    };
    Ok(Json(AuditPage {
        entries,
        next_since,
    })
    .into_response())
}

// ---- the state digest ----

#[derive(Serialize, Deserialize, ToSchema)]
pub struct StateDigest {
    /// The head of the log the digest was taken at.
    pub seq: u64,
    /// The hash of commit `seq` (hex; all zeros for an empty log).
    pub head_hash: String,
    /// `State::digest()` of the live state, hex: `reeve audit replay --digest` computes the
    /// same value from the log alone.
    pub digest: String,
    /// Always `sha256`.
    pub algorithm: String,
}

impl StateDigest {
    pub fn of(state: &crate::domain::State) -> StateDigest {
        StateDigest {
            seq: state.head_seq,
            head_hash: hex::encode(state.head_hash),
            digest: hex::encode(state.digest()),
            algorithm: crate::domain::DIGEST_ALGORITHM.to_string(),
        }
    }
}

#[utoipa::path(get, path = "/api/v1/state/digest", tag = "audit",
    responses(
        (status = 200, body = StateDigest),
    ))]
pub async fn digest(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<StateDigest>, Problem> {
    let digest = admin_read(&app, &headers, |state, _| Ok(StateDigest::of(state)))?;
    Ok(Json(digest))
}

// ---- the export ----

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// Commits after this sequence number (exclusive); default 0, the whole log.
    pub since_seq: Option<u64>,
    /// Commits up to and including this sequence number; default the head when the request
    /// arrives (later commits are not included, so the body is a fixed prefix of the log).
    pub until_seq: Option<u64>,
}

/// One line of `GET /api/v1/audit/export` (documentation only: lines are written by
/// [`write_export_line`]).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct ExportLineDoc {
    pub seq: u64,
    pub at: String,
    pub plane: String,
    pub principal: String,
    pub request_id: String,
    pub idempotency_key: Option<String>,
    /// `{"<op>": {...arguments}}`, or `"<op>"` for a command without arguments.
    #[schema(value_type = CommandDoc)]
    pub command: serde_json::Value,
    /// accepted or rejected
    pub outcome: String,
    pub status: Option<u16>,
    pub code: Option<String>,
    pub reason: Option<String>,
    pub field: Option<String>,
    #[schema(value_type = Vec<Object>)]
    pub events: serde_json::Value,
    /// The hash of the commit before (hex).
    pub prev_hash: String,
    /// SHA-256(prev_hash ‖ seq ‖ body), hex.
    pub hash: String,
    /// The stored record, hex: `version ‖ seq ‖ prev_hash ‖ hash ‖ body` (see ARCHITECTURE.md);
    /// decode it with `reeve::log::Commit::decode` to verify and replay the log.
    pub record: String,
}

/// A line of the export: a commit, or the error that ended it (documentation only).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum ExportItemDoc {
    Commit(Box<ExportLineDoc>),
    Error(ExportErrorDoc),
}

/// The last line of an export that could not be finished.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct ExportErrorDoc {
    pub error: String,
}

/// The content type of the export.
pub const NDJSON: &str = "application/x-ndjson";
/// Lines are sent in chunks of about this size.
const EXPORT_CHUNK: usize = 64 * 1024;

#[utoipa::path(get, path = "/api/v1/audit/export", tag = "audit",
    params(ExportQuery),
    responses(
        (status = 200, description = "One JSON object per line (the schema describes the lines as the items of an array), one line per commit in seq order, streamed. A read error mid-stream ends it with a line {\"error\": \"...\"}.", body = Vec<ExportItemDoc>, content_type = "application/x-ndjson"),
    ))]
pub async fn export(
    State(app): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<ExportQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let head = super::admin_read_as(&app, &headers, NDJSON, |state, _| Ok(state.head_seq))?;
    let Query(q) = q.map_err(|e| {
        invalid(format!(
            "the query string is invalid: {}; use since_seq and until_seq, both whole numbers",
            e.body_text()
        ))
    })?;
    let since = q.since_seq.unwrap_or(0);
    if let Some(until) = q.until_seq
        && since > until
    {
        return Err(invalid(format!(
            "since_seq ({since}) is after until_seq ({until}); since_seq is exclusive, until_seq inclusive"
        )));
    }
    let until = q.until_seq.map_or(head, |u| u.min(head));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<axum::body::Bytes>(4);
    let control = app.control.clone();
    let shutdown = app.shutdown.clone();
    tokio::task::spawn_blocking(move || {
        let sent = stream_export(control.store(), since, until, |mut chunk| {
            // A body that simply stopped would look like a shorter log to a reader that
            // verifies it; say that it is incomplete.
            let stopping = *shutdown.borrow();
            if stopping {
                write_error_line(
                    &mut chunk,
                    "reeve is shutting down; this export is incomplete, run it again",
                );
            }
            tx.blocking_send(axum::body::Bytes::from(chunk)).is_ok() && !stopping
        });
        if let Err(error) = sent {
            tracing::error!(%error, "the audit export stopped early");
        }
    });
    let body = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|c| c.map(Ok::<_, std::convert::Infallible>))
    });
    Ok((
        [(axum::http::header::CONTENT_TYPE, NDJSON)],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

/// Writes the export lines for `since+1..=until` in chunks to `send`, which returns false when
/// nobody listens any more. A record that cannot be read or decoded ends the output with an
/// `{"error": ...}` line, and the same message is returned. Shared by the endpoint and
/// `reeve audit export --data-dir`, so both give the same bytes for the same log.
pub fn stream_export(
    store: &crate::log::Store,
    since: u64,
    until: u64,
    mut send: impl FnMut(Vec<u8>) -> bool,
) -> Result<(), String> {
    let mut buf = Vec::with_capacity(EXPORT_CHUNK + 4096);
    for item in store.raw_range(since.saturating_add(1), until) {
        let failure = match item {
            Ok((seq, record)) => match crate::log::Commit::decode(&record) {
                Ok(commit) if commit.seq == seq => {
                    write_export_line(&mut buf, &commit, &record);
                    None
                }
                Ok(commit) => Some(format!(
                    "commit {seq} is corrupt: the record stored under {seq} says it is {}",
                    commit.seq
                )),
                Err(crate::log::LogError::Corrupt { why, .. }) => {
                    Some(format!("commit {seq} is corrupt: {why}"))
                }
                Err(e) => Some(format!("commit {seq} could not be read: {e}")),
            },
            Err(e) => Some(format!("the log could not be read: {e}")),
        };
        if let Some(error) = failure {
            write_error_line(&mut buf, &error);
            send(std::mem::take(&mut buf));
            return Err(error);
        }
        if buf.len() >= EXPORT_CHUNK
            && !send(std::mem::replace(
                &mut buf,
                Vec::with_capacity(EXPORT_CHUNK + 4096),
            ))
        {
            return Ok(());
        }
    }
    if !buf.is_empty() {
        send(buf);
    }
    Ok(())
}

/// The final line of an export that could not be finished.
pub fn write_error_line(out: &mut Vec<u8>, error: &str) {
    #[derive(Serialize)]
    struct ErrorLine<'a> {
        error: &'a str,
    }
    // Serializing a struct of one string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &ErrorLine { error });
    out.push(b'\n');
}

/// Appends one export line (JSON, then `\n`) for `commit`, whose stored bytes are `record`.
/// `record` comes last in the line, so a reader that only needs it can find it from the end.
pub fn write_export_line(out: &mut Vec<u8>, commit: &crate::log::Commit, record: &[u8]) {
    #[derive(Serialize)]
    struct Line<'a> {
        seq: u64,
        at: String,
        plane: &'static str,
        principal: Principal,
        request_id: &'a str,
        idempotency_key: Option<&'a str>,
        command: &'a crate::domain::Command,
        outcome: &'static str,
        status: Option<u16>,
        code: Option<&'a str>,
        reason: Option<&'a str>,
        field: Option<&'a str>,
        events: &'a [crate::domain::Event],
        prev_hash: Hex<'a>,
        hash: Hex<'a>,
        record: Hex<'a>,
    }
    struct Principal(crate::domain::Principal);
    impl Serialize for Principal {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_str(&self.0)
        }
    }
    let body = &commit.body;
    let (outcome, status, code, reason, field) = match &body.outcome {
        Outcome::Accepted => ("accepted", None, None, None, None),
        Outcome::Rejected {
            status,
            code,
            reason,
            field,
        } => (
            "rejected",
            Some(*status),
            Some(code.as_str()),
            Some(reason.as_str()),
            field.as_deref(),
        ),
    };
    let line = Line {
        seq: commit.seq,
        at: rfc3339(body.at),
        plane: body.meta.plane.as_str(),
        principal: Principal(body.meta.principal),
        request_id: &body.meta.request_id,
        idempotency_key: body.meta.idempotency_key.as_deref(),
        command: &body.meta.command,
        outcome,
        status,
        code,
        reason,
        field,
        events: &body.events,
        prev_hash: Hex(&commit.prev_hash),
        hash: Hex(&commit.hash),
        record: Hex(record),
    };
    let start = out.len();
    if serde_json::to_writer(&mut *out, &line).is_err() {
        // Commands and events are plain data and always serialize; should one not, the line
        // still carries the record, so nothing is lost for a reader that verifies.
        out.truncate(start);
        let _ = write!(
            out,
            "{{\"seq\":{},\"hash\":\"{}\",\"record\":\"{}\"}}",
            commit.seq,
            hex::encode(commit.hash),
            hex::encode(record)
        );
    }
    out.push(b'\n');
}

/// Bytes as lowercase hex, written without an intermediate String.
struct Hex<'a>(&'a [u8]);

impl std::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut buf = [0u8; 128];
        for chunk in self.0.chunks(64) {
            let out = &mut buf[..chunk.len() * 2];
            if hex::encode_to_slice(chunk, out).is_err() {
                return Err(std::fmt::Error);
            }
            f.write_str(std::str::from_utf8(out).map_err(|_| std::fmt::Error)?)?;
        }
        Ok(())
    }
}

impl Serialize for Hex<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

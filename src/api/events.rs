//! `GET /api/v1/events`: a Server-Sent Events stream of commit summaries, one per commit the
//! token may see, in seq order. Each event's `id` is its seq, so a client that reconnects
//! with `Last-Event-ID` is sent exactly what was committed after it (read back from the audit
//! index on disk) and then follows live. The console updates itself from it; integrators
//! can read it with `curl -N`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderName};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use utoipa::{IntoParams, ToSchema};

use super::problem::ProblemDoc;
use super::{AppState, Problem, now_ms, read_as, rfc3339};
use crate::domain::{AuditEntry, Caller, Principal};
use crate::log::audit_index::AuditFilter;

pub fn routes() -> Router<AppState> {
    Router::new().route("/events", get(stream))
}

/// The stream's media type.
pub const EVENT_STREAM: &str = "text/event-stream";
const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
/// Entries read from the audit index at a time, while catching up or following.
const PAGE: usize = 256;
/// A comment line this often keeps proxies and browsers from closing an idle stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Default true: keep the stream open and send commits as they are made. false: send what
    /// was committed after `Last-Event-ID` up to the head as of the request, then end (a
    /// script's catch-up).
    pub follow: Option<bool>,
}

/// One commit, as the stream sends it in an event's `data` (the event's `id` is `seq`).
#[derive(Serialize, ToSchema)]
pub struct CommitSummary {
    pub seq: u64,
    /// When it was committed (RFC 3339).
    pub at: String,
    /// rest, cli, web, mcp, scheduler, runner or system.
    pub plane: String,
    /// `token:<id>` or `system`.
    pub principal: String,
    /// The command, e.g. `create_watch`, `fire_watch`, `finish_job`.
    pub op: String,
    /// What it acted on, e.g. `watch:<id>`, `build:<id>`, `job:<id>`.
    pub target: Option<String>,
    pub project: Option<String>,
    /// accepted or rejected
    pub outcome: String,
}

impl From<&AuditEntry> for CommitSummary {
    fn from(e: &AuditEntry) -> CommitSummary {
        CommitSummary {
            seq: e.seq,
            at: rfc3339(e.at),
            plane: e.plane.as_str().to_string(),
            principal: e.principal.to_string(),
            op: e.op.clone(),
            target: e.target.clone(),
            project: e.project.clone(),
            outcome: if e.accepted { "accepted" } else { "rejected" }.to_string(),
        }
    }
}

/// Whether `caller` may see this commit: an admin sees every commit; any other token only
/// those acting in a project it sees, so a token scoped to projects learns nothing of the
/// others (nor of tokens, which belong to no project).
pub fn visible(caller: &Caller<'_>, e: &AuditEntry) -> bool {
    caller.is_admin() || e.project.as_deref().is_some_and(|p| caller.sees_project(p))
}

#[utoipa::path(get, path = "/api/v1/events", tag = "events",
    params(("Last-Event-ID" = Option<String>, Header, pattern = r"^[0-9]{1,19}$",
        description = "Resume after this seq (the `id` of the last event received): the commits after it are sent first, then the stream follows live. Without it the stream starts at the current head."),
        EventsQuery),
    responses(
        (status = 200, description = "A text/event-stream that stays open: one event per commit the token may see, in seq order (`id:` the seq, `data:` a CommitSummary as JSON), and a comment line every 15 s while nothing happens. An admin token sees every commit, any other token only commits in its projects. The stream ends when reeve shuts down or the token stops being valid; reconnect with Last-Event-ID to miss nothing.", body = CommitSummary, content_type = "text/event-stream"),
        (status = 400, description = "invalid_header: Last-Event-ID is not a seq; invalid_query", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "mcp_token_not_allowed, runner_token_not_allowed", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn stream(
    State(app): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let (principal, head, q) = read_as(&app, &headers, EVENT_STREAM, |state, caller| {
        let Query(q) = q.map_err(|e| Problem::bad_request("invalid_query", e.body_text()))?;
        Ok((caller.principal, state.head_seq, q))
    })?;
    let after = match headers.get(&LAST_EVENT_ID) {
        None => head,
        // Digits only, and few enough to be a seq: what the document's pattern says.
        Some(v) => Some(v.as_bytes())
            .filter(|b| (1..=19).contains(&b.len()) && b.iter().all(u8::is_ascii_digit))
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| {
                Problem::bad_request(
                    "invalid_header",
                    "Last-Event-ID must be the id of an event this stream sent (a seq, a whole number)",
                )
            })?
            // An id beyond the head came from another log; start from what this one has.
            .min(head),
    };
    // Subscribed before the first read, so nothing committed from here on can be missed.
    let follow = Follow {
        changes: app.control.subscribe(),
        shutdown: app.shutdown.clone(),
        app,
        principal,
        after,
        until: (!q.follow.unwrap_or(true)).then_some(head),
        pending: VecDeque::new(),
    };
    let events = futures_util::stream::unfold(follow, |mut f| async move {
        f.next().await.map(|event| (Ok::<_, Infallible>(event), f))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response())
}

/// Where one stream is: the last seq it has looked at, and events read but not yet sent.
struct Follow {
    app: AppState,
    principal: Principal,
    after: u64,
    /// Where a stream that does not follow ends.
    until: Option<u64>,
    pending: VecDeque<Event>,
    changes: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
}

impl Follow {
    /// The next event, waiting for commits as long as it takes; `None` ends the stream.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if *self.shutdown.borrow() {
                return None;
            }
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            if self.until.is_some_and(|until| self.after >= until) {
                return None;
            }
            let head = (*self.changes.borrow_and_update()).min(self.until.unwrap_or(u64::MAX));
            if head > self.after {
                self.read_page(head)?;
                continue;
            }
            tokio::select! {
                changed = self.changes.changed() => changed.ok()?,
                _ = self.shutdown.changed() => {}
            }
        }
    }

    /// Reads the next page of entries after `self.after` and queues those the token may see.
    /// `None` when the stream must end: the token is no longer valid, or the index cannot be
    /// read (the client reconnects and resumes where it was).
    fn read_page(&mut self, head: u64) -> Option<()> {
        let mut page =
            match self
                .app
                .control
                .store()
                .audit_page(&AuditFilter::default(), self.after, PAGE)
            {
                Ok(page) => page,
                Err(error) => {
                    tracing::error!(%error, "the event stream could not read the audit index");
                    return None;
                }
            };
        // A stream that does not follow stops at the head it was opened at.
        page.retain(|e| e.seq <= head);
        let state = self.app.control.state();
        // Checked on every page: a revoked or expired token stops seeing anything at once.
        let caller = state.caller(self.principal, now_ms()).ok()?;
        self.after = page.last().map_or(head, |e| e.seq);
        for e in page.iter().filter(|e| visible(&caller, e)) {
            let summary = CommitSummary::from(e);
            match Event::default().id(e.seq.to_string()).json_data(&summary) {
                Ok(event) => self.pending.push_back(event),
                Err(error) => {
                    tracing::error!(%error, seq = e.seq, "a commit summary did not serialize")
                }
            }
        }
        Some(())
    }
}

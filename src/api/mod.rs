//! The REST surface under `/api/v1`. Handlers authenticate, turn a request into a
//! [`Command`] and submit it, or read a projection; they never decide anything themselves.

pub mod audit;
pub mod builds;
pub mod events;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod projects;
pub mod runner;
pub mod tokens;
pub mod watches;
pub mod whoami;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use uuid::Uuid;

pub use problem::Problem;

use crate::control::{Control, Submission};
use crate::domain::{Caller, Command, Millis, Plane, Principal, Reply, State};
use crate::limits::{Bucket, Quotum, RateLimits};

/// Request bodies larger than this are refused with 413.
pub const BODY_LIMIT: usize = crate::domain::bounds::BODY;
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Sent by the `reeve` command line (`Reeve-Plane: cli`) and the console (`Reeve-Plane: web`)
/// so their requests are admitted and audited on their own plane rather than `rest`.
pub const PLANE_HEADER: HeaderName = HeaderName::from_static("reeve-plane");

#[derive(Clone)]
pub struct AppState {
    pub control: Arc<Control>,
    pub limits: Arc<RateLimits>,
    /// Turns true when the server shuts down, so long-polls answer at once.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// What `/metrics` serves, and who may scrape it.
    pub metrics: Arc<metrics::Metrics>,
}

/// The REST door's routes. The server merges them with the MCP door's and wraps both in
/// [`layers`]; this module does not know the MCP door (it depends on this one).
pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .merge(watches::routes())
        .merge(projects::routes())
        .merge(tokens::routes())
        .merge(audit::routes())
        .merge(events::routes())
        .merge(whoami::routes())
        .merge(builds::routes())
        .merge(runner::routes())
        .nest("/mcp", builds::mcp_routes())
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi::serve));
    Router::new()
        .nest("/api/v1", v1)
        .route("/healthz", get(healthz))
        .route("/readyz", get(metrics::ready))
        .route("/metrics", get(metrics::serve))
        .route("/openapi.json", get(openapi::serve))
        .fallback(route_not_found)
        .layer(middleware::map_response(errors_as_problems))
        .with_state(state)
}

/// What every request passes through, whichever door it is for: tracing, its request id, the
/// body limit, its count and time in the metrics, and a problem document instead of a dropped
/// connection if a handler panics.
pub fn layers(doors: Router, metrics: Arc<metrics::Metrics>) -> Router {
    doors
        // Inside the other layers, so a panic's 500 and a refused body's 413 are counted too.
        .layer(middleware::from_fn_with_state(metrics, metrics::track))
        .layer(TraceLayer::new_for_http())
        .layer(middleware::from_fn(request_id))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(CatchPanicLayer::custom(|_| {
            Problem::internal(
                "the server hit a bug while handling this request; it has been logged",
            )
            .into_response()
        }))
}

#[utoipa::path(get, path = "/api/v1/healthz", tag = "operations",
    responses((status = 200, description = "The server is up")))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn route_not_found() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "route_not_found",
        "no such route; GET /openapi.json lists every route",
    )
}

/// axum and its extractors answer some refusals themselves, as plain text (an undeclared
/// method, a path that is not UTF-8). Give every such answer a problem body, keeping its
/// status and headers (`Allow` on a 405).
async fn errors_as_problems(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error())
        || resp
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(problem::CONTENT_TYPE.as_bytes()))
    {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let (code, detail) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this route does not accept that method; the Allow header lists those it does".into(),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            format!("the body is larger than {BODY_LIMIT} bytes"),
        ),
        s if s.is_server_error() => (
            "internal",
            "the server could not answer this request".into(),
        ),
        _ if text.is_empty() => ("bad_request", "the request is malformed".into()),
        _ => ("bad_request", text),
    };
    let problem = Problem::new(status, code, detail).into_response();
    let (problem_parts, problem_body) = problem.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in &problem_parts.headers {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, problem_body)
}

/// Every request carries an id, the caller's own if it sent a sane one, echoed in the answer
/// and recorded in the commit.
async fn request_id(mut req: Request, next: Next) -> Response {
    let sane = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            !v.is_empty()
                && v.len() <= crate::domain::bounds::REQUEST_ID
                && v.bytes().all(|b| b.is_ascii_graphic())
        });
    if !sane && let Ok(v) = HeaderValue::from_str(&Uuid::now_v7().to_string()) {
        req.headers_mut().insert(REQUEST_ID, v);
    }
    let id = req.headers().get(&REQUEST_ID).cloned();
    let mut resp = next.run(req).await;
    if let Some(id) = id {
        resp.headers_mut().insert(REQUEST_ID, id);
    }
    resp
}

pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// RFC 3339 UTC with millisecond precision.
pub fn rfc3339(ms: Millis) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(ts) => format!("{ts:.3}"),
        Err(_) => ms.to_string(),
    }
}

pub fn parse_rfc3339(field: &str, s: &str) -> Result<Millis, Problem> {
    s.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|e| Problem {
            field: Some(field.to_string()),
            ..Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_expires_at",
                format!("{field} must be an RFC 3339 time such as 2026-12-31T00:00:00Z: {e}"),
            )
        })
}

/// The principal behind the request's bearer token, or 401.
pub fn authenticate(state: &State, headers: &HeaderMap) -> Result<Principal, Problem> {
    let secret = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer);
    Ok(crate::auth::authenticate(state, secret, now_ms())?)
}

/// The plane of a request that came through the REST door: `rest`, `cli` when the `reeve`
/// command line says so with `Reeve-Plane: cli`, or `web` when the console says
/// `Reeve-Plane: web`. Any other value is refused rather than ignored, so the audit trail
/// never records a plane the client did not ask for. The MCP and runner doors have planes of
/// their own and do not read the header.
pub fn rest_plane(headers: &HeaderMap) -> Result<Plane, Problem> {
    match headers.get(&PLANE_HEADER) {
        None => Ok(Plane::Rest),
        Some(v) if v.as_bytes() == b"cli" => Ok(Plane::Cli),
        Some(v) if v.as_bytes() == b"web" => Ok(Plane::Web),
        Some(v) => Err(Problem::bad_request(
            "invalid_header",
            format!(
                "Reeve-Plane must be \"cli\" (what the reeve command line sends), \"web\" (what the console sends) or absent; got {:?}",
                String::from_utf8_lossy(v.as_bytes())
            ),
        )),
    }
}

/// Authenticates a read on the REST plane (or `cli`, see [`rest_plane`]) and hands the
/// caller and the state to `read`.
pub fn read<T>(
    app: &AppState,
    headers: &HeaderMap,
    read: impl FnOnce(&State, &Caller<'_>) -> Result<T, Problem>,
) -> Result<T, Problem> {
    let state = app.control.state();
    let principal = authenticate(&state, headers)?;
    let plane = rest_plane(headers)?;
    let caller = state.caller(principal, now_ms())?;
    state.admit(&caller, plane)?;
    let kind = caller.token.map(|t| t.kind);
    app.limits
        .check(principal, kind, Bucket::Read)
        .map_err(rate_limited)?;
    read(&state, &caller)
}

/// The 429 for an exhausted bucket, with the headers that tell a client when to come back.
pub fn rate_limited(q: Quotum) -> Problem {
    let mut p = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "this token may make {} such requests a minute; retry in {} s",
            q.limit, q.reset_secs
        ),
    );
    p.headers = quota_headers(q);
    p.headers
        .push((header::RETRY_AFTER, HeaderValue::from(q.reset_secs.max(1))));
    p
}

fn quota_headers(q: Quotum) -> Vec<(HeaderName, HeaderValue)> {
    vec![
        (
            HeaderName::from_static("ratelimit-limit"),
            HeaderValue::from(q.limit),
        ),
        (
            HeaderName::from_static("ratelimit-remaining"),
            HeaderValue::from(q.remaining),
        ),
        (
            HeaderName::from_static("ratelimit-reset"),
            HeaderValue::from(q.reset_secs),
        ),
    ]
}

/// A read that only admins may make.
pub fn admin_read<T>(
    app: &AppState,
    headers: &HeaderMap,
    read_fn: impl FnOnce(&State, &Caller<'_>) -> Result<T, Problem>,
) -> Result<T, Problem> {
    read(app, headers, |state, caller| {
        if !caller.is_admin() {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "admin_required",
                "only an admin token may do this",
            ));
        }
        read_fn(state, caller)
    })
}

/// What a mutation handler gets back: the reply, and whether it is a remembered first answer
/// to an earlier request with the same `Idempotency-Key`.
pub struct Done {
    pub reply: Reply,
    pub replayed: bool,
}

/// Submits a mutation on the REST plane (or `cli`, see [`rest_plane`]). A request that could not be turned into a command
/// (`command` is an error) is still submitted, as `Malformed`, so that its refusal is audited
/// like any other; only a request without a valid token is answered without a commit.
pub async fn mutate(
    app: &AppState,
    headers: &HeaderMap,
    op: &str,
    admin_only: bool,
    command: Result<Command, Problem>,
) -> Result<Done, Problem> {
    submit_on(app, headers, Plane::Rest, op, admin_only, command).await
}

/// [`mutate`] through a given door: the plane decides which tokens are admitted and which
/// bucket the request spends. On the REST door, `Reeve-Plane` may turn it into `cli`; a bad
/// value of that header is a malformed request (audited, 400 `invalid_header`).
pub async fn submit_on(
    app: &AppState,
    headers: &HeaderMap,
    plane: Plane,
    op: &str,
    admin_only: bool,
    command: Result<Command, Problem>,
) -> Result<Done, Problem> {
    let (principal, kind) = {
        let state = app.control.state();
        let principal = authenticate(&state, headers)?;
        let kind = state.caller(principal, now_ms())?.token.map(|t| t.kind);
        (principal, kind)
    };
    let (plane, bad_plane) = if plane == Plane::Rest {
        match rest_plane(headers) {
            Ok(p) => (p, None),
            Err(p) => (Plane::Rest, Some(p)),
        }
    } else {
        (plane, None)
    };
    if plane == Plane::Runner {
        app.metrics.runner_seen(principal);
    }
    let bucket = if plane == Plane::Runner {
        Bucket::Default
    } else {
        Bucket::Trigger
    };
    let limited = app.limits.check(principal, kind, bucket).err();
    let command = match limited {
        Some(q) => Err(rate_limited(q)),
        None => command,
    };
    let idempotency_key = idempotency_key(headers);
    // The first thing wrong with the request is what its refusal says.
    let mut malformed_field = None;
    let command = match (
        bad_plane.as_ref(),
        command.as_ref(),
        idempotency_key.as_ref(),
    ) {
        (Some(p), _, _) | (None, _, Err(p)) | (None, Err(p), _) => {
            let p = p.clone();
            // The log keeps the refusal's text, which names the field first; the answer
            // names it in `field` too.
            malformed_field = p.field.clone().map(|f| (p.code.clone(), f));
            Command::Malformed {
                op: op.to_string(),
                admin_only,
                status: p.status.as_u16(),
                code: p.code,
                detail: p.detail,
            }
        }
        (None, Ok(c), Ok(_)) => c.clone(),
    };
    let request_id = headers
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let submitted = app
        .control
        .submit(Submission {
            principal,
            plane,
            request_id,
            idempotency_key: idempotency_key.ok().flatten(),
            command,
        })
        .await?;
    let reply = submitted.result.map_err(|r| {
        let mut p = Problem::from(r);
        if let Some((code, field)) = malformed_field
            && p.code == code
            && p.field.is_none()
        {
            p.field = Some(field);
        }
        if let (Some(q), StatusCode::TOO_MANY_REQUESTS) = (limited, p.status) {
            p = Problem {
                detail: p.detail,
                ..rate_limited(q)
            };
        }
        p
    })?;
    Ok(Done {
        reply,
        replayed: submitted.seq.is_none(),
    })
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(s)
            if !s.is_empty()
                && s.len() <= crate::domain::bounds::IDEMPOTENCY_KEY
                && s.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(s.to_string()))
        }
        _ => Err(Problem::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1-255 visible ASCII characters, e.g. a UUID",
        )),
    }
}

/// `If-Match: "<version>"` (or `W/"<version>"`, or a bare number). `*` matches any version.
/// Anything else can match no version, so it fails the precondition.
pub fn if_match(headers: &HeaderMap) -> Option<u64> {
    let raw = headers.get(header::IF_MATCH)?.to_str().unwrap_or("");
    let v = raw.trim();
    if v == "*" {
        return None;
    }
    let v = v.strip_prefix("W/").unwrap_or(v).trim_matches('"');
    Some(v.parse().unwrap_or(0))
}

pub fn etag(version: u64) -> (HeaderName, HeaderValue) {
    let value = HeaderValue::from_str(&format!("\"{version}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
    (header::ETAG, value)
}

/// Parses a JSON body. Syntax errors are 400 `invalid_json`; a well-formed body of the wrong
/// shape (unknown or missing field, wrong type) is 422 `invalid_body`. An empty body is `{}`.
pub fn parse_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, Problem> {
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is larger than {BODY_LIMIT} bytes"),
            )
        } else {
            Problem::bad_request("invalid_body", e.body_text())
        }
    })?;
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let parsed: T = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        use serde_json::error::Category;
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            Category::Data => body_mismatch(&path, &inner, "the body does not fit this route"),
            _ if inner.to_string().contains("number out of range") => {
                body_mismatch(&path, &inner, "a number in the body is out of range")
            }
            _ => Problem::bad_request(
                "invalid_json",
                format!("the body is not valid JSON: {inner}"),
            ),
        }
    })?;
    // Trailing characters after the value are a syntax error too.
    de.end().map_err(|e| {
        Problem::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
    })?;
    Ok(parsed)
}

/// The 422 for a body of the wrong shape, naming the field at fault: in `field`, and first in
/// the detail (`watch_interval: expected a number, got the string "NaN"`). serde's own words
/// name Rust types and a line and column; a client needs the field and what it should be.
fn body_mismatch(path: &str, e: &serde_json::Error, context: &str) -> Problem {
    let text = e.to_string();
    // serde appends " at line L column C"; the field says where.
    let text = match text.rfind(" at line ") {
        Some(at) => &text[..at],
        None => text.as_str(),
    };
    // Missing and unknown fields are reported at their parent; name the field itself.
    let named = |prefix: &str| {
        text.strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
            .map(str::to_string)
    };
    let join = |leaf: String| match path {
        "" | "." => leaf,
        parent => format!("{parent}.{leaf}"),
    };
    let (field, what) = if let Some(f) = named("missing field `") {
        (Some(join(f)), "is required".to_string())
    } else if let Some(f) = named("unknown field `") {
        // Here the path already ends at the unknown field.
        let f = match path {
            "" | "." => f,
            at => at.to_string(),
        };
        let expected = text
            .split_once(", expected ")
            .map(|(_, e)| format!(" (expected {e})"))
            .unwrap_or_default();
        (Some(f), format!("is not a field of this body{expected}"))
    } else {
        let field = (!path.is_empty() && path != ".").then(|| path.to_string());
        (field, plain_expectation(text))
    };
    let detail = match &field {
        Some(f) => format!("{f}: {what}"),
        None => format!("{context}: {what}"),
    };
    let mut p = Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", detail);
    p.field = field;
    p
}

/// serde's "invalid type: string \"NaN\", expected f64" as a client reads it: "expected a
/// number, got the string \"NaN\"".
fn plain_expectation(text: &str) -> String {
    let Some(rest) = text
        .strip_prefix("invalid type: ")
        .or_else(|| text.strip_prefix("invalid value: "))
    else {
        return text.to_string();
    };
    let Some((got, expected)) = rest.split_once(", expected ") else {
        return text.to_string();
    };
    let numeric = [
        "f64", "f32", "u8", "u16", "u32", "u64", "usize", "i8", "i16", "i32", "i64", "isize",
    ];
    let expected = if numeric.contains(&expected) {
        "a number"
    } else {
        expected
    };
    let got = match got.split_once(' ') {
        Some((kind @ ("string" | "integer" | "floating"), value)) => format!("the {kind} {value}"),
        _ => got.to_string(),
    };
    format!("expected {expected}, got {got}")
}

/// A reply of the wrong kind for the route means reeve has a bug; say so without panicking.
pub fn unexpected(reply: &Reply) -> Problem {
    tracing::error!(?reply, "a handler got a reply it does not render");
    Problem::internal("the server produced an unexpected answer; this is a bug in reeve")
}

//! The REST surface under `/api/v1`. Handlers authenticate, turn a request into a
//! [`Command`] and submit it, or read a projection; they never decide anything themselves.

pub mod audit;
pub mod builds;
pub mod cluster;
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
use crate::domain::{Caller, Command, Millis, Plane, Principal, Reply, Rules, State};
use crate::limits::{Bucket, Quotum, RateLimits};

/// Request bodies larger than this are refused with 413.
pub const BODY_LIMIT: usize = crate::domain::bounds::BODY;
/// What the routes answer, and the bodies they read, unless they say otherwise.
pub const JSON: &str = "application/json";
/// A job's log.
pub const TEXT: &str = "text/plain";
/// A runner's chunk of output.
pub const BYTES: &str = "application/octet-stream";
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Sent by the `reeve` command line (`Reeve-Plane: cli`) and the console (`Reeve-Plane: web`)
/// so their requests are admitted and audited on their own plane rather than `rest`.
pub const PLANE_HEADER: HeaderName = HeaderName::from_static("reeve-plane");

#[derive(Clone)]
pub struct AppState {
    pub control: Arc<Control>,
    pub limits: Arc<RateLimits>,
    /// The rules the server decides by, for the OpenAPI document's limits.
    pub rules: Rules,
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
        .merge(cluster::routes())
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
        // Handlers read their query and body themselves; what axum still refuses before a
        // handler runs is a path segment it cannot decode (not UTF-8).
        StatusCode::BAD_REQUEST => (
            "invalid_path",
            if text.is_empty() {
                "the path is malformed".to_string()
            } else {
                text
            },
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

/// An RFC 3339 date-time (what the document's `format: date-time` admits, no more, no less):
/// `T`/`Z` in either case, any number of fraction digits (reeve keeps milliseconds), a leap
/// second only at 23:59:60 UTC. One past the last instant reeve can represent (year 9999 with
/// an offset) is that last instant: it means "never" either way.
pub fn parse_rfc3339(field: &str, s: &str) -> Result<Millis, Problem> {
    let refuse = |why: String| Problem {
        field: Some(field.to_string()),
        ..Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_expires_at",
            format!("{field} must be an RFC 3339 time such as 2026-12-31T00:00:00Z: {why}"),
        )
    };
    let shape = rfc3339_shape(s).ok_or_else(|| refuse(format!("{s:?} is not one")))?;
    // jiff reads at most nine fraction digits; reeve keeps three.
    let mut text = s.to_string();
    if let Some((start, len)) = shape.fraction
        && len > 9
    {
        text.replace_range(start + 9..start + len, "");
    }
    if shape.leap_second {
        // 23:59:60 UTC is the last second of its day; reeve's clock has none, so 23:59:59.
        let utc = text
            .replacen(":60", ":59", 1)
            .parse::<jiff::Timestamp>()
            .map_err(|e| refuse(e.to_string()))?;
        let (h, m) = {
            let t = utc.to_zoned(jiff::tz::TimeZone::UTC);
            (t.hour(), t.minute())
        };
        if (h, m) != (23, 59) {
            return Err(refuse("a leap second is 23:59:60 UTC".into()));
        }
        return Ok(utc.as_millisecond());
    }
    match text.parse::<jiff::Timestamp>() {
        Ok(t) => Ok(t.as_millisecond()),
        Err(_)
            if s.starts_with("9999-")
                && jiff::civil::Date::strptime("%Y-%m-%d", &s[..10]).is_ok() =>
        {
            // The last whole second reeve can represent (and write back as a time).
            Ok(jiff::Timestamp::MAX.as_second() * 1000)
        }
        Err(e) => Err(refuse(e.to_string())),
    }
}

/// Where an RFC 3339 date-time's optional parts are, if `s` has its shape:
/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
struct Rfc3339Shape {
    /// Start and length of the fraction's digits.
    fraction: Option<(usize, usize)>,
    leap_second: bool,
}

fn rfc3339_shape(s: &str) -> Option<Rfc3339Shape> {
    let b = s.as_bytes();
    let digits = |from: usize, n: usize| {
        b.get(from..from + n)
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
    };
    let at = |i: usize, c: u8| b.get(i).is_some_and(|x| x.eq_ignore_ascii_case(&c));
    let shaped = digits(0, 4)
        && at(4, b'-')
        && digits(5, 2)
        && at(7, b'-')
        && digits(8, 2)
        && at(10, b'T')
        && digits(11, 2)
        && at(13, b':')
        && digits(14, 2)
        && at(16, b':')
        && digits(17, 2);
    if !shaped {
        return None;
    }
    let number = |from: usize| s[from..from + 2].parse::<u8>().ok();
    if number(11)? > 23 || number(14)? > 59 || number(17)? > 60 {
        return None;
    }
    let mut i = 19;
    let mut fraction = None;
    if at(i, b'.') {
        let len = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if len == 0 {
            return None;
        }
        fraction = Some((i + 1, len));
        i += 1 + len;
    }
    let zone = if at(i, b'Z') {
        i + 1 == b.len()
    } else {
        matches!(b.get(i), Some(b'+' | b'-'))
            && digits(i + 1, 2)
            && at(i + 3, b':')
            && digits(i + 4, 2)
            && i + 6 == b.len()
            && number(i + 1)? <= 23
            && number(i + 4)? <= 59
    };
    zone.then_some(Rfc3339Shape {
        fraction,
        leap_second: number(17)? == 60,
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
/// caller and the state to `read`, whose answer is JSON.
pub fn read<T>(
    app: &AppState,
    headers: &HeaderMap,
    read: impl FnOnce(&State, &Caller<'_>) -> Result<T, Problem>,
) -> Result<T, Problem> {
    read_as(app, headers, JSON, read)
}

/// [`read`] for an answer of another media type.
pub fn read_as<T>(
    app: &AppState,
    headers: &HeaderMap,
    media: &str,
    read: impl FnOnce(&State, &Caller<'_>) -> Result<T, Problem>,
) -> Result<T, Problem> {
    let state = app.control.state();
    let principal = authenticate(&state, headers)?;
    let plane = rest_plane(headers)?;
    let caller = state.caller(principal, now_ms())?;
    state.admit(&caller, plane)?;
    acceptable(headers, media)?;
    let kind = caller.token.map(|t| t.kind);
    app.limits
        .check(principal, kind, Bucket::Read)
        .map_err(rate_limited)?;
    read(&state, &caller)
}

/// 406 unless the request's `Accept` admits `media` (no `Accept` admits anything). A refusal
/// is a problem document whatever was asked for: there is nothing else to say it in.
pub fn acceptable(headers: &HeaderMap, media: &str) -> Result<(), Problem> {
    let (kind, _) = media.split_once('/').unwrap_or((media, ""));
    let mut asked = false;
    for value in headers.get_all(header::ACCEPT) {
        asked = true;
        let Ok(value) = value.to_str() else {
            continue;
        };
        for range in value.split(',') {
            let mut parts = range.split(';');
            let name = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            // `q=0` means "not this".
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            let fits = name == "*/*"
                || name == media
                || name.strip_suffix("/*").is_some_and(|t| t == kind);
            if fits && !refused {
                return Ok(());
            }
        }
    }
    if !asked {
        return Ok(());
    }
    Err(Problem::new(
        StatusCode::NOT_ACCEPTABLE,
        "not_acceptable",
        format!("this route answers {media}; the Accept header does not allow it"),
    ))
}

/// 415 unless the body's `Content-Type` is `media` (parameters aside; for JSON, any
/// `application/*+json` too). A body without one is read as `media`.
pub fn content_type(headers: &HeaderMap, media: &str) -> Result<(), Problem> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let name = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let fits = name == media
        || (media == JSON && name.starts_with("application/") && name.ends_with("+json"));
    if fits {
        return Ok(());
    }
    Err(Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!(
            "this route reads a body of {media}, not {:?}; send Content-Type: {media}",
            String::from_utf8_lossy(value.as_bytes())
        ),
    ))
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
    admin_read_as(app, headers, JSON, read_fn)
}

/// [`admin_read`] for an answer of another media type.
pub fn admin_read_as<T>(
    app: &AppState,
    headers: &HeaderMap,
    media: &str,
    read_fn: impl FnOnce(&State, &Caller<'_>) -> Result<T, Problem>,
) -> Result<T, Problem> {
    read_as(app, headers, media, |state, caller| {
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
    // An answer the caller cannot take is refused before anything is changed.
    let command = match acceptable(headers, JSON) {
        Ok(()) => command,
        Err(p) => Err(p),
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

/// Whether a command's headers alone make it a malformed request, whatever its body: what
/// [`submit_on`] refuses before it looks at the command.
pub fn malformed_headers(headers: &HeaderMap) -> bool {
    idempotency_key(headers).is_err() || acceptable(headers, JSON).is_err()
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

/// `If-Match: "<version>"` (or `W/"<version>"`, or a bare number); `*` (or no header) matches
/// any version. reeve's ETags are all of that form, so anything else is a malformed header
/// (400 `invalid_header`), not a precondition that happens to fail.
pub fn if_match(headers: &HeaderMap) -> Result<Option<u64>, Problem> {
    let Some(raw) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let malformed = || {
        Problem::bad_request(
            "invalid_header",
            format!(
                "If-Match must be an ETag reeve gave, such as \"3\", or *; got {:?}",
                String::from_utf8_lossy(raw.as_bytes())
            ),
        )
    };
    let v = raw.to_str().map_err(|_| malformed())?.trim();
    if v == "*" {
        return Ok(None);
    }
    let unquoted = v.strip_prefix("W/").unwrap_or(v);
    let digits = match unquoted.strip_prefix('"').and_then(|u| u.strip_suffix('"')) {
        Some(inner) => inner,
        None if unquoted.len() == v.len() => v,
        None => return Err(malformed()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    // A version too large to be one can match nothing: the precondition fails.
    Ok(Some(digits.parse().unwrap_or(u64::MAX)))
}

/// A project id: 1 to `bounds::PROJECT_ID` characters of `a-z`, `0-9` and `-`, as the domain
/// accepts one when a project is created (and as the document's pattern says).
pub fn is_project_id(s: &str) -> bool {
    (1..=crate::domain::bounds::PROJECT_ID).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// An id in a path or a query: a UUID in its usual hyphenated form, the one reeve writes.
pub fn parse_uuid(raw: &str) -> Option<Uuid> {
    (raw.len() == 36)
        .then(|| Uuid::parse_str(raw).ok())
        .flatten()
}

/// A UUID field of a body or query, read as [`parse_uuid`] reads an id: in its hyphenated form
/// only, what the document's `format: uuid` says.
pub fn hyphenated<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Uuid, D::Error> {
    let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
    parse_uuid(&s).ok_or_else(|| {
        serde::de::Error::invalid_value(
            serde::de::Unexpected::Str(&s),
            &"a UUID such as 01a20400-ed62-75c0-b06b-69a06960e3c6",
        )
    })
}

/// The refusal for a body that could not be read.
pub fn unreadable_body(e: BytesRejection) -> Problem {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than {BODY_LIMIT} bytes"),
        )
    } else {
        Problem::bad_request("invalid_body", e.body_text())
    }
}

pub fn etag(version: u64) -> (HeaderName, HeaderValue) {
    let value = HeaderValue::from_str(&format!("\"{version}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
    (header::ETAG, value)
}

/// Parses a JSON body. A body of another media type is 415 `unsupported_media_type`; syntax
/// errors are 400 `invalid_json`; a well-formed body of the wrong shape (unknown or missing
/// field, wrong type) is 422 `invalid_body`. An empty body is `{}`.
pub fn parse_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Problem> {
    content_type(headers, JSON)?;
    let bytes = body.map_err(unreadable_body)?;
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

/// An integer in a body, read as JSON Schema reads one: `3` and `3.0` are the same integer.
pub fn whole<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i128>,
{
    let n = <serde_json::Number as serde::Deserialize>::deserialize(d)?;
    whole_of(&n)
}

/// [`whole`] for a field that may be null.
pub fn whole_or_null<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i128>,
{
    match <Option<serde_json::Number> as serde::Deserialize>::deserialize(d)? {
        Some(n) => whole_of(&n).map(Some),
        None => Ok(None),
    }
}

fn whole_of<E: serde::de::Error, T: TryFrom<i128>>(n: &serde_json::Number) -> Result<T, E> {
    let wide = if let Some(u) = n.as_u64() {
        Some(i128::from(u))
    } else if let Some(i) = n.as_i64() {
        Some(i128::from(i))
    } else {
        // Saturates far outside every target type, which then refuses it.
        n.as_f64()
            .filter(|f| f.is_finite() && f.fract() == 0.0)
            .map(|f| f as i128)
    };
    wide.and_then(|w| T::try_from(w).ok()).ok_or_else(|| {
        E::invalid_value(
            serde::de::Unexpected::Other(&format!("the number {n}")),
            &"a whole number in range",
        )
    })
}

/// A reply of the wrong kind for the route means reeve has a bug; say so without panicking.
pub fn unexpected(reply: &Reply) -> Problem {
    tracing::error!(?reply, "a handler got a reply it does not render");
    Problem::internal("the server produced an unexpected answer; this is a bug in reeve")
}

//! The MCP endpoint at `/mcp`: agents manage watches and builds through tools, served over
//! Streamable HTTP by rmcp (stateless, JSON responses).
//!
//! The endpoint is another door onto the same core: every tool builds the [`Command`] a REST
//! handler would, submits it through [`crate::control::Control::submit`] with plane `mcp`,
//! and reads the same projections. What this module adds is the transport's rules (a gate in
//! front of rmcp) and the tool table (`tools.rs`).
//!
//! [`Command`]: crate::domain::Command

mod rpc;
mod tools;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post_service;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use crate::api::problem::{self, ProblemDoc};
use crate::api::{AppState, BODY_LIMIT, Problem, authenticate, now_ms};
use crate::domain::{Plane, Principal};

/// The MCP revisions reeve speaks, newest first. 2026-07-28 has no `initialize`: a client
/// asks `server/discover` and names the revision in each request; the two before it negotiate
/// it once with `initialize`.
pub const PROTOCOL_VERSIONS: [&str; 3] = ["2026-07-28", "2025-11-25", "2025-06-18"];

const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// How the endpoint is exposed.
#[derive(Clone, Debug, Default)]
pub struct McpConfig {
    /// Agents may only read: write tools are not listed, and calling one is refused.
    pub read_only: bool,
    /// `Host` values accepted besides loopback ones: `name` (any port) or `name:port`.
    pub allowed_hosts: Vec<String>,
    /// `Origin` values accepted besides loopback ones, e.g. `https://agent.example.com`.
    pub allowed_origins: Vec<String>,
}

/// Who the gate let in; rmcp hands it to the tools inside the request's http parts.
#[derive(Clone, Copy, Debug)]
struct Identity(Principal);

/// Raised by a tool whose call does not fit: a tool that does not exist, or arguments its
/// input schema rejects. The tool answers JSON-RPC -32602; rmcp sends every error a handler
/// returns with HTTP 200, and the gate turns that into 400 for a 2026-07-28 request, whose
/// clients read a JSON-RPC error at any status. Older revisions keep 200: their clients treat
/// a 4xx answer to a request as a broken transport (the Python SDK 1.x drops the session)
/// instead of reading the -32602 in it.
#[derive(Clone, Debug, Default)]
struct InvalidParams(Arc<AtomicBool>);

impl InvalidParams {
    fn raise(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn raised(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

struct Gate {
    app: AppState,
    cfg: McpConfig,
}

/// The `/mcp` route. It sits outside the REST error rewriting: JSON-RPC answers its own way.
pub fn router(app: AppState, cfg: McpConfig) -> Router {
    let handler = tools::Tools::new(app.clone(), cfg.read_only);
    let transport = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_max_request_body_bytes(BODY_LIMIT)
        // The gate checks Host and Origin itself, before authentication, so that an
        // unauthenticated rebinding attempt is refused as such.
        .disable_allowed_hosts();
    let service = StreamableHttpService::new(
        move || Ok(handler.clone()),
        Arc::new(NeverSessionManager::default()),
        transport,
    );
    let gate = Arc::new(Gate { app, cfg });
    Router::new()
        .route("/mcp", post_service(service))
        .route_layer(middleware::from_fn_with_state(gate, guard))
}

/// The transport's rules, in order: DNS-rebinding protection (403), POST only (405), the
/// JSON-RPC envelope (400 with a JSON-RPC error, see `rpc.rs`), the protocol revision (400),
/// then the bearer token (401, or 403 for a token of another kind).
async fn guard(State(gate): State<Arc<Gate>>, req: Request, next: Next) -> Response {
    if let Err(p) = gate.check_host(req.headers()) {
        return p.into_response();
    }
    if let Err(p) = gate.check_origin(req.headers()) {
        return p.into_response();
    }
    // Stateless: there is no stream to GET and no session to DELETE, whoever asks.
    if req.method() != Method::POST {
        return (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "POST")]).into_response();
    }
    let (parts, body) = req.into_parts();
    // A body that is not JSON by its Content-Type is rmcp's to refuse (415), unread.
    let (envelope, body) = if is_json(&parts.headers) {
        let bytes = match axum::body::to_bytes(body, BODY_LIMIT).await {
            Ok(b) => b,
            Err(e) => {
                let p = if e.into_inner().is::<http_body_util::LengthLimitError>() {
                    Problem::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        format!("the body is larger than {BODY_LIMIT} bytes"),
                    )
                } else {
                    Problem::bad_request("invalid_body", "the body could not be read")
                };
                return p.into_response();
            }
        };
        match rpc::check(&bytes) {
            Ok(env) => (env, Body::from(bytes)),
            Err(e) => return e.into_response(),
        }
    } else {
        (rpc::Envelope::default(), body)
    };
    if let Some(resp) = unsupported_version(&parts.headers, &envelope) {
        return resp;
    }
    let modern = envelope.modern;
    let principal = {
        let state = gate.app.control.state();
        let admitted = authenticate(&state, &parts.headers)
            .and_then(|p| Ok(state.caller(p, now_ms()).map(|c| (p, c))?));
        match admitted {
            Err(p) => return invalid_token(p),
            Ok((principal, caller)) => {
                if let Err(r) = state.admit(&caller, Plane::Mcp) {
                    return Problem::from(r).into_response();
                }
                principal
            }
        }
    };
    let invalid_params = InvalidParams::default();
    let mut req = Request::from_parts(parts, body);
    req.extensions_mut().insert(Identity(principal));
    req.extensions_mut().insert(invalid_params.clone());
    let mut resp = next.run(req).await;
    if modern && invalid_params.raised() {
        *resp.status_mut() = StatusCode::BAD_REQUEST;
    }
    resp
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let essence = ct.split_once(';').map_or(ct, |(e, _)| e);
            essence.trim().eq_ignore_ascii_case("application/json")
        })
}

/// The refusal of a revision reeve does not speak, named in the `MCP-Protocol-Version` header
/// or in the request's `_meta`. It is a JSON-RPC error with `data.supported`, which is what a
/// 2026-07-28 client retries with. A client of that era (a `server/discover`, or a revision in
/// `_meta`) gets it as `application/json`, the only error body it reads; an older client's
/// header-only request gets the same members inside the problem document the gate has always
/// answered with.
fn unsupported_version(headers: &HeaderMap, env: &rpc::Envelope) -> Option<Response> {
    let header = headers
        .get("mcp-protocol-version")
        .map(|v| v.to_str().unwrap_or(""));
    // A header that disagrees with `_meta` is first of all a header mismatch (-32020, which
    // rmcp answers), whether or not either revision is one reeve speaks.
    if env.meta_version.is_some() && header != env.meta_version.as_deref() {
        return None;
    }
    let requested = [header, env.meta_version.as_deref()]
        .into_iter()
        .flatten()
        .find(|v| !PROTOCOL_VERSIONS.contains(v))?;
    let error = rpc::RpcError::new(
        env.id.as_ref(),
        rpc::UNSUPPORTED_PROTOCOL_VERSION,
        format!(
            "Unsupported protocol version {requested:?}; reeve speaks {}",
            PROTOCOL_VERSIONS.join(", ")
        ),
    )
    .with_data(serde_json::json!({
        "requested": requested,
        "supported": PROTOCOL_VERSIONS,
    }));
    if env.modern {
        return Some(error.into_response());
    }
    let code = "unsupported_protocol_version";
    let problem = ProblemDoc {
        type_: format!("urn:reeve:problem:{code}"),
        title: "Bad Request".into(),
        status: StatusCode::BAD_REQUEST.as_u16(),
        detail: format!(
            "MCP-Protocol-Version {requested:?} is not supported; reeve speaks {}",
            PROTOCOL_VERSIONS.join(", ")
        ),
        code: code.into(),
        field: None,
    };
    let mut body = match serde_json::to_value(&problem) {
        Ok(serde_json::Value::Object(obj)) => obj,
        _ => serde_json::Map::new(),
    };
    body.extend(error.members());
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    Some(
        (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, problem::CONTENT_TYPE)],
            bytes,
        )
            .into_response(),
    )
}

fn invalid_token(p: Problem) -> Response {
    let mut resp = p.into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"reeve\", error=\"invalid_token\""),
    );
    resp
}

fn forbidden(code: &str, detail: String) -> Problem {
    Problem::new(StatusCode::FORBIDDEN, code, detail)
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    LOOPBACK_HOSTS.iter().any(|h| host.eq_ignore_ascii_case(h))
}

impl Gate {
    fn check_host(&self, headers: &HeaderMap) -> Result<(), Problem> {
        let raw = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let authority = raw.parse::<axum::http::uri::Authority>().map_err(|_| {
            forbidden(
                "host_not_allowed",
                format!("the Host header {raw:?} is not a host name"),
            )
        })?;
        let host = authority.host();
        let allowed = is_loopback(host)
            || self.cfg.allowed_hosts.iter().any(|a| {
                a.eq_ignore_ascii_case(authority.as_str())
                    || a.eq_ignore_ascii_case(host.trim_start_matches('[').trim_end_matches(']'))
            });
        if allowed {
            Ok(())
        } else {
            Err(forbidden(
                "host_not_allowed",
                format!(
                    "Host {raw:?} is not allowed on /mcp (DNS-rebinding protection); \
                     start reeve with --mcp-allowed-host {host} to allow it"
                ),
            ))
        }
    }

    fn check_origin(&self, headers: &HeaderMap) -> Result<(), Problem> {
        let Some(raw) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let raw = raw.to_str().unwrap_or("");
        let listed = |o: &str| {
            self.cfg
                .allowed_origins
                .iter()
                .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(o))
        };
        let allowed = match url::Url::parse(raw) {
            Ok(u) if u.host_str().is_some_and(is_loopback) => true,
            Ok(u) => listed(&u.origin().ascii_serialization()),
            Err(_) => listed(raw),
        };
        if allowed {
            Ok(())
        } else {
            Err(forbidden(
                "origin_not_allowed",
                format!(
                    "Origin {raw:?} is not allowed on /mcp (DNS-rebinding protection); \
                     start reeve with --mcp-allowed-origin {raw} to allow it"
                ),
            ))
        }
    }
}

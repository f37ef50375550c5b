//! The JSON-RPC envelope, checked by the gate before rmcp sees the body.
//!
//! rmcp answers a body it cannot read as a client message with HTTP 415 and a line of text,
//! and a known method whose params do not fit falls through to its catch-all as "method not
//! found". An agent's client reads neither: it expects a JSON-RPC error. So the gate reads the
//! body first and answers what is not a well-formed message with one, with HTTP 400:
//! -32700 for a body that is not JSON, -32600 for one that is not a single JSON-RPC message
//! (a batch, a non-object, a bad `jsonrpc`, `id` or `method`), -32602 for params that do not
//! fit the method. Whatever passes is handed to rmcp byte for byte.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rmcp::model::{
    CallToolRequestParams, ClientJsonRpcMessage, ClientRequest, DiscoverRequestParams,
    InitializeRequestParams, PaginatedRequestParams,
};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

pub(super) const PARSE_ERROR: i64 = -32700;
pub(super) const INVALID_REQUEST: i64 = -32600;
pub(super) const INVALID_PARAMS: i64 = -32602;
/// rmcp's code for a revision the server does not speak (the 2026-07-28 schema's
/// `UnsupportedProtocolVersionError`); its `data.supported` is what clients retry with.
pub(super) const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;

/// Where a request carries its revision when it negotiates per request (2026-07-28).
const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";

/// What the gate needs from a message that passed.
#[derive(Debug, Default)]
pub(super) struct Envelope {
    /// The request's id, to echo in an error the gate answers later (a notification has none).
    pub id: Option<Value>,
    /// The revision named in the request's `_meta`, if it negotiates per request.
    pub meta_version: Option<String>,
    /// `server/discover` or a per-request revision: a client of the 2026-07-28 era, which
    /// reads only JSON-RPC errors.
    pub modern: bool,
}

/// A JSON-RPC error the gate answers itself.
#[derive(Debug)]
pub(super) struct RpcError {
    id: Value,
    code: i64,
    message: String,
    data: Option<Value>,
}

impl RpcError {
    pub(super) fn new(id: Option<&Value>, code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            id: id.cloned().unwrap_or(Value::Null),
            code,
            message: message.into(),
            data: None,
        }
    }

    pub(super) fn with_data(mut self, data: Value) -> RpcError {
        self.data = Some(data);
        self
    }

    #[cfg(test)]
    fn code(&self) -> i64 {
        self.code
    }

    /// The members of the JSON-RPC error response, to stand alone or to join a problem.
    pub(super) fn members(&self) -> Map<String, Value> {
        let mut error = Map::new();
        error.insert("code".into(), json!(self.code));
        error.insert("message".into(), json!(self.message));
        if let Some(data) = &self.data {
            error.insert("data".into(), data.clone());
        }
        let mut body = Map::new();
        body.insert("jsonrpc".into(), json!("2.0"));
        body.insert("id".into(), self.id.clone());
        body.insert("error".into(), Value::Object(error));
        body
    }
}

impl IntoResponse for RpcError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&Value::Object(self.members())).unwrap_or_default();
        let mut resp = (StatusCode::BAD_REQUEST, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }
}

/// Why params do not fit a method's typed params, if they do not.
type Fits = fn(&Value) -> Option<String>;

/// The methods reeve serves whose params rmcp types: a request naming one of them that rmcp
/// could only read as a custom request had params that do not fit.
const SERVED: [(&str, Fits); 4] = [
    ("tools/call", misfit::<CallToolRequestParams>),
    ("tools/list", misfit::<PaginatedRequestParams>),
    ("initialize", misfit::<InitializeRequestParams>),
    ("server/discover", misfit::<DiscoverRequestParams>),
];

fn misfit<T: DeserializeOwned>(params: &Value) -> Option<String> {
    serde_json::from_value::<T>(params.clone())
        .err()
        .map(|e| e.to_string())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reads the body as one JSON-RPC message from a client, or says which error it deserves.
pub(super) fn check(body: &[u8]) -> Result<Envelope, RpcError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        RpcError::new(
            None,
            PARSE_ERROR,
            format!("Parse error: the body is not JSON ({e})"),
        )
    })?;
    let obj = match value {
        Value::Object(obj) => obj,
        Value::Array(_) => {
            return Err(RpcError::new(
                None,
                INVALID_REQUEST,
                "Invalid Request: batches are not supported; send one JSON-RPC message per POST",
            ));
        }
        other => {
            return Err(RpcError::new(
                None,
                INVALID_REQUEST,
                format!(
                    "Invalid Request: a JSON-RPC message is an object, not {}",
                    kind(&other)
                ),
            ));
        }
    };
    let id = match obj.get("id") {
        None => None,
        Some(v @ Value::String(_)) => Some(v.clone()),
        Some(v @ Value::Number(n)) if n.is_i64() || n.is_u64() => Some(v.clone()),
        Some(other) => {
            return Err(RpcError::new(
                None,
                INVALID_REQUEST,
                format!(
                    "Invalid Request: id must be a string or an integer, not {}",
                    kind(other)
                ),
            ));
        }
    };
    let invalid = |message: String| RpcError::new(id.as_ref(), INVALID_REQUEST, message);
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(invalid(
            "Invalid Request: \"jsonrpc\" must be \"2.0\"".into(),
        ));
    }
    let answers = obj.contains_key("result") || obj.contains_key("error");
    let method = match obj.get("method") {
        None if answers => None,
        None => {
            return Err(invalid(
                "Invalid Request: a message needs a \"method\" (or, as a response, a \"result\" \
                 or an \"error\")"
                    .into(),
            ));
        }
        Some(Value::String(m)) if !answers => Some(m.clone()),
        Some(Value::String(_)) => {
            return Err(invalid(
                "Invalid Request: a message is a request or a response, not both".into(),
            ));
        }
        Some(other) => {
            return Err(invalid(format!(
                "Invalid Request: \"method\" must be a string, not {}",
                kind(other)
            )));
        }
    };
    let is_request = method.is_some() && id.is_some();
    let params = obj.get("params").cloned();
    if is_request
        && let Some(p) = &params
        && !p.is_object()
    {
        return Err(RpcError::new(
            id.as_ref(),
            INVALID_PARAMS,
            format!("Invalid params: params must be an object, not {}", kind(p)),
        ));
    }
    let meta_version = params
        .as_ref()
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get(META_PROTOCOL_VERSION))
        .and_then(Value::as_str)
        .map(str::to_string);
    let modern = meta_version.is_some() || method.as_deref() == Some("server/discover");

    // A revision negotiated per request has no `initialize`: rmcp answers it there as a method
    // it does not know (404, -32601), whatever its params.
    let served = |method: &str| !(method == "initialize" && meta_version.is_some());
    let unfit = |method: &str| {
        let spec = SERVED.iter().find(|(m, _)| *m == method && served(m));
        spec.map(|(_, fits)| {
            let why = fits(params.as_ref().unwrap_or(&Value::Null))
                .unwrap_or_else(|| "they do not fit the method".into());
            RpcError::new(
                id.as_ref(),
                INVALID_PARAMS,
                format!("Invalid params for {method}: {why}"),
            )
        })
    };
    match serde_json::from_value::<ClientJsonRpcMessage>(Value::Object(obj)) {
        Ok(ClientJsonRpcMessage::Request(req)) => {
            if let ClientRequest::CustomRequest(custom) = &req.request
                && let Some(e) = unfit(&custom.method)
            {
                return Err(e);
            }
        }
        Ok(_) => {}
        Err(e) => {
            if is_request && let Some(e) = method.as_deref().and_then(unfit) {
                return Err(e);
            }
            return Err(invalid(format!("Invalid Request: {e}")));
        }
    }
    Ok(Envelope {
        id,
        meta_version,
        modern,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(body: &str) -> Option<i64> {
        check(body.as_bytes()).err().map(|e| e.code())
    }

    #[test]
    fn each_kind_of_bad_body_has_its_code() {
        assert_eq!(code_of("{not json"), Some(PARSE_ERROR));
        assert_eq!(code_of(""), Some(PARSE_ERROR));
        assert_eq!(code_of("[]"), Some(INVALID_REQUEST));
        assert_eq!(code_of("42"), Some(INVALID_REQUEST));
        assert_eq!(
            code_of(r#"{"id":1,"method":"ping"}"#),
            Some(INVALID_REQUEST)
        );
        assert_eq!(
            code_of(r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#),
            Some(INVALID_REQUEST)
        );
        assert_eq!(
            code_of(r#"{"jsonrpc":"2.0","id":1,"method":7}"#),
            Some(INVALID_REQUEST)
        );
        assert_eq!(
            code_of(r#"{"jsonrpc":"2.0","id":1}"#),
            Some(INVALID_REQUEST)
        );
        assert_eq!(
            code_of(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#),
            Some(INVALID_PARAMS)
        );
        assert_eq!(
            code_of(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":[1]}"#),
            Some(INVALID_PARAMS)
        );
        assert_eq!(
            code_of(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#),
            None
        );
        assert_eq!(
            code_of(r#"{"jsonrpc":"2.0","id":"a","method":"tools/list"}"#),
            None
        );
        assert_eq!(
            code_of(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            None
        );
    }

    #[test]
    fn the_id_is_echoed_once_it_is_readable() {
        let e = check(br#"{"jsonrpc":"1.0","id":"x7","method":"ping"}"#).unwrap_err();
        assert_eq!(e.members()["id"], json!("x7"));
        let e = check(b"[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}]").unwrap_err();
        assert_eq!(e.members()["id"], Value::Null);
    }

    #[test]
    fn initialize_with_a_per_request_revision_is_left_to_rmcp() {
        assert_eq!(
            code_of(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#),
            Some(INVALID_PARAMS)
        );
        assert_eq!(
            code_of(
                r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#
            ),
            None
        );
    }

    #[test]
    fn a_per_request_revision_marks_a_modern_client() {
        let env = check(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        )
        .unwrap();
        assert!(env.modern);
        assert_eq!(env.meta_version.as_deref(), Some("2026-07-28"));
        let env = check(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap();
        assert!(!env.modern);
    }
}

//! The MCP endpoint at `/mcp`, spoken to over real HTTP the way an agent's client would:
//! JSON-RPC 2.0 posts with a bearer MCP token, no session.
//!
//! Sections: the harness (a small JSON-RPC client and audit checks), the transport and its
//! gate, `tools/list`, each tool allowed and refused, idempotency keys, rate limits, and the
//! audit trail.
//!
//! Most servers here lift the MCP rate limits (`roomy`), because MCP tokens default to five
//! writes a minute and these tests make many calls per token; the limits have their own
//! section.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use reeve::server::ServerConfig;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

const LATEST: &str = "2025-11-25";
const PREVIOUS: &str = "2025-06-18";
/// The revision without `initialize`: `server/discover`, and the revision in every request.
const MODERN: &str = "2026-07-28";
const INVALID_TOKEN: &str = r#"Bearer realm="reeve", error="invalid_token""#;
const INVALID_PARAMS: i64 = -32602;

const READ_TOOLS: [&str; 7] = [
    "list_projects",
    "list_watches",
    "get_watch",
    "list_builds",
    "get_build",
    "get_job",
    "get_job_log",
];
const WRITE_TOOLS: [&str; 11] = [
    "create_watch",
    "cancel_watch",
    "pause_watch",
    "resume_watch",
    "trigger_watch",
    "trigger_build",
    "restart_build",
    "abort_build",
    "restart_job",
    "rerun_job",
    "abort_job",
];

fn roomy(cfg: &mut ServerConfig) {
    cfg.mcp_trigger_per_min = 100_000;
    cfg.mcp_read_per_min = 100_000;
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn is_read(tool: &str) -> bool {
    READ_TOOLS.contains(&tool)
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn rpc_body(method: &str, params: Option<Value>) -> Value {
    let mut body = json!({
        "jsonrpc": "2.0",
        "id": NEXT_ID.fetch_add(1, Ordering::Relaxed),
        "method": method,
    });
    if let Some(p) = params {
        body["params"] = p;
    }
    body
}

fn init_params(version: &str) -> Value {
    json!({
        "protocolVersion": version,
        "capabilities": {},
        "clientInfo": {"name": "reeve-tests", "version": "1"},
    })
}

/// One POST to `/mcp`. Every header an agent sends is spelled out so that transport tests
/// can leave any of them out (`None`) or add others (`extra`, e.g. Host and Origin).
async fn post_mcp(
    api: &Api,
    token: Option<&str>,
    version: Option<&str>,
    extra: &[(&str, &str)],
    body: &Value,
) -> Resp {
    let mut rb = api
        .client
        .post(format!("{}/mcp", api.base))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(v) = version {
        rb = rb.header("mcp-protocol-version", v);
    }
    for (k, v) in extra {
        rb = rb.header(*k, *v);
    }
    fetch(rb.body(body.to_string())).await
}

/// A JSON-RPC success: status 200, JSON, the same id back, and a `result`.
#[track_caller]
fn rpc_result(r: &Resp) -> &Value {
    assert_eq!(r.status, 200, "headers {:?}; body {}", r.headers, r.text);
    let ct = r.header("content-type").unwrap_or("");
    assert!(ct.starts_with("application/json"), "content-type {ct:?}");
    assert_eq!(r.body["jsonrpc"], "2.0", "{}", r.text);
    assert!(r.body.get("error").is_none(), "JSON-RPC error: {}", r.text);
    r.body
        .get("result")
        .unwrap_or_else(|| panic!("no result in {}", r.text))
}

/// A call that does not fit (no such tool, arguments the schema rejects): JSON-RPC -32602 as
/// `application/json`, echoing the request's id, with HTTP 400 for a 2026-07-28 request and
/// 200 for an older one. Returns the error object.
#[track_caller]
fn invalid_params(r: &Resp, modern: bool) -> &Value {
    let status = if modern { 400 } else { 200 };
    assert_eq!(r.status, status, "headers {:?}; body {}", r.headers, r.text);
    let ct = r.header("content-type").unwrap_or("");
    assert!(ct.starts_with("application/json"), "content-type {ct:?}");
    assert_eq!(r.body["jsonrpc"], "2.0", "{}", r.text);
    assert!(
        r.body["id"].is_u64(),
        "the request's id is echoed: {}",
        r.text
    );
    assert!(
        r.body.get("result").is_none(),
        "expected an error: {}",
        r.text
    );
    let err = r
        .body
        .get("error")
        .unwrap_or_else(|| panic!("no error in {}", r.text));
    assert_eq!(err["code"], json!(INVALID_PARAMS), "{}", r.text);
    err
}

/// A refusal by the gate: status, problem code, and (for 401) the challenge.
#[track_caller]
fn assert_gate(r: &Resp, status: u16, code: &str) {
    assert_problem(r, status, code);
    let www = r.header("www-authenticate");
    if status == 401 {
        assert_eq!(www, Some(INVALID_TOKEN), "401 challenge");
    } else {
        assert_eq!(www, None, "only a 401 challenges");
    }
}

/// The one text block of a tool result.
#[track_caller]
fn text_of(result: &Value) -> String {
    let content = result["content"]
        .as_array()
        .unwrap_or_else(|| panic!("no content array: {result}"));
    assert_eq!(content.len(), 1, "one text block: {result}");
    assert_eq!(content[0]["type"], "text", "{result}");
    let text = str_field(&content[0], "text");
    assert!(!text.is_empty(), "empty text: {result}");
    text
}

/// The `command` of an audit entry, unwrapped: (`mcp_call` or `mcp_write`, its fields).
#[track_caller]
fn mcp_command(entry: &Value) -> (String, Value) {
    let obj = entry["command"]
        .as_object()
        .unwrap_or_else(|| panic!("command is not an object: {entry}"));
    assert_eq!(obj.len(), 1, "one command: {entry}");
    let (k, v) = obj.iter().next().expect("one key");
    (k.clone(), v.clone())
}

/// Whether `value` fits `schema`, for the parts of JSON Schema that schemars emits
/// (type, enum, const, properties, required, items, $ref into $defs, anyOf/oneOf/allOf).
/// Clients such as the Python SDK check structuredContent against outputSchema, so a
/// schema that does not describe the answer breaks them. Returns what did not fit.
fn misfit(root: &Value, schema: &Value, value: &Value, at: &str) -> Option<String> {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/$defs/");
        return misfit(root, &root["$defs"][name], value, at);
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let fits = |t: &str| match t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            "number" => value.is_number(),
            "integer" => value.is_i64() || value.is_u64(),
            _ => true,
        };
        if !types.iter().any(|t| fits(t)) {
            return Some(format!("{at}: {value} is not {t}"));
        }
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(value)
    {
        return Some(format!("{at}: {value} is not one of {options:?}"));
    }
    if let Some(c) = schema.get("const")
        && c != value
    {
        return Some(format!("{at}: {value} is not {c}"));
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(branches) = schema[key].as_array()
            && !branches
                .iter()
                .any(|b| misfit(root, b, value, at).is_none())
        {
            return Some(format!("{at}: {value} fits no branch of {key}"));
        }
    }
    if let Some(all) = schema["allOf"].as_array() {
        for b in all {
            if let Some(m) = misfit(root, b, value, at) {
                return Some(m);
            }
        }
    }
    if let Some(obj) = value.as_object() {
        for r in schema["required"].as_array().into_iter().flatten() {
            let r = r.as_str().unwrap_or_default();
            if !obj.contains_key(r) {
                return Some(format!("{at}: required {r:?} is missing"));
            }
        }
        if let Some(props) = schema["properties"].as_object() {
            for (k, v) in obj {
                match props.get(k) {
                    Some(sub) => {
                        if let Some(m) = misfit(root, sub, v, &format!("{at}.{k}")) {
                            return Some(m);
                        }
                    }
                    None if schema["additionalProperties"] == false => {
                        return Some(format!("{at}: {k:?} is not in the schema"));
                    }
                    None => {}
                }
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            if let Some(m) = misfit(root, items, v, &format!("{at}[{i}]")) {
                return Some(m);
            }
        }
    }
    None
}

/// A successful tool call.
struct Done {
    structured: Value,
    text: String,
    entry: Value,
}

/// A tool call answered with `isError: true`.
struct Refused {
    text: String,
    code: String,
    entry: Value,
}

/// An MCP token and a client for it.
#[derive(Clone)]
struct Agent {
    api: Api,
    token: String,
    id: String,
}

impl Agent {
    async fn new(s: &TestServer, projects: Value, allow_trigger: bool) -> Agent {
        let (id, token) = s.create_token("mcp", projects, allow_trigger).await;
        Agent {
            api: s.api.clone(),
            token,
            id,
        }
    }

    fn principal(&self) -> String {
        format!("token:{}", self.id)
    }

    async fn rpc(&self, method: &str, params: Option<Value>) -> Resp {
        post_mcp(
            &self.api,
            Some(&self.token),
            Some(LATEST),
            &[],
            &rpc_body(method, params),
        )
        .await
    }

    async fn tools(&self) -> Vec<Value> {
        let r = self.rpc("tools/list", None).await;
        rpc_result(&r)["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("no tools array: {}", r.text))
            .clone()
    }

    async fn tool_names(&self) -> BTreeSet<String> {
        self.tools()
            .await
            .iter()
            .map(|t| str_field(t, "name"))
            .collect()
    }

    async fn call_raw(&self, tool: &str, args: Value) -> Resp {
        self.rpc("tools/call", Some(json!({"name": tool, "arguments": args})))
            .await
    }

    /// Calls a tool and returns the answer with every commit it made. Each call must be one
    /// commit on the mcp plane, by this token, naming the tool and its arguments; only a
    /// watch trigger may be followed by reeve's own commits (the fire it schedules).
    async fn call(&self, tool: &str, args: Value) -> (Resp, Value) {
        let head = self.api.audit_head().await;
        let r = self.call_raw(tool, args.clone()).await;
        let entries = self.api.audit_entries(head).await;
        let (mcp, other): (Vec<&Value>, Vec<&Value>) =
            entries.iter().partition(|e| e["plane"] == "mcp");
        assert_eq!(
            mcp.len(),
            1,
            "{tool} must be one mcp commit; got {entries:#?}; answer {}",
            r.text
        );
        if tool == "trigger_watch" {
            for e in &other {
                assert_eq!(e["principal"], "system", "{e}");
            }
        } else {
            assert!(other.is_empty(), "{tool} made other commits: {other:#?}");
        }
        let entry = mcp[0].clone();
        assert_eq!(entry["principal"], json!(self.principal()), "{entry}");
        let (kind, cmd) = mcp_command(&entry);
        assert_eq!(cmd["tool"], json!(tool), "{entry}");
        let recorded: Value = serde_json::from_str(&str_field(&cmd, "arguments"))
            .unwrap_or_else(|e| panic!("arguments are not JSON text ({e}): {entry}"));
        assert_eq!(recorded, args, "the arguments as sent: {entry}");
        // A write that became a command is an mcp_write; reads, and calls that never
        // became a command, are mcp_call.
        if kind == "mcp_write" {
            assert!(!is_read(tool), "{entry}");
            assert!(cmd["command"].is_object(), "{entry}");
        } else {
            assert_eq!(kind, "mcp_call", "{entry}");
        }
        (r, entry)
    }

    /// A call that must succeed, as one accepted commit.
    async fn ok(&self, tool: &str, args: Value) -> Done {
        let (r, entry) = self.call(tool, args).await;
        let result = rpc_result(&r);
        assert_eq!(result["isError"], false, "{tool}: {}", r.text);
        let structured = result["structuredContent"].clone();
        assert!(
            structured.is_object(),
            "{tool}: structuredContent: {}",
            r.text
        );
        let text = text_of(result);
        let tools = self.tools().await;
        let spec = tools
            .iter()
            .find(|t| t["name"] == tool)
            .unwrap_or_else(|| panic!("{tool} is not listed for this token"));
        let schema = &spec["outputSchema"];
        if let Some(m) = misfit(schema, schema, &structured, tool) {
            panic!("{tool}: structuredContent does not fit outputSchema: {m}\n{structured}");
        }
        assert_eq!(entry["outcome"], "accepted", "{entry}");
        assert_eq!(entry["code"], Value::Null, "{entry}");
        let (kind, _) = mcp_command(&entry);
        let want = if is_read(tool) {
            "mcp_call"
        } else {
            "mcp_write"
        };
        assert_eq!(kind, want, "{entry}");
        Done {
            structured,
            text,
            entry,
        }
    }

    /// A call that must be refused as a tool error: `isError`, no structured content, a text
    /// naming the refusal's code, and one rejected commit with that code.
    async fn refused(&self, tool: &str, args: Value) -> Refused {
        let (r, entry) = self.call(tool, args).await;
        let result = rpc_result(&r);
        assert_eq!(result["isError"], true, "{tool}: {}", r.text);
        assert!(
            result.get("structuredContent").is_none(),
            "a refusal has no structured content: {}",
            r.text
        );
        let text = text_of(result);
        assert_eq!(entry["outcome"], "rejected", "{entry}");
        let code = str_field(&entry, "code");
        assert!(
            text.contains(&format!("[{code}]")),
            "the text names the code {code}: {text:?}"
        );
        Refused { text, code, entry }
    }

    /// A refusal with this code.
    async fn refused_with(&self, tool: &str, args: Value, code: &str) -> Refused {
        let r = self.refused(tool, args).await;
        assert_eq!(r.code, code, "{tool}: {}", r.text);
        r
    }

    /// A call that is malformed or names no tool: JSON-RPC -32602, recorded as a rejected
    /// mcp_call. Returns the error's message.
    async fn invalid(&self, tool: &str, args: Value, code: &str) -> String {
        let (r, entry) = self.call(tool, args).await;
        let err = invalid_params(&r, false);
        assert_eq!(entry["outcome"], "rejected", "{entry}");
        assert_eq!(entry["code"], json!(code), "{entry}");
        let (kind, cmd) = mcp_command(&entry);
        assert_eq!(kind, "mcp_call", "{entry}");
        assert_eq!(cmd["refusal"]["code"], json!(code), "{entry}");
        str_field(err, "message")
    }
}

/// Two projects `p` and `q`; an agent scoped to `p` that may change things.
async fn server_pq() -> (TestServer, Agent) {
    let s = TestServer::start_with(roomy).await;
    s.create_project(&s.admin, "p").await;
    s.create_project(&s.admin, "q").await;
    let agent = Agent::new(&s, json!({"p": null}), true).await;
    (s, agent)
}

fn watch_args(project: &str, to_uri: &str) -> Value {
    json!({
        "project": project,
        "source": "https://source.example.com/docs",
        "to_uri": to_uri,
        "watch_interval": 60,
    })
}

/// Creates a watch over REST as the admin, every 60 minutes.
async fn rest_watch(s: &TestServer, project: &str, to_uri: &str, active: bool) -> Value {
    let mut body = watch_args(project, to_uri);
    body["is_active"] = json!(active);
    s.create_watch(&s.admin, body).await.expect(201).clone()
}

/// Every watch the admin sees, by id, to compare before and after a refusal.
async fn all_watches_now(s: &TestServer) -> Vec<Value> {
    s.all_watches(&s.admin).await
}

/// The builds of a project as the admin sees them.
async fn builds_now(s: &TestServer, project: &str) -> Value {
    let r = s.get(&s.admin, &builds_path(project)).await;
    r.expect(200).clone()
}

fn rfc3339(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Claims the next job and ends it in `end`, after writing `log` as its output.
async fn run_next(s: &TestServer, runner: &str, log: &str, end: &str) -> Value {
    let c = s.claim(runner).await.expect("a claimable job");
    let id = str_field(&c["job"], "id");
    let lease = str_field(&c, "lease_id");
    if !log.is_empty() {
        let r = fetch(
            s.call(
                reqwest::Method::POST,
                runner,
                &format!("/runner/jobs/{id}/log{}", qs(&[("lease_id", &lease)])),
            )
            .body(log.to_string()),
        )
        .await;
        r.expect(200);
    }
    s.finish(runner, &id, &lease, end).await.expect(200);
    c["job"].clone()
}

#[test]
fn the_schema_check_catches_what_does_not_fit() {
    let schema = json!({
        "type": "object",
        "required": ["n", "tags"],
        "properties": {
            "n": {"type": "integer"},
            "id": {"type": ["string", "null"]},
            "tags": {"type": "array", "items": {"$ref": "#/$defs/Tag"}},
        },
        "$defs": {"Tag": {"type": "string", "enum": ["a", "b"]}},
    });
    assert_eq!(
        misfit(
            &schema,
            &schema,
            &json!({"n": 1, "tags": ["a"], "id": null}),
            "v"
        ),
        None
    );
    for bad in [
        json!({"tags": []}),
        json!({"n": "1", "tags": []}),
        json!({"n": 1.5, "tags": []}),
        json!({"n": 1, "tags": ["c"]}),
        json!({"n": 1, "tags": [], "id": 3}),
    ] {
        assert!(misfit(&schema, &schema, &bad, "v").is_some(), "{bad}");
    }
}

// ---------------------------------------------------------------------------
// Transport: initialize, methods, protocol revision, Host/Origin, authentication
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initialize_negotiates_both_revisions_and_answers_an_unknown_one_with_ours() {
    let s = TestServer::start_with(roomy).await;
    let a = Agent::new(&s, json!({}), true).await;
    let head = s.audit_head().await;

    for version in [LATEST, PREVIOUS] {
        let r = post_mcp(
            &s,
            Some(&a.token),
            None,
            &[],
            &rpc_body("initialize", Some(init_params(version))),
        )
        .await;
        let result = rpc_result(&r);
        assert_eq!(result["protocolVersion"], version, "{}", r.text);
        assert_eq!(result["serverInfo"]["name"], "reeve", "{}", r.text);
        assert!(result["capabilities"]["tools"].is_object(), "{}", r.text);
        assert!(result["instructions"].is_string(), "{}", r.text);
        assert_eq!(r.header("mcp-session-id"), None, "stateless: no session");

        // The revision just agreed on is accepted on the requests that follow.
        let r = post_mcp(
            &s,
            Some(&a.token),
            Some(version),
            &[],
            &rpc_body("tools/list", None),
        )
        .await;
        assert_eq!(rpc_result(&r)["tools"].as_array().map(Vec::len), Some(18));
    }

    // A client newer (or older) than reeve is offered a revision reeve speaks.
    for asked in ["2099-01-01", "2024-11-05"] {
        let r = post_mcp(
            &s,
            Some(&a.token),
            None,
            &[],
            &rpc_body("initialize", Some(init_params(asked))),
        )
        .await;
        let offered = str_field(rpc_result(&r), "protocolVersion");
        assert!(
            [LATEST, PREVIOUS].contains(&offered.as_str()),
            "asked {asked}, offered {offered}"
        );
    }

    // The client's notification that it is ready is accepted with nothing to answer.
    let r = post_mcp(
        &s,
        Some(&a.token),
        Some(LATEST),
        &[],
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.text, "");

    // Neither the handshake nor listing tools is a change worth a commit.
    assert_eq!(s.audit_head().await, head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_delete_are_405() {
    let s = TestServer::start_with(roomy).await;
    let a = Agent::new(&s, json!({}), true).await;
    let head = s.audit_head().await;
    let url = format!("{}/mcp", s.base);
    for rb in [
        s.client
            .get(&url)
            .header("accept", "text/event-stream")
            .header("mcp-protocol-version", LATEST),
        s.client.delete(&url).header("mcp-protocol-version", LATEST),
    ] {
        let r = fetch(rb.bearer_auth(&a.token)).await;
        assert_eq!(r.status, 405, "{:?} {}", r.headers, r.text);
        assert_eq!(r.header("allow"), Some("POST"));
    }
    // Without a token too: the method is wrong whoever asks.
    for rb in [s.client.get(&url), s.client.delete(&url)] {
        let r = fetch(rb).await;
        assert_eq!(r.status, 405, "{:?} {}", r.headers, r.text);
        assert_eq!(r.header("allow"), Some("POST"));
    }
    assert_eq!(s.audit_head().await, head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_protocol_version_header_is_400_and_runs_nothing() {
    let s = TestServer::start_with(roomy).await;
    s.create_project(&s.admin, "p").await;
    let a = Agent::new(&s, json!({}), true).await;
    let head = s.audit_head().await;
    let before = all_watches_now(&s).await;

    for bad in ["2024-11-05", "garbage", "2099-01-01", ""] {
        for body in [
            rpc_body("tools/list", None),
            rpc_body(
                "tools/call",
                Some(json!({
                    "name": "create_watch",
                    "arguments": watch_args("p", "viking://res/docs"),
                })),
            ),
        ] {
            let r = post_mcp(&s, Some(&a.token), Some(bad), &[], &body).await;
            let p = assert_problem(&r, 400, "unsupported_protocol_version");
            let detail = str_field(p, "detail");
            assert!(
                detail.contains(LATEST) && detail.contains(PREVIOUS),
                "the refusal names the revisions reeve speaks: {detail}"
            );
        }
    }
    assert_eq!(all_watches_now(&s).await, before);
    assert_eq!(s.audit_head().await, head);
}

/// A POST to `/mcp` whose body is sent as is, for bodies that are not JSON-RPC.
async fn post_raw(api: &Api, token: &str, body: &str) -> Resp {
    let rb = api
        .client
        .post(format!("{}/mcp", api.base))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", LATEST)
        .bearer_auth(token)
        .body(body.to_string());
    fetch(rb).await
}

/// A JSON-RPC error answered with HTTP 400 as `application/json`: its code, and the id echoed.
#[track_caller]
fn assert_rpc_400(r: &Resp, code: i64, id: &Value) {
    assert_eq!(r.status, 400, "headers {:?}; body {}", r.headers, r.text);
    let ct = r.header("content-type").unwrap_or("");
    assert!(ct.starts_with("application/json"), "content-type {ct:?}");
    assert_eq!(r.body["jsonrpc"], "2.0", "{}", r.text);
    assert_eq!(&r.body["id"], id, "the id is echoed: {}", r.text);
    assert_eq!(r.body["error"]["code"], json!(code), "{}", r.text);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        r.text
    );
    assert!(r.body.get("result").is_none(), "{}", r.text);
}

/// The `_meta` a 2026-07-28 client sends with every request, naming `version`.
fn modern_meta(version: &str) -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": version,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "reeve-tests", "version": "1"},
    })
}

/// A 2026-07-28 request: the revision in the header and in `_meta`, and the method (and the
/// tool's name) in the headers that revision requires.
async fn post_modern(api: &Api, token: &str, version: &str, method: &str, params: Value) -> Resp {
    let mut params = params;
    params["_meta"] = modern_meta(version);
    let mut extra = vec![("mcp-method", method.to_string())];
    if let Some(name) = params["name"].as_str() {
        extra.push(("mcp-name", name.to_string()));
    }
    let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
    post_mcp(
        api,
        Some(token),
        Some(version),
        &extra,
        &rpc_body(method, Some(params)),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_one_json_rpc_message_is_a_json_rpc_error_with_400() {
    let s = TestServer::start_with(roomy).await;
    let a = Agent::new(&s, json!({}), true).await;
    let head = s.audit_head().await;
    let cases: [(&str, i64, Value); 12] = [
        // Not JSON at all.
        ("{\"jsonrpc\": \"2.0\", \"id\": 1,", -32700, Value::Null),
        ("", -32700, Value::Null),
        ("tools/list", -32700, Value::Null),
        // JSON, but not one JSON-RPC message.
        (
            r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#,
            -32600,
            Value::Null,
        ),
        ("[]", -32600, Value::Null),
        ("\"tools/list\"", -32600, Value::Null),
        ("null", -32600, Value::Null),
        (
            r#"{"jsonrpc":"1.0","id":5,"method":"tools/list"}"#,
            -32600,
            json!(5),
        ),
        (
            r#"{"jsonrpc":"2.0","id":"six","method":6}"#,
            -32600,
            json!("six"),
        ),
        (r#"{"jsonrpc":"2.0","id":7}"#, -32600, json!(7)),
        // A call that does not fit its method: no tool named, or params that are no object.
        (
            r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"arguments":{}}}"#,
            -32602,
            json!(8),
        ),
        (
            r#"{"jsonrpc":"2.0","id":"nine","method":"tools/call","params":["list_projects"]}"#,
            -32602,
            json!("nine"),
        ),
    ];
    for (body, code, id) in &cases {
        let r = post_raw(&s, &a.token, body).await;
        assert_rpc_400(&r, *code, id);
    }
    let r = post_raw(
        &s,
        &a.token,
        r#"{"jsonrpc":"2.0","id":10,"method":"tools/call"}"#,
    )
    .await;
    assert_rpc_400(&r, INVALID_PARAMS, &json!(10));
    let msg = r.body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("tools/call"),
        "the message names the method: {msg}"
    );
    // None of them reached a tool, so none is a commit.
    assert_eq!(s.audit_head().await, head);
    // The same server still answers a well-formed call.
    let r = post_raw(
        &s,
        &a.token,
        r#"{"jsonrpc":"2.0","id":11,"method":"tools/list"}"#,
    )
    .await;
    assert_eq!(rpc_result(&r)["tools"].as_array().map(Vec::len), Some(18));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_revision_is_a_json_rpc_error_listing_the_supported_ones() {
    let s = TestServer::start_with(roomy).await;
    let a = Agent::new(&s, json!({}), true).await;
    let head = s.audit_head().await;
    let supported = json!([MODERN, LATEST, PREVIOUS]);

    // A client of the 2026-07-28 era (discover, or a revision in _meta) reads JSON-RPC only.
    for method in ["server/discover", "tools/list"] {
        let r = post_modern(&s, &a.token, "2099-01-01", method, json!({})).await;
        let id = r.body["id"].clone();
        assert!(id.is_number(), "the id is echoed: {}", r.text);
        assert_rpc_400(&r, -32022, &id);
        assert_eq!(
            r.body["error"]["data"]["supported"], supported,
            "{}",
            r.text
        );
        assert_eq!(
            r.body["error"]["data"]["requested"], "2099-01-01",
            "{}",
            r.text
        );
    }

    // An older client's header-only request gets the same error inside the problem document.
    let body = rpc_body("tools/list", None);
    let r = post_mcp(&s, Some(&a.token), Some("2024-11-05"), &[], &body).await;
    assert_problem(&r, 400, "unsupported_protocol_version");
    assert_eq!(r.body["jsonrpc"], "2.0", "{}", r.text);
    assert_eq!(r.body["id"], body["id"], "{}", r.text);
    assert_eq!(r.body["error"]["code"], json!(-32022), "{}", r.text);
    assert_eq!(
        r.body["error"]["data"]["supported"], supported,
        "{}",
        r.text
    );
    assert_eq!(s.audit_head().await, head);
}

/// A 2026-07-28 request whose `MCP-Protocol-Version` header and `_meta` name different
/// revisions is a header mismatch (-32020, 400) even when one of them is a revision reeve does
/// not speak; `initialize`, which that revision removed, is a method it does not know (-32601,
/// 404). Neither runs anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2026_07_28_request_is_held_to_its_headers_and_has_no_initialize() {
    let s = TestServer::start_with(roomy).await;
    let a = Agent::new(&s, json!({}), true).await;
    let head = s.audit_head().await;
    for (header, meta) in [
        (MODERN, "v999.0.0"),
        (LATEST, MODERN),
        ("2099-01-01", MODERN),
    ] {
        let body = json!({"jsonrpc": "2.0", "id": 41, "method": "server/discover",
                          "params": {"_meta": modern_meta(meta)}});
        let extra = [("mcp-method", "server/discover")];
        let r = post_mcp(&s, Some(&a.token), Some(header), &extra, &body).await;
        assert_rpc_400(&r, -32020, &json!(41));
    }
    let body = json!({"jsonrpc": "2.0", "id": 42, "method": "initialize",
                      "params": {"_meta": modern_meta(MODERN)}});
    let extra = [("mcp-method", "initialize")];
    let r = post_mcp(&s, Some(&a.token), Some(MODERN), &extra, &body).await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(r.body["id"], json!(42), "{}", r.text);
    assert_eq!(r.body["error"]["code"], json!(-32601), "{}", r.text);
    // The same initialize from a client of an older revision still negotiates.
    let r = a.rpc("initialize", Some(init_params(LATEST))).await;
    assert_eq!(rpc_result(&r)["protocolVersion"], LATEST);
    assert_eq!(s.audit_head().await, head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_discover_and_2026_07_28_requests_need_no_initialize() {
    let s = TestServer::start_with(roomy).await;
    s.create_project(&s.admin, "p").await;
    let a = Agent::new(&s, json!({"p": null}), true).await;
    let head = s.audit_head().await;

    let r = post_modern(&s, &a.token, MODERN, "server/discover", json!({})).await;
    let result = rpc_result(&r);
    assert_eq!(
        result["supportedVersions"],
        json!([PREVIOUS, LATEST, MODERN]),
        "{}",
        r.text
    );
    assert!(result["capabilities"]["tools"].is_object(), "{}", r.text);
    assert_eq!(
        result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"], "reeve",
        "{}",
        r.text
    );
    assert!(result["instructions"].is_string(), "{}", r.text);
    // What a token may see is its own: nothing in the answer may be shared or kept.
    assert_eq!(result["cacheScope"], "private", "{}", r.text);
    assert_eq!(result["ttlMs"], 0, "{}", r.text);
    assert_eq!(r.header("mcp-session-id"), None, "stateless: no session");

    let r = post_modern(&s, &a.token, MODERN, "tools/list", json!({})).await;
    let result = rpc_result(&r);
    assert_eq!(
        result["tools"].as_array().map(Vec::len),
        Some(18),
        "{}",
        r.text
    );
    assert_eq!(result["cacheScope"], "private", "{}", r.text);
    assert_eq!(
        s.audit_head().await,
        head,
        "discovery and listing are not commits"
    );

    let r = post_modern(
        &s,
        &a.token,
        MODERN,
        "tools/call",
        json!({"name": "list_projects", "arguments": {}}),
    )
    .await;
    let result = rpc_result(&r);
    assert_eq!(result["isError"], false, "{}", r.text);
    assert_eq!(
        result["structuredContent"]["projects"][0]["name"], "p",
        "{}",
        r.text
    );
    let entries = s.audit_entries(head).await;
    assert_eq!(entries.len(), 1, "one call, one commit: {entries:?}");
    assert_eq!(entries[0]["plane"], "mcp");

    // The 2026-07-28 request without the metadata that revision requires is refused as such.
    let mut body = rpc_body("tools/list", Some(json!({})));
    body["params"]["_meta"] = json!({"io.modelcontextprotocol/protocolVersion": MODERN});
    let r = post_mcp(
        &s,
        Some(&a.token),
        Some(MODERN),
        &[("mcp-method", "tools/list")],
        &body,
    )
    .await;
    assert_rpc_400(&r, INVALID_PARAMS, &body["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_host_or_origin_is_403_before_authentication() {
    let s = TestServer::start_with(roomy).await;
    s.create_project(&s.admin, "p").await;
    let a = Agent::new(&s, json!({}), true).await;
    let head = s.audit_head().await;
    let list = rpc_body("tools/list", None);
    let create = rpc_body(
        "tools/call",
        Some(json!({"name": "create_watch", "arguments": watch_args("p", "viking://res/docs")})),
    );

    for host in [
        "evil.example",
        "evil.example:8080",
        "localhost.evil.example",
        "127.0.0.1.evil.example",
    ] {
        for token in [Some(a.token.as_str()), None, Some("not-a-token")] {
            let r = post_mcp(&s, token, Some(LATEST), &[("host", host)], &list).await;
            assert_gate(&r, 403, "host_not_allowed");
        }
        let r = post_mcp(&s, Some(&a.token), Some(LATEST), &[("host", host)], &create).await;
        assert_gate(&r, 403, "host_not_allowed");
    }
    for origin in [
        "https://evil.example",
        "http://localhost.evil.example",
        "null",
    ] {
        for token in [Some(a.token.as_str()), None] {
            let r = post_mcp(&s, token, Some(LATEST), &[("origin", origin)], &list).await;
            assert_gate(&r, 403, "origin_not_allowed");
        }
        let r = post_mcp(
            &s,
            Some(&a.token),
            Some(LATEST),
            &[("origin", origin)],
            &create,
        )
        .await;
        assert_gate(&r, 403, "origin_not_allowed");
    }
    assert_eq!(all_watches_now(&s).await, Vec::<Value>::new());
    assert_eq!(s.audit_head().await, head);

    // Loopback names and browser origins on loopback are what a local agent sends.
    let port = s.addr.port().to_string();
    for (k, v) in [
        ("host", format!("localhost:{port}")),
        ("host", format!("127.0.0.1:{port}")),
        ("host", format!("[::1]:{port}")),
        ("origin", "http://localhost:3000".to_string()),
        ("origin", "http://127.0.0.1:5173".to_string()),
        ("origin", "http://[::1]:8080".to_string()),
    ] {
        let r = post_mcp(&s, Some(&a.token), Some(LATEST), &[(k, &v)], &list).await;
        rpc_result(&r);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_hosts_and_origins_are_let_in_and_only_those() {
    let s = TestServer::start_with(|cfg| {
        roomy(cfg);
        cfg.mcp.allowed_hosts = vec!["agent.example.com".into(), "edge.example.com:8443".into()];
        cfg.mcp.allowed_origins = vec!["https://agent.example.com".into()];
    })
    .await;
    let a = Agent::new(&s, json!({}), true).await;
    let list = rpc_body("tools/list", None);

    for (k, v) in [
        ("host", "agent.example.com"),
        ("host", "agent.example.com:9000"),
        ("host", "AGENT.example.com"),
        ("host", "edge.example.com:8443"),
        ("origin", "https://agent.example.com"),
    ] {
        let r = post_mcp(&s, Some(&a.token), Some(LATEST), &[(k, v)], &list).await;
        rpc_result(&r);
    }
    for host in ["edge.example.com:9443", "edge.example.com", "evil.example"] {
        let r = post_mcp(&s, Some(&a.token), Some(LATEST), &[("host", host)], &list).await;
        assert_gate(&r, 403, "host_not_allowed");
    }
    for origin in [
        "http://agent.example.com",
        "https://agent.example.com:8443",
        "https://evil.example",
    ] {
        let r = post_mcp(
            &s,
            Some(&a.token),
            Some(LATEST),
            &[("origin", origin)],
            &list,
        )
        .await;
        assert_gate(&r, 403, "origin_not_allowed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_malformed_unknown_revoked_and_expired_tokens_are_401_with_a_challenge() {
    let s = TestServer::start_with(roomy).await;
    s.create_project(&s.admin, "p").await;
    let revoked = Agent::new(&s, json!({}), true).await;
    s.delete(&s.admin, &format!("/tokens/{}", revoked.id))
        .await
        .expect(200);
    let r = s
        .post(
            &s.admin,
            "/tokens",
            json!({
                "kind": "mcp",
                "description": "short-lived agent",
                "enabled_projects": {},
                "allow_trigger": true,
                "expires_at": rfc3339(jiff::Timestamp::now() + secs(2)),
            }),
        )
        .await;
    let expiring = str_field(r.expect(201), "secret");
    let list = rpc_body("tools/list", None);
    let create = rpc_body(
        "tools/call",
        Some(json!({"name": "create_watch", "arguments": watch_args("p", "viking://res/docs")})),
    );
    // Wait for the expiry first, so that what follows is measured against a settled log.
    eventually(Duration::from_secs(20), || async {
        let r = post_mcp(&s, Some(&expiring), Some(LATEST), &[], &list).await;
        (r.status == 401).then_some(())
    })
    .await
    .expect("the token still works long after expires_at");
    let head = s.audit_head().await;

    let send = |auth: Option<String>, body: Value| {
        let s = &s;
        async move {
            let mut rb = s
                .client
                .post(format!("{}/mcp", s.base))
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("mcp-protocol-version", LATEST);
            if let Some(a) = auth {
                rb = rb.header("authorization", a);
            }
            fetch(rb.body(body.to_string())).await
        }
    };
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("empty", Some(String::new())),
        ("bare scheme", Some("Bearer".into())),
        ("other scheme", Some(format!("Basic {}", revoked.token))),
        ("unknown", Some("Bearer reeve_not_a_real_token".into())),
        ("revoked", Some(format!("Bearer {}", revoked.token))),
        ("expired", Some(format!("Bearer {expiring}"))),
    ];
    for (what, auth) in cases {
        for body in [&list, &create] {
            let r = send(auth.clone(), body.clone()).await;
            assert_eq!(r.status, 401, "{what}: {}", r.text);
            assert_gate(&r, 401, "unauthorized");
        }
    }
    assert_eq!(all_watches_now(&s).await, Vec::<Value>::new());
    assert_eq!(s.audit_head().await, head, "refused at the door: no commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_and_runner_tokens_are_403_mcp_token_required() {
    let s = TestServer::start_with(roomy).await;
    s.create_project(&s.admin, "p").await;
    let (_, api) = s.create_token("api", json!({}), true).await;
    let runner = s.runner_token().await;
    let head = s.audit_head().await;
    let create = rpc_body(
        "tools/call",
        Some(json!({"name": "create_watch", "arguments": watch_args("p", "viking://res/docs")})),
    );
    for token in [&s.admin, &api, &runner] {
        for body in [
            rpc_body("initialize", Some(init_params(LATEST))),
            rpc_body("tools/list", None),
            create.clone(),
        ] {
            let r = post_mcp(&s, Some(token), Some(LATEST), &[], &body).await;
            assert_gate(&r, 403, "mcp_token_required");
        }
    }
    assert_eq!(all_watches_now(&s).await, Vec::<Value>::new());
    assert_eq!(s.audit_head().await, head);
}

// ---------------------------------------------------------------------------
// tools/list
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_have_schemas_and_annotations_that_tell_the_truth() {
    let s = TestServer::start_with(roomy).await;
    let a = Agent::new(&s, json!({}), true).await;
    let tools = a.tools().await;
    let listed: BTreeSet<String> = tools.iter().map(|t| str_field(t, "name")).collect();
    let mut all = names(&READ_TOOLS);
    all.extend(names(&WRITE_TOOLS));
    assert_eq!(listed, all);
    assert_eq!(tools.len(), 18, "no tool listed twice");

    // (tool, destructiveHint, idempotentHint) for the tools that change things.
    let writes = [
        ("create_watch", false, false),
        ("cancel_watch", true, true),
        ("pause_watch", false, true),
        ("resume_watch", false, true),
        ("trigger_watch", false, false),
        ("trigger_build", false, false),
        ("restart_build", false, false),
        ("abort_build", true, true),
        ("restart_job", false, false),
        ("rerun_job", false, false),
        ("abort_job", true, true),
    ];
    for t in &tools {
        let name = str_field(t, "name");
        assert!(
            t["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{t}"
        );
        assert_eq!(t["inputSchema"]["type"], "object", "{name} inputSchema");
        assert_eq!(t["outputSchema"]["type"], "object", "{name} outputSchema");
        let ann = &t["annotations"];
        assert_eq!(ann["readOnlyHint"], json!(is_read(&name)), "{name}: {ann}");
        assert_eq!(ann["openWorldHint"], false, "{name}: {ann}");
        if let Some((_, destructive, idempotent)) = writes.iter().find(|w| w.0 == name) {
            assert_eq!(ann["destructiveHint"], json!(destructive), "{name}: {ann}");
            assert_eq!(ann["idempotentHint"], json!(idempotent), "{name}: {ann}");
            assert!(
                t["inputSchema"]["properties"]["idempotency_key"].is_object(),
                "{name} takes an idempotency_key"
            );
        }
    }

    let tool = |n: &str| tools.iter().find(|t| t["name"] == n).cloned().unwrap();
    let required = |n: &str| -> BTreeSet<String> {
        tool(n)["inputSchema"]["required"]
            .as_array()
            .map(|r| r.iter().map(|v| v.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    assert_eq!(
        required("create_watch"),
        names(&["project", "source", "to_uri", "watch_interval"])
    );
    assert_eq!(required("cancel_watch"), names(&["to_uri"]));
    assert_eq!(required("get_job_log"), names(&["project", "job"]));
    assert_eq!(required("list_projects"), BTreeSet::new());
}

/// The `format` values JSON Schema 2020-12 defines; anything else (schemars' `uint32`,
/// `int64`, `double`, …) makes strict clients warn or refuse the schema.
const STANDARD_FORMATS: [&str; 19] = [
    "date-time",
    "date",
    "time",
    "duration",
    "email",
    "idn-email",
    "hostname",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "iri",
    "iri-reference",
    "uuid",
    "uri-template",
    "json-pointer",
    "relative-json-pointer",
    "regex",
];

/// Every `format` keyword in a schema, with where it is. A property that happens to be named
/// `format` is a schema (an object), not the keyword, and is walked into instead.
fn formats(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(obj) => {
            for (k, sub) in obj {
                if k == "format"
                    && let Some(f) = sub.as_str()
                {
                    out.push((at.to_string(), f.to_string()));
                } else {
                    formats(sub, &format!("{at}/{k}"), out);
                }
            }
        }
        Value::Array(items) => {
            for (i, sub) in items.iter().enumerate() {
                formats(sub, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_tool_schema_uses_a_format_json_schema_does_not_define() {
    let s = TestServer::start_with(roomy).await;
    let a = Agent::new(&s, json!({}), true).await;
    let tools = a.tools().await;
    assert_eq!(tools.len(), 18);
    let mut seen = Vec::new();
    for t in &tools {
        let name = str_field(t, "name");
        for key in ["inputSchema", "outputSchema"] {
            formats(&t[key], &format!("{name}/{key}"), &mut seen);
        }
    }
    let odd: Vec<_> = seen
        .iter()
        .filter(|(_, f)| !STANDARD_FORMATS.contains(&f.as_str()))
        .collect();
    assert!(odd.is_empty(), "non-standard formats: {odd:?}");
    // Standard ones are kept: ids are UUIDs.
    assert!(
        seen.iter().any(|(_, f)| f == "uuid"),
        "uuid formats survive: {seen:?}"
    );
    // An unsigned number keeps its meaning as a bound.
    let log = tools
        .iter()
        .find(|t| t["name"] == "get_job_log")
        .cloned()
        .unwrap_or_default();
    let tail = &log["inputSchema"]["properties"]["tail_lines"];
    assert_eq!(tail["minimum"], json!(0), "{tail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_allow_trigger_is_shown_only_the_read_tools() {
    let s = TestServer::start_with(roomy).await;
    let reader = Agent::new(&s, json!({}), false).await;
    assert_eq!(reader.tool_names().await, names(&READ_TOOLS));
    let writer = Agent::new(&s, json!({}), true).await;
    assert_eq!(writer.tool_names().await.len(), 18);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_server_shows_only_the_read_tools_even_to_writers() {
    let s = TestServer::start_with(|cfg| {
        roomy(cfg);
        cfg.mcp.read_only = true;
    })
    .await;
    let writer = Agent::new(&s, json!({}), true).await;
    assert_eq!(writer.tool_names().await, names(&READ_TOOLS));
}

// ---------------------------------------------------------------------------
// Read tools
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_projects_shows_only_the_tokens_projects() {
    let (s, scoped) = server_pq().await;
    let d = scoped.ok("list_projects", json!({})).await;
    let ids: Vec<String> = d.structured["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| str_field(p, "id"))
        .collect();
    assert_eq!(ids, vec!["p"]);
    assert_eq!(d.text, "- p  p");
    assert_eq!(
        d.structured["projects"][0],
        s.get(&s.admin, "/projects/p").await.body
    );

    let everywhere = Agent::new(&s, json!({}), false).await;
    let d = everywhere.ok("list_projects", json!({})).await;
    assert_eq!(d.structured["projects"].as_array().unwrap().len(), 2);
    assert_eq!(d.text, "- p  p\n- q  q");

    let msg = scoped
        .invalid(
            "list_projects",
            json!({"project": "p"}),
            "invalid_arguments",
        )
        .await;
    assert!(msg.contains("inputSchema"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_whose_grant_expired_is_out_of_sight() {
    let (s, _) = server_pq().await;
    let docs = rest_watch(&s, "p", "viking://res/docs", true).await;
    rest_watch(&s, "q", "viking://res/other", true).await;
    let r = s
        .post(
            &s.admin,
            "/tokens",
            json!({
                "kind": "mcp",
                "description": "p for a moment, q for good",
                "enabled_projects": {"p": rfc3339(jiff::Timestamp::now() + secs(2)), "q": null},
                "allow_trigger": true,
            }),
        )
        .await;
    let b = r.expect(201);
    let a = Agent {
        api: s.api.clone(),
        token: str_field(b, "secret"),
        id: str_field(b, "id"),
    };
    let d = a.ok("list_watches", json!({})).await;
    assert_eq!(d.structured["total"], 2);
    eventually(Duration::from_secs(20), || async {
        let r = a.call_raw("list_projects", json!({})).await;
        let ids = rpc_result(&r)["structuredContent"]["projects"].clone();
        (ids.as_array().map(Vec::len) == Some(1)).then_some(())
    })
    .await
    .expect("project p still listed long after its grant expired");

    let d = a.ok("list_projects", json!({})).await;
    assert_eq!(d.structured["projects"][0]["id"], "q");
    let d = a.ok("list_watches", json!({})).await;
    assert_eq!(d.structured["total"], 1);
    assert_eq!(d.structured["watches"][0]["project"], "q");
    a.refused_with(
        "get_watch",
        json!({"id": str_field(&docs, "id")}),
        "watch_not_found",
    )
    .await;
    a.refused_with(
        "create_watch",
        watch_args("p", "viking://res/new"),
        "project_not_found",
    )
    .await;
    a.ok("create_watch", watch_args("q", "viking://res/new"))
        .await;
    assert_eq!(s.watch_now(&str_field(&docs, "id")).await, docs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_watches_filters_by_scope_project_and_activity_one_line_per_watch() {
    let (s, scoped) = server_pq().await;
    let docs = rest_watch(&s, "p", "viking://res/docs", true).await;
    let paused = rest_watch(&s, "p", "viking://res/paused", false).await;
    rest_watch(&s, "q", "viking://res/elsewhere", true).await;
    let everywhere = Agent::new(&s, json!({}), false).await;

    let line = |w: &Value| {
        format!(
            "- {}  every 60m  {}  next {}",
            str_field(w, "to_uri"),
            if w["is_active"] == true {
                "active"
            } else {
                "paused"
            },
            w["next_run_at"].as_str().unwrap_or("-"),
        )
    };
    let d = scoped.ok("list_watches", json!({})).await;
    assert_eq!(d.structured["total"], 2);
    assert_eq!(d.structured["watches"], json!([docs, paused]));
    assert_eq!(
        d.text,
        format!("2 watches\n{}\n{}", line(&docs), line(&paused))
    );
    assert!(
        line(&docs).starts_with("- viking://res/docs  every 60m  active  next 20"),
        "{}",
        line(&docs)
    );
    assert!(line(&paused).ends_with("paused  next -"));

    let d = scoped
        .ok("list_watches", json!({"project": "p", "active_only": true}))
        .await;
    assert_eq!(d.structured["watches"], json!([docs]));
    assert_eq!(d.text, format!("1 watch\n{}", line(&docs)));

    // A project outside the token is not found, as with list_builds.
    scoped
        .refused_with("list_watches", json!({"project": "q"}), "project_not_found")
        .await;

    let d = everywhere.ok("list_watches", json!({})).await;
    assert_eq!(d.structured["total"], 3);
    let d = everywhere.ok("list_watches", json!({"limit": 1})).await;
    assert_eq!(d.structured["total"], 3);
    assert_eq!(d.structured["watches"], json!([docs]));

    everywhere
        .refused_with("list_watches", json!({"limit": 0}), "invalid_limit")
        .await;
    everywhere
        .invalid(
            "list_watches",
            json!({"active_only": "yes"}),
            "invalid_arguments",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_watch_by_id_or_to_uri_and_what_is_not_there_or_not_yours() {
    let (s, scoped) = server_pq().await;
    let docs = rest_watch(&s, "p", "viking://res/docs", true).await;
    let theirs = rest_watch(&s, "q", "viking://res/theirs", true).await;
    let id = str_field(&docs, "id");

    let d = scoped.ok("get_watch", json!({"id": id})).await;
    assert_eq!(d.structured, docs);
    assert!(
        d.text.contains(&format!("viking://res/docs ({id}) in p: ")),
        "{}",
        d.text
    );
    assert_eq!(d.entry["target"], json!(format!("watch:{id}")));
    let d = scoped
        .ok("get_watch", json!({"to_uri": "viking://res/docs"}))
        .await;
    assert_eq!(d.structured, docs);
    let d = scoped
        .ok(
            "get_watch",
            json!({"to_uri": "viking://res/docs", "project": "p"}),
        )
        .await;
    assert_eq!(d.structured, docs);

    let missing = uuid::Uuid::now_v7().to_string();
    for args in [
        json!({"id": missing}),
        json!({"to_uri": "viking://res/nowhere"}),
        json!({"id": str_field(&theirs, "id")}),
        json!({"to_uri": "viking://res/theirs"}),
        json!({"to_uri": "viking://res/theirs", "project": "q"}),
    ] {
        let r = scoped
            .refused_with("get_watch", args, "watch_not_found")
            .await;
        assert!(r.text.contains("list_watches"), "next step: {}", r.text);
    }
    scoped
        .refused_with("get_watch", json!({}), "watch_key_required")
        .await;
    scoped
        .refused_with("get_watch", json!({"id": "xyz"}), "invalid_watch_id")
        .await;
}

/// The text an agent reads for one watch names it once, like the other watch tools' texts
/// ("Created watch ...", "Paused watch ...").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_watch_text_reads_as_a_sentence() {
    let (s, scoped) = server_pq().await;
    let docs = rest_watch(&s, "p", "viking://res/docs", true).await;
    let id = str_field(&docs, "id");
    let d = scoped.ok("get_watch", json!({"id": id})).await;
    assert!(
        !d.text.to_lowercase().contains("watch watch"),
        "the text stutters: {:?}",
        d.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_and_job_reads_match_rest_and_stay_in_scope() {
    let (s, scoped) = server_pq().await;
    let runner = s.runner_token().await;
    let b = s
        .trigger_build(&s.admin, "p", pipeline(&[("a", &[]), ("b", &["a"])]))
        .await;
    let bid = str_field(&b, "id");
    let log: String = (1..=5).map(|i| format!("line {i}\n")).collect();
    let a = run_next(&s, &runner, &log, "failure").await;
    let aid = str_field(&a, "id");
    let theirs = s
        .trigger_build(&s.admin, "q", pipeline(&[("x", &[])]))
        .await;
    let their_job = job_id(&theirs, "x");

    let d = scoped.ok("list_builds", json!({"project": "p"})).await;
    let listed = d.structured["builds"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], json!(bid));
    assert!(listed[0].get("jobs").is_none(), "listings leave jobs out");
    assert_eq!(listed[0]["state"], "failure");
    assert!(
        d.text
            .starts_with(&format!("1 build of p\n- #1.1  failure  {bid}  20")),
        "{}",
        d.text
    );
    scoped
        .refused_with(
            "list_builds",
            json!({"project": "p", "limit": 0}),
            "invalid_limit",
        )
        .await;
    scoped
        .refused_with("list_builds", json!({"project": "q"}), "project_not_found")
        .await;

    let d = scoped
        .ok("get_build", json!({"project": "p", "build": bid}))
        .await;
    assert_eq!(d.structured, s.build_now("p", &bid).await);
    assert!(
        d.text.contains(&format!("- a  failure  {aid}")),
        "{}",
        d.text
    );
    assert_eq!(d.entry["target"], json!(format!("build:{bid}")));
    assert_eq!(d.entry["project"], "p");
    scoped
        .refused_with(
            "get_build",
            json!({"project": "q", "build": str_field(&theirs, "id")}),
            "project_not_found",
        )
        .await;
    scoped
        .refused_with(
            "get_build",
            json!({"project": "p", "build": str_field(&theirs, "id")}),
            "build_not_found",
        )
        .await;

    let d = scoped
        .ok("get_job", json!({"project": "p", "job": aid}))
        .await;
    assert_eq!(d.structured, s.job_now("p", &aid).await);
    assert_eq!(d.structured["state"], "failure");
    scoped
        .refused_with(
            "get_job",
            json!({"project": "p", "job": "12"}),
            "invalid_job_id",
        )
        .await;
    scoped
        .refused_with(
            "get_job",
            json!({"project": "q", "job": their_job}),
            "project_not_found",
        )
        .await;
    scoped
        .refused_with(
            "get_job",
            json!({"project": "p", "job": their_job}),
            "job_not_found",
        )
        .await;

    let d = scoped
        .ok(
            "get_job_log",
            json!({"project": "p", "job": aid, "tail_lines": 2}),
        )
        .await;
    assert_eq!(
        d.structured,
        json!({"job_id": aid, "state": "failure", "text": "line 4\nline 5", "lines": 2, "truncated": true})
    );
    assert_eq!(d.text, "line 4\nline 5");
    let d = scoped
        .ok("get_job_log", json!({"project": "p", "job": aid}))
        .await;
    assert_eq!(d.structured["text"], log.trim_end());
    assert_eq!(d.structured["lines"], 5);
    assert_eq!(d.structured["truncated"], false);
    let d = scoped
        .ok(
            "get_job_log",
            json!({"project": "p", "job": job_id(&b, "b")}),
        )
        .await;
    assert_eq!(d.structured["text"], "");
    assert!(d.text.contains("no output yet"), "{}", d.text);
    for n in [0, 1001] {
        scoped
            .refused_with(
                "get_job_log",
                json!({"project": "p", "job": aid, "tail_lines": n}),
                "invalid_tail_lines",
            )
            .await;
    }
    scoped
        .refused_with(
            "get_job_log",
            json!({"project": "q", "job": their_job}),
            "project_not_found",
        )
        .await;
    scoped
        .refused_with(
            "get_job_log",
            json!({"project": "p", "job": their_job}),
            "job_not_found",
        )
        .await;
    scoped
        .invalid(
            "get_job_log",
            json!({"project": "p", "job": aid, "tail_lines": -1}),
            "invalid_arguments",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_job_log_keeps_to_64_kib_from_the_end() {
    let (s, scoped) = server_pq().await;
    let runner = s.runner_token().await;
    s.trigger_build(&s.admin, "p", pipeline(&[("noisy", &[])]))
        .await;
    // 1000 lines of 100 bytes: the line cap lets all of them through, the byte cap does not.
    let log: String = (0..1000).map(|i| format!("{i:>99}\n")).collect();
    let job = run_next(&s, &runner, &log, "finished").await;
    let d = scoped
        .ok(
            "get_job_log",
            json!({"project": "p", "job": str_field(&job, "id"), "tail_lines": 1000}),
        )
        .await;
    let text = str_field(&d.structured, "text");
    assert!(text.len() <= 64 * 1024, "{} bytes", text.len());
    assert!(text.len() > 60 * 1024, "{} bytes", text.len());
    assert!(
        text.ends_with(&format!("{:>99}", 999)),
        "the newest output is kept"
    );
    assert_eq!(d.structured["truncated"], true);
    assert_eq!(d.structured["lines"], json!(text.lines().count()));
}

// ---------------------------------------------------------------------------
// Watch tools
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_watch_makes_the_watch_rest_shows() {
    let (s, scoped) = server_pq().await;
    let mut args = watch_args("p", "viking://res/docs");
    args["reason"] = json!("keep the docs index fresh");
    args["instruction"] = json!("only public pages");
    let d = scoped.ok("create_watch", args).await;
    let w = &d.structured;
    let id = str_field(w, "id");
    assert_eq!(w["project"], "p");
    assert_eq!(w["to_uri"], "viking://res/docs");
    assert_eq!(w["source"], "https://source.example.com/docs");
    assert_eq!(w["watch_interval"], 60.0);
    assert_eq!(w["is_active"], true);
    assert_eq!(w["reason"], "keep the docs index fresh");
    assert_eq!(w["instruction"], "only public pages");
    assert_eq!(w["created_by"], json!(scoped.principal()));
    assert_eq!(*w, s.watch_now(&id).await);
    assert!(
        d.text.starts_with(&format!(
            "Created watch viking://res/docs ({id}) in p: https://source.example.com/docs every 60m, active, next run 20"
        )),
        "{}",
        d.text
    );
    assert_eq!(d.entry["target"], json!(format!("watch:{id}")));
    assert_eq!(d.entry["project"], "p");
    let (_, cmd) = mcp_command(&d.entry);
    assert_eq!(
        cmd["command"]["create_watch"]["to_uri"],
        "viking://res/docs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_watch_refusals_change_nothing() {
    let (s, scoped) = server_pq().await;
    rest_watch(&s, "p", "viking://res/docs", true).await;
    let before = all_watches_now(&s).await;

    let r = scoped
        .refused_with(
            "create_watch",
            json!({"project": "p", "source": "https://source.example.com/x", "to_uri": "viking://res/x", "watch_interval": 0}),
            "invalid_interval",
        )
        .await;
    assert!(r.text.contains("pause_watch"), "{}", r.text);
    assert_eq!(r.entry["status"], 422);

    // The same validation as REST: each body is refused with the code REST gives it.
    let bad = [
        json!({"project": "p", "source": "https://source.example.com/x", "to_uri": "viking://res/x", "watch_interval": -5}),
        json!({"project": "p", "source": "https://source.example.com/x", "to_uri": "viking://res/x", "watch_interval": 525_601}),
        json!({"project": "p", "source": "not a uri", "to_uri": "viking://res/x", "watch_interval": 60}),
        json!({"project": "p", "source": "https://source.example.com/x", "to_uri": "docs", "watch_interval": 60}),
        json!({"project": "p", "source": "https://source.example.com/x", "to_uri": "viking://res/docs", "watch_interval": 60}),
        json!({"project": "nope", "source": "https://source.example.com/x", "to_uri": "viking://res/x", "watch_interval": 60}),
        // What a URL parse forgives (a tab, a leading control character) is refused at every
        // door, since the rule is the domain's.
        json!({"project": "p", "source": "https://source.example.com/x", "to_uri": "viking://res/a\tb", "watch_interval": 60}),
        json!({"project": "p", "source": "\u{1}https://source.example.com/x", "to_uri": "viking://res/y", "watch_interval": 60}),
    ];
    for body in bad {
        let rest = s.create_watch(&s.admin, body.clone()).await;
        assert!(rest.status >= 400, "REST accepted {body}: {}", rest.text);
        let code = str_field(&rest.body, "code");
        scoped.refused_with("create_watch", body, &code).await;
    }
    // A project outside the token is not found, though it exists.
    scoped
        .refused_with(
            "create_watch",
            watch_args("q", "viking://res/x"),
            "project_not_found",
        )
        .await;

    // Arguments that do not fit the schema are JSON-RPC errors, still audited.
    for args in [
        json!({"project": "p", "source": "https://source.example.com/x", "watch_interval": 60}),
        json!({"project": "p", "source": "https://source.example.com/x", "to_uri": "viking://res/x", "watch_interval": "60"}),
        json!({"project": "p", "source": "https://source.example.com/x", "to_uri": 7, "watch_interval": 60}),
        json!({"project": "p", "source": "https://source.example.com/x", "to_uri": "viking://res/x", "watch_interval": 60, "is_active": false}),
    ] {
        let msg = scoped
            .invalid("create_watch", args, "invalid_arguments")
            .await;
        assert!(msg.contains("create_watch"), "{msg}");
    }
    assert_eq!(all_watches_now(&s).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_watch_twice_is_not_an_error_the_second_time() {
    let (s, scoped) = server_pq().await;
    let d = scoped
        .ok("create_watch", watch_args("p", "viking://res/docs"))
        .await;
    let id = str_field(&d.structured, "id");
    let theirs = rest_watch(&s, "q", "viking://res/theirs", true).await;

    let d = scoped
        .ok("cancel_watch", json!({"to_uri": "viking://res/docs"}))
        .await;
    assert_eq!(d.structured["cancelled"], true);
    assert_eq!(d.structured["id"], json!(id));
    assert_eq!(d.structured["to_uri"], "viking://res/docs");
    assert_eq!(d.entry["target"], json!(format!("watch:{id}")));
    assert_problem(&s.get_watch(&s.admin, &id).await, 404, "watch_not_found");

    // Again: already gone, which is what the agent wanted.
    let (r, entry) = scoped
        .call("cancel_watch", json!({"to_uri": "viking://res/docs"}))
        .await;
    let result = rpc_result(&r);
    assert_eq!(result["isError"], false, "{}", r.text);
    assert_eq!(
        result["structuredContent"],
        json!({
            "to_uri": "viking://res/docs",
            "cancelled": false,
            "id": null,
            "detail": text_of(result),
        })
    );
    assert!(text_of(result).contains("already cancelled"), "{}", r.text);
    // The audit says what really happened: there was nothing to delete.
    assert_eq!(entry["outcome"], "rejected");
    assert_eq!(entry["code"], "watch_not_found");

    // Another project's watch is out of reach: "not there", and it stays.
    let (r, _) = scoped
        .call(
            "cancel_watch",
            json!({"to_uri": "viking://res/theirs", "project": "q"}),
        )
        .await;
    assert_eq!(rpc_result(&r)["structuredContent"]["cancelled"], false);
    assert_eq!(s.watch_now(&str_field(&theirs, "id")).await, theirs);

    scoped
        .invalid("cancel_watch", json!({}), "invalid_arguments")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_watch_by_to_uri_or_id() {
    let (s, scoped) = server_pq().await;
    let docs = rest_watch(&s, "p", "viking://res/docs", true).await;
    let id = str_field(&docs, "id");
    let theirs = rest_watch(&s, "q", "viking://res/theirs", true).await;

    let d = scoped
        .ok(
            "pause_watch",
            json!({"to_uri": "viking://res/docs", "reason": "source is down"}),
        )
        .await;
    assert_eq!(d.structured["is_active"], false);
    assert_eq!(d.structured["next_run_at"], Value::Null);
    assert_eq!(d.structured["reason"], "source is down");
    assert_eq!(d.structured, s.watch_now(&id).await);
    assert!(
        d.text.starts_with("Paused watch viking://res/docs")
            && d.text.ends_with("none while paused"),
        "{}",
        d.text
    );

    let d = scoped.ok("resume_watch", json!({"id": id})).await;
    assert_eq!(d.structured["is_active"], true);
    assert!(ts(&d.structured["next_run_at"]) > jiff::Timestamp::now() + secs(55 * 60));
    assert_eq!(d.structured, s.watch_now(&id).await);
    assert!(d.text.starts_with("Resumed watch"), "{}", d.text);

    for tool in ["pause_watch", "resume_watch"] {
        scoped
            .refused_with(
                tool,
                json!({"to_uri": "viking://res/nowhere"}),
                "watch_not_found",
            )
            .await;
        scoped
            .refused_with(
                tool,
                json!({"id": str_field(&theirs, "id")}),
                "watch_not_found",
            )
            .await;
        scoped
            .refused_with(tool, json!({"project": "p"}), "watch_key_required")
            .await;
    }
    assert_eq!(s.watch_now(&str_field(&theirs, "id")).await, theirs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_to_uri_in_two_projects_needs_a_project_unless_only_one_is_in_sight() {
    let (s, scoped) = server_pq().await;
    let shared = "viking://res/shared";
    let in_p = rest_watch(&s, "p", shared, true).await;
    let in_q = rest_watch(&s, "q", shared, true).await;
    let everywhere = Agent::new(&s, json!({}), true).await;

    // The token that sees one of them is not told the other exists.
    let d = scoped.ok("get_watch", json!({"to_uri": shared})).await;
    assert_eq!(d.structured, in_p);

    let r = everywhere
        .refused_with("get_watch", json!({"to_uri": shared}), "ambiguous_to_uri")
        .await;
    assert!(r.text.contains("pass project"), "{}", r.text);
    // An ambiguous cancel is a refusal, not "already gone", and deletes neither.
    everywhere
        .refused_with(
            "cancel_watch",
            json!({"to_uri": shared}),
            "ambiguous_to_uri",
        )
        .await;
    everywhere
        .refused_with("pause_watch", json!({"to_uri": shared}), "ambiguous_to_uri")
        .await;
    assert_eq!(all_watches_now(&s).await, vec![in_p.clone(), in_q.clone()]);

    let d = everywhere
        .ok("get_watch", json!({"to_uri": shared, "project": "q"}))
        .await;
    assert_eq!(d.structured, in_q);
    let d = everywhere
        .ok("cancel_watch", json!({"to_uri": shared, "project": "q"}))
        .await;
    assert_eq!(d.structured["id"], in_q["id"]);
    assert_eq!(all_watches_now(&s).await, vec![in_p]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_watch_fires_it_once_and_keeps_it_paused() {
    let (s, scoped) = server_pq().await;
    let w = rest_watch(&s, "p", "viking://res/docs", false).await;
    let id = str_field(&w, "id");

    let d = scoped
        .ok("trigger_watch", json!({"to_uri": "viking://res/docs"}))
        .await;
    assert_eq!(
        d.structured,
        json!({"id": id, "to_uri": "viking://res/docs", "build_id": null})
    );
    assert!(d.text.contains("no build started"), "{}", d.text);
    assert!(d.text.contains(&format!("({id})")), "{}", d.text);
    let fired = eventually(Duration::from_secs(10), || async {
        let w = s.watch_now(&id).await;
        (!w["last_run"].is_null()).then_some(w)
    })
    .await
    .expect("the triggered watch never ran");
    assert_eq!(fired["last_run"]["manual"], true);
    assert_eq!(fired["is_active"], false, "a trigger does not resume");

    scoped
        .refused_with(
            "trigger_watch",
            json!({"id": uuid::Uuid::now_v7().to_string()}),
            "watch_not_found",
        )
        .await;
    let theirs = rest_watch(&s, "q", "viking://res/theirs", true).await;
    for args in [
        json!({"id": str_field(&theirs, "id")}),
        json!({"to_uri": "viking://res/theirs", "project": "q"}),
    ] {
        scoped
            .refused_with("trigger_watch", args, "watch_not_found")
            .await;
    }
    assert_eq!(s.watch_now(&str_field(&theirs, "id")).await, theirs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_watch_starts_a_build_of_the_projects_default_pipeline() {
    let (s, scoped) = server_pq().await;
    s.patch(
        &s.admin,
        "/projects/p",
        json!({"default_pipeline": pipeline(&[("index", &[])])}),
    )
    .await
    .expect(200);
    let w = rest_watch(&s, "p", "viking://res/docs", true).await;
    let id = str_field(&w, "id");
    scoped.ok("trigger_watch", json!({"id": id})).await;
    let build = eventually(Duration::from_secs(10), || async {
        let w = s.watch_now(&id).await;
        w["last_run"]["build_id"].as_str().map(str::to_string)
    })
    .await
    .expect("the trigger started no build");
    let b = s.build_now("p", &build).await;
    assert_eq!(b["trigger"], "watch");
    assert_eq!(b["watch_id"], json!(id));
    assert_eq!(b["env"]["REEVE_WATCH_TO_URI"], "viking://res/docs");
    assert!(job_names(&b).contains(&"index".to_string()), "{b}");
}

// ---------------------------------------------------------------------------
// Build and job tools
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_build_runs_an_inline_pipeline_or_says_what_is_missing() {
    let (s, scoped) = server_pq().await;
    let d = scoped
        .ok(
            "trigger_build",
            json!({"project": "p", "pipeline": pipeline(&[("lint", &[]), ("test", &["lint"])]), "env": {"KIND": "agent"}}),
        )
        .await;
    let b = &d.structured;
    let bid = str_field(b, "id");
    assert_eq!(b["project"], "p");
    assert_eq!(b["trigger"], "mcp");
    assert_eq!(b["number"], 1);
    assert_eq!(b["restart_counter"], 1);
    assert_eq!(b["created_by"], json!(scoped.principal()));
    assert_eq!(b["env"]["KIND"], "agent");
    assert_eq!(
        job_names(b),
        vec![CREATE_JOBS.to_string(), "lint".into(), "test".into()]
    );
    assert_eq!(*b, s.build_now("p", &bid).await);
    assert!(
        d.text
            .starts_with(&format!("Triggered build {bid} #1.1 of p: running")),
        "{}",
        d.text
    );
    assert_eq!(d.entry["target"], json!(format!("build:{bid}")));
    let before = builds_now(&s, "p").await;

    let r = scoped
        .refused_with("trigger_build", json!({"project": "p"}), "no_pipeline")
        .await;
    assert!(r.text.contains("Next: pass pipeline"), "{}", r.text);
    scoped
        .refused_with(
            "trigger_build",
            json!({"project": "p", "pipeline": pipeline(&[("a", &["a"])])}),
            "invalid_pipeline",
        )
        .await;
    scoped
        .refused_with(
            "trigger_build",
            json!({"project": "p", "pipeline": {"jobs": [], "generate": "gen"}}),
            "invalid_pipeline",
        )
        .await;
    scoped
        .refused_with(
            "trigger_build",
            json!({"project": "q", "pipeline": pipeline(&[("a", &[])])}),
            "project_not_found",
        )
        .await;
    assert_eq!(builds_now(&s, "p").await, before);
    assert_eq!(
        builds_now(&s, "q").await["builds"],
        json!([]),
        "nothing started in q"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_build_starts_the_next_generation() {
    let (s, scoped) = server_pq().await;
    let runner = s.runner_token().await;
    let first = s
        .trigger_build(&s.admin, "p", pipeline(&[("a", &[])]))
        .await;
    let first_id = str_field(&first, "id");
    s.drain(&runner, |_| "finished").await;
    let first = s.build_now("p", &first_id).await;

    let d = scoped
        .ok("restart_build", json!({"project": "p", "build": first_id}))
        .await;
    let second = &d.structured;
    let second_id = str_field(second, "id");
    assert_ne!(second_id, first_id);
    assert_eq!(second["number"], 1);
    assert_eq!(second["restart_counter"], 2);
    assert_eq!(second["restarted_from"], json!(first_id));
    assert_eq!(second["trigger"], "mcp");
    assert_eq!(*second, s.build_now("p", &second_id).await);
    assert!(
        d.text
            .starts_with(&format!("Restarted as build {second_id} #1.2 of p")),
        "{}",
        d.text
    );
    assert_eq!(
        s.build_now("p", &first_id).await,
        first,
        "the old one is untouched"
    );

    let listing = builds_now(&s, "p").await;
    scoped
        .refused_with(
            "restart_build",
            json!({"project": "p", "build": uuid::Uuid::now_v7().to_string()}),
            "build_not_found",
        )
        .await;
    scoped
        .refused_with(
            "restart_build",
            json!({"project": "p", "build": "latest"}),
            "invalid_build_id",
        )
        .await;
    scoped
        .refused_with(
            "restart_build",
            json!({"project": "q", "build": first_id}),
            "project_not_found",
        )
        .await;
    assert_eq!(builds_now(&s, "p").await, listing);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_build_kills_what_has_not_ended_and_is_idempotent() {
    let (s, scoped) = server_pq().await;
    let b = s
        .trigger_build(&s.admin, "p", pipeline(&[("a", &[]), ("b", &["a"])]))
        .await;
    let bid = str_field(&b, "id");
    let theirs = s
        .trigger_build(&s.admin, "q", pipeline(&[("x", &[])]))
        .await;
    let their_id = str_field(&theirs, "id");

    let d = scoped
        .ok("abort_build", json!({"project": "p", "build": bid}))
        .await;
    let killed: BTreeSet<String> = d.structured["aborted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(killed, names(&[&job_id(&b, "a"), &job_id(&b, "b")]));
    assert_eq!(d.text, "aborted 2 jobs");
    let now = s.build_now("p", &bid).await;
    assert_eq!(now["aborted"], true);
    assert_eq!(job_named(&now, "a")["state"], "killed");

    let d = scoped
        .ok("abort_build", json!({"project": "p", "build": bid}))
        .await;
    assert_eq!(d.structured, json!({"aborted": []}));
    assert_eq!(d.text, "nothing was left to abort");
    assert_eq!(s.build_now("p", &bid).await, now);

    scoped
        .refused_with(
            "abort_build",
            json!({"project": "q", "build": their_id}),
            "project_not_found",
        )
        .await;
    scoped
        .refused_with(
            "abort_build",
            json!({"project": "p", "build": their_id}),
            "build_not_found",
        )
        .await;
    assert_eq!(s.build_now("q", &their_id).await, theirs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_job_clones_a_failed_job_and_what_follows_it() {
    let (s, scoped) = server_pq().await;
    let runner = s.runner_token().await;
    let b = s
        .trigger_build(&s.admin, "p", pipeline(&[("a", &[]), ("b", &["a"])]))
        .await;
    let bid = str_field(&b, "id");
    // b is still queued behind a: restarting it now is refused.
    let before = s.build_now("p", &bid).await;
    scoped
        .refused_with(
            "restart_job",
            json!({"project": "p", "job": job_id(&b, "b")}),
            "job_not_terminal",
        )
        .await;
    scoped
        .refused_with(
            "restart_job",
            json!({"project": "p", "job": job_id(&b, CREATE_JOBS)}),
            "create_jobs_not_restartable",
        )
        .await;
    assert_eq!(s.build_now("p", &bid).await, before);

    let a = run_next(&s, &runner, "", "failure").await;
    assert_eq!(a["name"], "a");
    let aid = str_field(&a, "id");
    let d = scoped
        .ok("restart_job", json!({"project": "p", "job": aid}))
        .await;
    let clones = d.structured["jobs"].as_array().unwrap().clone();
    let mut cloned: Vec<String> = clones.iter().map(|c| str_field(c, "name")).collect();
    cloned.sort();
    assert_eq!(cloned, vec!["a.1", "b.1"]);
    let a1 = clones.iter().find(|c| c["name"] == "a.1").unwrap();
    assert_eq!(a1["from"], json!(aid));
    let now = s.build_now("p", &bid).await;
    assert_eq!(job_named(&now, "a.1")["id"], a1["to"]);
    assert_eq!(job_named(&now, "a.1")["state"], "queued");
    assert_eq!(job_named(&now, "a")["superseded_by"], a1["to"]);
    assert!(d.text.starts_with("restarted 2 jobs:"), "{}", d.text);
    assert_eq!(d.entry["target"], json!(format!("job:{aid}")));

    let r = scoped
        .refused_with(
            "restart_job",
            json!({"project": "p", "job": aid}),
            "job_superseded",
        )
        .await;
    assert!(r.text.contains(&str_field(a1, "to")), "{}", r.text);
    assert_eq!(s.build_now("p", &bid).await, now);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_job_clones_only_that_job() {
    let (s, scoped) = server_pq().await;
    let runner = s.runner_token().await;
    let b = s
        .trigger_build(&s.admin, "p", pipeline(&[("a", &[]), ("b", &["a"])]))
        .await;
    let bid = str_field(&b, "id");
    let a = run_next(&s, &runner, "", "failure").await;
    let aid = str_field(&a, "id");

    let d = scoped
        .ok("rerun_job", json!({"project": "p", "job": aid}))
        .await;
    let job = &d.structured["job"];
    assert_eq!(job["name"], "a.1");
    assert_eq!(job["state"], "queued");
    assert_eq!(job["cloned_from"], json!(aid));
    assert_eq!(*job, s.job_now("p", &str_field(job, "id")).await);
    assert_eq!(
        job_names(&s.build_now("p", &bid).await),
        vec![
            CREATE_JOBS.to_string(),
            "a".into(),
            "a.1".into(),
            "b".into()
        ],
        "what follows is not re-run"
    );
    assert!(d.text.starts_with("rerunning a.1 as "), "{}", d.text);

    let before = s.build_now("p", &bid).await;
    scoped
        .refused_with(
            "rerun_job",
            json!({"project": "p", "job": aid}),
            "job_superseded",
        )
        .await;
    scoped
        .refused_with(
            "rerun_job",
            json!({"project": "p", "job": uuid::Uuid::now_v7().to_string()}),
            "job_not_found",
        )
        .await;
    assert_eq!(s.build_now("p", &bid).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_job_kills_a_queued_job_once() {
    let (s, scoped) = server_pq().await;
    let b = s
        .trigger_build(&s.admin, "p", pipeline(&[("a", &[]), ("b", &[])]))
        .await;
    let (bid, aid) = (str_field(&b, "id"), job_id(&b, "a"));
    let theirs = s
        .trigger_build(&s.admin, "q", pipeline(&[("x", &[])]))
        .await;

    let d = scoped
        .ok("abort_job", json!({"project": "p", "job": aid}))
        .await;
    assert_eq!(d.structured, json!({"aborted": [aid]}));
    assert_eq!(d.text, "aborted 1 job");
    let now = s.build_now("p", &bid).await;
    assert_eq!(job_named(&now, "a")["state"], "killed");
    assert_eq!(job_named(&now, "b")["state"], "queued", "only that job");

    let d = scoped
        .ok("abort_job", json!({"project": "p", "job": aid}))
        .await;
    assert_eq!(d.structured, json!({"aborted": []}));
    assert_eq!(s.build_now("p", &bid).await, now);

    scoped
        .refused_with(
            "abort_job",
            json!({"project": "p", "job": job_id(&theirs, "x")}),
            "job_not_found",
        )
        .await;
    assert_eq!(s.build_now("q", &str_field(&theirs, "id")).await, theirs);
}

// ---------------------------------------------------------------------------
// Calls that are not allowed at all
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_tool_is_invalid_params() {
    let (s, scoped) = server_pq().await;
    let msg = scoped
        .invalid("delete_everything", json!({"really": true}), "unknown_tool")
        .await;
    assert!(msg.contains("tools/list"), "{msg}");
    // Without arguments at all, too.
    let head = s.audit_head().await;
    let r = scoped
        .rpc("tools/call", Some(json!({"name": "drop_tables"})))
        .await;
    invalid_params(&r, false);
    assert_eq!(s.audit_entries(head).await.len(), 1);
}

/// Every way a `tools/call` can fail to fit, on both kinds of client: JSON-RPC -32602 with the
/// request's id — with HTTP 400 for a 2026-07-28 client (revision in `_meta`), with 200 for an
/// older one (revision in a header), whose SDKs drop the connection on a 4xx — one rejected
/// `mcp_call` commit naming why, and nothing else changed. What the tool itself refuses (a
/// value out of range, a watch that is not there) is a tool result instead: HTTP 200,
/// `isError: true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_does_not_fit_its_tool_is_invalid_params_and_audited() {
    let (s, scoped) = server_pq().await;
    rest_watch(&s, "p", "viking://res/docs", true).await;
    let watches = all_watches_now(&s).await;
    let builds = builds_now(&s, "p").await;
    let good = watch_args("p", "viking://res/new");
    let without = |key: &str| {
        let mut a = good.clone();
        a.as_object_mut().map(|o| o.remove(key));
        a
    };
    let with = |key: &str, v: Value| {
        let mut a = good.clone();
        a[key] = v;
        a
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        // A required field missing, a value of the wrong type, a field the schema lacks.
        ("create_watch", without("to_uri"), "invalid_arguments"),
        (
            "create_watch",
            with("watch_interval", json!("60")),
            "invalid_arguments",
        ),
        (
            "create_watch",
            with("is_active", json!(false)),
            "invalid_arguments",
        ),
        ("list_watches", json!({"limit": -1}), "invalid_arguments"),
        (
            "list_projects",
            json!({"project": "p"}),
            "invalid_arguments",
        ),
        // A tool that is not there.
        ("delete_everything", json!({"really": true}), "unknown_tool"),
    ];
    let mut id = 9_000;
    for modern in [false, true] {
        for (tool, args, code) in &cases {
            id += 1;
            let params = json!({"name": tool, "arguments": args});
            let head = s.audit_head().await;
            let r = if modern {
                let mut params = params;
                params["_meta"] = modern_meta(MODERN);
                let body =
                    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params});
                let extra = [("mcp-method", "tools/call"), ("mcp-name", *tool)];
                post_mcp(&s, Some(&scoped.token), Some(MODERN), &extra, &body).await
            } else {
                let body =
                    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params});
                post_mcp(&s, Some(&scoped.token), Some(LATEST), &[], &body).await
            };
            let what = format!("{tool} {args} (2026-07-28: {modern})");
            assert_eq!(invalid_params(&r, modern)["code"], json!(INVALID_PARAMS));
            assert_eq!(
                r.body["id"],
                json!(id),
                "{what}: the id is echoed: {}",
                r.text
            );
            let message = str_field(&r.body["error"], "message");
            assert!(
                message.contains(tool),
                "{what}: the message names the tool: {message}"
            );
            let hint = if *code == "unknown_tool" {
                "tools/list"
            } else {
                "inputSchema"
            };
            assert!(
                message.contains(hint),
                "{what}: the message says where to look: {message}"
            );

            let entries = s.audit_entries(head).await;
            assert_eq!(entries.len(), 1, "{what}: one commit: {entries:#?}");
            let entry = &entries[0];
            assert_eq!(entry["plane"], "mcp", "{entry}");
            assert_eq!(entry["principal"], json!(scoped.principal()), "{entry}");
            assert_eq!(entry["outcome"], "rejected", "{entry}");
            assert_eq!(entry["code"], json!(code), "{entry}");
            let (kind, cmd) = mcp_command(entry);
            assert_eq!(
                kind, "mcp_call",
                "{what}: nothing became a command: {entry}"
            );
            assert_eq!(cmd["tool"], json!(tool), "{entry}");
            assert_eq!(cmd["refusal"]["code"], json!(code), "{entry}");
            let recorded: Value = serde_json::from_str(&str_field(&cmd, "arguments"))
                .unwrap_or_else(|e| panic!("arguments are not JSON text ({e}): {entry}"));
            assert_eq!(&recorded, args, "{entry}");
        }
    }
    assert_eq!(all_watches_now(&s).await, watches);
    assert_eq!(builds_now(&s, "p").await, builds);

    // Refusals of well-formed calls stay tool results, answered with 200.
    scoped
        .refused_with(
            "get_watch",
            json!({"to_uri": "viking://res/nowhere"}),
            "watch_not_found",
        )
        .await;
    scoped
        .refused_with(
            "create_watch",
            with("watch_interval", json!(0)),
            "invalid_interval",
        )
        .await;
    scoped
        .refused_with(
            "get_build",
            json!({"project": "p", "build": "b-1"}),
            "invalid_build_id",
        )
        .await;
    assert_eq!(all_watches_now(&s).await, watches);
}

/// Arguments that would succeed for a token that may write, one set per write tool.
async fn one_call_per_write_tool(s: &TestServer) -> Vec<(&'static str, Value)> {
    let w = rest_watch(s, "p", "viking://res/existing", true).await;
    let b = s
        .trigger_build(&s.admin, "p", pipeline(&[("a", &[])]))
        .await;
    let (bid, aid) = (str_field(&b, "id"), job_id(&b, "a"));
    let job = json!({"project": "p", "job": aid});
    let build = json!({"project": "p", "build": bid});
    vec![
        ("create_watch", watch_args("p", "viking://res/new")),
        ("cancel_watch", json!({"to_uri": "viking://res/existing"})),
        ("pause_watch", json!({"id": str_field(&w, "id")})),
        ("resume_watch", json!({"id": str_field(&w, "id")})),
        ("trigger_watch", json!({"to_uri": "viking://res/existing"})),
        (
            "trigger_build",
            json!({"project": "p", "pipeline": pipeline(&[("z", &[])])}),
        ),
        ("restart_build", build.clone()),
        ("abort_build", build),
        ("restart_job", job.clone()),
        ("rerun_job", job.clone()),
        ("abort_job", job),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_token_calling_write_tools_anyway_is_refused_and_audited() {
    let (s, _) = server_pq().await;
    let reader = Agent::new(&s, json!({"p": null}), false).await;
    let calls = one_call_per_write_tool(&s).await;
    let watches = all_watches_now(&s).await;
    let builds = builds_now(&s, "p").await;

    for (tool, args) in calls {
        let r = reader.refused_with(tool, args, "trigger_not_allowed").await;
        assert!(r.text.contains("allow_trigger"), "{}", r.text);
        assert_eq!(r.entry["status"], 403);
        let (kind, _) = mcp_command(&r.entry);
        assert_eq!(kind, "mcp_write", "{tool}");
    }
    assert_eq!(all_watches_now(&s).await, watches);
    assert_eq!(builds_now(&s, "p").await, builds);
    // Reads still work.
    reader.ok("list_watches", json!({})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_server_refuses_every_write_tool() {
    let s = TestServer::start_with(|cfg| {
        roomy(cfg);
        cfg.mcp.read_only = true;
    })
    .await;
    s.create_project(&s.admin, "p").await;
    let writer = Agent::new(&s, json!({}), true).await;
    let calls = one_call_per_write_tool(&s).await;
    let watches = all_watches_now(&s).await;
    let builds = builds_now(&s, "p").await;

    for (tool, args) in calls {
        let r = writer.refused_with(tool, args, "mcp_read_only").await;
        assert!(r.text.contains("read"), "{}", r.text);
    }
    assert_eq!(all_watches_now(&s).await, watches);
    assert_eq!(builds_now(&s, "p").await, builds);
    let d = writer.ok("list_watches", json!({})).await;
    assert_eq!(d.structured["total"], 1);
}

// ---------------------------------------------------------------------------
// idempotency_key
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_idempotency_key_answers_the_first_call_again() {
    let (s, scoped) = server_pq().await;
    let mut args = watch_args("p", "viking://res/docs");
    args["idempotency_key"] = json!("agent-retry-1");
    let first = scoped.ok("create_watch", args.clone()).await;
    assert_eq!(first.entry["idempotency_key"], "agent-retry-1");

    // A retry after a lost answer: the same watch and no second one; the call itself is still
    // recorded (every agent call is), as an mcp_call that changed nothing.
    let head = s.audit_head().await;
    let r = scoped.call_raw("create_watch", args.clone()).await;
    let again = rpc_result(&r);
    assert_eq!(again["isError"], false, "{}", r.text);
    assert_eq!(again["structuredContent"], first.structured);
    assert_eq!(s.audit_head().await, head + 1);
    let replay = s.audit(&format!("?since_seq={head}")).await;
    let entry = &replay["entries"][0];
    assert_eq!(entry["plane"], "mcp", "{entry}");
    assert_eq!(entry["outcome"], "accepted", "{entry}");
    assert_eq!(
        entry["command"]["mcp_call"]["tool"], "create_watch",
        "{entry}"
    );
    assert!(entry["events"].as_array().unwrap().is_empty(), "{entry}");
    let watches = all_watches_now(&s).await;
    assert_eq!(watches.len(), 1);
    assert_eq!(watches[0]["id"], first.structured["id"]);

    // The same key for something else is a mistake, and says so.
    let mut other = args.clone();
    other["watch_interval"] = json!(90);
    let r = scoped
        .refused_with("create_watch", other, "idempotency_key_reused")
        .await;
    assert!(r.text.contains("new idempotency_key"), "{}", r.text);
    scoped
        .refused_with(
            "cancel_watch",
            json!({"to_uri": "viking://res/docs", "idempotency_key": "agent-retry-1"}),
            "idempotency_key_reused",
        )
        .await;
    assert_eq!(all_watches_now(&s).await, watches);

    // Keys belong to the token that sent them: another agent's identical call is its own
    // request, refused because the watch exists, not answered with the first agent's watch.
    let other_agent = Agent::new(&s, json!({"p": null}), true).await;
    other_agent
        .refused_with("create_watch", args.clone(), "to_uri_taken")
        .await;
    assert_eq!(all_watches_now(&s).await, watches);

    let mut bad = watch_args("p", "viking://res/other");
    bad["idempotency_key"] = json!("");
    scoped
        .refused_with("create_watch", bad, "invalid_idempotency_key")
        .await;
    assert_eq!(all_watches_now(&s).await, watches);
}

// ---------------------------------------------------------------------------
// Rate limits
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_spend_the_trigger_bucket_and_reads_their_own() {
    let s = TestServer::start_with(|cfg| {
        cfg.mcp_trigger_per_min = 2;
        cfg.mcp_read_per_min = 100_000;
    })
    .await;
    s.create_project(&s.admin, "p").await;
    let a = Agent::new(&s, json!({}), true).await;
    a.ok("create_watch", watch_args("p", "viking://res/one"))
        .await;
    a.ok("create_watch", watch_args("p", "viking://res/two"))
        .await;
    let before = all_watches_now(&s).await;

    let r = a
        .call_raw("create_watch", watch_args("p", "viking://res/three"))
        .await;
    let result = rpc_result(&r);
    assert_eq!(result["isError"], true, "{}", r.text);
    let text = text_of(result);
    assert!(text.contains("[rate_limited]"), "{text}");
    assert!(text.contains("2 such calls a minute"), "{text}");
    // The first refusal of a window is on the record (later ones are coalesced).
    let refused = s
        .audit(&format!("?plane=mcp&outcome=rejected&principal={}", a.id))
        .await;
    let refused = refused["entries"].as_array().unwrap().clone();
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!(refused[0]["code"], "rate_limited");
    assert_eq!(refused[0]["status"], 429);
    assert_eq!(mcp_command(&refused[0]).1["tool"], "create_watch");
    assert_eq!(all_watches_now(&s).await, before);

    // Reads come out of another bucket.
    for _ in 0..3 {
        let d = a.ok("list_watches", json!({})).await;
        assert_eq!(d.structured["total"], 2);
    }
    // The bucket is the token's, not the server's.
    let b = Agent::new(&s, json!({}), true).await;
    b.ok("create_watch", watch_args("p", "viking://res/three"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_spend_the_read_bucket() {
    let s = TestServer::start_with(|cfg| {
        cfg.mcp_trigger_per_min = 100_000;
        cfg.mcp_read_per_min = 2;
    })
    .await;
    s.create_project(&s.admin, "p").await;
    let a = Agent::new(&s, json!({}), true).await;
    a.ok("list_projects", json!({})).await;
    a.ok("list_watches", json!({})).await;

    let r = a.call_raw("list_projects", json!({})).await;
    let result = rpc_result(&r);
    assert_eq!(result["isError"], true, "{}", r.text);
    assert!(result.get("structuredContent").is_none(), "{}", r.text);
    let text = text_of(result);
    assert!(text.contains("[rate_limited]"), "{text}");
    assert!(text.contains("rate limited; wait"), "{text}");

    // Writes still go through.
    a.ok("create_watch", watch_args("p", "viking://res/one"))
        .await;
    assert_eq!(all_watches_now(&s).await.len(), 1);
}

// ---------------------------------------------------------------------------
// Audit
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tool_call_is_one_mcp_commit_naming_tool_arguments_and_outcome() {
    let (s, scoped) = server_pq().await;
    let start = s.audit_head().await;

    let mut seen = Vec::new();
    let d = scoped.ok("list_projects", json!({})).await;
    seen.push(("list_projects", "mcp_call", "accepted", None, d.entry));
    let r = scoped
        .refused("get_watch", json!({"to_uri": "viking://res/nowhere"}))
        .await;
    seen.push((
        "get_watch",
        "mcp_call",
        "rejected",
        Some("watch_not_found"),
        r.entry,
    ));
    let mut args = watch_args("p", "viking://res/docs");
    args["idempotency_key"] = json!("k-1");
    let d = scoped.ok("create_watch", args).await;
    seen.push(("create_watch", "mcp_write", "accepted", None, d.entry));
    let r = scoped
        .refused(
            "create_watch",
            json!({"project": "p", "source": "https://source.example.com/x", "to_uri": "viking://res/x", "watch_interval": 0}),
        )
        .await;
    seen.push((
        "create_watch",
        "mcp_write",
        "rejected",
        Some("invalid_interval"),
        r.entry,
    ));
    scoped
        .invalid("create_watch", json!({"project": "p"}), "invalid_arguments")
        .await;
    scoped
        .invalid("no_such_tool", json!({}), "unknown_tool")
        .await;

    // Reading the trail back through the plane filter gives exactly these calls, in order.
    let trail = s.audit(&format!("?plane=mcp&since_seq={start}")).await;
    let trail = trail["entries"].as_array().unwrap().clone();
    assert_eq!(trail.len(), 6, "{trail:#?}");
    for (i, (tool, kind, outcome, code, entry)) in seen.iter().enumerate() {
        assert_eq!(&trail[i], entry);
        assert_eq!(entry["plane"], "mcp");
        assert_eq!(entry["principal"], json!(scoped.principal()));
        assert_eq!(entry["outcome"], *outcome);
        assert_eq!(entry["code"], json!(code));
        let (k, cmd) = mcp_command(entry);
        assert_eq!(k, *kind);
        assert_eq!(cmd["tool"], *tool);
        assert!(
            !entry["request_id"].as_str().unwrap_or("").is_empty(),
            "{entry}"
        );
    }
    assert_eq!(trail[2]["idempotency_key"], "k-1");
    assert_eq!(trail[4]["code"], "invalid_arguments");
    assert_eq!(trail[5]["code"], "unknown_tool");
    assert_eq!(mcp_command(&trail[5]).1["tool"], "no_such_tool");

    // Filtering by the token finds the same calls; the token's secret is nowhere.
    let mine = s
        .audit(&format!("?principal={}&since_seq={start}", scoped.id))
        .await;
    assert_eq!(mine["entries"].as_array().unwrap(), &trail);
    let all = serde_json::to_string(&s.audit_entries(0).await).unwrap();
    assert!(
        !all.contains(&scoped.token),
        "the secret leaked into the audit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_request_id_is_the_one_the_agent_was_answered_with() {
    let (s, scoped) = server_pq().await;
    let head = s.audit_head().await;
    let r = scoped.call_raw("list_projects", json!({})).await;
    rpc_result(&r);
    let rid = r.header("x-request-id").expect("x-request-id").to_string();
    let entries = s.audit_entries(head).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["request_id"], json!(rid));
}

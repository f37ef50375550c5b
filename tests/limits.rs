//! Every persisted string is bounded: a field over its limit is refused (REST 422
//! `field_too_long` naming the field, MCP a tool error with the same code), nothing changes,
//! and the refusal's commit records the field's name, length and SHA-256, never the value —
//! so nothing a caller sends makes a commit larger than a few KiB. A value exactly at its
//! limit is accepted. Real server, real HTTP; commits are read back from the audit export.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use reeve::domain::bounds;
use reeve::server::ServerConfig;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// What one commit may weigh, at most, when a caller sent too much.
const SMALL_COMMIT: usize = 8 * 1024;

fn roomy(cfg: &mut ServerConfig) {
    cfg.mcp_trigger_per_min = 100_000;
    cfg.mcp_read_per_min = 100_000;
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The export lines of every commit after `since`.
async fn export_after(s: &TestServer, since: u64) -> Vec<Value> {
    let r = fetch(s.call(
        Method::GET,
        &s.admin,
        &format!("/audit/export?since_seq={since}"),
    ))
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.text
        .lines()
        .map(|l| serde_json::from_str(l).expect("an export line is JSON"))
        .collect()
}

/// The commits made since `since`: each is small and holds nothing of `value`; the last one
/// is returned.
async fn small_commits(s: &TestServer, since: u64, value: &str) -> Value {
    let lines = export_after(s, since).await;
    assert!(!lines.is_empty(), "the refusal made no commit");
    // A run of the value long enough that it cannot appear by chance.
    let probe: String = value.chars().take(200).collect();
    for line in &lines {
        let record = str_field(line, "record");
        assert!(
            record.len() / 2 <= SMALL_COMMIT,
            "a commit of {} bytes: {}",
            record.len() / 2,
            &line.to_string()[..400.min(line.to_string().len())]
        );
        let text = line.to_string();
        assert!(
            !text.contains(&probe),
            "the oversized value was stored: {}",
            &text[..400.min(text.len())]
        );
        assert!(
            !record.contains(&hex::encode(probe.as_bytes())),
            "the oversized value was stored in the record"
        );
    }
    lines.last().cloned().unwrap_or_default()
}

/// The summary a field over its limit is recorded as.
#[track_caller]
fn assert_summary(line: &Value, op: &str, field: &str, value: &[u8]) {
    assert_eq!(line["outcome"], "rejected", "{line}");
    let summary = &line["command"]["summarized"];
    assert_eq!(summary["op"], op, "{line}");
    assert_eq!(summary["field"], field, "{line}");
    assert_eq!(summary["len"], json!(value.len()), "{line}");
    assert_eq!(summary["sha256"], json!(sha256_hex(value)), "{line}");
}

/// A 422 `field_too_long` naming `field`, whose detail gives the limit and the length.
#[track_caller]
fn assert_too_long(r: &Resp, field: &str, len: usize, limit: usize) {
    assert_problem(r, 422, bounds::FIELD_TOO_LONG);
    assert_eq!(r.body["field"], field, "{}", r.text);
    let detail = str_field(&r.body, "detail");
    assert!(
        detail.contains(&len.to_string()) && detail.contains(&limit.to_string()),
        "the detail must give the length {len} and the limit {limit}: {detail}"
    );
}

/// Makes a value of the given length.
type Make = fn(usize) -> String;

async fn server() -> TestServer {
    let s = TestServer::start_with(roomy).await;
    s.create_project(&s.admin, "p").await;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_fields_over_their_limit_are_refused_and_recorded_by_hash() {
    let mut s = server().await;
    let cases: [(&str, usize, Make); 4] = [
        ("reason", bounds::REASON, |n| "r".repeat(n)),
        ("instruction", bounds::INSTRUCTION, |n| "i".repeat(n)),
        ("source", bounds::URI, |n| {
            format!("https://s.example.com/{}", "s".repeat(n - 22))
        }),
        ("to_uri", bounds::URI, |n| {
            format!("viking://t/{}", "t".repeat(n - 11))
        }),
    ];
    for (i, (field, limit, value)) in cases.into_iter().enumerate() {
        let before = s.all_watches(&s.admin).await;
        let head = s.audit_head().await;
        let big = value(limit + 1);
        let mut body = watch_body("p", &format!("viking://ok/{i}"));
        body[field] = json!(big);
        let r = s.create_watch(&s.admin, body).await;
        assert_too_long(&r, field, limit + 1, limit);
        assert_eq!(s.all_watches(&s.admin).await, before, "{field}");
        let line = small_commits(&s, head, &big).await;
        assert_summary(&line, "create_watch", field, big.as_bytes());
        assert_eq!(line["code"], bounds::FIELD_TOO_LONG);
        assert_eq!(line["field"], field);

        // Exactly at the limit is fine.
        let mut body = watch_body("p", &format!("viking://ok/{i}"));
        body[field] = json!(value(limit));
        s.create_watch(&s.admin, body).await.expect(201);
    }

    // A PATCH, and a watch named by an oversized `?to_uri=`.
    let w = s.watch(&s.admin, "p", "viking://ok/patch").await;
    let id = str_field(&w, "id");
    let before = s.all_watches(&s.admin).await;
    let head = s.audit_head().await;
    let big = "q".repeat(bounds::REASON * 50);
    let r = s
        .patch(&s.admin, &format!("/watches/{id}"), json!({"reason": big}))
        .await;
    assert_too_long(&r, "reason", big.len(), bounds::REASON);
    assert_summary(
        &small_commits(&s, head, &big).await,
        "update_watch",
        "reason",
        big.as_bytes(),
    );

    let head = s.audit_head().await;
    let uri = format!("viking://x/{}", "u".repeat(10_000));
    let r = s
        .delete(&s.admin, &format!("/watches?to_uri={}", enc(&uri)))
        .await;
    assert_too_long(&r, "to_uri", uri.len(), bounds::URI);
    assert_summary(
        &small_commits(&s, head, &uri).await,
        "delete_watch",
        "to_uri",
        uri.as_bytes(),
    );
    assert_eq!(s.all_watches(&s.admin).await, before);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_and_token_fields_over_their_limit_are_refused() {
    let mut s = server().await;
    let projects = s.get(&s.admin, "/projects").await.body;
    let tokens = s.get(&s.admin, "/tokens").await.body;

    let head = s.audit_head().await;
    let name = "n".repeat(bounds::PROJECT_NAME + 1);
    let r = s
        .post(&s.admin, "/projects", json!({"id": "q", "name": name}))
        .await;
    assert_too_long(&r, "name", name.len(), bounds::PROJECT_NAME);
    assert_summary(
        &small_commits(&s, head, &name).await,
        "create_project",
        "name",
        name.as_bytes(),
    );

    // An id too long to be one keeps its own code, and is recorded by hash all the same.
    let head = s.audit_head().await;
    let id = "i".repeat(500_000);
    let r = s.post(&s.admin, "/projects", json!({"id": id})).await;
    assert_problem(&r, 422, "invalid_project_id");
    assert_eq!(r.body["field"], "id");
    assert_summary(
        &small_commits(&s, head, &id).await,
        "create_project",
        "id",
        id.as_bytes(),
    );

    let head = s.audit_head().await;
    let description = "d".repeat(bounds::TOKEN_DESCRIPTION + 1);
    let r = s
        .post(
            &s.admin,
            "/tokens",
            json!({"kind": "api", "description": description, "enabled_projects": {}}),
        )
        .await;
    assert_too_long(
        &r,
        "description",
        description.len(),
        bounds::TOKEN_DESCRIPTION,
    );
    small_commits(&s, head, &description).await;

    let head = s.audit_head().await;
    let scope: serde_json::Map<String, Value> = (0..=bounds::TOKEN_PROJECTS)
        .map(|i| (format!("project-{i}"), Value::Null))
        .collect();
    let r = s
        .post(
            &s.admin,
            "/tokens",
            json!({"kind": "api", "description": "many", "enabled_projects": scope}),
        )
        .await;
    assert_too_long(
        &r,
        "enabled_projects",
        bounds::TOKEN_PROJECTS + 1,
        bounds::TOKEN_PROJECTS,
    );
    let line = small_commits(&s, head, "project-1000").await;
    assert_eq!(line["command"]["summarized"]["field"], "enabled_projects");

    // At the limits: accepted.
    let r = s
        .post(
            &s.admin,
            "/projects",
            json!({"id": "b".repeat(bounds::PROJECT_ID), "name": "n".repeat(bounds::PROJECT_NAME)}),
        )
        .await;
    r.expect(201);
    let r = s
        .post(
            &s.admin,
            "/tokens",
            json!({"kind": "api", "description": "d".repeat(bounds::TOKEN_DESCRIPTION), "enabled_projects": {}}),
        )
        .await;
    r.expect(201);

    let mut expected = projects["projects"].as_array().unwrap().len();
    expected += 1;
    assert_eq!(
        s.get(&s.admin, "/projects").await.body["projects"]
            .as_array()
            .unwrap()
            .len(),
        expected
    );
    assert_eq!(
        s.get(&s.admin, "/tokens").await.body["tokens"]
            .as_array()
            .unwrap()
            .len(),
        tokens["tokens"].as_array().unwrap().len() + 1
    );
    s.shutdown().await;
}

fn one_job(run: String) -> Value {
    json!({"jobs": [{"name": "build", "run": run}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_env_and_pipeline_over_their_limits_are_refused() {
    let mut s = server().await;
    let builds = builds_path("p");
    let none = s.get(&s.admin, &builds).await.body;

    let many: serde_json::Map<String, Value> = (0..=bounds::ENV_VARS)
        .map(|i| (format!("V{i}"), json!("x")))
        .collect();
    let long_value = "v".repeat(bounds::ENV_VALUE + 1);
    let long_key = "K".repeat(bounds::ENV_KEY + 1);
    let run = "r".repeat(bounds::RUN + 1);
    let name = "n".repeat(bounds::JOB_NAME + 1);
    // Every run within its limit, the whole over its own.
    let fat: Vec<Value> = (0..5)
        .map(|i| json!({"name": format!("j{i}"), "run": "w".repeat(60 * 1024)}))
        .collect();
    let cases: Vec<(Value, &str, usize, usize, String)> = vec![
        (
            json!({"pipeline": one_job("true".into()), "env": many}),
            "env",
            bounds::ENV_VARS + 1,
            bounds::ENV_VARS,
            "V64".into(),
        ),
        (
            json!({"pipeline": one_job("true".into()), "env": {"V": long_value}}),
            "env",
            long_value.len(),
            bounds::ENV_VALUE,
            long_value.clone(),
        ),
        (
            json!({"pipeline": one_job("true".into()), "env": {long_key.clone(): "x"}}),
            "env",
            long_key.len(),
            bounds::ENV_KEY,
            long_key.clone(),
        ),
        (
            json!({"pipeline": one_job(run.clone())}),
            "pipeline",
            run.len(),
            bounds::RUN,
            run.clone(),
        ),
        (
            json!({"pipeline": {"jobs": [{"name": name, "run": "true"}]}}),
            "pipeline",
            name.len(),
            bounds::JOB_NAME,
            name.clone(),
        ),
        (
            json!({"pipeline": {"jobs": fat}}),
            "pipeline",
            0,
            bounds::PIPELINE,
            "w".repeat(60 * 1024),
        ),
    ];
    for (body, field, len, limit, value) in cases {
        let head = s.audit_head().await;
        let r = s.post(&s.admin, &builds, body).await;
        if len == 0 {
            assert_problem(&r, 422, bounds::FIELD_TOO_LONG);
            assert_eq!(r.body["field"], field);
        } else {
            assert_too_long(&r, field, len, limit);
        }
        let line = small_commits(&s, head, &value).await;
        assert_eq!(line["command"]["summarized"]["field"], field, "{line}");
        assert_eq!(line["command"]["summarized"]["op"], "trigger_build");
    }
    assert_eq!(s.get(&s.admin, &builds).await.body, none);

    // At the limits: accepted.
    let vars: serde_json::Map<String, Value> = (0..bounds::ENV_VARS)
        .map(|i| (format!("V{i}"), json!("v".repeat(64))))
        .collect();
    s.post(
        &s.admin,
        &builds,
        json!({"pipeline": one_job("r".repeat(bounds::RUN)), "env": vars}),
    )
    .await
    .expect(201);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_command_is_recorded_small_whoever_sends_it() {
    let mut s = server().await;
    let (_, reader) = s.create_token("api", json!({}), false).await;
    let builds = builds_path("p");

    // Within every limit, but the token may not trigger: the refusal keeps a summary.
    let jobs: Vec<Value> = (0..3)
        .map(|i| json!({"name": format!("j{i}"), "run": format!("echo {}", "z".repeat(60_000))}))
        .collect();
    let head = s.audit_head().await;
    let r = s
        .post(&reader, &builds, json!({"pipeline": {"jobs": jobs}}))
        .await;
    assert_problem(&r, 403, "trigger_not_allowed");
    let line = small_commits(&s, head, &"z".repeat(1000)).await;
    assert_eq!(line["command"]["summarized"]["field"], "command", "{line}");
    assert_eq!(line["code"], "trigger_not_allowed");

    // A body that does not parse: its detail may quote the value, and is clipped.
    let head = s.audit_head().await;
    let junk = "j".repeat(500_000);
    let r = s
        .post(&s.admin, "/watches", json!({"watch_interval": junk}))
        .await;
    assert_problem(&r, 422, "invalid_body");
    small_commits(&s, head, &junk).await;

    // A recorded header's bad value.
    let head = s.audit_head().await;
    let plane = "p".repeat(16 * 1024);
    let r = fetch(
        s.call(Method::POST, &s.admin, "/watches")
            .header("reeve-plane", plane.as_str())
            .json(&watch_body("p", "viking://h")),
    )
    .await;
    assert_problem(&r, 400, "invalid_header");
    small_commits(&s, head, &plane).await;

    // An oversized request id is replaced, not stored.
    let head = s.audit_head().await;
    let rid = "r".repeat(4096);
    let r = fetch(
        s.call(Method::POST, &s.admin, "/watches")
            .header("x-request-id", rid.as_str())
            .json(&watch_body("p", "viking://rid")),
    )
    .await;
    r.expect(201);
    let line = small_commits(&s, head, &rid).await;
    assert_ne!(line["request_id"], json!(rid));

    // The same oversized request again under one Idempotency-Key is the same request.
    let big = "b".repeat(bounds::REASON + 1);
    let mut body = watch_body("p", "viking://idem");
    body["reason"] = json!(big);
    let first = fetch(
        s.call(Method::POST, &s.admin, "/watches")
            .header("idempotency-key", "k-1")
            .json(&body),
    )
    .await;
    assert_problem(&first, 422, bounds::FIELD_TOO_LONG);
    let head = s.audit_head().await;
    let again = fetch(
        s.call(Method::POST, &s.admin, "/watches")
            .header("idempotency-key", "k-1")
            .json(&body),
    )
    .await;
    assert_problem(&again, 422, bounds::FIELD_TOO_LONG);
    assert_eq!(
        s.audit_head().await,
        head,
        "a retry is answered from memory"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_fields_over_their_limit_are_refused() {
    let mut s = TestServer::start_with(|cfg| {
        roomy(cfg);
        cfg.runners = 0;
    })
    .await;
    s.create_project(&s.admin, "p").await;
    let runner = s.runner_token().await;
    s.trigger_build(&s.admin, "p", one_job("true".into())).await;

    let head = s.audit_head().await;
    let labels: Vec<String> = (0..=bounds::RUNNER_LABELS)
        .map(|i| format!("l{i}"))
        .collect();
    let r = s
        .post(
            &runner,
            "/runner/claim",
            json!({"wait_seconds": 0, "labels": labels}),
        )
        .await;
    assert_too_long(
        &r,
        "labels",
        bounds::RUNNER_LABELS + 1,
        bounds::RUNNER_LABELS,
    );
    small_commits(&s, head, "l32").await;

    let claimed = s.claim(&runner).await.expect("a job to claim");
    let job = str_field(&claimed["job"], "id");
    let lease = str_field(&claimed, "lease_id");
    let head = s.audit_head().await;
    let message = "m".repeat(bounds::JOB_MESSAGE + 1);
    let r = s
        .post(
            &runner,
            &format!("/runner/jobs/{job}/finish"),
            json!({"lease_id": lease, "state": "failure", "exit_code": 1, "message": message}),
        )
        .await;
    assert_too_long(&r, "message", message.len(), bounds::JOB_MESSAGE);
    small_commits(&s, head, &message).await;
    assert_eq!(s.job_now("p", &job).await["state"], "running");

    let r = s
        .post(
            &runner,
            &format!("/runner/jobs/{job}/finish"),
            json!({"lease_id": lease, "state": "failure", "exit_code": 1,
                   "message": "m".repeat(bounds::JOB_MESSAGE)}),
        )
        .await;
    r.expect(200);
    s.shutdown().await;
}

// ---------------------------------------------------------------------------
// MCP
// ---------------------------------------------------------------------------

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

async fn mcp(s: &TestServer, token: &str, method: &str, params: Value) -> Resp {
    let body = json!({
        "jsonrpc": "2.0",
        "id": NEXT_ID.fetch_add(1, Ordering::Relaxed),
        "method": method,
        "params": params,
    });
    fetch(
        s.client
            .post(format!("{}/mcp", s.base))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .bearer_auth(token)
            .body(body.to_string()),
    )
    .await
}

async fn call_tool(s: &TestServer, token: &str, tool: &str, args: Value) -> Resp {
    mcp(
        s,
        token,
        "tools/call",
        json!({"name": tool, "arguments": args}),
    )
    .await
}

/// A tool error naming `code`.
#[track_caller]
fn tool_error(r: &Resp, code: &str) -> String {
    assert_eq!(r.status, 200, "{}", r.text);
    let result = &r.body["result"];
    assert_eq!(result["isError"], true, "{}", r.text);
    let text = str_field(&result["content"][0], "text");
    assert!(text.contains(&format!("[{code}]")), "{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_agent_cannot_store_a_huge_project_argument() {
    let mut s = server().await;
    let (_, agent) = s.create_token("mcp", json!({}), false).await;
    s.watch(&s.admin, "p", "viking://seen").await;

    // The finding: list_watches with a 900 KB project.
    let head = s.audit_head().await;
    let project = "p".repeat(900 * 1024);
    let r = call_tool(&s, &agent, "list_watches", json!({"project": project})).await;
    let text = tool_error(&r, bounds::FIELD_TOO_LONG);
    assert!(text.contains("arguments"), "{text}");
    assert!(r.text.len() < 8 * 1024, "the answer echoes the value");
    let line = small_commits(&s, head, &project).await;
    let arguments = json!({"project": project}).to_string();
    assert_summary(&line, "list_watches", "arguments", arguments.as_bytes());

    // Small arguments, but a project id longer than any can be.
    let head = s.audit_head().await;
    let project = "p".repeat(bounds::PROJECT_ID + 1);
    let r = call_tool(&s, &agent, "list_watches", json!({"project": project})).await;
    tool_error(&r, bounds::FIELD_TOO_LONG);
    assert_summary(
        &small_commits(&s, head, &project).await,
        "list_watches",
        "project",
        project.as_bytes(),
    );

    // At the limit: an ordinary answer (no such project).
    let r = call_tool(
        &s,
        &agent,
        "list_watches",
        json!({"project": "p".repeat(bounds::PROJECT_ID)}),
    )
    .await;
    tool_error(&r, "project_not_found");
    let r = call_tool(&s, &agent, "list_watches", json!({"project": "p"})).await;
    assert_eq!(
        r.body["result"]["structuredContent"]["total"], 1,
        "{}",
        r.text
    );

    // A write tool from a read-only agent, with arguments as large as a write may carry.
    let head = s.audit_head().await;
    let run = format!("echo {}", "y".repeat(50_000));
    let r = call_tool(
        &s,
        &agent,
        "trigger_build",
        json!({"project": "p", "pipeline": {"jobs": [{"name": "a", "run": run}]}}),
    )
    .await;
    tool_error(&r, "trigger_not_allowed");
    small_commits(&s, head, &run).await;

    // An unknown tool with a huge name.
    let head = s.audit_head().await;
    let tool = "t".repeat(100_000);
    let r = call_tool(&s, &agent, &tool, json!({})).await;
    assert!(r.body.get("error").is_some(), "{}", &r.text[..200]);
    small_commits(&s, head, &tool).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_write_over_a_limit_is_a_tool_error_and_changes_nothing() {
    let mut s = server().await;
    let (_, agent) = s.create_token("mcp", json!({}), true).await;
    let head = s.audit_head().await;
    let reason = "r".repeat(bounds::REASON + 1);
    let r = call_tool(
        &s,
        &agent,
        "create_watch",
        json!({"project": "p", "source": "https://s.example.com", "to_uri": "viking://m",
               "watch_interval": 60, "reason": reason}),
    )
    .await;
    let text = tool_error(&r, bounds::FIELD_TOO_LONG);
    assert!(text.contains("reason"), "{text}");
    assert!(s.all_watches(&s.admin).await.is_empty());
    let line = small_commits(&s, head, &reason).await;
    assert_summary(&line, "create_watch", "reason", reason.as_bytes());
    assert_eq!(line["field"], "reason");

    // The arguments as a whole.
    let head = s.audit_head().await;
    let instruction = "i".repeat(bounds::MCP_WRITE_ARGUMENTS);
    let r = call_tool(
        &s,
        &agent,
        "create_watch",
        json!({"project": "p", "source": "https://s.example.com", "to_uri": "viking://m",
               "watch_interval": 60, "instruction": instruction}),
    )
    .await;
    tool_error(&r, bounds::FIELD_TOO_LONG);
    let line = small_commits(&s, head, &instruction).await;
    assert_eq!(line["command"]["summarized"]["field"], "arguments");
    assert!(s.all_watches(&s.admin).await.is_empty());

    // At the limit: created.
    let r = call_tool(
        &s,
        &agent,
        "create_watch",
        json!({"project": "p", "source": "https://s.example.com", "to_uri": "viking://m",
               "watch_interval": 60, "reason": "r".repeat(bounds::REASON)}),
    )
    .await;
    assert_ne!(r.body["result"]["isError"], true, "{}", r.text);
    assert_eq!(s.all_watches(&s.admin).await.len(), 1);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_counts_bytes_not_characters() {
    let mut s = server().await;
    // 101 characters, 202 bytes: over a 200-byte limit although JSON Schema's maxLength, which
    // counts characters, would let it by (the document says limits are bytes).
    let name = "é".repeat(bounds::PROJECT_NAME / 2 + 1);
    assert!(name.chars().count() <= bounds::PROJECT_NAME && name.len() > bounds::PROJECT_NAME);
    let r = s
        .post(&s.admin, "/projects", json!({"id": "bytes", "name": name}))
        .await;
    assert_too_long(&r, "name", name.len(), bounds::PROJECT_NAME);
    let r = s.get(&s.admin, "/projects/bytes").await;
    assert_problem(&r, 404, "project_not_found");
    // At the limit in bytes: accepted.
    let name = "é".repeat(bounds::PROJECT_NAME / 2);
    s.post(&s.admin, "/projects", json!({"id": "bytes", "name": name}))
        .await
        .expect(201);
    s.shutdown().await;
}

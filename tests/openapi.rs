//! The OpenAPI document describes the routes that exist, and each operation documents how it
//! fails.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_exists_and_documents_its_errors() {
    let s = TestServer::start().await;
    let doc = fetch(s.client.get(s.url("/openapi.json"))).await;
    let doc = doc.expect(200).clone();
    let paths = doc["paths"].as_object().expect("paths");
    let mut operations = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("path item") {
            let Ok(m) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            operations += 1;
            let responses = op["responses"].as_object().expect("responses");
            if path != "/api/v1/healthz" {
                let documented_problem = responses.iter().any(|(status, r)| {
                    status.starts_with('4')
                        && r["content"].get("application/problem+json").is_some()
                });
                assert!(
                    documented_problem,
                    "{method} {path} documents no problem+json error response"
                );
            }
            // Call it with placeholder ids: whatever the answer, it must come from the route,
            // not from the router's "no such route" or "wrong method".
            let concrete = path
                .replace("{id}", "00000000-0000-7000-8000-000000000000")
                .trim_start_matches("/api/v1")
                .to_string();
            let streams = responses
                .get("200")
                .is_some_and(|r| r["content"].get("text/event-stream").is_some());
            if streams {
                // A stream stays open: its status and headers are the route's answer.
                let r = s
                    .call(m.clone(), &s.admin, &concrete)
                    .send()
                    .await
                    .expect("opening a stream");
                assert_eq!(r.status(), 200, "{method} {path}");
                continue;
            }
            let r = fetch(s.call(m.clone(), &s.admin, &concrete).body("{}")).await;
            assert_ne!(
                r.body["code"],
                Value::from("route_not_found"),
                "{method} {path}"
            );
            assert_ne!(r.status, 405, "{method} {path}: {}", r.text);
            assert!(r.status < 500, "{method} {path}: {}", r.text);
        }
    }
    assert!(operations >= 17, "only {operations} operations documented");
    for path in [
        "/api/v1/state/digest",
        "/api/v1/audit/export",
        "/api/v1/events",
    ] {
        assert!(
            paths[path]["get"].is_object(),
            "GET {path} is not documented"
        );
    }
    assert!(
        paths["/api/v1/audit/export"]["get"]["responses"]["200"]["content"]
            .get("application/x-ndjson")
            .is_some(),
        "the export documents its content type"
    );
    let gone = &paths["/api/v1/projects/{project}/jobs/{job}/log"]["get"]["responses"]["410"];
    assert!(
        gone["content"].get("application/problem+json").is_some()
            && gone["description"]
                .as_str()
                .is_some_and(|d| d.contains("log_pruned")),
        "a job's log documents 410 log_pruned: {gone}"
    );
}

async fn document(s: &TestServer) -> Value {
    fetch(s.client.get(s.url("/openapi.json")))
        .await
        .expect(200)
        .clone()
}

/// Every operation of the document, as (path, method, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if method.parse::<Method>().is_ok() {
                out.push((path.clone(), method.clone(), op.clone()));
            }
        }
    }
    out
}

fn operations_ids(doc: &Value) -> Vec<&str> {
    doc["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(_, item)| item.as_object().into_iter().flatten())
        .filter_map(|(_, op)| op["operationId"].as_str())
        .collect()
}

/// The codes the document lists for one status of an operation.
fn codes(op: &Value, status: u16) -> Vec<String> {
    op["responses"][status.to_string()]["content"]["application/problem+json"]["schema"]["allOf"][1]
        ["properties"]["code"]["enum"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_route_declared_for_the_contract_is_an_operation_and_each_operation_is_declared() {
    let s = TestServer::start().await;
    let doc = document(&s).await;
    let ops = operations(&doc);
    for route in reeve::api::openapi::ROUTES {
        let path = format!("/api/v1{}", route.path);
        assert!(
            doc["paths"][&path][route.method].is_object(),
            "{} {path} is declared in ROUTES but not documented",
            route.method
        );
    }
    for (path, method, _) in &ops {
        assert!(
            reeve::api::openapi::ROUTES
                .iter()
                .any(|r| r.method == method && format!("/api/v1{}", r.path) == *path),
            "{method} {path} is documented but has no entry in ROUTES, so its errors are not derived"
        );
    }
    // Nothing in the document is a bare null (an example or a value's allowed set aside): a
    // null where an object belongs makes the whole document invalid to strict readers.
    fn nulls(v: &Value, at: &str, out: &mut Vec<String>) {
        match v {
            Value::Null => out.push(at.to_string()),
            Value::Object(o) => {
                for (k, v) in o {
                    if !matches!(
                        k.as_str(),
                        "example" | "examples" | "const" | "enum" | "default"
                    ) {
                        nulls(v, &format!("{at}/{k}"), out);
                    }
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    nulls(v, &format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    nulls(&doc, "", &mut found);
    assert!(found.is_empty(), "null members: {found:?}");
    let mut ids: Vec<&str> = ops
        .iter()
        .filter_map(|(_, _, op)| op["operationId"].as_str())
        .collect();
    let all = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), all, "operation ids are unique");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_status_lists_its_codes_and_every_operation_behind_a_token_lists_401() {
    let s = TestServer::start().await;
    let doc = document(&s).await;
    for (path, method, op) in operations(&doc) {
        let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
        if secured {
            assert_eq!(codes(&op, 401), ["unauthorized"], "{method} {path}");
            assert!(
                op["responses"]["401"]["headers"]["WWW-Authenticate"].is_object(),
                "{method} {path}: a 401 carries WWW-Authenticate"
            );
            assert_eq!(codes(&op, 406), ["not_acceptable"], "{method} {path}");
        } else {
            assert_eq!(
                path, "/api/v1/healthz",
                "only the health check needs no token"
            );
            assert!(op["responses"]["401"].is_null());
        }
        for (status, response) in op["responses"].as_object().expect("responses") {
            let code: u16 = status.parse().expect("a numeric status");
            if code < 400 {
                continue;
            }
            let listed = codes(&op, code);
            assert!(!listed.is_empty(), "{method} {path} {status} lists no code");
            let schema = &response["content"]["application/problem+json"]["schema"];
            assert_eq!(
                schema["allOf"][1]["properties"]["status"]["const"],
                json!(code),
                "{method} {path} {status}"
            );
            for c in &listed {
                assert!(
                    response["description"]
                        .as_str()
                        .is_some_and(|d| d.contains(&format!("`{c}`"))),
                    "{method} {path} {status}: the description names {c}"
                );
            }
        }
    }
    // The codes the hand-written lists had lost are derived now.
    let patch = &doc["paths"]["/api/v1/watches/{id}"]["patch"];
    for (status, code) in [
        (422, "invalid_reason"),
        (422, "invalid_pipeline"),
        (422, "idempotency_key_reused"),
        (429, "rate_limited"),
        (400, "invalid_watch_id"),
        (412, "precondition_failed"),
        (415, "unsupported_media_type"),
        (413, "payload_too_large"),
    ] {
        assert!(
            codes(patch, status).contains(&code.to_string()),
            "PATCH /watches/{{id}} lists {status} {code}"
        );
    }
    // A route that names its watch by id cannot be ambiguous about which, and a listing
    // never lacks a key.
    assert!(!codes(patch, 400).contains(&"ambiguous_to_uri".to_string()));
    let list = &doc["paths"]["/api/v1/watches"]["get"];
    assert!(codes(list, 400).contains(&"ambiguous_to_uri".to_string()));
    assert!(!codes(list, 400).contains(&"watch_key_required".to_string()));
    let by_uri = &doc["paths"]["/api/v1/watches"]["delete"];
    assert!(codes(by_uri, 400).contains(&"watch_key_required".to_string()));
    // Every link leads to an operation of the document.
    let ids: Vec<&str> = operations_ids(&doc);
    let mut links = 0;
    for (path, method, op) in operations(&doc) {
        for (status, response) in op["responses"].as_object().expect("responses") {
            for (name, link) in response["links"].as_object().into_iter().flatten() {
                links += 1;
                let target = link["operationId"].as_str().unwrap_or_default();
                assert!(
                    ids.contains(&target),
                    "{method} {path} {status} links {name} to {target}, which is no operation"
                );
            }
        }
    }
    assert!(links >= 30, "{links} links");
    let show = &doc["paths"]["/api/v1/projects/{project}/builds/{build}"]["get"];
    assert!(codes(show, 400).contains(&"invalid_build_id".to_string()));
    let claim = &doc["paths"]["/api/v1/runner/claim"]["post"];
    assert!(codes(claim, 403).contains(&"runner_token_required".to_string()));
    assert!(!codes(claim, 403).contains(&"mcp_token_not_allowed".to_string()));
}

/// A query string that is wrong for every parameter of its kind.
const GARBAGE: &str = "%25not~a(value";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_route_reads_exactly_the_query_parameters_it_documents() {
    let s = TestServer::start().await;
    let doc = document(&s).await;
    let ops = operations(&doc);
    let mut names: Vec<String> = ops
        .iter()
        .flat_map(|(_, _, op)| {
            op["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|p| p["in"] == "query")
                .filter_map(|p| p["name"].as_str().map(str::to_string))
        })
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 10, "{names:?}");
    // The list parameters are not on the routes that change one watch.
    for (path, method) in [
        ("/api/v1/watches/{id}", "patch"),
        ("/api/v1/watches/{id}", "delete"),
        ("/api/v1/watches/{id}/trigger", "post"),
        ("/api/v1/watches", "patch"),
        ("/api/v1/watches", "delete"),
        ("/api/v1/watches/trigger", "post"),
    ] {
        let params = doc["paths"][path][method]["parameters"].to_string();
        for list_only in ["limit", "cursor", "active_only"] {
            assert!(
                !params.contains(&format!("\"name\":\"{list_only}\"")),
                "{method} {path} documents {list_only}"
            );
        }
    }
    s.create_project(&s.admin, "p").await;
    for (path, method, op) in ops {
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        let query: Vec<&Value> = params.iter().filter(|p| p["in"] == "query").collect();
        let concrete = path
            .trim_start_matches("/api/v1")
            .replace("{project}", "p")
            .replace("{id}", "00000000-0000-7000-8000-000000000000")
            .replace("{build}", "00000000-0000-7000-8000-000000000000")
            .replace("{job}", "00000000-0000-7000-8000-000000000000");
        let m: Method = method.parse().expect("method");
        // A parameter the route does not document is not read: garbage in it is no refusal.
        for name in names
            .iter()
            .filter(|n| !query.iter().any(|p| p["name"] == n.as_str()))
        {
            let r =
                fetch(s.call(m.clone(), &s.admin, &format!("{concrete}?{name}={GARBAGE}"))).await;
            assert_ne!(
                r.body["code"],
                json!("invalid_query"),
                "{method} {path} reads ?{name}=, which it does not document: {}",
                r.text
            );
        }
        // A documented parameter whose value has a form is read: garbage in it is refused.
        for p in &query {
            let schema = &p["schema"];
            let formed = schema["type"] == "integer"
                || schema["type"] == "boolean"
                || schema["format"] == "uuid"
                || schema["enum"].is_array()
                || schema["pattern"].is_string();
            if !formed {
                continue;
            }
            let name = p["name"].as_str().expect("name");
            let r =
                fetch(s.call(m.clone(), &s.admin, &format!("{concrete}?{name}={GARBAGE}"))).await;
            assert!(
                (400..500).contains(&r.status),
                "{method} {path} ignores ?{name}={GARBAGE}: {} {}",
                r.status,
                r.text
            );
        }
    }
}

/// The schema a `$ref` names, or the schema itself.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => &doc["components"]["schemas"][r.trim_start_matches("#/components/schemas/")],
        None => schema,
    }
}

/// Every string a body schema admits, with where it is, for a walk that checks each is bounded.
fn strings<'a>(
    doc: &'a Value,
    schema: &'a Value,
    at: String,
    seen: &mut Vec<String>,
    out: &mut Vec<(String, &'a Value)>,
) {
    if let Some(r) = schema["$ref"].as_str() {
        if seen.iter().any(|s| s == r) {
            return;
        }
        seen.push(r.to_string());
        strings(doc, resolve(doc, schema), at, seen, out);
        return;
    }
    let types = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if types.contains(&"string") {
        out.push((at.clone(), schema));
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        for (i, s) in schema[key].as_array().into_iter().flatten().enumerate() {
            strings(doc, s, format!("{at}/{key}{i}"), seen, out);
        }
    }
    if let Some(props) = schema["properties"].as_object() {
        for (name, s) in props {
            strings(doc, s, format!("{at}.{name}"), seen, out);
        }
    }
    if schema["items"].is_object() {
        strings(doc, &schema["items"], format!("{at}[]"), seen, out);
    }
    if schema["additionalProperties"].is_object() {
        strings(
            doc,
            &schema["additionalProperties"],
            format!("{at}{{value}}"),
            seen,
            out,
        );
    }
    if schema["propertyNames"].is_object() {
        out.push((format!("{at}{{name}}"), &schema["propertyNames"]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_string_a_request_carries_is_bounded_as_the_domain_bounds_it() {
    use reeve::domain::bounds;
    let s = TestServer::start().await;
    let doc = document(&s).await;
    for (path, method, op) in operations(&doc) {
        let mut found = Vec::new();
        let content = &op["requestBody"]["content"];
        if let Some(raw) = content["application/octet-stream"]["schema"].as_object() {
            found.push(("body".to_string(), Value::Object(raw.clone())));
        }
        if let Some(body) = content["application/json"]["schema"].as_object() {
            let body = Value::Object(body.clone());
            let mut out = Vec::new();
            strings(&doc, &body, "body".into(), &mut Vec::new(), &mut out);
            found.extend(out.into_iter().map(|(at, s)| (at, s.clone())));
        }
        for p in op["parameters"].as_array().into_iter().flatten() {
            if p["schema"]["type"] == "string" {
                found.push((format!("{} {}", p["in"], p["name"]), p["schema"].clone()));
            }
        }
        for (at, schema) in found {
            // A free-text filter that only selects (`principal`) matches nothing when it is not
            // one; everything else has a limit, a form or a fixed set of values.
            if at == "\"query\" \"principal\"" {
                continue;
            }
            let bounded = schema["maxLength"].is_u64()
                || schema["enum"].is_array()
                || schema["format"] == "uuid"
                || schema["format"] == "date-time"
                // Raw bytes: the body limit (413) bounds them.
                || schema["format"] == "binary"
                || schema["pattern"].as_str().is_some_and(|p| p.ends_with('$'));
            assert!(
                bounded,
                "{method} {path}: {at} is an unbounded string: {schema}"
            );
        }
    }
    let field =
        |schema: &str, prop: &str| doc["components"]["schemas"][schema]["properties"][prop].clone();
    let cases = [
        (field("CreateWatchBody", "project"), bounds::PROJECT_ID),
        (field("CreateWatchBody", "source"), bounds::URI),
        (field("CreateWatchBody", "to_uri"), bounds::URI),
        (field("CreateWatchBody", "reason"), bounds::REASON),
        (field("CreateWatchBody", "instruction"), bounds::INSTRUCTION),
        (field("UpdateWatchBody", "reason"), bounds::REASON),
        (field("CreateProjectBody", "id"), bounds::PROJECT_ID),
        (field("CreateProjectBody", "name"), bounds::PROJECT_NAME),
        (
            field("CreateTokenBody", "description"),
            bounds::TOKEN_DESCRIPTION,
        ),
        (field("JobBody", "name"), bounds::JOB_NAME),
        (field("JobBody", "run"), bounds::RUN),
        (field("FinishBody", "message"), bounds::JOB_MESSAGE),
    ];
    for (schema, limit) in cases {
        assert_eq!(schema["maxLength"], json!(limit), "{schema}");
    }
    let env = field("TriggerBody", "env");
    assert_eq!(env["maxProperties"], json!(bounds::ENV_VARS));
    assert_eq!(env["propertyNames"]["maxLength"], json!(bounds::ENV_KEY));
    assert_eq!(
        env["additionalProperties"]["maxLength"],
        json!(bounds::ENV_VALUE)
    );
    let scope = field("CreateTokenBody", "enabled_projects");
    assert_eq!(scope["maxProperties"], json!(bounds::TOKEN_PROJECTS));
    let labels = field("ClaimBody", "labels");
    assert_eq!(labels["maxItems"], json!(bounds::RUNNER_LABELS));
    assert_eq!(labels["items"]["maxLength"], json!(bounds::RUNNER_LABEL));
    // The server's own rules: --max-jobs and the interval floor.
    let pipeline = &doc["components"]["schemas"]["PipelineBody"]["oneOf"][0]["properties"]["jobs"];
    assert_eq!(pipeline["maxItems"], json!(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_edges_of_a_watch_are_the_edges_the_server_keeps() {
    let s = TestServer::start().await;
    let doc = document(&s).await;
    s.create_project(&s.admin, "p").await;
    let interval = &doc["components"]["schemas"]["CreateWatchBody"]["properties"]["watch_interval"];
    let min = interval["minimum"]
        .as_f64()
        .expect("a minimum from the floor");
    let max = interval["maximum"].as_f64().expect("a maximum");
    let create = |n: u32, minutes: f64| json!({"project": "p", "source": "https://s.example.com/r", "to_uri": format!("viking://edge/{n}"), "watch_interval": minutes});
    s.post(&s.admin, "/watches", create(1, min))
        .await
        .expect(201);
    s.post(&s.admin, "/watches", create(2, max))
        .await
        .expect(201);
    let below = f64::from_bits(min.to_bits() - 1);
    let r = s.post(&s.admin, "/watches", create(3, below)).await;
    assert_field_problem(&r, "invalid_interval", "watch_interval");
    let r = s.post(&s.admin, "/watches", create(4, max + 1.0)).await;
    assert_field_problem(&r, "invalid_interval", "watch_interval");
    // A project id: what the pattern admits is created, what it does not is refused.
    let pattern = doc["components"]["schemas"]["CreateProjectBody"]["properties"]["id"]["pattern"]
        .as_str()
        .expect("a pattern")
        .to_string();
    assert_eq!(pattern, "^[a-z0-9-]{1,63}$");
    for id in ["a", "0-0", &"z".repeat(63)] {
        s.post(&s.admin, "/projects", json!({"id": id}))
            .await
            .expect(201);
    }
    for id in ["", "A", "a_b", "a.b", &"z".repeat(64)] {
        let r = s.post(&s.admin, "/projects", json!({"id": id})).await;
        assert_field_problem(&r, "invalid_project_id", "id");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_and_pages_have_the_limits_the_server_enforces() {
    use reeve::domain::bounds;
    let s = TestServer::start().await;
    let doc = document(&s).await;
    for (path, method, op) in operations(&doc) {
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        let header = |name: &str| {
            params
                .iter()
                .find(|p| p["in"] == "header" && p["name"] == name)
                .cloned()
        };
        if let Some(key) = header("Idempotency-Key") {
            assert_eq!(
                key["schema"]["type"], "string",
                "{method} {path}: not nullable"
            );
            assert_eq!(key["schema"]["maxLength"], json!(bounds::IDEMPOTENCY_KEY));
            assert_eq!(key["schema"]["minLength"], json!(1));
        }
        if let Some(m) = header("If-Match") {
            assert_eq!(
                m["schema"]["type"], "string",
                "{method} {path}: not nullable"
            );
            assert!(m["schema"]["pattern"].is_string());
        }
        if method != "get" && !path.ends_with("/log") {
            assert!(
                header("Idempotency-Key").is_some(),
                "{method} {path} takes Idempotency-Key"
            );
        }
        for p in params.iter().filter(|p| p["in"] == "path") {
            let name = p["name"].as_str().unwrap_or_default();
            let uuid = matches!(name, "build" | "job")
                || (name == "id" && !path.starts_with("/api/v1/projects/"));
            if uuid {
                assert_eq!(p["schema"]["format"], "uuid", "{method} {path} {{{name}}}");
            }
        }
    }
    s.create_project(&s.admin, "p").await;
    for (path, max) in [
        ("/watches", reeve::api::watches::MAX_LIMIT),
        ("/projects/p/builds", reeve::api::builds::MAX_LIMIT),
        ("/audit", reeve::api::audit::MAX_LIMIT),
    ] {
        let template = if path == "/projects/p/builds" {
            "/api/v1/projects/{project}/builds".to_string()
        } else {
            format!("/api/v1{path}")
        };
        let limit = doc["paths"][&template]["get"]["parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "limit").cloned())
            .expect("a limit");
        assert_eq!(limit["schema"]["minimum"], json!(1), "{path}");
        assert_eq!(limit["schema"]["maximum"], json!(max), "{path}");
        s.get(&s.admin, &format!("{path}?limit={max}"))
            .await
            .expect(200);
        for bad in [0, max + 1] {
            let r = s.get(&s.admin, &format!("{path}?limit={bad}")).await;
            assert_problem(&r, 400, "invalid_query");
        }
    }
}

/// What the README's curl lines ask for, as (method, path under /api/v1, line).
fn readme_calls() -> Vec<(String, String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let mut calls = Vec::new();
    let mut pending = String::new();
    for line in readme.lines() {
        // A comment after a command is not part of it (and may hold an apostrophe).
        let line = line.split(" # ").next().unwrap_or(line).trim_end();
        if !pending.is_empty() {
            pending.push(' ');
            pending.push_str(line.trim());
        } else if line.trim_start().starts_with("curl ") && line.contains("$R") {
            pending = line.trim().to_string();
        } else {
            continue;
        }
        // A line ending in a backslash or an open quote goes on.
        let open = pending.matches('\'').count() % 2 == 1;
        if line.ends_with('\\') || open {
            continue;
        }
        let call = std::mem::take(&mut pending);
        let words: Vec<&str> = call.split_whitespace().collect();
        let method = words
            .iter()
            .position(|w| *w == "-X")
            .and_then(|i| words.get(i + 1))
            .map(|m| m.to_string())
            .unwrap_or_else(|| {
                if call.contains(" -d ") {
                    "POST".into()
                } else {
                    "GET".into()
                }
            });
        let Some(at) = call.find("$R/") else { continue };
        let path: String = call[at + 2..]
            .chars()
            .take_while(|c| !matches!(c, ' ' | '"' | '?' | '\''))
            .collect();
        calls.push((method.to_lowercase(), path, call));
    }
    calls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_curl_tour_uses_only_documented_operations_with_json_bodies() {
    let s = TestServer::start().await;
    let doc = document(&s).await;
    let calls = readme_calls();
    assert!(calls.len() >= 25, "the tour has its calls: {}", calls.len());
    for (method, path, line) in &calls {
        let segments: Vec<&str> = path.split('/').collect();
        let documented = doc["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .any(|(template, item)| {
                let template: Vec<&str> =
                    template.trim_start_matches("/api/v1").split('/').collect();
                template.len() == segments.len()
                    && template.iter().zip(&segments).all(|(t, s)| {
                        t == s || (t.starts_with('{') && (s.starts_with('<') || !s.is_empty()))
                    })
                    && item[method.as_str()].is_object()
            });
        assert!(
            documented,
            "the README calls {method} {path}, which the document lacks: {line}"
        );
        if line.contains(" -d ") {
            assert!(
                line.contains("${auth[@]}")
                    || line.contains("${runner[@]}")
                    || line.contains("Content-Type: application/json"),
                "the README sends a body without saying it is JSON: {line}"
            );
        }
    }
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    assert!(
        readme
            .contains("auth=(-H \"Authorization: Bearer $T\" -H 'Content-Type: application/json')"),
        "the tour's headers say its bodies are JSON"
    );
}

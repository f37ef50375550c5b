//! The console's plane: `Reeve-Plane: web` on the REST routes admits a request like `rest`
//! and records it on plane `web`, which the audit trail filters by, before and after a
//! restart (the audit index on disk keeps the plane).

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

fn op(entry: &serde_json::Value) -> String {
    entry["command"]
        .as_object()
        .and_then(|o| o.keys().next().cloned())
        .or_else(|| entry["command"].as_str().map(str::to_string))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_from_the_console_are_audited_on_the_web_plane() {
    let s = TestServer::start().await;
    let web = |m: Method, path: &str| s.call(m, &s.admin, path).header("Reeve-Plane", "web");
    s.create_project(&s.admin, "docs").await;

    // Reads with web are served and leave no commit.
    let head = s.audit_head().await;
    fetch(web(Method::GET, "/watches")).await.expect(200);
    fetch(web(Method::GET, "/audit?plane=web"))
        .await
        .expect(200);
    assert_eq!(s.audit_head().await, head, "reads leave no commit");

    // Changes through the plain routes and the build routes are recorded on plane web.
    let r =
        fetch(web(Method::POST, "/watches").json(&watch_body("docs", "viking://res/docs"))).await;
    let watch = r.expect(201)["id"].as_str().expect("watch id").to_string();
    fetch(
        web(Method::PATCH, &format!("/watches/{watch}"))
            .json(&json!({"is_active": false, "reason": "from the console"})),
    )
    .await
    .expect(200);
    fetch(
        web(Method::POST, &builds_path("docs")).json(&json!({"pipeline": pipeline(&[("a", &[])])})),
    )
    .await
    .expect(201);
    // A refusal on the web plane is recorded there too.
    let r = fetch(web(Method::POST, "/projects").json(&json!({"id": "docs"}))).await;
    assert_problem(&r, 409, "project_exists");
    // Without the header: plane rest, as before.
    s.create_project(&s.admin, "other").await;

    let all = s.audit_entries(head).await;
    let planes: Vec<(String, &str)> = all
        .iter()
        .map(|e| (op(e), e["plane"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        planes,
        [
            ("create_watch".to_string(), "web"),
            ("update_watch".to_string(), "web"),
            ("trigger_build".to_string(), "web"),
            ("create_project".to_string(), "web"),
            ("create_project".to_string(), "rest"),
        ],
        "{all:?}"
    );

    let filtered = |s: &TestServer| {
        let s = s.api.clone();
        async move {
            let page = s.audit("?plane=web&limit=1000").await;
            page["entries"]
                .as_array()
                .expect("entries")
                .iter()
                .map(|e| (op(e), e["outcome"].as_str().unwrap_or("").to_string()))
                .collect::<Vec<_>>()
        }
    };
    let expected = vec![
        ("create_watch".to_string(), "accepted".to_string()),
        ("update_watch".to_string(), "accepted".to_string()),
        ("trigger_build".to_string(), "accepted".to_string()),
        ("create_project".to_string(), "rejected".to_string()),
    ];
    assert_eq!(filtered(&s).await, expected);
    let page = s.audit("?plane=web&outcome=rejected").await;
    assert_eq!(page["entries"].as_array().map(Vec::len), Some(1), "{page}");

    // The plane is persisted: the same filter after a restart (the index on disk, and the
    // commits decoded from the log).
    let s = s.restart().await;
    assert_eq!(filtered(&s).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_plane_admits_the_tokens_the_rest_plane_admits() {
    let s = TestServer::start().await;
    s.create_project(&s.admin, "docs").await;
    let (_, mcp) = s.create_token("mcp", json!({}), true).await;
    let (_, runner) = s.create_token("runner", json!({}), true).await;
    let (_, reader) = s.create_token("api", json!({}), false).await;
    let web =
        |token: &str, m: Method, path: &str| s.call(m, token, path).header("Reeve-Plane", "web");
    let r = fetch(web(&mcp, Method::GET, "/watches")).await;
    assert_problem(&r, 403, "mcp_token_not_allowed");
    let r = fetch(web(&runner, Method::GET, "/watches")).await;
    assert_problem(&r, 403, "runner_token_not_allowed");
    fetch(web(&reader, Method::GET, "/watches"))
        .await
        .expect(200);
    let r =
        fetch(web(&reader, Method::POST, "/watches").json(&watch_body("docs", "viking://x"))).await;
    assert_problem(&r, 403, "trigger_not_allowed");
    let page = s.audit("?plane=web").await;
    let entries = page["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 1, "{page}");
    assert_eq!(entries[0]["code"], "trigger_not_allowed");
}

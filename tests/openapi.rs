//! The OpenAPI document describes the routes that exist, and each operation documents how it
//! fails.

mod common;

use common::*;
use reqwest::Method;
use serde_json::Value;

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

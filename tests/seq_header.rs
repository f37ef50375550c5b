//! `Reeve-Seq`: an answer to a request that made a commit names it, so a client can wait for
//! that commit on any node; answers that made none (reads, replays) carry no such header.

mod common;

use common::TestServer;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn a_commit_is_named_in_its_answer_and_only_then() {
    let s = TestServer::start().await;
    let created = s
        .api
        .post(&s.api.admin, "/projects", json!({"id": "web"}))
        .await;
    created.expect(201);
    let head = s.api.audit_head().await;
    assert_eq!(created.header("reeve-seq"), Some(head.to_string().as_str()));

    // A refusal is a commit too, and is named.
    let again = s
        .api
        .post(&s.api.admin, "/projects", json!({"id": "web"}))
        .await;
    again.expect(409);
    assert_eq!(
        again.header("reeve-seq"),
        Some((head + 1).to_string().as_str())
    );

    // A read makes no commit; neither does a retry answered from the first attempt.
    let read = s.api.get(&s.api.admin, "/projects/web").await;
    read.expect(200);
    assert_eq!(read.header("reeve-seq"), None);
    let send = || {
        common::fetch(
            s.api
                .call(Method::POST, &s.api.admin, "/projects")
                .header("Idempotency-Key", "k-1")
                .json(&json!({"id": "ops"})),
        )
    };
    let first = send().await;
    first.expect(201);
    let seq = first.header("reeve-seq").map(str::to_string);
    assert!(seq.is_some());
    let retry = send().await;
    retry.expect(201);
    assert_eq!(retry.header("reeve-seq"), None);
    assert_eq!(
        s.api.audit_head().await.to_string(),
        seq.unwrap_or_default()
    );
}

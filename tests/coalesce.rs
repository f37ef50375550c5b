//! A flood of rate-limited calls must not grow the log one commit per call (DESIGN rule 4):
//! the first refusal in a window is logged, the rest are counted and logged as one
//! `coalesced` commit when the window closes (here: at shutdown).

mod common;

use common::*;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_429s_are_logged_once_then_summarised() {
    let s = TestServer::start_with(|c| c.trigger_per_min = 3).await;
    s.create_project(&s.admin, "p").await;
    let (id, api) = s.create_token("api", json!({}), true).await;
    let principal = format!("token:{id}");
    let head = s.audit_head().await;

    let mut statuses = Vec::new();
    for i in 0..10 {
        let r = s
            .create_watch(&api, watch_body("p", &format!("viking://r/{i}")))
            .await;
        if r.status == 429 {
            assert_problem(&r, 429, "rate_limited");
            assert!(r.header("retry-after").is_some());
        }
        statuses.push(r.status);
    }
    // Each token has its own bucket of 3 a minute.
    assert_eq!(statuses[..3], [201, 201, 201], "{statuses:?}");
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");

    let mine = |entries: Vec<Value>| -> Vec<Value> {
        entries
            .into_iter()
            .filter(|e| e["principal"] == json!(principal))
            .collect()
    };
    let live = mine(s.audit_entries(head).await);
    assert_eq!(live.len(), 4, "three accepted, one 429 logged: {live:#?}");
    assert_eq!(live[3]["code"], "rate_limited");

    // Shutdown closes the window and logs the 6 unlogged repeats as one commit.
    let s = s.restart().await;
    let after = mine(s.audit_entries(head).await);
    assert_eq!(after.len(), 5, "{after:#?}");
    let summary = &after[4];
    assert_eq!(summary["outcome"], "rejected");
    assert_eq!(summary["code"], "rate_limited");
    assert_eq!(summary["status"], 429);
    assert_eq!(summary["command"]["coalesced"]["count"], 6, "{summary}");
    assert_eq!(s.all_watches(&s.admin).await.len(), 3);
}

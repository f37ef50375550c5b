//! The audit trail over history that has left memory: after a restart from a snapshot, every
//! filter and every page of `GET /api/v1/audit` answers exactly what a fold of the whole log
//! says, read from the index on disk.

mod common;

use std::collections::HashSet;

use common::*;
use reeve::domain::{AuditEntry, Plane, Principal, State};
use reeve::log::{Store, SyncMode};
use serde_json::{Value, json};

/// Every audit entry, by folding a copy of the data dir from seq 1.
fn reference(dir: &std::path::Path) -> Vec<AuditEntry> {
    let (_tmp, copy) = copy_of(dir);
    let store = Store::open(&copy, SyncMode::Durable).unwrap();
    let mut state = State::default();
    store
        .replay()
        .map(|c| state.apply(&c.expect("the log verifies")))
        .collect()
}

/// Which entries of the reference a filter keeps.
type Keep = Box<dyn Fn(&AuditEntry) -> bool>;

/// The fields of a page entry that the index decides.
fn view(e: &Value) -> Value {
    json!([
        e["seq"],
        e["plane"],
        e["principal"],
        e["outcome"],
        e["project"],
        e["target"]
    ])
}

fn expected(e: &AuditEntry) -> Value {
    json!([
        e.seq,
        e.plane.as_str(),
        e.principal.to_string(),
        if e.accepted { "accepted" } else { "rejected" },
        e.project,
        e.target
    ])
}

/// Follows `next_since` through every page of `query` with pages of `limit`.
async fn all_pages(s: &TestServer, query: &str, limit: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut since = 0u64;
    loop {
        let page = s
            .audit(&format!("?limit={limit}&since_seq={since}{query}"))
            .await;
        let entries = page["entries"].as_array().unwrap();
        assert!(entries.len() <= limit, "{page}");
        out.extend(entries.iter().map(view));
        match page["next_since"].as_u64() {
            Some(next) => {
                assert_eq!(entries.len(), limit, "a full page before more: {page}");
                since = next;
            }
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_filters_and_pages_answer_from_disk_as_a_full_fold_does() {
    let s = TestServer::start_with(|c| c.snapshot_commits = 10).await;
    s.create_project(&s.admin, "p").await;
    s.create_project(&s.admin, "q").await;
    let (api_id, api) = s.create_token("api", json!({"p": null}), true).await;
    for i in 0..16 {
        let project = if i % 3 == 0 { "q" } else { "p" };
        let w = s
            .watch(&s.admin, project, &format!("https://h.example.com/{i}"))
            .await;
        let id = str_field(&w, "id");
        if i % 2 == 0 {
            s.patch(
                &s.admin,
                &format!("/watches/{id}"),
                json!({"is_active": false}),
            )
            .await
            .expect(200);
        }
        if i % 4 == 1 {
            s.delete(&s.admin, &format!("/watches/{id}"))
                .await
                .expect(200);
        }
    }
    // Refusals: a scoped token outside its project, a taken to_uri, a bad body.
    let r = s
        .create_watch(&api, watch_body("q", "https://h.example.com/x"))
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = s
        .create_watch(&api, watch_body("p", "https://h.example.com/1"))
        .await;
    assert!(r.status == 201 || r.status == 409, "{}", r.text);
    // Enough refusals that the trail spans several of the index's 64-commit blocks.
    for _ in 0..200 {
        let r = s
            .send_raw(reqwest::Method::POST, &api, "/watches", "{")
            .await;
        assert_eq!(r.status, 400, "{}", r.text);
    }
    s.trigger_build(
        &s.admin,
        "p",
        json!({"jobs": [{"name": "a", "run": "true"}]}),
    )
    .await;

    let mut s = s;
    s.shutdown().await;
    let all = reference(&s.data_dir());
    assert!(
        all.len() > 3 * 64,
        "a history over several index blocks: {}",
        all.len()
    );
    let s = s.restart().await;

    let admin_id = s.admin_token_id().await;
    let filters: Vec<(String, Keep)> = vec![
        (String::new(), Box::new(|_| true)),
        (
            "&project=p".into(),
            Box::new(|e| e.project.as_deref() == Some("p")),
        ),
        (
            "&project=q".into(),
            Box::new(|e| e.project.as_deref() == Some("q")),
        ),
        ("&project=none".into(), Box::new(|_| false)),
        (
            "&outcome=rejected".into(),
            Box::new(|e: &AuditEntry| !e.accepted),
        ),
        ("&plane=rest".into(), Box::new(|e| e.plane == Plane::Rest)),
        (
            "&plane=system".into(),
            Box::new(|e| e.plane == Plane::System),
        ),
        (
            "&principal=system".into(),
            Box::new(|e| e.principal == Principal::System),
        ),
        (
            format!("&principal={api_id}"),
            Box::new(move |e: &AuditEntry| e.principal.to_string() == format!("token:{api_id}")),
        ),
        (
            format!("&principal=token:{admin_id}&project=p&outcome=accepted"),
            Box::new(move |e: &AuditEntry| {
                e.principal.to_string() == format!("token:{admin_id}")
                    && e.project.as_deref() == Some("p")
                    && e.accepted
            }),
        ),
        (
            "&plane=rest&outcome=rejected&project=p".into(),
            Box::new(|e| {
                e.plane == Plane::Rest && !e.accepted && e.project.as_deref() == Some("p")
            }),
        ),
        ("&principal=token:not-a-token".into(), Box::new(|_| false)),
    ];
    let mut seen_nonempty = HashSet::new();
    for (query, keep) in &filters {
        let want: Vec<Value> = all.iter().filter(|e| keep(e)).map(expected).collect();
        for limit in [1, 7, 1000] {
            let got = all_pages(&s, query, limit).await;
            assert_eq!(got, want, "filter {query:?}, pages of {limit}");
        }
        if !want.is_empty() {
            seen_nonempty.insert(query.clone());
        }
    }
    assert!(
        seen_nonempty.len() >= 9,
        "most filters match something, so the comparison is not vacuous: {seen_nonempty:?}"
    );

    // New commits after the restart join the same trail, in order, under the same filters.
    let before = s.audit_head().await;
    s.watch(&s.admin, "p", "https://h.example.com/after").await;
    let page = s.audit(&format!("?project=p&since_seq={before}")).await;
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{page}");
    assert_eq!(entries[0]["seq"], before + 1);
    assert_eq!(entries[0]["project"], "p");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_audit_index_is_rebuilt_from_the_log() {
    let s = TestServer::start().await;
    s.create_project(&s.admin, "p").await;
    for i in 0..100 {
        s.watch(&s.admin, "p", &format!("https://d.example.com/{i}"))
            .await;
    }
    let before = s.audit_entries(0).await;
    let mut s = s;
    s.shutdown().await;

    // Garble the newest block of the index, as a bad sector would.
    alter_store(&s.data_dir(), "audit", |t| {
        use redb::ReadableTable;
        let key = t
            .range::<&[u8]>(&b"s"[..]..&b"t"[..])
            .unwrap()
            .next_back()
            .unwrap()
            .unwrap()
            .0
            .value()
            .to_vec();
        t.insert(key.as_slice(), &[1u8, 0xff, 0xff, 0xff][..])
            .unwrap();
    });
    let s = s.restart().await;
    assert_eq!(
        s.audit_entries(0).await,
        before,
        "the index is rebuilt from the log, entry for entry"
    );
    let page = s.audit("?project=p&outcome=accepted&limit=1000").await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 101, "{page}");
}

//! The audit log (one entry per mutation, none per read) and Idempotency-Key replay.

mod common;

use std::collections::HashSet;

use common::*;
use reqwest::Method;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};

/// The single entry appended since `head`; panics if there are zero or several.
#[track_caller]
fn only(entries: Vec<Value>, what: &str) -> Value {
    assert_eq!(
        entries.len(),
        1,
        "{what} must append exactly one audit entry, got {entries:#?}"
    );
    entries.into_iter().next().unwrap()
}

async fn one_new_entry(s: &TestServer, head: u64, what: &str) -> Value {
    only(s.audit_entries(head).await, what)
}

fn seq(e: &Value) -> u64 {
    e["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("seq is not an integer: {e}"))
}

#[track_caller]
fn assert_entry_shape(e: &Value) {
    ts(&e["at"]);
    assert_eq!(e["plane"], "rest", "{e}");
    let hash = e["hash"].as_str().unwrap_or_else(|| panic!("hash: {e}"));
    assert!(
        hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit()),
        "hash {hash:?} is not 64 hex chars"
    );
    let cmd = e["command"]
        .as_object()
        .unwrap_or_else(|| panic!("command is not an object: {e}"));
    assert_eq!(cmd.len(), 1, "command is {{op: args}}: {e}");
    assert!(e["events"].is_array(), "events: {e}");
    assert!(e.get("target").is_some(), "target: {e}");
}

#[track_caller]
fn assert_accepted(e: &Value, principal: &str) {
    assert_entry_shape(e);
    assert_eq!(e["principal"], json!(principal), "{e}");
    assert_eq!(e["outcome"], "accepted", "{e}");
    assert_eq!(e["status"], Value::Null, "{e}");
    assert_eq!(e["code"], Value::Null, "{e}");
    assert_eq!(e["reason"], Value::Null, "{e}");
    assert!(
        !e["events"].as_array().unwrap().is_empty(),
        "an accepted mutation records its events: {e}"
    );
}

#[track_caller]
fn assert_rejected(e: &Value, principal: &str, status: u16, code: &str) {
    assert_entry_shape(e);
    assert_eq!(e["principal"], json!(principal), "{e}");
    assert_eq!(e["outcome"], "rejected", "{e}");
    assert_eq!(e["status"], json!(status), "{e}");
    assert_eq!(e["code"], json!(code), "{e}");
    assert!(e["reason"].is_string(), "a rejection says why: {e}");
    assert_eq!(
        e["events"],
        json!([]),
        "a rejected mutation must not emit events: {e}"
    );
}

fn command_name(e: &Value) -> String {
    e["command"]
        .as_object()
        .and_then(|m| m.keys().next().cloned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_mutation_appends_exactly_one_entry() {
    let s = TestServer::start().await;
    let admin = format!("token:{}", s.admin_token_id().await);

    let head = s.audit_head().await;
    s.create_project(&s.admin, "p").await;
    let e = one_new_entry(&s, head, "create project").await;
    assert_accepted(&e, &admin);

    let head = seq(&e);
    let w = s.watch(&s.admin, "p", "https://d.example.com/a").await;
    let id = str_field(&w, "id");
    let e = one_new_entry(&s, head, "create watch").await;
    assert_accepted(&e, &admin);
    assert_eq!(command_name(&e), "create_watch");

    let head = seq(&e);
    let r = s
        .create_watch(&s.admin, watch_body("p", "https://d.example.com/a"))
        .await;
    assert_problem(&r, 409, "to_uri_taken");
    let e = one_new_entry(&s, head, "a 409").await;
    assert_rejected(&e, &admin, 409, "to_uri_taken");
    assert_eq!(command_name(&e), "create_watch");

    let head = seq(&e);
    let mut body = watch_body("p", "https://d.example.com/b");
    body["watch_interval"] = json!(0);
    let r = s.create_watch(&s.admin, body).await;
    assert_problem(&r, 422, "invalid_interval");
    let e = one_new_entry(&s, head, "a 422").await;
    assert_rejected(&e, &admin, 422, "invalid_interval");

    let head = seq(&e);
    let (ro_id, ro) = s.create_token("api", json!({}), false).await;
    let e = one_new_entry(&s, head, "create token").await;
    assert_accepted(&e, &admin);
    assert!(
        !e.to_string().contains(&ro),
        "the audit log must not store token secrets: {e}"
    );

    let head = seq(&e);
    let r = s
        .patch(&ro, &format!("/watches/{id}"), json!({"reason": "x"}))
        .await;
    assert_problem(&r, 403, "trigger_not_allowed");
    let e = one_new_entry(&s, head, "a 403").await;
    assert_rejected(&e, &format!("token:{ro_id}"), 403, "trigger_not_allowed");

    let head = seq(&e);
    let r = s
        .patch(
            &s.admin,
            &format!("/watches/{id}"),
            json!({"is_active": false}),
        )
        .await;
    r.expect(200);
    let e = one_new_entry(&s, head, "patch").await;
    assert_accepted(&e, &admin);

    let head = seq(&e);
    let r = s
        .post(&s.admin, &format!("/watches/{id}/trigger"), json!({}))
        .await;
    r.expect(202);
    let e = one_new_entry(&s, head, "trigger").await;
    assert_accepted(&e, &admin);

    let head = seq(&e);
    let missing = uuid::Uuid::now_v7();
    let r = s.delete(&s.admin, &format!("/watches/{missing}")).await;
    assert_problem(&r, 404, "watch_not_found");
    let e = one_new_entry(&s, head, "a 404").await;
    assert_rejected(&e, &admin, 404, "watch_not_found");

    let head = seq(&e);
    s.delete(&s.admin, &format!("/watches/{id}"))
        .await
        .expect(200);
    let e = one_new_entry(&s, head, "delete").await;
    assert_accepted(&e, &admin);

    let head = seq(&e);
    let r = s.delete(&s.admin, &format!("/tokens/{ro_id}")).await;
    r.expect(200);
    let e = one_new_entry(&s, head, "revoke").await;
    assert_accepted(&e, &admin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_mutations_are_audited_as_rejections() {
    let s = TestServer::start().await;
    s.create_project(&s.admin, "p").await;
    let admin = format!("token:{}", s.admin_token_id().await);

    let head = s.audit_head().await;
    let mut body = watch_body("p", "https://d.example.com/u");
    body["colour"] = json!("blue");
    let r = s.create_watch(&s.admin, body).await;
    assert_problem(&r, 422, "invalid_body");
    let e = one_new_entry(&s, head, "a 422 invalid_body").await;
    assert_rejected(&e, &admin, 422, "invalid_body");

    let head = seq(&e);
    let r = s
        .send_raw(Method::POST, &s.admin, "/watches", "{broken")
        .await;
    assert_problem(&r, 400, "invalid_json");
    let e = one_new_entry(&s, head, "a 400 invalid_json").await;
    assert_rejected(&e, &admin, 400, "invalid_json");

    let head = seq(&e);
    let r = s.patch(&s.admin, "/watches", json!({"reason": "x"})).await;
    assert_problem(&r, 400, "watch_key_required");
    let e = one_new_entry(&s, head, "a 400 watch_key_required").await;
    assert_rejected(&e, &admin, 400, "watch_key_required");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_unauthenticated_requests_append_nothing() {
    let s = TestServer::start().await;
    s.create_project(&s.admin, "p").await;
    let w = s.watch(&s.admin, "p", "https://d.example.com/r").await;
    let id = str_field(&w, "id");
    let before = s.audit_entries(0).await;
    let head = before.last().map(seq).unwrap_or(0);

    for path in [
        "/watches".to_string(),
        format!("/watches/{id}"),
        format!("/watches{}", qs(&[("to_uri", "https://d.example.com/r")])),
        "/watches/not-a-uuid".to_string(),
        format!("/watches/{}", uuid::Uuid::now_v7()),
        "/projects".to_string(),
        "/projects/p".to_string(),
        "/tokens".to_string(),
        "/audit".to_string(),
        "/healthz".to_string(),
        "/openapi.json".to_string(),
        "/no-such-route".to_string(),
    ] {
        s.get(&s.admin, &path).await;
    }

    // 401s are not commits: nobody is there to attribute them to.
    assert_unauthorized(&s.post("wrong", "/projects", json!({"id": "x"})).await);
    assert_unauthorized(
        &s.create_watch("wrong", watch_body("p", "https://d.example.com/z"))
            .await,
    );
    assert_unauthorized(&s.delete("wrong", &format!("/watches/{id}")).await);
    assert_unauthorized(
        &fetch(
            s.client
                .patch(s.url(&format!("/watches/{id}")))
                .json(&json!({"reason": "x"})),
        )
        .await,
    );

    let after = s.audit_entries(0).await;
    assert_eq!(after, before, "reads or 401s appended audit entries");
    assert_eq!(after.last().map(seq).unwrap_or(0), head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_filters_by_project_principal_outcome_and_plane() {
    let s = TestServer::start().await;
    s.create_project(&s.admin, "p").await;
    s.create_project(&s.admin, "q").await;
    let (ro_id, ro) = s.create_token("api", json!({}), false).await;

    let head = s.audit_head().await;
    let wp = s.watch(&s.admin, "p", "https://d.example.com/p").await;
    let p_create = seq(&one_new_entry(&s, head, "create in p").await);
    s.watch(&s.admin, "q", "https://d.example.com/q").await;
    let q_create = seq(&one_new_entry(&s, p_create, "create in q").await);
    let r = s
        .create_watch(&s.admin, watch_body("p", "https://d.example.com/p"))
        .await;
    assert_problem(&r, 409, "to_uri_taken");
    let p_reject = seq(&one_new_entry(&s, q_create, "409 in p").await);
    let r = s
        .patch(
            &ro,
            &format!("/watches/{}", str_field(&wp, "id")),
            json!({"reason": "x"}),
        )
        .await;
    assert_problem(&r, 403, "trigger_not_allowed");
    let ro_reject = seq(&one_new_entry(&s, p_reject, "403 by ro").await);

    let seqs = |page: &Value| -> Vec<u64> {
        page["entries"]
            .as_array()
            .unwrap_or_else(|| panic!("entries in {page}"))
            .iter()
            .map(seq)
            .collect()
    };

    let by_p = seqs(&s.audit("?project=p&limit=500").await);
    assert!(
        by_p.contains(&p_create) && by_p.contains(&p_reject),
        "{by_p:?}"
    );
    assert!(
        !by_p.contains(&q_create),
        "project=p returned q's entry: {by_p:?}"
    );
    let by_q = seqs(&s.audit("?project=q&limit=500").await);
    assert!(by_q.contains(&q_create), "{by_q:?}");
    assert!(
        !by_q.contains(&p_create) && !by_q.contains(&p_reject),
        "{by_q:?}"
    );

    let by_ro = s.audit(&format!("?principal={ro_id}&limit=500")).await;
    assert_eq!(seqs(&by_ro), vec![ro_reject], "principal filter: {by_ro}");

    let rejected = s.audit("?outcome=rejected&limit=500").await;
    let rs = seqs(&rejected);
    assert!(rs.contains(&p_reject) && rs.contains(&ro_reject), "{rs:?}");
    assert!(!rs.contains(&p_create) && !rs.contains(&q_create), "{rs:?}");
    assert!(
        rejected["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["outcome"] == "rejected")
    );

    let accepted = s.audit("?outcome=accepted&limit=500").await;
    let as_ = seqs(&accepted);
    assert!(
        as_.contains(&p_create) && as_.contains(&q_create),
        "{as_:?}"
    );
    assert!(!as_.contains(&p_reject), "{as_:?}");
    assert!(
        accepted["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["outcome"] == "accepted")
    );

    let all = s.audit_entries(0).await;
    let rest = s.audit("?plane=rest&limit=500").await;
    let rest_entries = rest["entries"].as_array().unwrap();
    assert!(rest_entries.iter().all(|e| e["plane"] == "rest"));
    let rest_in_all: Vec<&Value> = all.iter().filter(|e| e["plane"] == "rest").collect();
    assert_eq!(rest_entries.iter().collect::<Vec<_>>(), rest_in_all);

    let combined = s
        .audit(&format!("?principal={ro_id}&outcome=accepted&limit=500"))
        .await;
    assert_eq!(
        seqs(&combined),
        Vec::<u64>::new(),
        "filters combine with AND"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_pages_are_gapless_and_hashed() {
    let s = TestServer::start().await;
    s.create_project(&s.admin, "p").await;
    for i in 0..6 {
        s.watch(&s.admin, "p", &format!("https://d.example.com/{i}"))
            .await;
    }
    let r = s
        .create_watch(&s.admin, watch_body("p", "https://d.example.com/0"))
        .await;
    assert_problem(&r, 409, "to_uri_taken");

    let all = s.audit_entries(0).await;
    assert!(
        all.len() >= 8,
        "expected at least 8 entries, got {}",
        all.len()
    );
    for pair in all.windows(2) {
        assert_eq!(
            seq(&pair[1]),
            seq(&pair[0]) + 1,
            "seq has a gap or is out of order"
        );
    }
    let hashes: HashSet<&str> = all.iter().map(|e| e["hash"].as_str().unwrap()).collect();
    assert_eq!(
        hashes.len(),
        all.len(),
        "hashes must differ between entries"
    );
    for e in all.iter().filter(|e| e["plane"] == "rest") {
        assert_entry_shape(e);
    }

    // Paging by 2 from the start reassembles the same list.
    let mut paged = Vec::new();
    let mut since = 0;
    let mut pages = 0;
    loop {
        let page = s.audit(&format!("?since_seq={since}&limit=2")).await;
        let entries = page["entries"].as_array().expect("entries").clone();
        assert!(
            entries.len() <= 2,
            "limit ignored: {} entries",
            entries.len()
        );
        assert!(
            entries.iter().all(|e| seq(e) > since),
            "since_seq is exclusive"
        );
        pages += 1;
        assert!(pages < 100, "audit paging does not end");
        match page["next_since"].as_u64() {
            Some(n) => {
                assert_eq!(
                    Some(n),
                    entries.last().map(seq),
                    "next_since is the last seq returned"
                );
                paged.extend(entries);
                since = n;
            }
            None => {
                paged.extend(entries);
                break;
            }
        }
    }
    assert_eq!(paged, all);

    // since_seq from the middle returns exactly the tail.
    let mid = seq(&all[all.len() / 2]);
    let tail = s.audit_entries(mid).await;
    let expected: Vec<Value> = all.iter().filter(|e| seq(e) > mid).cloned().collect();
    assert_eq!(tail, expected);

    let r = s.get(&s.admin, "/audit?limit=abc").await;
    assert_problem(&r, 400, "invalid_query");
}

async fn post_with_key(s: &TestServer, token: &str, key: &str, body: &Value) -> Resp {
    fetch(
        s.call(Method::POST, token, "/watches")
            .header("idempotency-key", key)
            .json(body),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_create_is_replayed_not_repeated() {
    let s = TestServer::start().await;
    s.create_project(&s.admin, "p").await;
    let body = watch_body("p", "https://d.example.com/idem");

    let first = post_with_key(&s, &s.admin, "key-1", &body).await;
    first.expect(201);
    let head = s.audit_head().await;

    let again = post_with_key(&s, &s.admin, "key-1", &body).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body, first.body, "replay returns the original body");
    assert_eq!(s.audit_head().await, head, "a replay is not a new commit");
    assert_eq!(s.all_watches(&s.admin).await, vec![first.body.clone()]);

    let mut other = body.clone();
    other["to_uri"] = json!("https://d.example.com/other");
    let r = post_with_key(&s, &s.admin, "key-1", &other).await;
    assert_problem(&r, 422, "idempotency_key_reused");
    assert_eq!(s.all_watches(&s.admin).await, vec![first.body.clone()]);

    // The original request still replays after the conflicting attempt.
    let third = post_with_key(&s, &s.admin, "key-1", &body).await;
    assert_eq!((third.status, &third.body), (201, &first.body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_patch_delete_and_trigger_replay() {
    let s = TestServer::start().await;
    s.create_project(&s.admin, "p").await;
    let w = s.watch(&s.admin, "p", "https://d.example.com/pd").await;
    let id = str_field(&w, "id");
    let path = format!("/watches/{id}");

    let patch = |key: &'static str| {
        fetch(
            s.call(Method::PATCH, &s.admin, &path)
                .header("idempotency-key", key)
                .json(&json!({"watch_interval": 120})),
        )
    };
    let p1 = patch("patch-1").await;
    assert_eq!(p1.expect(200)["version"], 2);
    let head = s.audit_head().await;
    let p2 = patch("patch-1").await;
    assert_eq!((p2.status, &p2.body), (200, &p1.body));
    assert_eq!(
        s.watch_now(&id).await["version"],
        2,
        "replay must not re-apply"
    );
    assert_eq!(s.audit_head().await, head);

    let trigger = || {
        fetch(
            s.call(Method::POST, &s.admin, &format!("{path}/trigger"))
                .header("idempotency-key", "trig-1"),
        )
    };
    let t1 = trigger().await;
    t1.expect(202);
    let head = s.audit_head().await;
    let t2 = trigger().await;
    assert_eq!((t2.status, &t2.body), (202, &t1.body));
    assert_eq!(s.audit_head().await, head);

    let delete = || {
        fetch(
            s.call(Method::DELETE, &s.admin, &path)
                .header("idempotency-key", "del-1"),
        )
    };
    let d1 = delete().await;
    d1.expect(200);
    let head = s.audit_head().await;
    let d2 = delete().await;
    assert_eq!(
        (d2.status, &d2.body),
        (200, &d1.body),
        "a replayed DELETE answers as the first did, not 404"
    );
    assert_eq!(s.audit_head().await, head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_rejections_are_replayed_too() {
    let s = TestServer::start().await;
    s.create_project(&s.admin, "p").await;
    let body = watch_body("p", "https://d.example.com/dup");
    let w = s.create_watch(&s.admin, body.clone()).await;
    let id = w.id();

    let first = post_with_key(&s, &s.admin, "dup-1", &body).await;
    assert_problem(&first, 409, "to_uri_taken");
    s.delete(&s.admin, &format!("/watches/{id}"))
        .await
        .expect(200);
    let head = s.audit_head().await;

    // The conflict is gone, but the key already has an answer.
    let again = post_with_key(&s, &s.admin, "dup-1", &body).await;
    assert_eq!(
        again.status, 409,
        "replay, not re-execution: {}",
        again.text
    );
    assert_eq!(again.body, first.body);
    assert_eq!(s.audit_head().await, head);
    assert!(s.all_watches(&s.admin).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_are_scoped_to_the_token() {
    let s = TestServer::start().await;
    s.create_project(&s.admin, "p").await;
    let (_, b) = s.create_token("api", json!({}), true).await;
    let (_, c) = s.create_token("api", json!({}), true).await;
    let body_u = watch_body("p", "https://d.example.com/u");
    let body_v = watch_body("p", "https://d.example.com/v");

    let a1 = post_with_key(&s, &s.admin, "shared-key", &body_u).await;
    a1.expect(201);

    // A different request under the same key from another token is not a reuse.
    let b1 = post_with_key(&s, &b, "shared-key", &body_v).await;
    assert_eq!(b1.expect(201)["to_uri"], "https://d.example.com/v");

    // The same request from a third token runs for real instead of replaying a1.
    let c1 = post_with_key(&s, &c, "shared-key", &body_u).await;
    assert_problem(&c1, 409, "to_uri_taken");

    assert_eq!(s.all_watches(&s.admin).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_idempotency_keys_are_refused() {
    let s = TestServer::start().await;
    s.create_project(&s.admin, "p").await;
    let body = watch_body("p", "https://d.example.com/k");

    let long = "k".repeat(256);
    let bad: Vec<HeaderValue> = vec![
        HeaderValue::from_static(""),
        HeaderValue::from_str(&long).unwrap(),
        HeaderValue::from_static("has space"),
        HeaderValue::from_bytes("ключ".as_bytes()).unwrap(),
    ];
    for key in bad {
        let r = fetch(
            s.call(Method::POST, &s.admin, "/watches")
                .header("idempotency-key", key.clone())
                .json(&body),
        )
        .await;
        assert_problem(&r, 400, "invalid_idempotency_key");
        assert!(
            s.all_watches(&s.admin).await.is_empty(),
            "key {key:?} was refused yet the watch was created"
        );
    }

    let longest = "k".repeat(255);
    let r = post_with_key(&s, &s.admin, &longest, &body).await;
    r.expect(201);
}

//! The MCP REST namespace: the five build and job verbs under /api/v1/mcp, for MCP
//! tokens only, scoped, rate limited and audited on the "mcp" plane.
//!
//! MCP tokens have a trigger bucket of 5 per minute, and a refused call may spend it
//! too, so every test keeps each token at five namespace calls or fewer unless the
//! limit itself is under test.

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{Map, Value, json};

async fn server_pq() -> (TestServer, String) {
    let s = TestServer::start().await;
    s.create_project(&s.admin, "p").await;
    s.create_project(&s.admin, "q").await;
    let runner = s.runner_token().await;
    (s, runner)
}

/// A fresh MCP token: `(id, secret)`.
async fn mcp_token(s: &TestServer, projects: Value, allow_trigger: bool) -> (String, String) {
    s.create_token("mcp", projects, allow_trigger).await
}

fn mcp(path: &str) -> String {
    format!("/mcp{path}")
}

fn build_verb(project: &str, build: &str, verb: &str) -> String {
    format!("{}/{verb}", build_path(project, build))
}

fn job_verb(project: &str, job: &str, verb: &str) -> String {
    format!("{}/{verb}", job_path(project, job))
}

/// The five verbs as `(method, path under /api/v1)` for one build and one job.
fn five_verbs(project: &str, build: &str, job: &str) -> Vec<(Method, String)> {
    vec![
        (Method::POST, build_verb(project, build, "restart")),
        (Method::DELETE, build_verb(project, build, "abort")),
        (Method::POST, job_verb(project, job, "restart")),
        (Method::POST, job_verb(project, job, "rerun")),
        (Method::DELETE, job_verb(project, job, "abort")),
    ]
}

async fn send(s: &TestServer, method: Method, token: &str, path: &str) -> Resp {
    let rb = s.call(method.clone(), token, path);
    let rb = if method == Method::POST {
        rb.json(&json!({}))
    } else {
        rb
    };
    fetch(rb).await
}

/// The structure of a JSON value with every scalar replaced by its type, so two
/// answers about different builds can be compared field for field.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), shape(v)))
                .collect::<Map<_, _>>(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(shape).collect()),
        Value::String(_) => json!("string"),
        Value::Number(_) => json!("number"),
        Value::Bool(_) => json!("bool"),
        Value::Null => json!("null"),
    }
}

/// Two builds of the same pipeline, every job finished.
async fn two_finished_builds(s: &TestServer, runner: &str, project: &str) -> (Value, Value) {
    let pl = pipeline(&[("j1", &[]), ("j2", &[]), ("j3", &["j1"])]);
    let a = s.trigger_build(&s.admin, project, pl.clone()).await;
    let b = s.trigger_build(&s.admin, project, pl).await;
    s.drain(runner, |_| "finished").await;
    let a = s.build_now(project, &str_field(&a, "id")).await;
    let b = s.build_now(project, &str_field(&b, "id")).await;
    (a, b)
}

/// One finished build; its job `j1` is terminal, so an abort of it is a harmless no-op.
async fn finished_build(s: &TestServer, runner: &str, project: &str) -> Value {
    let b = s
        .trigger_build(&s.admin, project, pipeline(&[("j1", &[])]))
        .await;
    s.drain(runner, |_| "finished").await;
    s.build_now(project, &str_field(&b, "id")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_verb_answers_like_the_plain_route_and_is_audited_as_mcp() {
    let (s, runner) = server_pq().await;
    let (tid, tok) = mcp_token(&s, json!({"p": null}), true).await;
    let (a, b) = two_finished_builds(&s, &runner, "p").await;
    let (aid, bid) = (str_field(&a, "id"), str_field(&b, "id"));
    let head = s.audit_head().await;

    // Job restart.
    let m = s
        .post(
            &tok,
            &mcp(&job_verb("p", &job_id(&a, "j1"), "restart")),
            json!({}),
        )
        .await;
    let pl = s
        .post(
            &s.admin,
            &job_verb("p", &job_id(&b, "j1"), "restart"),
            json!({}),
        )
        .await;
    let mj = m.expect(201).clone();
    assert_eq!(shape(&mj), shape(pl.expect(201)));
    let mut names: Vec<String> = mj["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| str_field(c, "name"))
        .collect();
    names.sort();
    assert_eq!(names, vec!["j1.1", "j3.1"]);
    let a_j1_1 = mj["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "j1.1")
        .map(|c| str_field(c, "to"))
        .unwrap();
    let a_now = s.build_now("p", &aid).await;
    assert_eq!(job_named(&a_now, "j1.1")["id"], json!(a_j1_1));

    // Job rerun.
    let m = s
        .post(
            &tok,
            &mcp(&job_verb("p", &job_id(&a, "j2"), "rerun")),
            json!({}),
        )
        .await;
    let pl = s
        .post(
            &s.admin,
            &job_verb("p", &job_id(&b, "j2"), "rerun"),
            json!({}),
        )
        .await;
    let mj = m.expect(201).clone();
    assert_eq!(shape(&mj), shape(pl.expect(201)));
    assert_eq!(mj["job"]["name"], "j2.1");
    assert_eq!(&mj["job"], job_named(&s.build_now("p", &aid).await, "j2.1"));

    // Job abort of the queued clone.
    let m = s.delete(&tok, &mcp(&job_verb("p", &a_j1_1, "abort"))).await;
    let b_now = s.build_now("p", &bid).await;
    let pl = s
        .delete(&s.admin, &job_verb("p", &job_id(&b_now, "j1.1"), "abort"))
        .await;
    assert_eq!(m.expect(200), &json!({ "aborted": [a_j1_1] }));
    assert_eq!(shape(m.expect(200)), shape(pl.expect(200)));

    // Build abort: j3.1 was skipped when its parent j1.1 was killed, so only j2.1 is queued.
    let a_now = s.build_now("p", &aid).await;
    assert_eq!(job_named(&a_now, "j3.1")["state"], "skipped", "{a_now}");
    let m = s.delete(&tok, &mcp(&build_verb("p", &aid, "abort"))).await;
    let pl = s.delete(&s.admin, &build_verb("p", &bid, "abort")).await;
    assert_eq!(
        m.expect(200),
        &json!({ "aborted": [job_id(&a_now, "j2.1")] })
    );
    assert_eq!(shape(m.expect(200)), shape(pl.expect(200)));
    assert_eq!(s.build_now("p", &aid).await["aborted"], true);

    // Build restart.
    let m = s
        .post(&tok, &mcp(&build_verb("p", &aid, "restart")), json!({}))
        .await;
    let pl = s
        .post(&s.admin, &build_verb("p", &bid, "restart"), json!({}))
        .await;
    let mb = m.expect(201).clone();
    let pb = pl.expect(201).clone();
    let mut ms = shape(&mb);
    let mut ps = shape(&pb);
    // Job order is not part of the promise, so compare the jobs' shapes as a set.
    let mut mjobs: Vec<String> = ms["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(Value::to_string)
        .collect();
    let mut pjobs: Vec<String> = ps["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(Value::to_string)
        .collect();
    mjobs.sort();
    pjobs.sort();
    assert_eq!(mjobs, pjobs);
    ms["jobs"] = Value::Null;
    ps["jobs"] = Value::Null;
    assert_eq!(ms, ps);
    assert_eq!(mb["number"], a["number"]);
    assert_eq!(mb["restart_counter"], 2);
    assert_eq!(
        job_names(&mb),
        job_names(&a),
        "the original names, not the clones"
    );
    assert_eq!(
        m.header("location")
            .map(|l| l.ends_with(&format!("/builds/{}", str_field(&mb, "id")))),
        Some(true),
        "Location of the new build"
    );

    let entries: Vec<Value> = s
        .audit_entries(head)
        .await
        .into_iter()
        .filter(|e| e["plane"] == "mcp")
        .collect();
    assert_eq!(entries.len(), 5, "one mcp entry per call: {entries:#?}");
    for e in &entries {
        assert_eq!(e["principal"], json!(format!("token:{tid}")), "{e}");
        assert_eq!(e["outcome"], "accepted", "{e}");
    }
    let by_filter = s.audit(&qs(&[("plane", "mcp"), ("principal", &tid)])).await;
    assert_eq!(by_filter["entries"].as_array().unwrap().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_token_without_allow_trigger_is_403() {
    let (s, runner) = server_pq().await;
    let (tid, tok) = mcp_token(&s, json!({"p": null}), false).await;
    let b = finished_build(&s, &runner, "p").await;
    let bid = str_field(&b, "id");
    let head = s.audit_head().await;
    for (method, path) in five_verbs("p", &bid, &job_id(&b, "j1")) {
        let r = send(&s, method, &tok, &mcp(&path)).await;
        assert_problem(&r, 403, "trigger_not_allowed");
    }
    assert_eq!(s.build_now("p", &bid).await, b);
    assert_eq!(
        s.get(&s.admin, &builds_path("p")).await.expect(200)["builds"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "no build restart slipped through"
    );
    let entries = s.audit_entries(head).await;
    assert_eq!(entries.len(), 5, "each refusal is audited: {entries:#?}");
    for e in &entries {
        assert_eq!(e["plane"], "mcp", "{e}");
        assert_eq!(e["principal"], json!(format!("token:{tid}")), "{e}");
        assert_eq!(e["outcome"], "rejected", "{e}");
        assert_eq!(e["status"], 403, "{e}");
        assert_eq!(e["code"], "trigger_not_allowed", "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_outside_the_token_are_404() {
    let (s, runner) = server_pq().await;
    let bp = finished_build(&s, &runner, "p").await;
    let bq = finished_build(&s, &runner, "q").await;
    let (bpid, bqid) = (str_field(&bp, "id"), str_field(&bq, "id"));

    let (_, tok) = mcp_token(&s, json!({"p": null}), true).await;
    for (method, path) in five_verbs("q", &bqid, &job_id(&bq, "j1")) {
        let r = send(&s, method, &tok, &mcp(&path)).await;
        assert_problem(&r, 404, "project_not_found");
    }

    // A build or job of q named under p is as missing as one that never existed.
    let (_, tok) = mcp_token(&s, json!({"p": null}), true).await;
    let r = s
        .post(&tok, &mcp(&build_verb("p", &bqid, "restart")), json!({}))
        .await;
    assert_problem(&r, 404, "build_not_found");
    let r = s.delete(&tok, &mcp(&build_verb("p", &bqid, "abort"))).await;
    assert_problem(&r, 404, "build_not_found");
    let r = s
        .post(
            &tok,
            &mcp(&job_verb("p", &job_id(&bq, "j1"), "restart")),
            json!({}),
        )
        .await;
    assert_problem(&r, 404, "job_not_found");
    let r = s
        .post(
            &tok,
            &mcp(&job_verb("nope", &job_id(&bq, "j1"), "rerun")),
            json!({}),
        )
        .await;
    assert_problem(&r, 404, "project_not_found");

    assert_eq!(s.build_now("p", &bpid).await, bp);
    assert_eq!(s.build_now("q", &bqid).await, bq);
    let listed = s.get(&s.admin, &builds_path("q")).await;
    assert_eq!(listed.expect(200)["builds"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_mcp_tokens_are_refused_on_the_mcp_namespace() {
    let (s, runner) = server_pq().await;
    let b = finished_build(&s, &runner, "p").await;
    let bid = str_field(&b, "id");
    let (_, api) = s.create_token("api", json!({}), true).await;
    for token in [&s.admin, &api, &runner] {
        for (method, path) in five_verbs("p", &bid, &job_id(&b, "j1")) {
            let r = send(&s, method, token, &mcp(&path)).await;
            assert_problem(&r, 403, "mcp_token_required");
        }
    }
    assert_eq!(s.build_now("p", &bid).await, b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_per_project_expiry_is_404() {
    let (s, runner) = server_pq().await;
    let bp = finished_build(&s, &runner, "p").await;
    let bq = finished_build(&s, &runner, "q").await;
    let expiry = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() + 3).unwrap();
    let (_, tok) = mcp_token(&s, json!({"p": expiry.to_string(), "q": null}), true).await;
    let abort_p = mcp(&job_verb("p", &job_id(&bp, "j1"), "abort"));
    let abort_q = mcp(&job_verb("q", &job_id(&bq, "j1"), "abort"));

    let r = s.delete(&tok, &abort_p).await;
    assert_eq!(
        r.expect(200),
        &json!({"aborted": []}),
        "p is open to the token before its expiry"
    );

    // Wait on the wall clock only: the expiry is a point in time, not a duration.
    let lapsed = eventually(Duration::from_secs(10), || async {
        (jiff::Timestamp::now() > expiry + jiff::SignedDuration::from_millis(500)).then_some(())
    })
    .await;
    assert!(lapsed.is_some());

    let r = s.delete(&tok, &abort_p).await;
    assert_problem(&r, 404, "project_not_found");
    let r = s.delete(&tok, &abort_q).await;
    assert_eq!(
        r.expect(200),
        &json!({"aborted": []}),
        "q has no expiry and stays open"
    );
    assert_eq!(s.build_now("p", &str_field(&bp, "id")).await, bp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sixth_trigger_in_a_minute_is_429_with_rate_limit_headers() {
    let (s, runner) = server_pq().await;
    let b = finished_build(&s, &runner, "p").await;
    let bid = str_field(&b, "id");
    let j1 = job_id(&b, "j1");
    let (tid, tok) = mcp_token(&s, json!({"p": null}), true).await;
    let abort = mcp(&job_verb("p", &j1, "abort"));
    for i in 1..=5 {
        let r = s.delete(&tok, &abort).await;
        assert_eq!(r.status, 200, "call {i} is within the bucket: {}", r.text);
    }
    let head = s.audit_head().await;
    let r = s
        .post(&tok, &mcp(&job_verb("p", &j1, "restart")), json!({}))
        .await;
    assert_problem(&r, 429, "rate_limited");
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After header")
        .parse()
        .expect("Retry-After is whole seconds");
    assert!(retry >= 1, "Retry-After {retry}");
    let leading_int = |name: &str| -> u64 {
        let v = r
            .header(name)
            .unwrap_or_else(|| panic!("{name} header missing"));
        let digits: String = v.trim().chars().take_while(char::is_ascii_digit).collect();
        digits
            .parse()
            .unwrap_or_else(|_| panic!("{name}: {v:?} does not start with a number"))
    };
    assert_eq!(leading_int("ratelimit-limit"), 5);
    assert_eq!(leading_int("ratelimit-remaining"), 0);
    assert!(leading_int("ratelimit-reset") >= 1);
    assert_eq!(
        s.build_now("p", &bid).await,
        b,
        "a limited call changes nothing"
    );

    let entries: Vec<Value> = s
        .audit_entries(head)
        .await
        .into_iter()
        .filter(|e| e["code"] == "rate_limited")
        .collect();
    assert!(!entries.is_empty(), "the first 429 is audited");
    let e = &entries[0];
    assert_eq!(e["plane"], "mcp", "{e}");
    assert_eq!(e["principal"], json!(format!("token:{tid}")), "{e}");
    assert_eq!(e["outcome"], "rejected", "{e}");
    assert_eq!(e["status"], 429, "{e}");

    // The bucket belongs to the token: another MCP token is unaffected.
    let (_, other) = mcp_token(&s, json!({"p": null}), true).await;
    let r = s.delete(&other, &abort).await;
    assert_eq!(r.expect(200), &json!({"aborted": []}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_tokens_are_refused_on_the_plain_routes() {
    let (s, runner) = server_pq().await;
    let b = finished_build(&s, &runner, "p").await;
    let bid = str_field(&b, "id");
    let jid = job_id(&b, "j1");

    let (_, tok) = mcp_token(&s, json!({"p": null}), true).await;
    for path in [builds_path("p"), build_path("p", &bid), job_path("p", &jid)] {
        let r = s.get(&tok, &path).await;
        assert_problem(&r, 403, "mcp_token_not_allowed");
    }
    let mut mutations = five_verbs("p", &bid, &jid);
    mutations.push((Method::POST, build_verb("p", &bid, "abort")));
    mutations.push((Method::POST, job_verb("p", &jid, "abort")));
    mutations.push((Method::POST, builds_path("p")));
    for (method, path) in mutations {
        // A fresh token per call, so the trigger bucket cannot mask the 403.
        let (_, tok) = mcp_token(&s, json!({"p": null}), true).await;
        let r = if path == builds_path("p") {
            s.post(&tok, &path, json!({"pipeline": pipeline(&[("x", &[])])}))
                .await
        } else {
            send(&s, method, &tok, &path).await
        };
        assert_problem(&r, 403, "mcp_token_not_allowed");
    }
    assert_eq!(s.build_now("p", &bid).await, b);
    let listed = s.get(&s.admin, &builds_path("p")).await;
    assert_eq!(listed.expect(200)["builds"].as_array().unwrap().len(), 1);
}

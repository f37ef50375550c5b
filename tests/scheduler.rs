//! The scheduler fires watches into builds: on time, fixed-rate, never overlapping a running
//! build, catching up once after downtime, pausing a watch that keeps failing, and stopping at
//! once when a watch is paused or deleted.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// 0.02 minutes: a fire every 1.2 s, above the default 1 s floor.
const FAST: f64 = 0.02;

async fn project_with_pipeline(s: &TestServer) {
    s.create_project(&s.admin, "p").await;
    let r = s
        .patch(
            &s.admin,
            "/projects/p",
            json!({"default_pipeline": {"jobs": [{"name": "sync", "run": "true"}]}}),
        )
        .await;
    r.expect(200);
}

async fn fast_watch(s: &TestServer, to_uri: &str) -> String {
    let mut body = watch_body("p", to_uri);
    body["watch_interval"] = json!(FAST);
    body["instruction"] = json!("summarise");
    let r = s.create_watch(&s.admin, body).await;
    r.expect(201);
    r.id()
}

async fn watch_builds(s: &TestServer, watch: &str) -> Vec<Value> {
    let r = s.get(&s.admin, "/projects/p/builds?limit=200").await;
    r.expect(200)["builds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["watch_id"] == json!(watch))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_watch_fires_a_build_with_the_watch_in_its_environment() {
    let s = TestServer::start().await;
    project_with_pipeline(&s).await;
    let id = fast_watch(&s, "viking://res/docs").await;
    let builds = eventually(Duration::from_secs(10), || async {
        let b = watch_builds(&s, &id).await;
        (!b.is_empty()).then_some(b)
    })
    .await
    .expect("the watch fired within 10 s");
    let build = s.build_now("p", builds[0]["id"].as_str().unwrap()).await;
    assert_eq!(build["trigger"], "watch");
    assert_eq!(
        build["env"],
        json!({
            "REEVE_WATCH_ID": id,
            "REEVE_WATCH_SOURCE": "https://source.example.com/viking%3A%2F%2Fres%2Fdocs",
            "REEVE_WATCH_TO_URI": "viking://res/docs",
            "REEVE_WATCH_INSTRUCTION": "summarise",
        })
    );
    let w = s.watch_now(&id).await;
    assert_eq!(w["last_run"]["build_id"], build["id"]);
    assert_eq!(w["last_run"]["manual"], false);
    assert_eq!(w["last_run"]["outcome"], "running");
    // The audit names the scheduler as the door.
    let fires: Vec<Value> = s
        .audit_entries(0)
        .await
        .into_iter()
        .filter(|e| e["plane"] == "scheduler")
        .collect();
    assert!(!fires.is_empty());
    assert_eq!(fires[0]["command"]["fire_watch"]["id"], json!(id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fire_while_the_last_build_runs_is_skipped_and_counted() {
    let s = TestServer::start().await;
    project_with_pipeline(&s).await;
    let id = fast_watch(&s, "viking://res/overlap").await;
    // Nothing runs the first build, so every later fire overlaps it.
    let w = eventually(Duration::from_secs(15), || async {
        let w = s.watch_now(&id).await;
        (w["skipped_overlap"].as_u64() >= Some(2)).then_some(w)
    })
    .await
    .expect("fires were skipped while the first build ran");
    assert_eq!(watch_builds(&s, &id).await.len(), 1, "{w}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_delete_stop_the_schedule_at_once() {
    let s = TestServer::start().await;
    project_with_pipeline(&s).await;
    let paused = fast_watch(&s, "viking://res/paused").await;
    let deleted = fast_watch(&s, "viking://res/deleted").await;
    s.patch(
        &s.admin,
        &format!("/watches/{paused}"),
        json!({"is_active": false}),
    )
    .await
    .expect(200);
    s.delete(&s.admin, &format!("/watches/{deleted}"))
        .await
        .expect(200);
    // Three intervals later, neither has fired.
    tokio::time::sleep(Duration::from_millis(3600)).await;
    assert!(watch_builds(&s, &paused).await.is_empty());
    assert!(watch_builds(&s, &deleted).await.is_empty());
    assert_eq!(s.watch_now(&paused).await["last_run"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_fails_five_times_pauses_itself() {
    // The default limit: five failed builds in a row.
    let s = TestServer::start().await;
    project_with_pipeline(&s).await;
    let runner = s.runner_token().await;
    let id = fast_watch(&s, "viking://res/flaky").await;
    let w = eventually(Duration::from_secs(30), || async {
        // Fail every job the watch's builds run.
        while let Some(c) = s.claim(&runner).await {
            let job = str_field(&c["job"], "id");
            s.finish(&runner, &job, &str_field(&c, "lease_id"), "failure")
                .await
                .expect(200);
        }
        let w = s.watch_now(&id).await;
        (w["is_active"] == false).then_some(w)
    })
    .await
    .expect("the watch paused itself");
    assert_eq!(w["reason"], "paused after 5 consecutive failures");
    assert_eq!(w["consecutive_failures"], 5);
    assert_eq!(w["last_run"]["outcome"], "failure");
    assert!(ts(&w["last_run"]["finished_at"]) >= ts(&w["last_run"]["at"]));
    assert_eq!(w["next_run_at"], Value::Null);
    // Resuming starts a new streak.
    let r = s
        .patch(
            &s.admin,
            &format!("/watches/{id}"),
            json!({"is_active": true}),
        )
        .await;
    assert_eq!(r.expect(200)["consecutive_failures"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downtime_collapses_missed_fires_into_one_catch_up() {
    let s = TestServer::start().await;
    project_with_pipeline(&s).await;
    let mut body = watch_body("p", "viking://res/catch-up");
    body["watch_interval"] = json!(FAST);
    let r = s.create_watch(&s.admin, body).await;
    let id = r.id();
    let mut s = s;
    s.shutdown().await;
    // Down for more than three intervals.
    tokio::time::sleep(Duration::from_millis(4000)).await;
    let s = s.restart().await;
    let w = eventually(Duration::from_secs(10), || async {
        let w = s.watch_now(&id).await;
        (!w["last_run"].is_null()).then_some(w)
    })
    .await
    .expect("the catch-up fire came");
    assert!(w["last_run"]["missed"].as_u64() >= Some(2), "{w}");
    assert_eq!(
        watch_builds(&s, &id).await.len(),
        1,
        "one catch-up build, not a burst"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_trigger_starts_a_build_even_when_paused() {
    let s = TestServer::start().await;
    project_with_pipeline(&s).await;
    let mut body = watch_body("p", "viking://res/manual");
    body["is_active"] = json!(false);
    let r = s.create_watch(&s.admin, body).await;
    let id = r.id();
    s.post(&s.admin, &format!("/watches/{id}/trigger"), json!({}))
        .await
        .expect(202);
    let builds = watch_builds(&s, &id).await;
    assert_eq!(builds.len(), 1);
    let w = s.watch_now(&id).await;
    assert_eq!(w["last_run"]["manual"], true);
    assert_eq!(w["last_run"]["build_id"], builds[0]["id"]);
    assert_eq!(w["is_active"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_runs_its_own_pipeline_over_the_projects_default() {
    let s = TestServer::start().await;
    project_with_pipeline(&s).await;
    let mut body = watch_body("p", "viking://res/own");
    body["pipeline"] = json!({"jobs": [{"name": "own", "run": "true"}]});
    let r = s.create_watch(&s.admin, body).await;
    let w = r.expect(201).clone();
    assert_eq!(w["pipeline"]["jobs"][0]["name"], "own");
    let id = str_field(&w, "id");
    s.post(&s.admin, &format!("/watches/{id}/trigger"), json!({}))
        .await
        .expect(202);
    let builds = watch_builds(&s, &id).await;
    let b = s.build_now("p", builds[0]["id"].as_str().unwrap()).await;
    assert_eq!(job_names(&b), ["Create Jobs", "own"]);

    // null goes back to the project's default.
    let r = s
        .patch(
            &s.admin,
            &format!("/watches/{id}"),
            json!({"pipeline": null}),
        )
        .await;
    assert_eq!(r.expect(200)["pipeline"], Value::Null);
    s.post(&s.admin, &format!("/watches/{id}/trigger"), json!({}))
        .await
        .expect(202);
    let newest = &watch_builds(&s, &id).await[0];
    let b = s.build_now("p", newest["id"].as_str().unwrap()).await;
    assert_eq!(job_names(&b), ["Create Jobs", "sync"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_watch_pipeline_is_refused_and_nothing_is_created() {
    let s = TestServer::start().await;
    project_with_pipeline(&s).await;
    let mut body = watch_body("p", "viking://res/bad");
    body["pipeline"] = json!({"jobs": [{"name": "a", "run": "true", "depends_on": ["a"]}]});
    let r = s.create_watch(&s.admin, body).await;
    assert_field_problem(&r, "invalid_pipeline", "pipeline");
    assert!(s.all_watches(&s.admin).await.is_empty());
}

//! Ended builds leave memory once their project has more than a window of newer ended builds
//! (`reeve::domain::HOT_ENDED_BUILDS`); they stay readable, changeable and prunable through
//! the same calls, with the same answers. A real server on a real data dir, driven over HTTP
//! by a runner that claims and finishes every job.

mod common;

use std::time::Duration;

use common::*;
use reeve::domain::{HOT_ENDED_BUILDS, History};
use reeve::log::{Store, SyncMode};
use reeve::server::ServerConfig;
use serde_json::{Value, json};
use uuid::Uuid;

/// More ended builds than memory keeps: the first `BUILDS - HOT_ENDED_BUILDS` leave it.
const BUILDS: usize = HOT_ENDED_BUILDS + 12;

/// Triggers one build of two jobs, runs it to its end (job `a` writes `output`), and returns
/// the build as it reads right after it ended, with `a`'s id.
async fn run_build(s: &TestServer, runner: &str, n: usize) -> (Value, String) {
    let b = s
        .trigger_build(&s.admin, "p", pipeline(&[("a", &[]), ("b", &["a"])]))
        .await;
    let id = str_field(&b, "id");
    let mut a = String::new();
    while let Some(c) = s.claim(runner).await {
        let job = str_field(&c["job"], "id");
        let lease = str_field(&c, "lease_id");
        if c["job"]["name"] == "a" {
            a = job.clone();
            fetch(
                s.call(
                    reqwest::Method::POST,
                    runner,
                    &format!("/runner/jobs/{job}/log?lease_id={lease}"),
                )
                .body(format!("output of build {n}\n")),
            )
            .await
            .expect(200);
        }
        let state = if n.is_multiple_of(3) {
            "failure"
        } else {
            "finished"
        };
        s.finish(runner, &job, &lease, state).await.expect(200);
    }
    (s.build_now("p", &id).await, a)
}

/// Every build of `p`, newest first, read page by page.
async fn all_pages(s: &TestServer, limit: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("?limit={limit}&cursor={c}"),
            None => format!("?limit={limit}"),
        };
        let page = s.get(&s.admin, &format!("{}{q}", builds_path("p"))).await;
        let page = page.expect(200).clone();
        let builds = page["builds"].as_array().unwrap().clone();
        assert!(builds.len() <= limit);
        out.extend(builds);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

fn summary(full: &Value) -> Value {
    let mut v = full.clone();
    v.as_object_mut().unwrap().remove("jobs");
    v
}

async fn log_text(s: &TestServer, job: &str) -> (u16, String) {
    let r = s
        .get(&s.admin, &format!("{}/log", job_path("p", job)))
        .await;
    (r.status, r.text)
}

async fn digest(s: &TestServer) -> Value {
    s.get(&s.admin, "/state/digest").await.expect(200).clone()
}

/// Opens the stopped server's data dir: whether `build` is in the store's cold tree, and
/// whether a replay of the log keeps it in memory.
fn where_is(dir: &std::path::Path, build: &str) -> (bool, bool) {
    let id: Uuid = build.parse().unwrap();
    let store = Store::open(dir, SyncMode::Durable).unwrap();
    let cold = store.cold_build(id).unwrap().is_some();
    let hot = reeve::control::replay(&store)
        .unwrap()
        .builds
        .contains_key(&id);
    (cold, hot)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_builds_beyond_the_window_leave_memory_and_answer_as_before() {
    let mut s = TestServer::start().await;
    s.create_project(&s.admin, "p").await;
    let runner = s.runner_token().await;
    let mut ended = Vec::new();
    for n in 0..BUILDS {
        ended.push(run_build(&s, &runner, n).await);
    }
    let first = str_field(&ended[0].0, "id");
    let last = str_field(&ended[BUILDS - 1].0, "id");

    // Every build reads exactly as it did the moment it ended, wherever it is now.
    for (b, a) in &ended {
        let id = str_field(b, "id");
        assert_eq!(&s.build_now("p", &id).await, b);
        for j in b["jobs"].as_array().unwrap() {
            assert_eq!(&s.job_now("p", &str_field(j, "id")).await, j);
        }
        let n = b["number"].as_u64().unwrap() - 1;
        assert_eq!(
            log_text(&s, a).await,
            (200, format!("output of build {n}\n"))
        );
    }
    // Listings page through memory and disk as one list, newest first.
    let expected: Vec<Value> = ended.iter().rev().map(|(b, _)| summary(b)).collect();
    for limit in [1, 7, HOT_ENDED_BUILDS, 200] {
        assert_eq!(all_pages(&s, limit).await, expected, "pages of {limit}");
    }
    // Out of another project's sight, on disk as in memory.
    s.create_project(&s.admin, "q").await;
    let (_, other) = s.create_token("api", json!({"q": null}), false).await;
    let hidden = s.get(&other, &build_path("p", &first)).await;
    assert_problem(&hidden, 404, "project_not_found");
    let wrong = s.get(&s.admin, &build_path("q", &first)).await;
    assert_problem(&wrong, 404, "build_not_found");
    let before = digest(&s).await;

    s.shutdown().await;
    assert_eq!(
        where_is(&s.data_dir(), &first),
        (true, false),
        "the first build left memory"
    );
    assert_eq!(
        where_is(&s.data_dir(), &last),
        (false, true),
        "the last build is in memory"
    );

    // A restart answers the same, and the digest is the one the server had.
    let mut s = s.restart().await;
    assert_eq!(digest(&s).await, before);
    assert_eq!(&s.build_now("p", &first).await, &ended[0].0);
    assert_eq!(all_pages(&s, 9).await, expected);

    // The offline replay shows every build, and its digest is the server's.
    let dir = s.data_dir();
    s.shutdown().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_reeve"))
        .args(["audit", "replay", "--data-dir"])
        .arg(&dir)
        .args(["--show", "builds", "--json", "--digest"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["builds"].as_array().unwrap().len(), BUILDS);
    assert_eq!(doc["digest"], before["digest"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_on_builds_that_left_memory_act_as_on_any_ended_build() {
    let mut s = TestServer::start().await;
    s.create_project(&s.admin, "p").await;
    let runner = s.runner_token().await;
    let mut ended = Vec::new();
    for n in 0..BUILDS {
        ended.push(run_build(&s, &runner, n).await);
    }
    let (b0, a0) = &ended[0];
    let (b1, a1) = &ended[1];
    let (b2, _) = &ended[2];
    let (b3, _) = &ended[3];
    let id0 = str_field(b0, "id");
    s.shutdown().await;
    assert_eq!(where_is(&s.data_dir(), &id0), (true, false));
    let s = s.restart().await;

    // Refusals read as they did: Create Jobs is not restartable, a stale If-Match is 412.
    let cj = job_id(b1, CREATE_JOBS);
    let at = s.audit_head().await;
    let r = s
        .post(
            &s.admin,
            &format!("{}/restart", job_path("p", &cj)),
            json!({}),
        )
        .await;
    assert_problem(&r, 409, "create_jobs_not_restartable");
    let r = s
        .call(
            reqwest::Method::POST,
            &s.admin,
            &format!("{}/restart", job_path("p", a1)),
        )
        .header("If-Match", "\"999\"")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 412);
    assert_eq!(s.audit_head().await, at + 2, "each refusal is one commit");
    assert_eq!(
        &s.build_now("p", &str_field(b1, "id")).await,
        b1,
        "a refusal changes nothing"
    );

    // Restart a job of a build on disk: it is cloned into that build, which runs again.
    let r = s
        .post(
            &s.admin,
            &format!("{}/restart", job_path("p", a0)),
            json!({}),
        )
        .await;
    let restarted = r.expect(201).clone();
    let clones = restarted["jobs"].as_array().unwrap();
    assert_eq!(clones.len(), 2, "a and its dependant b: {restarted}");
    let now = s.build_now("p", &id0).await;
    assert_eq!(now["state"], "running");
    assert_eq!(now["jobs"].as_array().unwrap().len(), 5);
    let done = s.drain(&runner, |_| "finished").await;
    assert_eq!(done.len(), 2);
    let now = s.build_now("p", &id0).await;
    assert_eq!(now["state"], "finished");
    assert_eq!(job_named(&now, "a.1")["state"], "finished");
    assert_eq!(
        job_named(&now, "a")["superseded_by"],
        json!(str_field(&clones[0], "to"))
    );

    // Rerun one job of another: one clone.
    let b2_a = job_id(b2, "a");
    let r = s
        .post(
            &s.admin,
            &format!("{}/rerun", job_path("p", &b2_a)),
            json!({}),
        )
        .await;
    let rerun = r.expect(201).clone();
    assert_eq!(rerun["job"]["name"], "a.1");
    s.drain(&runner, |_| "finished").await;

    // Abort an ended build: nothing to kill, and it is marked aborted.
    let id3 = str_field(b3, "id");
    let r = s
        .post(
            &s.admin,
            &format!("{}/abort", build_path("p", &id3)),
            json!({}),
        )
        .await;
    assert_eq!(r.expect(200)["aborted"], json!([]));
    assert_eq!(s.build_now("p", &id3).await["aborted"], true);

    // Restart a build on disk: the next generation of its number.
    let id1 = str_field(b1, "id");
    let r = s
        .post(
            &s.admin,
            &format!("{}/restart", build_path("p", &id1)),
            json!({}),
        )
        .await;
    let again = r.expect(201).clone();
    assert_eq!(again["number"], b1["number"]);
    let counter = b1["restart_counter"].as_u64().unwrap();
    assert_eq!(again["restart_counter"], counter + 1);
    assert_eq!(again["restarted_from"], json!(id1));
    let r = s
        .post(
            &s.admin,
            &format!("{}/restart", build_path("p", &id1)),
            json!({}),
        )
        .await;
    assert_eq!(r.expect(201)["restart_counter"], counter + 2);
    s.drain(&runner, |_| "finished").await;

    // Everything above survives a restart and a replay, digest for digest.
    let before = digest(&s).await;
    let s = s.restart().await;
    assert_eq!(digest(&s).await, before);
    assert_eq!(
        s.build_now("p", &id0).await["jobs"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert_eq!(s.build_now("p", &id3).await["aborted"], true);
}

fn quick_retention(cfg: &mut ServerConfig) {
    cfg.job_log_retention = Some(Duration::from_secs(3));
    cfg.job_log_prune_every = Duration::from_millis(100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_of_jobs_that_left_memory_ages_out_too() {
    let mut s = TestServer::start_with(quick_retention).await;
    s.create_project(&s.admin, "p").await;
    let runner = s.runner_token().await;
    let mut ended = Vec::new();
    for n in 0..BUILDS {
        ended.push(run_build(&s, &runner, n).await);
    }
    let (b0, a0) = &ended[0];
    let pruned = eventually(Duration::from_secs(30), || async {
        let r = s.get(&s.admin, &format!("{}/log", job_path("p", a0))).await;
        (r.status == 410).then_some(r)
    })
    .await
    .expect("the first build's output is pruned");
    let job = s.job_now("p", a0).await;
    let at = job["log_pruned_at"].as_str().expect("log_pruned_at is set");
    let detail = str_field(assert_problem(&pruned, 410, "log_pruned"), "detail");
    assert!(detail.contains(at), "{detail}");
    // Only log_pruned_at changed.
    let mut unchanged = job.clone();
    unchanged["log_pruned_at"] = Value::Null;
    assert_eq!(&unchanged, job_named(b0, "a"));
    // Wait until every output is gone, then look on disk.
    for (_, a) in &ended {
        eventually(Duration::from_secs(30), || async {
            let r = s.get(&s.admin, &format!("{}/log", job_path("p", a))).await;
            (r.status == 410).then_some(())
        })
        .await
        .expect("every output is pruned");
    }
    s.shutdown().await;
    let store = Store::open(&s.data_dir(), SyncMode::Durable).unwrap();
    let id0: Uuid = str_field(b0, "id").parse().unwrap();
    let cold = store
        .cold_build(id0)
        .unwrap()
        .expect("the first build is on disk");
    let a: Uuid = a0.parse().unwrap();
    assert!(
        cold.jobs
            .iter()
            .find(|j| j.id == a)
            .unwrap()
            .log_pruned_at
            .is_some()
    );
    assert!(
        store.read_log(a, 0).unwrap().is_empty(),
        "its chunks are gone"
    );
    assert!(store.cold_prunable(i64::MAX, 10).unwrap().is_empty());
}

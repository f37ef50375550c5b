//! The runner protocol (claim, heartbeat, finish, lease expiry, skipped propagation)
//! and the job verbs restart and rerun.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

async fn server_p() -> (TestServer, String) {
    let s = TestServer::start().await;
    s.create_project(&s.admin, "p").await;
    let runner = s.runner_token().await;
    (s, runner)
}

fn names(jobs: &[Value]) -> Vec<String> {
    jobs.iter().map(|j| str_field(j, "name")).collect()
}

fn restart_path(job: &str) -> String {
    format!("{}/restart", job_path("p", job))
}

fn rerun_path(job: &str) -> String {
    format!("{}/rerun", job_path("p", job))
}

/// `{name: (from, to)}` of a job restart answer, after checking its shape.
#[track_caller]
fn clones(answer: &Value) -> HashMap<String, (String, String)> {
    let jobs = answer["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("restart answer lacks jobs: {answer}"));
    let mut out = HashMap::new();
    for c in jobs {
        let prev = out.insert(
            str_field(c, "name"),
            (str_field(c, "from"), str_field(c, "to")),
        );
        assert!(prev.is_none(), "clone names repeat: {answer}");
    }
    out
}

/// The `job_id`s a job depends on, keyed by the dependency's name.
#[track_caller]
fn deps(job: &Value) -> HashMap<String, String> {
    job["depends_on"]
        .as_array()
        .unwrap_or_else(|| panic!("depends_on: {job}"))
        .iter()
        .map(|d| (str_field(d, "job"), str_field(d, "job_id")))
        .collect()
}

/// Triggers a build and runs every job to `finished`.
async fn finished_build(s: &TestServer, runner: &str, pl: Value) -> Value {
    let b = s.trigger_build(&s.admin, "p", pl).await;
    let id = str_field(&b, "id");
    s.drain(runner, |_| "finished").await;
    let b = s.build_now("p", &id).await;
    assert_eq!(b["state"], "finished", "{b}");
    b
}

/// Posts a job verb that must be refused, and checks the build did not move.
async fn refuse(s: &TestServer, build: &str, path: &str, status: u16, code: &str) {
    let before = s.build_now("p", build).await;
    let r = s.post(&s.admin, path, json!({})).await;
    assert_problem(&r, status, code);
    assert_eq!(
        s.build_now("p", build).await,
        before,
        "refused {path} must change nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_heartbeat_finish_drive_jobs_to_every_terminal_state() {
    let (s, runner) = server_p().await;
    assert!(
        s.claim(&runner).await.is_none(),
        "an empty server has nothing to claim"
    );

    let b = s
        .trigger_build(
            &s.admin,
            "p",
            pipeline(&[("ok", &[]), ("bad", &[]), ("err", &[]), ("dead", &[])]),
        )
        .await;
    let bid = str_field(&b, "id");
    let before = jiff::Timestamp::now();
    let mut seen = HashSet::new();
    for _ in 0..4 {
        let c = s.claim(&runner).await.expect("four jobs are claimable");
        let job = &c["job"];
        let id = str_field(job, "id");
        assert!(seen.insert(id.clone()), "a job is claimed once: {c}");
        assert_eq!(job["state"], "running", "{c}");
        assert!(ts(&job["started_at"]) >= before - secs(1), "{c}");
        assert_eq!(c["build"]["id"], json!(bid), "{c}");
        let lease = str_field(&c, "lease_id");
        let expires = ts(&c["lease_expires_at"]);
        assert!(expires > ts(&job["started_at"]), "{c}");
        assert_eq!(s.job_now("p", &id).await["state"], "running");

        let hb = s.heartbeat(&runner, &id, &lease).await;
        let hb = hb.expect(200);
        assert_eq!(hb["abort"], false);
        ts(&hb["lease_expires_at"]);

        let state = match job["name"].as_str().unwrap() {
            "ok" => "finished",
            "bad" => "failure",
            "err" => "error",
            _ => "killed",
        };
        let exit = if state == "finished" { 0 } else { 3 };
        let r = s
            .post(
                &runner,
                &format!("/runner/jobs/{id}/finish"),
                json!({"lease_id": lease, "state": state, "exit_code": exit, "message": format!("ended {state}")}),
            )
            .await;
        let done = r.expect(200);
        assert_eq!(done["id"], json!(id));
        assert_eq!(done["state"], state);
        assert_eq!(done["exit_code"], exit);
        assert_eq!(done["message"], json!(format!("ended {state}")));
        assert!(ts(&done["finished_at"]) >= ts(&done["started_at"]));
        assert_eq!(&s.job_now("p", &id).await, done);
    }
    assert!(s.claim(&runner).await.is_none());
    let b = s.build_now("p", &bid).await;
    assert_eq!(
        b["state"], "killed",
        "killed outranks error, failure and finished"
    );

    // The remaining precedence, one build per rung.
    for (outcomes, expect) in [
        (["finished", "failure", "error"], "error"),
        (["finished", "failure", "finished"], "failure"),
        (["finished", "finished", "finished"], "finished"),
    ] {
        let b = s
            .trigger_build(
                &s.admin,
                "p",
                pipeline(&[("j0", &[]), ("j1", &[]), ("j2", &[])]),
            )
            .await;
        s.drain(&runner, move |name| match name {
            "j0" => outcomes[0],
            "j1" => outcomes[1],
            _ => outcomes[2],
        })
        .await;
        let b = s.build_now("p", &str_field(&b, "id")).await;
        assert_eq!(b["state"], expect, "{outcomes:?}: {b}");
    }

    let r = s.claim_wait(&runner, 31).await;
    assert_problem(&r, 422, "invalid_body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_waits_for_its_parent() {
    let (s, runner) = server_p().await;
    let b = s
        .trigger_build(
            &s.admin,
            "p",
            pipeline(&[("parent", &[]), ("child", &["parent"])]),
        )
        .await;
    let c = s.claim(&runner).await.expect("parent is claimable");
    assert_eq!(c["job"]["name"], "parent");
    assert!(
        s.claim(&runner).await.is_none(),
        "child is not claimable while its parent runs"
    );
    assert_eq!(
        s.job_now("p", &job_id(&b, "child")).await["state"],
        "queued"
    );
    let r = s
        .finish(
            &runner,
            &str_field(&c["job"], "id"),
            &str_field(&c, "lease_id"),
            "finished",
        )
        .await;
    r.expect(200);
    let c = s.claim(&runner).await.expect("child is claimable now");
    assert_eq!(c["job"]["id"], json!(job_id(&b, "child")));
}

/// `build` with a failure handler (and its follower), a normal follower, an
/// always-run job and a job that runs only when the handler was skipped.
fn branching() -> Value {
    json!({"jobs": [
        {"name": "build", "run": "make"},
        {"name": "cleanup", "run": "rm", "depends_on": [{"job": "build", "on": ["failure"]}]},
        {"name": "notify", "run": "mail", "depends_on": ["cleanup"]},
        {"name": "deploy", "run": "ship", "depends_on": ["build"]},
        {"name": "always", "run": "log", "depends_on": [{"job": "build", "on": ["*"]}]},
        {"name": "noted", "run": "log", "depends_on": [{"job": "cleanup", "on": ["skipped"]}]},
    ]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_child_runs_after_a_failure_only() {
    let (s, runner) = server_p().await;

    let b = s.trigger_build(&s.admin, "p", branching()).await;
    let bid = str_field(&b, "id");
    let claimed = s
        .drain(
            &runner,
            |n| if n == "build" { "failure" } else { "finished" },
        )
        .await;
    let mut ran = names(&claimed);
    assert_eq!(ran[0], "build");
    ran.sort();
    assert_eq!(ran, vec!["always", "build", "cleanup", "notify"]);
    let after = s.build_now("p", &bid).await;
    assert_eq!(job_named(&after, "deploy")["state"], "skipped");
    assert_eq!(job_named(&after, "noted")["state"], "skipped");
    assert_eq!(
        after["state"], "failure",
        "skipped jobs do not count: {after}"
    );

    let b = s.trigger_build(&s.admin, "p", branching()).await;
    let bid = str_field(&b, "id");
    let claimed = s.drain(&runner, |_| "finished").await;
    let mut ran = names(&claimed);
    assert_eq!(ran[0], "build");
    ran.sort();
    assert_eq!(ran, vec!["always", "build", "deploy", "noted"]);
    let after = s.build_now("p", &bid).await;
    assert_eq!(job_named(&after, "cleanup")["state"], "skipped");
    assert_eq!(
        job_named(&after, "notify")["state"],
        "skipped",
        "a descendant blocked by a skipped job is skipped too"
    );
    assert_eq!(after["state"], "finished", "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_or_wrong_lease_is_409_and_changes_nothing() {
    let (s, runner) = server_p().await;
    let b = s
        .trigger_build(&s.admin, "p", pipeline(&[("solo", &[])]))
        .await;
    let c = s.claim(&runner).await.expect("solo is claimable");
    let id = str_field(&c["job"], "id");
    let lease = str_field(&c, "lease_id");
    let running = s.job_now("p", &id).await;

    let wrong = uuid::Uuid::now_v7().to_string();
    let r = s.finish(&runner, &id, &wrong, "finished").await;
    assert_problem(&r, 409, "stale_lease");
    let r = s.heartbeat(&runner, &id, &wrong).await;
    assert_problem(&r, 409, "stale_lease");
    // A lease is bound to its job.
    let other = job_id(&b, CREATE_JOBS);
    let r = s.finish(&runner, &other, &lease, "finished").await;
    assert_problem(&r, 409, "stale_lease");
    assert_eq!(s.job_now("p", &id).await, running);

    let r = s.finish(&runner, &id, &lease, "finished").await;
    r.expect(200);
    let done = s.job_now("p", &id).await;
    let r = s.finish(&runner, &id, &lease, "failure").await;
    assert_problem(&r, 409, "stale_lease");
    let r = s.heartbeat(&runner, &id, &lease).await;
    assert_problem(&r, 409, "stale_lease");
    assert_eq!(s.job_now("p", &id).await, done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_ends_the_job_as_runner_lost() {
    let s = TestServer::start_with(|c| c.lease_secs = 1).await;
    s.create_project(&s.admin, "p").await;
    let runner = s.runner_token().await;
    let b = s
        .trigger_build(
            &s.admin,
            "p",
            pipeline(&[("lost", &[]), ("after", &["lost"])]),
        )
        .await;
    let head = s.audit_head().await;
    let c = s.claim(&runner).await.expect("lost is claimable");
    let id = str_field(&c["job"], "id");
    let lease = str_field(&c, "lease_id");

    let (sr, idr) = (&s, id.as_str());
    let ended = eventually(Duration::from_secs(20), move || async move {
        let j = sr.job_now("p", idr).await;
        (j["state"] != "running").then_some(j)
    })
    .await
    .expect("an unrenewed lease must expire");
    assert_eq!(ended["state"], "error", "{ended}");
    assert_eq!(ended["message"], "runner lost", "{ended}");
    assert!(ended["finished_at"].is_string(), "{ended}");

    let r = s.finish(&runner, &id, &lease, "finished").await;
    assert_problem(&r, 409, "stale_lease");
    assert_eq!(s.job_now("p", &id).await, ended);
    assert_eq!(
        s.job_now("p", &job_id(&b, "after")).await["state"],
        "skipped",
        "a child waiting for finished is skipped after an error"
    );

    let system: Vec<Value> = s
        .audit_entries(head)
        .await
        .into_iter()
        .filter(|e| e["plane"] == "system")
        .collect();
    assert!(
        system.iter().any(|e| e["principal"] == "system"
            && e["outcome"] == "accepted"
            && e.to_string().contains(&id)),
        "the expiry is a system command naming the job: {system:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_claim_returns_a_job_created_while_it_waits() {
    let (s, runner) = server_p().await;
    let waiting = {
        let api = s.api.clone();
        let runner = runner.clone();
        tokio::spawn(async move { api.claim_wait(&runner, 20).await })
    };
    let b = s
        .trigger_build(&s.admin, "p", pipeline(&[("late", &[])]))
        .await;
    let r = waiting.await.expect("claim task");
    let c = r.expect(200);
    assert_eq!(c["job"]["id"], json!(job_id(&b, "late")), "{c}");

    // With nothing to hand out, a waiting claim ends with 204 and no body.
    let r = s.claim_wait(&runner, 1).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(r.text.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_routes_take_runner_tokens_only_and_build_routes_refuse_them() {
    let (s, runner) = server_p().await;
    let b = s
        .trigger_build(&s.admin, "p", pipeline(&[("one", &[])]))
        .await;
    let bid = str_field(&b, "id");
    let jid = job_id(&b, "one");
    let (_, api) = s.create_token("api", json!({}), true).await;
    let (_, mcp) = s.create_token("mcp", json!({"p": null}), true).await;

    for token in [&s.admin, &api, &mcp] {
        let r = s.claim_wait(token, 0).await;
        assert_problem(&r, 403, "runner_token_required");
    }
    assert_eq!(
        s.build_now("p", &bid).await,
        b,
        "a refused claim hands out nothing"
    );

    let c = s.claim(&runner).await.expect("one is claimable");
    let lease = str_field(&c, "lease_id");
    let running = s.build_now("p", &bid).await;
    for token in [&s.admin, &api, &mcp] {
        let r = s.heartbeat(token, &jid, &lease).await;
        assert_problem(&r, 403, "runner_token_required");
        let r = s.finish(token, &jid, &lease, "finished").await;
        assert_problem(&r, 403, "runner_token_required");
    }
    assert_eq!(s.build_now("p", &bid).await, running);

    for path in [builds_path("p"), build_path("p", &bid), job_path("p", &jid)] {
        let r = s.get(&runner, &path).await;
        assert_problem(&r, 403, "runner_token_not_allowed");
    }
    let r = s
        .post(
            &runner,
            &builds_path("p"),
            json!({"pipeline": pipeline(&[("x", &[])])}),
        )
        .await;
    assert_problem(&r, 403, "runner_token_not_allowed");
    for path in [
        format!("{}/restart", build_path("p", &bid)),
        format!("{}/abort", build_path("p", &bid)),
        format!("{}/abort", job_path("p", &jid)),
        restart_path(&jid),
        rerun_path(&jid),
    ] {
        let r = s.post(&runner, &path, json!({})).await;
        assert_problem(&r, 403, "runner_token_not_allowed");
    }
    assert_eq!(s.build_now("p", &bid).await, running);
    let r = s.get(&s.admin, &builds_path("p")).await;
    assert_eq!(r.expect(200)["builds"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_restart_names_three_generations() {
    let (s, runner) = server_p().await;
    let b = finished_build(&s, &runner, pipeline(&[("foo", &[])])).await;
    let bid = str_field(&b, "id");
    let foo = job_id(&b, "foo");

    let r = s.post(&s.admin, &restart_path(&foo), json!({})).await;
    let answer = r.expect(201).clone();
    let c = clones(&answer);
    assert_eq!(c.len(), 1, "{answer}");
    let (from, foo1) = c.get("foo.1").cloned().expect("foo → foo.1");
    assert_eq!(from, foo);

    let orig = s.job_now("p", &foo).await;
    assert_eq!(orig["superseded_by"], json!(foo1));
    assert_eq!(
        orig["state"], "finished",
        "a superseded terminal job keeps its state"
    );
    let clone = s.job_now("p", &foo1).await;
    assert_eq!(clone["name"], "foo.1");
    assert_eq!(clone["cloned_from"], json!(foo));
    assert_eq!(clone["build_id"], json!(bid));
    assert_eq!(clone["state"], "queued");
    assert_eq!(clone["run"], orig["run"]);
    assert_eq!(
        deps(&clone),
        deps(&orig),
        "a parent outside the cloned set is kept"
    );
    assert_eq!(s.build_now("p", &bid).await["state"], "running");

    let claimed = s.drain(&runner, |_| "failure").await;
    assert_eq!(names(&claimed), vec!["foo.1"]);
    let r = s.post(&s.admin, &restart_path(&foo1), json!({})).await;
    let c = clones(r.expect(201));
    let (from, foo2) = c
        .get("foo.2")
        .cloned()
        .expect("foo.1 → foo.2, never foo.1.1");
    assert_eq!(from, foo1);
    assert_eq!(s.job_now("p", &foo2).await["cloned_from"], json!(foo1));

    refuse(&s, &bid, &restart_path(&foo), 409, "job_superseded").await;
    refuse(&s, &bid, &rerun_path(&foo1), 409, "job_superseded").await;
    let claimed = s.drain(&runner, |_| "finished").await;
    assert_eq!(names(&claimed), vec!["foo.2"]);
    let after = s.build_now("p", &bid).await;
    assert_eq!(
        job_names(&after),
        vec![
            CREATE_JOBS.to_string(),
            "foo".into(),
            "foo.1".into(),
            "foo.2".into()
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_restart_renames_only_the_last_segment() {
    let (s, runner) = server_p().await;
    let b = finished_build(&s, &runner, pipeline(&[("a/b", &[])])).await;
    let r = s
        .post(&s.admin, &restart_path(&job_id(&b, "a/b")), json!({}))
        .await;
    let c = clones(r.expect(201));
    let (_, ab1) = c.get("a/b.1").cloned().expect("a/b → a/b.1");
    s.drain(&runner, |_| "error").await;
    let r = s.post(&s.admin, &restart_path(&ab1), json!({})).await;
    let c = clones(r.expect(201));
    assert!(c.contains_key("a/b.2"), "a/b.1 → a/b.2: {c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_a_diamond_from_its_top_clones_all_four_with_remapped_deps() {
    let (s, runner) = server_p().await;
    let b = finished_build(
        &s,
        &runner,
        pipeline(&[
            ("top", &[]),
            ("left", &["top"]),
            ("right", &["top"]),
            ("bottom", &["left", "right"]),
        ]),
    )
    .await;
    let bid = str_field(&b, "id");
    let r = s
        .post(&s.admin, &restart_path(&job_id(&b, "top")), json!({}))
        .await;
    let c = clones(r.expect(201));
    let mut got: Vec<&String> = c.keys().collect();
    got.sort();
    assert_eq!(got, vec!["bottom.1", "left.1", "right.1", "top.1"]);
    for (name, (from, _)) in &c {
        let base = name.trim_end_matches(".1");
        assert_eq!(from, &job_id(&b, base), "{name} comes from {base}");
    }
    let to = |n: &str| c[n].1.clone();

    let after = s.build_now("p", &bid).await;
    for base in ["top", "left", "right", "bottom"] {
        assert_eq!(
            job_named(&after, base)["superseded_by"],
            json!(to(&format!("{base}.1"))),
            "{base} is superseded by its clone"
        );
    }
    let cj = job_id(&b, CREATE_JOBS);
    assert_eq!(
        deps(job_named(&after, "top.1")),
        HashMap::from([(CREATE_JOBS.to_string(), cj)])
    );
    assert_eq!(
        deps(job_named(&after, "left.1")),
        HashMap::from([("top.1".to_string(), to("top.1"))])
    );
    assert_eq!(
        deps(job_named(&after, "right.1")),
        HashMap::from([("top.1".to_string(), to("top.1"))])
    );
    assert_eq!(
        deps(job_named(&after, "bottom.1")),
        HashMap::from([
            ("left.1".to_string(), to("left.1")),
            ("right.1".to_string(), to("right.1")),
        ])
    );

    let claimed = names(&s.drain(&runner, |_| "finished").await);
    assert_eq!(claimed.len(), 4, "{claimed:?}");
    assert_eq!(claimed[0], "top.1");
    assert_eq!(claimed[3], "bottom.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_relinks_descendants_and_a_later_restart_cascades_to_them() {
    let (s, runner) = server_p().await;
    let b = finished_build(
        &s,
        &runner,
        pipeline(&[("a", &[]), ("b", &["a"]), ("c", &["b"])]),
    )
    .await;
    let bid = str_field(&b, "id");
    let (a, bj, cj) = (job_id(&b, "a"), job_id(&b, "b"), job_id(&b, "c"));

    let r = s.post(&s.admin, &rerun_path(&bj), json!({})).await;
    let clone = r.expect(201)["job"].clone();
    let b1 = str_field(&clone, "id");
    assert_eq!(clone["name"], "b.1");
    assert_eq!(clone["cloned_from"], json!(bj));
    assert_eq!(clone["state"], "queued");
    assert_eq!(deps(&clone), HashMap::from([("a".to_string(), a)]));
    assert_eq!(s.job_now("p", &b1).await, clone);

    let after = s.build_now("p", &bid).await;
    assert_eq!(
        job_names(&after).len(),
        5,
        "only the job itself is cloned: {after}"
    );
    assert_eq!(job_named(&after, "b")["superseded_by"], json!(b1));
    assert_eq!(
        deps(job_named(&after, "c")),
        HashMap::from([("b.1".to_string(), b1.clone())]),
        "c now follows the clone"
    );

    s.drain(&runner, |_| "finished").await;
    let r = s.post(&s.admin, &restart_path(&b1), json!({})).await;
    let c = clones(r.expect(201));
    let mut got: Vec<&String> = c.keys().collect();
    got.sort();
    assert_eq!(
        got,
        vec!["b.2", "c.1"],
        "the re-linked c is a descendant of b.1"
    );
    assert_eq!(c["b.2"].0, b1);
    assert_eq!(c["c.1"].0, cj);
    let c1 = s.job_now("p", &c["c.1"].1).await;
    assert_eq!(
        deps(&c1),
        HashMap::from([("b.2".to_string(), c["b.2"].1.clone())])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superseded_queued_job_is_killed_and_never_claimed() {
    let (s, runner) = server_p().await;
    let b = s
        .trigger_build(&s.admin, "p", pipeline(&[("up", &[]), ("down", &["up"])]))
        .await;
    let (up, down) = (job_id(&b, "up"), job_id(&b, "down"));
    let c = s.claim(&runner).await.expect("up is claimable");
    assert_eq!(c["job"]["id"], json!(up));
    s.finish(&runner, &up, &str_field(&c, "lease_id"), "finished")
        .await
        .expect(200);
    assert_eq!(s.job_now("p", &down).await["state"], "queued");

    // down is queued and claimable; restarting up must take it out of play.
    let r = s.post(&s.admin, &restart_path(&up), json!({})).await;
    let c = clones(r.expect(201));
    let down1 = c["down.1"].1.clone();
    let up1 = c["up.1"].1.clone();
    assert_eq!(c["down.1"].0, down);
    let old = s.job_now("p", &down).await;
    assert_eq!(old["state"], "killed", "{old}");
    assert_eq!(old["superseded_by"], json!(down1));

    let claimed: Vec<String> = s
        .drain(&runner, |_| "finished")
        .await
        .iter()
        .map(|j| str_field(j, "id"))
        .collect();
    assert_eq!(claimed, vec![up1, down1]);
    assert!(!claimed.contains(&down));
    assert_eq!(s.job_now("p", &down).await, old);

    // A skipped descendant is cloned with its failed parent and can run this time.
    let b = s
        .trigger_build(
            &s.admin,
            "p",
            pipeline(&[("flaky", &[]), ("then", &["flaky"])]),
        )
        .await;
    s.drain(&runner, |_| "failure").await;
    let then = job_id(&b, "then");
    assert_eq!(s.job_now("p", &then).await["state"], "skipped");
    let r = s
        .post(&s.admin, &restart_path(&job_id(&b, "flaky")), json!({}))
        .await;
    let c = clones(r.expect(201));
    assert_eq!(c["then.1"].0, then);
    let claimed = names(&s.drain(&runner, |_| "finished").await);
    assert_eq!(claimed, vec!["flaky.1", "then.1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_restart_refusals_are_409_with_precise_codes() {
    let (s, runner) = server_p().await;
    let b = s
        .trigger_build(
            &s.admin,
            "p",
            pipeline(&[
                ("first", &[]),
                ("second", &["first"]),
                ("third", &["second"]),
            ]),
        )
        .await;
    let bid = str_field(&b, "id");
    let (first, second) = (job_id(&b, "first"), job_id(&b, "second"));

    // Queued.
    refuse(&s, &bid, &restart_path(&first), 409, "job_not_terminal").await;
    refuse(&s, &bid, &rerun_path(&second), 409, "job_not_terminal").await;

    // Running.
    let c = s.claim(&runner).await.expect("first is claimable");
    refuse(&s, &bid, &restart_path(&first), 409, "job_not_terminal").await;
    refuse(&s, &bid, &rerun_path(&first), 409, "job_not_terminal").await;

    // A finished parent whose child runs.
    s.finish(&runner, &first, &str_field(&c, "lease_id"), "finished")
        .await
        .expect(200);
    let c = s.claim(&runner).await.expect("second is claimable");
    assert_eq!(c["job"]["id"], json!(second));
    refuse(&s, &bid, &restart_path(&first), 409, "descendant_running").await;

    // Skipped is not a restartable end.
    s.finish(&runner, &second, &str_field(&c, "lease_id"), "failure")
        .await
        .expect(200);
    let third = job_id(&b, "third");
    assert_eq!(s.job_now("p", &third).await["state"], "skipped");
    refuse(&s, &bid, &restart_path(&third), 409, "job_not_terminal").await;
    refuse(&s, &bid, &rerun_path(&third), 409, "job_not_terminal").await;

    let cj = job_id(&b, CREATE_JOBS);
    refuse(
        &s,
        &bid,
        &restart_path(&cj),
        409,
        "create_jobs_not_restartable",
    )
    .await;
    refuse(
        &s,
        &bid,
        &rerun_path(&cj),
        409,
        "create_jobs_not_restartable",
    )
    .await;

    // Once nothing below runs, the same parent restarts.
    let r = s.post(&s.admin, &restart_path(&first), json!({})).await;
    let c = clones(r.expect(201));
    let mut got: Vec<&String> = c.keys().collect();
    got.sort();
    assert_eq!(got, vec!["first.1", "second.1", "third.1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_restarts_of_one_job_make_exactly_one_clone() {
    let (s, runner) = server_p().await;
    let b = finished_build(
        &s,
        &runner,
        pipeline(&[("race", &[]), ("after", &["race"])]),
    )
    .await;
    let bid = str_field(&b, "id");
    let race = job_id(&b, "race");
    let path = restart_path(&race);
    let (x, y) = tokio::join!(
        s.post(&s.admin, &path, json!({})),
        s.post(&s.admin, &path, json!({}))
    );
    let mut statuses = [x.status, y.status];
    statuses.sort();
    assert_eq!(statuses, [201, 409], "x: {} y: {}", x.text, y.text);
    let loser = if x.status == 409 { &x } else { &y };
    assert_problem(loser, 409, "job_superseded");

    let after = s.build_now("p", &bid).await;
    assert_eq!(
        job_names(&after),
        vec![
            CREATE_JOBS.to_string(),
            "after".into(),
            "after.1".into(),
            "race".into(),
            "race.1".into()
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_idempotency_key_replays_the_first_restart() {
    let (s, runner) = server_p().await;
    let b = finished_build(&s, &runner, pipeline(&[("once", &[]), ("twice", &[])])).await;
    let bid = str_field(&b, "id");
    let send = |job: String, key: &'static str| {
        let s = &s;
        async move {
            fetch(
                s.call(reqwest::Method::POST, &s.admin, &restart_path(&job))
                    .header("idempotency-key", key)
                    .json(&json!({})),
            )
            .await
        }
    };
    let once = job_id(&b, "once");
    let first = send(once.clone(), "restart-once").await;
    first.expect(201);
    let head = s.audit_head().await;
    let again = send(once.clone(), "restart-once").await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body, first.body, "the replay is the first answer");
    assert_eq!(s.audit_head().await, head, "a replay is not a new mutation");
    let after = s.build_now("p", &bid).await;
    assert_eq!(
        job_names(&after),
        vec![
            CREATE_JOBS.to_string(),
            "once".into(),
            "once.1".into(),
            "twice".into()
        ]
    );

    let other = send(job_id(&b, "twice"), "restart-once").await;
    assert_problem(&other, 422, "idempotency_key_reused");
    assert_eq!(s.build_now("p", &bid).await, after);

    // Without the key the same request is a new attempt, refused because once is superseded.
    let r = s.post(&s.admin, &restart_path(&once), json!({})).await;
    assert_problem(&r, 409, "job_superseded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finish_with_a_state_a_runner_cannot_report_is_refused() {
    let (s, runner) = server_p().await;
    s.trigger_build(&s.admin, "p", pipeline(&[("solo", &[])]))
        .await;
    let c = s.claim(&runner).await.expect("solo is claimable");
    let id = str_field(&c["job"], "id");
    let lease = str_field(&c, "lease_id");
    let running = s.job_now("p", &id).await;
    // Job states a runner may not report name the field; a word that is no state at all
    // does not fit the body.
    for state in ["skipped", "queued", "running"] {
        let r = s.finish(&runner, &id, &lease, state).await;
        assert_field_problem(&r, "invalid_state", "state");
    }
    let r = s.finish(&runner, &id, &lease, "done").await;
    assert_problem(&r, 422, "invalid_body");
    assert_eq!(s.job_now("p", &id).await, running);
}

/// Rerun re-links the children to the clone, so a running child would end up below a
/// queued parent; the restart rule "not while a descendant is running" covers it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_is_refused_while_a_descendant_runs() {
    let (s, runner) = server_p().await;
    let b = s
        .trigger_build(
            &s.admin,
            "p",
            pipeline(&[("first", &[]), ("second", &["first"])]),
        )
        .await;
    let bid = str_field(&b, "id");
    let first = job_id(&b, "first");
    s.drain(&runner, |_| "finished").await;
    let r = s.post(&s.admin, &restart_path(&first), json!({})).await;
    let c = clones(r.expect(201));
    let (first1, second1) = (c["first.1"].1.clone(), c["second.1"].1.clone());
    let claimed = s.claim(&runner).await.expect("first.1 is claimable");
    s.finish(
        &runner,
        &first1,
        &str_field(&claimed, "lease_id"),
        "finished",
    )
    .await
    .expect(200);
    let running = s.claim(&runner).await.expect("second.1 is claimable");
    assert_eq!(running["job"]["id"], json!(second1));
    refuse(&s, &bid, &rerun_path(&first1), 409, "descendant_running").await;
}

/// A project with one single-job build, its job claimed: the runner token, job id and lease.
async fn one_running_job(s: &TestServer) -> (String, String, String) {
    s.create_project(&s.admin, "p").await;
    let runner = s.runner_token().await;
    s.trigger_build(&s.admin, "p", pipeline(&[("long", &[])]))
        .await;
    let c = s.claim(&runner).await.expect("long is claimable");
    let (id, lease) = (str_field(&c["job"], "id"), str_field(&c, "lease_id"));
    (runner, id, lease)
}

/// Heartbeats the job every 300 ms for `span`, insisting each renewal is a fresh, live lease.
async fn keep_alive(s: &TestServer, runner: &str, job: &str, lease: &str, span: Duration) {
    let until = std::time::Instant::now() + span;
    while std::time::Instant::now() < until {
        let before = jiff::Timestamp::now();
        let hb = s.heartbeat(runner, job, lease).await;
        let hb = hb.expect(200);
        assert_eq!(hb["abort"], false, "{hb}");
        assert!(
            ts(&hb["lease_expires_at"]) > before,
            "a renewal runs out in the future: {hb}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_a_lease_alive_without_writing_to_the_log() {
    let s = TestServer::start_with(|c| c.lease_secs = 2).await;
    let (runner, id, lease) = one_running_job(&s).await;
    let head = s.audit_head().await;

    // Well past the lease that the claim committed (a heartbeat every 300 ms leaves a busy
    // machine more than a second and a half of slack).
    keep_alive(&s, &runner, &id, &lease, Duration::from_secs(5)).await;
    assert_eq!(s.job_now("p", &id).await["state"], "running");
    assert_eq!(
        s.audit_head().await,
        head,
        "a renewal decides nothing, so it is not a commit"
    );

    // Silence: the renewed lease runs out and the sweep is a commit naming the job.
    let (sr, idr) = (&s, id.as_str());
    let ended = eventually(Duration::from_secs(20), move || async move {
        let j = sr.job_now("p", idr).await;
        (j["state"] != "running").then_some(j)
    })
    .await
    .expect("a lease nobody renews must expire");
    assert_eq!(ended["state"], "error", "{ended}");
    assert_eq!(ended["message"], "runner lost", "{ended}");
    let after = s.audit_entries(head).await;
    assert_eq!(after.len(), 1, "only the expiry was logged: {after:#?}");
    assert_eq!(after[0]["principal"], "system", "{after:#?}");
    assert!(after[0].to_string().contains(&id), "{after:#?}");

    // A heartbeat on the ended job is refused, and a refusal is logged like any other.
    let r = s.heartbeat(&runner, &id, &lease).await;
    assert_problem(&r, 409, "stale_lease");
    assert_eq!(s.audit_head().await, head + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_survives_a_restart_without_expiring() {
    let s = TestServer::start_with(|c| c.lease_secs = 2).await;
    let (runner, id, lease) = one_running_job(&s).await;
    keep_alive(&s, &runner, &id, &lease, Duration::from_millis(600)).await;

    // Down for longer than the lease: every renewal and the claim's own lease are out.
    let mut s = s;
    s.shutdown().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = s.restart().await;
    let head = s.audit_head().await;

    // The lease timer runs every 250 ms; a restart that expired leases would have by now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        s.job_now("p", &id).await["state"],
        "running",
        "the restart itself expires nothing"
    );
    assert_eq!(s.audit_head().await, head);
    keep_alive(&s, &runner, &id, &lease, Duration::from_secs(3)).await;
    assert_eq!(s.job_now("p", &id).await["state"], "running");
    let r = s.finish(&runner, &id, &lease, "finished").await;
    r.expect(200);
    assert_eq!(s.job_now("p", &id).await["state"], "finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_claim_refuses_what_a_busy_one_would() {
    let (s, runner) = server_p().await;
    // Nothing is queued: a well-formed claim is a 204 and no commit.
    let head = s.audit_head().await;
    assert_eq!(s.claim_wait(&runner, 0).await.status, 204);
    assert_eq!(s.audit_head().await, head);
    // A bad Idempotency-Key or labels over their limit are refused all the same, and audited.
    let r = fetch(
        s.call(reqwest::Method::POST, &runner, "/runner/claim")
            .header("idempotency-key", "has spaces")
            .json(&json!({"wait_seconds": 0})),
    )
    .await;
    assert_problem(&r, 400, "invalid_idempotency_key");
    assert_eq!(s.audit_head().await, head + 1);
    let label = "l".repeat(reeve::domain::bounds::RUNNER_LABEL + 1);
    let r = s
        .post(
            &runner,
            "/runner/claim",
            json!({"labels": [label], "wait_seconds": 0}),
        )
        .await;
    assert_field_problem(&r, "field_too_long", "labels");
    assert_eq!(s.audit_head().await, head + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_chunk_is_bytes_of_at_most_the_body_limit() {
    let (s, runner) = server_p().await;
    s.trigger_build(&s.admin, "p", pipeline(&[("a", &[])]))
        .await;
    let c = s.claim(&runner).await.expect("a job to claim");
    let job = str_field(&c["job"], "id");
    let lease = str_field(&c, "lease_id");
    let path = format!("/runner/jobs/{job}/log?lease_id={lease}");
    let big = vec![b'x'; reeve::domain::bounds::BODY + 1];
    let r = fetch(s.call(reqwest::Method::POST, &runner, &path).body(big)).await;
    assert_problem(&r, 413, "payload_too_large");
    let r = fetch(
        s.call(reqwest::Method::POST, &runner, &path)
            .header("content-type", "application/json")
            .body("\"not bytes\""),
    )
    .await;
    assert_problem(&r, 415, "unsupported_media_type");
    let text = s
        .get(&s.admin, &format!("{}/log", job_path("p", &job)))
        .await;
    assert_eq!(text.status, 200);
    assert_eq!(text.text, "", "a refused chunk appended nothing");
    let r = fetch(
        s.call(reqwest::Method::POST, &runner, &path)
            .header("content-type", "application/octet-stream")
            .body("line\n"),
    )
    .await;
    assert_eq!(r.expect(200)["length"], 5);
}

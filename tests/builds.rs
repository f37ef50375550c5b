//! Pipelines and builds over REST: validation, trigger, numbering, listing, lookup,
//! build restart and abort, job abort.

mod common;

use std::collections::HashSet;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

/// A server with projects `p` and `q`.
async fn server_pq() -> TestServer {
    let s = TestServer::start().await;
    s.create_project(&s.admin, "p").await;
    s.create_project(&s.admin, "q").await;
    s
}

fn ids(v: &Value) -> HashSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array of ids, got {v}"))
        .iter()
        .map(|x| {
            x.as_str()
                .unwrap_or_else(|| panic!("id is not a string: {x}"))
                .to_string()
        })
        .collect()
}

fn set(items: &[&str]) -> HashSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn num(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not an integer: {v}"))
}

/// Every build in `p` as the admin lists it: the evidence that a refusal created nothing.
async fn listing(s: &TestServer, project: &str) -> Value {
    let r = s.get(&s.admin, &builds_path(project)).await;
    r.expect(200).clone()
}

/// Posts a trigger that must be refused with 422 `code`, and checks nothing was created.
async fn refuse_trigger(s: &TestServer, body: Value, code: &str) -> Value {
    let before = listing(s, "p").await;
    let r = s.post(&s.admin, &builds_path("p"), body.clone()).await;
    let problem = assert_problem(&r, 422, code).clone();
    assert_eq!(
        listing(s, "p").await,
        before,
        "refused trigger {body} must not create a build"
    );
    problem
}

#[track_caller]
fn detail(p: &Value) -> String {
    str_field(p, "detail")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_pipelines_are_422_naming_the_offending_jobs() {
    let s = server_pq().await;

    let dup = json!({"jobs": [
        {"name": "twin-job", "run": "a"},
        {"name": "twin-job", "run": "b"},
    ]});
    let p = refuse_trigger(&s, json!({ "pipeline": dup }), "invalid_pipeline").await;
    assert_eq!(p["field"], "pipeline", "{p}");
    assert!(detail(&p).contains("twin-job"), "{p}");

    let unknown = pipeline(&[("lonely", &["ghost-parent"])]);
    let p = refuse_trigger(&s, json!({ "pipeline": unknown }), "invalid_pipeline").await;
    assert_eq!(p["field"], "pipeline", "{p}");
    assert!(detail(&p).contains("ghost-parent"), "{p}");

    let selfish = pipeline(&[("narcissus", &["narcissus"])]);
    let p = refuse_trigger(&s, json!({ "pipeline": selfish }), "invalid_pipeline").await;
    assert_eq!(p["field"], "pipeline", "{p}");
    assert!(detail(&p).contains("narcissus"), "{p}");

    // The object form of a dependency is validated like the plain one.
    let unknown_obj = json!({"jobs": [
        {"name": "waiter", "run": "x", "depends_on": [{"job": "phantom", "on": ["failure"]}]},
    ]});
    let p = refuse_trigger(&s, json!({ "pipeline": unknown_obj }), "invalid_pipeline").await;
    assert!(detail(&p).contains("phantom"), "{p}");

    // A job outside the cycle hangs off it, so the detail must single out the loop.
    let cyclic = pipeline(&[
        ("cx", &["cz"]),
        ("cy", &["cx"]),
        ("cz", &["cy"]),
        ("tail", &["cx"]),
    ]);
    let p = refuse_trigger(&s, json!({ "pipeline": cyclic }), "invalid_pipeline").await;
    assert_eq!(p["field"], "pipeline", "{p}");
    let d = detail(&p);
    // The path may start anywhere on the loop and may follow either direction of the edges.
    let loops = [
        "cx -> cy -> cz -> cx",
        "cy -> cz -> cx -> cy",
        "cz -> cx -> cy -> cz",
        "cx -> cz -> cy -> cx",
        "cz -> cy -> cx -> cz",
        "cy -> cx -> cz -> cy",
    ];
    assert!(
        loops.iter().any(|l| d.contains(l)),
        "cycle detail must spell the cycle path, got {d:?}"
    );

    for bad in [
        "Create Jobs",
        "Upper",
        "has space",
        "dot.ted",
        "a//b",
        "/lead",
        "trail/",
        "star*",
    ] {
        let body = json!({ "pipeline": {"jobs": [{"name": bad, "run": "x"}]} });
        let p = refuse_trigger(&s, body, "invalid_pipeline").await;
        assert_eq!(p["field"], "pipeline", "{p}");
        assert!(
            detail(&p).contains(bad),
            "detail must name the bad job {bad:?}: {p}"
        );
    }
    let p = refuse_trigger(
        &s,
        json!({ "pipeline": {"jobs": [{"name": "", "run": "x"}]} }),
        "invalid_pipeline",
    )
    .await;
    assert_eq!(p["field"], "pipeline", "{p}");

    let p = refuse_trigger(
        &s,
        json!({ "pipeline": {"jobs": [{"name": "idle", "run": ""}]} }),
        "invalid_pipeline",
    )
    .await;
    assert!(detail(&p).contains("idle"), "{p}");

    // The same rules accept the full name alphabet, nested segments included.
    let ok = pipeline(&[("a_1-b/c-2/d_e", &[]), ("z9", &["a_1-b/c-2/d_e"])]);
    let b = s.trigger_build(&s.admin, "p", ok).await;
    assert_eq!(
        job_names(&b),
        vec![CREATE_JOBS.to_string(), "a_1-b/c-2/d_e".into(), "z9".into()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_jobs_than_max_jobs_is_too_many_jobs() {
    let s = TestServer::start_with(|c| c.max_jobs = 3).await;
    s.create_project(&s.admin, "p").await;
    let four = pipeline(&[("j1", &[]), ("j2", &[]), ("j3", &[]), ("j4", &[])]);
    refuse_trigger(&s, json!({ "pipeline": four }), "too_many_jobs").await;

    // The limit counts the pipeline's jobs, not the implicit Create Jobs.
    let three = pipeline(&[("j1", &[]), ("j2", &[]), ("j3", &[])]);
    let b = s.trigger_build(&s.admin, "p", three).await;
    assert_eq!(b["jobs"].as_array().unwrap().len(), 4, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_pipeline_is_used_when_none_is_given() {
    let s = server_pq().await;
    refuse_trigger(&s, json!({}), "no_pipeline").await;

    let project = s.get(&s.admin, "/projects/p").await;
    assert_eq!(project.expect(200)["default_pipeline"], Value::Null);

    // An invalid default is refused like an invalid inline pipeline, and kept out.
    let r = s
        .patch(
            &s.admin,
            "/projects/p",
            json!({ "default_pipeline": pipeline(&[("self", &["self"])]) }),
        )
        .await;
    assert_problem(&r, 422, "invalid_pipeline");
    let after = s.get(&s.admin, "/projects/p").await;
    assert_eq!(after.expect(200), project.expect(200));

    let default = pipeline(&[("lint", &[]), ("test", &["lint"])]);
    let r = s
        .patch(
            &s.admin,
            "/projects/p",
            json!({ "default_pipeline": default.clone() }),
        )
        .await;
    let view = r.expect(200);
    assert_eq!(view["id"], "p");
    assert_eq!(
        view["default_pipeline"]["jobs"][0]["name"], "lint",
        "{view}"
    );
    assert_eq!(
        view["default_pipeline"]["jobs"][1]["name"], "test",
        "{view}"
    );
    let got = s.get(&s.admin, "/projects/p").await;
    assert_eq!(
        got.expect(200)["default_pipeline"],
        view["default_pipeline"]
    );

    let r = s.post(&s.admin, &builds_path("p"), json!({})).await;
    let b = r.expect(201);
    assert_eq!(
        job_names(b),
        vec![CREATE_JOBS.to_string(), "lint".into(), "test".into()]
    );

    // An inline pipeline wins over the default.
    let b = s
        .trigger_build(&s.admin, "p", pipeline(&[("inline", &[])]))
        .await;
    assert_eq!(
        job_names(&b),
        vec![CREATE_JOBS.to_string(), "inline".into()]
    );

    // The default belongs to p only.
    let r = s.post(&s.admin, &builds_path("q"), json!({})).await;
    assert_problem(&r, 422, "no_pipeline");

    let r = s
        .patch(&s.admin, "/projects/p", json!({ "default_pipeline": null }))
        .await;
    assert_eq!(r.expect(200)["default_pipeline"], Value::Null);
    refuse_trigger(&s, json!({}), "no_pipeline").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_expands_the_inline_pipeline_at_once() {
    let s = server_pq().await;
    let before = jiff::Timestamp::now();
    let pl = json!({"jobs": [
        {"name": "compile", "run": "make", "env": {"CC": "clang"}, "timeout_seconds": 60},
        {"name": "unit", "run": "make test", "depends_on": ["compile"]},
        {"name": "report", "run": "upload", "depends_on": [{"job": "unit", "on": ["failure", "error"]}]},
    ]});
    let r = s
        .post(
            &s.admin,
            &builds_path("p"),
            json!({ "pipeline": pl, "env": {"BUILD_KIND": "ci"} }),
        )
        .await;
    let b = r.expect(201).clone();
    let id = r.id();
    uuid::Uuid::parse_str(&id).expect("build id is a UUID");
    let loc = r.header("location").expect("Location header");
    assert!(
        loc.ends_with(&format!("/api/v1/projects/p/builds/{id}")),
        "Location {loc:?}"
    );
    let etag = r.header("etag").expect("ETag header").to_string();
    assert_eq!(etag, format!("\"{}\"", num(&b, "version")));

    for key in [
        "id",
        "project",
        "number",
        "restart_counter",
        "state",
        "trigger",
        "created_at",
        "created_by",
        "aborted",
        "version",
        "jobs",
    ] {
        assert!(b.get(key).is_some(), "build lacks {key:?}: {b}");
    }
    assert_eq!(b["project"], "p");
    assert_eq!(num(&b, "number"), 1);
    assert_eq!(num(&b, "restart_counter"), 1);
    assert_eq!(b["state"], "running", "queued jobs make the build running");
    assert_eq!(b["trigger"], "api");
    assert_eq!(b["aborted"], false);
    assert!(b["created_by"].is_string(), "{b}");
    assert!(ts(&b["created_at"]) >= before - secs(1));

    let jobs = b["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 4, "{b}");
    assert_eq!(jobs[0]["name"], CREATE_JOBS, "Create Jobs comes first");
    let cj = job_named(&b, CREATE_JOBS);
    assert_eq!(cj["state"], "finished", "{cj}");
    let cj_id = str_field(cj, "id");

    for j in jobs {
        for key in [
            "id",
            "build_id",
            "name",
            "state",
            "run",
            "env",
            "timeout_seconds",
            "depends_on",
            "superseded_by",
            "cloned_from",
            "created_at",
            "started_at",
            "finished_at",
            "exit_code",
            "message",
        ] {
            assert!(j.get(key).is_some(), "job lacks {key:?}: {j}");
        }
        assert_eq!(j["build_id"], json!(id), "{j}");
        assert_eq!(j["superseded_by"], Value::Null, "{j}");
        assert_eq!(j["cloned_from"], Value::Null, "{j}");
        if j["name"] != CREATE_JOBS {
            assert_eq!(j["state"], "queued", "{j}");
            assert_eq!(j["started_at"], Value::Null, "{j}");
            assert_eq!(j["finished_at"], Value::Null, "{j}");
        }
    }

    let compile = job_named(&b, "compile");
    assert_eq!(compile["run"], "make");
    assert_eq!(compile["env"]["CC"], "clang", "{compile}");
    assert_eq!(compile["timeout_seconds"], 60);
    assert_eq!(
        compile["depends_on"],
        json!([{"job": CREATE_JOBS, "job_id": cj_id, "on": ["finished"]}]),
        "a top job depends on Create Jobs"
    );
    let unit = job_named(&b, "unit");
    assert_eq!(
        unit["depends_on"],
        json!([{"job": "compile", "job_id": job_id(&b, "compile"), "on": ["finished"]}])
    );
    let report = job_named(&b, "report");
    let dep = &report["depends_on"][0];
    assert_eq!(dep["job"], "unit");
    assert_eq!(dep["job_id"], json!(job_id(&b, "unit")));
    let on: HashSet<String> = ids(&dep["on"]);
    assert_eq!(on, set(&["failure", "error"]));
    assert_eq!(report["depends_on"].as_array().unwrap().len(), 1);

    // The resource behind Location is the one just returned, and each job can be read alone.
    let got = s.get(&s.admin, &build_path("p", &id)).await;
    assert_eq!(got.expect(200), &b);
    assert_eq!(got.header("etag"), Some(etag.as_str()));
    for j in jobs {
        let r = s.get(&s.admin, &job_path("p", &str_field(j, "id"))).await;
        assert_eq!(r.expect(200), j);
        assert!(r.header("etag").is_some(), "job GET carries an ETag");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_numbers_count_per_project_from_one() {
    let s = server_pq().await;
    let pl = pipeline(&[("only", &[])]);
    for n in 1..=3u64 {
        let b = s.trigger_build(&s.admin, "p", pl.clone()).await;
        assert_eq!(num(&b, "number"), n, "{b}");
    }
    let b = s.trigger_build(&s.admin, "q", pl.clone()).await;
    assert_eq!(num(&b, "number"), 1, "q counts on its own: {b}");
    let b = s.trigger_build(&s.admin, "p", pl).await;
    assert_eq!(num(&b, "number"), 4, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_is_newest_first_with_cursor_paging() {
    let s = server_pq().await;
    let mut made = Vec::new();
    for _ in 0..5 {
        let b = s
            .trigger_build(&s.admin, "p", pipeline(&[("x", &[])]))
            .await;
        made.push(str_field(&b, "id"));
    }
    s.trigger_build(&s.admin, "q", pipeline(&[("x", &[])]))
        .await;

    let mut seen = Vec::new();
    let mut numbers = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let q = match &cursor {
            Some(c) => qs(&[("limit", "2"), ("cursor", c)]),
            None => "?limit=2".to_string(),
        };
        let r = s.get(&s.admin, &format!("{}{q}", builds_path("p"))).await;
        let page = r.expect(200);
        let builds = page["builds"].as_array().expect("builds array");
        assert!(builds.len() <= 2, "limit honoured: {page}");
        for b in builds {
            assert!(b.get("jobs").is_none(), "list items carry no jobs: {b}");
            assert_eq!(b["project"], "p");
            seen.push(str_field(b, "id"));
            numbers.push(num(b, "number"));
        }
        pages += 1;
        assert!(pages <= 5, "paging does not terminate");
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    made.reverse();
    assert_eq!(seen, made, "newest first, each build once");
    assert_eq!(numbers, vec![5, 4, 3, 2, 1]);

    let r = s
        .get(&s.admin, &format!("{}?limit=abc", builds_path("p")))
        .await;
    assert_problem(&r, 400, "invalid_query");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_out_of_scope_builds_and_jobs_are_404_and_bad_ids_400() {
    let s = server_pq().await;
    let bp = s
        .trigger_build(&s.admin, "p", pipeline(&[("x", &[])]))
        .await;
    let bq = s
        .trigger_build(&s.admin, "q", pipeline(&[("x", &[])]))
        .await;
    let (bp_id, bq_id) = (str_field(&bp, "id"), str_field(&bq, "id"));
    let (jp, jq) = (job_id(&bp, "x"), job_id(&bq, "x"));
    let missing = uuid::Uuid::now_v7().to_string();

    let r = s.get(&s.admin, &build_path("p", &missing)).await;
    assert_problem(&r, 404, "build_not_found");
    let r = s.get(&s.admin, &job_path("p", &missing)).await;
    assert_problem(&r, 404, "job_not_found");
    // A build or job of q is not reachable through p's path.
    let r = s.get(&s.admin, &build_path("p", &bq_id)).await;
    assert_problem(&r, 404, "build_not_found");
    let r = s.get(&s.admin, &job_path("p", &jq)).await;
    assert_problem(&r, 404, "job_not_found");
    let r = s.get(&s.admin, &builds_path("nope")).await;
    assert_problem(&r, 404, "project_not_found");

    // A token scoped to q sees nothing of p, and gets the same answer as for a missing project.
    let (_, q_only) = s.create_token("api", json!({"q": null}), true).await;
    for path in [
        builds_path("p"),
        build_path("p", &bp_id),
        job_path("p", &jp),
    ] {
        let r = s.get(&q_only, &path).await;
        assert_problem(&r, 404, "project_not_found");
    }
    let before = s.build_now("p", &bp_id).await;
    for path in [
        format!("{}/restart", build_path("p", &bp_id)),
        format!("{}/abort", build_path("p", &bp_id)),
        format!("{}/abort", job_path("p", &jp)),
        format!("{}/restart", job_path("p", &jp)),
        format!("{}/rerun", job_path("p", &jp)),
    ] {
        let r = s.post(&q_only, &path, json!({})).await;
        assert_problem(&r, 404, "project_not_found");
    }
    let r = s
        .post(
            &q_only,
            &builds_path("p"),
            json!({"pipeline": pipeline(&[("x", &[])])}),
        )
        .await;
    assert_problem(&r, 404, "project_not_found");
    assert_eq!(s.build_now("p", &bp_id).await, before);
    let r = s.get(&q_only, &build_path("q", &bq_id)).await;
    assert_eq!(r.expect(200)["id"], json!(bq_id));

    for bad in ["not-a-uuid", "123"] {
        let r = s.get(&s.admin, &build_path("p", bad)).await;
        assert_problem(&r, 400, "invalid_build_id");
        let r = s
            .post(
                &s.admin,
                &format!("{}/abort", build_path("p", bad)),
                json!({}),
            )
            .await;
        assert_problem(&r, 400, "invalid_build_id");
        let r = s.get(&s.admin, &job_path("p", bad)).await;
        assert_problem(&r, 400, "invalid_job_id");
        let r = s
            .post(
                &s.admin,
                &format!("{}/restart", job_path("p", bad)),
                json!({}),
            )
            .await;
        assert_problem(&r, 400, "invalid_job_id");
    }
    assert_eq!(s.build_now("p", &bp_id).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_restart_keeps_the_number_and_regenerates_the_graph() {
    let s = server_pq().await;
    let runner = s.runner_token().await;
    let pl = pipeline(&[("fetch", &[]), ("check", &["fetch"])]);
    let first = s.trigger_build(&s.admin, "p", pl).await;
    let first_id = str_field(&first, "id");
    s.drain(&runner, |_| "finished").await;
    let first = s.build_now("p", &first_id).await;
    assert_eq!(first["state"], "finished", "{first}");

    let r = s
        .post(
            &s.admin,
            &format!("{}/restart", build_path("p", &first_id)),
            json!({}),
        )
        .await;
    let second = r.expect(201).clone();
    let second_id = str_field(&second, "id");
    assert_ne!(second_id, first_id);
    let loc = r.header("location").expect("Location of the new build");
    assert!(loc.ends_with(&format!("/builds/{second_id}")), "{loc}");
    assert_eq!(num(&second, "number"), 1);
    assert_eq!(num(&second, "restart_counter"), 2);
    assert_eq!(second["aborted"], false);
    // Fresh jobs under the original names, not clones.
    assert_eq!(job_names(&second), job_names(&first));
    let old_ids: HashSet<String> = first["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| str_field(j, "id"))
        .collect();
    for j in second["jobs"].as_array().unwrap() {
        assert!(!old_ids.contains(&str_field(j, "id")), "{j}");
        assert_eq!(j["build_id"], json!(second_id));
        assert_eq!(j["cloned_from"], Value::Null, "{j}");
    }
    assert_eq!(
        job_named(&second, "check")["depends_on"][0]["job_id"],
        json!(job_id(&second, "fetch")),
        "dependencies point inside the new build"
    );
    assert_eq!(
        s.build_now("p", &first_id).await,
        first,
        "the restarted build itself is untouched"
    );

    // The new build runs like any other.
    let claimed = s.drain(&runner, |_| "finished").await;
    let names: Vec<&str> = claimed
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["fetch", "check"]);
    for j in &claimed {
        assert_eq!(j["build_id"], json!(second_id));
    }

    // Restarting the older generation again takes the next counter for the number.
    let r = s
        .post(
            &s.admin,
            &format!("{}/restart", build_path("p", &first_id)),
            json!({}),
        )
        .await;
    let third = r.expect(201).clone();
    assert_eq!(num(&third, "number"), 1);
    assert_eq!(num(&third, "restart_counter"), 3);
    assert_eq!(job_names(&third), job_names(&first));

    // Restarting a restarted build works the same way.
    s.drain(&runner, |_| "finished").await;
    let r = s
        .post(
            &s.admin,
            &format!("{}/restart", build_path("p", &second_id)),
            json!({}),
        )
        .await;
    let fourth = r.expect(201).clone();
    assert_eq!(num(&fourth, "number"), 1);
    assert_eq!(num(&fourth, "restart_counter"), 4);

    // Restarts do not consume build numbers.
    let next = s
        .trigger_build(&s.admin, "p", pipeline(&[("x", &[])]))
        .await;
    assert_eq!(num(&next, "number"), 2);
    assert_eq!(num(&next, "restart_counter"), 1);

    let listed = listing(&s, "p").await;
    let counters: Vec<(u64, u64)> = listed["builds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (num(b, "number"), num(b, "restart_counter")))
        .collect();
    assert_eq!(counters, vec![(2, 1), (1, 4), (1, 3), (1, 2), (1, 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_abort_kills_queued_and_running_jobs_only() {
    let s = server_pq().await;
    let runner = s.runner_token().await;
    let b = s
        .trigger_build(
            &s.admin,
            "p",
            pipeline(&[("root", &[]), ("left", &["root"]), ("right", &["root"])]),
        )
        .await;
    let bid = str_field(&b, "id");

    let c = s.claim(&runner).await.expect("root is claimable");
    assert_eq!(c["job"]["name"], "root");
    let r = s
        .finish(
            &runner,
            &str_field(&c["job"], "id"),
            &str_field(&c, "lease_id"),
            "finished",
        )
        .await;
    r.expect(200);
    let running = s
        .claim(&runner)
        .await
        .expect("a child of root is claimable");
    let running_id = str_field(&running["job"], "id");
    let lease = str_field(&running, "lease_id");
    let queued_name = if running["job"]["name"] == "left" {
        "right"
    } else {
        "left"
    };
    let queued_id = job_id(&b, queued_name);

    let r = s
        .post(
            &s.admin,
            &format!("{}/abort", build_path("p", &bid)),
            json!({}),
        )
        .await;
    let aborted = ids(&r.expect(200)["aborted"]);
    assert_eq!(aborted, set(&[&running_id, &queued_id]));

    let after = s.build_now("p", &bid).await;
    assert_eq!(after["aborted"], true, "{after}");
    assert_eq!(after["state"], "killed", "{after}");
    assert_eq!(job_named(&after, CREATE_JOBS)["state"], "finished");
    assert_eq!(job_named(&after, "root")["state"], "finished");
    assert_eq!(job_named(&after, "left")["state"], "killed");
    assert_eq!(job_named(&after, "right")["state"], "killed");

    // The runner learns of the abort on its next heartbeat.
    let hb = s.heartbeat(&runner, &running_id, &lease).await;
    assert_eq!(hb.expect(200)["abort"], true);
    assert!(
        s.claim(&runner).await.is_none(),
        "nothing of an aborted build is claimable"
    );

    let r = s
        .post(
            &s.admin,
            &format!("{}/abort", build_path("p", &bid)),
            json!({}),
        )
        .await;
    assert_eq!(r.expect(200)["aborted"], json!([]));
    let r = s
        .delete(&s.admin, &format!("{}/abort", build_path("p", &bid)))
        .await;
    assert_eq!(r.expect(200)["aborted"], json!([]));
    assert_eq!(
        s.build_now("p", &bid).await,
        after,
        "a repeated abort changes nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_abort_by_delete_kills_everything_queued() {
    let s = server_pq().await;
    let b = s
        .trigger_build(&s.admin, "p", pipeline(&[("a", &[]), ("b", &["a"])]))
        .await;
    let bid = str_field(&b, "id");
    let r = s
        .delete(&s.admin, &format!("{}/abort", build_path("p", &bid)))
        .await;
    let aborted = ids(&r.expect(200)["aborted"]);
    assert_eq!(aborted, set(&[&job_id(&b, "a"), &job_id(&b, "b")]));
    let after = s.build_now("p", &bid).await;
    assert_eq!(after["state"], "killed");
    assert!(
        num(&after, "version") > num(&b, "version"),
        "abort bumps the version"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_abort_of_queued_running_and_terminal_jobs() {
    let s = server_pq().await;
    let runner = s.runner_token().await;
    let b = s
        .trigger_build(
            &s.admin,
            "p",
            pipeline(&[("head", &[]), ("next", &["head"])]),
        )
        .await;
    let bid = str_field(&b, "id");
    let (head, next) = (job_id(&b, "head"), job_id(&b, "next"));

    let r = s
        .post(
            &s.admin,
            &format!("{}/abort", job_path("p", &next)),
            json!({}),
        )
        .await;
    assert_eq!(r.expect(200)["aborted"], json!([next]));
    let j = s.job_now("p", &next).await;
    assert_eq!(j["state"], "killed", "{j}");
    assert_eq!(s.job_now("p", &head).await["state"], "queued");

    let c = s.claim(&runner).await.expect("head is claimable");
    assert_eq!(c["job"]["id"], json!(head));
    let lease = str_field(&c, "lease_id");
    let r = s
        .delete(&s.admin, &format!("{}/abort", job_path("p", &head)))
        .await;
    assert_eq!(r.expect(200)["aborted"], json!([head]));
    assert_eq!(s.job_now("p", &head).await["state"], "killed");

    let hb = s.heartbeat(&runner, &head, &lease).await;
    assert_eq!(hb.expect(200)["abort"], true);
    // The runner's late report is accepted but cannot resurrect the job.
    let r = s.finish(&runner, &head, &lease, "finished").await;
    assert_eq!(r.expect(200)["state"], "killed", "{}", r.text);
    let settled = s.build_now("p", &bid).await;
    assert_eq!(job_named(&settled, "head")["state"], "killed");
    assert_eq!(settled["state"], "killed");

    for id in [&head, &next, &job_id(&b, CREATE_JOBS)] {
        let r = s
            .post(&s.admin, &format!("{}/abort", job_path("p", id)), json!({}))
            .await;
        assert_eq!(r.expect(200)["aborted"], json!([]), "terminal job {id}");
        let r = s
            .delete(&s.admin, &format!("{}/abort", job_path("p", id)))
            .await;
        assert_eq!(r.expect(200)["aborted"], json!([]), "terminal job {id}");
    }
    assert_eq!(s.build_now("p", &bid).await, settled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_routes_refuse_other_methods_and_unknown_verbs() {
    let s = server_pq().await;
    let b = s
        .trigger_build(&s.admin, "p", pipeline(&[("a", &[])]))
        .await;
    let bid = str_field(&b, "id");
    let r = fetch(s.call(
        Method::PUT,
        &s.admin,
        &format!("{}/restart", build_path("p", &bid)),
    ))
    .await;
    assert_problem(&r, 405, "method_not_allowed");
    assert!(r.header("allow").is_some(), "405 carries Allow");
    let r = s
        .post(
            &s.admin,
            &format!("{}/explode", build_path("p", &bid)),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(s.build_now("p", &bid).await, b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_guards_build_and_job_verbs() {
    let s = server_pq().await;
    let runner = s.runner_token().await;
    let b = s
        .trigger_build(&s.admin, "p", pipeline(&[("a", &[])]))
        .await;
    let bid = str_field(&b, "id");
    s.drain(&runner, |_| "failure").await;
    let a = job_id(&b, "a");

    let got = s.get(&s.admin, &job_path("p", &a)).await;
    let etag = got.header("etag").expect("job ETag").to_string();
    assert_eq!(etag, format!("\"{}\"", num(got.expect(200), "version")));
    let before = s.build_now("p", &bid).await;
    let stale = format!("\"{}\"", num(got.expect(200), "version") + 7);
    let r = fetch(
        s.call(
            Method::POST,
            &s.admin,
            &format!("{}/restart", job_path("p", &a)),
        )
        .header("if-match", stale)
        .json(&json!({})),
    )
    .await;
    assert_problem(&r, 412, "precondition_failed");
    assert_eq!(s.build_now("p", &bid).await, before);
    let r = fetch(
        s.call(
            Method::POST,
            &s.admin,
            &format!("{}/restart", job_path("p", &a)),
        )
        .header("if-match", etag)
        .json(&json!({})),
    )
    .await;
    r.expect(201);

    let got = s.get(&s.admin, &build_path("p", &bid)).await;
    let etag = got.header("etag").expect("build ETag").to_string();
    let stale = format!("\"{}\"", num(got.expect(200), "version") + 7);
    let before = got.body.clone();
    let r = fetch(
        s.call(
            Method::POST,
            &s.admin,
            &format!("{}/abort", build_path("p", &bid)),
        )
        .header("if-match", stale)
        .json(&json!({})),
    )
    .await;
    assert_problem(&r, 412, "precondition_failed");
    assert_eq!(s.build_now("p", &bid).await, before);
    let r = fetch(
        s.call(
            Method::POST,
            &s.admin,
            &format!("{}/abort", build_path("p", &bid)),
        )
        .header("if-match", etag)
        .json(&json!({})),
    )
    .await;
    assert_eq!(r.expect(200)["aborted"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_idempotency_key_on_trigger_makes_one_build() {
    let s = server_pq().await;
    let body = json!({ "pipeline": pipeline(&[("a", &[])]) });
    let send = || {
        fetch(
            s.call(Method::POST, &s.admin, &builds_path("p"))
                .header("idempotency-key", "trigger-once")
                .json(&body),
        )
    };
    let first = send().await;
    first.expect(201);
    let again = send().await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body, first.body, "the replay is the first answer");
    let listed = listing(&s, "p").await;
    assert_eq!(listed["builds"].as_array().unwrap().len(), 1, "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_integer_is_read_as_json_schema_reads_one() {
    let s = TestServer::start().await;
    s.create_project(&s.admin, "p").await;
    let b = s
        .trigger_build(
            &s.admin,
            "p",
            json!({"jobs": [{"name": "a", "run": "true", "timeout_seconds": 60.0}]}),
        )
        .await;
    assert_eq!(job_named(&b, "a")["timeout_seconds"], 60);
    let before = s.get(&s.admin, &builds_path("p")).await.body;
    for (value, shown) in [
        (json!(60.5), "60.5"),
        (json!(-1), "-1"),
        (json!(1e30), "1e30"),
    ] {
        let r = s
            .post(
                &s.admin,
                &builds_path("p"),
                json!({"pipeline": {"jobs": [{"name": "a", "run": "true", "timeout_seconds": value}]}}),
            )
            .await;
        assert_field_problem(&r, "invalid_body", "pipeline.jobs[0].timeout_seconds");
        assert!(
            r.body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("a whole number")),
            "{shown}: {}",
            r.text
        );
    }
    assert_eq!(s.get(&s.admin, &builds_path("p")).await.body, before);
    // A job's log is text: asking for JSON only is refused before anything is read.
    let job = job_id(&b, "a");
    let r = fetch(
        s.call(
            Method::GET,
            &s.admin,
            &format!("{}/log", job_path("p", &job)),
        )
        .header("accept", "application/json"),
    )
    .await;
    assert_problem(&r, 406, "not_acceptable");
    let r = fetch(
        s.call(
            Method::GET,
            &s.admin,
            &format!("{}/log", job_path("p", &job)),
        )
        .header("accept", "text/plain"),
    )
    .await;
    assert_eq!(r.status, 200);
}

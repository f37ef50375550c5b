//! Runners run real processes: output is readable while a job runs, aborts and timeouts stop
//! the whole process group (SIGTERM, then SIGKILL after the grace period), a runner killed
//! mid-job leaves the job to its lease, and a watch's build runs with the watch's env.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn with_runner(c: &mut reeve::server::ServerConfig) {
    c.runners = 1;
    c.kill_grace_secs = 1;
    // Heartbeats come every third of the lease: a short lease makes aborts quick.
    c.lease_secs = 3;
}

async fn run_one(s: &TestServer, job: Value) -> (String, String) {
    s.create_project(&s.admin, "p").await;
    let b = s.trigger_build(&s.admin, "p", json!({"jobs": [job]})).await;
    let build = str_field(&b, "id");
    let job = b["jobs"][1]["id"].as_str().unwrap().to_string();
    (build, job)
}

async fn log(s: &TestServer, job: &str) -> String {
    let r = s
        .get(&s.admin, &format!("/projects/p/jobs/{job}/log"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.text
}

async fn until_state(s: &TestServer, job: &str, limit: Duration, want: &[&str]) -> Value {
    eventually(limit, || async {
        let j = s.job_now("p", job).await;
        want.contains(&j["state"].as_str().unwrap_or(""))
            .then_some(j)
    })
    .await
    .unwrap_or_else(|| panic!("job {job} did not reach {want:?}"))
}

/// The pid a job printed as its first line, once its output has arrived.
async fn printed_pid(s: &TestServer, job: &str) -> i32 {
    eventually(Duration::from_secs(10), || async {
        log(s, job)
            .await
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
    })
    .await
    .expect("the job printed its pid")
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_readable_while_the_job_runs() {
    let s = TestServer::start_with(with_runner).await;
    let (_, job) = run_one(
        &s,
        json!({"name": "talk", "run": "echo started $REEVE_JOB_NAME $REEVE_PROJECT; sleep 2; echo done >&2"}),
    )
    .await;
    let seen = eventually(Duration::from_secs(10), || async {
        let text = log(&s, &job).await;
        let state = s.job_now("p", &job).await["state"].clone();
        (text.contains("started talk p") && state == "running").then_some(text)
    })
    .await
    .expect("output arrived while the job ran");
    assert!(!seen.contains("done"));
    let j = until_state(&s, &job, Duration::from_secs(10), &["finished"]).await;
    assert_eq!(j["exit_code"], 0);
    assert_eq!(log(&s, &job).await, "started talk p\ndone\n");
    let tail = s
        .get(
            &s.admin,
            &format!("/projects/p/jobs/{job}/log?tail_lines=1"),
        )
        .await;
    assert_eq!(tail.text, "done\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_fails_with_its_exit_code() {
    let s = TestServer::start_with(with_runner).await;
    let (build, job) = run_one(&s, json!({"name": "bad", "run": "exit 7"})).await;
    let j = until_state(&s, &job, Duration::from_secs(10), &["failure"]).await;
    assert_eq!(j["exit_code"], 7);
    assert_eq!(s.build_now("p", &build).await["state"], "failure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_job_is_killed_and_its_process_is_gone() {
    let s = TestServer::start_with(with_runner).await;
    let (_, job) = run_one(
        &s,
        json!({"name": "long", "run": "echo $$; exec sleep 600"}),
    )
    .await;
    let pid = printed_pid(&s, &job).await;
    assert!(alive(pid));
    s.post(
        &s.admin,
        &format!("/projects/p/jobs/{job}/abort"),
        json!({}),
    )
    .await
    .expect(200);
    let j = until_state(&s, &job, Duration::from_secs(5), &["killed"]).await;
    assert_eq!(j["message"], "aborted");
    let gone = eventually(Duration::from_secs(10), || async {
        (!alive(pid)).then_some(())
    })
    .await;
    assert!(gone.is_some(), "process {pid} survived the abort");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_ignoring_sigterm_is_killed_after_the_grace_period() {
    let s = TestServer::start_with(with_runner).await;
    let (_, job) = run_one(
        &s,
        json!({"name": "stubborn", "run": "trap '' TERM; echo $$; sleep 600"}),
    )
    .await;
    let pid = printed_pid(&s, &job).await;
    s.delete(&s.admin, &format!("/projects/p/jobs/{job}/abort"))
        .await
        .expect(200);
    let gone = eventually(Duration::from_secs(10), || async {
        (!alive(pid)).then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "process {pid} ignored SIGTERM and SIGKILL never came"
    );
    assert_eq!(s.job_now("p", &job).await["state"], "killed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_timeout_fails() {
    let s = TestServer::start_with(with_runner).await;
    let (_, job) = run_one(
        &s,
        json!({"name": "slow", "run": "echo $$; exec sleep 600", "timeout_seconds": 1}),
    )
    .await;
    let pid = printed_pid(&s, &job).await;
    let j = until_state(&s, &job, Duration::from_secs(10), &["failure"]).await;
    assert_eq!(j["message"], "timed out after 1 s");
    assert!(!alive(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_killed_mid_job_leaves_the_job_to_its_lease() {
    let s = TestServer::start_with(|c| c.lease_secs = 2).await;
    let runner = s.runner_token().await;
    let work = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_reeve"))
        .args([
            "runner",
            "--server",
            &s.base,
            "--token",
            &runner,
            "--concurrency",
            "1",
        ])
        .arg("--work-dir")
        .arg(work.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start reeve runner");
    let (_, job) = run_one(
        &s,
        json!({"name": "orphan", "run": "echo $$; exec sleep 600"}),
    )
    .await;
    let pid = printed_pid(&s, &job).await;
    child.kill().expect("SIGKILL the runner");
    let _ = child.wait();
    let j = until_state(&s, &job, Duration::from_secs(15), &["error"]).await;
    assert_eq!(j["message"], "runner lost");
    // Nobody is left to stop the orphaned process; the test cleans up after itself.
    // SAFETY: SIGKILL to a process this test started (through the runner).
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_fires_a_build_that_runs_with_the_watch_env() {
    let s = TestServer::start_with(with_runner).await;
    s.create_project(&s.admin, "p").await;
    s.patch(
        &s.admin,
        "/projects/p",
        json!({"default_pipeline": {"jobs": [
            {"name": "sync", "run": "echo $REEVE_WATCH_TO_URI $REEVE_BUILD_NUMBER"}
        ]}}),
    )
    .await
    .expect(200);
    let mut body = watch_body("p", "viking://res/live");
    body["watch_interval"] = json!(0.02);
    let id = s.create_watch(&s.admin, body).await.id();
    let w = eventually(Duration::from_secs(15), || async {
        let w = s.watch_now(&id).await;
        (w["last_run"]["outcome"] == "finished").then_some(w)
    })
    .await
    .expect("a fired build ran to the end");
    let build = s
        .build_now("p", w["last_run"]["build_id"].as_str().unwrap())
        .await;
    let job = build["jobs"][1]["id"].as_str().unwrap().to_string();
    let number = build["number"].as_u64().unwrap();
    assert_eq!(log(&s, &job).await, format!("viking://res/live {number}\n"));
    assert_eq!(w["consecutive_failures"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_streams_output_until_the_job_ends() {
    let s = TestServer::start_with(with_runner).await;
    let (_, job) = run_one(
        &s,
        json!({"name": "ticker", "run": "for i in 1 2 3; do echo tick $i; sleep 0.5; done"}),
    )
    .await;
    until_state(&s, &job, Duration::from_secs(10), &["running"]).await;
    // The response stays open while the job runs and closes when it has ended.
    let r = s
        .get(&s.admin, &format!("/projects/p/jobs/{job}/log?follow=true"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text, "tick 1\ntick 2\ntick 3\n");
    assert_eq!(s.job_now("p", &job).await["state"], "finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restarted_during_a_running_build_settles_the_job() {
    let s = TestServer::start_with(|c| {
        with_runner(c);
        c.lease_secs = 2;
    })
    .await;
    let (build, job) = run_one(
        &s,
        json!({"name": "long", "run": "echo $$; exec sleep 600"}),
    )
    .await;
    let pid = printed_pid(&s, &job).await;
    // Shutting down stops the embedded runner, which kills its jobs and leaves them to their
    // leases; after the restart the lease runs out and the job ends in error.
    let s = s.restart().await;
    assert!(!alive(pid), "the job's process outlived the server");
    let j = until_state(&s, &job, Duration::from_secs(15), &["error"]).await;
    assert_eq!(j["message"], "runner lost");
    assert_eq!(s.build_now("p", &build).await["state"], "error");
}

async fn generated_build(s: &TestServer, generate: &str) -> (String, String) {
    s.create_project(&s.admin, "p").await;
    let b = s
        .trigger_build(&s.admin, "p", json!({"generate": generate}))
        .await;
    assert_eq!(
        b["jobs"].as_array().unwrap().len(),
        1,
        "only Create Jobs at first: {b}"
    );
    assert_eq!(b["jobs"][0]["state"], "queued");
    (
        str_field(&b, "id"),
        b["jobs"][0]["id"].as_str().unwrap().to_string(),
    )
}

async fn until_build(s: &TestServer, build: &str, want: &str) -> Value {
    eventually(Duration::from_secs(15), || async {
        let b = s.build_now("p", build).await;
        (b["state"] == want).then_some(b)
    })
    .await
    .unwrap_or_else(|| panic!("build {build} did not end {want}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_pipeline_runs_and_a_restart_runs_the_generator_again() {
    let s = TestServer::start_with(with_runner).await;
    let generator = r#"echo '{"jobs": [{"name": "a", "run": "echo from-a"}, {"name": "b", "run": "echo from-b", "depends_on": ["a"]}]}'"#;
    let (build, _) = generated_build(&s, generator).await;
    let b = until_build(&s, &build, "finished").await;
    assert_eq!(job_names(&b), ["Create Jobs", "a", "b"]);
    let a = job_id(&b, "a");
    assert_eq!(log(&s, &a).await, "from-a\n");
    let restarted = s
        .post(
            &s.admin,
            &format!("/projects/p/builds/{build}/restart"),
            json!({}),
        )
        .await;
    let again = str_field(restarted.expect(201), "id");
    let b2 = until_build(&s, &again, "finished").await;
    assert_eq!(job_names(&b2), ["Create Jobs", "a", "b"]);
    assert_eq!(b2["restart_counter"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_generator_output_fails_create_jobs_with_the_reason() {
    let s = TestServer::start_with(with_runner).await;
    let (build, create_jobs) = generated_build(&s, "echo this is not a pipeline").await;
    until_build(&s, &build, "failure").await;
    let j = s.job_now("p", &create_jobs).await;
    assert_eq!(j["state"], "failure");
    let message = j["message"].as_str().unwrap();
    assert!(message.starts_with("invalid pipeline:"), "{message}");
    let text = log(&s, &create_jobs).await;
    assert!(text.starts_with("this is not a pipeline\n"), "{text}");
    assert!(text.contains(&format!("[reeve] {message}")), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_cycle_is_named_in_the_failure() {
    let s = TestServer::start_with(with_runner).await;
    let generator = r#"echo '{"jobs": [{"name": "x", "run": "true", "depends_on": ["y"]}, {"name": "y", "run": "true", "depends_on": ["x"]}]}'"#;
    let (build, create_jobs) = generated_build(&s, generator).await;
    let b = until_build(&s, &build, "failure").await;
    assert_eq!(
        job_names(&b),
        ["Create Jobs"],
        "no job of an invalid pipeline joins"
    );
    let j = s.job_now("p", &create_jobs).await;
    assert!(
        j["message"].as_str().unwrap().contains("x -> y -> x"),
        "{j}"
    );
}

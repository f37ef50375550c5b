//! Job log retention: the output of jobs that ended longer ago than the retention period is
//! deleted by a prune commit reeve submits to itself; reading it then answers 410
//! `log_pruned` on every door, while the job's record and its audit trail stay.
//!
//! Sections: the rule in the pure core (a clock the test sets), then a real server on a real
//! data dir with a retention of seconds and a pass every 100 ms.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use reeve::domain::{
    Command, Ctx, Event, JobSpec, JobState, MAX_LOGS_PRUNED, Millis, Pipeline, Plane, Principal,
    Rejection, Rules, State, TokenKind, decide, log_readable,
};
use reeve::log::{Commit, CommitBody, GENESIS, Hash, Meta, Outcome, Store, SyncMode};
use reeve::server::ServerConfig;
use serde_json::{Value, json};
use uuid::Uuid;

// ---------------------------------------------------------------------------
// The rule, in the pure core
// ---------------------------------------------------------------------------

/// A log folded in memory, with commit times the test chooses.
struct Log {
    state: State,
    prev: Hash,
    n: u128,
}

impl Log {
    fn new() -> Log {
        Log {
            state: State::default(),
            prev: GENESIS,
            n: 0,
        }
    }

    /// Decides and applies one command at `at`; the decision and the stored record's size.
    fn run(
        &mut self,
        principal: Principal,
        command: Command,
        at: Millis,
    ) -> (Result<Vec<Event>, Rejection>, usize) {
        self.n += 1;
        let plane = match principal {
            Principal::System => Plane::System,
            Principal::Token(_) => Plane::Rest,
        };
        let ctx = Ctx {
            at,
            principal,
            plane,
            new_id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + (self.n << 32)),
            rules: Rules::default(),
            renewals: Default::default(),
            cold_prunable: Vec::new(),
        };
        let decided = decide(&self.state, &command, &ctx).map_err(Rejection::from);
        let (outcome, events) = match &decided {
            Ok(events) => (Outcome::Accepted, events.clone()),
            Err(r) => (
                Outcome::Rejected {
                    status: r.status,
                    code: r.code.clone(),
                    reason: r.reason.clone(),
                    field: r.field.clone(),
                },
                Vec::new(),
            ),
        };
        let body = CommitBody {
            at,
            meta: Meta {
                principal,
                plane,
                request_id: self.n.to_string(),
                idempotency_key: None,
                command,
            },
            outcome,
            events,
        };
        let (commit, record) =
            Commit::seal(self.state.head_seq + 1, self.prev, body).expect("the commit seals");
        self.prev = commit.hash;
        self.state.apply(&commit);
        (decided, record.len())
    }

    #[track_caller]
    fn ok(&mut self, command: Command, at: Millis) -> Vec<Event> {
        let (decided, _) = self.run(Principal::System, command, at);
        decided.unwrap_or_else(|r| panic!("refused: {r:?}"))
    }
}

fn prune(before: Millis) -> Command {
    Command::PruneJobLogs { before }
}

#[test]
fn a_prune_names_at_most_its_bound_oldest_first_and_only_jobs_that_ran_and_ended() {
    let mut log = Log::new();
    log.ok(
        Command::CreateProject {
            id: "p".into(),
            name: None,
        },
        1_000,
    );
    let specs = (0..300)
        .map(|i| JobSpec {
            name: format!("j{i}"),
            run: "true".into(),
            depends_on: vec![],
            env: BTreeMap::new(),
            timeout_seconds: None,
        })
        .collect();
    log.ok(
        Command::TriggerBuild {
            project: "p".into(),
            pipeline: Some(Pipeline::Jobs(specs)),
            env: BTreeMap::new(),
        },
        2_000,
    );
    let create_jobs = log
        .state
        .jobs
        .values()
        .find(|j| j.name == "Create Jobs")
        .map(|j| j.id)
        .expect("Create Jobs");
    // Every job is claimed; all but the last end, one after the other.
    let mut ended = Vec::new();
    let mut running = None;
    for i in 0..300 {
        let at = 10_000 + 2 * i;
        let claimed = log.ok(Command::ClaimJob { labels: vec![] }, at);
        let [Event::JobClaimed { id, lease_id, .. }] = claimed.as_slice() else {
            panic!("a claim: {claimed:?}")
        };
        if i == 299 {
            running = Some(*id);
            break;
        }
        log.ok(
            Command::FinishJob {
                job: *id,
                lease_id: *lease_id,
                state: JobState::Finished,
                exit_code: Some(0),
                message: None,
            },
            at + 1,
        );
        ended.push(*id);
    }
    let running = running.expect("the last job runs");
    let at = 20_000;

    // Only reeve asks, and never for a cut-off after the commit time.
    let issued = log.ok(
        Command::IssueToken {
            secret_hash: [9; 32],
            kind: TokenKind::Admin,
            description: "admin".into(),
            enabled_projects: BTreeMap::new(),
            allow_trigger: true,
            expires_at: None,
        },
        at,
    );
    let [Event::TokenIssued { id: admin, .. }] = issued.as_slice() else {
        panic!("a token: {issued:?}")
    };
    let before = log.state.clone();
    let (r, _) = log.run(Principal::Token(*admin), prune(at), at);
    let r = r.expect_err("an admin token cannot prune");
    assert_eq!((r.status, r.code.as_str()), (403, "system_only"));
    let (r, _) = log.run(Principal::System, prune(at + 1), at);
    let r = r.expect_err("a cut-off in the future");
    assert_eq!((r.status, r.code.as_str()), (422, "invalid_cutoff"));
    assert_eq!(log.state.jobs, before.jobs, "a refusal prunes nothing");

    // The oldest MAX_LOGS_PRUNED first, in a commit of a few KiB; then the rest; then nothing.
    assert_eq!(MAX_LOGS_PRUNED, 256);
    let job_before = (*log.state.jobs[&ended[0]]).clone();
    let (first, size) = log.run(Principal::System, prune(at), at);
    assert_eq!(
        first.unwrap(),
        vec![Event::JobLogsPruned {
            before: at,
            jobs: ended[..256].to_vec()
        }]
    );
    assert!(size <= 5 * 1024, "a prune commit of {size} bytes");
    let second = log.ok(prune(at), at + 1);
    assert_eq!(
        second,
        vec![Event::JobLogsPruned {
            before: at,
            jobs: ended[256..].to_vec()
        }]
    );
    assert_eq!(log.ok(prune(at), at + 2), vec![]);

    // A pruned job is the same job with its log marked gone: no version bump, nothing else.
    let job_after = (*log.state.jobs[&ended[0]]).clone();
    assert_eq!(job_after.log_pruned_at, Some(at));
    assert_eq!(
        reeve::domain::Job {
            log_pruned_at: None,
            ..job_after.clone()
        },
        job_before
    );
    let gone = Rejection::from(log_readable(&job_after).expect_err("a pruned log is not readable"));
    assert_eq!((gone.status, gone.code.as_str()), (410, "log_pruned"));
    assert!(gone.reason.contains("retention"), "{}", gone.reason);
    assert!(
        gone.reason.contains(&ended[0].to_string()),
        "{}",
        gone.reason
    );

    // Never the running job, nor Create Jobs (it never ran on a runner: it has no output).
    for id in [running, create_jobs] {
        assert_eq!(log.state.jobs[&id].log_pruned_at, None);
        assert!(log_readable(&log.state.jobs[&id]).is_ok());
    }
    assert_eq!(log.state.prunable_logs(Millis::MAX).count(), 0);
    // Once it ends, the running job is due for a cut-off after its end, not at it.
    let lease = log.state.jobs[&running]
        .lease
        .as_ref()
        .map(|l| l.id)
        .unwrap();
    log.ok(
        Command::FinishJob {
            job: running,
            lease_id: lease,
            state: JobState::Failure,
            exit_code: Some(1),
            message: None,
        },
        30_000,
    );
    assert_eq!(log.state.prunable_logs(30_000).count(), 0);
    assert_eq!(
        log.state.prunable_logs(30_001).collect::<Vec<_>>(),
        vec![running]
    );
}

// ---------------------------------------------------------------------------
// A real server
// ---------------------------------------------------------------------------

const RETENTION: Duration = Duration::from_secs(5);
const PASS: Duration = Duration::from_millis(100);

fn retention(cfg: &mut ServerConfig) {
    cfg.job_log_retention = Some(RETENTION);
    cfg.job_log_prune_every = PASS;
}

fn short_retention(cfg: &mut ServerConfig) {
    cfg.job_log_retention = Some(Duration::from_secs(1));
    cfg.job_log_prune_every = PASS;
}

/// Claims every claimable job: name → (id, lease).
async fn claim_all(s: &TestServer, runner: &str) -> HashMap<String, (String, String)> {
    let mut out = HashMap::new();
    while let Some(c) = s.claim(runner).await {
        out.insert(
            str_field(&c["job"], "name"),
            (str_field(&c["job"], "id"), str_field(&c, "lease_id")),
        );
    }
    out
}

async fn write_output(s: &TestServer, runner: &str, (job, lease): &(String, String), out: &[u8]) {
    let r = fetch(
        s.call(
            reqwest::Method::POST,
            runner,
            &format!("/runner/jobs/{job}/log?lease_id={lease}"),
        )
        .body(out.to_vec()),
    )
    .await;
    r.expect(200);
}

/// `GET .../log` as raw bytes, with its status.
async fn log_of(s: &TestServer, job: &str) -> (u16, Vec<u8>) {
    let resp = s
        .call(
            reqwest::Method::GET,
            &s.admin,
            &format!("{}/log", job_path("p", job)),
        )
        .send()
        .await
        .expect("GET log");
    let status = resp.status().as_u16();
    (status, resp.bytes().await.expect("the log's body").to_vec())
}

async fn log_gone(s: &TestServer, job: &str) -> Resp {
    s.get(&s.admin, &format!("{}/log", job_path("p", job)))
        .await
}

/// The head of the log: (seq, hash).
async fn head(s: &TestServer) -> (u64, String) {
    let d = s.get(&s.admin, "/state/digest").await.expect(200).clone();
    (d["seq"].as_u64().unwrap(), str_field(&d, "head_hash"))
}

/// The audit entries of prune commits.
async fn prunes(s: &TestServer) -> Vec<Value> {
    s.audit_entries(0)
        .await
        .into_iter()
        .filter(|e| e["command"].get("prune_job_logs").is_some())
        .collect()
}

fn millis(v: &Value) -> i64 {
    ts(v).as_millisecond()
}

/// A 410 `log_pruned` that says what happened, when, and why.
#[track_caller]
fn assert_pruned(r: &Resp, job: &str, pruned_at: &Value) {
    let b = assert_problem(r, 410, "log_pruned");
    let detail = str_field(b, "detail");
    for part in [job, "retention", pruned_at.as_str().unwrap()] {
        assert!(detail.contains(part), "{part:?} not in {detail:?}");
    }
}

const OLD: &[u8] = b"old output\n\xff\x00 not text\n";
const RECENT: &[u8] = b"recent output\r\nline 2\n\x01\x02";
const RUNNING: &[u8] = b"still running\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_of_jobs_that_ended_before_the_cut_off_is_deleted_and_nothing_else() {
    let s = TestServer::start_with(retention).await;
    s.create_project(&s.admin, "p").await;
    let runner = s.runner_token().await;
    let build = s
        .trigger_build(
            &s.admin,
            "p",
            pipeline(&[("old", &[]), ("recent", &[]), ("running", &[])]),
        )
        .await;
    let create_jobs = job_id(&build, CREATE_JOBS);
    let jobs = claim_all(&s, &runner).await;
    assert_eq!(jobs.len(), 3);
    let (old, recent, running) = (&jobs["old"], &jobs["recent"], &jobs["running"]);
    write_output(&s, &runner, old, OLD).await;
    write_output(&s, &runner, recent, RECENT).await;
    write_output(&s, &runner, running, RUNNING).await;
    // `running` started before `old` ended, and keeps running past every cut-off below.
    let ended = s.finish(&runner, &old.0, &old.1, "finished").await;
    let ended = ended.expect(200).clone();
    assert_eq!(log_of(&s, &old.0).await, (200, OLD.to_vec()));

    let pruned = eventually(RETENTION * 4, || async {
        let r = log_gone(&s, &old.0).await;
        (r.status != 200).then_some(r)
    })
    .await
    .expect("the old job's output is pruned");
    let job = s.job_now("p", &old.0).await;
    assert_pruned(&pruned, &old.0, &job["log_pruned_at"]);
    // Not before the retention period had passed since the job ended.
    let waited = millis(&job["log_pruned_at"]) - millis(&ended["finished_at"]);
    assert!(
        waited >= RETENTION.as_millis() as i64,
        "pruned {waited} ms after it ended"
    );
    // The job itself is unchanged: only log_pruned_at is new (no version bump).
    let mut unchanged = job.clone();
    unchanged["log_pruned_at"] = Value::Null;
    assert_eq!(unchanged, ended);
    // `recent` ends now, after the cut-off of the prune that just ran.
    s.finish(&runner, &recent.0, &recent.1, "failure")
        .await
        .expect(200);

    // One prune commit, by reeve itself, naming the old job and no other.
    let entries = prunes(&s).await;
    assert_eq!(entries.len(), 1, "{entries:#?}");
    let e = &entries[0];
    assert_eq!(
        (&e["plane"], &e["principal"], &e["outcome"]),
        (&json!("system"), &json!("system"), &json!("accepted")),
        "{e}"
    );
    assert_eq!(e["target"], json!(format!("job:{}", old.0)), "{e}");
    assert_eq!(e["project"], "p", "{e}");
    let cut_off = e["command"]["prune_job_logs"]["before"].clone();
    assert_eq!(
        e["events"],
        json!([{"job_logs_pruned": {"before": cut_off, "jobs": [old.0]}}]),
        "{e}"
    );
    // The cut-off is the server's clock minus the retention, read just before the commit.
    let cut_off = cut_off.as_i64().unwrap();
    let pruned_at = millis(&job["log_pruned_at"]);
    assert_eq!(millis(&e["at"]), pruned_at);
    let retention = RETENTION.as_millis() as i64;
    assert!(
        (pruned_at - retention - 2_000..=pruned_at - retention).contains(&cut_off),
        "cut-off {cut_off} for a commit at {pruned_at}"
    );
    assert!(millis(&ended["finished_at"]) < cut_off);

    // Passes with nothing due write nothing: the head stays where it is.
    let mark = head(&s).await;
    tokio::time::sleep(PASS * 10).await;
    assert_eq!(
        head(&s).await,
        mark,
        "a pass with nothing due wrote a commit"
    );

    // A job that ended after the cut-off keeps its output byte for byte; so does a job that
    // still runs; Create Jobs never ran, so there was nothing of it to prune.
    assert_eq!(log_of(&s, &recent.0).await, (200, RECENT.to_vec()));
    assert_eq!(log_of(&s, &running.0).await, (200, RUNNING.to_vec()));
    assert_eq!(log_of(&s, &create_jobs).await, (200, Vec::new()));
    for id in [&recent.0, &running.0, &create_jobs] {
        assert_eq!(s.job_now("p", id).await["log_pruned_at"], Value::Null);
    }
    assert_eq!(
        s.job_now("p", &running.0).await["state"],
        "running",
        "the running job still runs"
    );

    // The other doors say the same: MCP's get_job_log and `reeve job log`.
    let (_, mcp) = s.create_token("mcp", json!({}), false).await;
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "get_job_log", "arguments": {"project": "p", "job": old.0}}});
    let r = fetch(
        s.client
            .post(format!("{}/mcp", s.base))
            .bearer_auth(&mcp)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .body(call.to_string()),
    )
    .await;
    let result = &r.expect(200)["result"];
    assert_eq!(result["isError"], true, "{}", r.text);
    let text = str_field(&result["content"][0], "text");
    for part in ["[log_pruned]", "retention", "get_job"] {
        assert!(text.contains(part), "{part:?} not in {text:?}");
    }

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_reeve"))
        .args(["job", "log", &old.0, "--project", "p"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("REEVE_SERVER", &s.base)
        .env("REEVE_TOKEN", &s.admin)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("running reeve job log");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing on stdout");
    assert!(stderr.contains("(code: log_pruned)"), "{stderr}");
    assert!(stderr.contains("retention"), "{stderr}");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_reeve"))
        .args(["job", "show", &old.0, "--project", "p"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("REEVE_SERVER", &s.base)
        .env("REEVE_TOKEN", &s.admin)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("running reeve job show");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("by job log retention"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruned_output_stays_gone_across_a_restart_and_left_over_chunks_are_deleted() {
    let mut s = TestServer::start_with(short_retention).await;
    s.create_project(&s.admin, "p").await;
    let runner = s.runner_token().await;
    s.trigger_build(&s.admin, "p", pipeline(&[("gone", &[]), ("aborted", &[])]))
        .await;
    let jobs = claim_all(&s, &runner).await;
    let (gone, aborted) = (&jobs["gone"], &jobs["aborted"]);
    write_output(&s, &runner, gone, OLD).await;
    write_output(&s, &runner, aborted, RUNNING).await;
    s.finish(&runner, &gone.0, &gone.1, "finished")
        .await
        .expect(200);
    s.post(
        &s.admin,
        &format!("{}/abort", job_path("p", &aborted.0)),
        json!({}),
    )
    .await
    .expect(200);
    for (id, _) in [gone, aborted] {
        eventually(Duration::from_secs(20), || async {
            (log_gone(&s, id).await.status == 410).then_some(())
        })
        .await
        .expect("the output is pruned");
    }
    let job = s.job_now("p", &gone.0).await;
    // The aborted job's runner may still hold its lease and write: a pruned log stays pruned.
    let late = fetch(
        s.call(
            reqwest::Method::POST,
            &runner,
            &format!("/runner/jobs/{}/log?lease_id={}", aborted.0, aborted.1),
        )
        .body("late output"),
    )
    .await;
    assert_problem(&late, 410, "log_pruned");

    // Both jobs end within moments of each other, so one pass or two may prune them.
    let trail = prunes(&s).await;
    assert!(
        (1..=2).contains(&trail.len()),
        "one prune commit per pass that found work: {trail:#?}"
    );

    // A crash can only leave chunks of the newest prune behind (the sweep after a start looks
    // at prunes from the last one it finished on): with two passes, that is the later one's job.
    let pruned_at = |j: Value| j["log_pruned_at"].as_str().unwrap_or_default().to_string();
    let last = if pruned_at(s.job_now("p", &aborted.0).await) > pruned_at(job.clone()) {
        aborted
    } else {
        gone
    };

    // The chunks are gone from the data dir, not only hidden.
    s.shutdown().await;
    let id = Uuid::parse_str(&gone.0).unwrap();
    let last_id = Uuid::parse_str(&last.0).unwrap();
    {
        let store = Store::open(&s.data_dir(), SyncMode::Durable).expect("the data dir opens");
        assert_eq!(store.log_len(id).unwrap(), 0, "chunks left in the data dir");
        let aborted = Uuid::parse_str(&aborted.0).unwrap();
        assert_eq!(
            store.log_len(aborted).unwrap(),
            0,
            "the late output was not written"
        );
        // As if reeve had died after the prune commit and before deleting the chunks.
        store.append_log(last_id, b"left behind", 1 << 20).unwrap();
        assert_eq!(store.log_len(last_id).unwrap(), 11);
    }

    let mut s = s.restart().await;
    assert_pruned(&log_gone(&s, &gone.0).await, &gone.0, &job["log_pruned_at"]);
    assert_eq!(
        s.job_now("p", &gone.0).await,
        job,
        "the job's record is kept"
    );
    assert_eq!(
        prunes(&s).await,
        trail,
        "its audit trail is kept, and nothing is pruned again"
    );
    s.shutdown().await;
    let store = Store::open(&s.data_dir(), SyncMode::Durable).expect("the data dir opens");
    assert_eq!(
        store.log_len(last_id).unwrap(),
        0,
        "the start-up sweep deletes what a crash left behind"
    );
}

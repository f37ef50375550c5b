//! `GET /metrics`, read by the official Prometheus Python client's OpenMetrics parser
//! (installed pinned into a virtualenv under target/ by tests/metrics/setup.sh), and
//! `GET /readyz` before and after the log is replayed.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use reeve::api::metrics::MetricsAccess;
use reeve::control::{Control, Options, Submission};
use reeve::domain::Command as Cmd;
use reeve::log::SyncMode;
use reeve::server::{Server, ServerConfig};
use reqwest::Method;
use serde_json::{Value, json};

fn metrics_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/metrics")
}

/// The parser's python, installed once per target dir.
fn python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("metrics-venv");
    let out = Command::new("bash")
        .arg(metrics_dir().join("setup.sh"))
        .arg(&venv)
        .output()
        .expect("run tests/metrics/setup.sh");
    assert!(
        out.status.success(),
        "tests/metrics/setup.sh failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    venv.join("bin/python")
}

/// Families as the parser read them: name → {type, help, samples: [[name, labels, value]]}.
struct Families(Value);

impl Families {
    /// The value of the sample `sample` with exactly these labels (0 when it is absent, as
    /// for a labelled counter nothing has touched yet).
    #[track_caller]
    fn get(&self, family: &str, sample: &str, labels: &[(&str, &str)]) -> f64 {
        let fam = &self.0[family];
        assert!(fam.is_object(), "no family {family} in the exposition");
        let want: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect();
        fam["samples"]
            .as_array()
            .expect("samples")
            .iter()
            .find(|s| s[0] == sample && s[1].as_object() == Some(&want))
            .map_or(0.0, |s| s[2].as_f64().expect("a finite value"))
    }

    #[track_caller]
    fn kind(&self, family: &str) -> &str {
        self.0[family]["type"]
            .as_str()
            .unwrap_or_else(|| panic!("no family {family}"))
    }
}

async fn scrape_with(s: &Api, token: Option<&str>) -> Families {
    let mut rb = s.client.get(format!("{}/metrics", s.base));
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let r = fetch(rb).await;
    assert_eq!(r.status, 200, "GET /metrics: {}", r.text);
    assert_eq!(
        r.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    parse(&r.text)
}

async fn scrape(s: &Api) -> Families {
    scrape_with(s, None).await
}

fn parse(text: &str) -> Families {
    use std::io::Write;
    let mut child = Command::new(python())
        .arg(metrics_dir().join("parse.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the parser");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed the parser");
    let out = child.wait_with_output().expect("parser output");
    assert!(
        out.status.success(),
        "the OpenMetrics parser rejected /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    Families(serde_json::from_slice(&out.stdout).expect("parser JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_as_commands_are_submitted() {
    let s = TestServer::start().await;
    // Something for every labelled family to show (a family nothing touched is not listed).
    s.audit_head().await;
    let before = scrape(&s).await;
    for (family, kind) in [
        ("reeve_commits", "counter"),
        ("reeve_group_commit_size", "histogram"),
        ("reeve_command_duration_seconds", "histogram"),
        ("reeve_wal_fdatasync_duration_seconds", "histogram"),
        ("reeve_writer_queue_depth", "gauge"),
        ("reeve_watch_fire_lateness_seconds", "histogram"),
        ("reeve_watch_fires_skipped", "counter"),
        ("reeve_watch_runs_missed", "counter"),
        ("reeve_rate_limited", "counter"),
        ("reeve_http_requests", "counter"),
        ("reeve_http_request_duration_seconds", "histogram"),
        ("reeve_jobs", "gauge"),
        ("reeve_watches", "gauge"),
        ("reeve_runners_connected", "gauge"),
        ("reeve_log_disk_bytes", "gauge"),
        ("reeve_head_seq", "gauge"),
    ] {
        assert_eq!(before.kind(family), kind, "{family}");
    }
    assert!(before.get("reeve_log_disk_bytes", "reeve_log_disk_bytes", &[]) > 0.0);

    let on = |plane: &str| {
        s.call(Method::POST, &s.admin, "/projects")
            .header("Reeve-Plane", plane)
    };
    s.create_project(&s.admin, "docs").await;
    let r = s.post(&s.admin, "/projects", json!({"id": "docs"})).await;
    assert_problem(&r, 409, "project_exists");
    fetch(on("web").json(&json!({"id": "web"})))
        .await
        .expect(201);
    fetch(on("cli").json(&json!({"id": "cli"})))
        .await
        .expect(201);
    s.trigger_build(&s.admin, "docs", pipeline(&[("a", &[]), ("b", &["a"])]))
        .await;
    let w = s.watch(&s.admin, "docs", "viking://res/docs").await;
    s.patch(
        &s.admin,
        &format!("/watches/{}", str_field(&w, "id")),
        json!({"is_active": false}),
    )
    .await
    .expect(200);
    s.watch(&s.admin, "docs", "viking://res/other").await;

    let after = scrape(&s).await;
    let moved = |family: &str, sample: &str, labels: &[(&str, &str)]| {
        after.get(family, sample, labels) - before.get(family, sample, labels)
    };
    let commits = |plane, outcome| {
        moved(
            "reeve_commits",
            "reeve_commits_total",
            &[("plane", plane), ("outcome", outcome)],
        )
    };
    assert_eq!(commits("rest", "accepted"), 5.0);
    assert_eq!(commits("rest", "rejected"), 1.0);
    assert_eq!(commits("web", "accepted"), 1.0);
    assert_eq!(commits("cli", "accepted"), 1.0);
    // Each request waited for its own commit: one group each, one fdatasync at least.
    let groups = moved(
        "reeve_group_commit_size",
        "reeve_group_commit_size_count",
        &[],
    );
    assert_eq!(groups, 8.0);
    assert_eq!(
        moved(
            "reeve_group_commit_size",
            "reeve_group_commit_size_sum",
            &[]
        ),
        8.0
    );
    assert_eq!(
        moved(
            "reeve_command_duration_seconds",
            "reeve_command_duration_seconds_count",
            &[]
        ),
        8.0
    );
    assert!(
        moved(
            "reeve_wal_fdatasync_duration_seconds",
            "reeve_wal_fdatasync_duration_seconds_count",
            &[]
        ) >= 8.0
    );
    let http = |route, method, status| {
        moved(
            "reeve_http_requests",
            "reeve_http_requests_total",
            &[("route", route), ("method", method), ("status", status)],
        )
    };
    assert_eq!(http("/api/v1/projects", "POST", "201"), 3.0);
    assert_eq!(http("/api/v1/projects", "POST", "409"), 1.0);
    assert_eq!(http("/api/v1/watches/{id}", "PATCH", "200"), 1.0);
    assert_eq!(
        http("/api/v1/projects/{project}/builds", "POST", "201"),
        1.0
    );
    assert_eq!(
        moved(
            "reeve_http_request_duration_seconds",
            "reeve_http_request_duration_seconds_count",
            &[("route", "/api/v1/projects"), ("method", "POST")]
        ),
        4.0
    );
    // A path no route serves is one series, not one per path.
    s.get(&s.admin, "/no/such/thing").await;
    s.get(&s.admin, "/nor/this").await;
    let later = scrape(&s).await;
    assert_eq!(
        later.get(
            "reeve_http_requests",
            "reeve_http_requests_total",
            &[("route", "unmatched"), ("method", "GET"), ("status", "404")]
        ),
        2.0
    );

    // Gauges read from the state.
    let jobs = |state| after.get("reeve_jobs", "reeve_jobs", &[("state", state)]);
    assert_eq!(jobs("queued"), 2.0, "a and b wait for a runner");
    assert_eq!(jobs("finished"), 1.0, "Create Jobs");
    assert_eq!(jobs("running"), 0.0);
    let watches = |state| after.get("reeve_watches", "reeve_watches", &[("state", state)]);
    assert_eq!((watches("active"), watches("paused")), (1.0, 1.0));
    assert_eq!(
        after.get("reeve_head_seq", "reeve_head_seq", &[]),
        s.audit_head().await as f64
    );
    assert_eq!(
        after.get("reeve_writer_queue_depth", "reeve_writer_queue_depth", &[]),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_refusals_and_waiting_runners_are_counted() {
    let s = TestServer::start_with(|c| {
        c.trigger_per_min = 2;
        c.read_per_min = 3;
    })
    .await;
    let (_, token) = s.create_token("api", json!({}), true).await;
    for i in 0..5 {
        s.post(
            &token,
            "/watches",
            watch_body("nope", &format!("viking://{i}")),
        )
        .await;
    }
    for _ in 0..6 {
        s.get(&token, "/watches").await;
    }
    let m = scrape(&s).await;
    let limited = |bucket| {
        m.get(
            "reeve_rate_limited",
            "reeve_rate_limited_total",
            &[("bucket", bucket)],
        )
    };
    assert_eq!(limited("trigger"), 3.0);
    assert_eq!(limited("read"), 3.0);
    assert_eq!(limited("mcp_trigger"), 0.0);
    // The refused changes are commits too (429 rate_limited, the repeats coalesced).
    assert!(
        m.get(
            "reeve_commits",
            "reeve_commits_total",
            &[("plane", "rest"), ("outcome", "rejected")]
        ) >= 1.0
    );

    // A runner waiting in a claim is connected.
    assert_eq!(
        m.get("reeve_runners_connected", "reeve_runners_connected", &[]),
        0.0
    );
    let runner = s.runner_token().await;
    let waiting = {
        let s = s.api.clone();
        tokio::spawn(async move { s.claim_wait(&runner, 3).await })
    };
    let seen = eventually(Duration::from_secs(5), || async {
        let m = scrape(&s).await;
        (m.get("reeve_runners_connected", "reeve_runners_connected", &[]) == 1.0).then_some(())
    })
    .await;
    assert!(seen.is_some(), "a waiting runner counts as connected");
    assert_eq!(waiting.await.expect("claim").status, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_reports_lateness_skipped_fires_and_missed_runs() {
    // No runners: a build stays queued, so its watch's next fire finds it still running.
    let s = TestServer::start().await;
    s.create_project(&s.admin, "busy").await;
    s.patch(
        &s.admin,
        "/projects/busy",
        json!({"default_pipeline": {"jobs": [{"name": "work", "run": "true"}]}}),
    )
    .await
    .expect(200);
    // A project without a pipeline: its watch fires without a build, so it never overlaps.
    s.create_project(&s.admin, "bare").await;
    for project in ["busy", "bare"] {
        let mut body = watch_body(project, &format!("viking://{project}"));
        body["watch_interval"] = json!(0.02); // 1.2 s
        s.create_watch(&s.admin, body).await.expect(201);
    }
    let ran = eventually(Duration::from_secs(15), || async {
        let m = scrape(&s).await;
        let skipped = m.get(
            "reeve_watch_fires_skipped",
            "reeve_watch_fires_skipped_total",
            &[],
        );
        let fired = m.get(
            "reeve_watch_fire_lateness_seconds",
            "reeve_watch_fire_lateness_seconds_count",
            &[],
        );
        (skipped >= 1.0 && fired >= 3.0).then_some(m)
    })
    .await
    .expect("fires and a skipped fire within 15 s");
    let lateness = ran.get(
        "reeve_watch_fire_lateness_seconds",
        "reeve_watch_fire_lateness_seconds_sum",
        &[],
    );
    assert!((0.0..60.0).contains(&lateness), "{lateness}");
    assert_eq!(
        ran.get(
            "reeve_watch_runs_missed",
            "reeve_watch_runs_missed_total",
            &[]
        ),
        0.0
    );

    // Down for a few intervals: the bare watch's first fire after the restart reports the
    // runs it missed.
    let mut s = s;
    s.shutdown().await;
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let s = s.restart().await;
    let missed = eventually(Duration::from_secs(10), || async {
        let m = scrape(&s).await;
        let n = m.get(
            "reeve_watch_runs_missed",
            "reeve_watch_runs_missed_total",
            &[],
        );
        (n >= 1.0).then_some(n)
    })
    .await;
    assert!(missed.is_some(), "missed runs after downtime are counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraping_is_open_admin_only_or_off_as_configured() {
    assert_eq!(
        MetricsAccess::default_for("127.0.0.1:8080".parse().expect("addr")),
        MetricsAccess::Open
    );
    assert_eq!(
        MetricsAccess::default_for("0.0.0.0:8080".parse().expect("addr")),
        MetricsAccess::Admin
    );

    let s = TestServer::start_with(|c| c.metrics = Some(MetricsAccess::Admin)).await;
    let r = fetch(s.client.get(format!("{}/metrics", s.base))).await;
    assert_unauthorized(&r);
    let (_, api) = s.create_token("api", json!({}), true).await;
    let r = fetch(
        s.client
            .get(format!("{}/metrics", s.base))
            .bearer_auth(&api),
    )
    .await;
    assert_problem(&r, 403, "admin_required");
    let m = scrape_with(&s, Some(&s.admin)).await;
    assert_eq!(m.kind("reeve_commits"), "counter");

    let s = TestServer::start_with(|c| c.metrics = Some(MetricsAccess::Off)).await;
    let r = fetch(
        s.client
            .get(format!("{}/metrics", s.base))
            .bearer_auth(&s.admin),
    )
    .await;
    assert_problem(&r, 404, "metrics_off");
    // Readiness is not a secret either way.
    let r = fetch(s.client.get(format!("{}/readyz", s.base))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_503_until_the_log_is_replayed() {
    // A log long enough that folding it takes a while, and no snapshot to start from.
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let control = Control::open(
            dir.path(),
            Options {
                sync: SyncMode::Batch,
                ..Options::default()
            },
        )
        .expect("open");
        let control = std::sync::Arc::new(control);
        for chunk in 0..40 {
            let submissions = (0..1000).map(|i| {
                let control = control.clone();
                async move {
                    control
                        .submit(Submission::system(Cmd::CreateProject {
                            id: format!("p{chunk}-{i}"),
                            name: None,
                        }))
                        .await
                        .expect("submit")
                }
            });
            futures_util::future::join_all(submissions).await;
        }
        control.close().await;
    }
    let _ = std::fs::remove_dir_all(dir.path().join("snapshots"));

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().expect("addr").port()
    };
    let mut cfg = ServerConfig::for_tests(dir.path());
    cfg.listen = format!("127.0.0.1:{port}").parse().expect("addr");
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let probe = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..10_000 {
                let r = client
                    .get(format!("http://127.0.0.1:{port}/readyz"))
                    .send()
                    .await;
                if let Ok(r) = r {
                    let status = r.status().as_u16();
                    if status == 503 {
                        // While it starts, everything else waits too, and says why.
                        let api = client
                            .get(format!("http://127.0.0.1:{port}/api/v1/watches"))
                            .send()
                            .await
                            .map(|r| r.status().as_u16());
                        let health = client
                            .get(format!("http://127.0.0.1:{port}/healthz"))
                            .send()
                            .await
                            .map(|r| r.status().as_u16());
                        seen.push((status, api.ok(), health.ok()));
                    } else {
                        seen.push((status, None, None));
                    }
                    if status == 200 {
                        return seen;
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            seen
        })
    };
    let server = Server::start(cfg).await.expect("start");
    let seen = probe.await.expect("probe");
    let starting: Vec<_> = seen.iter().filter(|s| s.0 == 503).collect();
    assert!(
        !starting.is_empty(),
        "no 503 while the log was replayed: {seen:?}"
    );
    // The API is asked after each 503 from /readyz, so the server may have become ready in
    // between; only a probe that the next /readyz still answered 503 was surely made while
    // the log was being replayed.
    assert!(
        seen.windows(2)
            .filter(|w| w[0].0 == 503 && w[1].0 == 503)
            .all(|w| w[0].1.is_none_or(|c| c == 503) && w[0].2.is_none_or(|c| c == 200)),
        "{seen:?}"
    );
    assert!(
        starting.iter().all(|s| s.2.is_none_or(|c| c == 200)),
        "{seen:?}"
    );
    assert_eq!(seen.last().map(|s| s.0), Some(200));
    let r = fetch(client.get(format!("http://127.0.0.1:{port}/readyz"))).await;
    assert_eq!(r.body["head_seq"], json!(40_001));
    server.shutdown().await;
}

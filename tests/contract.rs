//! The REST contract, checked from outside: schemathesis (pinned in tests/contract/
//! requirements.txt, installed into its own virtualenv by tests/contract/setup.sh) reads
//! `/openapi.json` from a fresh server and runs every check in all four phases — the document's
//! examples, the coverage of every boundary and violation of each parameter and field, random
//! fuzzing, and stateful chains along the document's links. Any failure fails the test, with
//! schemathesis's report. What it is told beyond the document is in tests/contract/hooks.py;
//! how the run is bounded, in tests/contract/schemathesis.toml.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use common::*;
use serde_json::json;

fn contract_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/contract")
}

/// The virtualenv lives in cargo's target dir, so it is built once and survives between runs.
fn schemathesis() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("contract-venv");
    let out = Command::new("bash")
        .arg(contract_dir().join("setup.sh"))
        .arg(&venv)
        .output()
        .expect("run tests/contract/setup.sh");
    assert!(
        out.status.success(),
        "installing schemathesis failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    venv.join("bin/schemathesis")
}

/// A server for a fuzzer: nothing runs what it submits (no runners: generated pipelines are
/// arbitrary shell), and its buckets are too large to empty, since a 429 tells the contract
/// nothing (tests/coalesce.rs covers the limiter). Writes skip fdatasync; durability is not
/// what is tested here.
fn fuzzable(cfg: &mut reeve::server::ServerConfig) {
    cfg.sync = reeve::log::SyncMode::Batch;
    cfg.runners = 0;
    cfg.trigger_per_min = 1_000_000;
    cfg.read_per_min = 1_000_000;
    cfg.mcp_trigger_per_min = 1_000_000;
    cfg.mcp_read_per_min = 1_000_000;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_difference_between_the_document_and_the_server() {
    let schemathesis = schemathesis();
    let s = TestServer::start_with(fuzzable).await;
    // The MCP namespace and the runner protocol admit only their own kinds of token: give their
    // operations one each, so they are exercised beyond their 403.
    let (_, mcp) = s.create_token("mcp", json!({}), true).await;
    let (_, runner) = s.create_token("runner", json!({}), false).await;
    // Jobs to claim, so a claim answers at once with a lease (that heartbeats, finishes and
    // uploads then use) instead of waiting up to its wait_seconds for one.
    s.create_project(&s.admin, "queue").await;
    let jobs: Vec<_> = (0..300)
        .map(|i| json!({"name": format!("job-{i}"), "run": "true"}))
        .collect();
    for _ in 0..3 {
        s.post(
            &s.admin,
            "/projects/queue/builds",
            json!({"pipeline": {"jobs": jobs}}),
        )
        .await
        .expect(201);
    }
    let work = tempfile::tempdir().expect("a working dir for schemathesis");
    let started = Instant::now();
    let out = tokio::task::spawn_blocking({
        let url = format!("http://{}/openapi.json", s.addr);
        let admin = s.admin.clone();
        let work = work.path().to_path_buf();
        move || {
            Command::new(schemathesis)
                .current_dir(work)
                .env("SCHEMATHESIS_HOOKS", contract_dir().join("hooks.py"))
                .env("REEVE_ADMIN_TOKEN", admin)
                .env("REEVE_MCP_TOKEN", mcp)
                .env("REEVE_RUNNER_TOKEN", runner)
                .arg("--config-file")
                .arg(contract_dir().join("schemathesis.toml"))
                .arg("--no-color")
                .arg("run")
                .arg("--checks")
                .arg("all")
                .arg(url)
                .output()
                .expect("run schemathesis")
        }
    })
    .await
    .expect("schemathesis task");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found differences between /openapi.json and the server ({:?}):\n{report}",
        out.status
    );
    eprintln!(
        "schemathesis passed in {:.0?}:\n{report}",
        started.elapsed()
    );
}

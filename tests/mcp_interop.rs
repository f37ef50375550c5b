//! Interoperability with an MCP client reeve did not write: the official Python SDK (`mcp`
//! on PyPI), at 1.30.0 (pinned in tests/interop/requirements.txt, revisions 2025-11-25 and
//! before, `initialize`) and at 2.3.0 (tests/interop/requirements-v2.txt, revision 2026-07-28,
//! `server/discover`), each installed into its own virtualenv by tests/interop/setup.sh. The
//! scripts (tests/interop/client.py, client_v2.py for the 2.x API) connect, list tools (and see
//! the write tools vanish for a read-only token), create a watch, list it, send arguments that
//! do not fit (a JSON-RPC -32602 the SDK raises), cancel the watch twice, restart a failed job,
//! and find their calls in the audit. The 2.x script connects in auto
//! mode and again pinned to 2026-07-28.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use serde_json::json;

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// The virtualenv lives in cargo's target dir, so it is built once and survives between runs.
fn venv(name: &str, requirements: &str) -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let out = Command::new("bash")
        .arg(interop_dir().join("setup.sh"))
        .arg(&venv)
        .arg(interop_dir().join(requirements))
        .output()
        .expect("run tests/interop/setup.sh");
    assert!(
        out.status.success(),
        "installing the Python MCP SDK failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    venv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_drives_reeve() {
    drive("mcp-venv", "requirements.txt", "client.py", 8).await;
}

/// 2.3.0 asks `server/discover` first; reeve must answer it so the client stays on 2026-07-28
/// (in auto mode it would otherwise fall back to `initialize`, and pinned it could not connect).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_2_drives_reeve_on_2026_07_28() {
    // Each of the two connections makes seven calls; the first also restarts the failed job.
    drive("mcp-venv-2", "requirements-v2.txt", "client_v2.py", 15).await;
}

/// Runs one client script against a fresh server; `calls` is how many tool calls it makes,
/// each of which must be one commit.
async fn drive(venv_name: &str, requirements: &str, script: &'static str, calls: u64) {
    let python = venv(venv_name, requirements).join("bin/python");
    let s = TestServer::start_with(|c| c.mcp_trigger_per_min = 60).await;
    s.create_project(&s.admin, "docs").await;
    let (rw_id, rw) = s.create_token("mcp", json!({ "docs": null }), true).await;
    let (_, ro) = s.create_token("mcp", json!({ "docs": null }), false).await;

    // A build whose first job fails, leaving its child skipped: something to restart.
    let build = s
        .trigger_build(
            &s.admin,
            "docs",
            pipeline(&[("render", &[]), ("publish", &["render"])]),
        )
        .await;
    let runner = s.runner_token().await;
    s.drain(&runner, |name| {
        if name == "render" {
            "failure"
        } else {
            "finished"
        }
    })
    .await;
    let failed = job_id(&build, "render");
    assert_eq!(s.job_now("docs", &failed).await["state"], "failure");
    let head_before = s.audit_head().await;

    let out = tokio::task::spawn_blocking({
        let base = format!("http://{}", s.addr);
        let admin = s.admin.clone();
        let failed = failed.clone();
        move || {
            Command::new(python)
                .arg(interop_dir().join(script))
                .env("REEVE_URL", base)
                .env("REEVE_ADMIN_TOKEN", admin)
                .env("REEVE_MCP_TOKEN", rw)
                .env("REEVE_MCP_TOKEN_ID", rw_id)
                .env("REEVE_MCP_RO_TOKEN", ro)
                .env("REEVE_PROJECT", "docs")
                .env("REEVE_FAILED_JOB", failed)
                .output()
                .expect("run the interop client script")
        }
    })
    .await
    .expect("client task");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Python client failed:\n{stdout}\n{stderr}"
    );

    // What the client did is visible through REST too: the clone runs, the watch is gone.
    let build = s.build_now("docs", &str_field(&build, "id")).await;
    assert!(
        job_names(&build).contains(&"render.1".to_string()),
        "restart_job cloned render: {build}"
    );
    let watches = s.all_watches(&s.admin).await;
    assert!(
        watches.is_empty(),
        "the cancelled watch is gone: {watches:?}"
    );
    // Every tool call is one commit (no rate-limit coalescing at 60 per minute).
    let summary: serde_json::Value =
        serde_json::from_str(stdout.trim().lines().last().unwrap_or("{}")).expect("summary");
    assert_eq!(summary["audited"], calls, "{summary}");
    assert_eq!(s.audit_head().await, head_before + calls);
}

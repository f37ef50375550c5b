//! Interoperability with an MCP client reeve did not write: the official Python SDK (`mcp`
//! on PyPI, pinned in tests/interop/requirements.txt), installed into a virtualenv by
//! tests/interop/setup.sh. The script (tests/interop/client.py) initializes, lists tools
//! (and sees the write tools vanish for a read-only token), creates a watch, lists it, cancels
//! it twice, restarts a failed job, and finds its calls in the audit.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use serde_json::json;

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// The virtualenv lives in cargo's target dir, so it is built once and survives between runs.
fn venv() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("mcp-venv");
    let out = Command::new("bash")
        .arg(interop_dir().join("setup.sh"))
        .arg(&venv)
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
    let python = venv().join("bin/python");
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
                .arg(interop_dir().join("client.py"))
                .env("REEVE_URL", base)
                .env("REEVE_ADMIN_TOKEN", admin)
                .env("REEVE_MCP_TOKEN", rw)
                .env("REEVE_MCP_TOKEN_ID", rw_id)
                .env("REEVE_MCP_RO_TOKEN", ro)
                .env("REEVE_PROJECT", "docs")
                .env("REEVE_FAILED_JOB", failed)
                .output()
                .expect("run tests/interop/client.py")
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
    // Seven tool calls, each one commit (no rate-limit coalescing at 60 per minute).
    let summary: serde_json::Value =
        serde_json::from_str(stdout.trim().lines().last().unwrap_or("{}")).expect("summary");
    assert_eq!(summary["audited"], 7, "{summary}");
    assert_eq!(s.audit_head().await, head_before + 7);
}

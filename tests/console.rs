//! The console at `/`: its files and their security headers over HTTP, `GET /api/v1/whoami`,
//! and the end-to-end scenarios in a real browser (Debian's headless Chromium driven by
//! Playwright, tests/console/scenarios.mjs) against a real server with embedded runners.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

async fn get_raw(s: &TestServer, path: &str) -> Resp {
    fetch(s.client.get(format!("{}{path}", s.base))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_with_a_strict_policy() {
    let s = TestServer::start().await;
    let index = get_raw(&s, "/").await;
    assert_eq!(index.status, 200);
    assert_eq!(
        index.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(
        index
            .text
            .contains(r#"<script type="module" src="/console/app.js">"#)
    );
    assert!(
        !index.text.contains("<script>") && !index.text.contains("style="),
        "nothing inline"
    );
    for path in [
        "/",
        "/console/app.js",
        "/console/style.css",
        "/console/views/build.js",
    ] {
        let r = get_raw(&s, path).await;
        assert_eq!(r.status, 200, "{path}");
        let csp = r.header("content-security-policy").unwrap_or_default();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ] {
            assert!(
                csp.contains(directive),
                "{path}: {directive} missing from {csp}"
            );
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{path}");
    }
    let js = get_raw(&s, "/console/app.js").await;
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    let css = get_raw(&s, "/console/style.css").await;
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    for missing in [
        "/console/nope.js",
        "/console/../Cargo.toml",
        "/console/index.html",
    ] {
        assert_eq!(get_raw(&s, missing).await.status, 404, "{missing}");
    }
}

#[test]
fn the_console_sets_text_never_markup() {
    // Every text the API returns is rendered as text: the scripts never parse markup.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/console/assets");
    let mut files = Vec::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("assets dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "js") {
                files.push(p);
            }
        }
    }
    assert!(files.len() >= 8);
    for f in files {
        let text = std::fs::read_to_string(&f).expect("a script");
        for banned in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "localStorage",
        ] {
            assert!(!text.contains(banned), "{} uses {banned}", f.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_describes_the_token() {
    let s = TestServer::start().await;
    s.create_project(&s.admin, "docs").await;
    let me = s.get(&s.admin, "/whoami").await;
    me.expect(200);
    assert_eq!(me.body["admin"], true);
    assert_eq!(me.body["plane"], "rest");
    assert_eq!(me.body["token"]["kind"], "admin");
    assert!(!contains_key(&me.body, "secret") && !contains_key(&me.body, "secret_hash"));

    let (id, reader) = s.create_token("api", json!({"docs": null}), false).await;
    let r = fetch(
        s.call(Method::GET, &reader, "/whoami")
            .header("Reeve-Plane", "web"),
    )
    .await;
    r.expect(200);
    assert_eq!(r.body["principal"], json!(format!("token:{id}")));
    assert_eq!(r.body["plane"], "web");
    assert_eq!(r.body["admin"], false);
    assert_eq!(r.body["token"]["allow_trigger"], false);
    assert_eq!(r.body["token"]["enabled_projects"], json!({"docs": null}));

    assert_unauthorized(&fetch(s.client.get(s.url("/whoami"))).await);
    let (_, mcp) = s.create_token("mcp", json!({}), false).await;
    assert_problem(&s.get(&mcp, "/whoami").await, 403, "mcp_token_not_allowed");
}

// ---------------------------------------------------------------------------
// In a browser.
// ---------------------------------------------------------------------------

fn console_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/console")
}

/// Installs the pinned playwright-core once per target dir; returns its module path.
fn playwright() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-browser");
    let out = Command::new("bash")
        .arg(console_dir().join("setup.sh"))
        .arg(&dir)
        .output()
        .expect("run tests/console/setup.sh");
    assert!(
        out.status.success(),
        "tests/console/setup.sh failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("node_modules/playwright-core/index.mjs")
}

/// A pipeline of `n` trivial jobs in layers of 30, each depending on one or two jobs of the
/// layer before.
fn wide_pipeline(n: usize) -> Value {
    let name = |i: usize| format!("step-{:02}/job-{:03}", i / 30, i);
    let jobs: Vec<Value> = (0..n)
        .map(|i| {
            let deps: Vec<String> = if i < 30 {
                Vec::new()
            } else {
                let prev = i - 30;
                let mut d = vec![name(prev)];
                if prev % 3 == 0 && prev + 1 < i - (i % 30) {
                    d.push(name(prev + 1));
                }
                d
            };
            json!({"name": name(i), "run": "true", "depends_on": deps})
        })
        .collect();
    json!({ "jobs": jobs })
}

async fn set_default_pipeline(s: &TestServer, project: &str, jobs: Value) {
    s.create_project(&s.admin, project).await;
    s.patch(
        &s.admin,
        &format!("/projects/{project}"),
        json!({"default_pipeline": {"jobs": jobs}}),
    )
    .await
    .expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_a_browser() {
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "the browser tests need Debian's chromium at /usr/bin/chromium: run scripts/test, which installs it"
    );
    let module = playwright();
    let s = TestServer::start_with(|c| {
        c.runners = 2;
        c.kill_grace_secs = 1;
    })
    .await;

    set_default_pipeline(
        &s,
        "docs",
        json!([
            {"name": "prepare", "run": "echo preparing; sleep 3; echo prepared"},
            {"name": "build", "run": "for i in 1 2 3 4 5; do echo line $i; sleep 0.5; done; echo built",
             "depends_on": ["prepare"]},
            {"name": "lint", "run": "echo style ok", "depends_on": ["prepare"]},
            {"name": "test/unit", "run": "echo 41 passed", "depends_on": ["build"]},
            {"name": "check", "run": "echo checking links; echo 2 broken links >&2; exit 1",
             "depends_on": ["build"]},
            {"name": "publish", "run": "echo publishing", "depends_on": ["test/unit", "lint", "check"]},
        ]),
    )
    .await;
    set_default_pipeline(
        &s,
        "slow",
        json!([{"name": "forever", "run": "echo started; sleep 600"}]),
    )
    .await;
    set_default_pipeline(
        &s,
        "flaky",
        json!([{"name": "sync", "run": "echo upstream unreachable >&2; exit 1"}]),
    )
    .await;
    // Watches to look at: one that keeps failing (highlighted, then paused by reeve itself),
    // and a few quiet ones.
    let mut flaky = watch_body("flaky", "viking://res/mirror");
    flaky["watch_interval"] = json!(0.02);
    flaky["reason"] = json!("nightly mirror");
    s.create_watch(&s.admin, flaky).await.expect(201);
    for (uri, every) in [
        ("viking://res/handbook", 60),
        ("viking://res/api-reference", 240),
    ] {
        let mut body = watch_body("docs", uri);
        body["watch_interval"] = json!(every);
        s.create_watch(&s.admin, body).await.expect(201);
    }
    // A 300-job build, aborted at once so the runners stay free for the scenarios.
    s.create_project(&s.admin, "big").await;
    let big = s.trigger_build(&s.admin, "big", wide_pipeline(300)).await;
    let big_id = str_field(&big, "id");
    s.post(
        &s.admin,
        &format!("{}/abort", build_path("big", &big_id)),
        json!({}),
    )
    .await
    .expect(200);
    let (_, reader) = s.create_token("api", json!({}), false).await;

    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let run = {
        let (base, admin) = (s.base.clone(), s.admin.clone());
        let shots = shots.clone();
        tokio::task::spawn_blocking(move || {
            Command::new("node")
                .arg(console_dir().join("scenarios.mjs"))
                .env("PLAYWRIGHT_CORE", &module)
                .env("REEVE_URL", base)
                .env("REEVE_ADMIN", admin)
                .env("REEVE_READER", reader)
                .env("REEVE_BIG_BUILD", format!("big/{big_id}"))
                .env("SHOTS", &shots)
                .output()
                .expect("run node tests/console/scenarios.mjs")
        })
    };
    let out = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("the browser scenarios finished within 10 minutes")
        .expect("the scenarios' task");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "browser scenarios failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("console: 13 passed, 0 failed"), "{stdout}");

    // What the console did is in the log, on plane web, as any client's requests would be.
    let page = s.audit("?plane=web&limit=1000").await;
    let entries = page["entries"].as_array().expect("entries");
    assert!(entries.len() >= 6, "{page}");
    let all = s.all_watches(&s.admin).await;
    let w = all
        .iter()
        .find(|w| w["to_uri"] == "viking://res/console")
        .expect("the watch made in the console");
    assert_eq!(w["is_active"], false);
    assert_eq!(w["reason"], "maintenance window");
    for shot in [
        "01-sign-in",
        "07-restart-failing-job",
        "11-watches-page",
        "12-read-only-token",
    ] {
        assert!(shots.join(format!("{shot}.png")).exists(), "{shot}.png");
    }
}

//! The official MCP conformance suite (`@modelcontextprotocol/conformance` on npm, pinned with
//! the Node it runs on in tests/interop/conformance/package.json and its lockfile, installed
//! under target/ by tests/interop/conformance/setup.sh) run against a real reeve server: every
//! server scenario of the pinned version, on all three revisions reeve speaks.
//!
//! The suite sends no credentials and has no option to add a header, while `/mcp` answers 401
//! without a bearer token. So the suite talks to a small proxy on loopback that adds an MCP
//! token's `Authorization` header and passes everything else through unchanged, `Host` and
//! `Origin` included, so the suite's DNS-rebinding scenario still reaches reeve's own check.
//! reeve itself runs as it always does: nothing is switched off for the suite.
//!
//! Many scenarios call the suite's fixture tools (`test_simple_text`, …), resources and
//! prompts, or exercise extensions and capabilities reeve does not offer: those are listed
//! below, with why, and in the README's MCP section. Every other scenario, and every check in
//! it, must pass; a scenario the pinned version has that is in neither list fails the test,
//! so a new version is looked at before it is trusted.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use common::*;
use serde_json::{Value, json};

/// Scenarios that must pass: every check in them, except those in [`FIXTURE_CHECKS`].
const IN_SCOPE: [&str; 10] = [
    "server-initialize",
    "server-session-lifecycle",
    "server-stateless",
    "ping",
    "tools-list",
    "server-sse-polling",
    "server-sse-multiple-streams",
    "dns-rebinding-protection",
    "caching",
    "http-header-validation",
];

/// Checks inside in-scope scenarios that need what reeve does not have.
const FIXTURE_CHECKS: [(&str, &str); 7] = [
    (
        "sep-2575-server-rejects-undeclared-capability",
        "calls the suite's fixture tool test_missing_capability",
    ),
    (
        "sep-2575-missing-capability-http-400",
        "calls the suite's fixture tool test_missing_capability",
    ),
    (
        "sep-2575-http-server-no-independent-requests-on-stream",
        "calls the suite's fixture tool test_streaming_elicitation",
    ),
    (
        "sep-2575-server-no-log-without-loglevel",
        "calls the suite's fixture tool test_logging_tool",
    ),
    (
        "sep-2549-prompts-list-caching-hints",
        "reeve serves no prompts",
    ),
    (
        "sep-2549-resources-list-caching-hints",
        "reeve serves no resources",
    ),
    (
        "sep-2549-resources-templates-list-caching-hints",
        "reeve serves no resources",
    ),
];

/// Scenarios out of scope, by the prefix of their names, and why. They run, but their outcome
/// says nothing about reeve.
const OUT_OF_SCOPE: [(&str, &str); 12] = [
    (
        "tools-call-",
        "call the suite's fixture tools (test_simple_text, test_image_content, …)",
    ),
    (
        "json-schema-2020-12",
        "calls the suite's fixture tool json_schema_2020_12_tool",
    ),
    (
        "elicitation-",
        "call the suite's fixture tools; reeve never asks the client for input",
    ),
    (
        "input-required-result-",
        "call the suite's fixture tools (test_input_required_result_…)",
    ),
    ("resources-", "reeve serves no resources"),
    ("sep-2164-resource-not-found", "reeve serves no resources"),
    ("prompts-", "reeve serves no prompts"),
    (
        "completion-complete",
        "completes prompt and resource arguments; reeve has neither",
    ),
    (
        "logging-set-level",
        "reeve declares no logging capability: it sends no log messages",
    ),
    (
        "http-custom-header-server-validation",
        "needs a tool whose inputSchema mirrors parameters into headers (x-mcp-header); reeve's tools have none",
    ),
    ("tasks-", "the tasks extension, which reeve does not offer"),
    (
        "sep-2640-skills-",
        "the skills extension, which reeve does not offer",
    ),
];

fn out_of_scope(scenario: &str) -> Option<&'static str> {
    OUT_OF_SCOPE
        .iter()
        .find(|(prefix, _)| scenario.starts_with(prefix))
        .map(|(_, why)| *why)
}

/// Installs the suite (once; see setup.sh) and returns its node binary and entry point.
fn install() -> (PathBuf, PathBuf) {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/conformance");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("mcp-conformance");
    let out = Command::new("bash")
        .arg(here.join("setup.sh"))
        .arg(&dir)
        .output()
        .expect("run tests/interop/conformance/setup.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "installing the MCP conformance suite failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout.lines().rev();
    let suite = lines.next().map(PathBuf::from).expect("the suite's path");
    let node = lines.next().map(PathBuf::from).expect("node's path");
    (node, suite)
}

/// Where the proxy sends what it receives, and the token it adds.
struct Upstream {
    client: reqwest::Client,
    base: String,
    token: String,
}

/// Headers that describe one hop of a connection, not the request: the proxy's client sets
/// its own.
fn hop_by_hop(name: &HeaderName) -> bool {
    [
        header::CONNECTION,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::AUTHORIZATION,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
}

async fn forward(State(up): State<Arc<Upstream>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 16 << 20).await else {
        return (StatusCode::BAD_GATEWAY, "the proxy could not read the body").into_response();
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut rb = up
        .client
        .request(parts.method, format!("{}{path}", up.base))
        .bearer_auth(&up.token)
        .body(body);
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            rb = rb.header(name, value);
        }
    }
    let resp = match rb.send().await {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let mut out = Response::builder().status(resp.status());
    for (name, value) in resp.headers() {
        if !hop_by_hop(name) {
            out = out.header(name, value);
        }
    }
    let body = resp.bytes().await.unwrap_or_default();
    out.body(Body::from(body))
        .unwrap_or_else(|e| (StatusCode::BAD_GATEWAY, e.to_string()).into_response())
}

/// A loopback proxy in front of `server` that adds `token` to every request.
async fn auth_proxy(server: SocketAddr, token: &str) -> SocketAddr {
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client");
    let up = Arc::new(Upstream {
        client,
        base: format!("http://{server}"),
        token: token.to_string(),
    });
    let app = Router::new().fallback(forward).with_state(up);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the proxy");
    let addr = listener.local_addr().expect("the proxy's address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// The scenario a result directory is for: `server-<scenario>-<ISO timestamp>`.
fn scenario_of(dir: &str) -> Option<&str> {
    let rest = dir.strip_prefix("server-")?;
    // The timestamp has a fixed width: -2026-11-29T14-27-07-037Z
    let (name, stamp) = rest.split_at(rest.len().checked_sub(25)?);
    (stamp.starts_with('-') && stamp.ends_with('Z') && stamp.contains('T')).then_some(name)
}

/// Every scenario's checks, by scenario.
fn results(out: &Path) -> BTreeMap<String, Vec<Value>> {
    let mut all = BTreeMap::new();
    for entry in std::fs::read_dir(out).expect("the suite's output directory") {
        let path = entry.expect("a directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let scenario = scenario_of(name)
            .unwrap_or_else(|| panic!("an output directory the test cannot name: {name}"));
        let text = std::fs::read_to_string(path.join("checks.json"))
            .unwrap_or_else(|e| panic!("{name}/checks.json: {e}"));
        let checks: Vec<Value> = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{name}/checks.json is not a list of checks: {e}"));
        all.insert(scenario.to_string(), checks);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_conformance_suite_passes_every_scenario_reeve_is_in_scope_for() {
    let (node, suite) = tokio::task::spawn_blocking(install)
        .await
        .expect("install task");
    let s = TestServer::start_with(|c| {
        c.mcp_trigger_per_min = 100_000;
        c.mcp_read_per_min = 100_000;
    })
    .await;
    let (_, token) = s.create_token("mcp", json!({}), true).await;
    let proxy = auth_proxy(s.addr, &token).await;
    let out = tempfile::tempdir().expect("tempdir");

    let run = tokio::process::Command::new(&node)
        .arg(&suite)
        .args(["server", "--suite", "all", "--url"])
        .arg(format!("http://{proxy}/mcp"))
        .arg("--output-dir")
        .arg(out.path())
        .current_dir(out.path())
        .kill_on_drop(true)
        .output();
    let run = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("the suite finishes within 10 minutes")
        .expect("run the conformance suite");
    // The suite exits 1 when any scenario fails, out-of-scope ones included: the verdict is
    // read from each scenario's checks instead.
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );

    let all = results(out.path());
    let mut failures = Vec::new();
    let mut unclassified = Vec::new();
    for (scenario, checks) in &all {
        let in_scope = IN_SCOPE.contains(&scenario.as_str());
        match (in_scope, out_of_scope(scenario)) {
            (true, None) => {}
            (false, Some(_)) => continue,
            _ => {
                unclassified.push(scenario.clone());
                continue;
            }
        }
        for c in checks {
            let id = c["id"].as_str().unwrap_or("?");
            if c["status"] == "FAILURE" && !FIXTURE_CHECKS.iter().any(|(f, _)| *f == id) {
                failures.push(format!("{scenario} / {id}: {}", c["errorMessage"]));
            }
        }
    }
    assert!(
        unclassified.is_empty(),
        "scenarios neither in scope nor out of it (or both): {unclassified:?}\n{log}"
    );
    let ran: BTreeSet<&str> = all.keys().map(String::as_str).collect();
    let missing: Vec<&str> = IN_SCOPE
        .iter()
        .filter(|s| !ran.contains(*s))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "in-scope scenarios that did not run: {missing:?}\n{log}"
    );
    assert!(
        failures.is_empty(),
        "in-scope conformance checks failed:\n{}\n\n{log}",
        failures.join("\n")
    );
    // The fixture checks excused above must exist, or the list has gone stale.
    let ids: BTreeSet<&str> = all
        .values()
        .flatten()
        .filter_map(|c| c["id"].as_str())
        .collect();
    for (id, _) in FIXTURE_CHECKS {
        assert!(ids.contains(id), "the suite has no check {id} any more");
    }
    for (prefix, _) in OUT_OF_SCOPE {
        assert!(
            ran.iter().any(|s| s.starts_with(prefix)),
            "no scenario {prefix}… ran: the out-of-scope list has gone stale"
        );
    }

    // The README names what is out of scope, and the version it was judged against.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let pinned = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/conformance/package.json"
    ))
    .expect("package.json");
    let pinned: Value = serde_json::from_str(&pinned).expect("package.json is JSON");
    let version = pinned["dependencies"]["@modelcontextprotocol/conformance"]
        .as_str()
        .expect("the suite's pinned version");
    assert!(readme.contains(version), "the README names {version}");
    for name in OUT_OF_SCOPE
        .iter()
        .map(|(p, _)| *p)
        .chain(FIXTURE_CHECKS.iter().map(|(c, _)| *c))
    {
        assert!(
            readme.contains(&format!("`{name}")),
            "the README's MCP section lists {name} as out of scope"
        );
    }
}

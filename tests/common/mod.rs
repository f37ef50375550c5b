//! Shared harness for the black-box REST tests.
//!
//! Every test file pulls this in with `mod common;` and uses a different subset of it,
//! so unused items are expected per test binary.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, Instant};

use reeve::server::{Server, ServerConfig};
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};
use tempfile::TempDir;

/// An interval long enough that no scheduler fires a watch while a test runs, so
/// audit counts and before/after comparisons are not disturbed by background runs.
pub const LONG_INTERVAL: u64 = 600;

/// A captured response: status, headers and the body both as text and as JSON
/// (`Value::Null` when the body is empty or not JSON).
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    #[track_caller]
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(
            self.status, status,
            "unexpected status; headers {:?}; body {}",
            self.headers, self.text
        );
        &self.body
    }

    /// The body's `"id"` as a String, for the many responses that carry one.
    #[track_caller]
    pub fn id(&self) -> String {
        str_field(&self.body, "id")
    }
}

pub async fn fetch(rb: RequestBuilder) -> Resp {
    let resp = rb
        .send()
        .await
        .expect("request failed at the transport level");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("reading response body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        text,
        body,
    }
}

#[track_caller]
pub fn str_field(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("expected string field {key:?} in {v}"))
        .to_string()
}

/// Checks the whole problem+json shape, not only the code, because clients are
/// promised the same envelope for every refusal.
#[track_caller]
pub fn assert_problem<'a>(resp: &'a Resp, status: u16, code: &str) -> &'a Value {
    assert_eq!(
        resp.status, status,
        "expected {status} {code}; headers {:?}; body {}",
        resp.headers, resp.text
    );
    let ct = resp.header("content-type").unwrap_or("");
    assert!(
        ct.starts_with("application/problem+json"),
        "expected application/problem+json for {code}, got content-type {ct:?}; body {}",
        resp.text
    );
    let b = &resp.body;
    assert_eq!(
        b["code"],
        json!(code),
        "wrong problem code; body {}",
        resp.text
    );
    assert_eq!(
        b["status"],
        json!(status),
        "problem status field; body {}",
        resp.text
    );
    for key in ["type", "title", "detail"] {
        assert!(
            b[key].is_string(),
            "problem body lacks string {key:?}: {}",
            resp.text
        );
    }
    b
}

/// 422 validation problems must name the offending field.
#[track_caller]
pub fn assert_field_problem(resp: &Resp, code: &str, field: &str) {
    let b = assert_problem(resp, 422, code);
    assert_eq!(
        b["field"],
        json!(field),
        "problem field; body {}",
        resp.text
    );
}

#[track_caller]
pub fn assert_unauthorized(resp: &Resp) {
    assert_problem(resp, 401, "unauthorized");
    let www = resp.header("www-authenticate").unwrap_or("");
    assert!(
        www.starts_with("Bearer"),
        "401 must carry WWW-Authenticate: Bearer, got {www:?}"
    );
}

/// Parses an API timestamp, insisting on RFC 3339 in UTC with a literal `Z`.
#[track_caller]
pub fn ts(v: &Value) -> jiff::Timestamp {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("expected a timestamp string, got {v}"));
    assert!(
        s.ends_with('Z'),
        "timestamp {s:?} is not UTC with a Z suffix"
    );
    s.parse::<jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("timestamp {s:?} is not RFC 3339: {e}"))
}

pub fn secs(n: i64) -> jiff::SignedDuration {
    jiff::SignedDuration::from_secs(n)
}

/// Percent-encodes a query value (everything outside RFC 3986 unreserved).
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Builds `?k=v&...` with encoded values.
pub fn qs(pairs: &[(&str, &str)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect();
    format!("?{}", parts.join("&"))
}

pub fn watch_body(project: &str, to_uri: &str) -> Value {
    json!({
        "project": project,
        "source": format!("https://source.example.com/{}", enc(to_uri)),
        "to_uri": to_uri,
        "watch_interval": LONG_INTERVAL,
    })
}

/// Polls `f` until it returns `Some` or the deadline passes.
pub async fn eventually<T, F, Fut>(limit: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client for one running reeve, in-process or a child process.
#[derive(Clone)]
pub struct Api {
    pub client: reqwest::Client,
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub base: String,
    pub admin: String,
}

impl Api {
    pub fn new(base: String, admin: String) -> Self {
        // Bypass any proxy from the environment: the server is on loopback.
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("building reqwest client");
        Api {
            client,
            base,
            admin,
        }
    }

    /// URL of a path under `/api/v1`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1{}", self.base, path)
    }

    pub fn call(&self, method: Method, token: &str, path: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(token)
    }

    pub async fn get(&self, token: &str, path: &str) -> Resp {
        fetch(self.call(Method::GET, token, path)).await
    }

    pub async fn post(&self, token: &str, path: &str, body: Value) -> Resp {
        fetch(self.call(Method::POST, token, path).json(&body)).await
    }

    pub async fn patch(&self, token: &str, path: &str, body: Value) -> Resp {
        fetch(self.call(Method::PATCH, token, path).json(&body)).await
    }

    pub async fn delete(&self, token: &str, path: &str) -> Resp {
        fetch(self.call(Method::DELETE, token, path)).await
    }

    /// Sends a body verbatim as application/json, for payloads serde_json
    /// would refuse to produce (e.g. `1e400`).
    pub async fn send_raw(&self, method: Method, token: &str, path: &str, raw: &str) -> Resp {
        fetch(
            self.call(method, token, path)
                .header("content-type", "application/json")
                .body(raw.to_string()),
        )
        .await
    }

    pub async fn create_project(&self, token: &str, id: &str) -> Value {
        let r = self.post(token, "/projects", json!({ "id": id })).await;
        assert_eq!(r.status, 201, "create project {id}: {}", r.text);
        r.body
    }

    /// Creates a token with the admin secret. `projects` is the `enabled_projects`
    /// object (`json!({})` for all projects). Returns `(id, secret)`.
    pub async fn create_token(
        &self,
        kind: &str,
        projects: Value,
        allow_trigger: bool,
    ) -> (String, String) {
        let r = self
            .post(
                &self.admin,
                "/tokens",
                json!({
                    "kind": kind,
                    "description": format!("{kind} token for tests"),
                    "enabled_projects": projects,
                    "allow_trigger": allow_trigger,
                }),
            )
            .await;
        assert_eq!(r.status, 201, "create {kind} token: {}", r.text);
        (r.id(), str_field(&r.body, "secret"))
    }

    pub async fn create_watch(&self, token: &str, body: Value) -> Resp {
        self.post(token, "/watches", body).await
    }

    /// Creates a watch with default fields and insists it worked.
    pub async fn watch(&self, token: &str, project: &str, to_uri: &str) -> Value {
        let r = self.create_watch(token, watch_body(project, to_uri)).await;
        assert_eq!(
            r.status, 201,
            "create watch {to_uri} in {project}: {}",
            r.text
        );
        r.body
    }

    pub async fn get_watch(&self, token: &str, id: &str) -> Resp {
        self.get(token, &format!("/watches/{id}")).await
    }

    /// The watch as the admin sees it now; panics unless it exists.
    pub async fn watch_now(&self, id: &str) -> Value {
        let r = self.get_watch(&self.admin, id).await;
        assert_eq!(r.status, 200, "GET watch {id}: {}", r.text);
        r.body
    }

    pub async fn list(&self, token: &str, query: &str) -> Value {
        let r = self.get(token, &format!("/watches{query}")).await;
        assert_eq!(r.status, 200, "list watches{query}: {}", r.text);
        r.body
    }

    /// Every watch visible to `token`, following cursors.
    pub async fn all_watches(&self, token: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10_000 {
            let q = match &cursor {
                Some(c) => qs(&[("limit", "500"), ("cursor", c)]),
                None => "?limit=500".to_string(),
            };
            let page = self.list(token, &q).await;
            out.extend(
                page["watches"]
                    .as_array()
                    .expect("watches array")
                    .iter()
                    .cloned(),
            );
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return out,
            }
        }
        panic!("watch pagination did not terminate");
    }

    pub async fn audit(&self, query: &str) -> Value {
        let r = self.get(&self.admin, &format!("/audit{query}")).await;
        assert_eq!(r.status, 200, "GET /audit{query}: {}", r.text);
        r.body
    }

    /// All audit entries after `since` (exclusive), following `next_since`.
    pub async fn audit_entries(&self, since: u64) -> Vec<Value> {
        let mut out = Vec::new();
        let mut since = since;
        for _ in 0..10_000 {
            let page = self.audit(&format!("?since_seq={since}&limit=500")).await;
            let entries = page["entries"].as_array().expect("entries array");
            out.extend(entries.iter().cloned());
            match page["next_since"].as_u64() {
                Some(n) => {
                    assert!(n > since, "next_since must advance: {n} after {since}");
                    since = n;
                }
                None => return out,
            }
        }
        panic!("audit pagination did not terminate");
    }

    /// The highest audit seq so far (0 when the log is empty): a mark to diff against.
    pub async fn audit_head(&self) -> u64 {
        self.audit_entries(0)
            .await
            .iter()
            .filter_map(|e| e["seq"].as_u64())
            .max()
            .unwrap_or(0)
    }

    /// Id of the first active admin token (the bootstrap one, in tests that make no other).
    pub async fn admin_token_id(&self) -> String {
        let r = self.get(&self.admin, "/tokens").await;
        assert_eq!(r.status, 200, "GET /tokens: {}", r.text);
        r.body["tokens"]
            .as_array()
            .expect("tokens array")
            .iter()
            .find(|t| t["kind"] == "admin" && t["revoked_at"].is_null())
            .map(|t| str_field(t, "id"))
            .expect("an active admin token")
    }
}

/// Lets the harness accept `shutdown()` returning either `()` or `Result<(), E>`.
pub trait Settled {
    fn settled(self);
}

impl Settled for () {
    fn settled(self) {}
}

impl<E: std::fmt::Debug> Settled for Result<(), E> {
    fn settled(self) {
        self.expect("server shutdown failed");
    }
}

type Shutdown = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>>>;

/// An in-process server on a fresh data dir, reached over real HTTP.
pub struct TestServer {
    pub api: Api,
    pub addr: SocketAddr,
    pub dir: TempDir,
    /// Whether this start minted the admin token (`Server::admin_token()` was `Some`).
    pub admin_was_created: bool,
    configure: fn(&mut ServerConfig),
    shutdown: Option<Shutdown>,
}

impl Deref for TestServer {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

fn no_changes(_: &mut ServerConfig) {}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(no_changes).await
    }

    pub async fn start_with(configure: fn(&mut ServerConfig)) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::boot(dir, configure, None).await
    }

    async fn boot(
        dir: TempDir,
        configure: fn(&mut ServerConfig),
        known_admin: Option<String>,
    ) -> TestServer {
        let mut cfg = ServerConfig::for_tests(dir.path());
        configure(&mut cfg);
        let server = Server::start(cfg).await.expect("Server::start");
        let addr = server.addr();
        let minted = server.admin_token();
        let admin_was_created = minted.is_some();
        let admin = match minted {
            Some(t) => t,
            None => known_admin.unwrap_or_else(|| read_admin_file(dir.path())),
        };
        let shutdown: Shutdown = Box::new(move || {
            Box::pin(async move {
                // `shutdown()` may return `()` or a `Result`; `settled` handles both.
                #[allow(clippy::unit_arg)]
                server.shutdown().await.settled();
            })
        });
        TestServer {
            api: Api::new(format!("http://{addr}"), admin),
            addr,
            dir,
            admin_was_created,
            configure,
            shutdown: Some(shutdown),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub async fn shutdown(&mut self) {
        if let Some(f) = self.shutdown.take() {
            f().await;
        }
    }

    /// Graceful shutdown, then a fresh server on the same data dir.
    pub async fn restart(mut self) -> TestServer {
        self.shutdown().await;
        let TestServer {
            api,
            dir,
            configure,
            ..
        } = self;
        Self::boot(dir, configure, Some(api.admin)).await
    }
}

pub fn read_admin_file(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("admin.token"))
        .expect("reading <data_dir>/admin.token")
        .trim()
        .to_string()
}

/// Finds `key` anywhere in a JSON tree; used to prove secrets never leak.
pub fn contains_key(v: &Value, key: &str) -> bool {
    match v {
        Value::Object(m) => m.iter().any(|(k, v)| k == key || contains_key(v, key)),
        Value::Array(a) => a.iter().any(|v| contains_key(v, key)),
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// Builds, jobs and the runner protocol.
// ---------------------------------------------------------------------------

/// The reserved first job of every build.
pub const CREATE_JOBS: &str = "Create Jobs";

/// A pipeline of trivial jobs; each entry is `(name, parents)` with the default `on`.
pub fn pipeline(jobs: &[(&str, &[&str])]) -> Value {
    let jobs: Vec<Value> = jobs
        .iter()
        .map(|(name, deps)| json!({ "name": name, "run": format!("echo {name}"), "depends_on": deps }))
        .collect();
    json!({ "jobs": jobs })
}

pub fn builds_path(project: &str) -> String {
    format!("/projects/{project}/builds")
}

pub fn build_path(project: &str, build: &str) -> String {
    format!("/projects/{project}/builds/{build}")
}

pub fn job_path(project: &str, job: &str) -> String {
    format!("/projects/{project}/jobs/{job}")
}

/// The job called `name` in a build view; panics when there is none or several.
#[track_caller]
pub fn job_named<'a>(build: &'a Value, name: &str) -> &'a Value {
    let hits: Vec<&Value> = build["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("build has no jobs array: {build}"))
        .iter()
        .filter(|j| j["name"] == name)
        .collect();
    assert_eq!(hits.len(), 1, "expected one job named {name:?} in {build}");
    hits[0]
}

/// The id of the job called `name` in a build view.
#[track_caller]
pub fn job_id(build: &Value, name: &str) -> String {
    str_field(job_named(build, name), "id")
}

/// Every job name of a build view, sorted.
#[track_caller]
pub fn job_names(build: &Value) -> Vec<String> {
    let mut names: Vec<String> = build["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("build has no jobs array: {build}"))
        .iter()
        .map(|j| str_field(j, "name"))
        .collect();
    names.sort();
    names
}

impl Api {
    /// A runner token for all projects. It carries allow_trigger so that only the
    /// token kind, never the trigger flag, decides what the runner routes accept.
    pub async fn runner_token(&self) -> String {
        self.create_token("runner", json!({}), true).await.1
    }

    /// Triggers a build with an inline pipeline and insists on 201.
    pub async fn trigger_build(&self, token: &str, project: &str, pipeline: Value) -> Value {
        let r = self
            .post(
                token,
                &builds_path(project),
                json!({ "pipeline": pipeline }),
            )
            .await;
        assert_eq!(r.status, 201, "trigger build in {project}: {}", r.text);
        r.body
    }

    /// The build as the admin sees it now; panics unless it exists.
    pub async fn build_now(&self, project: &str, build: &str) -> Value {
        let r = self.get(&self.admin, &build_path(project, build)).await;
        assert_eq!(r.status, 200, "GET build {build}: {}", r.text);
        r.body
    }

    /// The job as the admin sees it now; panics unless it exists.
    pub async fn job_now(&self, project: &str, job: &str) -> Value {
        let r = self.get(&self.admin, &job_path(project, job)).await;
        assert_eq!(r.status, 200, "GET job {job}: {}", r.text);
        r.body
    }

    pub async fn claim_wait(&self, runner: &str, wait_seconds: u64) -> Resp {
        self.post(
            runner,
            "/runner/claim",
            json!({ "wait_seconds": wait_seconds }),
        )
        .await
    }

    /// One claim without waiting: the whole claim answer, or `None` on 204.
    pub async fn claim(&self, runner: &str) -> Option<Value> {
        let r = self.claim_wait(runner, 0).await;
        match r.status {
            200 => Some(r.body),
            204 => {
                assert!(r.text.is_empty(), "204 claim must have no body: {}", r.text);
                None
            }
            s => panic!("claim: unexpected status {s}: {}", r.text),
        }
    }

    pub async fn heartbeat(&self, runner: &str, job: &str, lease: &str) -> Resp {
        self.post(
            runner,
            &format!("/runner/jobs/{job}/heartbeat"),
            json!({ "lease_id": lease }),
        )
        .await
    }

    pub async fn finish(&self, runner: &str, job: &str, lease: &str, state: &str) -> Resp {
        self.post(
            runner,
            &format!("/runner/jobs/{job}/finish"),
            json!({ "lease_id": lease, "state": state }),
        )
        .await
    }

    /// Claims and finishes until nothing is claimable, ending each job in the state
    /// `outcome` picks from its name. Returns the claimed jobs in claim order.
    pub async fn drain(&self, runner: &str, outcome: impl Fn(&str) -> &'static str) -> Vec<Value> {
        let mut claimed = Vec::new();
        for _ in 0..1000 {
            let Some(c) = self.claim(runner).await else {
                return claimed;
            };
            let job = c["job"].clone();
            let id = str_field(&job, "id");
            let lease = str_field(&c, "lease_id");
            let state = outcome(job["name"].as_str().unwrap_or_default());
            let r = self.finish(runner, &id, &lease, state).await;
            assert_eq!(r.status, 200, "finish {id} as {state}: {}", r.text);
            claimed.push(job);
        }
        panic!("drain did not run out of claimable jobs");
    }
}

/// Copies a directory tree (a data dir, a fixture).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A copy of `dir` in a fresh tempdir (kept alive by the returned guard).
pub fn copy_of(dir: &Path) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("data");
    copy_dir(dir, &copy);
    (tmp, copy)
}

/// Changes one table of a stopped data dir's store (`store.redb`) through redb itself, so
/// that the file stays well-formed: only reeve's own checks (seals, chain, WAL) can tell.
#[allow(dead_code)]
pub fn alter_store(
    dir: &std::path::Path,
    table: &str,
    change: impl FnOnce(&mut redb::Table<&[u8], &[u8]>),
) {
    let db = redb::Database::open(dir.join(reeve::log::STORE_FILE)).unwrap();
    let tx = db.begin_write().unwrap();
    {
        let mut t = tx
            .open_table(redb::TableDefinition::<&[u8], &[u8]>::new(table))
            .unwrap();
        change(&mut t);
    }
    tx.commit().unwrap();
}

/// One value of a stopped data dir's store.
#[allow(dead_code)]
pub fn store_get(dir: &std::path::Path, table: &str, key: &[u8]) -> Option<Vec<u8>> {
    use redb::ReadableDatabase;
    let db = redb::Database::open(dir.join(reeve::log::STORE_FILE)).unwrap();
    let tx = db.begin_read().unwrap();
    let t = tx
        .open_table(redb::TableDefinition::<&[u8], &[u8]>::new(table))
        .unwrap();
    t.get(key).unwrap().map(|v| v.value().to_vec())
}

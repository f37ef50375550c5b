//! What a long history costs a running server: the real `reeve serve` (the release binary
//! cargo builds for the benches) on data dirs of 1,000,000 and 2,000,000 commits.
//!
//! For each size in REEVE_HISTORY_SIZES (default `1000000,2000000`) it writes the mix of
//! `benches/common/mix.rs` (the one `benches/audit.rs` writes) into a data dir, cached under
//! `target/bench-history/mix<version>-<size>/` so a re-run does not write it again, copies it to
//! a scratch dir (a server run changes the dir it serves) and measures:
//!
//! - cold start: process spawn until `/healthz` answers 200 (the replay of the whole log; the
//!   files are in the page cache, since they were just copied);
//! - `VmRSS` right after that, and again after REEVE_HISTORY_LOAD_SECS (default 60) seconds of
//!   steady load over HTTP: four clients, each at REEVE_HISTORY_LOAD_RATE requests a second
//!   (default 20) — one triggers builds, one lists and reads builds, one pauses and resumes
//!   watches, one is a runner (claim, heartbeat, finish — claims go oldest first, so it works
//!   through the jobs of the written builds, which no one ran);
//! - `GET /api/v1/audit` with filters (project, principal, plane, outcome, and none): pages
//!   followed by their `next_since` cursor from the start and from the middle of the log, and
//!   pages at random points of it; p50/p99;
//! - `GET` of the first build the log holds, p50/p99 over repeated requests (and, for
//!   comparison, of the newest one);
//! - SIGTERM until the process has exited;
//! - a second start on the same data dir (spawn → `/healthz`) and its `VmRSS`: the first start
//!   is the first open of a freshly written dir (copied and synced to disk first).
//!
//! Then a Markdown table, one row per size and a row of ratios of each size to the first.
//!
//! `cargo bench --bench history`; a quick run:
//! `REEVE_HISTORY_SIZES=20000 REEVE_HISTORY_LOAD_SECS=5 cargo bench --bench history`.
//! The server runs with its defaults (durable sync) except `--runners 0` (the bench is the
//! runner: the written builds' jobs would otherwise start running at once) and rate limits
//! high enough that the bench never meets them. Its stderr (`RUST_LOG=warn`) is kept in
//! `target/bench-history/serve-<size>.log`; remove `target/bench-history/` to write the logs
//! again.

#[path = "common/mix.rs"]
mod mix;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        _ => default,
    }
}

fn sizes() -> Vec<u64> {
    let raw = std::env::var("REEVE_HISTORY_SIZES").unwrap_or_else(|_| "1000000,2000000".into());
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.replace('_', "")
                .parse()
                .ok()
                .filter(|n| *n >= 100)
                .unwrap_or_else(|| {
                    panic!("REEVE_HISTORY_SIZES: {s:?} is not a number of commits (at least 100)")
                })
        })
        .collect()
}

/// `target/`: the directory the binary under test was built into is `target/release/`.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_reeve"))
        .parent()
        .and_then(Path::parent)
        .expect("the reeve binary lives in target/<profile>/")
        .to_path_buf()
}

/// The cached data dir of the mix at `size` commits, written first if it is not there yet.
/// Returns the dir and, when it was written now, how long that took.
fn cached_log(root: &Path, size: u64) -> (PathBuf, Option<f64>) {
    // Named by the store too: a dir written by an older store would be moved on first open.
    let entry = root.join(format!("mix{}-redb-{size}", mix::MIX_VERSION));
    let data = entry.join("data");
    let done = entry.join("written");
    if done.exists() {
        return (data, None);
    }
    // A dir without the marker is an interrupted write: start over.
    if entry.exists() {
        fs::remove_dir_all(&entry).expect("removing an incomplete cached log");
    }
    fs::create_dir_all(&data).expect("creating the cache dir");
    println!("writing {size} commits into {} ...", data.display());
    let secs = mix::write(&data, size);
    fs::write(
        &done,
        format!(
            "{size} commits of mix {}, written in {secs:.1} s\n",
            mix::MIX_VERSION
        ),
    )
    .expect("writing the cache marker");
    (data, Some(secs))
}

fn copy_tree(from: &Path, to: &Path) -> io::Result<u64> {
    fs::create_dir_all(to)?;
    let mut bytes = 0;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let dest = to.join(entry.file_name());
        if kind.is_dir() {
            bytes += copy_tree(&entry.path(), &dest)?;
        } else if kind.is_file() {
            bytes += fs::copy(entry.path(), &dest)?;
            // The copy's dirty pages are written back here, not in the server's first
            // `fdatasync`: a start is timed on a data dir at rest, as an operator's is.
            fs::File::open(&dest)?.sync_all()?;
        }
    }
    Ok(bytes)
}

/// `VmRSS` of a process, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("reading /proc status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    kib / 1024.0
}

/// A `reeve serve` child; killed on drop so a failing run leaves nothing behind.
struct Serve {
    child: Child,
    /// stdout, line by line (drained by a thread so the child never blocks on it).
    lines: Receiver<String>,
    log: PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Serve {
    fn spawn(data: &Path, log: &Path) -> Serve {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_reeve"));
        // Only the flags below configure the server, not whatever REEVE_* the caller has set.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("REEVE_") {
                cmd.env_remove(key);
            }
        }
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data)
            .args(["--listen", "127.0.0.1:0", "--runners", "0"])
            .args([
                "--trigger-per-min",
                "10000000",
                "--read-per-min",
                "10000000",
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(log).expect("creating the server's log"));
        let mut child = cmd.spawn().expect("spawning reeve serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Serve {
            child,
            lines,
            log: log.to_path_buf(),
        }
    }

    /// The base URL from the `reeve listening on http://…` line.
    fn base(&self) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(1800)) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("reeve listening on ") {
                        return url.trim().trim_end_matches('/').to_string();
                    }
                }
                Err(_) => panic!(
                    "reeve serve never said where it listens; its log: {}",
                    fs::read_to_string(&self.log).unwrap_or_default()
                ),
            }
        }
    }
}

#[derive(Clone)]
struct Http {
    client: reqwest::Client,
    base: String,
    token: String,
}

struct Answer {
    status: u16,
    body: Value,
    ms: f64,
}

impl Http {
    fn new(base: &str, token: &str) -> Http {
        Http {
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(300))
                .build()
                .expect("client"),
            base: base.to_string(),
            token: token.to_string(),
        }
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let started = Instant::now();
        let mut req = self
            .client
            .request(method, format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        Answer {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            ms: started.elapsed().as_secs_f64() * 1e3,
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None).await
    }

    #[track_caller]
    fn must(answer: Answer, status: u16, what: &str) -> Answer {
        assert_eq!(answer.status, status, "{what}: {}", answer.body);
        answer
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Latencies and failures of one kind of request.
#[derive(Default)]
struct Kind {
    ms: Vec<f64>,
    failed: u64,
    first_failure: Option<String>,
}

#[derive(Default)]
struct Stats(BTreeMap<&'static str, Kind>);

impl Stats {
    fn record(&mut self, kind: &'static str, answer: &Answer, ok: &[u16]) {
        let k = self.0.entry(kind).or_default();
        k.ms.push(answer.ms);
        if !ok.contains(&answer.status) {
            k.failed += 1;
            k.first_failure
                .get_or_insert_with(|| format!("{} {}", answer.status, answer.body));
        }
    }

    fn merge(&mut self, other: Stats) {
        for (kind, o) in other.0 {
            let k = self.0.entry(kind).or_default();
            k.ms.extend(o.ms);
            k.failed += o.failed;
            if k.first_failure.is_none() {
                k.first_failure = o.first_failure;
            }
        }
    }

    fn print(&mut self, indent: &str) {
        for (kind, k) in &mut self.0 {
            k.ms.sort_by(f64::total_cmp);
            print!(
                "{indent}{kind:<24} {:>6} requests  p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms",
                k.ms.len(),
                percentile(&k.ms, 0.5),
                percentile(&k.ms, 0.99),
                k.ms.last().copied().unwrap_or(f64::NAN),
            );
            match &k.first_failure {
                Some(f) => println!("  {} failed, first: {f}", k.failed),
                None => println!(),
            }
        }
    }
}

/// Ticks every `period` until `until`; a tick missed while a request was slow is not made up.
struct Pacer {
    tick: tokio::time::Interval,
    until: Instant,
}

impl Pacer {
    fn new(period: Duration, until: Instant) -> Pacer {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Pacer { tick, until }
    }

    async fn next(&mut self) -> bool {
        self.tick.tick().await;
        Instant::now() < self.until
    }
}

fn pipeline() -> Value {
    json!({"jobs": [
        {"name": "fetch", "run": "true"},
        {"name": "render", "run": "true", "depends_on": ["fetch"]},
        {"name": "publish", "run": "true", "depends_on": ["render"]},
    ]})
}

async fn trigger_builds(http: Http, mut pace: Pacer) -> Stats {
    let mut stats = Stats::default();
    let path = format!("/projects/{}/builds", mix::PROJECT);
    while pace.next().await {
        let a = http
            .send(Method::POST, &path, Some(json!({"pipeline": pipeline()})))
            .await;
        stats.record("POST build", &a, &[201]);
    }
    stats
}

async fn read_builds(http: Http, mut pace: Pacer) -> Stats {
    let mut stats = Stats::default();
    let mut ids: Vec<String> = Vec::new();
    let mut n = 0usize;
    while pace.next().await {
        n += 1;
        if n % 2 == 1 || ids.is_empty() {
            let a = http
                .get(&format!("/projects/{}/builds?limit=20", mix::PROJECT))
                .await;
            stats.record("GET builds (newest 20)", &a, &[200]);
            if let Some(list) = a.body["builds"].as_array() {
                ids = list
                    .iter()
                    .filter_map(|b| b["id"].as_str().map(String::from))
                    .collect();
            }
        } else {
            let id = &ids[n / 2 % ids.len()];
            let a = http
                .get(&format!("/projects/{}/builds/{id}", mix::PROJECT))
                .await;
            stats.record("GET build (recent)", &a, &[200]);
        }
    }
    stats
}

async fn pause_resume(http: Http, mut watches: Vec<(String, bool)>, mut pace: Pacer) -> Stats {
    let mut stats = Stats::default();
    let mut n = 0usize;
    while pace.next().await {
        let count = watches.len();
        let (id, active) = &mut watches[n % count];
        n += 1;
        let a = http
            .send(
                Method::PATCH,
                &format!("/watches/{id}"),
                Some(json!({"is_active": !*active})),
            )
            .await;
        let kind = if *active {
            "PATCH watch (pause)"
        } else {
            "PATCH watch (resume)"
        };
        stats.record(kind, &a, &[200]);
        if a.status == 200 {
            *active = !*active;
        }
    }
    stats
}

/// A runner: claim a job, heartbeat it once, finish it; one request per tick.
async fn run_jobs(http: Http, mut pace: Pacer) -> Stats {
    let mut stats = Stats::default();
    // The job held, its lease, and whether it has had its heartbeat.
    let mut held: Option<(String, String, bool)> = None;
    while pace.next().await {
        match held.take() {
            None => {
                let a = http
                    .send(
                        Method::POST,
                        "/runner/claim",
                        Some(json!({"wait_seconds": 0})),
                    )
                    .await;
                stats.record("POST claim", &a, &[200, 204]);
                if a.status == 200 {
                    let job = a.body["job"]["id"].as_str().unwrap_or_default();
                    let lease = a.body["lease_id"].as_str().unwrap_or_default();
                    held = Some((job.into(), lease.into(), false));
                }
            }
            Some((job, lease, false)) => {
                let a = http
                    .send(
                        Method::POST,
                        &format!("/runner/jobs/{job}/heartbeat"),
                        Some(json!({"lease_id": lease})),
                    )
                    .await;
                stats.record("POST heartbeat", &a, &[200]);
                if a.status == 200 {
                    held = Some((job, lease, true));
                }
            }
            Some((job, lease, true)) => {
                let a = http
                    .send(
                        Method::POST,
                        &format!("/runner/jobs/{job}/finish"),
                        Some(json!({"lease_id": lease, "state": "finished", "exit_code": 0})),
                    )
                    .await;
                stats.record("POST finish", &a, &[200]);
            }
        }
    }
    stats
}

/// A small deterministic generator (xorshift64*), so every run asks for the same pages.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

async fn audit_page(admin: &Http, filter: &str, since: u64) -> Answer {
    let sep = if filter.is_empty() { "" } else { "&" };
    admin
        .get(&format!("/audit?{filter}{sep}since_seq={since}&limit=100"))
        .await
}

/// `GET /api/v1/audit` with each filter: 10 pages followed from the start of the log, 10 from
/// its middle (fewer when the filter runs out of entries), 30 at random points. Returns every latency (ms).
async fn audit_pages(admin: &Http, head: u64, admin_principal: &str) -> Vec<f64> {
    let filters = [
        String::new(),
        format!("project={}", mix::PROJECT),
        "principal=system".into(),
        format!("principal={admin_principal}"),
        "plane=system".into(),
        "plane=rest".into(),
        "outcome=rejected".into(),
        format!("project={}&plane=system&outcome=accepted", mix::PROJECT),
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut all = Vec::new();
    for filter in &filters {
        let mut stats = Stats::default();
        for start in [0, head / 2] {
            let mut since = Some(start);
            for _ in 0..10 {
                let Some(s) = since else { break };
                let a = audit_page(admin, filter, s).await;
                stats.record("followed", &a, &[200]);
                since = a.body["next_since"].as_u64();
            }
        }
        for _ in 0..30 {
            let a = audit_page(admin, filter, rng.below(head)).await;
            stats.record("random", &a, &[200]);
        }
        println!(
            "    audit ?{}",
            if filter.is_empty() {
                "(no filter)"
            } else {
                filter
            }
        );
        for k in stats.0.values() {
            all.extend(&k.ms);
        }
        stats.print("      ");
    }
    all
}

/// The id of the first build in the log, from the audit trail (what an auditor would do).
async fn first_build(admin: &Http) -> String {
    let mut since = 0;
    loop {
        let page = Http::must(
            admin
                .get(&format!("/audit?since_seq={since}&limit=1000"))
                .await,
            200,
            "audit",
        );
        for entry in page.body["entries"].as_array().into_iter().flatten() {
            for event in entry["events"].as_array().into_iter().flatten() {
                if let Some(id) = event["build_created"]["id"].as_str() {
                    return id.to_string();
                }
            }
        }
        since = page.body["next_since"]
            .as_u64()
            .expect("a build somewhere in the log");
    }
}

async fn repeat_get(http: &Http, path: &str, n: usize) -> Vec<f64> {
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        ms.push(Http::must(http.get(path).await, 200, path).ms);
    }
    ms.sort_by(f64::total_cmp);
    ms
}

struct Row {
    size: u64,
    cold_start_s: f64,
    rss_start: f64,
    rss_load: f64,
    audit_p50: f64,
    audit_p99: f64,
    build_p50: f64,
    build_p99: f64,
    stop_s: f64,
    restart_s: f64,
    rss_restart: f64,
}

impl Row {
    fn values(&self) -> [f64; 10] {
        [
            self.cold_start_s,
            self.rss_start,
            self.rss_load,
            self.audit_p50,
            self.audit_p99,
            self.build_p50,
            self.build_p99,
            self.stop_s,
            self.restart_s,
            self.rss_restart,
        ]
    }
}

fn run_size(
    rt: &tokio::runtime::Runtime,
    root: &Path,
    size: u64,
    load_secs: u64,
    rate: f64,
) -> Row {
    println!("== {size} commits");
    let (cached, wrote) = cached_log(root, size);
    match wrote {
        Some(secs) => println!("  wrote the log in {secs:.1} s"),
        None => println!("  log cached in {}", cached.display()),
    }
    let scratch = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(root)
        .expect("scratch dir");
    let data = scratch.path().join("data");
    let copied = Instant::now();
    let bytes = copy_tree(&cached, &data).expect("copying the cached log");
    println!(
        "  data dir {:.0} MiB, copied to {} in {:.1} s",
        bytes as f64 / (1 << 20) as f64,
        data.display(),
        copied.elapsed().as_secs_f64()
    );
    let log = root.join(format!("serve-{size}.log"));

    let spawned = Instant::now();
    let mut serve = Serve::spawn(&data, &log);
    let pid = serve.child.id();
    let base = serve.base();
    let listening = spawned.elapsed().as_secs_f64();
    let probe = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    rt.block_on(async {
        loop {
            match probe.get(format!("{base}/healthz")).send().await {
                Ok(r) if r.status() == 200 => break,
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    });
    let cold_start_s = spawned.elapsed().as_secs_f64();
    let rss_start = rss_mib(pid);
    println!(
        "  cold start {cold_start_s:.2} s (listening line after {listening:.2} s), VmRSS {rss_start:.0} MiB"
    );

    let token = fs::read_to_string(data.join("admin.token")).expect("admin.token");
    let admin = Http::new(&base, token.trim());
    let (rss_load, audit_ms, cold_ms, hot_ms) = rt.block_on(async {
        let tokens = Http::must(admin.get("/tokens").await, 200, "tokens");
        let admin_id = tokens.body["tokens"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["kind"] == "admin")
            .and_then(|t| t["id"].as_str())
            .expect("the admin token")
            .to_string();
        let runner = Http::must(
            admin
                .send(
                    Method::POST,
                    "/tokens",
                    Some(json!({"kind": "runner", "description": "history bench runner", "allow_trigger": true})),
                )
                .await,
            201,
            "runner token",
        );
        let runner = Http::new(&base, runner.body["secret"].as_str().expect("secret"));
        let listed = Http::must(
            admin
                .get(&format!("/watches?project={}&limit=25", mix::PROJECT))
                .await,
            200,
            "watches",
        );
        // A few watches, each paused and resumed in turn.
        let watches: Vec<(String, bool)> = listed.body["watches"]
            .as_array()
            .into_iter()
            .flatten()
            .take(25)
            .filter_map(|w| Some((w["id"].as_str()?.to_string(), w["is_active"].as_bool()?)))
            .collect();
        assert!(!watches.is_empty(), "the log has watches");

        let period = Duration::from_secs_f64(1.0 / rate);
        let until = Instant::now() + Duration::from_secs(load_secs);
        let pace = || Pacer::new(period, until);
        let client = || Http::new(&base, &admin.token);
        let clients = vec![
            tokio::spawn(trigger_builds(client(), pace())),
            tokio::spawn(read_builds(client(), pace())),
            tokio::spawn(pause_resume(client(), watches, pace())),
            tokio::spawn(run_jobs(runner, pace())),
        ];
        let mut load = Stats::default();
        for c in clients {
            load.merge(c.await.expect("load client"));
        }
        let rss_load = rss_mib(pid);
        println!("  after {load_secs} s of load (4 clients, {rate} requests/s each): VmRSS {rss_load:.0} MiB");
        load.print("    ");

        let digest = Http::must(admin.get("/state/digest").await, 200, "digest");
        let head = digest.body["seq"].as_u64().expect("head seq");
        println!("  head seq {head}");
        let mut audit_ms = audit_pages(&admin, head, &format!("token:{admin_id}")).await;
        audit_ms.sort_by(f64::total_cmp);

        let first = first_build(&admin).await;
        let cold_ms = repeat_get(&admin, &format!("/projects/{}/builds/{first}", mix::PROJECT), 300).await;
        let newest = Http::must(
            admin.get(&format!("/projects/{}/builds?limit=1", mix::PROJECT)).await,
            200,
            "builds",
        );
        let newest = newest.body["builds"][0]["id"].as_str().expect("a build").to_string();
        let hot_ms = repeat_get(&admin, &format!("/projects/{}/builds/{newest}", mix::PROJECT), 300).await;
        (rss_load, audit_ms, cold_ms, hot_ms)
    });
    println!(
        "  audit: {} requests, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        audit_ms.len(),
        percentile(&audit_ms, 0.5),
        percentile(&audit_ms, 0.99),
        audit_ms.last().copied().unwrap_or(f64::NAN),
    );
    for (what, ms) in [
        ("first build of the log", &cold_ms),
        ("newest build", &hot_ms),
    ] {
        println!(
            "  GET {what}: {} requests, p50 {:.3} ms, p99 {:.3} ms",
            ms.len(),
            percentile(ms, 0.5),
            percentile(ms, 0.99)
        );
    }

    let stopping = Instant::now();
    // SAFETY: kill(2) on the pid of our own child, which has not been waited for yet.
    let sent = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    assert_eq!(sent, 0, "SIGTERM to reeve serve");
    let status = serve.child.wait().expect("waiting for reeve serve");
    let stop_s = stopping.elapsed().as_secs_f64();
    assert!(
        status.success(),
        "reeve serve exited with {status}; its log: {}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    println!("  SIGTERM → exit {stop_s:.2} s");
    drop(serve);

    // A second start on the same dir: what an operator's restart costs, after a clean stop
    // of the server itself rather than of the writer that wrote the dir.
    let spawned = Instant::now();
    let mut again = Serve::spawn(&data, &log);
    let pid = again.child.id();
    let base = again.base();
    rt.block_on(async {
        loop {
            match probe.get(format!("{base}/healthz")).send().await {
                Ok(r) if r.status() == 200 => break,
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    });
    let restart_s = spawned.elapsed().as_secs_f64();
    let rss_restart = rss_mib(pid);
    println!("  restart {restart_s:.2} s, VmRSS {rss_restart:.0} MiB");
    // SAFETY: as above, our own child, not waited for yet.
    let sent = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    assert_eq!(sent, 0, "SIGTERM to reeve serve");
    let status = again.child.wait().expect("waiting for reeve serve");
    assert!(status.success(), "reeve serve exited with {status}");
    drop(again);
    drop(scratch);

    Row {
        size,
        cold_start_s,
        rss_start,
        rss_load,
        audit_p50: percentile(&audit_ms, 0.5),
        audit_p99: percentile(&audit_ms, 0.99),
        build_p50: percentile(&cold_ms, 0.5),
        build_p99: percentile(&cold_ms, 0.99),
        stop_s,
        restart_s,
        rss_restart,
    }
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn main() {
    let sizes = sizes();
    let load_secs: u64 = env_or("REEVE_HISTORY_LOAD_SECS", 60);
    let rate: f64 = env_or("REEVE_HISTORY_LOAD_RATE", 20.0);
    assert!(rate > 0.0, "REEVE_HISTORY_LOAD_RATE must be > 0");
    let root = target_dir().join("bench-history");
    fs::create_dir_all(&root).expect("creating target/bench-history");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let rows: Vec<Row> = sizes
        .iter()
        .map(|&size| run_size(&rt, &root, size, load_secs, rate))
        .collect();

    println!();
    println!(
        "| commits | cold start (s) | VmRSS at start (MiB) | VmRSS after {load_secs} s load (MiB) | audit p50 (ms) | audit p99 (ms) | first build p50 (ms) | first build p99 (ms) | SIGTERM → exit (s) | restart (s) | VmRSS after restart (MiB) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let precision = [2, 0, 0, 2, 2, 3, 3, 2, 2, 0];
    for row in &rows {
        let cells: Vec<String> = row
            .values()
            .iter()
            .zip(precision)
            .map(|(v, p)| format!("{v:.p$}"))
            .collect();
        println!("| {} | {} |", thousands(row.size), cells.join(" | "));
    }
    if let Some((first, rest)) = rows.split_first() {
        for row in rest {
            let ratios: Vec<String> = row
                .values()
                .iter()
                .zip(first.values())
                .map(|(v, f)| format!("{:.2}×", v / f))
                .collect();
            println!(
                "| {} / {} | {} |",
                thousands(row.size),
                thousands(first.size),
                ratios.join(" | ")
            );
        }
    }
}

//! The real binary: startup line, admin token file, SIGTERM, restart on the same
//! data dir, exclusive use of a data dir, and durability of acknowledged writes.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use reeve::server::{Server, ServerConfig};
use reqwest::Method;
use serde_json::{Value, json};

const STARTUP: Duration = Duration::from_secs(60);
const EXIT: Duration = Duration::from_secs(30);

/// A child `reeve serve`; killed on drop so a failing test leaves nothing running.
struct Proc {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
    base: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn command(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_reeve"));
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(dir)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .env_remove("REEVE_DATA_DIR")
        .env_remove("REEVE_LISTEN")
        .env_remove("REEVE_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Drains stdout into a channel (line by line) and stderr into a buffer, so the
/// child never blocks on a full pipe.
fn spawn(dir: &Path) -> (Child, Receiver<String>, Arc<Mutex<String>>) {
    spawn_cmd(command(dir))
}

fn spawn_cmd(mut cmd: Command) -> (Child, Receiver<String>, Arc<Mutex<String>>) {
    let mut child = cmd.spawn().expect("spawning reeve");
    let stdout = child.stdout.take().unwrap();
    let mut stderr_pipe = child.stderr.take().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let stderr = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&stderr);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match stderr_pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => sink
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
    });
    (child, rx, stderr)
}

impl Proc {
    fn start(dir: &Path) -> Proc {
        Self::start_cmd(command(dir))
    }

    fn start_cmd(cmd: Command) -> Proc {
        let (child, lines, stderr) = spawn_cmd(cmd);
        let mut p = Proc {
            child,
            lines,
            seen: Vec::new(),
            stderr,
            base: String::new(),
        };
        let line = p
            .wait_line(STARTUP, |l| l.starts_with("reeve listening on "))
            .unwrap_or_else(|| {
                panic!(
                    "no listening line; stdout {:?}; stderr {}",
                    p.seen,
                    p.stderr()
                )
            });
        let base = line
            .trim_start_matches("reeve listening on ")
            .trim()
            .trim_end_matches('/')
            .to_string();
        assert!(
            base.starts_with("http://127.0.0.1:"),
            "listening line {line:?}"
        );
        p.base = base;
        p
    }

    /// Waits for a stdout line matching `pred` (also searching lines already seen).
    fn wait_line(&mut self, limit: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        if let Some(l) = self.seen.iter().find(|l| pred(l)) {
            return Some(l.clone());
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if pred(&l) {
                        return Some(l);
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    return None;
                }
            }
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn api(&self, dir: &Path) -> Api {
        Api::new(self.base.clone(), read_admin_file(dir))
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    /// Sends `sig` and waits for the exit status.
    fn stop_with(&mut self, sig: libc::c_int) -> ExitStatus {
        self.signal(sig);
        wait_exit(&mut self.child, EXIT).unwrap_or_else(|| {
            panic!(
                "reeve did not exit after signal {sig}; stderr {}",
                self.stderr()
            )
        })
    }

    #[track_caller]
    fn terminate(&mut self) {
        let status = self.stop_with(libc::SIGTERM);
        assert!(
            status.success(),
            "SIGTERM must be a clean exit 0, got {status:?}; stderr {}",
            self.stderr()
        );
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Everything a client can observe about the state, for before/after comparisons.
async fn observe(api: &Api) -> Value {
    let watches = api.get(&api.admin, "/watches?limit=500").await;
    let projects = api.get(&api.admin, "/projects").await;
    let tokens = api.get(&api.admin, "/tokens").await;
    json!({
        "watches": watches.expect(200).clone(),
        "projects": projects.expect(200).clone(),
        "tokens": tokens.expect(200).clone(),
        "audit": api.audit_entries(0).await,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_sigterm_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Proc::start(dir.path());
    first
        .wait_line(STARTUP, |l| l.starts_with("admin token written to"))
        .unwrap_or_else(|| {
            panic!(
                "first start must announce the admin token file; stdout {:?}",
                first.seen
            )
        });
    let api = first.api(dir.path());
    let secret = api.admin.clone();

    api.create_project(&api.admin, "p").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let w = api
            .watch(&api.admin, "p", &format!("https://d.example.com/{i}"))
            .await;
        ids.push(str_field(&w, "id"));
    }
    api.patch(
        &api.admin,
        &format!("/watches/{}", ids[1]),
        json!({"is_active": false, "reason": "maintenance"}),
    )
    .await
    .expect(200);
    api.post(
        &api.admin,
        &format!("/watches/{}/trigger", ids[2]),
        json!({}),
    )
    .await
    .expect(202);
    api.delete(&api.admin, &format!("/watches/{}", ids[3]))
        .await
        .expect(200);
    api.create_token("api", json!({"p": null}), true).await;
    let r = api
        .create_watch(&api.admin, watch_body("p", "https://d.example.com/0"))
        .await;
    assert_problem(&r, 409, "to_uri_taken");

    // The trigger is asynchronous; wait until it has landed so the snapshot is final.
    let triggered = ids[2].clone();
    eventually(Duration::from_secs(10), || async {
        let w = api.watch_now(&triggered).await;
        (!w["last_run"].is_null()).then_some(())
    })
    .await
    .expect("trigger never recorded last_run");

    let before = observe(&api).await;
    assert_eq!(before["watches"]["total"], 4);
    first.terminate();

    let second = Proc::start(dir.path());
    assert_eq!(
        read_admin_file(dir.path()),
        secret,
        "a restart must keep the admin token"
    );
    let api = second.api(dir.path());
    let after = observe(&api).await;
    assert_eq!(after["watches"], before["watches"]);
    assert_eq!(after["projects"], before["projects"]);
    assert_eq!(after["tokens"], before["tokens"]);
    assert_eq!(after["audit"], before["audit"]);

    // The log continues where it stopped.
    let last = before["audit"].as_array().unwrap().last().unwrap()["seq"]
        .as_u64()
        .unwrap();
    api.watch(&api.admin, "p", "https://d.example.com/after")
        .await;
    let new = api.audit_entries(last).await;
    assert_eq!(new.len(), 1, "one entry after restart: {new:?}");
    assert_eq!(new[0]["seq"], last + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_is_a_clean_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Proc::start(dir.path());
    let api = p.api(dir.path());
    api.create_project(&api.admin, "p").await;
    let status = p.stop_with(libc::SIGINT);
    assert!(
        status.success(),
        "SIGINT exit {status:?}; stderr {}",
        p.stderr()
    );

    let p = Proc::start(dir.path());
    let api = p.api(dir.path());
    let r = api.get(&api.admin, "/projects/p").await;
    r.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_the_same_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Proc::start(dir.path());
    let api = first.api(dir.path());
    api.create_project(&api.admin, "p").await;

    let (mut child, _lines, stderr) = spawn(dir.path());
    let status = wait_exit(&mut child, EXIT);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("a second reeve on a dir in use kept running");
    }
    let status = status.unwrap();
    assert!(!status.success(), "second process exited {status:?}");
    // The stderr reader may lag the exit by a moment.
    let text = eventually_sync(Duration::from_secs(5), || {
        let t = stderr.lock().unwrap().clone();
        mentions_dir(&t, dir.path()).then_some(t)
    })
    .unwrap_or_else(|| {
        panic!(
            "stderr must name the data dir {}: {}",
            dir.path().display(),
            stderr.lock().unwrap()
        )
    });
    assert!(
        text.contains("in use"),
        "stderr must say \"in use\": {text}"
    );

    // The first process is unaffected.
    api.get(&api.admin, "/projects/p").await.expect(200);
    first.terminate();
}

fn mentions_dir(text: &str, dir: &Path) -> bool {
    let canon = std::fs::canonicalize(dir).unwrap_or_else(|_| PathBuf::from(dir));
    text.contains(&dir.display().to_string()) || text.contains(&canon.display().to_string())
}

fn eventually_sync<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_of_a_burst_survives_restart() {
    const TOTAL: usize = 200;
    const TASKS: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let mut first = Proc::start(dir.path());
    let api = first.api(dir.path());
    api.create_project(&api.admin, "p").await;

    let mut handles = Vec::new();
    for t in 0..TASKS {
        let api = api.clone();
        handles.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in (t..TOTAL).step_by(TASKS) {
                let r = api
                    .create_watch(
                        &api.admin,
                        watch_body("p", &format!("https://d.example.com/burst/{i}")),
                    )
                    .await;
                assert_eq!(r.status, 201, "burst create {i}: {}", r.text);
                acked.push(r.id());
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for h in handles {
        acked.extend(h.await.expect("burst task panicked"));
    }
    assert_eq!(acked.len(), TOTAL);
    first.terminate();

    let second = Proc::start(dir.path());
    let api = second.api(dir.path());
    let stored: std::collections::HashSet<String> = api
        .all_watches(&api.admin)
        .await
        .iter()
        .map(|w| str_field(w, "id"))
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged watches lost: {lost:?}",
        lost.len()
    );
    assert_eq!(stored.len(), TOTAL);

    let creates = api
        .audit_entries(0)
        .await
        .into_iter()
        .filter(|e| e["outcome"] == "accepted" && e["command"].get("create_watch").is_some())
        .count();
    assert_eq!(
        creates, TOTAL,
        "one accepted audit entry per acknowledged create"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_restart_keeps_state_and_the_lock() {
    let s = TestServer::start().await;
    assert!(s.admin_was_created, "a fresh dir mints an admin token");
    s.create_project(&s.admin, "p").await;
    let w = s.watch(&s.admin, "p", "https://d.example.com/a").await;
    let paused = s.watch(&s.admin, "p", "https://d.example.com/b").await;
    s.patch(
        &s.admin,
        &format!("/watches/{}", str_field(&paused, "id")),
        json!({"is_active": false}),
    )
    .await
    .expect(200);
    s.delete(&s.admin, &format!("/watches/{}", str_field(&w, "id")))
        .await
        .expect(200);

    // While it runs, the data dir is locked against a second server.
    let again = Server::start(ServerConfig::for_tests(s.dir.path())).await;
    assert!(again.is_err(), "a second server started on a dir in use");

    let before = observe(&s.api).await;
    let s = s.restart().await;
    assert!(
        !s.admin_was_created,
        "a restart must not mint a new admin token"
    );
    let after = observe(&s.api).await;
    assert_eq!(after, before);
    s.get(&s.admin, "/healthz").await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_and_floor_flag_configure_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_reeve"));
    cmd.arg("serve")
        .arg("--watch-interval-floor-secs")
        .arg("120")
        .env("REEVE_DATA_DIR", dir.path())
        .env("REEVE_LISTEN", "127.0.0.1:0")
        .env_remove("REEVE_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut p = Proc::start_cmd(cmd);
    let api = p.api(dir.path());
    api.create_project(&api.admin, "p").await;

    let mut body = watch_body("p", "https://d.example.com/floor");
    body["watch_interval"] = json!(1);
    let r = api.create_watch(&api.admin, body.clone()).await;
    assert_field_problem(&r, "invalid_interval", "watch_interval");
    body["watch_interval"] = json!(2);
    api.create_watch(&api.admin, body).await.expect(201);
    p.terminate();
}

/// kill -9 in the middle of a concurrent durable load, many times over: every command that was
/// acknowledged is there after the restart, and the log verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_command() {
    const CYCLES: usize = 6;
    const TASKS: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let start = |dir: &Path| {
        let mut cmd = command(dir);
        cmd.args(["--runners", "0", "--trigger-per-min", "1000000"]);
        Proc::start_cmd(cmd)
    };
    let mut acked: Vec<String> = Vec::new();
    for cycle in 0..CYCLES {
        let mut p = start(dir.path());
        let api = p.api(dir.path());
        if cycle == 0 {
            api.create_project(&api.admin, "p").await;
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut handles = Vec::new();
        for t in 0..TASKS {
            let api = api.clone();
            let stop = stop.clone();
            handles.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let uri = format!("https://k.example.com/{cycle}/{t}/{i}");
                    i += 1;
                    let sent = api
                        .call(Method::POST, &api.admin, "/watches")
                        .json(&watch_body("p", &uri))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == 201 => mine.push(uri),
                        Ok(r) => panic!("create {uri}: {} {:?}", r.status(), r.text().await),
                        // The server is gone: this one was never acknowledged.
                        Err(_) => break,
                    }
                }
                mine
            }));
        }
        // Let the load run, then pull the plug in the middle of it.
        tokio::time::sleep(Duration::from_millis(300 + 150 * cycle as u64)).await;
        p.signal(libc::SIGKILL);
        let status = wait_exit(&mut p.child, EXIT).expect("reeve exits on SIGKILL");
        assert!(!status.success());
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let before = acked.len();
        for h in handles {
            acked.extend(h.await.expect("load task panicked"));
        }
        assert!(acked.len() > before, "cycle {cycle} acknowledged nothing");
    }

    let mut last = start(dir.path());
    let api = last.api(dir.path());
    let stored: std::collections::HashSet<String> = api
        .all_watches(&api.admin)
        .await
        .iter()
        .map(|w| str_field(w, "to_uri"))
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|u| !stored.contains(*u)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged creates lost after {CYCLES} kills: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
    last.terminate();
    assert!(
        !last.stderr().contains("WARN"),
        "a SIGTERMed server left warnings: {}",
        last.stderr()
    );
    let verify = Command::new(env!("CARGO_BIN_EXE_reeve"))
        .args(["audit", "verify", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&verify.stderr),
        "",
        "a data dir after SIGTERM verifies without a note"
    );
}

/// The snapshot files under a data dir, newest first, by the seq in their names.
fn snapshots(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir.join("snapshots"))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_str()?.strip_suffix(".snap")?.to_string();
                    Some((u64::from_str_radix(&name, 16).ok()?, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found
}

/// The state a client sees, and the digest of the whole state with its head.
async fn observe_with_digest(api: &Api) -> Value {
    let mut seen = observe(api).await;
    seen["digest"] = api
        .get(&api.admin, "/state/digest")
        .await
        .expect(200)
        .clone();
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_folds_only_the_commits_after_a_usable_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        let mut cmd = command(dir.path());
        cmd.args(["--snapshot-every-commits", "5"]);
        Proc::start_cmd(cmd)
    };
    let mut first = start();
    let api = first.api(dir.path());
    api.create_project(&api.admin, "p").await;
    let mut saved = Vec::new();
    for round in 0..3 {
        for i in 0..6 {
            api.watch(
                &api.admin,
                "p",
                &format!("https://s.example.com/{round}/{i}"),
            )
            .await;
        }
        let last = saved.first().map_or(0, |s: &(u64, PathBuf)| s.0);
        saved = eventually(Duration::from_secs(20), || async {
            let s = snapshots(dir.path());
            // The newest is written before the oldest is let go: wait for both.
            (s.first().is_some_and(|n| n.0 > last) && s.len() <= 2).then_some(s)
        })
        .await
        .expect("a snapshot after every 5 commits or more");
    }
    assert_eq!(saved.len(), 2, "the newest two are kept: {saved:?}");
    // A tail after the newest snapshot.
    api.watch(&api.admin, "p", "https://s.example.com/tail")
        .await;
    let before = observe_with_digest(&api).await;
    let head = before["digest"]["seq"].as_u64().unwrap();
    // A crash: no snapshot at shutdown, so the tail is folded at the next start.
    first.signal(libc::SIGKILL);
    wait_exit(&mut first.child, EXIT).expect("reeve exits on SIGKILL");
    let saved = {
        let now = snapshots(dir.path());
        assert!(
            now[0].0 >= saved[0].0 && now[0].0 < head,
            "{now:?} head {head}"
        );
        now
    };

    let mut second = start();
    let api = second.api(dir.path());
    assert_eq!(observe_with_digest(&api).await, before);
    let log = second.stderr();
    assert!(
        log.contains("state restored from a snapshot")
            && log.contains(&format!("seq={}", saved[0].0))
            && log.contains(&format!("tail={}", head - saved[0].0)),
        "the newest snapshot was the starting point: {log}"
    );
    // A clean stop saves the state at its head, so the next start folds nothing.
    second.terminate();
    let at_stop = snapshots(dir.path());
    assert_eq!(at_stop[0].0, head, "{at_stop:?}");
    assert_eq!(
        at_stop[1].0, saved[0].0,
        "the newest two are kept: {at_stop:?}"
    );
    let mut again = start();
    let api = again.api(dir.path());
    assert_eq!(observe_with_digest(&api).await, before);
    let log = again.stderr();
    assert!(
        log.contains(&format!("seq={head}")) && log.contains("tail=0"),
        "the shutdown's snapshot was the starting point: {log}"
    );
    again.terminate();

    // A damaged newest snapshot is skipped, loudly, for the one before it.
    let newest = &snapshots(dir.path())[0];
    let mut bytes = std::fs::read(&newest.1).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&newest.1, &bytes).unwrap();
    let older = snapshots(dir.path())[1].0;
    assert_eq!(older, saved[0].0);
    let mut third = start();
    let api = third.api(dir.path());
    assert_eq!(observe_with_digest(&api).await, before);
    let log = third.stderr();
    assert!(
        log.contains("snapshot skipped") && log.contains("checksum mismatch"),
        "the damaged snapshot is named: {log}"
    );
    assert!(
        log.contains(&format!("seq={older}")),
        "the older snapshot was the starting point: {log}"
    );
    third.terminate();

    // With nothing usable left the whole log is folded; the answers are the same.
    for (_, path) in snapshots(dir.path()) {
        std::fs::write(&path, b"not a snapshot").unwrap();
    }
    let mut fourth = start();
    let api = fourth.api(dir.path());
    assert_eq!(observe_with_digest(&api).await, before);
    let log = fourth.stderr();
    assert!(log.contains("snapshot skipped"), "{log}");
    assert!(!log.contains("state restored from a snapshot"), "{log}");
    fourth.terminate();
}

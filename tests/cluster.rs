//! reeve as a cluster: three nodes on a real three-server NATS JetStream cluster, each a real
//! `reeve serve` process. Writes go to any node; the leader is killed (`kill -9`) or paused
//! (SIGSTOP) under load; every acknowledged command must be in the log, the chain must
//! verify, and every live node must reach the same state.

#[path = "support/nats.rs"]
mod nats;
#[path = "support/reeve_node.rs"]
mod node;

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use reeve::log::GENESIS;
use reeve::log::jetstream::StreamLog;
use serde_json::{Value, json};

use node::{ADMIN, ReeveNode};

struct Cluster {
    nats: nats::NatsCluster,
    nodes: Vec<ReeveNode>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let nats = nats::NatsCluster::start(3);
        let dir = tempfile::tempdir().expect("a temp dir");
        let nodes = (1..=3)
            .map(|i| {
                ReeveNode::start(
                    &format!("r{i}"),
                    dir.path().join(format!("r{i}")),
                    &nats.urls(),
                )
            })
            .collect();
        Cluster {
            nats,
            nodes,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("a client"),
            _dir: dir,
        }
    }

    async fn get(&self, i: usize, path: &str) -> Option<(u16, Value)> {
        let r = self
            .http
            .get(self.nodes[i].url(path))
            .bearer_auth(ADMIN)
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        Some((status, r.json().await.unwrap_or(Value::Null)))
    }

    /// The index of the node every asked node names as leader, once they agree.
    async fn leader(&self, among: &[usize]) -> Option<usize> {
        let mut named = None;
        for &i in among {
            let (_, v) = self.get(i, "/cluster").await?;
            let name = v["leader"]["name"].as_str()?.to_string();
            if named.as_ref().is_some_and(|n| *n != name) {
                return None;
            }
            named = Some(name);
        }
        let name = named?;
        let i = self.nodes.iter().position(|n| n.name == name)?;
        among.contains(&i).then_some(i)
    }

    async fn wait_leader(&self, among: &[usize], limit: Duration) -> Option<(usize, Duration)> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(i) = self.leader(among).await {
                return Some((i, start.elapsed()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    async fn head(&self, i: usize) -> Option<u64> {
        let (_, v) = self.get(i, "/state/digest").await?;
        v["seq"].as_u64()
    }

    /// Waits until the nodes agree on the head and the digest; returns them.
    async fn settled(&self, among: &[usize]) -> (u64, String) {
        let start = Instant::now();
        loop {
            let mut seen = Vec::new();
            for &i in among {
                if let Some((200, v)) = self.get(i, "/state/digest").await {
                    seen.push((
                        v["seq"].as_u64().unwrap_or(0),
                        v["digest"].as_str().unwrap_or("").to_string(),
                    ));
                }
            }
            if seen.len() == among.len() && seen.windows(2).all(|w| w[0] == w[1]) {
                return seen.remove(0);
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the nodes did not settle on one state: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Acknowledged watches: (id, to_uri).
type Acked = Arc<Mutex<Vec<(String, String)>>>;

/// Creates watches on the given nodes in turn until `stop`, each with its own
/// Idempotency-Key, retrying a 503 (or a lost connection) with the same key until it is
/// acknowledged: so every watch it records was acknowledged once.
async fn load(
    http: reqwest::Client,
    addrs: Arc<Mutex<Vec<String>>>,
    acked: Acked,
    stop: Arc<std::sync::atomic::AtomicBool>,
    worker: usize,
) {
    let mut n = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        n += 1;
        let to_uri = format!("viking://res/w{worker}-{n}");
        let key = format!("k-{worker}-{n}");
        let body = json!({
            "project": "p", "source": "https://example.com/src", "to_uri": to_uri,
            "watch_interval": 60.0,
        });
        for attempt in 0.. {
            let addr = {
                let a = addrs.lock();
                a[(n as usize + attempt) % a.len()].clone()
            };
            let sent = http
                .post(format!("http://{addr}/api/v1/watches"))
                .bearer_auth(ADMIN)
                .header("Idempotency-Key", &key)
                .json(&body)
                .send()
                .await;
            match sent {
                Ok(r) if r.status().as_u16() == 201 => {
                    let v: Value = r.json().await.expect("a watch");
                    let id = v["id"].as_str().expect("an id").to_string();
                    acked.lock().push((id, to_uri.clone()));
                    break;
                }
                Ok(r) if r.status().as_u16() == 503 => {}
                Ok(r) => panic!(
                    "unexpected answer {}: {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                ),
                Err(_) => {}
            }
            if stop.load(std::sync::atomic::Ordering::Relaxed) && attempt > 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn acked_count(acked: &Acked, at_least: usize, limit: Duration) {
    let start = Instant::now();
    while acked.lock().len() < at_least {
        assert!(
            start.elapsed() < limit,
            "only {} commands were acknowledged in {limit:?}",
            acked.lock().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every acknowledged watch is on every given node, the stream's chain verifies from genesis
/// to the nodes' common head, and no seq is there twice.
async fn check_log(c: &Cluster, among: &[usize], acked: &Acked) {
    let (head, _) = c.settled(among).await;
    let log = StreamLog::open(&c.nats.urls(), reeve::cluster::STREAM)
        .await
        .expect("the stream opens");
    let commits = log.read_from(1, GENESIS).await.expect("the chain verifies");
    assert_eq!(commits.len() as u64, head, "one commit per seq, none twice");
    let acked = acked.lock().clone();
    for &i in among {
        for (id, to_uri) in &acked {
            let (status, v) = c
                .get(i, &format!("/watches/{id}"))
                .await
                .expect("the node answers");
            assert_eq!(
                (status, v["to_uri"].as_str()),
                (200, Some(to_uri.as_str())),
                "node {} lost acknowledged watch {id}",
                c.nodes[i].name
            );
        }
    }
}

async fn start_load(
    c: &Cluster,
    on: &[usize],
) -> (
    Acked,
    Arc<std::sync::atomic::AtomicBool>,
    Arc<Mutex<Vec<String>>>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let acked: Acked = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let addrs = Arc::new(Mutex::new(
        on.iter()
            .map(|&i| c.nodes[i].addr.clone())
            .collect::<Vec<_>>(),
    ));
    let workers = (0..4)
        .map(|w| {
            tokio::spawn(load(
                c.http.clone(),
                addrs.clone(),
                acked.clone(),
                stop.clone(),
                w,
            ))
        })
        .collect();
    (acked, stop, addrs, workers)
}

async fn create_project(c: &Cluster, on: usize) {
    let r = c
        .http
        .post(c.nodes[on].url("/projects"))
        .bearer_auth(ADMIN)
        .json(&json!({"id": "p"}))
        .send()
        .await
        .expect("the node answers");
    let status = r.status().as_u16();
    let seq = r.headers().get("reeve-head").cloned();
    let commit = r
        .headers()
        .get("reeve-seq")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert_eq!(status, 201, "{}", r.text().await.unwrap_or_default());
    assert!(
        seq.is_some(),
        "an answer says how far its node's log reaches"
    );
    // The commit is named, and the node that answered (leader or not) has applied it.
    let commit = commit.expect("a write's answer names its commit");
    let head = c.head(on).await.expect("the node answers");
    assert!(
        head >= commit,
        "node head {head} is behind the answer's commit {commit}"
    );
    // Read your own write on the node you asked, leader or not.
    let (status, _) = c.get(on, "/projects/p").await.expect("answers");
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_leader_is_replaced_and_no_acknowledged_command_is_lost() {
    let mut c = Cluster::start();
    let all = [0, 1, 2];
    let (leader, _) = c
        .wait_leader(&all, Duration::from_secs(30))
        .await
        .expect("a leader is elected");
    let follower = (leader + 1) % 3;
    create_project(&c, follower).await;

    let (acked, stop, addrs, workers) = start_load(&c, &all).await;
    acked_count(&acked, 40, Duration::from_secs(60)).await;

    // kill -9 the leader; the load goes on against the others.
    addrs.lock().retain(|a| *a != c.nodes[leader].addr);
    c.nodes[leader].kill();
    let live: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
    let (new_leader, took) = c
        .wait_leader(&live, Duration::from_secs(15))
        .await
        .unwrap_or_else(|| panic!("no node took over:\n{}", c.nodes[live[0]].log()));
    assert_ne!(new_leader, leader);
    eprintln!("failover took {took:?}");
    let before = acked.lock().len();
    acked_count(&acked, before + 40, Duration::from_secs(60)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.await.expect("a load worker");
    }
    check_log(&c, &live, &acked).await;

    // The killed node comes back, catches up from the stream, and agrees.
    c.nodes[leader].restart();
    check_log(&c, &all, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_leader_cannot_append_and_follows_when_it_wakes() {
    let c = Cluster::start();
    let all = [0, 1, 2];
    let (leader, _) = c
        .wait_leader(&all, Duration::from_secs(30))
        .await
        .expect("a leader is elected");
    create_project(&c, leader).await;
    let live: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
    let (acked, stop, _addrs, workers) = start_load(&c, &live).await;
    acked_count(&acked, 20, Duration::from_secs(60)).await;

    // SIGSTOP the leader past its lease: another node takes over while it sleeps.
    c.nodes[leader].signal(libc::SIGSTOP);
    let (new_leader, _) = c
        .wait_leader(&live, Duration::from_secs(15))
        .await
        .expect("another node leads");
    assert_ne!(new_leader, leader);
    let before = acked.lock().len();
    acked_count(&acked, before + 30, Duration::from_secs(60)).await;

    // It wakes up believing it leads; whatever it had in hand cannot be appended, and it
    // ends up following the new leader.
    c.nodes[leader].signal(libc::SIGCONT);
    let before = acked.lock().len();
    acked_count(&acked, before + 20, Duration::from_secs(60)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.await.expect("a load worker");
    }
    assert_eq!(
        c.wait_leader(&all, Duration::from_secs(15))
            .await
            .map(|(i, _)| i),
        Some(new_leader),
        "the woken node follows"
    );
    check_log(&c, &all, &acked).await;
    assert!(c.head(leader).await.is_some());
}

/// `reeve runner` against one node, as a real process.
struct Runner(std::process::Child);

impl Runner {
    fn start(server: &str, token: &str, work: &std::path::Path) -> Runner {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_reeve"))
            .args(["runner", "--concurrency", "2"])
            .arg("--server")
            .arg(format!("http://{server}"))
            .arg("--token")
            .arg(token)
            .arg("--work-dir")
            .arg(work)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("reeve runner starts");
        Runner(child)
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn post(c: &Cluster, i: usize, path: &str, body: Value) -> (u16, Value) {
    let r = c
        .http
        .post(c.nodes[i].url(path))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .expect("the node answers");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_and_a_watch_carry_on_across_a_failover() {
    let mut c = Cluster::start();
    let all = [0, 1, 2];
    let (leader, _) = c
        .wait_leader(&all, Duration::from_secs(30))
        .await
        .expect("a leader is elected");
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    create_project(&c, follower).await;

    // A runner on a follower; a job that prints, outlives the failover, and prints again.
    let (status, token) = post(
        &c,
        follower,
        "/tokens",
        json!({"kind": "runner", "description": "r"}),
    )
    .await;
    assert_eq!(status, 201, "{token}");
    let work = tempfile::tempdir().expect("a work dir");
    let _runner = Runner::start(
        &c.nodes[follower].addr,
        token["secret"].as_str().expect("a secret"),
        work.path(),
    );
    let (status, build) = post(
        &c,
        other,
        "/projects/p/builds",
        json!({"pipeline": {"jobs": [{"name": "slow", "run": "echo before; sleep 8; echo after"}]}}),
    )
    .await;
    assert_eq!(status, 201, "{build}");
    let build_id = build["id"].as_str().expect("a build id").to_string();
    // A watch due every second.
    let (status, watch) = post(
        &c,
        other,
        "/watches",
        json!({"project": "p", "source": "https://example.com/src", "to_uri": "viking://res/every-second", "watch_interval": 1.0 / 60.0}),
    )
    .await;
    assert_eq!(status, 201, "{watch}");

    // Once the job runs, the leader dies.
    let started = Instant::now();
    loop {
        let (_, b) = c
            .get(other, &format!("/projects/p/builds/{build_id}"))
            .await
            .expect("answers");
        if b["jobs"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|j| j["name"] == "slow" && j["state"] == "running")
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the job never ran: {b}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.nodes[leader].kill();
    let live = [follower, other];
    c.wait_leader(&live, Duration::from_secs(15))
        .await
        .expect("another node leads");

    // The job ends as it should, with all of its output, on every live node.
    let started = Instant::now();
    let job_id = loop {
        let (_, b) = c
            .get(other, &format!("/projects/p/builds/{build_id}"))
            .await
            .expect("answers");
        let slow = b["jobs"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|j| j["name"] == "slow")
            .cloned();
        if let Some(j) = slow.filter(|j| j["state"] != "running" && j["state"] != "queued") {
            assert_eq!(j["state"], "finished", "{j}");
            break j["id"].as_str().expect("an id").to_string();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the job did not end: {b}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for &i in &live {
        let r = c
            .http
            .get(c.nodes[i].url(&format!("/projects/p/jobs/{job_id}/log")))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("answers");
        assert_eq!(r.status().as_u16(), 200);
        let text = r.text().await.unwrap_or_default();
        assert!(
            text.contains("before") && text.contains("after"),
            "node {} has {text:?}:\n{}",
            c.nodes[i].name,
            c.nodes[i].log()
        );
    }

    // The watch fired on schedule throughout, never twice for one due time: every scheduled
    // fire in the log moves its next run on.
    let (head, _) = c.settled(&live).await;
    let log = StreamLog::open(&c.nats.urls(), reeve::cluster::STREAM)
        .await
        .expect("the stream opens");
    let commits = log.read_from(1, GENESIS).await.expect("the chain verifies");
    assert_eq!(commits.len() as u64, head);
    let watch_id: uuid::Uuid = watch["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("an id");
    let runs: Vec<i64> = commits
        .iter()
        .flat_map(|c| c.body.events.iter())
        .filter_map(|e| match e {
            reeve::domain::Event::WatchRan {
                id,
                manual: false,
                next_run_at: Some(n),
                ..
            } if *id == watch_id => Some(*n),
            _ => None,
        })
        .collect();
    assert!(runs.len() >= 5, "the watch fired {} times", runs.len());
    assert!(
        runs.windows(2).all(|w| w[0] < w[1]),
        "a due time fired twice: {runs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_go_on_when_a_nats_server_dies_and_every_node_restarts_to_the_same_state() {
    let mut c = Cluster::start();
    let all = [0, 1, 2];
    let (leader, _) = c
        .wait_leader(&all, Duration::from_secs(30))
        .await
        .expect("a leader is elected");
    create_project(&c, leader).await;
    let (acked, stop, _addrs, workers) = start_load(&c, &all).await;
    acked_count(&acked, 20, Duration::from_secs(60)).await;

    // kill -9 the NATS server that leads the log's stream: after the stream elects another,
    // writes go on.
    let log = StreamLog::open(&c.nats.urls(), reeve::cluster::STREAM)
        .await
        .expect("the stream opens");
    let stream_leader = log
        .status()
        .await
        .expect("status")
        .leader
        .and_then(|l| c.nats.servers.iter().position(|s| s.name == l))
        .unwrap_or(0);
    c.nats.servers[stream_leader].kill();
    let before = acked.lock().len();
    let start = Instant::now();
    while acked.lock().len() < before + 30 {
        if start.elapsed() > Duration::from_secs(60) {
            for n in &c.nodes {
                let log = n.log();
                let tail: Vec<&str> = log.lines().rev().take(25).collect();
                eprintln!(
                    "--- {} ---\n{}",
                    n.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            panic!(
                "writes stopped after a NATS server died: {} acknowledged",
                acked.lock().len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // It returns, and the stream heals: every replica current.
    c.nats.servers[stream_leader].restart();
    let start = Instant::now();
    loop {
        let s = log.status().await;
        if let Ok(s) = &s
            && s.peers.len() == 3
            && s.peers.iter().all(|(_, current)| *current)
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the stream did not heal: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.await.expect("a load worker");
    }
    check_log(&c, &all, &acked).await;
    let (head, digest) = c.settled(&all).await;

    // The command line reads the cluster: its status through any node, and the log straight
    // from the stream, verified and replayed to the nodes' own digest.
    let reeve = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_reeve"))
            .args(args)
            .env_remove("REEVE_SERVER")
            .output()
            .expect("reeve runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (leader, _) = c
        .wait_leader(&all, Duration::from_secs(15))
        .await
        .expect("a leader");
    let server = format!("http://{}", c.nodes[(leader + 1) % 3].addr);
    let (code, out, err) = reeve(&["cluster", "status", "--server", &server, "--token", ADMIN]);
    assert_eq!(code, Some(0), "{err}");
    let name = &c.nodes[leader].name;
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("leader") && l.contains(name.as_str())),
        "the status names {name} as leader: {out}"
    );
    assert_eq!(out.matches("yes").count(), 1, "one node leads: {out}");
    let urls = c.nats.urls().join(",");
    let (code, out, err) = reeve(&["audit", "verify", "--cluster", &urls]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&format!("ok: {head} commits")), "{out}");
    let (code, out, err) = reeve(&["audit", "replay", "--cluster", &urls, "--digest"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(&digest),
        "the replay of the stream gives the nodes' digest {digest}: {out}"
    );

    // Every node stops (cleanly) and starts again: the same state comes back everywhere.
    for n in &mut c.nodes {
        n.stop();
    }
    for n in &mut c.nodes {
        n.start_again();
    }
    c.wait_leader(&all, Duration::from_secs(30))
        .await
        .expect("a leader after the restart");
    let (head2, digest2) = c.settled(&all).await;
    // The new leader may have registered nothing new: the state is the one before.
    assert_eq!((head2, digest2), (head, digest));
    check_log(&c, &all, &acked).await;
}

//! Fire lateness and idle cost of the scheduler with many watches.
//!
//! `cargo bench --bench scheduler` starts a real server (durable log, no runners) with
//! REEVE_BENCH_WATCHES (default 10,000) active watches every 3 s, lets it run for 20 s, then
//! reads the log: for every scheduled fire, lateness = commit time − the `next_run_at` that
//! was due. Then, with the same number of watches every 10 hours, it measures the process's
//! CPU time over 10 idle seconds.

use std::collections::HashMap;
use std::time::Duration;

use reeve::control::{self, Submission};
use reeve::domain::{Command, Event, NewWatch, Plane, Principal};
use reeve::log::{Store, SyncMode};
use reeve::server::{Server, ServerConfig};
use uuid::Uuid;

fn sys(command: Command) -> Submission {
    Submission {
        principal: Principal::System,
        plane: Plane::System,
        request_id: String::new(),
        idempotency_key: None,
        command,
    }
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(usage.ru_utime) + t(usage.ru_stime)
}

async fn server_with_watches(
    dir: &std::path::Path,
    n: usize,
    minutes: f64,
) -> reeve::server::RunningServer {
    let server = Server::start(ServerConfig {
        runners: 0,
        ..ServerConfig::for_tests(dir)
    })
    .await
    .expect("server");
    let control = server.control().clone();
    control
        .submit(sys(Command::CreateProject {
            id: "p".into(),
            name: None,
        }))
        .await
        .expect("project");
    for chunk in (0..n).collect::<Vec<_>>().chunks(512) {
        let creates = chunk.iter().map(|i| {
            control.submit(sys(Command::CreateWatch(NewWatch {
                project: "p".into(),
                source: "https://example.com/src".into(),
                to_uri: format!("viking://res/{i}"),
                watch_interval: minutes,
                reason: None,
                instruction: None,
                is_active: true,
            })))
        });
        for r in futures_util::future::join_all(creates).await {
            assert!(r.expect("submit").result.is_ok());
        }
    }
    server
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let n: usize = std::env::var("REEVE_BENCH_WATCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let dir = tempfile::tempdir().expect("tempdir");
    rt.block_on(async {
        let server = server_with_watches(dir.path(), n, 0.05).await;
        tokio::time::sleep(Duration::from_secs(20)).await;
        server.shutdown().await;
    });
    let store = Store::open(dir.path(), SyncMode::Durable).expect("reopen");
    let mut due: HashMap<Uuid, i64> = HashMap::new();
    let mut late = Vec::new();
    let mut missed = 0u64;
    let mut skipped = 0u64;
    for commit in store.replay() {
        let commit = commit.expect("commit");
        for e in &commit.body.events {
            match e {
                Event::WatchCreated {
                    id,
                    next_run_at: Some(at),
                    ..
                } => {
                    due.insert(*id, *at);
                }
                Event::WatchRan {
                    id,
                    manual: false,
                    next_run_at: Some(next),
                    missed: m,
                    ..
                } => {
                    if let Some(d) = due.insert(*id, *next) {
                        late.push(commit.body.at - d);
                    }
                    missed += u64::from(*m);
                }
                Event::WatchSkipped { id, next_run_at } => {
                    due.insert(*id, *next_run_at);
                    skipped += 1;
                }
                _ => {}
            }
        }
    }
    let state = control::replay(&store).expect("replay");
    drop(store);
    late.sort_unstable();
    println!(
        "scheduler/{n} watches every 3 s for 20 s: {} fires, lateness p50 {} ms, p99 {} ms, max {} ms; missed {missed}, skipped {skipped}, log {} commits",
        late.len(),
        percentile(&late, 0.5),
        percentile(&late, 0.99),
        late.last().copied().unwrap_or(0),
        state.head_seq,
    );

    let idle_dir = tempfile::tempdir().expect("tempdir");
    rt.block_on(async {
        let server = server_with_watches(idle_dir.path(), n, 600.0).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = cpu_seconds();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let used = cpu_seconds() - before;
        println!(
            "scheduler/{n} idle watches: {:.1} ms CPU per second ({:.2}% of one core)",
            used * 100.0,
            used * 10.0
        );
        server.shutdown().await;
    });
}

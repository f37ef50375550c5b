//! Event log benchmarks.
//!
//! - `append/durable/N`: commands per second through `Control::submit` with N concurrent
//!   submitters, each acknowledged only after its group commit was fdatasync'ed;
//!   `append/batch/1` and `append/interval/1` show what that durability costs.
//! - `replay/100k`: folding a 100,000-commit log from disk into a fresh state (decode, verify
//!   the chain, apply).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use reeve::control::{self, Control, Options, Submission};
use reeve::domain::{Command, NewWatch, Plane, Principal, WatchKey};
use reeve::log::{Store, SyncMode};

fn create_project(i: usize) -> Command {
    Command::CreateProject {
        id: format!("p{i}"),
        name: None,
    }
}

fn submission(command: Command) -> Submission {
    Submission {
        principal: Principal::System,
        plane: Plane::System,
        request_id: String::new(),
        idempotency_key: None,
        command,
    }
}

/// A control plane with one project and one watch to trigger.
fn setup(rt: &tokio::runtime::Runtime, sync: SyncMode) -> (tempfile::TempDir, Arc<Control>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let control = Arc::new(
        Control::open(
            dir.path(),
            Options {
                sync,
                ..Options::default()
            },
        )
        .expect("open"),
    );
    rt.block_on(async {
        control
            .submit(submission(create_project(0)))
            .await
            .expect("project");
        control
            .submit(submission(Command::CreateWatch(NewWatch {
                project: "p0".into(),
                source: "https://example.com/src".into(),
                to_uri: "viking://res/docs".into(),
                watch_interval: 60.0,
                reason: None,
                instruction: None,
                is_active: true,
            })))
            .await
            .expect("watch");
    });
    (dir, control)
}

fn trigger() -> Command {
    Command::TriggerWatch {
        key: WatchKey {
            id: None,
            to_uri: Some("viking://res/docs".into()),
            project: None,
        },
    }
}

fn append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cases = [
        (SyncMode::Durable, 1usize),
        (SyncMode::Durable, 16),
        (SyncMode::Durable, 64),
        // What durability costs: the same single submitter without fdatasync, and without
        // any flush on the write path.
        (SyncMode::Batch, 1),
        (SyncMode::Interval, 1),
    ];
    let mut group = c.benchmark_group("append");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    for (sync, submitters) in cases {
        let (_dir, control) = setup(&rt, sync);
        let per_iter = 64 * submitters.max(4);
        group.throughput(Throughput::Elements(per_iter as u64));
        let name = format!("{sync:?}/{submitters}").to_lowercase();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    rt.block_on(async {
                        let mut tasks = Vec::with_capacity(submitters);
                        for _ in 0..submitters {
                            let control = control.clone();
                            tasks.push(tokio::spawn(async move {
                                for _ in 0..per_iter / submitters {
                                    let s = control.submit(submission(trigger())).await;
                                    assert!(s.is_ok_and(|s| s.result.is_ok()));
                                }
                            }));
                        }
                        for t in tasks {
                            t.await.expect("submitter");
                        }
                    });
                    total += start.elapsed();
                }
                total
            });
        });
        rt.block_on(control.close());
    }
    group.finish();
}

fn replay(c: &mut Criterion) {
    const COMMITS: usize = 100_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (dir, control) = setup(&rt, SyncMode::Interval);
    rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..8 {
            let control = control.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..COMMITS / 8 {
                    // A mix of accepted (triggers, new projects) and refused commands.
                    let cmd = match i % 4 {
                        0 => create_project(1 + t * COMMITS + i),
                        1 => create_project(0),
                        _ => trigger(),
                    };
                    control.submit(submission(cmd)).await.expect("submit");
                }
            }));
        }
        for t in tasks {
            t.await.expect("writer task");
        }
        control.close().await;
    });
    drop(control);
    let store = Store::open(dir.path(), SyncMode::Durable).expect("reopen");
    let n = store.len();
    let mut group = c.benchmark_group("replay");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function(format!("{}k", n / 1000), |b| {
        b.iter(|| {
            let state = control::replay(&store).expect("replay");
            assert_eq!(state.head_seq as usize, n);
        })
    });
    group.finish();
}

criterion_group!(benches, append, replay);
criterion_main!(benches);

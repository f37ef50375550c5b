//! Event log benchmarks.
//!
//! - `append/durable/N`: commands per second through `Control::submit` with N concurrent
//!   submitters, each acknowledged only after its group commit was fdatasync'ed;
//!   `append/batch/1` and `append/interval/1` show what that durability costs.
//! - `replay/100k`: folding a 100,000-commit log from disk into a fresh state (decode, verify
//!   the chain, apply).
//! - `wal/append_fdatasync` against `wal/raw_fdatasync`: one commit record appended through the
//!   store (one framed WAL write + one `fdatasync`) beside a bare `pwrite` of the same size +
//!   `fdatasync` in a preallocated file — the floor any durable commit sits on.
//! - `open/100k`: opening a 100,000-commit data dir the way `serve` does (scan the WAL, check
//!   the store against it and its checkpoint, replay).

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

/// Writes `commits` commands from 8 submitters — a mix of accepted (triggers, new projects)
/// and refused ones — then closes the control plane.
fn fill(rt: &tokio::runtime::Runtime, control: &Arc<Control>, commits: usize) {
    rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..8 {
            let control = control.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..commits / 8 {
                    let cmd = match i % 4 {
                        0 => create_project(1 + t * commits + i),
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
}

fn replay(c: &mut Criterion) {
    const COMMITS: usize = 100_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (dir, control) = setup(&rt, SyncMode::Interval);
    fill(&rt, &control, COMMITS);
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

fn wal(c: &mut Criterion) {
    use std::os::unix::fs::FileExt;
    let mut group = c.benchmark_group("wal");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), SyncMode::Durable).expect("open");
    let body = reeve::log::CommitBody {
        at: 0,
        meta: reeve::log::Meta {
            principal: Principal::System,
            plane: Plane::System,
            request_id: String::new(),
            idempotency_key: None,
            command: trigger(),
        },
        outcome: reeve::log::Outcome::Accepted,
        events: vec![],
    };
    let mut seq = 0u64;
    let mut prev = reeve::log::GENESIS;
    let mut len = 0;
    group.bench_function("append_fdatasync", |b| {
        b.iter(|| {
            seq += 1;
            let (c, record) = reeve::log::Commit::seal(seq, prev, body.clone()).expect("seal");
            prev = c.hash;
            len = record.len();
            store
                .append(vec![(seq, record)], Vec::new(), Vec::new())
                .expect("append");
        })
    });
    drop(store);
    let path = dir.path().join("raw.bin");
    let file = std::fs::File::create(&path).expect("create");
    file.write_all_at(&vec![0u8; 64 << 20], 0).expect("zeros");
    file.sync_all().expect("sync");
    let record = vec![7u8; len + 8];
    let mut at = 0u64;
    group.bench_function("raw_fdatasync", |b| {
        b.iter(|| {
            file.write_all_at(&record, at).expect("write");
            file.sync_data().expect("fdatasync");
            at = (at + record.len() as u64) % (60 << 20);
        })
    });
    group.finish();
}

fn open(c: &mut Criterion) {
    const COMMITS: usize = 100_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (dir, control) = setup(&rt, SyncMode::Interval);
    fill(&rt, &control, COMMITS);
    drop(control);
    let mut group = c.benchmark_group("open");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.bench_function(format!("{}k", COMMITS / 1000), |b| {
        b.iter(|| {
            let control = Control::open(dir.path(), Options::default()).expect("open");
            assert!(control.state().head_seq as usize >= COMMITS);
            drop(control);
        })
    });
    group.finish();
}

criterion_group!(benches, append, replay, wal, open);
criterion_main!(benches);

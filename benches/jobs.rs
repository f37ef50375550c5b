//! Job graph benchmarks.
//!
//! - `decide/restart_top_of_300`: the pure decision for restarting the top job of a finished
//!   300-job build (so the whole graph is cloned and remapped).
//! - `claim/durable`: claims per second through `Control::submit`, each a durable commit.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use reeve::control::{Control, Options, Submission};
use reeve::domain::{
    self, Accept, Command, Ctx, Dependency, JobSpec, JobState, Pipeline, Plane, Principal, Reply,
    Rules,
};
use reeve::log::SyncMode;
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

/// `n` jobs: a top job, then layers where each job depends on two jobs of the layer above.
fn graph(n: usize) -> Pipeline {
    Pipeline::Jobs(
        (0..n)
            .map(|i| JobSpec {
                name: format!("stage{}/job{i}", i / 10),
                run: "true".into(),
                depends_on: if i == 0 {
                    vec![]
                } else {
                    let above = |k: usize| format!("stage{}/job{k}", k / 10);
                    let a = (i - 1) / 2;
                    let b = i.saturating_sub(2) / 2;
                    let mut deps = vec![Dependency {
                        job: above(a),
                        on: vec![Accept::Finished],
                    }];
                    if b != a {
                        deps.push(Dependency {
                            job: above(b),
                            on: vec![Accept::Finished],
                        });
                    }
                    deps
                },
                env: Default::default(),
                timeout_seconds: None,
            })
            .collect(),
    )
}

fn decide_restart(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let control = Control::open(
        dir.path(),
        Options {
            sync: SyncMode::Interval,
            ..Options::default()
        },
    )
    .expect("open");
    let top = rt.block_on(async {
        control
            .submit(sys(Command::CreateProject {
                id: "p".into(),
                name: None,
            }))
            .await
            .expect("project");
        let built = control
            .submit(sys(Command::TriggerBuild {
                project: "p".into(),
                pipeline: Some(graph(300)),
                env: Default::default(),
            }))
            .await
            .expect("trigger");
        let Ok(Reply::Build(_, jobs)) = built.result else {
            panic!("trigger refused: {:?}", built.result);
        };
        // Run every job to `finished`, in dependency order, through the runner protocol.
        loop {
            let claimed = control
                .submit(sys(Command::ClaimJob { labels: vec![] }))
                .await
                .expect("claim");
            let Ok(Reply::Claimed { job, lease_id, .. }) = claimed.result else {
                break;
            };
            control
                .submit(sys(Command::FinishJob {
                    job: job.id,
                    lease_id,
                    state: JobState::Finished,
                    exit_code: Some(0),
                    message: None,
                }))
                .await
                .expect("finish");
        }
        jobs[1].id
    });
    let state = control.state().clone();
    rt.block_on(control.close());
    let ctx = Ctx {
        at: 1_800_000_000_000,
        principal: Principal::System,
        plane: Plane::System,
        new_id: Uuid::now_v7(),
        rules: Rules::default(),
        renewals: Default::default(),
        cold_prunable: Vec::new(),
    };
    let cmd = Command::RestartJob {
        project: "p".into(),
        job: top,
        if_match: None,
    };
    let events = domain::decide(&state, &cmd, &ctx).expect("restart is allowed");
    assert!(!events.is_empty());
    c.bench_function("decide/restart_top_of_300", |b| {
        b.iter(|| domain::decide(&state, &cmd, &ctx))
    });
}

fn claim(c: &mut Criterion) {
    const JOBS: usize = 256;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let control = Control::open(dir.path(), Options::default()).expect("open");
    rt.block_on(async {
        control
            .submit(sys(Command::CreateProject {
                id: "p".into(),
                name: None,
            }))
            .await
            .expect("project");
    });
    let wide = Pipeline::Jobs(
        (0..JOBS)
            .map(|i| JobSpec {
                name: format!("j{i}"),
                run: "true".into(),
                depends_on: vec![],
                env: Default::default(),
                timeout_seconds: None,
            })
            .collect(),
    );
    let mut group = c.benchmark_group("claim");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(JOBS as u64));
    group.bench_function("durable", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                rt.block_on(async {
                    control
                        .submit(sys(Command::TriggerBuild {
                            project: "p".into(),
                            pipeline: Some(wide.clone()),
                            env: Default::default(),
                        }))
                        .await
                        .expect("trigger");
                    let start = Instant::now();
                    for _ in 0..JOBS {
                        let claimed = control
                            .submit(sys(Command::ClaimJob { labels: vec![] }))
                            .await
                            .expect("claim");
                        assert!(matches!(claimed.result, Ok(Reply::Claimed { .. })));
                    }
                    total += start.elapsed();
                });
            }
            total
        })
    });
    group.finish();
    rt.block_on(control.close());
}

criterion_group!(benches, decide_restart, claim);
criterion_main!(benches);

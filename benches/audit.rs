//! The audit tool on a large log: `reeve audit verify` and `reeve audit replay --digest`, the
//! real binary, on a data dir of REEVE_BENCH_COMMITS commits (default 1,000,000).
//!
//! The log is a mix an operator would see: watches created, paused and resumed, manual
//! triggers, builds with three-job pipelines and refusals. It is written through
//! `Control::submit` (interval sync, 64 submitters) so every record is a real, decided commit.
//!
//! `cargo bench --bench audit` prints the times; it is not a criterion bench because one run
//! of each command over a million commits is the figure wanted.

use std::process::Command as Process;
use std::sync::Arc;
use std::time::Instant;

use reeve::control::{Control, Options, Submission};
use reeve::domain::{
    Accept, Command, Dependency, JobSpec, NewWatch, Pipeline, Plane, Principal, WatchKey,
    WatchPatch,
};
use reeve::log::SyncMode;

fn submission(command: Command) -> Submission {
    Submission {
        principal: Principal::System,
        plane: Plane::System,
        request_id: String::new(),
        idempotency_key: None,
        command,
    }
}

fn pipeline() -> Pipeline {
    let job = |name: &str, after: Option<&str>| JobSpec {
        name: name.into(),
        run: "true".into(),
        depends_on: after
            .map(|a| Dependency {
                job: a.into(),
                on: vec![Accept::Finished],
            })
            .into_iter()
            .collect(),
        env: Default::default(),
        timeout_seconds: None,
    };
    Pipeline::Jobs(vec![
        job("fetch", None),
        job("render", Some("fetch")),
        job("publish", Some("render")),
    ])
}

/// The `i`th command of the mix.
fn command(i: u64) -> Command {
    let watch = |n: u64| WatchKey {
        id: None,
        to_uri: Some(format!("viking://res/{n}")),
        project: Some("docs".into()),
    };
    match i % 10 {
        0..=3 => Command::CreateWatch(NewWatch {
            project: "docs".into(),
            source: "https://example.com/src".into(),
            to_uri: format!("viking://res/{i}"),
            watch_interval: 60.0,
            reason: Some("bench".into()),
            instruction: None,
            is_active: true,
        }),
        4 | 5 => Command::UpdateWatch {
            key: watch(i - 4),
            if_match: None,
            patch: WatchPatch {
                is_active: Some(i % 20 < 10),
                ..WatchPatch::default()
            },
        },
        6 => Command::TriggerWatch { key: watch(i - 6) },
        7 => Command::TriggerBuild {
            project: "docs".into(),
            pipeline: Some(pipeline()),
            env: Default::default(),
        },
        // A refusal: the interval is checked by the core and the refusal is a commit too.
        8 => Command::CreateWatch(NewWatch {
            project: "docs".into(),
            source: "https://example.com/src".into(),
            to_uri: format!("viking://res/bad/{i}"),
            watch_interval: 0.0,
            reason: None,
            instruction: None,
            is_active: true,
        }),
        _ => Command::DeleteWatch {
            key: watch(i - 9),
            if_match: None,
        },
    }
}

fn main() {
    let total: u64 = std::env::var("REEVE_BENCH_COMMITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let started = Instant::now();
    rt.block_on(async {
        let control = Arc::new(
            Control::open(
                dir.path(),
                Options {
                    sync: SyncMode::Interval,
                    ..Options::default()
                },
            )
            .expect("open"),
        );
        control
            .submit(submission(Command::CreateProject {
                id: "docs".into(),
                name: None,
            }))
            .await
            .expect("project");
        let submitters = 64;
        let mut tasks = Vec::new();
        for s in 0..submitters {
            let control = control.clone();
            tasks.push(tokio::spawn(async move {
                let mut i = s;
                while i < total - 1 {
                    control
                        .submit(submission(command(i)))
                        .await
                        .expect("submit");
                    i += submitters;
                }
            }));
        }
        for t in tasks {
            t.await.expect("submitter");
        }
        control.close().await;
    });
    println!(
        "wrote {total} commits in {:.1} s ({})",
        started.elapsed().as_secs_f64(),
        dir.path().display()
    );
    let reeve = env!("CARGO_BIN_EXE_reeve");
    for args in [vec!["audit", "verify"], vec!["audit", "replay", "--digest"]] {
        let started = Instant::now();
        let out = Process::new(reeve)
            .args(&args)
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .expect("run reeve");
        let secs = started.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!(
            "reeve {}: {secs:.2} s ({:.0} commits/s)\n{}",
            args.join(" "),
            total as f64 / secs,
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
}

//! The mixed log the large-log benches write, a mix an operator would see: watches created,
//! paused and resumed, manual triggers, deletions (about a thousand watches alive at any time),
//! builds with three-job pipelines and refusals, all in one project and by the System principal. The builds run: a submitter that
//! triggers one then claims and finishes up to three ready jobs (oldest first, so not always its
//! own), so the history is mostly of builds that ended, as a real one is. It is written
//! through `Control::submit` (interval sync, 64 submitters), so every record is a real, decided
//! commit; writing stops once the log holds `total` commits (a few more land in flight).
//!
//! `benches/audit.rs` and `benches/history.rs` include this file with `#[path]`; each uses
//! a part of it.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use reeve::control::{Control, Options, Submission};
use reeve::domain::{
    Accept, Caller, Command, Dependency, JobSpec, JobState, NewWatch, Pipeline, Principal, Reply,
    WatchKey, WatchPatch,
};
use reeve::log::SyncMode;

/// Bumped whenever `command` changes what it writes, so a data dir cached from an older mix
/// is not mistaken for this one.
pub const MIX_VERSION: u32 = 5;

/// The one project every command of the mix is in.
pub const PROJECT: &str = "docs";

/// Every watch of the mix fires once a year (the longest interval reeve accepts), so a server
/// started on a written log — even one cached for months — has nothing due: what it does at
/// start and under load is the history's cost, not a catch-up of the scheduler.
const WATCH_INTERVAL_MINUTES: f64 = 525_600.0;

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

/// Watches alive at once: each decade of commands creates one and deletes the one created
/// this many decades before, so the live set stays the same size however long the log is and
/// what grows is history, as in a real installation.
const LIVE_WATCHES: u64 = 1000;

/// The `i`th command of the mix: per ten, a watch created, four pauses or resumes, a manual
/// trigger, a build (which then runs), a refusal and a deletion.
fn command(i: u64) -> Command {
    let decade = i / 10;
    let watch = |n: u64| WatchKey {
        id: None,
        to_uri: Some(format!("viking://res/{n}")),
        project: Some(PROJECT.into()),
    };
    // A live watch a few decades old (the newest ones may still be in flight).
    let live = |k: u64| watch(decade.saturating_sub(2 + k));
    match i % 10 {
        0 => Command::CreateWatch(NewWatch {
            project: PROJECT.into(),
            source: "https://example.com/src".into(),
            to_uri: format!("viking://res/{decade}"),
            watch_interval: WATCH_INTERVAL_MINUTES,
            reason: Some("bench".into()),
            instruction: None,
            is_active: true,
        }),
        1..=4 => Command::UpdateWatch {
            key: live(i % 10 * 3),
            if_match: None,
            patch: WatchPatch {
                is_active: Some(decade.is_multiple_of(2)),
                ..WatchPatch::default()
            },
        },
        5 => Command::TriggerWatch { key: live(1) },
        6 => Command::TriggerBuild {
            project: PROJECT.into(),
            pipeline: Some(pipeline()),
            env: Default::default(),
        },
        // A refusal: the interval is checked by the core and the refusal is a commit too.
        7 | 8 => Command::CreateWatch(NewWatch {
            project: PROJECT.into(),
            source: "https://example.com/src".into(),
            to_uri: format!("viking://res/bad/{i}"),
            watch_interval: 0.0,
            reason: None,
            instruction: None,
            is_active: true,
        }),
        _ => Command::DeleteWatch {
            key: watch(decade.saturating_sub(LIVE_WATCHES)),
            if_match: None,
        },
    }
}

/// Claims and finishes up to `n` ready jobs as a runner would (claim, then finish), when
/// there are any: an empty claim would be a refusal commit, not work.
async fn run_ready_jobs(control: &Control, n: usize) {
    let system = Caller {
        principal: Principal::System,
        token: None,
        at: 0,
    };
    for _ in 0..n {
        if control.state().claimable(&system).is_none() {
            return;
        }
        let claimed = control
            .submit(Submission::system(Command::ClaimJob { labels: vec![] }))
            .await
            .expect("claim");
        let Ok(Reply::Claimed { job, lease_id, .. }) = claimed.result else {
            return;
        };
        control
            .submit(Submission::system(Command::FinishJob {
                job: job.id,
                lease_id,
                state: JobState::Finished,
                exit_code: Some(0),
                message: None,
            }))
            .await
            .expect("finish");
    }
}

/// Writes `total` commits (the project, then the mix) into the empty data dir `dir` and
/// closes it. Returns the seconds it took.
pub fn write(dir: &Path, total: u64) -> f64 {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let started = Instant::now();
    rt.block_on(async {
        let control = Arc::new(
            Control::open(
                dir,
                Options {
                    sync: SyncMode::Interval,
                    ..Options::default()
                },
            )
            .expect("open"),
        );
        control
            .submit(Submission::system(Command::CreateProject {
                id: PROJECT.into(),
                name: None,
            }))
            .await
            .expect("project");
        let submitters = 64;
        // One sequence of commands shared by every submitter: a submitter that runs jobs is
        // slower, and with a sequence of its own it would fall behind the others, whose
        // deletions and updates would then name watches not created yet.
        let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..submitters {
            let control = control.clone();
            let next = next.clone();
            tasks.push(tokio::spawn(async move {
                while control.state().head_seq < total {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let cmd = command(i);
                    let runs = matches!(cmd, Command::TriggerBuild { .. });
                    control
                        .submit(Submission::system(cmd))
                        .await
                        .expect("submit");
                    if runs {
                        run_ready_jobs(&control, 3).await;
                    }
                }
            }));
        }
        for t in tasks {
            t.await.expect("submitter");
        }
        control.close().await;
    });
    started.elapsed().as_secs_f64()
}

//! Random job graphs driven by random claims, finishes, restarts, reruns and aborts. After
//! every step: names are unique among a build's live jobs, nothing is superseded twice,
//! nothing superseded or killed is ever claimed, and each build's state matches its
//! definition; job log retention marks only jobs that ran and ended, and never offers one
//! twice. At the end, the state replayed from disk equals the live state.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;
use reeve::control::{self, Control, Options, Submission};
use reeve::domain::{
    Accept, Command, Dependency, JobSpec, JobState, Pipeline, Plane, Principal, Reply, State,
};
use reeve::log::{Store, SyncMode};
use uuid::Uuid;

#[derive(Clone, Debug)]
enum Step {
    Claim,
    Finish(usize, u8),
    Restart(usize),
    Rerun(usize),
    AbortJob(usize),
    AbortBuild(usize),
    RestartBuild(usize),
    Trigger,
    Prune,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => Just(Step::Claim),
        4 => (any::<usize>(), 0u8..4).prop_map(|(i, s)| Step::Finish(i, s)),
        2 => any::<usize>().prop_map(Step::Restart),
        2 => any::<usize>().prop_map(Step::Rerun),
        1 => any::<usize>().prop_map(Step::AbortJob),
        1 => any::<usize>().prop_map(Step::AbortBuild),
        1 => any::<usize>().prop_map(Step::RestartBuild),
        1 => Just(Step::Trigger),
        1 => Just(Step::Prune),
    ]
}

/// A DAG: job i depends on a subset of jobs before it, each with a random `on` list.
fn dag() -> impl Strategy<Value = Pipeline> {
    (1usize..7).prop_flat_map(|n| {
        proptest::collection::vec((any::<u8>(), 0u8..4), n).prop_map(move |picks| {
            let ons = [
                vec![Accept::Finished],
                vec![Accept::Failure],
                vec![Accept::Any],
                vec![Accept::Finished, Accept::Failure],
            ];
            Pipeline::Jobs(
                picks
                    .iter()
                    .enumerate()
                    .map(|(i, (mask, on))| JobSpec {
                        name: if i % 2 == 0 {
                            format!("j{i}")
                        } else {
                            format!("d/j{i}")
                        },
                        run: "true".into(),
                        depends_on: (0..i)
                            .filter(|p| mask & (1 << (p % 8)) != 0)
                            .map(|p| Dependency {
                                job: if p % 2 == 0 {
                                    format!("j{p}")
                                } else {
                                    format!("d/j{p}")
                                },
                                on: ons[*on as usize].clone(),
                            })
                            .collect(),
                        env: Default::default(),
                        timeout_seconds: None,
                    })
                    .collect(),
            )
        })
    })
}

fn sys(command: Command) -> Submission {
    Submission {
        principal: Principal::System,
        plane: Plane::System,
        request_id: String::new(),
        idempotency_key: None,
        command,
    }
}

/// The definition, restated independently of reeve's own function.
fn expected_build_state(state: &State, build: Uuid) -> JobState {
    let jobs: Vec<JobState> = state.builds[&build]
        .jobs
        .iter()
        .map(|j| &state.jobs[j])
        .filter(|j| j.superseded_by.is_none())
        .map(|j| j.state)
        .collect();
    if jobs.iter().any(|s| {
        matches!(
            s,
            JobState::Queued | JobState::Scheduled | JobState::Running
        )
    }) {
        return JobState::Running;
    }
    for s in [JobState::Killed, JobState::Error, JobState::Failure] {
        if jobs.contains(&s) {
            return s;
        }
    }
    JobState::Finished
}

fn check_invariants(
    state: &State,
    superseded: &mut HashMap<Uuid, Uuid>,
) -> Result<(), TestCaseError> {
    for build in state.builds.values() {
        let mut names = HashSet::new();
        for j in build.jobs.iter().map(|j| &state.jobs[j]) {
            if j.superseded_by.is_none() {
                prop_assert!(
                    names.insert(j.name.clone()),
                    "name {} twice in build {}",
                    j.name,
                    build.id
                );
            }
            if let Some(by) = j.superseded_by {
                let first = *superseded.entry(j.id).or_insert(by);
                prop_assert_eq!(first, by, "job {} superseded twice", j.id);
            }
        }
        prop_assert_eq!(
            state.build_state(build),
            expected_build_state(state, build.id)
        );
    }
    for j in state.jobs.values().filter(|j| j.log_pruned_at.is_some()) {
        prop_assert!(j.state.is_done() && j.lease.is_some(), "pruned {:?}", j);
    }
    for id in state.prunable_logs(i64::MAX) {
        let j = &state.jobs[&id];
        prop_assert!(
            j.state.is_done() && j.lease.is_some() && j.log_pruned_at.is_none(),
            "offered for pruning: {:?}",
            j
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn job_graph_invariants_hold(
        pipeline in dag(),
        steps in proptest::collection::vec(step(), 1..50),
        snap_at in any::<prop::sample::Index>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let live = rt.block_on(async {
            let options = Options { sync: SyncMode::Interval, ..Options::default() };
            let control = Control::open(dir.path(), options).unwrap();
            control.submit(sys(Command::CreateProject { id: "p".into(), name: None })).await.unwrap();
            let trigger = Command::TriggerBuild { project: "p".into(), pipeline: Some(pipeline.clone()), env: Default::default() };
            let first = control.submit(sys(trigger.clone())).await.unwrap();
            prop_assert!(first.result.is_ok(), "{:?}", first.result);
            let mut leases: HashMap<Uuid, Uuid> = HashMap::new();
            let mut superseded = HashMap::new();
            let mut killed: HashSet<Uuid> = HashSet::new();
            let snap_at = snap_at.index(steps.len());
            let mut snapped = 0;
            for (n, step) in steps.into_iter().enumerate() {
                if n == snap_at {
                    let state = control.state().clone();
                    control::save_snapshot(dir.path(), &state).unwrap();
                    snapped = state.head_seq;
                }
                let (jobs, builds): (Vec<Uuid>, Vec<Uuid>) = {
                    let s = control.state();
                    let mut jobs: Vec<Uuid> = s.jobs.keys().copied().collect();
                    jobs.sort();
                    (jobs, s.builds.keys().copied().collect())
                };
                let pick = |i: usize| jobs[i % jobs.len()];
                let command = match step {
                    Step::Claim => Command::ClaimJob { labels: vec![] },
                    Step::Finish(i, s) => {
                        let running: Vec<_> = leases.keys().copied().collect();
                        if running.is_empty() { continue; }
                        let job = running[i % running.len()];
                        let state = [JobState::Finished, JobState::Failure, JobState::Error, JobState::Killed][s as usize];
                        Command::FinishJob { job, lease_id: leases[&job], state, exit_code: None, message: None }
                    }
                    Step::Restart(i) => Command::RestartJob { project: "p".into(), job: pick(i), if_match: None },
                    Step::Rerun(i) => Command::RerunJob { project: "p".into(), job: pick(i), if_match: None },
                    Step::AbortJob(i) => Command::AbortJob { project: "p".into(), job: pick(i), if_match: None },
                    Step::AbortBuild(i) => Command::AbortBuild { project: "p".into(), build: builds[i % builds.len()], if_match: None },
                    Step::RestartBuild(i) => Command::RestartBuild { project: "p".into(), build: builds[i % builds.len()], if_match: None },
                    Step::Trigger => trigger.clone(),
                    // Now: the writer stamps the commit no earlier (a clock that stepped
                    // back makes it a refusal, which is fine here too).
                    Step::Prune => Command::PruneJobLogs {
                        before: std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as i64),
                    },
                };
                let submitted = control.submit(sys(command)).await.unwrap();
                if let Ok(Reply::Claimed { job, lease_id, .. }) = &submitted.result {
                    prop_assert!(job.superseded_by.is_none(), "claimed a superseded job");
                    prop_assert!(!killed.contains(&job.id), "claimed a killed job");
                    leases.insert(job.id, *lease_id);
                }
                let s = control.state();
                leases.retain(|id, _| s.jobs[id].state == JobState::Running);
                killed.extend(s.jobs.values().filter(|j| j.state == JobState::Killed).map(|j| j.id));
                check_invariants(&s, &mut superseded)?;
            }
            let live = control.state().clone();
            control.close().await;
            Ok((live, snapped))
        })?;
        let (live, snapped) = live;
        let store = Store::open(dir.path(), SyncMode::Durable).unwrap();
        let replayed = control::replay(&store).expect("the chain verifies");
        prop_assert_eq!(&replayed, &live);
        // A start from the snapshot and the commits after it gives the same state.
        let (restored, from) = control::restore(&store, dir.path()).expect("restores");
        prop_assert_eq!(from, snapped, "the snapshot was the starting point");
        prop_assert_eq!(&restored, &live);
        prop_assert_eq!(restored.digest(), live.digest());
    }
}

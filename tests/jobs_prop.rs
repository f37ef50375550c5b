//! Random job graphs driven by random claims, finishes, restarts, reruns and aborts. After
//! every step: names are unique among a build's live jobs, nothing is superseded twice,
//! nothing superseded or killed is ever claimed, and each build's state matches its
//! definition; job log retention marks only jobs that ran and ended, and never offers one
//! twice. At the end, the state replayed from disk equals the live state.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;
use reeve::control::{self, Control, Options, Submission};
use reeve::domain::{
    Accept, Command, Ctx, Dependency, Event, History, JobSpec, JobState, Pipeline, Plane,
    Principal, Rejection, Reply, Rules, State,
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
        6 => Just(Step::Claim),
        6 => (any::<usize>(), 0u8..4).prop_map(|(i, s)| Step::Finish(i, s)),
        2 => any::<usize>().prop_map(Step::Restart),
        2 => any::<usize>().prop_map(Step::Rerun),
        1 => any::<usize>().prop_map(Step::AbortJob),
        1 => any::<usize>().prop_map(Step::AbortBuild),
        1 => any::<usize>().prop_map(Step::RestartBuild),
        2 => Just(Step::Trigger),
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

/// What a decision came to, without the ids a fresh context draws: accepted with this many
/// events (not counting builds brought back into memory), or refused with this code.
fn gist(result: &Result<Vec<Event>, Rejection>) -> Result<usize, String> {
    match result {
        Ok(events) => Ok(events
            .iter()
            .filter(|e| !matches!(e, Event::BuildsRecalled { .. }))
            .count()),
        Err(r) => Err(r.code.clone()),
    }
}

/// Folds every commit the store holds after the shadow's head into it.
fn catch_up(shadow: &mut State, store: &Store) {
    for c in store.scan(shadow.head_seq + 1) {
        shadow.apply(&c.expect("the log reads"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// Run with a window of one to three ended builds in memory, so that builds leave memory
    /// within a few steps and commands name them after they left. A shadow fold of the same
    /// log keeps every build in memory: each command must be decided as the shadow decides
    /// it, and at the end memory and the store together must hold exactly the shadow's
    /// builds and jobs.
    #[test]
    fn job_graph_invariants_hold(
        pipeline in dag(),
        steps in proptest::collection::vec(step(), 1..80),
        snap_at in any::<prop::sample::Index>(),
        window in 1usize..4,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let live = rt.block_on(async {
            let options = Options { sync: SyncMode::Interval, hot_window: window, ..Options::default() };
            let control = Control::open(dir.path(), options).unwrap();
            control.submit(sys(Command::CreateProject { id: "p".into(), name: None })).await.unwrap();
            let trigger = Command::TriggerBuild { project: "p".into(), pipeline: Some(pipeline.clone()), env: Default::default() };
            let first = control.submit(sys(trigger.clone())).await.unwrap();
            prop_assert!(first.result.is_ok(), "{:?}", first.result);
            let mut shadow = State::with_hot_window(usize::MAX);
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
                catch_up(&mut shadow, control.store());
                // Every job and build ever made, whether in memory or not.
                let (jobs, builds): (Vec<Uuid>, Vec<Uuid>) = {
                    let mut jobs: Vec<Uuid> = shadow.jobs.keys().copied().collect();
                    jobs.sort();
                    (jobs, shadow.builds.keys().copied().collect())
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
                let submitted = control.submit(sys(command.clone())).await.unwrap();
                // The same command against the shadow, at the commit's own time.
                let at = match submitted.seq {
                    Some(seq) => control.store().get(seq).unwrap().expect("the commit is stored").body.at,
                    None => shadow.head_at,
                };
                let ctx = Ctx {
                    at,
                    principal: Principal::System,
                    plane: Plane::System,
                    new_id: Uuid::now_v7(),
                    rules: Rules::default(),
                    renewals: Default::default(),
                    cold_prunable: Vec::new(),
                };
                let expected = gist(&reeve::domain::decide(&shadow, &command, &ctx).map_err(Rejection::from));
                let actual = match (&submitted.result, submitted.seq) {
                    (Err(r), _) => Err(r.code.clone()),
                    (Ok(_), Some(seq)) => {
                        let c = control.store().get(seq).unwrap().unwrap();
                        gist(&Ok(c.body.events))
                    }
                    (Ok(_), None) => Ok(0),
                };
                prop_assert_eq!(actual, expected, "decided otherwise than with every build in memory: {:?}", command);
                if let Ok(Reply::Claimed { job, lease_id, .. }) = &submitted.result {
                    prop_assert!(job.superseded_by.is_none(), "claimed a superseded job");
                    prop_assert!(!killed.contains(&job.id), "claimed a killed job");
                    leases.insert(job.id, *lease_id);
                }
                catch_up(&mut shadow, control.store());
                let s = control.state();
                leases.retain(|id, _| s.jobs.get(id).is_some_and(|j| j.state == JobState::Running));
                killed.extend(shadow.jobs.values().filter(|j| j.state == JobState::Killed).map(|j| j.id));
                check_invariants(&shadow, &mut superseded)?;
                check_invariants(&s, &mut superseded)?;
                for id in s.prunable_logs(i64::MAX) {
                    prop_assert!(shadow.prunable_logs(i64::MAX).any(|j| j == id));
                }
            }
            // Memory and the store together hold what the shadow holds, build for build.
            let live = control.state().clone();
            for b in shadow.builds.values() {
                let whole = shadow.hot_build(b);
                let found = match live.builds.get(&b.id) {
                    Some(hot) => live.hot_build(hot),
                    None => control.store().cold_build(b.id).unwrap().expect("a build neither in memory nor in the store"),
                };
                prop_assert_eq!(found, whole);
            }
            prop_assert!(live.builds.keys().all(|id| shadow.builds.contains_key(id)));
            let ended_in_memory = live.builds.values().filter(|b| {
                b.jobs.iter().all(|j| live.jobs[j].state.is_done() || live.jobs[j].superseded_by.is_some())
            }).count();
            prop_assert!(ended_in_memory <= window, "{ended_in_memory} ended builds in memory, window {window}");
            control.close().await;
            Ok((live, snapped))
        })?;
        let (live, snapped) = live;
        let store = Store::open(dir.path(), SyncMode::Durable).unwrap();
        let replayed = control::replay_from(&store, State::with_hot_window(window)).expect("the chain verifies");
        prop_assert_eq!(&replayed, &live);
        // A clean stop saved the state at its head: a start from it folds nothing.
        let (restored, from) = control::restore_from(&store, dir.path(), State::with_hot_window(window)).expect("restores");
        prop_assert_eq!(from, live.head_seq, "the stop's snapshot was the starting point");
        prop_assert_eq!(&restored, &live);
        // Without it, a start from the snapshot taken midway folds the commits after it and
        // gives the same state.
        if snapped != live.head_seq {
            let newest = dir.path().join("snapshots").join(format!("{:016x}.snap", live.head_seq));
            std::fs::remove_file(&newest).expect("the stop's snapshot is there");
        }
        let (restored, from) = control::restore_from(&store, dir.path(), State::with_hot_window(window)).expect("restores");
        prop_assert_eq!(from, snapped, "the snapshot was the starting point");
        prop_assert_eq!(&restored, &live);
        prop_assert_eq!(restored.digest(), live.digest());
    }
}

//! Builds and jobs: a build is a graph of jobs. The rules for trigger, restart (build and job),
//! rerun, abort and job log retention live here; the runner's side of a job is `runner.rs`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::pipeline::{self, Accept, CREATE_JOBS, Pipeline};
use super::refusal::BuildRefused;
use super::{
    Caller, Command, Ctx, Event, Millis, Plane, Principal, Refused, Reply, State, check_if_match,
};

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Scheduled,
    Running,
    Finished,
    Failure,
    Error,
    Skipped,
    Killed,
}

impl JobState {
    /// Ended, one way or another.
    pub fn is_done(self) -> bool {
        !matches!(
            self,
            JobState::Queued | JobState::Scheduled | JobState::Running
        )
    }

    /// Ended in a way that a restart may retry (a skipped job never ran).
    pub fn is_restartable(self) -> bool {
        matches!(
            self,
            JobState::Finished | JobState::Failure | JobState::Error | JobState::Killed
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Scheduled => "scheduled",
            JobState::Running => "running",
            JobState::Finished => "finished",
            JobState::Failure => "failure",
            JobState::Error => "error",
            JobState::Skipped => "skipped",
            JobState::Killed => "killed",
        }
    }
}

/// What started a build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Api,
    Mcp,
    Watch(Uuid),
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Api => "api",
            Trigger::Mcp => "mcp",
            Trigger::Watch(_) => "watch",
        }
    }

    fn of_plane(plane: Plane) -> Trigger {
        match plane {
            Plane::Mcp => Trigger::Mcp,
            _ => Trigger::Api,
        }
    }
}

/// A job's dependency on another job of the same build.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobDep {
    pub job: String,
    pub job_id: Uuid,
    pub on: Vec<Accept>,
}

/// A job as an event creates it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    pub id: Uuid,
    pub name: String,
    pub run: String,
    pub env: BTreeMap<String, String>,
    pub timeout_seconds: Option<u64>,
    pub depends_on: Vec<JobDep>,
    pub cloned_from: Option<Uuid>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    pub id: Uuid,
    pub runner: Principal,
    pub expires_at: Millis,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Job {
    pub id: Uuid,
    pub build_id: Uuid,
    pub name: String,
    pub run: String,
    pub env: BTreeMap<String, String>,
    pub timeout_seconds: Option<u64>,
    pub state: JobState,
    pub depends_on: Vec<JobDep>,
    pub superseded_by: Option<Uuid>,
    pub cloned_from: Option<Uuid>,
    pub created_at: Millis,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
    pub lease: Option<Lease>,
    /// Position in the global queue: claims go oldest first.
    pub order: u64,
    pub version: u64,
    /// When job log retention deleted this job's output (the prune commit's time). The job
    /// itself stays; only its output is gone. Not part of `version`: pruning changes nothing
    /// a restart, rerun or abort depends on, so it never invalidates a client's `If-Match`.
    pub log_pruned_at: Option<Millis>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Build {
    pub id: Uuid,
    pub project: String,
    pub number: u64,
    pub restart_counter: u64,
    pub pipeline: Pipeline,
    pub env: BTreeMap<String, String>,
    pub trigger: Trigger,
    pub created_at: Millis,
    pub created_by: Principal,
    pub aborted: bool,
    pub restarted_from: Option<Uuid>,
    /// Every job, superseded ones included, in creation order.
    pub jobs: Vec<Uuid>,
    /// Creation order among all builds (newest first in listings).
    pub order: u64,
    pub version: u64,
}

/// A restart's or rerun's effect: clones, and what they replace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cloned {
    pub from: Uuid,
    pub to: Uuid,
    pub name: String,
}

/// A child whose dependency moves from one job to its clone (rerun).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Relink {
    pub job: Uuid,
    pub from: Uuid,
    pub to: Uuid,
    pub name: String,
}

/// A build's state from its jobs: any queued, scheduled or running → running; else the worst
/// of killed > error > failure > finished. Superseded and skipped jobs do not count.
pub fn derived_state<'a>(jobs: impl IntoIterator<Item = &'a Job>) -> JobState {
    let rank = |s: JobState| match s {
        JobState::Killed => 4,
        JobState::Error => 3,
        JobState::Failure => 2,
        JobState::Finished => 1,
        _ => 0,
    };
    let mut worst = JobState::Finished;
    for job in jobs.into_iter().filter(|j| j.superseded_by.is_none()) {
        match job.state {
            JobState::Queued | JobState::Scheduled | JobState::Running => return JobState::Running,
            JobState::Skipped => {}
            s if rank(s) > rank(worst) => worst = s,
            _ => {}
        }
    }
    worst
}

pub(super) fn build_not_found(id: Uuid) -> BuildRefused {
    BuildRefused::BuildNotFound { id }
}

pub(super) fn job_not_found(id: Uuid) -> BuildRefused {
    BuildRefused::JobNotFound { id }
}

/// The most jobs one prune commit names. A UUID is 17 bytes in the log (a length byte and
/// 16 bytes), so the event stays near 4 KiB (DESIGN rule 7); a backlog takes several commits.
pub const MAX_LOGS_PRUNED: usize = 256;

/// Why a job's log cannot be read: job log retention deleted it. 410, since the output
/// existed and is gone for good; the job's record and its audit trail remain.
pub fn log_readable(job: &Job) -> Result<(), BuildRefused> {
    let Some(pruned_at) = job.log_pruned_at else {
        return Ok(());
    };
    let ended = job
        .finished_at
        .map_or_else(|| "earlier".to_string(), |at| format!("at {}", time(at)));
    Err(BuildRefused::LogPruned {
        id: job.id,
        pruned_at: time(pruned_at),
        ended,
    })
}

/// A commit time as RFC 3339 (UTC, milliseconds), as the API writes times.
fn time(ms: Millis) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(ts) => format!("{ts:.3}"),
        Err(_) => format!("{ms} ms after the epoch"),
    }
}

fn project_not_found(project: &str) -> BuildRefused {
    BuildRefused::ProjectNotFound {
        project: project.to_string(),
    }
}

impl State {
    /// The build's state, derived from its jobs that are not superseded.
    pub fn build_state(&self, build: &Build) -> JobState {
        derived_state(
            build
                .jobs
                .iter()
                .filter_map(|id| self.jobs.get(id).map(Arc::as_ref)),
        )
    }

    pub fn project_visible(&self, caller: &Caller<'_>, project: &str) -> Result<(), BuildRefused> {
        if self.projects.contains_key(project) && caller.sees_project(project) {
            Ok(())
        } else {
            Err(project_not_found(project))
        }
    }

    /// The build, if it is in `project` and the caller may see that project.
    pub fn visible_build(
        &self,
        caller: &Caller<'_>,
        project: &str,
        id: Uuid,
    ) -> Result<&Build, BuildRefused> {
        self.project_visible(caller, project)?;
        self.builds
            .get(&id)
            .map(Arc::as_ref)
            .filter(|b| b.project == project)
            .ok_or_else(|| build_not_found(id))
    }

    /// The job, if its build is in `project` and the caller may see that project.
    pub fn visible_job(
        &self,
        caller: &Caller<'_>,
        project: &str,
        id: Uuid,
    ) -> Result<&Job, BuildRefused> {
        self.project_visible(caller, project)?;
        self.jobs
            .get(&id)
            .map(Arc::as_ref)
            .filter(|j| {
                self.builds
                    .get(&j.build_id)
                    .is_some_and(|b| b.project == project)
            })
            .ok_or_else(|| job_not_found(id))
    }

    /// Whether every parent of a queued job has ended in a state its dependency accepts.
    pub(super) fn ready(&self, job: &Job) -> bool {
        job.depends_on.iter().all(|d| {
            self.jobs
                .get(&d.job_id)
                .is_some_and(|p| p.state.is_done() && d.on.iter().any(|a| a.accepts(p.state)))
        })
    }

    /// Jobs whose output job log retention may delete for the cut-off `before`: they ran on a
    /// runner (only a lease holder writes output), ended before `before`, and still have
    /// their log. Oldest end first.
    pub fn prunable_logs(&self, before: Millis) -> impl Iterator<Item = Uuid> + '_ {
        self.log_expiry
            .range(..(before, Uuid::nil()))
            .map(|(_, id)| *id)
    }

    /// Non-superseded jobs that depend on `id`.
    fn children(&self, id: Uuid) -> impl Iterator<Item = &Job> {
        self.children
            .get(&id)
            .into_iter()
            .flatten()
            .filter_map(|c| self.jobs.get(c).map(Arc::as_ref))
            .filter(|j| j.superseded_by.is_none())
    }
}

/// Ends `ended` jobs and skips every queued descendant whose dependency no longer can be met.
pub(super) fn end_jobs(
    state: &State,
    ended: Vec<(Uuid, JobState, Option<i32>, Option<String>)>,
) -> Vec<Event> {
    let mut events = Vec::new();
    let mut now: HashMap<Uuid, JobState> = HashMap::new();
    let mut frontier = Vec::new();
    for (id, s, exit_code, message) in ended {
        now.insert(id, s);
        frontier.push(id);
        events.push(Event::JobEnded {
            id,
            state: s,
            exit_code,
            message,
        });
    }
    while let Some(parent) = frontier.pop() {
        let parent_state = now[&parent];
        for child in state.children(parent) {
            if child.state != JobState::Queued || now.contains_key(&child.id) {
                continue;
            }
            let blocked = child
                .depends_on
                .iter()
                .filter(|d| d.job_id == parent)
                .any(|d| !d.on.iter().any(|a| a.accepts(parent_state)));
            if blocked {
                now.insert(child.id, JobState::Skipped);
                frontier.push(child.id);
                events.push(Event::JobEnded {
                    id: child.id,
                    state: JobState::Skipped,
                    exit_code: None,
                    message: Some(format!(
                        "skipped: {} ended {}",
                        parent_name(state, parent),
                        parent_state.as_str()
                    )),
                });
            }
        }
    }
    events
}

fn parent_name(state: &State, id: Uuid) -> String {
    state
        .jobs
        .get(&id)
        .map_or_else(|| id.to_string(), |j| j.name.clone())
}

/// The jobs of a pipeline, with ids drawn from `ctx` from `first_id` on; top jobs depend on
/// Create Jobs.
pub(super) fn expand(
    specs: &[pipeline::JobSpec],
    create_jobs: Uuid,
    ctx: &Ctx,
    first_id: u32,
) -> Vec<NewJob> {
    let ids: HashMap<&str, Uuid> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), ctx.nth_id(first_id + i as u32)))
        .collect();
    specs
        .iter()
        .map(|s| NewJob {
            id: ids[s.name.as_str()],
            name: s.name.clone(),
            run: s.run.clone(),
            env: s.env.clone(),
            timeout_seconds: s.timeout_seconds,
            depends_on: if s.depends_on.is_empty() {
                vec![JobDep {
                    job: CREATE_JOBS.to_string(),
                    job_id: create_jobs,
                    on: vec![Accept::Finished],
                }]
            } else {
                s.depends_on
                    .iter()
                    .map(|d| JobDep {
                        job: d.job.clone(),
                        job_id: ids[d.job.as_str()],
                        on: d.on.clone(),
                    })
                    .collect()
            },
            cloned_from: None,
        })
        .collect()
}

/// One generation of a build, about to be created.
struct Generation<'a> {
    trigger: Trigger,
    project: &'a str,
    number: u64,
    restart_counter: u64,
    pipeline: &'a Pipeline,
    env: &'a BTreeMap<String, String>,
    restarted_from: Option<Uuid>,
}

/// A new build (or generation) with its Create Jobs job, expanded at once for an inline
/// pipeline.
fn new_build(ctx: &Ctx, g: Generation<'_>) -> Vec<Event> {
    let id = ctx.nth_id(0);
    let create_jobs = ctx.nth_id(1);
    let mut events = vec![Event::BuildCreated {
        id,
        project: g.project.to_string(),
        number: g.number,
        restart_counter: g.restart_counter,
        pipeline: g.pipeline.clone(),
        env: g.env.clone(),
        trigger: g.trigger,
        create_jobs_id: create_jobs,
        restarted_from: g.restarted_from,
    }];
    // An inline pipeline is expanded at once; a generated one when Create Jobs has run.
    if let Pipeline::Jobs(specs) = g.pipeline {
        events.push(Event::JobsExpanded {
            build_id: id,
            jobs: expand(specs, create_jobs, ctx, 2),
        });
    }
    events
}

/// A build for a watch's fire, with the watch in the environment, running the watch's own
/// pipeline or else its project's default; nothing when there is neither. Its id is `ctx.nth_id(0)`.
pub(super) fn for_watch(
    state: &State,
    ctx: &Ctx,
    watch: &super::Watch,
) -> Option<(Uuid, Vec<Event>)> {
    let p = state.projects.get(&watch.project)?;
    let pipeline = watch.pipeline.as_ref().or(p.default_pipeline.as_ref())?;
    let mut env = BTreeMap::from([
        ("REEVE_WATCH_ID".to_string(), watch.id.to_string()),
        ("REEVE_WATCH_SOURCE".to_string(), watch.source.clone()),
        ("REEVE_WATCH_TO_URI".to_string(), watch.to_uri.clone()),
    ]);
    if let Some(i) = &watch.instruction {
        env.insert("REEVE_WATCH_INSTRUCTION".to_string(), i.clone());
    }
    let events = new_build(
        ctx,
        Generation {
            trigger: Trigger::Watch(watch.id),
            project: &watch.project,
            number: p.builds + 1,
            restart_counter: 1,
            pipeline,
            env: &env,
            restarted_from: None,
        },
    );
    Some((ctx.nth_id(0), events))
}

pub(super) fn trigger(
    state: &State,
    caller: &Caller<'_>,
    ctx: &Ctx,
    project: &str,
    pipeline: Option<&Pipeline>,
    env: &BTreeMap<String, String>,
) -> Result<Vec<Event>, Refused> {
    state.project_visible(caller, project)?;
    let p = &state.projects[project];
    let pipeline =
        pipeline
            .or(p.default_pipeline.as_ref())
            .ok_or_else(|| BuildRefused::NoPipeline {
                project: project.to_string(),
            })?;
    pipeline::validate(pipeline, ctx.rules.max_jobs)?;
    Ok(new_build(
        ctx,
        Generation {
            trigger: Trigger::of_plane(ctx.plane),
            project,
            number: p.builds + 1,
            restart_counter: 1,
            pipeline,
            env,
            restarted_from: None,
        },
    ))
}

pub(super) fn restart_build(
    state: &State,
    caller: &Caller<'_>,
    ctx: &Ctx,
    project: &str,
    id: Uuid,
    if_match: Option<u64>,
) -> Result<Vec<Event>, Refused> {
    let build = state.visible_build(caller, project, id)?;
    check_if_match("build", if_match, build.version)?;
    let counter = state
        .builds_by_number
        .get(&(build.project.clone(), build.number))
        .into_iter()
        .flatten()
        .filter_map(|b| state.builds.get(b).map(Arc::as_ref))
        .map(|b| b.restart_counter)
        .max()
        .unwrap_or(build.restart_counter);
    Ok(new_build(
        ctx,
        Generation {
            trigger: Trigger::of_plane(ctx.plane),
            project,
            number: build.number,
            restart_counter: counter + 1,
            pipeline: &build.pipeline,
            env: &build.env,
            restarted_from: Some(build.id),
        },
    ))
}

pub(super) fn abort_build(
    state: &State,
    caller: &Caller<'_>,
    project: &str,
    id: Uuid,
    if_match: Option<u64>,
) -> Result<Vec<Event>, Refused> {
    let build = state.visible_build(caller, project, id)?;
    check_if_match("build", if_match, build.version)?;
    let live: Vec<_> = build
        .jobs
        .iter()
        .filter_map(|j| state.jobs.get(j).map(Arc::as_ref))
        .filter(|j| j.superseded_by.is_none() && !j.state.is_done())
        .map(|j| (j.id, JobState::Killed, None, Some("aborted".to_string())))
        .collect();
    let mut events = Vec::new();
    if !build.aborted {
        events.push(Event::BuildAborted { id });
    }
    events.extend(end_jobs(state, live));
    Ok(events)
}

pub(super) fn abort_job(
    state: &State,
    caller: &Caller<'_>,
    project: &str,
    id: Uuid,
    if_match: Option<u64>,
) -> Result<Vec<Event>, Refused> {
    let job = state.visible_job(caller, project, id)?;
    check_if_match("job", if_match, job.version)?;
    if job.state.is_done() {
        return Ok(Vec::new());
    }
    Ok(end_jobs(
        state,
        vec![(id, JobState::Killed, None, Some("aborted".to_string()))],
    ))
}

/// The shared refusals of restart and rerun.
fn check_retryable<'s>(
    state: &'s State,
    caller: &Caller<'_>,
    project: &str,
    id: Uuid,
    if_match: Option<u64>,
) -> Result<&'s Job, Refused> {
    let job = state.visible_job(caller, project, id)?;
    check_if_match("job", if_match, job.version)?;
    if job.name == CREATE_JOBS {
        return Err(BuildRefused::CreateJobsNotRestartable.into());
    }
    if let Some(by) = job.superseded_by {
        return Err(BuildRefused::JobSuperseded { id, by }.into());
    }
    if state
        .builds
        .get(&job.build_id)
        .map(Arc::as_ref)
        .is_some_and(|b| b.aborted)
    {
        return Err(BuildRefused::BuildAborted.into());
    }
    if !job.state.is_restartable() {
        return Err(BuildRefused::JobNotTerminal {
            id,
            state: job.state.as_str(),
        }
        .into());
    }
    Ok(job)
}

fn build_names(state: &State, build: Uuid) -> Vec<&str> {
    state
        .builds
        .get(&build)
        .map(Arc::as_ref)
        .map_or_else(Vec::new, |b| {
            b.jobs
                .iter()
                .filter_map(|j| state.jobs.get(j).map(Arc::as_ref))
                .map(|j| j.name.as_str())
                .collect()
        })
}

pub(super) fn restart_job(
    state: &State,
    caller: &Caller<'_>,
    ctx: &Ctx,
    project: &str,
    id: Uuid,
    if_match: Option<u64>,
) -> Result<Vec<Event>, Refused> {
    let job = check_retryable(state, caller, project, id, if_match)?;
    // The job and its transitive non-superseded descendants, in build order.
    let mut set: HashSet<Uuid> = HashSet::from([id]);
    let mut frontier = vec![id];
    while let Some(j) = frontier.pop() {
        for child in state.children(j) {
            if set.insert(child.id) {
                frontier.push(child.id);
            }
        }
    }
    let build = &state.builds[&job.build_id];
    let members: Vec<&Job> = build
        .jobs
        .iter()
        .filter(|j| set.contains(j))
        .filter_map(|j| state.jobs.get(j).map(Arc::as_ref))
        .collect();
    if let Some(busy) = members
        .iter()
        .find(|j| j.id != id && matches!(j.state, JobState::Scheduled | JobState::Running))
    {
        return Err(BuildRefused::DescendantRunning {
            id: busy.id,
            name: busy.name.clone(),
            state: busy.state.as_str(),
        }
        .into());
    }
    let mut namer = pipeline::CloneNamer::new(build_names(state, build.id));
    let clone_ids: HashMap<Uuid, (Uuid, String)> = members
        .iter()
        .enumerate()
        .map(|(i, j)| (j.id, (ctx.nth_id(i as u32), namer.next(&j.name))))
        .collect();
    let clones = members
        .iter()
        .map(|j| {
            let (to, name) = clone_ids[&j.id].clone();
            NewJob {
                id: to,
                name,
                run: j.run.clone(),
                env: j.env.clone(),
                timeout_seconds: j.timeout_seconds,
                depends_on: j
                    .depends_on
                    .iter()
                    .map(|d| match clone_ids.get(&d.job_id) {
                        Some((cid, cname)) => JobDep {
                            job: cname.clone(),
                            job_id: *cid,
                            on: d.on.clone(),
                        },
                        None => d.clone(),
                    })
                    .collect(),
                cloned_from: Some(j.id),
            }
        })
        .collect();
    let mut events = vec![Event::JobsCloned {
        build_id: build.id,
        clones,
        relinks: Vec::new(),
    }];
    // A queued original must never run: its clone replaces it.
    for j in members.iter().filter(|j| j.state == JobState::Queued) {
        events.push(Event::JobEnded {
            id: j.id,
            state: JobState::Killed,
            exit_code: None,
            message: Some(format!("cancelled: superseded by {}", clone_ids[&j.id].0)),
        });
    }
    Ok(events)
}

pub(super) fn rerun_job(
    state: &State,
    caller: &Caller<'_>,
    ctx: &Ctx,
    project: &str,
    id: Uuid,
    if_match: Option<u64>,
) -> Result<Vec<Event>, Refused> {
    let job = check_retryable(state, caller, project, id, if_match)?;
    // The children move under the clone, which starts queued: none of them may be running.
    if let Some(busy) = state
        .children(id)
        .find(|c| matches!(c.state, JobState::Scheduled | JobState::Running))
    {
        return Err(BuildRefused::ChildRunning {
            id: busy.id,
            name: busy.name.clone(),
            state: busy.state.as_str(),
        }
        .into());
    }
    let to = ctx.nth_id(0);
    let name = pipeline::clone_name(&job.name, build_names(state, job.build_id).into_iter());
    let relinks = state
        .children(id)
        .map(|c| Relink {
            job: c.id,
            from: id,
            to,
            name: name.clone(),
        })
        .collect();
    Ok(vec![Event::JobsCloned {
        build_id: job.build_id,
        clones: vec![NewJob {
            id: to,
            name,
            run: job.run.clone(),
            env: job.env.clone(),
            timeout_seconds: job.timeout_seconds,
            depends_on: job.depends_on.clone(),
            cloned_from: Some(id),
        }],
        relinks,
    }])
}

/// Job log retention: the jobs whose output ended before the cut-off `before` (at most
/// [`MAX_LOGS_PRUNED`], oldest first) are marked pruned; the server deletes their output once
/// the commit is durable. Nothing qualifies: no event (the server checks the projection
/// first, so it does not ask).
pub(super) fn prune_logs(state: &State, ctx: &Ctx, before: Millis) -> Result<Vec<Event>, Refused> {
    if before > ctx.at {
        return Err(BuildRefused::InvalidCutoff {
            before: time(before),
            at: time(ctx.at),
        }
        .into());
    }
    let mut jobs: Vec<Uuid> = state.prunable_logs(before).take(MAX_LOGS_PRUNED).collect();
    let room = MAX_LOGS_PRUNED - jobs.len();
    jobs.extend(
        ctx.cold_prunable
            .iter()
            .filter(|j| !state.jobs.contains_key(*j))
            .take(room)
            .copied(),
    );
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    Ok(vec![Event::JobLogsPruned { before, jobs }])
}

/// Folds this aggregate's events into the state: the one place they change it.
pub(super) fn apply(state: &mut State, at: Millis, by: Principal, event: &Event) {
    match event {
        Event::BuildCreated {
            id,
            project,
            number,
            restart_counter,
            pipeline,
            env,
            trigger,
            create_jobs_id,
            restarted_from,
        } => {
            if let Some(p) = state.projects.get_mut(project) {
                p.builds = p.builds.max(*number);
            }
            state.build_count += 1;
            state
                .builds_by_number
                .entry((project.clone(), *number))
                .or_default()
                .push(*id);
            state.builds.insert(
                *id,
                Arc::new(Build {
                    id: *id,
                    project: project.clone(),
                    number: *number,
                    restart_counter: *restart_counter,
                    pipeline: pipeline.clone(),
                    env: env.clone(),
                    trigger: *trigger,
                    created_at: at,
                    created_by: by,
                    aborted: false,
                    restarted_from: *restarted_from,
                    jobs: Vec::new(),
                    order: state.build_count + 1,
                    version: 0,
                }),
            );
            state.add_job(
                at,
                *id,
                &NewJob {
                    id: *create_jobs_id,
                    name: super::pipeline::CREATE_JOBS.to_string(),
                    run: match pipeline {
                        super::Pipeline::Generate(command) => command.clone(),
                        super::Pipeline::Jobs(_) => String::new(),
                    },
                    env: BTreeMap::new(),
                    timeout_seconds: None,
                    depends_on: Vec::new(),
                    cloned_from: None,
                },
            );
        }
        Event::JobsExpanded { build_id, jobs } => {
            let create_jobs = state
                .builds
                .get(build_id)
                .and_then(|b| b.jobs.first().copied());
            if let Some(cj) = create_jobs {
                state.end_job(at, cj, JobState::Finished, None, None);
                if let Some(j) = state.jobs.get_mut(&cj).map(Arc::make_mut) {
                    j.started_at.get_or_insert(at);
                }
            }
            for job in jobs {
                state.add_job(at, *build_id, job);
            }
        }
        Event::BuildAborted { id } => {
            if let Some(b) = state.builds.get_mut(id).map(Arc::make_mut) {
                b.aborted = true;
                b.version += 1;
            }
        }
        Event::JobsCloned {
            build_id,
            clones,
            relinks,
        } => {
            for clone in clones {
                state.add_job(at, *build_id, clone);
                if let Some(orig) = clone
                    .cloned_from
                    .and_then(|o| state.jobs.get_mut(&o).map(Arc::make_mut))
                {
                    orig.superseded_by = Some(clone.id);
                    orig.version += 1;
                }
            }
            state.follow_watch_build(at, *build_id);
            for r in relinks {
                if let Some(child) = state.jobs.get_mut(&r.job).map(Arc::make_mut) {
                    for d in child.depends_on.iter_mut().filter(|d| d.job_id == r.from) {
                        d.job_id = r.to;
                        d.job = r.name.clone();
                    }
                    child.version += 1;
                }
                if let Some(kids) = state.children.get_mut(&r.from) {
                    kids.retain(|k| *k != r.job);
                }
                state.children.entry(r.to).or_default().push(r.job);
            }
        }
        Event::JobEnded {
            id,
            state: end,
            exit_code,
            message,
        } => state.end_job(at, *id, *end, *exit_code, message.clone()),
        Event::JobLogsPruned { jobs, .. } => {
            for id in jobs {
                if let Some(j) = state.jobs.get_mut(id).map(Arc::make_mut) {
                    if let Some(ended) = j.finished_at {
                        state.log_expiry.remove(&(ended, *id));
                    }
                    j.log_pruned_at.get_or_insert(at);
                }
            }
        }
        Event::BuildsRecalled { builds } => {
            for b in builds {
                state.recall(b);
            }
        }
        _ => {}
    }
}

impl State {
    pub(super) fn touch_build(&mut self, id: Uuid) {
        if let Some(b) = self.builds.get_mut(&id).map(Arc::make_mut) {
            b.version += 1;
        }
    }

    pub(super) fn add_job(&mut self, at: Millis, build_id: Uuid, job: &NewJob) {
        self.job_order += 1;
        for d in &job.depends_on {
            self.children.entry(d.job_id).or_default().push(job.id);
        }
        self.queue.insert(self.job_order, job.id);
        self.jobs.insert(
            job.id,
            Arc::new(Job {
                id: job.id,
                build_id,
                name: job.name.clone(),
                run: job.run.clone(),
                env: job.env.clone(),
                timeout_seconds: job.timeout_seconds,
                state: JobState::Queued,
                depends_on: job.depends_on.iter().map(JobDep::clone).collect(),
                superseded_by: None,
                cloned_from: job.cloned_from,
                created_at: at,
                started_at: None,
                finished_at: None,
                exit_code: None,
                message: None,
                lease: None,
                order: self.job_order,
                version: 1,
                log_pruned_at: None,
            }),
        );
        if let Some(b) = self.builds.get_mut(&build_id).map(Arc::make_mut) {
            b.jobs.push(job.id);
            b.version += 1;
        }
    }

    pub(super) fn end_job(
        &mut self,
        at: Millis,
        id: Uuid,
        state: JobState,
        exit_code: Option<i32>,
        message: Option<String>,
    ) {
        let Some(j) = self.jobs.get_mut(&id).map(Arc::make_mut) else {
            return;
        };
        self.queue.remove(&j.order);
        if let Some(lease) = &j.lease {
            self.leases.remove(&(lease.expires_at, id));
        }
        if let Some(ended) = j.finished_at {
            self.log_expiry.remove(&(ended, id));
        }
        // Only a job a runner held can have output for retention to prune.
        if state.is_done() && j.lease.is_some() && j.log_pruned_at.is_none() {
            self.log_expiry.insert((at, id));
        }
        j.state = state;
        j.finished_at = Some(at);
        j.exit_code = exit_code;
        j.message = message;
        j.version += 1;
        let build = j.build_id;
        self.touch_build(build);
        self.follow_watch_build(at, build);
    }

    /// A build with its jobs, as a reply.
    fn build_reply(&self, id: Uuid) -> Option<Reply> {
        let b = self.builds.get(&id).map(Arc::as_ref)?;
        let jobs = b
            .jobs
            .iter()
            .filter_map(|j| self.jobs.get(j).map(Arc::as_ref))
            .cloned()
            .collect();
        Some(Reply::Build(Box::new(b.clone()), jobs))
    }
}

/// The answer to an accepted build or job command, read right after its commit was folded.
pub(super) fn reply(
    state: &State,
    command: &Command,
    events: &[Event],
    at: Millis,
) -> Option<Reply> {
    match command {
        Command::TriggerBuild { .. } | Command::RestartBuild { .. } => {
            events.iter().find_map(|e| match e {
                Event::BuildCreated { id, .. } => state.build_reply(*id),
                _ => None,
            })
        }
        Command::AbortBuild { .. } | Command::AbortJob { .. } => Some(Reply::Aborted(
            events
                .iter()
                .filter_map(|e| match e {
                    Event::JobEnded {
                        id,
                        state: JobState::Killed,
                        ..
                    } => Some(*id),
                    _ => None,
                })
                .collect(),
        )),
        Command::RestartJob { .. } => events.iter().find_map(|e| match e {
            Event::JobsCloned { clones, .. } => Some(Reply::Cloned(
                clones
                    .iter()
                    .map(|n| Cloned {
                        from: n.cloned_from.unwrap_or(n.id),
                        to: n.id,
                        name: n.name.clone(),
                    })
                    .collect(),
            )),
            _ => None,
        }),
        Command::RerunJob { .. } => events.iter().find_map(|e| match e {
            Event::JobsCloned { clones, .. } => clones
                .first()
                .and_then(|n| state.jobs.get(&n.id).map(Arc::as_ref))
                .map(|j| Reply::Job(Box::new(j.clone()))),
            _ => None,
        }),
        Command::PruneJobLogs { .. } => Some(Reply::LogsPruned {
            jobs: events
                .iter()
                .flat_map(|e| match e {
                    Event::JobLogsPruned { jobs, .. } => jobs.as_slice(),
                    _ => &[],
                })
                .copied()
                .collect(),
            at,
        }),
        _ => None,
    }
}

/// The project a job is in, if the job is in memory.
pub(super) fn job_project(state: &State, id: &Uuid) -> Option<String> {
    state
        .jobs
        .get(id)
        .and_then(|j| state.builds.get(&j.build_id).map(Arc::as_ref))
        .map(|b| b.project.clone())
}

/// What a build or job command acted on, for its audit entry: (target, project).
pub(super) fn audit_target(
    state: &State,
    command: &Command,
    events: &[Event],
) -> (Option<String>, Option<String>) {
    match command {
        Command::TriggerBuild { project, .. } => (
            events.iter().find_map(|e| match e {
                Event::BuildCreated { id, .. } => Some(format!("build:{id}")),
                _ => None,
            }),
            Some(project.clone()),
        ),
        Command::RestartBuild { project, build, .. }
        | Command::AbortBuild { project, build, .. } => {
            (Some(format!("build:{build}")), Some(project.clone()))
        }
        Command::RestartJob { project, job, .. }
        | Command::RerunJob { project, job, .. }
        | Command::AbortJob { project, job, .. } => {
            (Some(format!("job:{job}")), Some(project.clone()))
        }
        // A prune names every job in its event; the entry names the job when there is one,
        // and the project when all of them are in the same one.
        Command::PruneJobLogs { .. } => match events.first() {
            Some(Event::JobLogsPruned { jobs, .. }) => {
                let mut projects = jobs.iter().map(|j| job_project(state, j));
                let first = projects.next().flatten();
                let project = if projects.all(|p| p == first) {
                    first
                } else {
                    None
                };
                match jobs.as_slice() {
                    [one] => (Some(format!("job:{one}")), project),
                    _ => (None, project),
                }
            }
            _ => (None, None),
        },
        _ => (None, None),
    }
}

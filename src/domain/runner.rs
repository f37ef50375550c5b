//! The runner lease: a runner claims a ready job, holds it by heartbeats, and reports how it
//! ended (or, for a generated pipeline's Create Jobs, what the generator printed); a job
//! whose runner stops heartbeating ends in `error` when its lease runs out.

use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;

use super::build::{build_not_found, end_jobs, expand, job_not_found, job_project};
use super::pipeline::{self, CREATE_JOBS, Pipeline};
use super::refusal::RunnerRefused;
use super::{
    Caller, Command, Ctx, Event, Job, JobState, Lease, Millis, Principal, Refused, Reply, State,
};

impl State {
    /// The oldest job this runner may claim now.
    pub fn claimable(&self, caller: &Caller<'_>) -> Option<&Job> {
        self.queue
            .values()
            .filter_map(|id| self.jobs.get(id).map(Arc::as_ref))
            .find(|j| {
                j.state == JobState::Queued
                    && j.superseded_by.is_none()
                    && self
                        .builds
                        .get(&j.build_id)
                        .is_some_and(|b| !b.aborted && caller.sees_project(&b.project))
                    && self.ready(j)
            })
    }

    /// Running jobs whose lease ran out before `at`.
    pub fn expired_leases(&self, at: Millis) -> impl Iterator<Item = &Job> {
        self.leases
            .range(..=(at, Uuid::max()))
            .filter_map(|(_, id)| self.jobs.get(id).map(Arc::as_ref))
            .filter(|j| j.state == JobState::Running)
    }

    /// Running jobs whose lease ran out before `at`, counting the renewals that heartbeats made
    /// in the writer's memory since the job's last commit.
    pub fn lapsed_leases<'a>(
        &'a self,
        at: Millis,
        renewals: &'a HashMap<Uuid, Millis>,
    ) -> impl Iterator<Item = &'a Job> {
        self.expired_leases(at)
            .filter(move |j| renewals.get(&j.id).is_none_or(|until| *until <= at))
    }

    /// The earliest lease expiry among running jobs.
    pub fn next_lease_expiry(&self) -> Option<Millis> {
        self.leases.iter().next().map(|(at, _)| *at)
    }
}

pub(super) fn claim(state: &State, caller: &Caller<'_>, ctx: &Ctx) -> Result<Vec<Event>, Refused> {
    let job = state
        .claimable(caller)
        .ok_or(RunnerRefused::NothingToClaim)?;
    Ok(vec![Event::JobClaimed {
        id: job.id,
        lease_id: ctx.nth_id(0),
        lease_expires_at: ctx.at + ctx.rules.lease_ms(),
    }])
}

/// The job `lease_id` holds, if the caller may see it and it is still running (or was aborted
/// while it ran, so its runner can still report).
pub fn leased<'s>(
    state: &'s State,
    caller: &Caller<'_>,
    id: Uuid,
    lease_id: Uuid,
) -> Result<&'s Job, Refused> {
    let job = state
        .jobs
        .get(&id)
        .filter(|j| {
            state
                .builds
                .get(&j.build_id)
                .is_some_and(|b| caller.sees_project(&b.project))
        })
        .ok_or_else(|| job_not_found(id))?;
    let stale = || RunnerRefused::StaleLease { lease_id, id }.into();
    match &job.lease {
        Some(l)
            if l.id == lease_id && matches!(job.state, JobState::Running | JobState::Killed) =>
        {
            Ok(job)
        }
        _ => Err(stale()),
    }
}

/// A heartbeat renews the lease of a running job. An aborted job answers `abort` with no event.
/// The writer keeps the renewal in memory instead of logging it (it decides nothing); the
/// event stays the renewal's description, and the fold still reads it in logs written before.
pub(super) fn heartbeat(
    state: &State,
    caller: &Caller<'_>,
    ctx: &Ctx,
    id: Uuid,
    lease_id: Uuid,
) -> Result<Vec<Event>, Refused> {
    let job = leased(state, caller, id, lease_id)?;
    if job.state != JobState::Running {
        return Ok(Vec::new());
    }
    Ok(vec![Event::LeaseRenewed {
        id,
        lease_expires_at: ctx.at + ctx.rules.lease_ms(),
    }])
}

pub(super) fn finish(
    state: &State,
    caller: &Caller<'_>,
    id: Uuid,
    lease_id: Uuid,
    end: JobState,
    exit_code: Option<i32>,
    message: Option<&str>,
) -> Result<Vec<Event>, Refused> {
    let job = leased(state, caller, id, lease_id)?;
    if !matches!(
        end,
        JobState::Finished | JobState::Failure | JobState::Error | JobState::Killed
    ) {
        return Err(RunnerRefused::InvalidState.into());
    }
    if job.state != JobState::Running {
        // Aborted while it ran: the kill already stands.
        return Ok(Vec::new());
    }
    Ok(end_jobs(
        state,
        vec![(id, end, exit_code, message.map(|m| truncate(m, 4096)))],
    ))
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

pub(super) fn expire_leases(state: &State, ctx: &Ctx) -> Result<Vec<Event>, Refused> {
    let lost = state
        .lapsed_leases(ctx.at, &ctx.renewals)
        .map(|j| (j.id, JobState::Error, None, Some("runner lost".to_string())))
        .collect();
    Ok(end_jobs(state, lost))
}

/// Create Jobs of a generated pipeline reports what its command printed: valid, its jobs join
/// the build (killed on arrival if the build was aborted meanwhile); invalid, Create Jobs
/// fails with the reason.
pub(super) fn expand_generated(
    state: &State,
    caller: &Caller<'_>,
    ctx: &Ctx,
    id: Uuid,
    lease_id: Uuid,
    output: Result<&Pipeline, &str>,
) -> Result<Vec<Event>, Refused> {
    let job = leased(state, caller, id, lease_id)?;
    if job.name != CREATE_JOBS {
        return Err(RunnerRefused::NotCreateJobs.into());
    }
    if job.state != JobState::Running {
        return Ok(Vec::new());
    }
    let build = state
        .builds
        .get(&job.build_id)
        .ok_or_else(|| build_not_found(job.build_id))?;
    let checked = match output {
        Ok(p @ Pipeline::Jobs(specs)) => pipeline::validate(p, ctx.rules.max_jobs)
            .map(|()| specs.as_slice())
            .map_err(Refused::from),
        Ok(Pipeline::Generate(_)) => Err(RunnerRefused::NestedGenerator.into()),
        Err(why) => Err(RunnerRefused::GeneratorOutput {
            why: why.to_string(),
        }
        .into()),
    };
    let specs = match checked {
        Ok(specs) => specs,
        Err(r) => {
            return Ok(end_jobs(
                state,
                vec![(
                    id,
                    JobState::Failure,
                    None,
                    Some(format!("invalid pipeline: {r}")),
                )],
            ));
        }
    };
    let jobs = expand(specs, id, ctx, 0);
    let mut events = Vec::with_capacity(jobs.len() + 1);
    let killed: Vec<Uuid> = if build.aborted {
        jobs.iter().map(|j| j.id).collect()
    } else {
        Vec::new()
    };
    events.push(Event::JobsExpanded {
        build_id: build.id,
        jobs,
    });
    events.extend(killed.into_iter().map(|j| Event::JobEnded {
        id: j,
        state: JobState::Killed,
        exit_code: None,
        message: Some("aborted".to_string()),
    }));
    Ok(events)
}

/// Folds this aggregate's events into the state: the one place they change it.
pub(super) fn apply(state: &mut State, at: Millis, by: Principal, event: &Event) {
    match event {
        Event::JobClaimed {
            id,
            lease_id,
            lease_expires_at,
        } => {
            if let Some(j) = state.jobs.get_mut(id).map(Arc::make_mut) {
                state.queue.remove(&j.order);
                j.state = JobState::Running;
                j.started_at = Some(at);
                j.lease = Some(Lease {
                    id: *lease_id,
                    runner: by,
                    expires_at: *lease_expires_at,
                });
                j.version += 1;
                state.leases.insert((*lease_expires_at, *id));
                let build = j.build_id;
                state.touch_build(build);
            }
        }
        Event::LeaseRenewed {
            id,
            lease_expires_at,
        } => {
            if let Some(lease) = state
                .jobs
                .get_mut(id)
                .map(Arc::make_mut)
                .and_then(|j| j.lease.as_mut())
            {
                state.leases.remove(&(lease.expires_at, *id));
                lease.expires_at = *lease_expires_at;
                state.leases.insert((*lease_expires_at, *id));
            }
        }
        _ => {}
    }
}

/// The answer to a runner's call: the job (and, for a claim, its build and lease).
pub(super) fn reply(state: &State, command: &Command, events: &[Event]) -> Option<Reply> {
    match command {
        Command::ClaimJob { .. } => events.iter().find_map(|e| match e {
            Event::JobClaimed {
                id,
                lease_id,
                lease_expires_at,
            } => {
                let job = state.jobs.get(id).map(Arc::as_ref)?;
                let build = state.builds.get(&job.build_id).map(Arc::as_ref)?;
                Some(Reply::Claimed {
                    job: Box::new(job.clone()),
                    build: Box::new(build.clone()),
                    lease_id: *lease_id,
                    lease_expires_at: *lease_expires_at,
                })
            }
            _ => None,
        }),
        Command::Heartbeat { job, .. } => {
            state
                .jobs
                .get(job)
                .map(Arc::as_ref)
                .map(|j| Reply::Heartbeat {
                    abort: j.state != JobState::Running,
                    lease_expires_at: j.lease.as_ref().map_or(0, |l| l.expires_at),
                })
        }
        Command::FinishJob { job, .. } | Command::ExpandJobs { job, .. } => state
            .jobs
            .get(job)
            .map(Arc::as_ref)
            .map(|j| Reply::Job(Box::new(j.clone()))),
        _ => None,
    }
}

/// What a runner's call acted on, for its audit entry: (target, project).
pub(super) fn audit_target(
    state: &State,
    command: &Command,
    events: &[Event],
) -> (Option<String>, Option<String>) {
    let job = |id: &Uuid| (Some(format!("job:{id}")), job_project(state, id));
    match (command, events.first()) {
        (Command::ClaimJob { .. }, Some(Event::JobClaimed { id, .. })) => job(id),
        (
            Command::Heartbeat { job: id, .. }
            | Command::FinishJob { job: id, .. }
            | Command::ExpandJobs { job: id, .. },
            _,
        ) => job(id),
        _ => (None, None),
    }
}

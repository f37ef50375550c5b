//! Watches: recurring triggers that re-run a pipeline for a `source` into a `to_uri`.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use uuid::Uuid;

use super::Pipeline;
use super::refusal::WatchRefused;
use super::{Caller, Ctx, Event, JobState, Millis, Principal, Refused, State, check_if_match};

/// A year, in minutes.
pub const MAX_INTERVAL_MINUTES: f64 = 525_600.0;
pub const MAX_URI_LEN: usize = super::bounds::URI;
pub const MAX_REASON_LEN: usize = super::bounds::REASON;
pub const MAX_INSTRUCTION_LEN: usize = super::bounds::INSTRUCTION;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Watch {
    pub id: Uuid,
    pub project: String,
    pub source: String,
    pub to_uri: String,
    /// Minutes between fires.
    pub watch_interval: f64,
    pub is_active: bool,
    pub reason: Option<String>,
    pub instruction: Option<String>,
    pub created_at: Millis,
    pub created_by: Principal,
    pub updated_at: Millis,
    /// `None` while paused.
    pub next_run_at: Option<Millis>,
    pub last_run: Option<LastRun>,
    pub consecutive_failures: u32,
    /// What it runs; `None` runs its project's default pipeline.
    pub pipeline: Option<Pipeline>,
    pub fires: u64,
    /// Scheduled fires skipped because the previous build was still running.
    pub skipped_overlap: u64,
    /// Scheduled fires swallowed by downtime (collapsed into catch-up fires).
    pub missed: u64,
    /// Counts changes to the watch's settings; fires do not change it, so a scheduler firing
    /// in the background never invalidates a client's `If-Match`.
    pub version: u64,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LastRun {
    pub at: Millis,
    pub build_id: Option<Uuid>,
    pub outcome: RunOutcome,
    /// When its build ended (`None` while it runs, or when it started none).
    pub finished_at: Option<Millis>,
    pub manual: bool,
    pub missed: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RunOutcome {
    /// Fired without a build (its project has no pipeline).
    Triggered,
    /// The build it started, as that build stands.
    Build(JobState),
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Triggered => "triggered",
            RunOutcome::Build(s) => s.as_str(),
        }
    }

    pub fn failed(self) -> bool {
        matches!(
            self,
            RunOutcome::Build(JobState::Failure | JobState::Error | JobState::Killed)
        )
    }
}

/// A watch to create, as asked for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewWatch {
    pub project: String,
    pub source: String,
    pub to_uri: String,
    pub watch_interval: f64,
    pub reason: Option<String>,
    pub instruction: Option<String>,
    pub is_active: bool,
}

/// How a request names a watch: by id, by `to_uri` (optionally within a project), or both.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WatchKey {
    pub id: Option<Uuid>,
    pub to_uri: Option<String>,
    pub project: Option<String>,
}

impl WatchKey {
    pub fn describe(&self) -> String {
        match (&self.id, &self.to_uri) {
            (Some(id), _) => format!("watch:{id}"),
            (None, Some(u)) => format!("to_uri:{u}"),
            (None, None) => "watch:?".into(),
        }
    }
}

/// The settings a PATCH may change. `Some(None)` clears a text field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WatchPatch {
    pub watch_interval: Option<f64>,
    pub is_active: Option<bool>,
    pub reason: Option<Option<String>>,
    pub instruction: Option<Option<String>>,
}

impl WatchPatch {
    pub fn is_empty(&self) -> bool {
        self.watch_interval.is_none()
            && self.is_active.is_none()
            && self.reason.is_none()
            && self.instruction.is_none()
    }
}

fn interval_ms(minutes: f64) -> Millis {
    // Validated intervals are finite and at most a year, so this cannot overflow.
    ((minutes * 60_000.0).round() as Millis).max(1)
}

pub fn validate_interval(minutes: f64, floor_secs: u64) -> Result<(), WatchRefused> {
    if !minutes.is_finite() {
        return Err(WatchRefused::IntervalNotFinite);
    }
    if minutes <= 0.0 {
        return Err(WatchRefused::IntervalNotPositive { minutes });
    }
    if minutes > MAX_INTERVAL_MINUTES {
        return Err(WatchRefused::IntervalTooLong {
            minutes,
            max: MAX_INTERVAL_MINUTES,
        });
    }
    if minutes * 60.0 < floor_secs as f64 {
        return Err(WatchRefused::IntervalBelowFloor {
            minutes,
            floor_secs,
        });
    }
    Ok(())
}

/// Whether `value` is an absolute URI; `too_long` and `not_uri` say which field it is.
fn validate_uri(
    value: &str,
    too_long: impl FnOnce(usize) -> WatchRefused,
    not_uri: impl FnOnce(String) -> WatchRefused,
) -> Result<(), WatchRefused> {
    if value.len() > MAX_URI_LEN {
        return Err(too_long(MAX_URI_LEN));
    }
    let trimmed = value.trim();
    if trimmed != value || url::Url::parse(value).is_err() {
        return Err(not_uri(value.to_string()));
    }
    Ok(())
}

fn validate_source(value: &str) -> Result<(), WatchRefused> {
    validate_uri(
        value,
        |max| WatchRefused::SourceTooLong { max },
        |value| WatchRefused::SourceNotUri { value },
    )
}

fn validate_to_uri(value: &str) -> Result<(), WatchRefused> {
    validate_uri(
        value,
        |max| WatchRefused::ToUriTooLong { max },
        |value| WatchRefused::ToUriNotUri { value },
    )
}

fn validate_reason(value: Option<&str>) -> Result<(), WatchRefused> {
    if value.is_some_and(|v| v.chars().count() > MAX_REASON_LEN) {
        return Err(WatchRefused::ReasonTooLong {
            max: MAX_REASON_LEN,
        });
    }
    Ok(())
}

fn validate_instruction(value: Option<&str>) -> Result<(), WatchRefused> {
    if value.is_some_and(|v| v.chars().count() > MAX_INSTRUCTION_LEN) {
        return Err(WatchRefused::InstructionTooLong {
            max: MAX_INSTRUCTION_LEN,
        });
    }
    Ok(())
}

fn not_found(key: &WatchKey) -> WatchRefused {
    let what = match (&key.id, &key.to_uri) {
        (Some(id), _) => format!("no watch {id}"),
        (None, Some(u)) => format!("no watch with to_uri {u:?}"),
        (None, None) => "no such watch".into(),
    };
    WatchRefused::NotFound { what }
}

impl State {
    /// Finds the one watch a key names among those the caller may see.
    pub fn resolve_watch(
        &self,
        caller: &Caller<'_>,
        key: &WatchKey,
    ) -> Result<&Watch, WatchRefused> {
        let in_scope = |w: &&Watch| {
            caller.sees_project(&w.project) && key.project.as_ref().is_none_or(|p| *p == w.project)
        };
        let by_id = key
            .id
            .map(|id| {
                self.watches
                    .get(&id)
                    .map(Arc::as_ref)
                    .filter(in_scope)
                    .ok_or_else(|| not_found(key))
            })
            .transpose()?;
        // An id settles which watch is meant: a to_uri beside it need only agree with it,
        // even where that URI names watches in several projects.
        if let (Some(w), Some(uri)) = (by_id, &key.to_uri)
            && w.to_uri == *uri
        {
            return Ok(w);
        }
        let by_uri = match &key.to_uri {
            None => None,
            Some(uri) => {
                let mut found = self.watches_with_uri(uri).filter(in_scope);
                let first = found.next().ok_or_else(|| not_found(key))?;
                if by_id.is_none() && found.next().is_some() {
                    return Err(WatchRefused::AmbiguousToUri { uri: uri.clone() });
                }
                Some(first)
            }
        };
        match (by_id, by_uri) {
            (Some(a), Some(b)) if a.id != b.id => Err(WatchRefused::KeysConflict {
                by_id: a.id,
                by_uri: b.id,
            }),
            (Some(w), _) | (None, Some(w)) => Ok(w),
            (None, None) => Err(WatchRefused::KeyRequired),
        }
    }
}

/// A watch with a pipeline of its own, run instead of its project's default.
pub(super) fn create_with_pipeline(
    state: &State,
    caller: &Caller<'_>,
    new: &NewWatch,
    pipeline: &Pipeline,
    ctx: &Ctx,
) -> Result<Vec<Event>, Refused> {
    let mut events = create(state, caller, new, ctx)?;
    super::pipeline::validate(pipeline, ctx.rules.max_jobs)?;
    events.push(Event::WatchPipelineSet {
        id: ctx.new_id,
        pipeline: Some(pipeline.clone()),
    });
    Ok(events)
}

pub(super) fn create(
    state: &State,
    caller: &Caller<'_>,
    new: &NewWatch,
    ctx: &Ctx,
) -> Result<Vec<Event>, Refused> {
    let NewWatch {
        project,
        source,
        to_uri,
        watch_interval,
        reason,
        instruction,
        is_active,
    } = new;
    if !state.projects.contains_key(project) || !caller.sees_project(project) {
        return Err(WatchRefused::ProjectNotFound {
            project: project.clone(),
        }
        .into());
    }
    validate_source(source)?;
    validate_to_uri(to_uri)?;
    validate_interval(*watch_interval, ctx.rules.watch_interval_floor_secs)?;
    validate_reason(reason.as_deref())?;
    validate_instruction(instruction.as_deref())?;
    if let Some(taken) = state
        .watches_with_uri(to_uri)
        .find(|w| w.project == *project)
    {
        return Err(WatchRefused::ToUriTaken {
            watch: taken.id,
            project: project.clone(),
            to_uri: to_uri.clone(),
        }
        .into());
    }
    let next_run_at = is_active.then(|| ctx.at + interval_ms(*watch_interval));
    Ok(vec![Event::WatchCreated {
        id: ctx.new_id,
        project: project.clone(),
        source: source.clone(),
        to_uri: to_uri.clone(),
        watch_interval: *watch_interval,
        is_active: *is_active,
        reason: reason.clone(),
        instruction: instruction.clone(),
        next_run_at,
    }])
}

pub(super) fn update(
    state: &State,
    caller: &Caller<'_>,
    key: &WatchKey,
    if_match: Option<u64>,
    patch: &WatchPatch,
    pipeline: Option<&Option<Pipeline>>,
    ctx: &Ctx,
) -> Result<Vec<Event>, Refused> {
    if patch.is_empty() && pipeline.is_none() {
        return Err(WatchRefused::NothingToChange.into());
    }
    let w = state.resolve_watch(caller, key)?;
    check_if_match("watch", if_match, w.version)?;
    if let Some(Some(p)) = pipeline {
        super::pipeline::validate(p, ctx.rules.max_jobs)?;
    }
    let set_pipeline = pipeline.map(|p| Event::WatchPipelineSet {
        id: w.id,
        pipeline: p.clone(),
    });
    if patch.is_empty() {
        return Ok(set_pipeline.into_iter().collect());
    }
    if let Some(v) = patch.watch_interval {
        validate_interval(v, ctx.rules.watch_interval_floor_secs)?;
    }
    validate_reason(patch.reason.as_ref().and_then(|r| r.as_deref()))?;
    validate_instruction(patch.instruction.as_ref().and_then(|r| r.as_deref()))?;
    let interval = patch.watch_interval.unwrap_or(w.watch_interval);
    let active = patch.is_active.unwrap_or(w.is_active);
    // Resuming, or changing the interval of a running watch, re-anchors the schedule at now:
    // never a burst of past-due fires.
    let reanchor = active && (!w.is_active || patch.watch_interval.is_some());
    let next_run_at = if !active {
        w.is_active.then_some(None)
    } else if reanchor {
        Some(Some(ctx.at + interval_ms(interval)))
    } else {
        None
    };
    let mut events = vec![Event::WatchUpdated {
        id: w.id,
        watch_interval: patch.watch_interval,
        is_active: patch.is_active,
        reason: patch.reason.clone(),
        instruction: patch.instruction.clone(),
        next_run_at,
    }];
    events.extend(set_pipeline);
    Ok(events)
}

pub(super) fn delete(
    state: &State,
    caller: &Caller<'_>,
    key: &WatchKey,
    if_match: Option<u64>,
) -> Result<Vec<Event>, Refused> {
    let w = state.resolve_watch(caller, key)?;
    check_if_match("watch", if_match, w.version)?;
    Ok(vec![Event::WatchDeleted {
        id: w.id,
        project: w.project.clone(),
        to_uri: w.to_uri.clone(),
    }])
}

/// A manual fire: now, paused or not, whatever the previous build is doing.
pub(super) fn trigger(
    state: &State,
    caller: &Caller<'_>,
    key: &WatchKey,
    ctx: &Ctx,
) -> Result<Vec<Event>, Refused> {
    let w = state.resolve_watch(caller, key)?;
    let (build_id, mut events) = match super::build::for_watch(state, ctx, w) {
        Some((id, events)) => (Some(id), events),
        None => (None, Vec::new()),
    };
    events.push(Event::WatchRan {
        id: w.id,
        manual: true,
        missed: 0,
        build_id,
        next_run_at: None,
    });
    Ok(events)
}

/// A scheduled fire. Fixed-rate: the next run moves on from the one that was due by whole
/// intervals, however late this fire is; the intervals that passed unfired are `missed`.
pub(super) fn fire_scheduled(state: &State, ctx: &Ctx, id: Uuid) -> Result<Vec<Event>, Refused> {
    let w = state
        .watches
        .get(&id)
        .map(Arc::as_ref)
        .ok_or(WatchRefused::Gone { id })?;
    let due = match (w.is_active, w.next_run_at) {
        (true, Some(due)) => due,
        _ => {
            return Err(WatchRefused::Paused { id }.into());
        }
    };
    if due > ctx.at {
        return Err(WatchRefused::NotDue { id, due }.into());
    }
    let step = interval_ms(w.watch_interval);
    let behind = (ctx.at - due) / step;
    let next_run_at = due + (behind + 1) * step;
    let missed = u32::try_from(behind).unwrap_or(u32::MAX);
    let previous_running = w
        .last_run
        .as_ref()
        .and_then(|r| r.build_id)
        .and_then(|b| state.builds.get(&b).map(Arc::as_ref))
        .is_some_and(|b| state.build_state(b) == JobState::Running);
    if previous_running {
        return Ok(vec![Event::WatchSkipped { id, next_run_at }]);
    }
    let (build_id, mut events) = match super::build::for_watch(state, ctx, w) {
        Some((b, events)) => (Some(b), events),
        None => (None, Vec::new()),
    };
    events.push(Event::WatchRan {
        id,
        manual: false,
        missed,
        build_id,
        next_run_at: Some(next_run_at),
    });
    Ok(events)
}

/// At the failure limit a watch pauses itself, saying why.
pub(super) fn pause_failing(state: &State, ctx: &Ctx, id: Uuid) -> Result<Vec<Event>, Refused> {
    let w = state
        .watches
        .get(&id)
        .map(Arc::as_ref)
        .ok_or(WatchRefused::Gone { id })?;
    let limit = ctx.rules.watch_failure_limit;
    if !w.is_active || w.consecutive_failures < limit {
        return Err(WatchRefused::NotFailing {
            id,
            active: w.is_active,
            failures: w.consecutive_failures,
            limit,
        }
        .into());
    }
    Ok(vec![Event::WatchUpdated {
        id,
        watch_interval: None,
        is_active: Some(false),
        reason: Some(Some(format!(
            "paused after {} consecutive failures",
            w.consecutive_failures
        ))),
        instruction: None,
        next_run_at: Some(None),
    }])
}

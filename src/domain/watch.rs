//! Watches: recurring triggers that re-run a pipeline for a `source` into a `to_uri`.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use uuid::Uuid;

use super::Pipeline;
use super::{Caller, Ctx, Event, JobState, Millis, Principal, Rejection, State, check_if_match};

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

pub fn validate_interval(minutes: f64, floor_secs: u64) -> Result<(), Rejection> {
    let bad = |reason: String| {
        Err(Rejection::invalid(
            "invalid_interval",
            "watch_interval",
            reason,
        ))
    };
    if !minutes.is_finite() {
        return bad("watch_interval must be a finite number of minutes".into());
    }
    if minutes <= 0.0 {
        return bad(format!(
            "watch_interval must be > 0 minutes (got {minutes}); to stop a watch, pause it with is_active=false"
        ));
    }
    if minutes > MAX_INTERVAL_MINUTES {
        return bad(format!(
            "watch_interval must be at most {MAX_INTERVAL_MINUTES} minutes (one year), got {minutes}"
        ));
    }
    if minutes * 60.0 < floor_secs as f64 {
        return bad(format!(
            "watch_interval must be at least {} minutes on this server (its floor is {floor_secs} s), got {minutes}",
            floor_secs as f64 / 60.0
        ));
    }
    Ok(())
}

fn validate_uri(field: &str, value: &str) -> Result<(), Rejection> {
    let code = if field == "source" {
        "invalid_source"
    } else {
        "invalid_to_uri"
    };
    if value.len() > MAX_URI_LEN {
        return Err(Rejection::invalid(
            code,
            field,
            format!("{field} must be at most {MAX_URI_LEN} bytes"),
        ));
    }
    let trimmed = value.trim();
    if trimmed != value || url::Url::parse(value).is_err() {
        return Err(Rejection::invalid(
            code,
            field,
            format!(
                "{field} must be an absolute URI with a scheme, such as https://example.com/repo or viking://res/docs; got {value:?}"
            ),
        ));
    }
    Ok(())
}

fn validate_text(field: &str, value: Option<&str>, max: usize) -> Result<(), Rejection> {
    if value.is_some_and(|v| v.chars().count() > max) {
        return Err(Rejection::invalid(
            &format!("invalid_{field}"),
            field,
            format!("{field} must be at most {max} characters"),
        ));
    }
    Ok(())
}

fn not_found(key: &WatchKey) -> Rejection {
    let what = match (&key.id, &key.to_uri) {
        (Some(id), _) => format!("no watch {id}"),
        (None, Some(u)) => format!("no watch with to_uri {u:?}"),
        (None, None) => "no such watch".into(),
    };
    Rejection::new(
        404,
        "watch_not_found",
        format!("{what}; GET /api/v1/watches lists the watches you can see"),
    )
}

impl State {
    /// Finds the one watch a key names among those the caller may see.
    pub fn resolve_watch(&self, caller: &Caller<'_>, key: &WatchKey) -> Result<&Watch, Rejection> {
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
                    return Err(Rejection::new(
                        400,
                        "ambiguous_to_uri",
                        format!(
                            "to_uri {uri:?} names watches in several of your projects; add project=<id>"
                        ),
                    ));
                }
                Some(first)
            }
        };
        match (by_id, by_uri) {
            (Some(a), Some(b)) if a.id != b.id => Err(Rejection::new(
                400,
                "watch_keys_conflict",
                format!(
                    "the id names watch {} but to_uri names watch {}; give one key, or two that agree",
                    a.id, b.id
                ),
            )),
            (Some(w), _) | (None, Some(w)) => Ok(w),
            (None, None) => Err(Rejection::new(
                400,
                "watch_key_required",
                "name the watch by its id (/watches/{id}) or by ?to_uri=<uri>",
            )),
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
) -> Result<Vec<Event>, Rejection> {
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
) -> Result<Vec<Event>, Rejection> {
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
        return Err(Rejection::new(
            404,
            "project_not_found",
            format!("no project {project:?}; GET /api/v1/projects lists yours"),
        ));
    }
    validate_uri("source", source)?;
    validate_uri("to_uri", to_uri)?;
    validate_interval(*watch_interval, ctx.rules.watch_interval_floor_secs)?;
    validate_text("reason", reason.as_deref(), MAX_REASON_LEN)?;
    validate_text("instruction", instruction.as_deref(), MAX_INSTRUCTION_LEN)?;
    if let Some(taken) = state
        .watches_with_uri(to_uri)
        .find(|w| w.project == *project)
    {
        return Err(Rejection::new(
            409,
            "to_uri_taken",
            format!(
                "watch {} in project {project:?} already targets {to_uri:?}; update that watch instead",
                taken.id
            ),
        ));
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
) -> Result<Vec<Event>, Rejection> {
    if patch.is_empty() && pipeline.is_none() {
        return Err(Rejection::new(
            422,
            "nothing_to_change",
            "the body changes nothing; give any of watch_interval, is_active, reason, instruction, pipeline",
        ));
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
    validate_text(
        "reason",
        patch.reason.as_ref().and_then(|r| r.as_deref()),
        MAX_REASON_LEN,
    )?;
    validate_text(
        "instruction",
        patch.instruction.as_ref().and_then(|r| r.as_deref()),
        MAX_INSTRUCTION_LEN,
    )?;
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
) -> Result<Vec<Event>, Rejection> {
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
) -> Result<Vec<Event>, Rejection> {
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
pub(super) fn fire_scheduled(state: &State, ctx: &Ctx, id: Uuid) -> Result<Vec<Event>, Rejection> {
    let w = state.watches.get(&id).map(Arc::as_ref).ok_or_else(|| {
        Rejection::new(
            404,
            "watch_not_found",
            format!("watch {id} no longer exists"),
        )
    })?;
    let due = match (w.is_active, w.next_run_at) {
        (true, Some(due)) => due,
        _ => {
            return Err(Rejection::new(
                409,
                "watch_paused",
                format!("watch {id} is paused; it fires again once resumed"),
            ));
        }
    };
    if due > ctx.at {
        return Err(Rejection::new(
            409,
            "watch_not_due",
            format!("watch {id} is not due until {due}"),
        ));
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
pub(super) fn pause_failing(state: &State, ctx: &Ctx, id: Uuid) -> Result<Vec<Event>, Rejection> {
    let w = state.watches.get(&id).map(Arc::as_ref).ok_or_else(|| {
        Rejection::new(
            404,
            "watch_not_found",
            format!("watch {id} no longer exists"),
        )
    })?;
    let limit = ctx.rules.watch_failure_limit;
    if !w.is_active || w.consecutive_failures < limit {
        return Err(Rejection::new(
            409,
            "watch_not_failing",
            format!(
                "watch {id} is {} with {} consecutive failures (limit {limit})",
                if w.is_active { "active" } else { "paused" },
                w.consecutive_failures
            ),
        ));
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

//! Watches: recurring triggers that re-run a pipeline for a `source` into a `to_uri`.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use uuid::Uuid;

use super::Pipeline;
use super::refusal::WatchRefused;
use super::{
    Caller, Command, Ctx, Event, JobState, Millis, Principal, Refused, Reply, State, check_if_match,
};

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

/// Whether `value` is an absolute URI that starts with its scheme and holds no control
/// character; `too_long` and `not_uri` say which field it is. The URL parse alone would
/// forgive both (it drops leading control characters, and tabs and newlines anywhere), and
/// the watch would then be keyed by a `to_uri` other than the one its target reads.
fn validate_uri(
    value: &str,
    too_long: impl FnOnce(usize) -> WatchRefused,
    not_uri: impl FnOnce(String) -> WatchRefused,
) -> Result<(), WatchRefused> {
    if value.len() > MAX_URI_LEN {
        return Err(too_long(MAX_URI_LEN));
    }
    let scheme_first = value
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic());
    if !scheme_first
        || value.chars().any(|c| c.is_ascii_control())
        || value.trim() != value
        || url::Url::parse(value).is_err()
    {
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

/// Folds this aggregate's events into the state: the one place they change it.
pub(super) fn apply(state: &mut State, at: Millis, by: Principal, event: &Event) {
    match event {
        Event::WatchCreated {
            id,
            project,
            source,
            to_uri,
            watch_interval,
            is_active,
            reason,
            instruction,
            next_run_at,
        } => {
            state
                .watches_by_uri
                .entry(to_uri.clone())
                .or_default()
                .push(*id);
            state.watches.insert(
                *id,
                Arc::new(Watch {
                    id: *id,
                    project: project.clone(),
                    source: source.clone(),
                    to_uri: to_uri.clone(),
                    watch_interval: *watch_interval,
                    is_active: *is_active,
                    reason: reason.clone(),
                    instruction: instruction.clone(),
                    created_at: at,
                    created_by: by,
                    updated_at: at,
                    next_run_at: *next_run_at,
                    last_run: None,
                    consecutive_failures: 0,
                    pipeline: None,
                    fires: 0,
                    skipped_overlap: 0,
                    missed: 0,
                    version: 1,
                }),
            );
            state.reschedule(*id, None);
        }
        Event::WatchUpdated {
            id,
            watch_interval,
            is_active,
            reason,
            instruction,
            next_run_at,
        } => {
            let before = state.watches.get(id).and_then(|w| w.next_run_at);
            if let Some(w) = state.watches.get_mut(id).map(Arc::make_mut) {
                // Resuming starts a new streak: the failures that paused it are history.
                if *is_active == Some(true) && !w.is_active {
                    w.consecutive_failures = 0;
                    state.struggling.remove(id);
                }
                if let Some(v) = watch_interval {
                    w.watch_interval = *v;
                }
                if let Some(v) = is_active {
                    w.is_active = *v;
                }
                if let Some(v) = reason {
                    w.reason = v.clone();
                }
                if let Some(v) = instruction {
                    w.instruction = v.clone();
                }
                if let Some(v) = next_run_at {
                    w.next_run_at = *v;
                }
                w.updated_at = at;
                w.version += 1;
            }
            state.reschedule(*id, before);
        }
        Event::WatchDeleted { id, to_uri, .. } => {
            if let Some(at) = state.watches.remove(id).and_then(|w| w.next_run_at) {
                state.schedule.remove(&(at, *id));
            }
            state.struggling.remove(id);
            if let Some(ids) = state.watches_by_uri.get_mut(to_uri) {
                ids.retain(|x| x != id);
                if ids.is_empty() {
                    state.watches_by_uri.remove(to_uri);
                }
            }
        }
        Event::WatchFired { id, manual, missed } => {
            if let Some(w) = state.watches.get_mut(id).map(Arc::make_mut) {
                w.last_run = Some(super::LastRun {
                    at,
                    build_id: None,
                    outcome: super::RunOutcome::Triggered,
                    finished_at: None,
                    manual: *manual,
                    missed: *missed,
                });
                w.fires += 1;
            }
        }
        Event::WatchRan {
            id,
            manual,
            missed,
            build_id,
            next_run_at,
        } => {
            let before = state.watches.get(id).and_then(|w| w.next_run_at);
            let outcome = match build_id.and_then(|b| state.builds.get(&b).map(Arc::as_ref)) {
                Some(b) => super::RunOutcome::Build(state.build_state(b)),
                None => super::RunOutcome::Triggered,
            };
            if let Some(w) = state.watches.get_mut(id).map(Arc::make_mut) {
                w.last_run = Some(super::LastRun {
                    at,
                    build_id: *build_id,
                    outcome,
                    finished_at: None,
                    manual: *manual,
                    missed: *missed,
                });
                w.fires += 1;
                w.missed += u64::from(*missed);
                if let Some(n) = next_run_at {
                    w.next_run_at = Some(*n);
                }
            }
            state.reschedule(*id, before);
        }
        Event::WatchPipelineSet { id, pipeline } => {
            if let Some(w) = state.watches.get_mut(id).map(Arc::make_mut) {
                w.pipeline = pipeline.clone();
                w.updated_at = at;
                w.version += 1;
            }
        }
        Event::WatchSkipped { id, next_run_at } => {
            let before = state.watches.get(id).and_then(|w| w.next_run_at);
            if let Some(w) = state.watches.get_mut(id).map(Arc::make_mut) {
                w.skipped_overlap += 1;
                w.next_run_at = Some(*next_run_at);
            }
            state.reschedule(*id, before);
        }
        _ => {}
    }
}

impl State {
    /// Active watches whose next run has come by `at`, with that next run.
    pub fn due_watches(&self, at: Millis) -> impl Iterator<Item = (Millis, Uuid)> + '_ {
        self.schedule.range(..=(at, Uuid::max())).copied()
    }

    /// Active watches at or past the failure limit.
    pub fn failing_watches(&self, limit: u32) -> impl Iterator<Item = &Watch> {
        self.struggling
            .iter()
            .filter_map(|id| self.watches.get(id).map(Arc::as_ref))
            .filter(move |w| w.is_active && w.consecutive_failures >= limit)
    }

    /// When the next watch is due, if any is active.
    pub fn next_watch_run(&self) -> Option<Millis> {
        self.schedule.iter().next().map(|(at, _)| *at)
    }

    /// Keeps the schedule index in step with a watch's `next_run_at` and `is_active`.
    pub(super) fn reschedule(&mut self, id: Uuid, before: Option<Millis>) {
        if let Some(at) = before {
            self.schedule.remove(&(at, id));
        }
        if let Some(w) = self.watches.get(&id).map(Arc::as_ref)
            && w.is_active
            && let Some(at) = w.next_run_at
        {
            self.schedule.insert((at, id));
        }
    }

    /// A watch's last run follows the build it started; its failures in a row are counted
    /// as that build ends (and uncounted if a restart reopens it).
    pub(super) fn follow_watch_build(&mut self, at: Millis, build_id: Uuid) {
        let Some(build) = self.builds.get(&build_id).map(Arc::as_ref) else {
            return;
        };
        let super::Trigger::Watch(watch_id) = build.trigger else {
            return;
        };
        let now = super::RunOutcome::Build(self.build_state(build));
        let Some(w) = self.watches.get_mut(&watch_id).map(Arc::make_mut) else {
            return;
        };
        let Some(run) = w.last_run.as_mut().filter(|r| r.build_id == Some(build_id)) else {
            return;
        };
        let before = run.outcome;
        if before == now {
            return;
        }
        run.outcome = now;
        run.finished_at = (now != super::RunOutcome::Build(JobState::Running)).then_some(at);
        if before.failed() && !now.failed() {
            w.consecutive_failures = w.consecutive_failures.saturating_sub(1);
        }
        if now.failed() && !before.failed() {
            w.consecutive_failures += 1;
        }
        if now == super::RunOutcome::Build(JobState::Finished) {
            w.consecutive_failures = 0;
        }
        if w.consecutive_failures > 0 {
            self.struggling.insert(watch_id);
        } else {
            self.struggling.remove(&watch_id);
        }
    }
}

/// The answer to an accepted watch command: the watch as it now is, or what became of it.
pub(super) fn reply(state: &State, command: &Command, events: &[Event]) -> Option<Reply> {
    let watch = |id: &Uuid| state.watches.get(id).map(Arc::as_ref);
    let triggered = |id: &Uuid| {
        watch(id).map(|w| Reply::WatchTriggered {
            id: *id,
            to_uri: w.to_uri.clone(),
        })
    };
    match command {
        // A manual fire that starts a build leads with the build's events.
        Command::TriggerWatch { .. } => events.iter().find_map(|e| match e {
            Event::WatchRan { id, .. } | Event::WatchFired { id, .. } => triggered(id),
            _ => None,
        }),
        Command::CreateWatchWithPipeline { .. } | Command::UpdateWatchWithPipeline { .. } => {
            events.iter().find_map(|e| match e {
                Event::WatchCreated { id, .. }
                | Event::WatchUpdated { id, .. }
                | Event::WatchPipelineSet { id, .. } => watch(id).cloned().map(Reply::Watch),
                _ => None,
            })
        }
        _ => match events.first()? {
            Event::WatchCreated { id, .. } | Event::WatchUpdated { id, .. } => {
                watch(id).cloned().map(Reply::Watch)
            }
            Event::WatchDeleted { id, to_uri, .. } => Some(Reply::WatchDeleted {
                id: *id,
                to_uri: to_uri.clone(),
            }),
            Event::WatchFired { id, .. } => triggered(id),
            _ => None,
        },
    }
}

/// What a watch command acted on, for its audit entry: (target, project). Read before the
/// commit is folded, so a deleted watch can still be named; a refused command is named by
/// the key the caller gave.
pub(super) fn audit_target(
    state: &State,
    command: &Command,
    events: &[Event],
) -> (Option<String>, Option<String>) {
    let watch_project = |id: &Uuid| {
        state
            .watches
            .get(id)
            .map(Arc::as_ref)
            .map(|w| w.project.clone())
    };
    // A fire that starts a build leads with the build's events; the watch's comes last.
    let first = match command {
        Command::TriggerWatch { .. } => events.iter().rev().find(|e| {
            matches!(
                e,
                Event::WatchRan { .. } | Event::WatchUpdated { .. } | Event::WatchDeleted { .. }
            )
        }),
        _ => events.first(),
    };
    match (command, first) {
        (
            Command::CreateWatch(new) | Command::CreateWatchWithPipeline { watch: new, .. },
            Some(Event::WatchCreated { id, .. }),
        ) => (Some(format!("watch:{id}")), Some(new.project.clone())),
        (Command::CreateWatch(new) | Command::CreateWatchWithPipeline { watch: new, .. }, _) => (
            Some(format!("to_uri:{}", new.to_uri)),
            Some(new.project.clone()),
        ),
        (
            Command::UpdateWatch { .. }
            | Command::UpdateWatchWithPipeline { .. }
            | Command::DeleteWatch { .. }
            | Command::TriggerWatch { .. },
            Some(
                Event::WatchUpdated { id, .. }
                | Event::WatchDeleted { id, .. }
                | Event::WatchFired { id, .. }
                | Event::WatchRan { id, .. }
                | Event::WatchPipelineSet { id, .. },
            ),
        ) => (Some(format!("watch:{id}")), watch_project(id)),
        (
            Command::UpdateWatch { key, .. }
            | Command::UpdateWatchWithPipeline { key, .. }
            | Command::DeleteWatch { key, .. }
            | Command::TriggerWatch { key },
            _,
        ) => (
            Some(key.describe()),
            key.project
                .clone()
                .or_else(|| key.id.as_ref().and_then(watch_project)),
        ),
        (Command::FireWatch { id } | Command::PauseFailingWatch { id }, _) => {
            (Some(format!("watch:{id}")), watch_project(id))
        }
        _ => (None, None),
    }
}

/// Which watches a listing shows: those the caller may see, narrowed by project and state.
#[derive(Clone, Debug, Default)]
pub struct WatchFilter {
    pub project: Option<String>,
    pub active_only: bool,
}

/// One page of a watch listing, in creation order.
#[derive(Debug)]
pub struct WatchPage<'a> {
    pub watches: Vec<&'a Watch>,
    /// How many watches match, across all pages.
    pub total: usize,
    /// Where the next page starts (after this id), if there is one.
    pub next: Option<Uuid>,
}

impl State {
    /// The page of watches after `after` (a watch id; `None` from the start), at most `limit`.
    /// Every door lists watches with this, so they agree on what a caller sees.
    pub fn watches_page(
        &self,
        caller: &Caller<'_>,
        filter: &WatchFilter,
        after: Option<Uuid>,
        limit: usize,
    ) -> WatchPage<'_> {
        let keep = |w: &&Watch| {
            caller.sees_project(&w.project)
                && filter.project.as_ref().is_none_or(|p| *p == w.project)
                && (!filter.active_only || w.is_active)
        };
        let total = self.watches.values().map(Arc::as_ref).filter(keep).count();
        let mut watches: Vec<&Watch> = self
            .watches
            .values()
            .map(Arc::as_ref)
            .filter(keep)
            .filter(|w| after.is_none_or(|a| w.id > a))
            .take(limit.saturating_add(1))
            .collect();
        let next = if watches.len() > limit {
            watches.truncate(limit);
            watches.last().map(|w| w.id)
        } else {
            None
        };
        WatchPage {
            watches,
            total,
            next,
        }
    }
}

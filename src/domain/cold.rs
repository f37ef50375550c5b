//! Builds that have left memory. Memory holds live state: every build that is still running,
//! plus, per project, the [`HOT_ENDED_BUILDS`] newest builds that have ended. When a commit
//! ends one more, the fold moves the oldest ended build of that project out (with its jobs)
//! and hands it to the store ([`ColdOp::Evicted`]); reads fall back to the store through
//! [`History`]. A command that changes a cold build (abort it, restart or rerun one of its
//! jobs) carries the build back in its own commit ([`Event::BuildsRecalled`]), so the fold
//! never reads anything but the log. Which builds are hot is a pure function of the log, so
//! a replay and a start from a snapshot hold the same ones.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::refusal::InputRefused;
use super::{Build, Caller, Command, Event, Job, JobState, Millis, Refused, State};

/// How many ended builds of each project stay in memory. Part of the fold (it decides which
/// builds a digest names one by one), so it changes only with a new digest label.
pub const HOT_ENDED_BUILDS: usize = 64;

/// A build with every job it has had, superseded ones included, in the build's order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ColdBuild {
    pub build: Build,
    pub jobs: Vec<Job>,
}

impl ColdBuild {
    pub fn state(&self) -> JobState {
        super::derived_state(&self.jobs)
    }

    /// Marks these jobs' output pruned at `at` (what [`ColdOp::LogsPruned`] does to a record).
    pub fn mark_pruned(&mut self, jobs: &[Uuid], at: Millis) {
        for j in self.jobs.iter_mut().filter(|j| jobs.contains(&j.id)) {
            j.log_pruned_at.get_or_insert(at);
        }
    }

    /// Its jobs whose output retention may still prune: (end time, job).
    pub fn prunable(&self) -> impl Iterator<Item = (Millis, Uuid)> + '_ {
        self.jobs
            .iter()
            .filter_map(|j| keeps_output(j).map(|ended| (ended, j.id)))
    }
}

/// What a commit asks of the store that keeps cold builds, in commit order.
#[derive(Clone, Debug, PartialEq)]
pub enum ColdOp {
    /// This build left memory: keep it.
    Evicted(Arc<ColdBuild>),
    /// This build is back in memory: what retention still owes it is tracked there again.
    Recalled(Uuid),
    /// Retention deleted the output of these cold jobs at `at`.
    LogsPruned { jobs: Vec<Uuid>, at: Millis },
}

/// Count and order-free hash of the builds that are cold: what the digest covers of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColdTally {
    pub builds: u64,
    /// XOR of [`super::digest::cold_hash`] over the cold builds.
    pub hash: super::commit::Hash,
}

impl ColdTally {
    fn toggle(&mut self, cold: &ColdBuild) {
        let h = super::digest::cold_hash(cold);
        for (a, b) in self.hash.iter_mut().zip(h) {
            *a ^= b;
        }
    }
}

/// Where cold builds are read from (the store). Errors are the store's own words.
pub trait History {
    fn cold_build(&self, id: Uuid) -> Result<Option<ColdBuild>, String>;
    /// The build a cold job belongs to.
    fn cold_build_of_job(&self, job: Uuid) -> Result<Option<Uuid>, String>;
    /// Every cold generation of one build number.
    fn cold_generations(&self, project: &str, number: u64) -> Result<Vec<Uuid>, String>;
    /// A project's cold builds with `order` below `before`, newest first, at most `limit`.
    fn cold_builds(
        &self,
        project: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ColdBuild>, String>;
    /// Cold jobs whose output retention may prune (ended before `before`), oldest first.
    fn cold_prunable(&self, before: Millis, limit: usize) -> Result<Vec<Uuid>, String>;
}

/// A store with nothing cold: for folds that keep everything in memory.
pub struct NoHistory;

impl History for NoHistory {
    fn cold_build(&self, _: Uuid) -> Result<Option<ColdBuild>, String> {
        Ok(None)
    }
    fn cold_build_of_job(&self, _: Uuid) -> Result<Option<Uuid>, String> {
        Ok(None)
    }
    fn cold_generations(&self, _: &str, _: u64) -> Result<Vec<Uuid>, String> {
        Ok(Vec::new())
    }
    fn cold_builds(&self, _: &str, _: Option<u64>, _: usize) -> Result<Vec<ColdBuild>, String> {
        Ok(Vec::new())
    }
    fn cold_prunable(&self, _: Millis, _: usize) -> Result<Vec<Uuid>, String> {
        Ok(Vec::new())
    }
}

fn unreadable(what: String, why: String) -> Refused {
    InputRefused::HistoryUnreadable { what, why }.into()
}

/// Whether a job, once ended, still has output that retention may prune.
pub(super) fn keeps_output(j: &Job) -> Option<Millis> {
    (j.state.is_done() && j.lease.is_some() && j.log_pruned_at.is_none())
        .then_some(j.finished_at)
        .flatten()
}

impl State {
    /// The build a build or job event changes, if it changes one.
    pub(super) fn build_of_event(&self, e: &Event) -> Option<Uuid> {
        match e {
            Event::BuildCreated { id, .. } | Event::BuildAborted { id } => Some(*id),
            Event::JobsExpanded { build_id, .. } | Event::JobsCloned { build_id, .. } => {
                Some(*build_id)
            }
            Event::JobClaimed { id, .. }
            | Event::JobEnded { id, .. }
            | Event::LeaseRenewed { id, .. } => self.jobs.get(id).map(|j| j.build_id),
            _ => None,
        }
    }

    /// After a commit: the touched builds that have ended join their project's window, the
    /// ones that run again leave it, and each window is cut back to [`HOT_ENDED_BUILDS`] by
    /// moving its oldest builds out of memory.
    pub(super) fn settle(&mut self, touched: BTreeSet<Uuid>, out: &mut Vec<ColdOp>) {
        let mut projects = BTreeSet::new();
        for id in touched {
            let Some(b) = self.builds.get(&id) else {
                continue;
            };
            // A superseded job never runs again, even one still queued.
            let ended = !b.jobs.is_empty()
                && b.jobs.iter().all(|j| {
                    self.jobs
                        .get(j)
                        .is_none_or(|j| j.state.is_done() || j.superseded_by.is_some())
                });
            let key = (b.order, id);
            let project = b.project.clone();
            let window = self.ended.entry(project.clone()).or_default();
            if ended {
                window.insert(key);
                projects.insert(project);
            } else {
                window.remove(&key);
                if window.is_empty() {
                    self.ended.remove(&project);
                }
            }
        }
        for project in projects {
            while let Some(window) = self.ended.get_mut(&project)
                && window.len() as u64 > self.hot_window
                && let Some((_, id)) = window.remove_min()
            {
                if let Some(cold) = self.evict(id) {
                    out.push(ColdOp::Evicted(Arc::new(cold)));
                }
            }
        }
    }

    /// Takes a build and its jobs out of every map.
    fn evict(&mut self, id: Uuid) -> Option<ColdBuild> {
        let build = self.builds.remove(&id)?;
        let mut jobs = Vec::with_capacity(build.jobs.len());
        for jid in &build.jobs {
            let Some(j) = self.jobs.remove(jid) else {
                continue;
            };
            self.children.remove(jid);
            self.queue.remove(&j.order);
            if let Some(lease) = &j.lease {
                self.leases.remove(&(lease.expires_at, *jid));
            }
            if let Some(ended) = j.finished_at {
                self.log_expiry.remove(&(ended, *jid));
            }
            jobs.push(Arc::unwrap_or_clone(j));
        }
        let key = (build.project.clone(), build.number);
        if let Some(gens) = self.builds_by_number.get_mut(&key) {
            gens.retain(|g| *g != id);
            if gens.is_empty() {
                self.builds_by_number.remove(&key);
            }
        }
        let cold = ColdBuild {
            build: Arc::unwrap_or_clone(build),
            jobs,
        };
        self.cold.builds += 1;
        self.cold.toggle(&cold);
        Some(cold)
    }

    /// Puts a cold build back in every map (the fold of [`Event::BuildsRecalled`]).
    pub(super) fn recall(&mut self, cold: &ColdBuild) {
        let id = cold.build.id;
        if self.builds.contains_key(&id) {
            return;
        }
        self.builds_by_number
            .entry((cold.build.project.clone(), cold.build.number))
            .or_default()
            .push(id);
        self.builds.insert(id, Arc::new(cold.build.clone()));
        for j in &cold.jobs {
            for d in &j.depends_on {
                self.children.entry(d.job_id).or_default().push(j.id);
            }
            match j.state {
                JobState::Queued | JobState::Scheduled => {
                    self.queue.insert(j.order, j.id);
                }
                JobState::Running => {
                    if let Some(lease) = &j.lease {
                        self.leases.insert((lease.expires_at, j.id));
                    }
                }
                _ => {}
            }
            if let Some(ended) = keeps_output(j) {
                self.log_expiry.insert((ended, j.id));
            }
            self.jobs.insert(j.id, Arc::new(j.clone()));
        }
        self.cold.builds = self.cold.builds.saturating_sub(1);
        self.cold.toggle(cold);
    }

    /// A copy of this state with these cold builds back in memory: what the writer decides a
    /// command against when the command names one.
    pub fn with_recalled(&self, builds: &[ColdBuild]) -> State {
        let mut s = self.clone();
        for b in builds {
            s.recall(b);
        }
        s
    }

    /// The cold builds among `recalled` that `events` change: what the commit must carry back.
    pub fn recalls_needed(&self, recalled: &[ColdBuild], events: &[Event]) -> Vec<ColdBuild> {
        let touched: BTreeSet<Uuid> = events
            .iter()
            .filter_map(|e| self.build_of_event(e))
            .collect();
        recalled
            .iter()
            .filter(|b| touched.contains(&b.build.id))
            .cloned()
            .collect()
    }

    /// A build as it is now, from memory or the store, if it is in `project` and the caller
    /// may see that project.
    pub fn find_build(
        &self,
        history: &dyn History,
        caller: &Caller<'_>,
        project: &str,
        id: Uuid,
    ) -> Result<ColdBuild, Refused> {
        if let Ok(b) = self.visible_build(caller, project, id) {
            return Ok(self.hot_build(b));
        }
        self.project_visible(caller, project)?;
        history
            .cold_build(id)
            .map_err(|why| unreadable(format!("build {id}"), why))?
            .filter(|b| b.build.project == project)
            .ok_or_else(|| super::build::build_not_found(id).into())
    }

    /// A job as it is now, from memory or the store, if its build is in `project` and the
    /// caller may see that project.
    pub fn find_job(
        &self,
        history: &dyn History,
        caller: &Caller<'_>,
        project: &str,
        id: Uuid,
    ) -> Result<Job, Refused> {
        if let Ok(j) = self.visible_job(caller, project, id) {
            return Ok(j.clone());
        }
        self.project_visible(caller, project)?;
        let missing = || super::build::job_not_found(id);
        let Some(build) = history
            .cold_build_of_job(id)
            .map_err(|why| unreadable(format!("job {id}"), why))?
        else {
            return Err(missing().into());
        };
        history
            .cold_build(build)
            .map_err(|why| unreadable(format!("build {build}"), why))?
            .filter(|b| b.build.project == project)
            .and_then(|b| b.jobs.into_iter().find(|j| j.id == id))
            .ok_or_else(|| missing().into())
    }

    /// One page of a project's builds, newest first (`order` below `before`), from memory and
    /// the store together, and whether more follow.
    pub fn builds_page(
        &self,
        history: &dyn History,
        caller: &Caller<'_>,
        project: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<(Build, JobState)>, bool), Refused> {
        self.project_visible(caller, project)?;
        let mut page: Vec<(Build, JobState)> = self
            .builds
            .values()
            .filter(|b| b.project == project && before.is_none_or(|c| b.order < c))
            .map(|b| ((**b).clone(), self.build_state(b)))
            .collect();
        page.sort_by_key(|(b, _)| std::cmp::Reverse(b.order));
        page.truncate(limit + 1);
        let cold = history
            .cold_builds(project, before, limit + 1)
            .map_err(|why| unreadable(format!("the builds of project {project:?}"), why))?;
        // A build recalled since the store wrote it is in both; memory has it as it is now.
        for c in cold {
            if !self.builds.contains_key(&c.build.id) {
                let state = c.state();
                page.push((c.build, state));
            }
        }
        page.sort_by_key(|(b, _)| std::cmp::Reverse(b.order));
        let more = page.len() > limit;
        page.truncate(limit);
        Ok((page, more))
    }

    /// A hot build with its jobs, copied out.
    pub fn hot_build(&self, b: &Build) -> ColdBuild {
        ColdBuild {
            build: b.clone(),
            jobs: b
                .jobs
                .iter()
                .filter_map(|j| self.jobs.get(j).map(|j| (**j).clone()))
                .collect(),
        }
    }
}

/// The build or job a command names, for the writer to bring back from the store when it is
/// cold. Jobs and builds that are running are always in memory, so this matters only for
/// commands about ended ones (and their refusals read the same as before they went cold).
pub enum Names {
    Build { id: Uuid },
    Job(Uuid),
}

pub fn names(cmd: &Command) -> Option<Names> {
    match cmd.effective() {
        Command::RestartBuild { build, .. } | Command::AbortBuild { build, .. } => {
            Some(Names::Build { id: *build })
        }
        Command::RestartJob { job, .. }
        | Command::RerunJob { job, .. }
        | Command::AbortJob { job, .. }
        | Command::Heartbeat { job, .. }
        | Command::FinishJob { job, .. }
        | Command::ExpandJobs { job, .. } => Some(Names::Job(*job)),
        _ => None,
    }
}

/// The cold builds `cmd` needs in memory to be decided: the build it names (or its job's),
/// with every cold generation of that build's number (a restart numbers the next one).
pub fn to_recall(
    state: &State,
    history: &dyn History,
    cmd: &Command,
) -> Result<Vec<ColdBuild>, String> {
    let id = match names(cmd) {
        None => return Ok(Vec::new()),
        Some(Names::Build { id }) => id,
        Some(Names::Job(job)) => {
            if state.jobs.contains_key(&job) {
                return Ok(Vec::new());
            }
            match history.cold_build_of_job(job)? {
                Some(b) => b,
                None => return Ok(Vec::new()),
            }
        }
    };
    if state.builds.contains_key(&id) {
        return Ok(Vec::new());
    }
    let Some(first) = history.cold_build(id)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for g in history.cold_generations(&first.build.project, first.build.number)? {
        if g != id
            && !state.builds.contains_key(&g)
            && let Some(b) = history.cold_build(g)?
        {
            out.push(b);
        }
    }
    out.insert(0, first);
    Ok(out)
}

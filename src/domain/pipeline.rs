//! Pipelines: the job graph a build expands into, and the rules a graph must satisfy.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::JobState;
use super::refusal::InputRefused;

/// The name of every build's first job, which expands the pipeline.
pub const CREATE_JOBS: &str = "Create Jobs";

/// A parent state a dependency accepts. `Any` is `"*"`.
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
pub enum Accept {
    Finished,
    Failure,
    Error,
    Killed,
    Skipped,
    #[serde(rename = "*")]
    Any,
}

impl Accept {
    pub fn accepts(self, state: JobState) -> bool {
        match self {
            Accept::Any => state.is_done(),
            Accept::Finished => state == JobState::Finished,
            Accept::Failure => state == JobState::Failure,
            Accept::Error => state == JobState::Error,
            Accept::Killed => state == JobState::Killed,
            Accept::Skipped => state == JobState::Skipped,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dependency {
    pub job: String,
    pub on: Vec<Accept>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub name: String,
    pub run: String,
    pub depends_on: Vec<Dependency>,
    pub env: BTreeMap<String, String>,
    pub timeout_seconds: Option<u64>,
}

/// What a build runs. Persisted: new kinds of pipeline are new variants at the end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pipeline {
    Jobs(Vec<JobSpec>),
    /// A shell command whose stdout is the pipeline: Create Jobs runs it on a runner.
    Generate(String),
}

pub const MAX_RUN_LEN: usize = super::bounds::RUN;

/// A job name is one or more `/`-separated segments of `[a-z0-9_-]`. Clones add `.N` to the
/// last segment, which is why `.` is not allowed in names people write.
pub fn valid_name(name: &str) -> bool {
    name.len() <= super::bounds::JOB_NAME
        && name.split('/').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        })
}

fn invalid(reason: String) -> InputRefused {
    InputRefused::InvalidPipeline { reason }
}

/// Checks a pipeline: names, duplicates, unknown and self dependencies, cycles, size.
pub fn validate(pipeline: &Pipeline, max_jobs: usize) -> Result<(), InputRefused> {
    let jobs = match pipeline {
        Pipeline::Jobs(jobs) => jobs,
        Pipeline::Generate(command) => {
            if command.trim().is_empty() || command.len() > MAX_RUN_LEN {
                return Err(invalid(format!(
                    "\"generate\" needs a command of 1 to {MAX_RUN_LEN} bytes that prints the pipeline as JSON"
                )));
            }
            return Ok(());
        }
    };
    if jobs.is_empty() {
        return Err(invalid(
            "the pipeline has no jobs; give at least one in \"jobs\"".into(),
        ));
    }
    if jobs.len() > max_jobs {
        return Err(InputRefused::TooManyJobs {
            jobs: jobs.len(),
            max: max_jobs,
        });
    }
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, job) in jobs.iter().enumerate() {
        if job.name == CREATE_JOBS {
            return Err(invalid(format!(
                "job name {CREATE_JOBS:?} is reserved for the job that expands the pipeline; rename it"
            )));
        }
        if !valid_name(&job.name) {
            return Err(invalid(format!(
                "job name {:?} must be /-separated segments of a-z, 0-9, '_' and '-', e.g. \"test/unit\"",
                job.name
            )));
        }
        if job.run.trim().is_empty() || job.run.len() > MAX_RUN_LEN {
            return Err(invalid(format!(
                "job {:?} needs a \"run\" command of 1 to {MAX_RUN_LEN} bytes",
                job.name
            )));
        }
        if index.insert(&job.name, i).is_some() {
            return Err(invalid(format!("job name {:?} is used twice", job.name)));
        }
    }
    for job in jobs {
        for dep in &job.depends_on {
            if dep.job == job.name {
                return Err(invalid(format!("job {:?} depends on itself", job.name)));
            }
            if !index.contains_key(dep.job.as_str()) {
                return Err(invalid(format!(
                    "job {:?} depends on {:?}, which is not in the pipeline",
                    job.name, dep.job
                )));
            }
            if dep.on.is_empty() {
                return Err(invalid(format!(
                    "job {:?}: the dependency on {:?} accepts no state; leave \"on\" out for [\"finished\"]",
                    job.name, dep.job
                )));
            }
        }
    }
    if let Some(cycle) = find_cycle(jobs, &index) {
        return Err(invalid(format!(
            "the pipeline has a cycle: {}",
            cycle.join(" -> ")
        )));
    }
    Ok(())
}

/// A dependency cycle as a path of names (first name repeated at the end), if there is one.
fn find_cycle<'a>(jobs: &'a [JobSpec], index: &HashMap<&str, usize>) -> Option<Vec<&'a str>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut mark = vec![Mark::New; jobs.len()];
    // Iterative DFS over "depends on" edges, keeping the open path for reporting.
    for start in 0..jobs.len() {
        if mark[start] != Mark::New {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        mark[start] = Mark::Open;
        while let Some((node, edge)) = stack.last_mut() {
            let deps = &jobs[*node].depends_on;
            if *edge < deps.len() {
                let next = index[deps[*edge].job.as_str()];
                *edge += 1;
                match mark[next] {
                    Mark::New => {
                        mark[next] = Mark::Open;
                        stack.push((next, 0));
                    }
                    Mark::Open => {
                        let from = stack.iter().position(|(n, _)| *n == next).unwrap_or(0);
                        let mut path: Vec<&str> = stack[from..]
                            .iter()
                            .map(|(n, _)| jobs[*n].name.as_str())
                            .collect();
                        path.push(jobs[next].name.as_str());
                        return Some(path);
                    }
                    Mark::Done => {}
                }
            } else {
                mark[*node] = Mark::Done;
                stack.pop();
            }
        }
    }
    None
}

/// Names clones within one build: the last segment's `.N` suffix goes up by one from the
/// highest used (`foo` → `foo.1` → `foo.2`, never `foo.1.1`).
pub struct CloneNamer {
    /// `dir/base` (or `base`) → the highest suffix in use (0 for the bare name).
    highest: HashMap<String, u64>,
}

impl CloneNamer {
    pub fn new<'a>(existing: impl IntoIterator<Item = &'a str>) -> CloneNamer {
        let mut highest: HashMap<String, u64> = HashMap::new();
        for name in existing {
            let (stem, n) = stem_and_suffix(name);
            let h = highest.entry(stem).or_insert(0);
            *h = (*h).max(n);
        }
        CloneNamer { highest }
    }

    pub fn next(&mut self, name: &str) -> String {
        let (stem, _) = stem_and_suffix(name);
        let h = self.highest.entry(stem.clone()).or_insert(0);
        *h += 1;
        format!("{stem}.{h}")
    }
}

fn stem_and_suffix(name: &str) -> (String, u64) {
    let (dir, last) = match name.rsplit_once('/') {
        Some((d, l)) => (Some(d), l),
        None => (None, name),
    };
    let (base, n) = split_suffix(last);
    match dir {
        Some(d) => (format!("{d}/{base}"), n),
        None => (base.to_string(), n),
    }
}

/// The name a clone of `name` gets in a build that already has `existing` names.
pub fn clone_name<'a>(name: &str, existing: impl Iterator<Item = &'a str>) -> String {
    CloneNamer::new(existing).next(name)
}

fn split_suffix(segment: &str) -> (&str, u64) {
    match segment.rsplit_once('.') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            (base, n.parse().unwrap_or(0))
        }
        _ => (segment, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, deps: &[&str]) -> JobSpec {
        JobSpec {
            name: name.into(),
            run: "true".into(),
            depends_on: deps
                .iter()
                .map(|d| Dependency {
                    job: d.to_string(),
                    on: vec![Accept::Finished],
                })
                .collect(),
            env: BTreeMap::new(),
            timeout_seconds: None,
        }
    }

    #[test]
    fn clone_names_count_up_on_the_last_segment() {
        assert_eq!(clone_name("foo", ["foo"].into_iter()), "foo.1");
        assert_eq!(clone_name("foo.1", ["foo", "foo.1"].into_iter()), "foo.2");
        assert_eq!(clone_name("a.1/b", ["a.1/b"].into_iter()), "a.1/b.1");
        assert_eq!(
            clone_name("a/b.2", ["a/b", "a/b.1", "a/b.2", "c/b.7"].into_iter()),
            "a/b.3"
        );
    }

    #[test]
    fn a_cycle_is_reported_as_its_path() {
        let p = Pipeline::Jobs(vec![job("a", &["c"]), job("b", &["a"]), job("c", &["b"])]);
        let err = validate(&p, 300).unwrap_err();
        assert_eq!(err.code(), "invalid_pipeline");
        assert!(err.to_string().contains("a -> c -> b -> a"), "{err}");
    }

    #[test]
    fn a_diamond_is_fine() {
        let p = Pipeline::Jobs(vec![
            job("top", &[]),
            job("l", &["top"]),
            job("r", &["top"]),
            job("bottom", &["l", "r"]),
        ]);
        assert!(validate(&p, 300).is_ok());
    }
}

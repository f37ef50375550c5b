use super::*;
use crate::domain::{BuildRefused, JobState, Trigger};

fn with_build() -> Given {
    given()
        .system(create_project("web"))
        .system(trigger_build("web", vec![job("a", &[]), job("b", &["a"])]))
}

fn restart_job(job: Uuid) -> Command {
    Command::RestartJob {
        project: "web".into(),
        job,
        if_match: None,
    }
}

#[test]
fn a_triggered_build_is_number_one_of_its_project_and_expands_at_once() {
    let events = given()
        .system(create_project("web"))
        .when(
            Principal::System,
            Plane::Rest,
            trigger_build("web", vec![job("a", &[])]),
        )
        .accepted();
    match events.as_slice() {
        [
            Event::BuildCreated {
                id: b,
                project,
                number: 1,
                restart_counter: 1,
                trigger: Trigger::Api,
                restarted_from: None,
                ..
            },
            Event::JobsExpanded { build_id, jobs },
        ] => {
            assert_eq!((*b, project.as_str(), *build_id), (id(1), "web", id(1)));
            assert_eq!(
                jobs.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(),
                ["a"]
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_build_needs_a_pipeline() {
    given()
        .system(create_project("web"))
        .when_system(Command::TriggerBuild {
            project: "web".into(),
            pipeline: None,
            env: BTreeMap::new(),
        })
        .then_refused(BuildRefused::NoPipeline {
            project: "web".into(),
        });
    given()
        .when_system(trigger_build("web", vec![job("a", &[])]))
        .then_refused(BuildRefused::ProjectNotFound {
            project: "web".into(),
        });
}

#[test]
fn only_an_ended_job_restarts() {
    let g = with_build();
    let a = job_id(&g, "a");
    g.when_system(restart_job(a))
        .then_refused(BuildRefused::JobNotTerminal {
            id: a,
            state: "queued",
        });
}

#[test]
fn create_jobs_restarts_only_with_its_build() {
    let g = with_build();
    let cj = job_id(&g, crate::domain::pipeline::CREATE_JOBS);
    g.when_system(restart_job(cj))
        .then_refused(BuildRefused::CreateJobsNotRestartable);
}

#[test]
fn aborting_kills_what_has_not_ended_and_nothing_in_it_runs_again() {
    let g = with_build();
    let (a, b) = (job_id(&g, "a"), job_id(&g, "b"));
    let abort = Command::AbortBuild {
        project: "web".into(),
        build: id(1),
        if_match: None,
    };
    let killed = |id| Event::JobEnded {
        id,
        state: JobState::Killed,
        exit_code: None,
        message: Some("aborted".into()),
    };
    with_build().when_system(abort.clone()).then_events(vec![
        Event::BuildAborted { id: id(1) },
        killed(a),
        killed(b),
    ]);
    g.system(abort)
        .when_system(restart_job(a))
        .then_refused(BuildRefused::BuildAborted);
}

#[test]
fn a_build_or_job_of_another_project_is_not_found() {
    let g = with_build().system(create_project("ops"));
    let a = job_id(&g, "a");
    g.when_system(Command::RerunJob {
        project: "ops".into(),
        job: a,
        if_match: None,
    })
    .then_refused(BuildRefused::JobNotFound { id: a });
    with_build()
        .system(create_project("ops"))
        .when_system(Command::RestartBuild {
            project: "ops".into(),
            build: id(1),
            if_match: None,
        })
        .then_refused(BuildRefused::BuildNotFound { id: id(1) });
}

#[test]
fn retention_prunes_only_what_has_already_ended() {
    let time = |ms| {
        format!(
            "{:.3}",
            jiff::Timestamp::from_millisecond(ms).expect("a time")
        )
    };
    given()
        .when_system(Command::PruneJobLogs {
            before: T0 + 10_000,
        })
        .then_refused(BuildRefused::InvalidCutoff {
            before: time(T0 + 10_000),
            at: time(T0),
        });
    given()
        .when_system(Command::PruneJobLogs { before: T0 })
        .then_events(vec![]);
}

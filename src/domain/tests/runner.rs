use super::*;
use crate::domain::{BuildRefused, JobState, RunnerRefused};

const LEASE: Millis = 60_000;

fn with_build() -> Given {
    given()
        .system(create_project("web"))
        .system(trigger_build("web", vec![job("a", &[]), job("b", &["a"])]))
}

fn claim() -> Command {
    Command::ClaimJob { labels: vec![] }
}

fn finish(job: Uuid, lease_id: Uuid, state: JobState) -> Command {
    Command::FinishJob {
        job,
        lease_id,
        state,
        exit_code: Some(0),
        message: None,
    }
}

#[test]
fn a_claim_takes_the_oldest_ready_job_with_a_fresh_lease() {
    let g = with_build();
    let (a, at) = (job_id(&g, "a"), g.now());
    g.when(Principal::System, Plane::Runner, claim())
        .then_events(vec![Event::JobClaimed {
            id: a,
            lease_id: id(2),
            lease_expires_at: at + LEASE,
        }]);
}

#[test]
fn nothing_ready_nothing_claimed() {
    given()
        .when(Principal::System, Plane::Runner, claim())
        .then_refused(RunnerRefused::NothingToClaim);
    // b waits for a.
    with_build()
        .did(Principal::System, Plane::Runner, claim())
        .when(Principal::System, Plane::Runner, claim())
        .then_refused(RunnerRefused::NothingToClaim);
}

#[test]
fn only_the_lease_holder_reports() {
    let g = with_build().did(Principal::System, Plane::Runner, claim());
    let a = job_id(&g, "a");
    g.when(
        Principal::System,
        Plane::Runner,
        finish(a, id(99), JobState::Finished),
    )
    .then_refused(RunnerRefused::StaleLease {
        lease_id: id(99),
        id: a,
    });
    with_build()
        .when(
            Principal::System,
            Plane::Runner,
            finish(id(98), id(99), JobState::Finished),
        )
        .then_refused(BuildRefused::JobNotFound { id: id(98) });
}

#[test]
fn a_job_ends_in_an_end_state() {
    let g = with_build().did(Principal::System, Plane::Runner, claim());
    let a = job_id(&g, "a");
    g.when(
        Principal::System,
        Plane::Runner,
        finish(a, id(2), JobState::Queued),
    )
    .then_refused(RunnerRefused::InvalidState);
}

#[test]
fn a_failed_job_skips_what_needed_it_to_finish() {
    let g = with_build().did(Principal::System, Plane::Runner, claim());
    let (a, b) = (job_id(&g, "a"), job_id(&g, "b"));
    let events = g
        .when(
            Principal::System,
            Plane::Runner,
            finish(a, id(2), JobState::Failure),
        )
        .accepted();
    let ended: Vec<(Uuid, JobState)> = events
        .iter()
        .filter_map(|e| match e {
            Event::JobEnded { id, state, .. } => Some((*id, *state)),
            _ => None,
        })
        .collect();
    assert_eq!(ended, [(a, JobState::Failure), (b, JobState::Skipped)]);
}

#[test]
fn a_lease_without_heartbeats_ends_the_job_in_error() {
    let g = with_build().did(Principal::System, Plane::Runner, claim());
    let (a, b) = (job_id(&g, "a"), job_id(&g, "b"));
    g.later(LEASE)
        .when_system(Command::ExpireLeases)
        .then_events(vec![
            Event::JobEnded {
                id: a,
                state: JobState::Error,
                exit_code: None,
                message: Some("runner lost".into()),
            },
            Event::JobEnded {
                id: b,
                state: JobState::Skipped,
                exit_code: None,
                message: Some("skipped: a ended error".into()),
            },
        ]);
}

#[test]
fn only_create_jobs_uploads_a_pipeline() {
    let g = with_build().did(Principal::System, Plane::Runner, claim());
    let a = job_id(&g, "a");
    g.when(
        Principal::System,
        Plane::Runner,
        Command::ExpandJobs {
            job: a,
            lease_id: id(2),
            pipeline: Some(Pipeline::Jobs(vec![job("c", &[])])),
            error: None,
        },
    )
    .then_refused(RunnerRefused::NotCreateJobs);
}

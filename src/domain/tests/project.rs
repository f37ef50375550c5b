use super::*;
use crate::domain::{AccessRefused, ProjectRefused};

#[test]
fn creating_a_project_names_it_after_its_id() {
    given()
        .when_system(create_project("web"))
        .then_events(vec![Event::ProjectCreated {
            id: "web".into(),
            name: "web".into(),
        }]);
}

#[test]
fn a_project_id_is_a_slug() {
    given()
        .when_system(create_project("Web Team"))
        .then_refused(ProjectRefused::InvalidId {
            id: "Web Team".into(),
        });
}

#[test]
fn a_project_id_is_taken_once() {
    given()
        .system(create_project("web"))
        .when_system(create_project("web"))
        .then_refused(ProjectRefused::Exists { id: "web".into() });
}

#[test]
fn only_an_admin_creates_projects() {
    given()
        .system(issue_token(1, TokenKind::Api, true, &[]))
        .when(Principal::Token(id(0)), Plane::Rest, create_project("web"))
        .then_refused(AccessRefused::AdminRequired);
}

#[test]
fn an_update_must_change_something_in_a_project_that_exists() {
    let update = |id: &str| Command::UpdateProject {
        id: id.into(),
        name: None,
        default_pipeline: None,
    };
    given()
        .when_system(update("web"))
        .then_refused(ProjectRefused::NotFound { id: "web".into() });
    given()
        .system(create_project("web"))
        .when_system(update("web"))
        .then_refused(ProjectRefused::NothingToChange);
}

#[test]
fn a_default_pipeline_is_checked_before_it_is_kept() {
    given()
        .system(create_project("web"))
        .when_system(Command::UpdateProject {
            id: "web".into(),
            name: None,
            default_pipeline: Some(Some(Pipeline::Jobs(vec![job("a", &["b"])]))),
        })
        .then_refused(crate::domain::InputRefused::InvalidPipeline {
            reason: "job \"a\" depends on \"b\", which is not in the pipeline".into(),
        });
}

//! Projects: the unit of ownership and scope.

use super::{Ctx, Event, Millis, Pipeline, Principal, Rejection, State};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub created_at: Millis,
    pub created_by: Principal,
    /// What a build runs when it is triggered without a pipeline.
    pub default_pipeline: Option<Pipeline>,
    /// Builds numbered so far (the next is `builds + 1`).
    pub builds: u64,
}

pub const MAX_NAME_LEN: usize = super::bounds::PROJECT_NAME;

/// A project id is a slug: 1 to 63 characters of `[a-z0-9-]`.
pub fn valid_slug(id: &str) -> bool {
    (1..=super::bounds::PROJECT_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

pub(super) fn create(state: &State, id: &str, name: Option<&str>) -> Result<Vec<Event>, Rejection> {
    if !valid_slug(id) {
        return Err(Rejection::invalid(
            "invalid_project_id",
            "id",
            format!(
                "project id {id:?} must be 1-63 characters of a-z, 0-9 and '-', e.g. \"web-team\""
            ),
        ));
    }
    let name = name.unwrap_or(id);
    if name.chars().count() > MAX_NAME_LEN {
        return Err(Rejection::invalid(
            "invalid_name",
            "name",
            format!("name must be at most {MAX_NAME_LEN} characters"),
        ));
    }
    if state.projects.contains_key(id) {
        return Err(Rejection::new(
            409,
            "project_exists",
            format!("project {id:?} already exists; pick another id"),
        ));
    }
    Ok(vec![Event::ProjectCreated {
        id: id.to_string(),
        name: name.to_string(),
    }])
}

pub(super) fn update(
    state: &State,
    ctx: &Ctx,
    id: &str,
    name: Option<&str>,
    default_pipeline: Option<&Option<Pipeline>>,
) -> Result<Vec<Event>, Rejection> {
    if !state.projects.contains_key(id) {
        return Err(Rejection::new(
            404,
            "project_not_found",
            format!("no project {id:?}; GET /api/v1/projects lists yours"),
        ));
    }
    if name.is_none() && default_pipeline.is_none() {
        return Err(Rejection::new(
            422,
            "nothing_to_change",
            "the body changes nothing; give name or default_pipeline",
        ));
    }
    if name.is_some_and(|n| n.is_empty() || n.chars().count() > MAX_NAME_LEN) {
        return Err(Rejection::invalid(
            "invalid_name",
            "name",
            format!("name must be 1 to {MAX_NAME_LEN} characters"),
        ));
    }
    if let Some(Some(p)) = default_pipeline {
        super::pipeline::validate(p, ctx.rules.max_jobs)?;
    }
    Ok(vec![Event::ProjectUpdated {
        id: id.to_string(),
        name: name.map(str::to_string),
        default_pipeline: default_pipeline.cloned(),
    }])
}

//! Projects: the unit of ownership and scope.

use super::refusal::ProjectRefused;
use super::{Command, Ctx, Event, Millis, Pipeline, Principal, Refused, Reply, State};

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

pub(super) fn create(state: &State, id: &str, name: Option<&str>) -> Result<Vec<Event>, Refused> {
    if !valid_slug(id) {
        return Err(ProjectRefused::InvalidId { id: id.to_string() }.into());
    }
    let name = name.unwrap_or(id);
    if name.chars().count() > MAX_NAME_LEN {
        return Err(ProjectRefused::NameTooLong { max: MAX_NAME_LEN }.into());
    }
    if state.projects.contains_key(id) {
        return Err(ProjectRefused::Exists { id: id.to_string() }.into());
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
) -> Result<Vec<Event>, Refused> {
    if !state.projects.contains_key(id) {
        return Err(ProjectRefused::NotFound { id: id.to_string() }.into());
    }
    if name.is_none() && default_pipeline.is_none() {
        return Err(ProjectRefused::NothingToChange.into());
    }
    if name.is_some_and(|n| n.is_empty() || n.chars().count() > MAX_NAME_LEN) {
        return Err(ProjectRefused::NameEmptyOrTooLong { max: MAX_NAME_LEN }.into());
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

/// Folds this aggregate's events into the state: the one place they change it.
pub(super) fn apply(state: &mut State, at: Millis, by: Principal, event: &Event) {
    match event {
        Event::ProjectCreated { id, name } => {
            state.projects.insert(
                id.clone(),
                Project {
                    id: id.clone(),
                    name: name.clone(),
                    created_at: at,
                    created_by: by,
                    default_pipeline: None,
                    builds: 0,
                },
            );
        }
        Event::ProjectUpdated {
            id,
            name,
            default_pipeline,
        } => {
            if let Some(p) = state.projects.get_mut(id) {
                if let Some(n) = name {
                    p.name = n.clone();
                }
                if let Some(d) = default_pipeline {
                    p.default_pipeline = d.clone();
                }
            }
        }
        _ => {}
    }
}

/// The answer to an accepted project command: the project as it now is.
pub(super) fn reply(state: &State, command: &Command, events: &[Event]) -> Option<Reply> {
    let id = match (command, events.first()) {
        (Command::UpdateProject { id, .. }, _) | (_, Some(Event::ProjectCreated { id, .. })) => id,
        _ => return None,
    };
    state.projects.get(id).cloned().map(Reply::Project)
}

/// What a project command acted on, for its audit entry: (target, project).
pub(super) fn audit_target(command: &Command) -> (Option<String>, Option<String>) {
    match command {
        Command::CreateProject { id, .. } | Command::UpdateProject { id, .. } => {
            (Some(format!("project:{id}")), Some(id.clone()))
        }
        _ => (None, None),
    }
}

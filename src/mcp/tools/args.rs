//! Arguments that several tools take alike.

use schemars::JsonSchema;
use serde::Deserialize;

// A watch named by id or by `to_uri` (`resume_watch`, `trigger_watch`). Plain comments on
// argument types: a doc comment would become the schema's description.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct WatchAction {
    /// The watch's id (a UUID). Give this or to_uri.
    pub(super) id: Option<String>,
    /// The watch's target URI. Give this or id.
    pub(super) to_uri: Option<String>,
    pub(super) project: Option<String>,
    pub(super) idempotency_key: Option<String>,
}

// A build of a project (`restart_build`, `abort_build`).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BuildAction {
    pub(super) project: String,
    /// The build's id (a UUID).
    pub(super) build: String,
    pub(super) idempotency_key: Option<String>,
}

// A job of a project (`restart_job`, `rerun_job`, `abort_job`).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct JobAction {
    pub(super) project: String,
    /// The job's id (a UUID).
    pub(super) job: String,
    pub(super) idempotency_key: Option<String>,
}

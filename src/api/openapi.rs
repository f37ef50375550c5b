//! The OpenAPI document, generated from the handlers' annotations so it cannot drift from the
//! routes.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{audit, builds, events, problem, projects, runner, tokens, watches, whoami};

#[derive(OpenApi)]
#[openapi(
    info(title = "reeve", description = "An event-sourced control plane for jobs and watches. Errors are application/problem+json with a stable `code`. A request to the REST routes may carry `Reeve-Plane: cli` (the reeve command line sends it) or `Reeve-Plane: web` (the console sends it) to be admitted and audited on that plane; any other value of that header is 400 `invalid_header`."),
    paths(
        super::healthz,
        watches::list_or_lookup, watches::show, watches::create, watches::update,
        watches::update_by_uri, watches::delete, watches::delete_by_uri, watches::trigger,
        watches::trigger_by_uri,
        projects::list, projects::show, projects::create, projects::update,
        builds::list, builds::show, builds::show_job, builds::job_log, builds::trigger, builds::restart_build,
        builds::abort_build, builds::restart_job, builds::rerun_job, builds::abort_job,
        runner::claim, runner::heartbeat, runner::finish, runner::append_log, runner::upload_pipeline,
        tokens::list, tokens::create, tokens::revoke, whoami::whoami,
        audit::list, audit::export, audit::digest,
        events::stream,
    ),
    components(schemas(problem::ProblemDoc)),
    modifiers(&Bearer, &McpNamespace),
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// The MCP REST namespace serves five of the build verbs with the same handlers; document them
/// by mirroring the plain operations (aborts answer DELETE there).
struct McpNamespace;

impl Modify for McpNamespace {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::HttpMethod;
        let verbs = [
            (
                "/projects/{project}/builds/{build}/restart",
                HttpMethod::Post,
                HttpMethod::Post,
            ),
            (
                "/projects/{project}/builds/{build}/abort",
                HttpMethod::Post,
                HttpMethod::Delete,
            ),
            (
                "/projects/{project}/jobs/{job}/restart",
                HttpMethod::Post,
                HttpMethod::Post,
            ),
            (
                "/projects/{project}/jobs/{job}/rerun",
                HttpMethod::Post,
                HttpMethod::Post,
            ),
            (
                "/projects/{project}/jobs/{job}/abort",
                HttpMethod::Post,
                HttpMethod::Delete,
            ),
        ];
        for (path, from, to) in verbs {
            let Some(item) = openapi.paths.paths.get(&format!("/api/v1{path}")) else {
                continue;
            };
            let op = match from {
                HttpMethod::Post => item.post.clone(),
                _ => None,
            };
            if let Some(mut op) = op {
                op.tags = Some(vec!["mcp".to_string()]);
                op.operation_id = op.operation_id.map(|id| format!("mcp_{id}"));
                op.description = Some(
                    "MCP tokens only (kind mcp); spends the token's trigger bucket; audited with plane mcp."
                        .to_string(),
                );
                openapi
                    .paths
                    .add_path_operation(format!("/api/v1/mcp{path}"), vec![to], op);
            }
        }
    }
}

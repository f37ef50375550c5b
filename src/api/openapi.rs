//! The OpenAPI document, generated from the handlers' annotations so it cannot drift from the
//! routes.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{audit, problem, projects, tokens, watches};

#[derive(OpenApi)]
#[openapi(
    info(title = "reeve", description = "An event-sourced control plane for jobs and watches. Errors are application/problem+json with a stable `code`."),
    paths(
        super::healthz,
        watches::list_or_lookup, watches::show, watches::create, watches::update,
        watches::update_by_uri, watches::delete, watches::delete_by_uri, watches::trigger,
        watches::trigger_by_uri,
        projects::list, projects::show, projects::create,
        tokens::list, tokens::create, tokens::revoke,
        audit::list,
    ),
    components(schemas(problem::ProblemDoc)),
    modifiers(&Bearer),
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

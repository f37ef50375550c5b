//! `GET /api/v1/whoami`: the token a request carries, as the server sees it. The console
//! reads it after sign-in to offer only what the token may do (no action for a read-only
//! token, the audit trail and tokens for an admin); scripts can check a token with it.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use super::problem::ProblemDoc;
use super::tokens::TokenView;
use super::{AppState, Problem, read, rest_plane};

pub fn routes() -> Router<AppState> {
    Router::new().route("/whoami", get(whoami))
}

#[derive(Serialize, ToSchema)]
pub struct Whoami {
    /// `token:<id>`.
    pub principal: String,
    /// The plane this request was admitted on: rest, cli or web (see `Reeve-Plane`).
    pub plane: String,
    /// Whether the token may read the audit trail and manage projects and tokens.
    pub admin: bool,
    pub token: TokenView,
}

#[utoipa::path(get, path = "/api/v1/whoami", tag = "tokens",
    responses(
        (status = 200, description = "The token this request carries (never its secret)", body = Whoami),
        (status = 400, description = "invalid_header", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "mcp_token_not_allowed, runner_token_not_allowed", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn whoami(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Whoami>, Problem> {
    let plane = rest_plane(&headers)?;
    read(&app, &headers, |_, caller| {
        let token = caller.token.ok_or_else(|| {
            Problem::internal("a request was admitted without a token; this is a bug in reeve")
        })?;
        Ok(Json(Whoami {
            principal: caller.principal.to_string(),
            plane: plane.as_str().to_string(),
            admin: caller.is_admin(),
            token: TokenView::from(token),
        }))
    })
}

//! RFC 9457 problem details: every error reeve answers, with a stable `code`.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::control::ControlError;
use crate::domain::Rejection;

pub const CONTENT_TYPE: &str = "application/problem+json";

#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub status: StatusCode,
    pub code: String,
    pub detail: String,
    pub field: Option<String>,
    /// Extra headers, e.g. `Retry-After` on a 429.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// The wire shape of a problem, for the OpenAPI document.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ProblemDoc {
    /// `urn:reeve:problem:<code>`
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable, machine-readable: switch on this, not on `detail`.
    pub code: String,
    /// The request field at fault, for validation errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            code: code.to_string(),
            detail: detail.into(),
            field: None,
            headers: Vec::new(),
        }
    }

    pub fn bad_request(code: &str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn internal(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
    }
}

impl From<Rejection> for Problem {
    fn from(r: Rejection) -> Problem {
        let detail = match next_step(&r.code) {
            Some(step) if !r.reason.contains(step) => format!("{}; {step}", r.reason),
            _ => r.reason,
        };
        Problem {
            status: StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code: r.code,
            detail,
            field: r.field,
            headers: Vec::new(),
        }
    }
}

/// The domain says what is wrong; a REST caller also gets where to go next, in routes.
fn next_step(code: &str) -> Option<&'static str> {
    Some(match code {
        "project_not_found" => "GET /api/v1/projects lists yours",
        "watch_not_found" => "GET /api/v1/watches lists the watches you can see",
        "build_not_found" => "GET /api/v1/projects/{project}/builds lists them",
        "job_not_found" => "GET /api/v1/projects/{project}/builds/{build} lists a build's jobs",
        "token_not_found" => "GET /api/v1/tokens lists them",
        "unknown_project" => "POST /api/v1/projects creates one",
        "log_pruned" => {
            "GET /api/v1/projects/{project}/jobs/{job} shows its state, exit code and message"
        }
        "no_pipeline" => "PATCH /api/v1/projects/{project} sets a default pipeline",
        "create_jobs_not_restartable" => "POST /api/v1/projects/{project}/builds/{build}/restart",
        "mcp_token_not_allowed" => "those are /mcp and /api/v1/mcp",
        "ambiguous_to_uri" => "add project=<id>",
        "watch_key_required" => "use /watches/{id} or ?to_uri=<uri>",
        "invalid_interval" => "to stop a watch instead, PATCH it with is_active=false",
        "precondition_failed" => "GET it again for its ETag",
        _ => return None,
    })
}

/// Every typed refusal reaches a REST caller as its wire form, with the REST next step.
macro_rules! from_refusal {
    ($($t:ty),*) => {$(
        impl From<$t> for Problem {
            fn from(r: $t) -> Problem {
                Problem::from(Rejection::from(r))
            }
        }
    )*};
}

from_refusal!(
    crate::domain::Refused,
    crate::domain::AccessRefused,
    crate::domain::InputRefused,
    crate::domain::ProjectRefused,
    crate::domain::TokenRefused,
    crate::domain::WatchRefused,
    crate::domain::BuildRefused,
    crate::domain::RunnerRefused
);

impl From<ControlError> for Problem {
    fn from(e: ControlError) -> Problem {
        tracing::error!(error = %e, "command not recorded");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = ProblemDoc {
            type_: format!("urn:reeve:problem:{}", self.code),
            title: self
                .status
                .canonical_reason()
                .unwrap_or("Error")
                .to_string(),
            status: self.status.as_u16(),
            detail: self.detail,
            code: self.code,
            field: self.field,
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut resp = (self.status, bytes).into_response();
        let headers = resp.headers_mut();
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"reeve\""),
            );
        }
        resp
    }
}

//! One tool call in flight: who made it and what it said, and how it becomes its commit.

use rmcp::ErrorData as McpError;
use rmcp::RoleServer;
use rmcp::service::RequestContext;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::super::{Identity, InvalidParams};
use crate::api::AppState;
use crate::control::Submission;
use crate::domain::{Command, Plane, Principal, Refusal, Rejection, Reply, bounds};

/// One call in flight: who made it and what it said, for its commit.
pub(super) struct Call<'a> {
    pub(super) app: &'a AppState,
    pub(super) principal: Principal,
    pub(super) request_id: String,
    pub(super) tool: String,
    pub(super) arguments: String,
    pub(super) invalid_params: Option<InvalidParams>,
}

pub(super) fn identity(ctx: &RequestContext<RoleServer>) -> Result<(Principal, String), McpError> {
    let parts = ctx.extensions.get::<axum::http::request::Parts>();
    let principal = parts
        .and_then(|p| p.extensions.get::<Identity>())
        .map(|i| i.0)
        .ok_or_else(|| {
            McpError::internal_error("the request reached a tool unauthenticated", None)
        })?;
    let request_id = parts
        .and_then(|p| p.headers.get("x-request-id"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Ok((principal, request_id))
}

/// The flag the gate reads once the call is answered (see `InvalidParams`).
pub(super) fn invalid_params(ctx: &RequestContext<RoleServer>) -> Option<InvalidParams> {
    ctx.extensions
        .get::<axum::http::request::Parts>()
        .and_then(|p| p.extensions.get::<InvalidParams>())
        .cloned()
}

fn unrecorded(e: crate::control::ControlError) -> McpError {
    tracing::error!(error = %e, "MCP call not recorded");
    McpError::internal_error(
        format!("reeve could not record this call ({e}); nothing was done; retry later"),
        None,
    )
}

impl Call<'_> {
    /// Records a call that changes nothing. The answer is the record's: a call whose
    /// arguments are over their limits is recorded as refused for that (`field_too_long`).
    pub(super) async fn record(
        &self,
        project: Option<String>,
        target: Option<String>,
        refusal: Option<&Rejection>,
    ) -> Result<Result<Reply, Rejection>, McpError> {
        let command = Command::McpCall {
            tool: self.tool.clone(),
            arguments: self.arguments.clone(),
            project,
            target,
            refusal: refusal.map(|r| Refusal {
                status: r.status,
                code: r.code.clone(),
                reason: r.reason.clone(),
            }),
        };
        self.submit(None, command).await
    }

    async fn submit(
        &self,
        idempotency_key: Option<String>,
        command: Command,
    ) -> Result<Result<Reply, Rejection>, McpError> {
        let submitted = self
            .app
            .control
            .submit(Submission {
                principal: self.principal,
                plane: Plane::Mcp,
                request_id: self.request_id.clone(),
                idempotency_key,
                command,
            })
            .await
            .map_err(unrecorded)?;
        if submitted.seq.is_none() {
            // An idempotent replay answers from memory without a commit of its own; the agent
            // still called the tool, so the call is recorded (as one that changed nothing).
            let again = Command::McpCall {
                tool: self.tool.clone(),
                arguments: self.arguments.clone(),
                project: None,
                target: None,
                refusal: None,
            };
            self.app
                .control
                .submit(Submission {
                    principal: self.principal,
                    plane: Plane::Mcp,
                    request_id: self.request_id.clone(),
                    idempotency_key: None,
                    command: again,
                })
                .await
                .map_err(unrecorded)?;
        }
        Ok(submitted.result)
    }

    /// Submits a write tool's command. Arguments that did not make a command are recorded as
    /// the refusal they are.
    pub(super) async fn write(
        &self,
        idempotency_key: Option<String>,
        command: Result<Command, Rejection>,
    ) -> Result<Result<Reply, Rejection>, McpError> {
        let key = idempotency_key.map(check_key).transpose();
        let (command, key) = match (command, key) {
            (Ok(c), Ok(k)) => (c, k),
            (Err(r), _) | (_, Err(r)) => (
                Command::Malformed {
                    op: self.tool.clone(),
                    admin_only: false,
                    status: r.status,
                    code: r.code,
                    detail: r.reason,
                },
                None,
            ),
        };
        let wrapped = Command::McpWrite {
            tool: self.tool.clone(),
            arguments: self.arguments.clone(),
            command: Box::new(command),
        };
        self.submit(key, wrapped).await
    }

    /// A call that does not fit (no such tool, or arguments the tool's schema rejects):
    /// recorded, then a JSON-RPC -32602 (HTTP 400 on 2026-07-28, see `InvalidParams`).
    pub(super) async fn malformed(&self, code: &str, detail: String) -> McpError {
        let refusal = Rejection::new(400, code, detail.clone());
        let message = match self.record(None, None, Some(&refusal)).await {
            Err(e) => return e,
            Ok(Err(r)) if r.code == bounds::FIELD_TOO_LONG => format!("{} [{}]", r.reason, r.code),
            Ok(_) => detail,
        };
        if let Some(flag) = &self.invalid_params {
            flag.raise();
        }
        McpError::invalid_params(message, None)
    }

    pub(super) async fn parse<T: DeserializeOwned>(&self, args: &Value) -> Result<T, McpError> {
        match serde_json::from_value(args.clone()) {
            Ok(v) => Ok(v),
            Err(e) => Err(self
                .malformed(
                    "invalid_arguments",
                    format!(
                        "the arguments do not fit {}: {e}; tools/list has its inputSchema",
                        self.tool
                    ),
                )
                .await),
        }
    }
}

fn check_key(key: String) -> Result<String, Rejection> {
    if !key.is_empty()
        && key.len() <= bounds::IDEMPOTENCY_KEY
        && key.bytes().all(|b| b.is_ascii_graphic())
    {
        Ok(key)
    } else {
        Err(Rejection::invalid(
            "invalid_idempotency_key",
            "idempotency_key",
            "idempotency_key must be 1-255 visible ASCII characters, e.g. a UUID",
        ))
    }
}

//! reeve: an event-sourced control plane for jobs and watches.
//!
//! Every change is a [`domain::Command`] submitted to [`control::Control`], which decides it
//! against the current [`domain::State`], appends one hash-chained [`log::Commit`] to the log
//! (a write-ahead log in front of a redb file), and folds it into the state with
//! [`domain::State::apply`]. Everything readable is a projection of that log.
//!
//! - [`log`]: the commit record, its encoding and hash chain, the write-ahead log and the redb
//!   store.
//! - [`domain`]: the pure core — commands, events, `decide`, `apply`. No I/O, no clock.
//! - [`control`]: the single writer: decide, group-commit, apply, answer.
//! - [`auth`]: token secrets and how a bearer token becomes a principal.
//! - [`limits`]: rate limits per token and bucket.
//! - [`api`]: the REST surface (`/api/v1`), problem+json errors, the OpenAPI document.
//! - [`mcp`]: the MCP endpoint (`/mcp`): the same commands and projections as tools for agents.
//! - [`console`]: the web console at `/`, a client of the REST API embedded in the binary.
//! - [`runner`]: runs claimed jobs as process groups; `reeve runner` and the embedded runners.
//! - [`server`]: configuration, bootstrap (the first admin token), serve, the timers (lease
//!   expiry, job log retention), graceful shutdown.
//! - [`cli`]: the `reeve` command line: `serve`, `runner`, and the client commands (`watch`,
//!   `project`, `build`, `job`, `token`) that drive a server over REST.
//!
//! # Example
//!
//! The front doors (REST, and later MCP, the scheduler and runners) all come down to this:
//! submit a command, get an answer once its commit is durable, read the projection.
//!
//! ```
//! use reeve::control::{Control, Options, Submission};
//! use reeve::domain::{Command, Plane, Principal, Reply};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let control = Control::open(dir.path(), Options::default())?;
//! let submitted = control
//!     .submit(Submission {
//!         principal: Principal::System,
//!         plane: Plane::System,
//!         request_id: "example".into(),
//!         idempotency_key: None,
//!         command: Command::CreateProject { id: "docs".into(), name: None },
//!     })
//!     .await?;
//! assert_eq!(submitted.seq, Some(1));
//! assert!(matches!(submitted.result, Ok(Reply::Project(_))));
//! assert!(control.state().projects.contains_key("docs"));
//!
//! // A refusal is a commit too, with its reason.
//! let again = control
//!     .submit(Submission {
//!         principal: Principal::System,
//!         plane: Plane::System,
//!         request_id: "example".into(),
//!         idempotency_key: None,
//!         command: Command::CreateProject { id: "docs".into(), name: None },
//!     })
//!     .await?;
//! assert_eq!(again.seq, Some(2));
//! assert_eq!(again.result.unwrap_err().code, "project_exists");
//! control.close().await;
//! # Ok(())
//! # }
//! ```

pub mod api;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod console;
pub mod control;
pub mod domain;
pub mod limits;
pub mod log;
pub mod mcp;
pub mod runner;
pub mod server;

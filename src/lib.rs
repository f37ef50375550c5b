//! reeve: an event-sourced control plane for jobs and watches.
//!
//! Every change is a [`domain::Command`] submitted to [`control::Control`], which decides it
//! against the current [`domain::State`], appends one hash-chained [`log::Commit`] to the sled
//! log, and folds it into the state with [`domain::State::apply`]. Everything readable is a
//! projection of that log.
//!
//! - [`log`]: the commit record, its encoding and hash chain, and the sled store.
//! - [`domain`]: the pure core — commands, events, `decide`, `apply`. No I/O, no clock.
//! - [`control`]: the single writer: decide, group-commit, apply, answer.
//! - [`auth`]: token secrets and how a bearer token becomes a principal.
//! - [`api`]: the REST surface (`/api/v1`), problem+json errors, the OpenAPI document.
//! - [`server`]: configuration, bootstrap (the first admin token), serve, graceful shutdown.
//! - [`cli`]: the `reeve` command line.

pub mod api;
pub mod auth;
pub mod cli;
pub mod control;
pub mod domain;
pub mod log;
pub mod server;

//! `cancel_watch`: delete a watch for good; one already gone is not an error.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::call::Call;
use super::{Answer, Kind, Spec, Tools, ok, tool_error, unexpected};
use crate::domain::{Command, Reply, WatchKey};

pub(super) struct Tool;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CancelWatch {
    /// The target URI of the watch to cancel.
    to_uri: String,
    /// The watch's project, when to_uri is used in several.
    project: Option<String>,
    idempotency_key: Option<String>,
}

#[derive(Serialize, JsonSchema)]
pub(super) struct Cancelled {
    to_uri: String,
    /// False when there was no such watch (already cancelled, or never there).
    cancelled: bool,
    id: Option<Uuid>,
    detail: String,
}

impl Spec for Tool {
    const NAME: &'static str = "cancel_watch";
    const TITLE: &'static str = "Cancel a watch";
    const DESCRIPTION: &'static str = "Delete the watch with this to_uri for good. Cancelling a watch that is already gone \
             says so and is not an error. To stop it for a while, use pause_watch.";
    const KIND: Kind = Kind::Write;
    const DESTRUCTIVE: bool = true;
    const IDEMPOTENT: bool = true;
    type Args = CancelWatch;
    type Output = Cancelled;

    async fn run(_: &Tools, call: &Call<'_>, a: CancelWatch) -> Answer {
        let to_uri = a.to_uri.clone();
        let command = Command::DeleteWatch {
            key: WatchKey {
                id: None,
                to_uri: Some(a.to_uri),
                project: a.project,
            },
            if_match: None,
        };
        match call.write(a.idempotency_key, Ok(command)).await? {
            Ok(Reply::WatchDeleted { id, to_uri }) => {
                let detail = format!("cancelled watch {to_uri} ({id})");
                ok(
                    &Cancelled {
                        to_uri,
                        cancelled: true,
                        id: Some(id),
                        detail: detail.clone(),
                    },
                    detail,
                )
            }
            Ok(other) => Err(unexpected(&other)),
            // Cancelling is idempotent: what is gone stays gone.
            Err(r) if r.code == "watch_not_found" => {
                let detail = format!(
                    "there is no watch with to_uri {to_uri} (already cancelled, or never created); nothing to do"
                );
                ok(
                    &Cancelled {
                        to_uri,
                        cancelled: false,
                        id: None,
                        detail: detail.clone(),
                    },
                    detail,
                )
            }
            Err(r) => Ok(tool_error(&r)),
        }
    }
}

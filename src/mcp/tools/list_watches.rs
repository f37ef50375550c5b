//! `list_watches`: the watches a token can see, one line each.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::call::Call;
use super::{Answer, Kind, Spec, Tools, count, json, minutes};
use crate::api::watches::WatchView;
use crate::domain::{Rejection, WatchFilter};

pub(super) struct Tool;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ListWatches {
    /// Only watches in this project.
    project: Option<String>,
    /// Only active (not paused) watches.
    active_only: Option<bool>,
    /// At most this many (1-500, default 100).
    limit: Option<usize>,
}

#[derive(Serialize, JsonSchema)]
pub(super) struct WatchList {
    watches: Vec<WatchView>,
    /// How many watches match, beyond the limit too.
    total: usize,
}

impl Spec for Tool {
    const NAME: &'static str = "list_watches";
    const TITLE: &'static str = "List watches";
    const DESCRIPTION: &'static str =
        "Watches this token can see, oldest first; filter by project and to active ones.";
    const KIND: Kind = Kind::Read;
    const IDEMPOTENT: bool = true;
    type Args = ListWatches;
    type Output = WatchList;

    async fn run(tools: &Tools, call: &Call<'_>, a: ListWatches) -> Answer {
        let limit = a.limit.unwrap_or(100);
        tools
            .answer(call, a.project.clone(), None, |state, caller| {
                if !(1..=500).contains(&limit) {
                    return Err(Rejection::invalid(
                        "invalid_limit",
                        "limit",
                        "limit must be between 1 and 500",
                    ));
                }
                if let Some(p) = &a.project {
                    state.project_visible(caller, p)?;
                }
                let filter = WatchFilter {
                    project: a.project.clone(),
                    active_only: a.active_only.unwrap_or(false),
                };
                let page = state.watches_page(caller, &filter, None, limit);
                let total = page.total;
                let watches: Vec<WatchView> =
                    page.watches.into_iter().map(WatchView::from).collect();
                let mut text = count(total, "watch", "watches");
                for w in &watches {
                    text.push('\n');
                    text.push_str(&watch_line(w));
                }
                Ok((json(&WatchList { watches, total })?, text))
            })
            .await
    }
}

fn watch_line(w: &WatchView) -> String {
    format!(
        "- {}  every {}  {}  next {}",
        w.to_uri,
        minutes(w.watch_interval),
        if w.is_active { "active" } else { "paused" },
        w.next_run_at.as_deref().unwrap_or("-"),
    )
}

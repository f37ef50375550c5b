//! `GET /api/v1/cluster` (admin): who leads, every node and how far it has applied the log,
//! and the stream's replicas. A single node answers too, as a cluster of itself.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use super::{AppState, Problem, admin_read};
use crate::control::NodeInfo;

pub fn routes() -> Router<AppState> {
    Router::new().route("/cluster", get(status))
}

#[derive(Serialize, ToSchema)]
pub struct ClusterView {
    /// `single` (one node on its own log) or `cluster`.
    pub mode: String,
    /// The node that answered.
    pub node: String,
    /// The node that leads, as its key names it; null while none does.
    pub leader: Option<NodeView>,
    pub nodes: Vec<NodeView>,
    /// The log's stream; null on a single node.
    pub stream: Option<StreamView>,
}

#[derive(Serialize, ToSchema)]
pub struct NodeView {
    pub name: String,
    /// `host:port` of its HTTP API (empty on a single node).
    pub addr: String,
    /// The last commit it has applied.
    pub applied_seq: u64,
    pub leads: bool,
}

impl From<&NodeInfo> for NodeView {
    fn from(n: &NodeInfo) -> NodeView {
        NodeView {
            name: n.name.clone(),
            addr: n.addr.clone(),
            applied_seq: n.applied_seq,
            leads: n.leads,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct StreamView {
    pub last_seq: u64,
    pub replicas: usize,
    /// The NATS server that leads the stream.
    pub leader: Option<String>,
    pub peers: Vec<PeerView>,
}

#[derive(Serialize, ToSchema)]
pub struct PeerView {
    pub name: String,
    /// Holds everything the stream's leader has.
    pub current: bool,
}

#[utoipa::path(get, path = "/api/v1/cluster", tag = "cluster",
    responses(
        (status = 200, body = ClusterView),
    ))]
pub async fn status(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<ClusterView>, Problem> {
    let view = admin_read(&app, &headers, |state, _| {
        Ok(match app.control.cluster() {
            None => ClusterView {
                mode: "single".into(),
                node: "local".into(),
                leader: None,
                nodes: vec![NodeView {
                    name: "local".into(),
                    addr: String::new(),
                    applied_seq: state.head_seq,
                    leads: true,
                }],
                stream: None,
            },
            Some(link) => {
                let s = link.snapshot.read();
                ClusterView {
                    mode: "cluster".into(),
                    node: s.node.clone(),
                    leader: s.leader.as_ref().map(NodeView::from),
                    // Which node leads is the leader key's word: a node's own report of it
                    // is up to one renewal old, and two reports may briefly both say yes (or
                    // neither) across a failover.
                    nodes: s
                        .nodes
                        .iter()
                        .map(|n| NodeView {
                            leads: s.leader.as_ref().is_some_and(|l| l.name == n.name),
                            ..NodeView::from(n)
                        })
                        .collect(),
                    stream: s.stream.as_ref().map(|st| StreamView {
                        last_seq: st.last_seq,
                        replicas: st.replicas,
                        leader: st.leader.clone(),
                        peers: st
                            .peers
                            .iter()
                            .map(|(name, current)| PeerView {
                                name: name.clone(),
                                current: *current,
                            })
                            .collect(),
                    }),
                }
            }
        })
    })?;
    Ok(Json(view))
}

//! Cluster mode: several reeve nodes on one log, a JetStream stream (`log/jetstream.rs`).
//!
//! - **One writer.** Nodes elect a leader through a key in a JetStream key-value bucket whose
//!   entries expire after [`LEASE`]: the node that creates the key leads, and keeps leading
//!   while it renews the key by its revision. Only the leader decides and appends, and every
//!   append names the seq it follows, so a leader that was deposed without noticing (paused,
//!   cut off) cannot append: it steps down on the first refusal (`control.rs`).
//! - **Every node follows.** Each node reads the stream from its own head and writes and
//!   applies what it lacks, so every node answers reads from its own projections.
//! - **Any node takes writes.** A mutation sent to a follower is forwarded to the leader over
//!   HTTP; the follower answers once it has applied the leader's commit, so a client reads its
//!   own writes on whichever node it asks next. Without a leader, mutations get 503 with
//!   `Retry-After`, at once.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use axum::body::Body;
use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use parking_lot::RwLock;
use tokio::sync::watch;

use crate::api::Problem;
use crate::control::{ClusterLink, ClusterSnapshot, Control, NodeInfo};
use crate::log::jetstream::StreamLog;

/// The stream that holds the log.
pub const STREAM: &str = "REEVE_LOG";
/// The stream that holds job output.
pub const OUTPUT_STREAM: &str = "REEVE_OUTPUT";
/// The bucket with the leader's key, and the one where nodes say who they are.
const LEADER_BUCKET: &str = "REEVE_LEADER";
const NODES_BUCKET: &str = "REEVE_NODES";
const LEADER_KEY: &str = "leader";
/// How long a leader's key lives without a renewal: after this, another node may lead.
pub const LEASE: Duration = Duration::from_secs(3);
/// How often the leader renews its key, and nodes report themselves.
const RENEW: Duration = Duration::from_millis(750);
/// How long a follower waits to have applied a forwarded command's commit.
const APPLY_WAIT: Duration = Duration::from_secs(10);
/// How long a forwarded request may take at the leader: a runner's claim waits there for work
/// (up to a minute), so this is longer than any request reeve holds open.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(90);

/// The header a forwarded request carries (the forwarding node's name): the leader serves it
/// and never forwards it again.
pub const FORWARDED: HeaderName = HeaderName::from_static("reeve-forwarded");
/// The head seq of the answering node's log when it answered.
pub const HEAD: HeaderName = HeaderName::from_static("reeve-head");

#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// NATS servers, `nats://host:port`.
    pub servers: Vec<String>,
    /// This node's name in the cluster (default: its HTTP address).
    pub node_name: String,
    /// Where other nodes reach this node's HTTP API (`host:port`).
    pub advertise: String,
}

/// This node's part in the cluster.
pub struct Node {
    pub config: ClusterConfig,
    pub link: Arc<ClusterLink>,
    leader_kv: kv::Store,
    nodes_kv: kv::Store,
    /// The leader as last seen (from its key), `None` while there is none.
    leader: RwLock<Option<NodeInfo>>,
    http: reqwest::Client,
}

fn failed(what: &str, e: impl std::fmt::Display) -> crate::log::LogError {
    crate::log::LogError::Failed(format!("NATS cluster: {what}: {e}"))
}

/// A key-value bucket whose entries live `max_age` after their last write. The bucket is a
/// stream made here the way the client library would make it: its own `create_key_value`
/// first reads the account's limits, whose answer from a NATS 2.9 server it cannot parse.
async fn bucket(
    js: &jetstream::Context,
    name: &str,
    max_age: Duration,
    replicas: usize,
) -> Result<kv::Store, crate::log::LogError> {
    use jetstream::stream;
    let config = stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_messages: -1,
        max_bytes: -1,
        max_age,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    };
    let mut tries = 0;
    loop {
        match js.get_or_create_stream(config.clone()).await {
            Ok(_) => break,
            Err(e) if tries < 50 => {
                tries += 1;
                tracing::debug!(error = %e, bucket = name, "the bucket is not ready yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(failed(name, e)),
        }
    }
    js.get_key_value(name).await.map_err(|e| failed(name, e))
}

impl Node {
    /// Connects to the cluster: the log's stream and the two buckets.
    pub async fn connect(
        config: ClusterConfig,
    ) -> Result<(Node, Arc<ClusterLink>), crate::log::LogError> {
        let log = StreamLog::open(&config.servers, STREAM).await?;
        let replicas = config.servers.len().clamp(1, 3);
        let js = jetstream::new(log.client());
        let leader_kv = bucket(&js, LEADER_BUCKET, LEASE, replicas).await?;
        let nodes_kv = bucket(&js, NODES_BUCKET, LEASE * 3, replicas).await?;
        let output =
            crate::log::jetstream::JobLogStream::open(&log, OUTPUT_STREAM, replicas).await?;
        let link = Arc::new(ClusterLink {
            snapshot: RwLock::new(ClusterSnapshot {
                node: config.node_name.clone(),
                ..ClusterSnapshot::default()
            }),
            output,
            log,
            runtime: tokio::runtime::Handle::current(),
            leading: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        });
        let node = Node {
            config,
            link: link.clone(),
            leader_kv,
            nodes_kv,
            leader: RwLock::new(None),
            http: reqwest::Client::builder()
                .timeout(FORWARD_TIMEOUT)
                .build()
                .map_err(|e| failed("an HTTP client", e))?,
        };
        Ok((node, link))
    }

    pub fn leader(&self) -> Option<NodeInfo> {
        self.leader.read().clone()
    }

    fn me(&self, control: &Control) -> NodeInfo {
        NodeInfo {
            name: self.config.node_name.clone(),
            addr: self.config.advertise.clone(),
            applied_seq: control.state().head_seq,
            leads: control.leads(),
        }
    }

    /// Brings this node's log up to the stream's head before it serves.
    pub async fn catch_up(&self, control: &Control) -> Result<(), crate::log::LogError> {
        let (head, hash) = {
            let s = control.state();
            (s.head_seq, s.head_hash)
        };
        let last = self.link.log.status().await?.last_seq;
        if head > last {
            return Err(crate::log::LogError::Failed(format!(
                "this node's log reaches commit {head} but the cluster's stream ends at {last}: this data dir is not from this cluster (or the stream was lost); start with an empty data dir to rebuild it from the stream"
            )));
        }
        let commits = self.link.log.read_records(head + 1, hash).await?;
        let target = commits.last().map_or(head, |(c, _)| c.seq);
        for chunk in commits.chunks(512) {
            control
                .replicate(chunk.to_vec())
                .await
                .map_err(|e| crate::log::LogError::Failed(e.to_string()))?;
        }
        let mut changes = control.subscribe();
        while control.state().head_seq < target {
            if changes.changed().await.is_err() {
                break;
            }
        }
        let applied = control.state().head_seq;
        if applied < target {
            return Err(crate::log::LogError::Failed(format!(
                "this node applied the cluster's log up to commit {applied} of {target}; see the errors above"
            )));
        }
        Ok(())
    }

    /// Follows the stream, the election and the node registry until `stop`.
    pub async fn run(self: Arc<Self>, control: Arc<Control>, stop: watch::Receiver<bool>) {
        let follow = tokio::spawn(self.clone().follow(control.clone(), stop.clone()));
        let output = tokio::spawn(self.clone().follow_output(control.clone(), stop.clone()));
        let elect = tokio::spawn(self.clone().elect(control.clone(), stop.clone()));
        let _ = follow.await;
        let _ = elect.await;
        let _ = output.await;
        // A node that stops leading lets the others take over at once, not after the lease.
        if control.leads() {
            self.link.leading.store(false, Ordering::Release);
            if let Ok(Some(entry)) = self.leader_kv.entry(LEADER_KEY).await {
                let _ = self
                    .leader_kv
                    .delete_expect_revision(LEADER_KEY, Some(entry.revision))
                    .await;
            }
        }
    }

    /// Reads every commit this node does not have, as the stream gets it.
    async fn follow(self: Arc<Self>, control: Arc<Control>, mut stop: watch::Receiver<bool>) {
        loop {
            let (head, hash) = {
                let s = control.state();
                (s.head_seq, s.head_hash)
            };
            match self.link.log.follow_records(head + 1, hash).await {
                Ok(stream) => {
                    let mut stream = std::pin::pin!(stream);
                    loop {
                        let next = tokio::select! {
                            _ = stopped(&mut stop) => return,
                            next = stream.next() => next,
                        };
                        match next {
                            Some(Ok(commit)) => {
                                if control.replicate(vec![commit]).await.is_err() {
                                    return;
                                }
                            }
                            Some(Err(e)) => {
                                tracing::error!(error = %e, "following the cluster's log failed; starting again from this node's head");
                                break;
                            }
                            None => break,
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot follow the cluster's log yet"),
            }
            tokio::select! {
                _ = stopped(&mut stop) => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// Copies job output from the output stream into this node's store, from the start of
    /// the stream on every start (a chunk written again is harmless). Output of a job whose
    /// log was pruned is not copied back.
    async fn follow_output(
        self: Arc<Self>,
        control: Arc<Control>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut next = 1;
        loop {
            match self.link.output.follow(next).await {
                Ok(stream) => {
                    let mut stream = std::pin::pin!(stream);
                    loop {
                        let chunk = tokio::select! {
                            _ = stopped(&mut stop) => return,
                            chunk = stream.next() => chunk,
                        };
                        match chunk {
                            Some(Ok(c)) => {
                                next = c.seq + 1;
                                let pruned = control
                                    .state()
                                    .jobs
                                    .get(&c.job)
                                    .is_some_and(|j| j.log_pruned_at.is_some());
                                if pruned {
                                    continue;
                                }
                                let (store, job) = (control.clone(), c.job);
                                let written = tokio::task::spawn_blocking(move || {
                                    store.store().put_log_chunk(job, c.offset, &c.bytes)
                                })
                                .await;
                                if !matches!(written, Ok(Ok(()))) {
                                    tracing::error!(job = %c.job, "job output from the cluster could not be written here");
                                }
                            }
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, "following job output failed; starting again");
                                break;
                            }
                            None => break,
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot follow job output yet"),
            }
            tokio::select! {
                _ = stopped(&mut stop) => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// The election: lead while this node holds the leader's key, and try to take it while
    /// nobody does. A node only leads once it has applied the whole stream.
    async fn elect(self: Arc<Self>, control: Arc<Control>, mut stop: watch::Receiver<bool>) {
        let mut held: Option<u64> = None;
        loop {
            let me = self.me(&control);
            let _ = self
                .nodes_kv
                .put(&me.name, serde_json::to_vec(&me).unwrap_or_default().into())
                .await;
            // Leadership lost by a failed append: give the key up so another node leads now.
            if held.is_some() && !control.leads() {
                if let Some(rev) = held.take() {
                    let _ = self
                        .leader_kv
                        .delete_expect_revision(LEADER_KEY, Some(rev))
                        .await;
                }
                tracing::warn!(node = %me.name, "this node stopped leading");
            }
            let value = serde_json::to_vec(&NodeInfo {
                leads: true,
                ..me.clone()
            })
            .unwrap_or_default();
            match held {
                Some(rev) => match self.leader_kv.update(LEADER_KEY, value.into(), rev).await {
                    Ok(rev) => held = Some(rev),
                    Err(e) => {
                        tracing::warn!(error = %e, node = %me.name, "could not renew the leader's key; this node steps down");
                        self.link.leading.store(false, Ordering::Release);
                        held = None;
                    }
                },
                None => {
                    if self.caught_up(&control).await
                        && let Ok(rev) = self.leader_kv.create(LEADER_KEY, value.into()).await
                    {
                        // Commits the last leader made after this node's check are read
                        // before the first decision: the append would refuse them anyway.
                        if self.caught_up(&control).await {
                            held = Some(rev);
                            control.grant_fresh_leases();
                            self.link.leading.store(true, Ordering::Release);
                            tracing::info!(node = %me.name, "this node leads the cluster");
                        } else {
                            let _ = self
                                .leader_kv
                                .delete_expect_revision(LEADER_KEY, Some(rev))
                                .await;
                        }
                    }
                }
            }
            let leader = match self.leader_kv.get(LEADER_KEY).await {
                Ok(Some(bytes)) => serde_json::from_slice::<NodeInfo>(&bytes).ok(),
                _ => None,
            };
            *self.leader.write() = leader.clone();
            let nodes = self.nodes().await;
            let stream = self.link.log.status().await.ok();
            *self.link.snapshot.write() = ClusterSnapshot {
                node: self.config.node_name.clone(),
                leader,
                nodes,
                stream,
            };
            tokio::select! {
                _ = stopped(&mut stop) => return,
                _ = tokio::time::sleep(RENEW) => {}
            }
        }
    }

    /// Whether this node has applied everything the stream holds. What it lacks is read
    /// here and now, not left to the follower: after the stream changes leader, a long-lived
    /// consumer may take many seconds to notice, and while no node is caught up none may lead.
    async fn caught_up(&self, control: &Control) -> bool {
        let last = match self.link.log.status().await {
            Ok(s) => s.last_seq,
            Err(_) => return false,
        };
        let (head, hash) = {
            let s = control.state();
            (s.head_seq, s.head_hash)
        };
        if head >= last {
            return true;
        }
        let read = tokio::time::timeout(
            Duration::from_secs(5),
            self.link.log.read_records(head + 1, hash),
        )
        .await;
        let Ok(Ok(commits)) = read else {
            return false;
        };
        for chunk in commits.chunks(512) {
            if control.replicate(chunk.to_vec()).await.is_err() {
                return false;
            }
        }
        let mut changes = control.subscribe();
        let applied = tokio::time::timeout(Duration::from_secs(5), async {
            while control.state().head_seq < last {
                if changes.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        applied.is_ok() && control.state().head_seq >= last
    }

    /// Every node the registry knows (those that reported within a few leases).
    pub async fn nodes(&self) -> Vec<NodeInfo> {
        let mut out = Vec::new();
        if let Ok(mut keys) = self.nodes_kv.keys().await {
            while let Some(Ok(key)) = keys.next().await {
                if let Ok(Some(bytes)) = self.nodes_kv.get(&key).await
                    && let Ok(info) = serde_json::from_slice::<NodeInfo>(&bytes)
                {
                    out.push(info);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// Resolves once `stop` says stop (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Whether a request changes something (or must be served by the leader): it goes to the
/// leader when this node does not lead.
fn for_the_leader(method: &Method, path: &str) -> bool {
    let door = path.starts_with("/api/") || path == "/mcp" || path.starts_with("/mcp/");
    if !door || path == "/api/v1/cluster" {
        return false;
    }
    // Runners' calls renew leases the leader holds in memory: they go there, reads included.
    // Job output is on every node (the output stream), so its reads are served here.
    let leader_only = path.starts_with("/api/v1/runner/");
    leader_only || !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

#[derive(Clone)]
pub struct Gate {
    pub node: Arc<Node>,
    pub control: Arc<Control>,
}

/// The cluster's door: marks every answer with this node's head, and sends what only the
/// leader may answer to the leader.
pub async fn gate(AxumState(g): AxumState<Gate>, req: Request, next: Next) -> Response {
    if g.control.leads() || !for_the_leader(req.method(), req.uri().path()) {
        let mut resp = next.run(req).await;
        let head = g.control.state().head_seq;
        resp.headers_mut().insert(HEAD, HeaderValue::from(head));
        return resp;
    }
    if req.headers().contains_key(&FORWARDED) {
        return no_leader("the node this request was forwarded to does not lead any more");
    }
    let Some(leader) = g
        .node
        .leader()
        .filter(|l| l.name != g.node.config.node_name)
    else {
        return no_leader("the cluster has no leader at the moment");
    };
    forward(&g, &leader, req).await
}

fn no_leader(why: &str) -> Response {
    let mut p = Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_leader",
        format!("{why}; nothing was recorded, retry in a second (with the same Idempotency-Key)"),
    );
    p.headers
        .push((axum::http::header::RETRY_AFTER, HeaderValue::from(1)));
    p.into_response()
}

async fn forward(g: &Gate, leader: &NodeInfo, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, crate::domain::bounds::BODY + 1).await {
        Ok(b) => b,
        Err(_) => {
            return Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "the body is larger than {} bytes",
                    crate::domain::bounds::BODY
                ),
            )
            .into_response();
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    let url = format!("http://{}{}", leader.addr, path);
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if !matches!(
            name.as_str(),
            "host" | "content-length" | "connection" | "transfer-encoding"
        ) {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Ok(me) = HeaderValue::from_str(&g.node.config.node_name) {
        headers.insert(FORWARDED, me);
    }
    let sent = g
        .node
        .http
        .request(parts.method.clone(), &url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, leader = %leader.name, "could not forward to the leader");
            return no_leader("the leader could not be reached");
        }
    };
    let status = resp.status();
    let head: Option<u64> = resp
        .headers()
        .get(&HEAD)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let mut out = Response::builder().status(status);
    for (name, value) in resp.headers() {
        if !matches!(
            name.as_str(),
            "content-length" | "connection" | "transfer-encoding"
        ) {
            out = out.header(name, value);
        }
    }
    let bytes = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "the leader's answer was cut off");
            return no_leader("the leader's answer was cut off");
        }
    };
    // Read-your-writes: the answer goes out once this node has applied what the leader had.
    if let Some(head) = head {
        let mut changes = g.control.subscribe();
        let applied = tokio::time::timeout(APPLY_WAIT, async {
            while g.control.state().head_seq < head {
                if changes.changed().await.is_err() {
                    return false;
                }
            }
            true
        })
        .await;
        if !matches!(applied, Ok(true)) {
            return Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_applied",
                format!(
                    "the leader answered {status} at commit {head}, but this node has not applied that commit within {} s; ask the leader ({}) or retry with the same Idempotency-Key",
                    APPLY_WAIT.as_secs(),
                    leader.addr
                ),
            )
            .into_response();
        }
    }
    out.body(Body::from(bytes)).unwrap_or_else(|_| {
        Problem::internal("the leader's answer could not be passed on").into_response()
    })
}

//! Running the control plane: open the log, make sure an admin token exists, serve HTTP, and
//! shut down cleanly (in-flight requests answered, queued commits written, log flushed).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::api::metrics::{Metrics, MetricsAccess};
use crate::api::{self, AppState};
use crate::auth;
use crate::control::{Control, ControlError, Options, Submission};
use crate::domain::{Command, Millis, Plane, Principal, Reply, Rules, TokenKind};
use crate::limits::{Limits, RateLimits};
use crate::log::SyncMode;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub sync: SyncMode,
    /// The size new WAL segments are preallocated to, in bytes (0: 16 MiB).
    pub wal_segment_bytes: u64,
    /// Commits between snapshots of the state (0: 50,000).
    pub snapshot_commits: u64,
    /// Seconds between snapshots while anything is committed (0: 300).
    pub snapshot_secs: u64,
    pub watch_interval_floor_secs: u64,
    /// An admin secret to accept (`REEVE_ADMIN_TOKEN`); registered on start if it is new.
    pub admin_token: Option<String>,
    /// How long a claimed job's lease lasts without a heartbeat.
    pub lease_secs: u64,
    /// The most jobs one pipeline may have.
    pub max_jobs: usize,
    /// Consecutive failed builds after which a watch pauses itself.
    pub watch_failure_limit: u32,
    /// Runner workers started inside the server (0: none; jobs wait for external runners).
    pub runners: usize,
    /// Seconds an aborted or timed-out job gets between SIGTERM and SIGKILL.
    pub kill_grace_secs: u64,
    pub mcp_trigger_per_min: u32,
    pub mcp_read_per_min: u32,
    pub trigger_per_min: u32,
    pub read_per_min: u32,
    pub mcp: crate::mcp::McpConfig,
    /// How long a job's output is kept after the job ended (`--job-log-retention-days`);
    /// `None` keeps it forever.
    pub job_log_retention: Option<Duration>,
    /// How often the job log retention pass runs (a day; tests shorten it). The first pass
    /// comes [`FIRST_PRUNE_AFTER`] after start, or sooner when this is shorter.
    pub job_log_prune_every: Duration,
    /// Cluster mode: the NATS servers, this node's name and the address other nodes reach it
    /// at (an empty name or address: this node's HTTP address). `None` runs alone.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// Who may scrape `/metrics` (`--metrics`); `None`: open on a loopback listener, admin
    /// tokens only on any other.
    pub metrics: Option<MetricsAccess>,
}

/// The `--job-log-retention-days` default.
pub const DEFAULT_JOB_LOG_RETENTION_DAYS: u64 = 90;
/// How often job log retention runs unless told otherwise.
pub const JOB_LOG_PRUNE_EVERY: Duration = Duration::from_secs(24 * 60 * 60);
/// The first retention pass waits this long after start, so it does not compete with it.
pub const FIRST_PRUNE_AFTER: Duration = Duration::from_secs(10);

impl ServerConfig {
    pub fn limits(&self) -> Limits {
        Limits {
            mcp_trigger_per_min: self.mcp_trigger_per_min,
            mcp_read_per_min: self.mcp_read_per_min,
            trigger_per_min: self.trigger_per_min,
            read_per_min: self.read_per_min,
            ..Limits::default()
        }
    }
}

impl ServerConfig {
    /// Loopback, an OS-chosen port, durable writes: what a test wants.
    pub fn for_tests(data_dir: &Path) -> ServerConfig {
        ServerConfig {
            data_dir: data_dir.to_path_buf(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            sync: SyncMode::Durable,
            wal_segment_bytes: 0,
            snapshot_commits: 0,
            snapshot_secs: 0,
            watch_interval_floor_secs: 1,
            admin_token: None,
            lease_secs: 60,
            max_jobs: 300,
            watch_failure_limit: 5,
            runners: 0,
            kill_grace_secs: 10,
            mcp_trigger_per_min: Limits::default().mcp_trigger_per_min,
            mcp_read_per_min: Limits::default().mcp_read_per_min,
            trigger_per_min: Limits::default().trigger_per_min,
            read_per_min: Limits::default().read_per_min,
            mcp: crate::mcp::McpConfig::default(),
            job_log_retention: Some(Duration::from_secs(
                DEFAULT_JOB_LOG_RETENTION_DAYS * 24 * 60 * 60,
            )),
            job_log_prune_every: JOB_LOG_PRUNE_EVERY,
            cluster: None,
            metrics: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("could not listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("could not write the admin token to {path}: {source}")]
    AdminTokenFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not create the admin token: {0}")]
    Bootstrap(String),
    #[error("cluster mode: {0}")]
    Cluster(String),
}

pub struct Server;

pub struct RunningServer {
    addr: SocketAddr,
    admin_token: Option<String>,
    admin_token_path: Option<PathBuf>,
    control: Arc<Control>,
    stop: watch::Sender<bool>,
    serving: JoinHandle<std::io::Result<()>>,
    timers: JoinHandle<()>,
    scheduler: JoinHandle<()>,
    log_retention: JoinHandle<()>,
    runners: Option<JoinHandle<Result<(), crate::runner::RunnerError>>>,
    cluster: Option<JoinHandle<()>>,
}

impl Server {
    pub async fn start(mut cfg: ServerConfig) -> Result<RunningServer, ServerError> {
        let dir = cfg.data_dir.clone();
        // Bound first: in a cluster, the other nodes are told this address.
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: cfg.listen,
            source,
        })?;
        // Served from the start, so that a probe learns the server is opening its log (which
        // can take a while on a long one) instead of finding the port silent.
        let (stop, stopped) = watch::channel(false);
        let app_slot: Arc<OnceLock<axum::Router>> = Arc::new(OnceLock::new());
        let mut front = Front(Some((
            stop,
            tokio::spawn(serve(listener, app_slot.clone(), stopped)),
        )));
        let node = match cfg.cluster.as_mut() {
            Some(cc) => {
                if cfg.admin_token.is_none() {
                    return Err(ServerError::Cluster(
                        "every node needs the same REEVE_ADMIN_TOKEN, since no node can write a token file the others read".into(),
                    ));
                }
                if cc.advertise.is_empty() {
                    cc.advertise = addr.to_string();
                }
                if cc.node_name.is_empty() {
                    cc.node_name = cc.advertise.clone();
                }
                let (node, link) = crate::cluster::Node::connect(cc.clone())
                    .await
                    .map_err(|e| ServerError::Cluster(e.to_string()))?;
                Some((Arc::new(node), link))
            }
            None => None,
        };
        if node.is_some() && cfg.sync == SyncMode::Durable {
            // The cluster's stream is the durable log: a group is acknowledged once a majority
            // of its replicas hold it, and this node's store is a copy that catches up from the
            // stream after a crash. Syncing the copy too would only add a wait.
            cfg.sync = SyncMode::Interval;
        }
        let rules = Rules {
            watch_interval_floor_secs: cfg.watch_interval_floor_secs,
            max_jobs: cfg.max_jobs,
            lease_secs: cfg.lease_secs,
            watch_failure_limit: cfg.watch_failure_limit,
            mcp_read_only: cfg.mcp.read_only,
        };
        let options = Options {
            cluster: node.as_ref().map(|(_, link)| link.clone()),
            sync: cfg.sync,
            wal_segment_bytes: cfg.wal_segment_bytes,
            snapshot_commits: cfg.snapshot_commits,
            snapshot_secs: cfg.snapshot_secs,
            hot_window: 0,
            rules,
        };
        let control = tokio::task::spawn_blocking(move || Control::open(&dir, options))
            .await
            .map_err(|e| ServerError::Bootstrap(e.to_string()))??;
        let control = Arc::new(control);
        let node = node.map(|(node, _)| node);
        let Some((stop, serving)) = front.take() else {
            return Err(ServerError::Bootstrap(
                "the listener stopped while starting".into(),
            ));
        };
        let (admin_token, admin_token_path, cluster) = match &node {
            None => {
                let (token, path) =
                    bootstrap_admin(&control, &cfg.data_dir, cfg.admin_token.as_deref()).await?;
                (token, path, None)
            }
            Some(node) => {
                node.catch_up(&control)
                    .await
                    .map_err(|e| ServerError::Cluster(e.to_string()))?;
                let run = tokio::spawn(node.clone().run(control.clone(), stop.subscribe()));
                tokio::spawn(admin_when_leading(
                    control.clone(),
                    cfg.data_dir.clone(),
                    cfg.admin_token.clone(),
                    stop.subscribe(),
                ));
                (None, None, Some(run))
            }
        };
        let limits = Arc::new(RateLimits::new(cfg.limits()));
        let metrics = Arc::new(Metrics::new(
            &control,
            &limits,
            cfg.metrics
                .unwrap_or_else(|| MetricsAccess::default_for(cfg.listen)),
            Duration::from_secs(cfg.lease_secs.max(1)),
        ));
        let state = AppState {
            control: control.clone(),
            limits,
            rules,
            shutdown: stop.subscribe(),
            metrics: metrics.clone(),
        };
        // The one place the doors are put together.
        let app = api::layers(
            api::router(state.clone())
                .merge(crate::mcp::router(state, cfg.mcp.clone()))
                .merge(crate::console::router()),
            metrics.clone(),
        );
        let app = app.layer(axum::middleware::from_fn(commit_seq));
        let app = match &node {
            Some(node) => app.layer(axum::middleware::from_fn_with_state(
                crate::cluster::Gate {
                    node: node.clone(),
                    control: control.clone(),
                },
                crate::cluster::gate,
            )),
            None => app,
        };
        // From here on the listener serves the whole API.
        let _ = app_slot.set(app);
        let timers = tokio::spawn(timers(control.clone(), stop.subscribe()));
        if node.is_some() && cfg.runners > 0 {
            tracing::info!(
                "cluster mode runs no runners inside the server: start `reeve runner` against any node"
            );
        }
        let runners = if cfg.runners > 0 && node.is_none() {
            let token = embedded_runner_token(&control, &cfg.data_dir).await?;
            let local = SocketAddr::new(
                if addr.ip().is_unspecified() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    addr.ip()
                },
                addr.port(),
            );
            let runner_cfg = crate::runner::RunnerConfig {
                server: format!("http://{local}"),
                token,
                concurrency: cfg.runners,
                labels: vec!["embedded".into()],
                work_dir: cfg.data_dir.join("work"),
                kill_grace: std::time::Duration::from_secs(cfg.kill_grace_secs),
            };
            Some(tokio::spawn(crate::runner::run(
                runner_cfg,
                stop.subscribe(),
            )))
        } else {
            None
        };
        let scheduler = tokio::spawn(scheduler(
            control.clone(),
            stop.subscribe(),
            cfg.watch_failure_limit,
            metrics.fire_lateness.clone(),
        ));
        // Deletions a crash interrupted are finished before reeve serves: the projection says
        // those logs are gone, so their chunks must be gone too, even when retention is off.
        let unswept = !sweep_pruned_logs(&control).await;
        let log_retention = tokio::spawn(log_retention(
            unswept,
            control.clone(),
            stop.subscribe(),
            cfg.job_log_retention,
            cfg.job_log_prune_every,
        ));
        tracing::info!(%addr, data_dir = %cfg.data_dir.display(), sync = ?cfg.sync, "reeve is serving");
        Ok(RunningServer {
            addr,
            admin_token,
            admin_token_path,
            control,
            stop,
            serving,
            timers,
            scheduler,
            log_retention,
            runners,
            cluster,
        })
    }
}

type Serving = JoinHandle<std::io::Result<()>>;

/// The listener's task while the server starts. Should the start fail, dropping this stops
/// it, so a failed start leaves nothing listening.
struct Front(Option<(watch::Sender<bool>, Serving)>);

impl Front {
    /// The server started: its stop switch and its listener's task are the running server's.
    fn take(&mut self) -> Option<(watch::Sender<bool>, Serving)> {
        self.0.take()
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        if let Some((stop, serving)) = self.0.take() {
            let _ = stop.send(true);
            serving.abort();
        }
    }
}

/// Serves the listener until `stopped`: the whole API once it is in `app`, and until then
/// only `/healthz` (200) and, for everything else, 503 `not_ready`.
async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<OnceLock<axum::Router>>,
    mut stopped: watch::Receiver<bool>,
) -> std::io::Result<()> {
    use tower::ServiceExt;
    let front = axum::Router::new().fallback_service(tower::service_fn(
        move |req: axum::extract::Request| {
            let app = app.clone();
            async move {
                match app.get() {
                    Some(app) => app.clone().oneshot(req).await,
                    None => Ok(starting(req.uri().path())),
                }
            }
        },
    ));
    axum::serve(listener, front)
        .with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|s| *s).await;
        })
        .await
}

fn starting(path: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    if path == "/healthz" {
        return axum::Json(serde_json::json!({"status": "starting"})).into_response();
    }
    api::metrics::not_ready("reeve is opening its log and is not serving yet; retry shortly")
        .into_response()
}

/// Tells the caller of a request that made a commit which one: `Reeve-Seq` (the last, if it
/// made several). A reader can then wait for that seq on any node (`Reeve-Head`).
async fn commit_seq(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let (mut resp, seq) = crate::control::COMMIT_SEQ
        .scope(std::cell::Cell::new(None), async {
            let resp = next.run(req).await;
            (resp, crate::control::COMMIT_SEQ.with(std::cell::Cell::get))
        })
        .await;
    if let Some(seq) = seq {
        resp.headers_mut().insert(
            axum::http::HeaderName::from_static("reeve-seq"),
            axum::http::HeaderValue::from(seq),
        );
    }
    resp
}

/// Cluster mode: the admin token (`REEVE_ADMIN_TOKEN`, the same on every node) is registered
/// by whichever node leads first; the others find it in the log.
async fn admin_when_leading(
    control: Arc<Control>,
    data_dir: PathBuf,
    secret: Option<String>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if control.leads() {
            match bootstrap_admin(&control, &data_dir, secret.as_deref()).await {
                Ok(_) => return,
                Err(e) => tracing::warn!(error = %e, "could not register the admin token yet"),
            }
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

impl RunningServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin secret created at this start, if one was.
    pub fn admin_token(&self) -> Option<String> {
        self.admin_token.clone()
    }

    /// Where the admin secret created at this start was written, if one was.
    pub fn admin_token_path(&self) -> Option<&Path> {
        self.admin_token_path.as_deref()
    }

    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// Stops accepting connections, answers what is in flight, writes what is queued, and
    /// flushes the log.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.timers.await;
        let _ = self.scheduler.await;
        let _ = self.log_retention.await;
        if let Some(runners) = self.runners {
            let _ = runners.await;
        }
        if let Some(cluster) = self.cluster {
            let _ = cluster.await;
        }
        match self.serving.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the HTTP server stopped with an error"),
            Err(e) => tracing::error!(error = %e, "the HTTP server task failed"),
        }
        self.control.close().await;
        tracing::info!("reeve stopped; the log is flushed");
    }
}

/// Every 5 s lets the writer close coalescing windows; every 250 ms ends running jobs whose
/// lease ran out. The expiry is a command reeve submits to itself, so
/// it is in the log like everything else; the rule (which leases are out) is in `decide`.
async fn timers(control: Arc<Control>, mut stop: watch::Receiver<bool>) {
    const TICK: std::time::Duration = std::time::Duration::from_millis(250);
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(TICK) => {}
        }
        ticks += 1;
        if ticks.is_multiple_of(20) {
            control.tick();
        }
        // In a cluster, leases are granted and expired by the leader alone.
        if !control.leads() || !control.leases_due(api::now_ms()) {
            continue;
        }
        let submitted = control
            .submit(Submission::system(Command::ExpireLeases))
            .await;
        if let Err(e) = submitted {
            tracing::warn!(error = %e, "could not expire leases");
        }
    }
}

/// Turns the watch projection into timed fire commands. One timer over the schedule index
/// (ordered by `next_run_at`): it sleeps until the earliest run, or until any commit changes
/// the state (a pause, resume, interval change or delete takes effect at once), then fires
/// everything due. Whether a fire still stands (paused, deleted, not due) is `decide`'s call.
async fn scheduler(
    control: Arc<Control>,
    mut stop: watch::Receiver<bool>,
    failure_limit: u32,
    lateness: Histogram,
) {
    const IDLE: std::time::Duration = std::time::Duration::from_secs(60);
    let mut changes = control.subscribe();
    // What was refused once is not asked again: a refusal is a commit, and asking again on
    // the commit it made would loop.
    let mut refused: std::collections::HashSet<(Uuid, &'static str, u64)> = Default::default();
    loop {
        // In a cluster, only the leader fires watches; the others wait to lead.
        if !control.leads() {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(Duration::from_millis(250)) => continue,
            }
        }
        let now = api::now_ms();
        let (work, next) = {
            let state = control.state();
            let failing = state
                .failing_watches(failure_limit)
                .map(|w| (w.id, "pause", u64::from(w.consecutive_failures)));
            let due = state
                .due_watches(now)
                .map(|(at, id)| (id, "fire", at as u64));
            let work: Vec<_> = failing
                .chain(due)
                .filter(|k| !refused.contains(k))
                .collect();
            (work, state.next_watch_run())
        };
        // Everything due goes to the writer at once, so it lands in few group commits.
        for batch in work.chunks(1024) {
            let submissions = batch.iter().map(|&key| {
                let (id, what, _) = key;
                let command = match what {
                    "pause" => Command::PauseFailingWatch { id },
                    _ => Command::FireWatch { id },
                };
                let control = &control;
                async move {
                    let submitted = control
                        .submit(Submission {
                            principal: Principal::System,
                            plane: Plane::Scheduler,
                            request_id: Uuid::now_v7().to_string(),
                            idempotency_key: None,
                            command,
                        })
                        .await;
                    (key, submitted)
                }
            });
            for (key, submitted) in futures_util::future::join_all(submissions).await {
                match submitted {
                    Ok(s) if s.result.is_err() => {
                        refused.insert(key);
                    }
                    Ok(_) if key.1 == "fire" => {
                        let late = api::now_ms().saturating_sub(key.2 as Millis);
                        lateness.observe(late.max(0) as f64 / 1000.0);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(watch = %key.0, error = %e, "scheduler could not submit")
                    }
                }
            }
        }
        if refused.len() > 10_000 {
            refused.clear();
        }
        let wait = next
            .map(|at| {
                std::time::Duration::from_millis(u64::try_from(at - api::now_ms()).unwrap_or(0))
            })
            .unwrap_or(IDLE)
            .min(IDLE);
        changes.mark_unchanged();
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = changes.changed() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Job log retention. On start it finishes deletions a crash may have cut short; then, first
/// shortly after start and then every `every`, it submits `PruneJobLogs` (plane system) with
/// the cut-off `now - retention` while the projection shows a job whose output is due, and
/// deletes the output of the jobs each commit names once that commit is durable. Which jobs
/// qualify is `decide`'s rule; with none due, nothing is submitted and the log does not grow.
async fn log_retention(
    mut unswept: bool,
    control: Arc<Control>,
    mut stop: watch::Receiver<bool>,
    retention: Option<Duration>,
    every: Duration,
) {
    let Some(retention) = retention else {
        return;
    };
    let retention = Millis::try_from(retention.as_millis()).unwrap_or(Millis::MAX);
    let mut wait = every.min(FIRST_PRUNE_AFTER);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = every;
        if unswept {
            unswept = !sweep_pruned_logs(&control).await;
        }
        if !prune_pass(&control, retention, &stop).await {
            unswept = true;
        }
    }
}

/// Prunes until nothing is due (or reeve stops), one bounded commit at a time. `false` when
/// some output could not be deleted (the next pass sweeps again).
async fn prune_pass(
    control: &Arc<Control>,
    retention: Millis,
    stop: &watch::Receiver<bool>,
) -> bool {
    loop {
        if *stop.borrow() || !control.leads() {
            return true;
        }
        let before = api::now_ms().saturating_sub(retention);
        let cold_due = match crate::domain::History::cold_prunable(control.store(), before, 1) {
            Ok(jobs) => !jobs.is_empty(),
            Err(why) => {
                tracing::error!(%why, "job log retention could not read the jobs kept on disk");
                false
            }
        };
        if !cold_due && control.state().prunable_logs(before).next().is_none() {
            return true;
        }
        let submitted = control
            .submit(Submission::system(Command::PruneJobLogs { before }))
            .await;
        let (jobs, at) = match submitted.map(|s| s.result) {
            Ok(Ok(Reply::LogsPruned { jobs, at })) if !jobs.is_empty() => (jobs, at),
            Ok(Ok(_)) => return true,
            Ok(Err(r)) => {
                tracing::warn!(code = %r.code, reason = %r.reason, "job log retention was refused");
                return true;
            }
            Err(e) => {
                tracing::warn!(error = %e, "job log retention could not submit");
                return true;
            }
        };
        if !delete_logs(control, jobs, at).await {
            return false;
        }
    }
}

/// Deletes the chunks of jobs a durable prune commit (at `at`) named. `false` on failure.
async fn delete_logs(control: &Arc<Control>, jobs: Vec<Uuid>, at: Millis) -> bool {
    let c = control.clone();
    let n = jobs.len();
    if let Err(e) = control.purge_cluster_output(&jobs).await {
        tracing::error!(error = %e, "job log retention could not delete output from the cluster; the next pass tries again");
        return false;
    }
    let deleted = tokio::task::spawn_blocking(move || c.store().prune_logs(&jobs, at)).await;
    match deleted {
        Ok(Ok(chunks)) => {
            tracing::info!(
                jobs = n,
                chunks,
                "job log retention deleted the output of jobs that ended before its cut-off"
            );
            true
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, jobs = n, "job log retention could not delete output; the next pass tries again");
            false
        }
        Err(e) => {
            tracing::error!(error = %e, "job log retention's deletion failed");
            false
        }
    }
}

/// Deletes what is left of the output of jobs pruned at or after the last prune known to be
/// swept: the chunks of a prune whose commit was durable but whose deletion a crash cut
/// short. Usually that is the last prune only, whose jobs are deleted again (cheap: a prefix
/// seek each). `false` when something could not be deleted.
async fn sweep_pruned_logs(control: &Arc<Control>) -> bool {
    let from = match control.store().logs_swept_through() {
        Ok(at) => at,
        Err(e) => {
            tracing::error!(error = %e, "job log retention could not read how far it got");
            return false;
        }
    };
    let (jobs, through) = {
        let state = control.state();
        let pruned: Vec<(Millis, Uuid)> = state
            .jobs
            .values()
            .filter_map(|j| {
                j.log_pruned_at
                    .filter(|at| *at >= from)
                    .map(|at| (at, j.id))
            })
            .collect();
        let through = pruned.iter().map(|(at, _)| *at).max();
        (
            pruned.into_iter().map(|(_, id)| id).collect::<Vec<_>>(),
            through,
        )
    };
    match through {
        Some(at) => delete_logs(control, jobs, at).await,
        None => true,
    }
}

/// The embedded runners' token: kept in `<data-dir>/runner.token` (mode 0600) so restarts
/// reuse it; issued anew (by reeve itself) when the file is missing or its token is not live.
async fn embedded_runner_token(control: &Control, data_dir: &Path) -> Result<String, ServerError> {
    let path = data_dir.join("runner.token");
    if let Ok(secret) = std::fs::read_to_string(&path) {
        let secret = secret.trim().to_string();
        let live = control
            .state()
            .token_by_secret_hash(&auth::hash_secret(&secret))
            .is_some_and(|t| t.kind == TokenKind::Runner && t.is_active(api::now_ms()));
        if live {
            return Ok(secret);
        }
    }
    let secret = auth::new_secret().map_err(|e| ServerError::Bootstrap(e.to_string()))?;
    write_secret_file(&path, &secret)?;
    issue_own_token(
        control,
        &secret,
        TokenKind::Runner,
        "embedded runners (runner.token)",
    )
    .await?;
    Ok(secret)
}

/// Registers a token reeve made for itself (the first admin, its embedded runners).
async fn issue_own_token(
    control: &Control,
    secret: &str,
    kind: TokenKind,
    description: &str,
) -> Result<(), ServerError> {
    let submitted = control
        .submit(Submission::system(Command::IssueToken {
            secret_hash: auth::hash_secret(secret),
            kind,
            description: description.to_string(),
            enabled_projects: Default::default(),
            // Runners need no permission to change things; the admin needs it all.
            allow_trigger: kind == TokenKind::Admin,
            expires_at: None,
        }))
        .await?;
    submitted
        .result
        .map_err(|r| ServerError::Bootstrap(format!("{}: {}", r.code, r.reason)))?;
    Ok(())
}

/// On a fresh data dir, creates the first admin token (written to `<data-dir>/admin.token`,
/// mode 0600, before it is registered so a crash cannot leave a token nobody holds). A secret
/// from `REEVE_ADMIN_TOKEN` is registered instead, once.
async fn bootstrap_admin(
    control: &Control,
    data_dir: &Path,
    from_env: Option<&str>,
) -> Result<(Option<String>, Option<PathBuf>), ServerError> {
    let (secret, path) = match from_env {
        Some(secret) => {
            let known = control
                .state()
                .token_by_secret_hash(&auth::hash_secret(secret))
                .is_some();
            if known {
                return Ok((None, None));
            }
            (secret.to_string(), None)
        }
        None => {
            if !control.state().tokens.is_empty() {
                return Ok((None, None));
            }
            let secret = auth::new_secret().map_err(|e| ServerError::Bootstrap(e.to_string()))?;
            let path = data_dir.join("admin.token");
            write_secret_file(&path, &secret)?;
            (secret, Some(path))
        }
    };
    let description = if path.is_some() {
        "bootstrap admin token (admin.token)"
    } else {
        "REEVE_ADMIN_TOKEN"
    };
    issue_own_token(control, &secret, TokenKind::Admin, description).await?;
    Ok((Some(secret), path))
}

fn write_secret_file(path: &Path, secret: &str) -> Result<(), ServerError> {
    let err = |source| ServerError::AdminTokenFile {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("token.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(&tmp).map_err(err)?;
    f.write_all(secret.as_bytes()).map_err(err)?;
    f.write_all(b"\n").map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    Ok(())
}

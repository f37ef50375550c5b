//! `GET /metrics` (the OpenMetrics text format Prometheus scrapes) and `GET /readyz`.
//!
//! Each part of reeve owns its instruments: the writer its commits, group sizes and latencies
//! (`control::WriterMetrics`), the write-ahead log its `fdatasync` times, the rate limiter its
//! refusals; this module owns what the doors see (HTTP requests, runners) and the scheduler's
//! lateness. The registry holds shared handles to all of them, and what is a fact of the
//! state (jobs by state, the queue, the size of the log) is read at scrape time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use uuid::Uuid;

use super::{AppState, Problem, admin_read};
use crate::control::Control;
use crate::domain::{JobState, Principal};
use crate::limits::RateLimits;

/// Who may scrape `/metrics` (`--metrics`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricsAccess {
    /// Anyone who can reach the listener, without a token.
    Open,
    /// Admin tokens only (Prometheus sends one with `authorization: {credentials_file: ...}`).
    Admin,
    /// Not served (404).
    Off,
}

impl MetricsAccess {
    /// The default for a listen address: open on loopback, where only this machine can
    /// scrape; admin anywhere else.
    pub fn default_for(listen: std::net::SocketAddr) -> MetricsAccess {
        if listen.ip().is_loopback() {
            MetricsAccess::Open
        } else {
            MetricsAccess::Admin
        }
    }
}

/// The OpenMetrics text format, which Prometheus negotiates and parses natively.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    /// The route's pattern (`/api/v1/watches/{id}`), never the concrete path, so the number
    /// of series stays that of the routes; `unmatched` for paths no route serves.
    route: String,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: &'static str,
}

type Seconds = Family<RouteLabels, Histogram, fn() -> Histogram>;

fn http_histogram() -> Histogram {
    // 100 µs to about 3 s (a long-poll or a stream counts until its headers are sent).
    Histogram::new(exponential_buckets(0.000_1, 2.0, 15))
}

/// Runner tokens by when they last called, and how many claims each has waiting.
#[derive(Debug, Default)]
struct Runners {
    seen: HashMap<Uuid, (Instant, usize)>,
}

pub struct Metrics {
    access: MetricsAccess,
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_seconds: Seconds,
    /// Seconds between a watch's due time and its fire's commit (the scheduler observes).
    pub fire_lateness: Histogram,
    runners: Arc<Mutex<Runners>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("access", &self.access)
            .finish()
    }
}

impl Metrics {
    /// The registry of one server: its writer's, log's and rate limiter's instruments, the
    /// doors' own, and what is read from the state at scrape time. A runner that called
    /// within `runner_window` counts as connected.
    pub fn new(
        control: &Arc<Control>,
        limits: &Arc<RateLimits>,
        access: MetricsAccess,
        runner_window: Duration,
    ) -> Metrics {
        let mut registry = Registry::with_prefix("reeve");
        let writer = control.metrics();
        registry.register(
            "commits",
            "Commits this node made durable, by the plane they came through and their outcome",
            writer.commits.clone(),
        );
        registry.register(
            "group_commit_size",
            "Commits per group commit (one write-ahead log write and one fdatasync each)",
            writer.group_size.clone(),
        );
        registry.register(
            "command_duration_seconds",
            "Seconds from a command's submission to the writer until its commit is durable and it is answered",
            writer.latency.clone(),
        );
        registry.register(
            "wal_fdatasync_duration_seconds",
            "Seconds each fdatasync of the write-ahead log took",
            control.store().fdatasync_seconds(),
        );
        registry.register(
            "watch_fires_skipped",
            "Watch fires skipped because the watch's previous build was still running",
            writer.fires_skipped.clone(),
        );
        registry.register(
            "watch_runs_missed",
            "Watch runs that passed unfired (reeve was down) and were folded into one catch-up fire",
            writer.fires_missed.clone(),
        );
        let fire_lateness = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "watch_fire_lateness_seconds",
            "Seconds between a watch's due time and the commit of its fire",
            fire_lateness.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route pattern, method and status",
            http_requests.clone(),
        );
        let http_seconds: Seconds = Family::new_with_constructor(http_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Seconds until an HTTP request's answer (its headers, for a stream) was ready, by route pattern and method",
            http_seconds.clone(),
        );
        let runners = Arc::new(Mutex::new(Runners::default()));
        registry.register_collector(Box::new(Live {
            control: control.clone(),
            limits: limits.clone(),
            runners: runners.clone(),
            runner_window,
        }));
        Metrics {
            access,
            registry,
            http_requests,
            http_seconds,
            fire_lateness,
            runners,
        }
    }

    pub fn access(&self) -> MetricsAccess {
        self.access
    }

    /// The whole exposition, ending with `# EOF`.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// A runner token made a call of the runner protocol.
    pub fn runner_seen(&self, principal: Principal) {
        if let Principal::Token(id) = principal {
            let mut runners = self.runners.lock();
            runners.seen.entry(id).or_insert((Instant::now(), 0)).0 = Instant::now();
        }
    }

    /// A runner's claim waits for work until the guard is dropped: a runner waiting in a claim
    /// is connected, however long it waits.
    pub fn runner_waiting(&self, principal: Principal) -> Option<Waiting> {
        let Principal::Token(id) = principal else {
            return None;
        };
        let mut runners = self.runners.lock();
        let entry = runners.seen.entry(id).or_insert((Instant::now(), 0));
        entry.0 = Instant::now();
        entry.1 += 1;
        Some(Waiting {
            runners: self.runners.clone(),
            id,
        })
    }

    fn observe_http(&self, route: String, method: &'static str, status: u16, took: Duration) {
        self.http_seconds
            .get_or_create(&RouteLabels {
                route: route.clone(),
                method,
            })
            .observe(took.as_secs_f64());
        self.http_requests
            .get_or_create(&HttpLabels {
                route,
                method,
                status,
            })
            .inc();
    }
}

/// A claim waiting for work; see [`Metrics::runner_waiting`].
pub struct Waiting {
    runners: Arc<Mutex<Runners>>,
    id: Uuid,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut runners = self.runners.lock();
        if let Some(entry) = runners.seen.get_mut(&self.id) {
            entry.0 = Instant::now();
            entry.1 = entry.1.saturating_sub(1);
        }
    }
}

/// What is read from the server at scrape time.
struct Live {
    control: Arc<Control>,
    limits: Arc<RateLimits>,
    runners: Arc<Mutex<Runners>>,
    runner_window: Duration,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live")
    }
}

const JOB_STATES: [JobState; 8] = [
    JobState::Queued,
    JobState::Scheduled,
    JobState::Running,
    JobState::Finished,
    JobState::Failure,
    JobState::Error,
    JobState::Skipped,
    JobState::Killed,
];

fn job_state_name(s: JobState) -> &'static str {
    match s {
        JobState::Queued => "queued",
        JobState::Scheduled => "scheduled",
        JobState::Running => "running",
        JobState::Finished => "finished",
        JobState::Failure => "failure",
        JobState::Error => "error",
        JobState::Skipped => "skipped",
        JobState::Killed => "killed",
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    let m = encoder.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

fn clamp(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (head, jobs, active, paused) = {
            let state = self.control.state();
            let mut jobs = [0u64; JOB_STATES.len()];
            for job in state.jobs.values() {
                if let Some(i) = JOB_STATES.iter().position(|s| *s == job.state) {
                    jobs[i] += 1;
                }
            }
            let active = state.watches.values().filter(|w| w.is_active).count();
            (state.head_seq, jobs, active, state.watches.len() - active)
        };
        gauge(
            &mut encoder,
            "head_seq",
            "The seq of the last commit applied to the state this node serves.",
            clamp(head),
        )?;
        gauge(
            &mut encoder,
            "writer_queue_depth",
            "Messages waiting for the single writer (commands, and commits read from a cluster's log).",
            clamp(self.control.queue_depth()),
        )?;
        gauge(
            &mut encoder,
            "log_disk_bytes",
            "Bytes the log takes on disk (write-ahead log segments and the store's file).",
            clamp(self.control.store().disk_bytes()),
        )?;
        {
            let mut m = encoder.encode_descriptor(
                "jobs",
                "Jobs in memory by state: every queued and running job, and the ended jobs of builds that have not left memory.",
                None,
                MetricType::Gauge,
            )?;
            for (state, n) in JOB_STATES.iter().zip(jobs) {
                let labels = [("state", job_state_name(*state))];
                ConstGauge::new(clamp(n)).encode(m.encode_family(&labels)?)?;
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "watches",
                "Watches by state.",
                None,
                MetricType::Gauge,
            )?;
            for (state, n) in [("active", active), ("paused", paused)] {
                ConstGauge::new(clamp(n)).encode(m.encode_family(&[("state", state)])?)?;
            }
        }
        let connected = {
            let mut runners = self.runners.lock();
            let window = self.runner_window;
            runners
                .seen
                .retain(|_, (at, waiting)| *waiting > 0 || at.elapsed() < window);
            runners.seen.len()
        };
        gauge(
            &mut encoder,
            "runners_connected",
            "Runner tokens waiting in a claim or that called the runner protocol within a lease.",
            clamp(connected),
        )?;
        {
            let mut m = encoder.encode_descriptor(
                "rate_limited",
                "Requests refused for their token's rate limit, by bucket (mcp_* are MCP tokens').",
                None,
                MetricType::Counter,
            )?;
            for (bucket, n) in self.limits.refusals() {
                ConstCounter::new(n).encode(m.encode_family(&[("bucket", bucket)])?)?;
            }
        }
        Ok(())
    }
}

/// Counts every request by its route pattern, method and status, and times it.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = method_label(req.method());
    let started = Instant::now();
    let resp = next.run(req).await;
    metrics.observe_http(route, method, resp.status().as_u16(), started.elapsed());
    resp
}

fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        // Anything else is one series, whatever a client makes up.
        _ => "other",
    }
}

/// `GET /metrics`.
pub async fn serve(State(app): State<AppState>, headers: HeaderMap) -> Result<Response, Problem> {
    match app.metrics.access() {
        MetricsAccess::Off => {
            return Err(Problem::new(
                StatusCode::NOT_FOUND,
                "metrics_off",
                "this server does not serve metrics (--metrics off)",
            ));
        }
        MetricsAccess::Admin => admin_read(&app, &headers, |_, _| Ok(()))?,
        MetricsAccess::Open => {}
    }
    let body = app
        .metrics
        .encode()
        .map_err(|_| Problem::internal("the metrics could not be encoded"))?;
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        body,
    )
        .into_response())
}

/// `GET /readyz`: 200 once the log is replayed and the writer runs (before that, the server
/// answers 503 itself while it opens the log); 503 if the log stopped taking writes.
pub async fn ready(State(app): State<AppState>) -> Result<Response, Problem> {
    if !app.control.is_running() {
        return Err(not_ready(
            "the log no longer takes writes; see the server's log for why",
        ));
    }
    let seq = app.control.state().head_seq;
    Ok(Json(serde_json::json!({"status": "ready", "head_seq": seq})).into_response())
}

/// 503 `not_ready` with `Retry-After`, for a server that cannot serve (yet).
pub fn not_ready(detail: &str) -> Problem {
    let mut p = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", detail);
    p.headers
        .push((header::RETRY_AFTER, HeaderValue::from_static("1")));
    p
}

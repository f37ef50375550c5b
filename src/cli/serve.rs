//! `reeve serve`: runs the control plane until SIGINT or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::log::SyncMode;
use crate::server::{Server, ServerConfig};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Where the event log and the admin token live.
    #[arg(long, env = "REEVE_DATA_DIR", default_value = "./reeve-data")]
    data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "REEVE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// When a command is acknowledged: after its write-ahead log write is fdatasynced
    /// (durable), after the write alone (batch), or the same with an fdatasync every 500 ms
    /// in the background (interval).
    #[arg(long, env = "REEVE_SYNC", value_enum, default_value_t = SyncMode::Durable)]
    sync: SyncMode,
    /// The size each new write-ahead log segment is preallocated to, in MiB. Segments that
    /// the store has durably taken over are deleted at checkpoints.
    #[arg(long, env = "REEVE_WAL_SEGMENT_MIB", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    wal_segment_mib: u64,
    /// Save a snapshot of the state after this many commits, so a start folds at most that
    /// many commits after the newest snapshot instead of the whole log.
    #[arg(long, env = "REEVE_SNAPSHOT_EVERY_COMMITS", default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..))]
    snapshot_every_commits: u64,
    /// Save a snapshot after this many seconds when anything was committed since the last one.
    #[arg(long, env = "REEVE_SNAPSHOT_EVERY_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    snapshot_every_secs: u64,
    /// The shortest watch interval this server accepts, in seconds.
    #[arg(long, env = "REEVE_WATCH_INTERVAL_FLOOR_SECS", default_value_t = 1)]
    watch_interval_floor_secs: u64,
    /// How long a claimed job's lease lasts without a heartbeat, in seconds.
    #[arg(long, env = "REEVE_LEASE_SECS", default_value_t = 60)]
    lease_secs: u64,
    /// The most jobs one pipeline may have.
    #[arg(long, env = "REEVE_MAX_JOBS", default_value_t = 300)]
    max_jobs: usize,
    /// Consecutive failed builds after which a watch pauses itself.
    #[arg(long, env = "REEVE_WATCH_FAILURE_LIMIT", default_value_t = 5)]
    watch_failure_limit: u32,
    /// Runner workers inside the server (0 turns them off; then jobs wait for `reeve runner`).
    #[arg(long, env = "REEVE_RUNNERS", default_value_t = 2)]
    runners: usize,
    /// Seconds an aborted or timed-out job gets between SIGTERM and SIGKILL.
    #[arg(long, env = "REEVE_KILL_GRACE_SECS", default_value_t = 10)]
    kill_grace_secs: u64,
    /// Changes per minute for each MCP token.
    #[arg(long, env = "REEVE_MCP_TRIGGER_PER_MIN", default_value_t = 5)]
    mcp_trigger_per_min: u32,
    /// Reads per minute for each MCP token.
    #[arg(long, env = "REEVE_MCP_READ_PER_MIN", default_value_t = 30)]
    mcp_read_per_min: u32,
    /// Changes per minute for each other token.
    #[arg(long, env = "REEVE_TRIGGER_PER_MIN", default_value_t = 1200)]
    trigger_per_min: u32,
    /// Reads per minute for each other token.
    #[arg(long, env = "REEVE_READ_PER_MIN", default_value_t = 6000)]
    read_per_min: u32,
    /// Agents may only read: MCP write tools are hidden and refused.
    #[arg(long, env = "REEVE_MCP_READ_ONLY")]
    mcp_read_only: bool,
    /// A Host accepted on /mcp besides loopback (`name` or `name:port`); repeatable.
    #[arg(long = "mcp-allowed-host", value_name = "HOST")]
    mcp_allowed_hosts: Vec<String>,
    /// An Origin accepted on /mcp besides loopback (`https://agent.example.com`); repeatable.
    #[arg(long = "mcp-allowed-origin", value_name = "ORIGIN")]
    mcp_allowed_origins: Vec<String>,
    /// Days a job's output is kept after the job ended; 0 means never prune. Once a day the
    /// output of older jobs is deleted (its log then answers 410 log_pruned); the job's
    /// record and its audit trail stay.
    #[arg(long, env = "REEVE_JOB_LOG_RETENTION_DAYS", value_name = "DAYS",
        default_value_t = crate::server::DEFAULT_JOB_LOG_RETENTION_DAYS,
        value_parser = retention_days)]
    job_log_retention_days: u64,
    /// Run as one node of a cluster whose log is a NATS JetStream stream on these servers
    /// (comma-separated `nats://host:port`). Every node needs the same REEVE_ADMIN_TOKEN.
    #[arg(
        long,
        env = "REEVE_CLUSTER",
        value_name = "URLS",
        value_delimiter = ','
    )]
    cluster: Vec<String>,
    /// This node's name in the cluster (default: the address other nodes reach it at).
    #[arg(long, env = "REEVE_NODE_NAME", requires = "cluster")]
    node_name: Option<String>,
    /// The `host:port` other nodes forward writes to (default: the listen address).
    #[arg(long, env = "REEVE_ADVERTISE", requires = "cluster")]
    advertise: Option<String>,
    /// Who may scrape GET /metrics: anyone (open), admin tokens (admin), or nobody (off).
    /// Default: open on a loopback listen address, admin on any other.
    #[arg(long, env = "REEVE_METRICS", value_enum)]
    metrics: Option<crate::api::metrics::MetricsAccess>,
}

/// The most `--job-log-retention-days` accepts: a hundred years.
const MAX_RETENTION_DAYS: u64 = 36_500;

fn retention_days(raw: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "give a whole number of days from 1 to {MAX_RETENTION_DAYS}, or 0 to never prune job logs (got {raw:?})"
        )
    };
    let days: u64 = raw.trim().parse().map_err(|_| bad())?;
    if days > MAX_RETENTION_DAYS {
        return Err(bad());
    }
    Ok(days)
}

pub fn run(args: ServeArgs) -> ExitCode {
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("reeve: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(args))
}

pub(super) fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in files and pipes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

async fn serve(args: ServeArgs) -> ExitCode {
    let cfg = ServerConfig {
        data_dir: args.data_dir,
        listen: args.listen,
        sync: args.sync,
        wal_segment_bytes: args.wal_segment_mib * (1 << 20),
        snapshot_commits: args.snapshot_every_commits,
        snapshot_secs: args.snapshot_every_secs,
        watch_interval_floor_secs: args.watch_interval_floor_secs,
        admin_token: std::env::var("REEVE_ADMIN_TOKEN")
            .ok()
            .filter(|s| !s.trim().is_empty()),
        lease_secs: args.lease_secs.max(1),
        max_jobs: args.max_jobs.max(1),
        watch_failure_limit: args.watch_failure_limit.max(1),
        runners: args.runners,
        kill_grace_secs: args.kill_grace_secs,
        mcp_trigger_per_min: args.mcp_trigger_per_min,
        mcp_read_per_min: args.mcp_read_per_min,
        trigger_per_min: args.trigger_per_min,
        read_per_min: args.read_per_min,
        mcp: crate::mcp::McpConfig {
            read_only: args.mcp_read_only,
            allowed_hosts: args.mcp_allowed_hosts,
            allowed_origins: args.mcp_allowed_origins,
        },
        job_log_retention: (args.job_log_retention_days > 0)
            .then(|| Duration::from_secs(args.job_log_retention_days * 24 * 60 * 60)),
        job_log_prune_every: crate::server::JOB_LOG_PRUNE_EVERY,
        cluster: (!args.cluster.is_empty()).then(|| crate::cluster::ClusterConfig {
            servers: args
                .cluster
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            node_name: args.node_name.unwrap_or_default(),
            advertise: args.advertise.unwrap_or_default(),
        }),
        metrics: args.metrics,
    };
    let server = match Server::start(cfg).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("reeve: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    if let Some(path) = server.admin_token_path() {
        let _ = writeln!(
            out,
            "admin token written to {} (keep it secret; it is shown nowhere else)",
            path.display()
        );
    }
    let _ = writeln!(out, "reeve listening on http://{}", server.addr());
    let _ = out.flush();
    drop(out);
    wait_for_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    ExitCode::SUCCESS
}

pub(super) async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

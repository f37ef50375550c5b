//! The single writer. Every front door calls [`Control::submit`]; one thread takes whatever is
//! queued, decides each command in order against the evolving state, writes the whole group as
//! one batch, makes it durable once, folds it into the readable state, and only then answers.
//!
//! The writer keeps a private working copy of the state that runs ahead of the disk within a
//! batch; readers see the shared copy, which only ever contains durable commits: once a batch
//! is durable, the working copy is published as the shared one. The state's collections are
//! persistent maps, so the two copies share all but what the last batch changed. If a write
//! fails, the working copy is reset from the shared one and every caller in the batch gets an
//! error: nothing unacknowledged becomes visible, nothing acknowledged is lost.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::domain::{
    self, AuditEntry, Command, Ctx, Event, Millis, Plane, Principal, Refused, Rejection, Reply,
    Rules, State,
};
use crate::log::{
    Commit, CommitBody, LogError, Meta, Outcome, Store, SyncMode, Verifier, snapshot,
};

/// The most commands decided and written as one group.
const MAX_BATCH: usize = 1024;
const QUEUE_DEPTH: usize = 16 * 1024;

/// A command with who sent it and through which door.
#[derive(Clone, Debug)]
pub struct Submission {
    pub principal: Principal,
    pub plane: Plane,
    pub request_id: String,
    pub idempotency_key: Option<String>,
    pub command: Command,
}

impl Submission {
    /// A command reeve submits to itself (a timer, the scheduler, a retention pass).
    pub fn system(command: Command) -> Submission {
        Submission {
            principal: Principal::System,
            plane: Plane::System,
            request_id: Uuid::now_v7().to_string(),
            idempotency_key: None,
            command,
        }
    }
}

tokio::task_local! {
    /// The seq of the last commit a submission in this task made, for a door that scopes it
    /// around a request to tell the caller (`Reeve-Seq`).
    pub static COMMIT_SEQ: std::cell::Cell<Option<u64>>;
}

/// The answer to a submission. `seq` is `None` when nothing new was written: an
/// `Idempotency-Key` replayed an earlier answer, a refusal only counted towards its coalescing
/// window, or a heartbeat renewed a lease (renewals live in the writer's memory).
#[derive(Clone, Debug)]
pub struct Submitted {
    pub seq: Option<u64>,
    pub result: Result<Reply, Rejection>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("the log could not be written ({0}); the command was not recorded, retry later")]
    WriteFailed(String),
    #[error("reeve is shutting down; the command was not recorded")]
    Closed,
    #[error(
        "a build this command names left memory and could not be read back ({0}); the command was not recorded"
    )]
    History(String),
    #[error(
        "this node does not lead the cluster; the command was not recorded, send it to the leader"
    )]
    NotLeader,
}

/// Cluster mode: the log is a JetStream stream in front of this node's store. A group is
/// appended there first (only while this node leads) and written to the local store only once
/// the cluster has it, so the local store never runs ahead of the cluster's log; commits other
/// nodes appended arrive by following the stream.
pub struct ClusterLink {
    /// What the node last learned of the cluster, for `GET /api/v1/cluster`.
    pub snapshot: RwLock<ClusterSnapshot>,
    pub log: crate::log::jetstream::StreamLog,
    /// Job output, beside the log.
    pub output: crate::log::jetstream::JobLogStream,
    /// The runtime the stream's client runs on; the writer thread blocks on it.
    pub runtime: tokio::runtime::Handle,
    /// Whether this node leads: decides and appends. The election sets it; a failed append
    /// clears it.
    pub leading: Arc<AtomicBool>,
}

/// What a node says of itself in the cluster's registry, and the leader in its key.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeInfo {
    pub name: String,
    /// `host:port` of its HTTP API.
    pub addr: String,
    /// The last commit it has applied.
    pub applied_seq: u64,
    pub leads: bool,
}

/// The cluster as one node last saw it (refreshed with each election round).
#[derive(Clone, Debug, Default)]
pub struct ClusterSnapshot {
    pub node: String,
    pub leader: Option<NodeInfo>,
    pub nodes: Vec<NodeInfo>,
    pub stream: Option<crate::log::jetstream::StreamStatus>,
}

impl ClusterLink {
    pub fn leads(&self) -> bool {
        self.leading.load(Ordering::Acquire)
    }
}

#[derive(Clone, Default)]
pub struct Options {
    pub sync: SyncMode,
    pub rules: Rules,
    /// The size new WAL segments are preallocated to (0: 16 MiB).
    pub wal_segment_bytes: u64,
    /// A snapshot of the state is saved once this many commits have been made since the last
    /// one (0: 50,000)...
    pub snapshot_commits: u64,
    /// ...or once this many seconds have passed with any commit since the last one (0: 300).
    pub snapshot_secs: u64,
    /// Ended builds per project kept in memory (0: [`domain::HOT_ENDED_BUILDS`]). Not a
    /// server flag: every open of one data dir must use the same value (it decides the
    /// digest), and only tests choose another, to send builds to the store quickly.
    pub hot_window: usize,
    /// Cluster mode's log (see [`ClusterLink`]); `None` runs on the local store alone.
    pub cluster: Option<Arc<ClusterLink>>,
}

const DEFAULT_SNAPSHOT_COMMITS: u64 = 50_000;
const DEFAULT_SNAPSHOT_SECS: u64 = 300;
/// Snapshots kept: the newest, and one to fall back on if the newest turns out damaged.
const SNAPSHOTS_KEPT: usize = 2;

enum Msg {
    Submit(Box<Submission>, ReplyTo),
    /// Commits read from the cluster's log, in order, with their records.
    Replicate(Vec<(Commit, Vec<u8>)>),
    /// Nothing to do but close windows of coalesced refusals that have run out, and forget
    /// renewals of jobs that are no longer running.
    Tick,
    Close,
}

/// Refusals with these codes are logged once per principal per window; repeats within the
/// window are answered but only counted, and the count is logged when the window closes
/// (DESIGN rule 4: a flood of refused calls must not grow the log without bound).
const COALESCED_CODES: &[&str] = &["rate_limited"];
const COALESCE_WINDOW_MS: Millis = 60_000;

struct Window {
    plane: Plane,
    op: String,
    status: u16,
    opened_at: Millis,
    repeats: u64,
    first_at: Millis,
    last_at: Millis,
}

/// What the writer counts, for `/metrics`. The instruments are shared handles: the server
/// registers clones of them, and the writer updates them once a group is durable.
#[derive(Clone, Debug)]
pub struct WriterMetrics {
    /// Commits made durable by this node, by plane and outcome.
    pub commits: Family<CommitLabels, Counter>,
    /// Commits per group commit (one write and one `fdatasync` each).
    pub group_size: Histogram,
    /// Seconds from a command's submission until its commit is durable and it is answered.
    pub latency: Histogram,
    /// Watch fires skipped because the watch's previous build still ran.
    pub fires_skipped: Counter,
    /// Watch runs that passed unfired (downtime) and were folded into one catch-up fire.
    pub fires_missed: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommitLabels {
    pub plane: &'static str,
    pub outcome: &'static str,
}

impl Default for WriterMetrics {
    fn default() -> Self {
        WriterMetrics {
            commits: Family::default(),
            // 1 to 1024, the most one group holds.
            group_size: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            // 50 µs to about 1.6 s.
            latency: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            fires_skipped: Counter::default(),
            fires_missed: Counter::default(),
        }
    }
}

pub struct Control {
    tx: mpsc::Sender<Msg>,
    /// The head seq of the readable state, for anyone waiting for something to change.
    changes: watch::Receiver<u64>,
    state: Arc<RwLock<State>>,
    store: Arc<Store>,
    renewals: Renewals,
    writer: Mutex<Option<JoinHandle<()>>>,
    snapshots: Mutex<Option<Snapshots>>,
    scrub: Mutex<Option<Scrub>>,
    /// The data dir, where snapshots go.
    dir: PathBuf,
    /// Submissions waiting for their answer.
    in_flight: AtomicUsize,
    cluster: Option<Arc<ClusterLink>>,
    /// A full lease, for [`Control::grant_fresh_leases`].
    lease_ms: Millis,
    metrics: WriterMetrics,
}

/// Counts a submission in flight until it is dropped (answered, or its caller went away).
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Records a committed answer's seq for the request around it, if a door asked.
fn note_seq(answer: &Result<Submitted, ControlError>) {
    if let Ok(Submitted { seq: Some(seq), .. }) = answer {
        let _ = COMMIT_SEQ.try_with(|c| c.set(Some(*seq)));
    }
}

/// How long a lone submitter yields for its answer before it parks.
const REPLY_SPIN: std::time::Duration = std::time::Duration::from_micros(400);

/// The background check of the commits before the snapshot a start began from.
struct Scrub {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: JoinHandle<()>,
}

impl Scrub {
    /// Verifies the chain through `through` on its own thread. Damage found there stops the
    /// store (every later command is refused, naming it) and is logged as an error: the
    /// state served came from a snapshot, but the history behind it is no longer intact.
    fn start(store: Arc<Store>, through: u64) -> std::io::Result<Scrub> {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("reeve-scrub".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                match store.scrub(through, &flag) {
                    Ok(()) if flag.load(std::sync::atomic::Ordering::Relaxed) => {}
                    Ok(()) => tracing::info!(
                        through,
                        took_ms = started.elapsed().as_millis() as u64,
                        "the commits before the snapshot verify"
                    ),
                    Err(e) => {
                        tracing::error!("{e}");
                        store.fail(e.to_string());
                    }
                }
            })?;
        Ok(Scrub { stop, handle })
    }

    fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.handle.join();
    }
}

/// The thread that saves snapshots of the readable state, and how to stop it.
struct Snapshots {
    stop: std::sync::mpsc::Sender<()>,
    /// Returns the seq of the last snapshot it saved (or started from).
    handle: JoinHandle<u64>,
}

impl Snapshots {
    /// Stops the thread; the seq of the newest snapshot on disk.
    fn stop(self) -> u64 {
        let _ = self.stop.send(());
        self.handle.join().unwrap_or(u64::MAX)
    }
}

/// Saves a snapshot of the readable state whenever enough commits or enough time have gone by.
/// The writer waits only while the state is cloned under the read lock (it publishes under the
/// write lock); encoding and writing happen on this thread, off every lock.
fn snapshot_loop(
    dir: PathBuf,
    store: Arc<Store>,
    shared: Arc<RwLock<State>>,
    every_commits: u64,
    every: std::time::Duration,
    mut last_seq: u64,
    stop: std::sync::mpsc::Receiver<()>,
) -> u64 {
    let mut last_at = std::time::Instant::now();
    loop {
        match stop.recv_timeout(std::time::Duration::from_millis(200)) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            _ => return last_seq,
        }
        let head = shared.read().head_seq;
        if head == last_seq || (head - last_seq < every_commits && last_at.elapsed() < every) {
            continue;
        }
        let started = std::time::Instant::now();
        let state = shared.read().clone();
        let held = started.elapsed();
        // Saved only once the store durably holds its commits, their audit entries and the
        // builds they sent out of memory, so that a start from it never needs them from before
        // it. Under a load the store takes a while to catch up with; the snapshot waits for it
        // rather than giving up, or a busy server would save none.
        while store.durable_seq() < state.head_seq {
            if stop.recv_timeout(std::time::Duration::from_millis(50))
                != Err(std::sync::mpsc::RecvTimeoutError::Timeout)
            {
                return last_seq;
            }
        }
        match save_snapshot(&dir, &state) {
            Ok(bytes) => tracing::info!(
                seq = state.head_seq,
                bytes,
                writer_blocked_us = held.as_micros() as u64,
                took_ms = started.elapsed().as_millis() as u64,
                "snapshot saved"
            ),
            // Nothing is lost: the next start folds a longer tail.
            Err(e) => tracing::warn!(error = %e, "could not save a snapshot"),
        }
        last_seq = state.head_seq;
        last_at = std::time::Instant::now();
    }
}

/// Saves `state` as a snapshot under the data dir `dir` (and prunes older ones); returns the
/// size of its encoding.
pub fn save_snapshot(dir: &Path, state: &State) -> Result<usize, String> {
    let payload = postcard::to_allocvec(state).map_err(|e| format!("encoding the state: {e}"))?;
    let dir = snapshot_dir(dir);
    snapshot::save(
        &dir,
        State::SNAPSHOT_LAYOUT,
        state.head_seq,
        &state.head_hash,
        &payload,
    )
    .map_err(|e| e.to_string())?;
    snapshot::prune(&dir, SNAPSHOTS_KEPT).map_err(|e| e.to_string())?;
    Ok(payload.len())
}

/// Lease renewals (job → when its renewed lease runs out), held in memory: a heartbeat decides
/// nothing, so it is not a commit. Claims, finishes, aborts and expiries are. The writer
/// renews; the lease timer reads them to know whether a sweep is due.
type Renewals = Arc<Mutex<HashMap<Uuid, Millis>>>;

fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// Rebuilds the state from every commit in the store, verifying the chain on the way. A
/// record that does not decode or chain is damage, named by its seq.
pub fn replay(store: &Store) -> Result<State, LogError> {
    replay_from(store, State::default())
}

/// [`replay`] onto `genesis` (an empty state, e.g. [`State::with_hot_window`]).
pub fn replay_from(store: &Store, genesis: State) -> Result<State, LogError> {
    fold_tail(store, genesis, Written::default())
}

/// Audit entries written to the index at a time while a fold rebuilds it.
const INDEX_BATCH: usize = 8192;

/// How far the derived trees on disk hold what the commits asked of them: the fold writes
/// what comes after (they are behind the log after a crash, or in a data dir written before
/// they existed). `None`: write nothing.
#[derive(Clone, Copy, Debug, Default)]
struct Written {
    audit: Option<u64>,
    cold: Option<u64>,
}

/// Folds every commit after `state`'s head into it, checking that they chain from that head,
/// and writes the audit entries and cold builds of the commits after what `written` says.
fn fold_tail(store: &Store, mut state: State, written: Written) -> Result<State, LogError> {
    let mut verifier = Verifier {
        head_seq: state.head_seq,
        head_hash: state.head_hash,
    };
    let mut entries = Vec::new();
    let mut cold = Vec::new();
    let mut ops = Vec::new();
    for commit in store.scan(state.head_seq + 1) {
        let checked = commit.and_then(|c| verifier.check(&c).map(|()| c));
        match checked {
            Ok(c) => {
                let entry = state.apply_with(&c, &mut ops);
                if written.audit.is_some_and(|through| c.seq > through) {
                    entries.push(entry);
                    if entries.len() >= INDEX_BATCH {
                        store.index_audit(&entries)?;
                        entries.clear();
                    }
                }
                if written.cold.is_some_and(|through| c.seq > through) {
                    cold.extend(ops.drain(..).map(|op| (c.seq, op)));
                    if cold.len() >= INDEX_BATCH {
                        store.write_cold(&cold, c.seq)?;
                        cold.clear();
                    }
                } else {
                    ops.clear();
                }
            }
            Err(LogError::Corrupt { seq, why }) => return Err(store.damaged_at(seq, why)),
            Err(e) => return Err(e),
        }
    }
    store.index_audit(&entries)?;
    if written.cold.is_some_and(|through| state.head_seq > through) {
        store.write_cold(&cold, state.head_seq)?;
    }
    Ok(state)
}

fn snapshot_dir(dir: &Path) -> PathBuf {
    dir.join("snapshots")
}

/// The state as of the log's head: the newest usable snapshot plus the commits after it, or a
/// fold from genesis when there is none. A snapshot that cannot be used is skipped with a
/// warning saying why; damage in the log itself is still refused.
/// Returns the state and the seq of the snapshot it started from (0: the whole log was folded).
pub fn restore(store: &Store, dir: &Path) -> Result<(State, u64), LogError> {
    restore_from(store, dir, State::default())
}

/// [`restore`], folding onto `genesis` when no snapshot is usable.
pub fn restore_from(store: &Store, dir: &Path, genesis: State) -> Result<(State, u64), LogError> {
    let snapshots = match snapshot::list(&snapshot_dir(dir)) {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list snapshots; folding the whole log");
            Vec::new()
        }
    };
    let last = store.last_seq()?;
    let indexed = match store.audit_indexed_through() {
        Ok(n) => n,
        // The index is derived from the log: damage to it costs a rebuild, not the server.
        Err(LogError::Corrupt { seq, why }) => {
            tracing::warn!(
                seq,
                "the audit index is damaged ({why}); it is rebuilt from the log"
            );
            store.clear_audit_index()?;
            0
        }
        Err(e) => return Err(e),
    };
    let cold = store.cold_through()?;
    let written = Written {
        audit: Some(indexed),
        cold: Some(cold),
    };
    for (_, path) in snapshots {
        let loading = std::time::Instant::now();
        match load_snapshot(store, &path, last, indexed.min(cold)) {
            Ok(state) => {
                let seq = state.head_seq;
                let load_ms = loading.elapsed().as_millis() as u64;
                let started = std::time::Instant::now();
                let state = fold_tail(store, state, written)?;
                tracing::info!(
                    snapshot = %path.display(),
                    seq,
                    load_ms,
                    tail = state.head_seq - seq,
                    fold_ms = started.elapsed().as_millis() as u64,
                    "state restored from a snapshot and the commits after it"
                );
                return Ok((state, seq));
            }
            Err(why) => tracing::warn!(
                snapshot = %path.display(),
                "snapshot skipped: {why}; trying an older one, or the whole log"
            ),
        }
    }
    if indexed < last {
        tracing::info!(
            indexed,
            last,
            "the audit index is behind the log; it is rebuilt while the log is folded"
        );
    }
    Ok((fold_tail(store, genesis, written)?, 0))
}

/// A snapshot's state, if it can be trusted as the state at a commit the log holds.
fn load_snapshot(store: &Store, path: &Path, last: u64, indexed: u64) -> Result<State, String> {
    let snap = snapshot::read(path).map_err(|e| e.to_string())?;
    if snap.layout != State::SNAPSHOT_LAYOUT {
        return Err(format!(
            "it was written in state layout {}, this build reads layout {}",
            snap.layout,
            State::SNAPSHOT_LAYOUT
        ));
    }
    if snap.seq > last {
        return Err(format!(
            "it was taken at seq {}, but the log ends at {last}",
            snap.seq
        ));
    }
    if snap.seq > indexed {
        // The audit entries and cold builds between what the store holds and the snapshot could
        // only be written again by folding the commits before the snapshot.
        return Err(format!(
            "it was taken at seq {}, but the audit index and cold builds on disk end at {indexed}",
            snap.seq
        ));
    }
    let on_chain = store
        .get(snap.seq)
        .map_err(|e| format!("reading commit {}: {e}", snap.seq))?
        .is_some_and(|c| c.hash == snap.hash);
    if !on_chain {
        return Err(format!(
            "its head (seq {}) is not the commit the log holds at that seq",
            snap.seq
        ));
    }
    let state: State = postcard::from_bytes(&snap.payload)
        .map_err(|e| format!("its state does not decode: {e}"))?;
    if state.head_seq != snap.seq || state.head_hash != snap.hash {
        return Err(format!(
            "its state is at seq {}, not at the seq {} its header names",
            state.head_seq, snap.seq
        ));
    }
    Ok(state)
}

impl Control {
    /// Opens the log under `dir`, replays it, and starts the writer.
    pub fn open(dir: &Path, options: Options) -> Result<Control, ControlError> {
        let opening = std::time::Instant::now();
        let store = Arc::new(Store::open_with(
            dir,
            options.sync,
            options.wal_segment_bytes,
        )?);
        tracing::info!(
            took_ms = opening.elapsed().as_millis() as u64,
            "the log is open and checked"
        );
        for note in store.notes() {
            if note.is_warning() {
                tracing::warn!(dir = %dir.display(), "{note}");
            } else {
                tracing::info!(dir = %dir.display(), "{note}");
            }
        }
        let genesis = match options.hot_window {
            0 => State::default(),
            n => State::with_hot_window(n),
        };
        let (state, snapshot_seq) = restore_from(&store, dir, genesis)?;
        store.start_background();
        // Renewals did not survive the restart, and the runners could not reach a stopped
        // server: every running job starts with a full lease, so the restart itself expires
        // nothing.
        let fresh = now_ms().saturating_add(options.rules.lease_ms());
        let renewals: Renewals = Arc::new(Mutex::new(
            state
                .expired_leases(Millis::MAX)
                .map(|j| (j.id, fresh))
                .collect(),
        ));
        let shared = Arc::new(RwLock::new(state.clone()));
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let (changed, changes) = watch::channel(state.head_seq);
        let metrics = WriterMetrics::default();
        let writer = Writer {
            metrics: metrics.clone(),
            cluster: options.cluster.clone(),
            windows: HashMap::new(),
            changed,
            store: store.clone(),
            shared: shared.clone(),
            renewals: renewals.clone(),
            last_at: state.head_at,
            working: state,
            rules: options.rules,
        };
        let handle = std::thread::Builder::new()
            .name("reeve-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| LogError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        let (stop, stopped) = std::sync::mpsc::channel();
        let every_commits = match options.snapshot_commits {
            0 => DEFAULT_SNAPSHOT_COMMITS,
            n => n,
        };
        let every = std::time::Duration::from_secs(match options.snapshot_secs {
            0 => DEFAULT_SNAPSHOT_SECS,
            n => n,
        });
        let snapshots = {
            let (data_dir, store, shared) = (dir.to_path_buf(), store.clone(), shared.clone());
            std::thread::Builder::new()
                .name("reeve-snapshots".into())
                .spawn(move || {
                    snapshot_loop(
                        data_dir,
                        store,
                        shared,
                        every_commits,
                        every,
                        snapshot_seq,
                        stopped,
                    )
                })
                .map_err(|source| LogError::Io {
                    path: dir.display().to_string(),
                    source,
                })?
        };
        let scrub = if snapshot_seq > 0 {
            Some(
                Scrub::start(store.clone(), snapshot_seq).map_err(|source| LogError::Io {
                    path: dir.display().to_string(),
                    source,
                })?,
            )
        } else {
            None
        };
        Ok(Control {
            tx,
            changes,
            state: shared,
            store,
            renewals,
            scrub: Mutex::new(scrub),
            writer: Mutex::new(Some(handle)),
            snapshots: Mutex::new(Some(Snapshots {
                stop,
                handle: snapshots,
            })),
            dir: dir.to_path_buf(),
            in_flight: AtomicUsize::new(0),
            cluster: options.cluster,
            lease_ms: options.rules.lease_ms(),
            metrics,
        })
    }

    /// Whether this node may decide commands: always on its own, while it leads in a cluster.
    pub fn leads(&self) -> bool {
        self.cluster.as_ref().is_none_or(|c| c.leads())
    }

    /// Gives every running job a full lease from now. A node that starts leading has none of
    /// the renewals the last leader held in memory, just as a restarted server has none:
    /// without this, the change of leader itself would end jobs whose runners are alive.
    pub fn grant_fresh_leases(&self) {
        let fresh = now_ms().saturating_add(self.lease_ms);
        let running: Vec<Uuid> = self
            .state
            .read()
            .expired_leases(Millis::MAX)
            .map(|j| j.id)
            .collect();
        let mut renewals = self.renewals.lock();
        for id in running {
            renewals.insert(id, fresh);
        }
    }

    /// Appends output to a job's log (at most `cap` bytes of it are kept); returns the log's
    /// length. In a cluster the chunk also goes to the output stream, so every node has it.
    pub async fn append_log(&self, job: Uuid, bytes: &[u8], cap: u64) -> Result<u64, LogError> {
        let before = self.store.log_len(job)?;
        let after = self.store.append_log(job, bytes, cap)?;
        if let Some(cluster) = &self.cluster
            && after > before
        {
            let chunk = self.store.read_log(job, before)?;
            cluster.output.append(job, before, chunk).await?;
        }
        Ok(after)
    }

    /// Deletes these jobs' output from the cluster's output stream (job log retention; each
    /// node deletes its own copy).
    pub async fn purge_cluster_output(&self, jobs: &[Uuid]) -> Result<(), LogError> {
        if let Some(cluster) = &self.cluster {
            for job in jobs {
                cluster.output.purge(*job).await?;
            }
        }
        Ok(())
    }

    /// Cluster mode's log, if this node runs in a cluster.
    pub fn cluster(&self) -> Option<&Arc<ClusterLink>> {
        self.cluster.as_ref()
    }

    /// Hands commits read from the cluster's log to the writer, which writes and applies those
    /// this node does not have yet. Waits while the writer's queue is full.
    pub async fn replicate(&self, commits: Vec<(Commit, Vec<u8>)>) -> Result<(), ControlError> {
        self.tx
            .send(Msg::Replicate(commits))
            .await
            .map_err(|_| ControlError::Closed)
    }

    /// Decides, records and applies one command; answers once its commit is as durable as the
    /// sync mode promises.
    pub async fn submit(&self, mut submission: Submission) -> Result<Submitted, ControlError> {
        // Every door comes through here, so this is where what a caller sent is held to the
        // limits of `domain::bounds` before anything of it can be recorded.
        submission.command = domain::bounds::bound(submission.command);
        if submission.request_id.len() > domain::bounds::REQUEST_ID {
            submission.request_id = Uuid::now_v7().to_string();
        }
        if submission
            .idempotency_key
            .as_ref()
            .is_some_and(|k| k.len() > domain::bounds::IDEMPOTENCY_KEY)
        {
            // The doors refuse such keys before they get here; one that slips through is
            // dropped rather than stored.
            submission.idempotency_key = None;
        }
        if !self.leads() {
            return Err(ControlError::NotLeader);
        }
        let queued = std::time::Instant::now();
        let answer = self.submit_queued(submission).await;
        if let Ok(Submitted { seq: Some(_), .. }) = &answer {
            self.metrics.latency.observe(queued.elapsed().as_secs_f64());
        }
        answer
    }

    async fn submit_queued(&self, submission: Submission) -> Result<Submitted, ControlError> {
        let (tx, mut rx) = oneshot::channel();
        let alone = self.in_flight.fetch_add(1, Ordering::Relaxed) == 0;
        let _counted = InFlight(&self.in_flight);
        self.tx
            .send(Msg::Submit(Box::new(submission), Some(tx)))
            .await
            .map_err(|_| ControlError::Closed)?;
        if alone {
            // A lone submitter's answer comes back within one commit (an fdatasync, ~100 µs
            // here). Yielding until then, instead of parking, keeps this worker thread awake
            // for it: a parked thread is woken through the kernel, which on a virtual machine
            // costs tens of microseconds, a third of the whole command. Yielding still lets
            // every other task run; under load (anyone else in flight) it is not done at all.
            let start = std::time::Instant::now();
            while start.elapsed() < REPLY_SPIN {
                match rx.try_recv() {
                    Ok(answer) => {
                        note_seq(&answer);
                        return answer;
                    }
                    Err(oneshot::error::TryRecvError::Closed) => return Err(ControlError::Closed),
                    Err(oneshot::error::TryRecvError::Empty) => tokio::task::yield_now().await,
                }
            }
        }
        let answer = rx.await.map_err(|_| ControlError::Closed)?;
        note_seq(&answer);
        answer
    }

    /// The readable state. Hold the guard briefly and never across an `.await`.
    pub fn state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Whether a running job's lease has run out by `now`, renewals included: a lease sweep
    /// is due.
    pub fn leases_due(&self, now: Millis) -> bool {
        let renewals = self.renewals.lock();
        self.state
            .read()
            .lapsed_leases(now, &renewals)
            .next()
            .is_some()
    }

    /// Lets the writer close windows of coalesced refusals that have run out.
    pub fn tick(&self) {
        let _ = self.tx.try_send(Msg::Tick);
    }

    /// Wakes whenever commits have been applied to the readable state.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// The writer's instruments, for `/metrics`.
    pub fn metrics(&self) -> &WriterMetrics {
        &self.metrics
    }

    /// Messages waiting for the writer (commands, and commits read from a cluster's log).
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Whether the writer is running and the log takes writes: the state was restored, and
    /// nothing has stopped the store since.
    pub fn is_running(&self) -> bool {
        self.writer
            .lock()
            .as_ref()
            .is_some_and(|h| !h.is_finished())
            && self.store.failure().is_none()
    }

    /// Stops accepting commands, lets everything already queued finish, flushes the log and
    /// waits for the writer to exit.
    pub async fn close(&self) {
        let scrub = self.scrub.lock().take();
        if let Some(scrub) = scrub {
            let _ = tokio::task::spawn_blocking(move || scrub.stop()).await;
        }
        let snapshots = self.snapshots.lock().take();
        let snapshot_seq = match snapshots {
            Some(snapshots) => tokio::task::spawn_blocking(move || snapshots.stop())
                .await
                .unwrap_or(u64::MAX),
            None => u64::MAX,
        };
        let _ = self.tx.send(Msg::Close).await;
        let handle = self.writer.lock().take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        // The writer's last act was a checkpoint: the store durably holds everything, so the state
        // can be saved as it is, and the next start folds nothing. Live state only, so this
        // is quick; if it fails, the next start folds the commits since the last snapshot.
        let state = self.state.read().clone();
        if state.head_seq > snapshot_seq
            && snapshot_seq != u64::MAX
            && self.store.durable_seq() >= state.head_seq
        {
            let dir = self.dir.clone();
            let saved = tokio::task::spawn_blocking(move || save_snapshot(&dir, &state)).await;
            match saved {
                Ok(Ok(bytes)) => tracing::info!(bytes, "snapshot saved at shutdown"),
                Ok(Err(e)) => tracing::warn!(error = %e, "could not save a snapshot at shutdown"),
                Err(e) => tracing::warn!(error = %e, "could not save a snapshot at shutdown"),
            }
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        if let Some(scrub) = self.scrub.lock().take() {
            scrub.stop();
        }
        if let Some(snapshots) = self.snapshots.lock().take() {
            snapshots.stop();
        }
        if let Some(handle) = self.writer.lock().take() {
            let _ = self.tx.try_send(Msg::Close);
            let _ = handle.join();
        }
    }
}

struct Writer {
    cluster: Option<Arc<ClusterLink>>,
    windows: HashMap<(Principal, String), Window>,
    changed: watch::Sender<u64>,
    store: Arc<Store>,
    shared: Arc<RwLock<State>>,
    working: State,
    renewals: Renewals,
    rules: Rules,
    last_at: Millis,
    metrics: WriterMetrics,
}

type ReplyTo = Option<oneshot::Sender<Result<Submitted, ControlError>>>;

/// How long the writer polls for the next command before it parks. Parking and being woken
/// costs tens of microseconds on a virtual machine (the vCPU halts), which a lone client pays
/// on every command; polling a little first keeps that off its path (measured with
/// `benches/vs_postgres.sh`: about +20 % at one client; a steady trickle of commands costs at
/// most this much CPU per command).
const SPIN: std::time::Duration = std::time::Duration::from_micros(150);

fn next_message(rx: &mut mpsc::Receiver<Msg>) -> Option<Msg> {
    let start = std::time::Instant::now();
    loop {
        match rx.try_recv() {
            Ok(msg) => return Some(msg),
            Err(mpsc::error::TryRecvError::Disconnected) => return None,
            Err(mpsc::error::TryRecvError::Empty) if start.elapsed() < SPIN => {
                std::hint::spin_loop();
            }
            Err(mpsc::error::TryRecvError::Empty) => return rx.blocking_recv(),
        }
    }
}
/// An answer, and the sealed commit that must be durable before it is sent.
type Processed = (Answer, Option<Sealed>);

/// A commit ready to be written (already folded into the working copy): its seq, its record
/// and its audit entry.
struct Sealed {
    seq: u64,
    record: Vec<u8>,
    entry: AuditEntry,
    cold: Vec<domain::ColdOp>,
    /// Fires this commit skipped, and runs it reports missed, for the metrics.
    fires: (u64, u64),
}

fn commit_labels(e: &AuditEntry) -> CommitLabels {
    CommitLabels {
        plane: e.plane.as_str(),
        outcome: if e.accepted { "accepted" } else { "rejected" },
    }
}

/// Watch fires skipped and runs missed in these events.
fn fire_tally(events: &[Event]) -> (u64, u64) {
    events.iter().fold((0, 0), |(skipped, missed), e| match e {
        Event::WatchSkipped { .. } => (skipped + 1, missed),
        Event::WatchRan { missed: m, .. } => (skipped, missed + u64::from(*m)),
        _ => (skipped, missed),
    })
}

enum Answer {
    Committed(u64, Result<Reply, Rejection>),
    /// Answered without a commit (see [`Submitted`]).
    Unlogged(Result<Reply, Rejection>),
    Failed(ControlError),
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut closing = false;
        while !closing {
            let Some(first) = next_message(&mut rx) else {
                break;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(msg) => batch.push(msg),
                    Err(_) => break,
                }
            }
            let mut pending = Vec::with_capacity(batch.len());
            if batch.iter().any(|m| matches!(m, Msg::Close)) {
                closing = true;
            }
            if batch.iter().any(|m| matches!(m, Msg::Tick)) {
                let working = &self.working;
                self.renewals.lock().retain(|id, _| {
                    working
                        .jobs
                        .get(id)
                        .is_some_and(|j| j.state == domain::JobState::Running)
                });
            }
            let leads = self.leads();
            if leads {
                self.close_windows(now_ms(), closing, &mut pending);
            } else {
                // Another node logs refusals now; what this one counted is dropped with its
                // leadership.
                self.windows.clear();
            }
            let mut replicated = Vec::new();
            for msg in batch {
                match msg {
                    Msg::Submit(s, reply_to) if leads => pending.push((self.process(*s), reply_to)),
                    Msg::Submit(_, reply_to) => {
                        pending.push(((Answer::Failed(ControlError::NotLeader), None), reply_to))
                    }
                    Msg::Replicate(commits) => replicated.extend(commits),
                    Msg::Tick | Msg::Close => {}
                }
            }
            // What the cluster's log already holds goes first: this node's own decisions
            // follow it.
            if !replicated.is_empty() {
                self.replicate(replicated);
            }
            self.commit_group(pending);
        }
        rx.close();
        while let Ok(msg) = rx.try_recv() {
            if let Msg::Submit(_, Some(reply_to)) = msg {
                let _ = reply_to.send(Err(ControlError::Closed));
            }
        }
        if let Err(e) = self.store.flush() {
            tracing::error!(error = %e, "final flush of the log failed");
        }
    }

    /// Logs one commit for each window of coalesced refusals that has run out (all of them
    /// when closing).
    fn close_windows(&mut self, now: Millis, all: bool, pending: &mut Vec<(Processed, ReplyTo)>) {
        let due: Vec<(Principal, String)> = self
            .windows
            .iter()
            .filter(|(_, w)| all || now - w.opened_at >= COALESCE_WINDOW_MS)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let Some(w) = self.windows.remove(&key) else {
                continue;
            };
            if w.repeats == 0 {
                continue;
            }
            let summary = Submission {
                principal: key.0,
                plane: w.plane,
                request_id: String::new(),
                idempotency_key: None,
                command: Command::Coalesced {
                    op: w.op,
                    status: w.status,
                    code: key.1,
                    count: w.repeats,
                    first_at: w.first_at,
                    last_at: w.last_at,
                },
            };
            pending.push((self.process(summary), None));
        }
    }

    /// Whether this refusal only counts towards an open window instead of being logged.
    fn coalesced(&mut self, s: &Submission, r: &Rejection, at: Millis) -> bool {
        if matches!(s.command, Command::Coalesced { .. })
            || !COALESCED_CODES.contains(&r.code.as_str())
        {
            return false;
        }
        let key = (s.principal, r.code.clone());
        match self.windows.get_mut(&key) {
            Some(w) if at - w.opened_at < COALESCE_WINDOW_MS => {
                if w.repeats == 0 {
                    w.first_at = at;
                }
                w.repeats += 1;
                w.last_at = at;
                true
            }
            _ => {
                // The window's earlier repeats, if any, were logged at the top of this batch.
                self.windows.insert(
                    key,
                    Window {
                        plane: s.plane,
                        op: s.command.op().to_string(),
                        status: r.status,
                        opened_at: at,
                        repeats: 0,
                        first_at: at,
                        last_at: at,
                    },
                );
                false
            }
        }
    }

    /// Decides one submission against the working state and seals its commit.
    fn process(&mut self, s: Submission) -> Processed {
        if let Some(key) = &s.idempotency_key
            && let Some(first) = self.working.remembered(s.principal, key, &s.command)
        {
            return (Answer::Unlogged(first), None);
        }
        // Commit times never go backwards, even if the wall clock does.
        let at = now_ms().max(self.last_at);
        self.last_at = at;
        let renewals = match s.command {
            // Only the renewals of leases that ran out by their last commit can matter.
            Command::ExpireLeases => {
                let held = self.renewals.lock();
                self.working
                    .expired_leases(at)
                    .filter_map(|j| held.get(&j.id).map(|until| (j.id, *until)))
                    .collect()
            }
            _ => HashMap::new(),
        };
        // A command about an ended build that left memory is decided with it back in memory
        // (so it reads as it did before the build left); a commit that changes it carries it.
        let history: &dyn domain::History = &*self.store;
        let recalled = match domain::to_recall(&self.working, history, &s.command) {
            Ok(r) => r,
            Err(why) => return (Answer::Failed(ControlError::History(why)), None),
        };
        let cold_prunable = match &s.command {
            Command::PruneJobLogs { before } => {
                match history.cold_prunable(*before, domain::MAX_LOGS_PRUNED) {
                    Ok(jobs) => jobs,
                    Err(why) => return (Answer::Failed(ControlError::History(why)), None),
                }
            }
            _ => Vec::new(),
        };
        let ctx = Ctx {
            at,
            principal: s.principal,
            plane: s.plane,
            new_id: Uuid::now_v7(),
            rules: self.rules,
            renewals,
            cold_prunable,
        };
        let tentative = (!recalled.is_empty()).then(|| self.working.with_recalled(&recalled));
        let judge = tentative.as_ref().unwrap_or(&self.working);
        let decided = match &s.idempotency_key {
            Some(key) => judge
                .idempotency_conflict(s.principal, key, &s.command)
                .map_err(Refused::from),
            None => Ok(()),
        }
        .and_then(|()| domain::decide(judge, &s.command, &ctx))
        .map_err(Rejection::from)
        .map(|mut events| {
            let back = judge.recalls_needed(&recalled, &events);
            if !back.is_empty() {
                events.insert(0, Event::BuildsRecalled { builds: back });
            }
            events
        });
        drop(tentative);
        if let Err(r) = &decided
            && self.coalesced(&s, r, at)
        {
            return (Answer::Unlogged(Err(r.clone())), None);
        }
        match (&s.command, &decided) {
            (Command::Heartbeat { job, .. }, Ok(events)) => {
                return (Answer::Unlogged(Ok(self.renew(*job, events))), None);
            }
            // A sweep that ends nothing (a renewal or a finish got there first) decides nothing.
            (Command::ExpireLeases, Ok(events)) if events.is_empty() => {
                return (Answer::Unlogged(Ok(Reply::Nothing)), None);
            }
            _ => {}
        }
        let mut command = s.command;
        let (outcome, events) = match decided {
            Ok(events) => (Outcome::Accepted, events),
            Err(mut r) => {
                // A refusal records no more than a few KiB, however much was sent.
                if let Some(summary) = domain::bounds::summarize_refused(&command, &r) {
                    command = summary;
                }
                domain::bounds::clip(&mut r.reason, domain::bounds::TEXT);
                (
                    Outcome::Rejected {
                        status: r.status,
                        code: r.code,
                        reason: r.reason,
                        field: r.field,
                    },
                    Vec::new(),
                )
            }
        };
        let fires = fire_tally(&events);
        let body = CommitBody {
            at,
            meta: Meta {
                principal: s.principal,
                plane: s.plane,
                request_id: s.request_id,
                idempotency_key: s.idempotency_key,
                command,
            },
            outcome,
            events,
        };
        let seq = self.working.head_seq + 1;
        match Commit::seal(seq, self.working.head_hash, body) {
            Ok((commit, record)) => {
                let mut cold = Vec::new();
                let (entry, reply) = self.working.apply_replying(&commit, &mut cold);
                (
                    Answer::Committed(seq, reply),
                    Some(Sealed {
                        seq,
                        record,
                        entry,
                        cold,
                        fires,
                    }),
                )
            }
            Err(e) => (Answer::Failed(e.into()), None),
        }
    }

    fn leads(&self) -> bool {
        self.cluster.as_ref().is_none_or(|c| c.leads())
    }

    /// In cluster mode, appends the group to the cluster's log first. Any failure ends this
    /// node's leadership: either another node appended first, or whether the group landed is
    /// unknown until the stream is read again; either way this node must follow before it may
    /// decide again.
    fn append_to_cluster(&self, records: &[(u64, Vec<u8>)]) -> Result<(), LogError> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        if !cluster.leads() {
            return Err(LogError::Failed(
                "this node stopped leading the cluster before the group was appended".into(),
            ));
        }
        match cluster.runtime.block_on(cluster.log.append(records)) {
            Ok(()) => Ok(()),
            Err(e) => {
                cluster.leading.store(false, Ordering::Release);
                tracing::warn!(error = %e, "append to the cluster's log failed; this node steps down");
                Err(LogError::Failed(e.to_string()))
            }
        }
    }

    /// Writes and applies commits read from the cluster's log that this node does not have
    /// yet. A commit that does not follow this node's head is damage or a fork: it is reported
    /// and nothing after it is applied.
    fn replicate(&mut self, commits: Vec<(Commit, Vec<u8>)>) {
        let mut counted = Vec::new();
        let mut records = Vec::new();
        let mut entries = Vec::new();
        let mut cold = Vec::new();
        for (c, record) in commits {
            if c.seq <= self.working.head_seq {
                continue;
            }
            if c.seq != self.working.head_seq + 1 || c.prev_hash != self.working.head_hash {
                tracing::error!(
                    seq = c.seq,
                    head = self.working.head_seq,
                    "a commit from the cluster's log does not follow this node's log; it is not applied"
                );
                break;
            }
            let mut ops = Vec::new();
            let entry = self.working.apply_with(&c, &mut ops);
            let tally = fire_tally(&c.body.events);
            counted.push((commit_labels(&entry), tally));
            entries.push(entry);
            cold.extend(ops.into_iter().map(|op| (c.seq, op)));
            records.push((c.seq, record));
        }
        if records.is_empty() {
            return;
        }
        match self.store.append(records, entries, cold) {
            Ok(()) => {
                self.last_at = self.last_at.max(self.working.head_at);
                let published = self.working.clone();
                let head = published.head_seq;
                let old = std::mem::replace(&mut *self.shared.write(), published);
                drop(old);
                self.changed.send_replace(head);
                for (labels, (skipped, missed)) in &counted {
                    self.metrics.commits.get_or_create(labels).inc();
                    self.metrics.fires_skipped.inc_by(*skipped);
                    self.metrics.fires_missed.inc_by(*missed);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "commits from the cluster's log could not be written here");
                self.working = self.shared.read().clone();
            }
        }
    }

    /// Keeps an accepted heartbeat's renewal in memory and answers it. No renewal means the job
    /// is no longer running (it was aborted): the runner is told to stop.
    fn renew(&mut self, job: Uuid, events: &[Event]) -> Reply {
        let mut renewals = self.renewals.lock();
        match events {
            [
                Event::LeaseRenewed {
                    lease_expires_at, ..
                },
            ] => {
                renewals.insert(job, *lease_expires_at);
                Reply::Heartbeat {
                    abort: false,
                    lease_expires_at: *lease_expires_at,
                }
            }
            _ => {
                let committed = self
                    .working
                    .jobs
                    .get(&job)
                    .and_then(|j| j.lease.as_ref())
                    .map_or(0, |l| l.expires_at);
                Reply::Heartbeat {
                    abort: true,
                    lease_expires_at: renewals.get(&job).copied().unwrap_or(committed),
                }
            }
        }
    }

    fn commit_group(&mut self, pending: Vec<(Processed, ReplyTo)>) {
        let mut records = Vec::new();
        let mut entries = Vec::new();
        let mut cold = Vec::new();
        let mut answers = Vec::with_capacity(pending.len());
        let mut counted = Vec::new();
        let mut fires = (0, 0);
        for ((answer, sealed), reply_to) in pending {
            if let Some(s) = sealed {
                records.push((s.seq, s.record));
                counted.push(commit_labels(&s.entry));
                entries.push(s.entry);
                cold.extend(s.cold.into_iter().map(|op| (s.seq, op)));
                fires = (fires.0 + s.fires.0, fires.1 + s.fires.1);
            }
            answers.push((answer, reply_to));
        }
        let written_count = records.len();
        let written = if records.is_empty() {
            Ok(())
        } else {
            self.append_to_cluster(&records)
                .and_then(|()| self.store.append(records, entries, cold))
        };
        match written {
            Ok(()) => {
                if written_count > 0 {
                    // The working copy is now durable: readers get it whole. Its maps are
                    // persistent, so this clone shares every node with it, and the next batch
                    // copies only the paths it changes. What the old copy alone held is freed
                    // after the lock is let go.
                    let published = self.working.clone();
                    let head = published.head_seq;
                    let old = std::mem::replace(&mut *self.shared.write(), published);
                    drop(old);
                    self.changed.send_replace(head);
                    self.metrics.group_size.observe(written_count as f64);
                    for labels in &counted {
                        self.metrics.commits.get_or_create(labels).inc();
                    }
                    self.metrics.fires_skipped.inc_by(fires.0);
                    self.metrics.fires_missed.inc_by(fires.1);
                }
                for (answer, reply_to) in answers {
                    let Some(reply_to) = reply_to else {
                        continue;
                    };
                    let _ = reply_to.send(match answer {
                        Answer::Committed(seq, result) => Ok(Submitted {
                            seq: Some(seq),
                            result,
                        }),
                        Answer::Unlogged(result) => Ok(Submitted { seq: None, result }),
                        Answer::Failed(e) => Err(e),
                    });
                }
            }
            Err(e) => {
                tracing::error!(error = %e, commits = written_count, "group commit failed");
                // The working copy ran ahead of the disk; fall back to what is durable.
                self.working = self.shared.read().clone();
                let why = e.to_string();
                for reply_to in answers.into_iter().filter_map(|(_, r)| r) {
                    let _ = reply_to.send(Err(ControlError::WriteFailed(why.clone())));
                }
            }
        }
    }
}

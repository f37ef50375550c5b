//! The single writer. Every front door calls [`Control::submit`]; one thread takes whatever is
//! queued, decides each command in order against the evolving state, writes the whole group as
//! one batch, makes it durable once, folds it into the readable state, and only then answers.
//!
//! The writer keeps a private working copy of the state that runs ahead of the disk within a
//! batch; readers see the shared copy, which only ever contains durable commits. If a write
//! fails, the working copy is reset from the shared one and every caller in the batch gets an
//! error: nothing unacknowledged becomes visible, nothing acknowledged is lost.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::domain::{
    self, Command, Ctx, Event, Millis, Plane, Principal, Rejection, Reply, Rules, State,
};
use crate::log::{Commit, CommitBody, LogError, Meta, Outcome, Store, SyncMode};

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
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    pub sync: SyncMode,
    pub rules: Rules,
    /// The size new WAL segments are preallocated to (0: 16 MiB).
    pub wal_segment_bytes: u64,
}

enum Msg {
    Submit(Box<Submission>, ReplyTo),
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

pub struct Control {
    tx: mpsc::Sender<Msg>,
    /// The head seq of the readable state, for anyone waiting for something to change.
    changes: watch::Receiver<u64>,
    state: Arc<RwLock<State>>,
    store: Arc<Store>,
    renewals: Renewals,
    writer: Mutex<Option<JoinHandle<()>>>,
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
    let mut state = State::default();
    for commit in store.replay() {
        match commit {
            Ok(c) => state.apply(&c),
            Err(LogError::Corrupt { seq, why }) => return Err(store.damaged_at(seq, why)),
            Err(e) => return Err(e),
        }
    }
    Ok(state)
}

impl Control {
    /// Opens the log under `dir`, replays it, and starts the writer.
    pub fn open(dir: &Path, options: Options) -> Result<Control, ControlError> {
        let store = Arc::new(Store::open_with(
            dir,
            options.sync,
            options.wal_segment_bytes,
        )?);
        for note in store.notes() {
            if note.is_warning() {
                tracing::warn!(dir = %dir.display(), "{note}");
            } else {
                tracing::info!(dir = %dir.display(), "{note}");
            }
        }
        let state = replay(&store)?;
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
        let writer = Writer {
            windows: HashMap::new(),
            changed,
            store: store.clone(),
            shared: shared.clone(),
            renewals: renewals.clone(),
            last_at: state.audit.last().map_or(0, |e| e.at),
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
        Ok(Control {
            tx,
            changes,
            state: shared,
            store,
            renewals,
            writer: Mutex::new(Some(handle)),
        })
    }

    /// Decides, records and applies one command; answers once its commit is as durable as the
    /// sync mode promises.
    pub async fn submit(&self, submission: Submission) -> Result<Submitted, ControlError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Submit(Box::new(submission), Some(tx)))
            .await
            .map_err(|_| ControlError::Closed)?;
        rx.await.map_err(|_| ControlError::Closed)?
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

    /// Stops accepting commands, lets everything already queued finish, flushes the log and
    /// waits for the writer to exit.
    pub async fn close(&self) {
        let _ = self.tx.send(Msg::Close).await;
        let handle = self.writer.lock().take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        if let Some(handle) = self.writer.lock().take() {
            let _ = self.tx.try_send(Msg::Close);
            let _ = handle.join();
        }
    }
}

struct Writer {
    windows: HashMap<(Principal, String), Window>,
    changed: watch::Sender<u64>,
    store: Arc<Store>,
    shared: Arc<RwLock<State>>,
    working: State,
    renewals: Renewals,
    rules: Rules,
    last_at: Millis,
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
/// An answer, and the sealed record (seq, bytes, commit) that must be durable before it is sent.
type Processed = (Answer, Option<(u64, Vec<u8>, Commit)>);

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
            self.close_windows(now_ms(), closing, &mut pending);
            for msg in batch {
                if let Msg::Submit(s, reply_to) = msg {
                    pending.push((self.process(*s), reply_to));
                }
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
        let ctx = Ctx {
            at,
            principal: s.principal,
            plane: s.plane,
            new_id: Uuid::now_v7(),
            rules: self.rules,
            renewals,
        };
        let decided = match &s.idempotency_key {
            Some(key) => self
                .working
                .idempotency_conflict(s.principal, key, &s.command),
            None => Ok(()),
        }
        .and_then(|()| domain::decide(&self.working, &s.command, &ctx));
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
        let (outcome, events) = match decided {
            Ok(events) => (Outcome::Accepted, events),
            Err(r) => (
                Outcome::Rejected {
                    status: r.status,
                    code: r.code,
                    reason: r.reason,
                    field: r.field,
                },
                Vec::new(),
            ),
        };
        let body = CommitBody {
            at,
            meta: Meta {
                principal: s.principal,
                plane: s.plane,
                request_id: s.request_id,
                idempotency_key: s.idempotency_key,
                command: s.command,
            },
            outcome,
            events,
        };
        let seq = self.working.head_seq + 1;
        match Commit::seal(seq, self.working.head_hash, body) {
            Ok((commit, record)) => {
                self.working.apply(&commit);
                let reply = self.working.reply_for(&commit);
                (Answer::Committed(seq, reply), Some((seq, record, commit)))
            }
            Err(e) => (Answer::Failed(e.into()), None),
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
        let mut commits = Vec::new();
        let mut answers = Vec::with_capacity(pending.len());
        for ((answer, sealed), reply_to) in pending {
            if let Some((seq, record, commit)) = sealed {
                records.push((seq, record));
                commits.push(commit);
            }
            answers.push((answer, reply_to));
        }
        let written = if records.is_empty() {
            Ok(())
        } else {
            self.store.append(records)
        };
        match written {
            Ok(()) => {
                if !commits.is_empty() {
                    let head = {
                        let mut shared = self.shared.write();
                        for c in &commits {
                            shared.apply(c);
                        }
                        shared.head_seq
                    };
                    self.changed.send_replace(head);
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
                tracing::error!(error = %e, commits = commits.len(), "group commit failed");
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

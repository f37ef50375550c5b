//! The single writer. Every front door calls [`Control::submit`]; one thread takes whatever is
//! queued, decides each command in order against the evolving state, writes the whole group as
//! one batch, makes it durable once, folds it into the readable state, and only then answers.
//!
//! The writer keeps a private working copy of the state that runs ahead of the disk within a
//! batch; readers see the shared copy, which only ever contains durable commits. If a write
//! fails, the working copy is reset from the shared one and every caller in the batch gets an
//! error: nothing unacknowledged becomes visible, nothing acknowledged is lost.

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::domain::{self, Command, Ctx, Millis, Plane, Principal, Rejection, Reply, Rules, State};
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

/// The answer to a submission. `seq` is `None` when an `Idempotency-Key` replayed an earlier
/// answer and nothing new was written.
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
}

enum Msg {
    Submit(Box<Submission>, ReplyTo),
    Close,
}

pub struct Control {
    tx: mpsc::Sender<Msg>,
    state: Arc<RwLock<State>>,
    store: Arc<Store>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// Rebuilds the state from every commit in the store, verifying the chain on the way.
pub fn replay(store: &Store) -> Result<State, LogError> {
    let mut state = State::default();
    for commit in store.replay() {
        state.apply(&commit?);
    }
    Ok(state)
}

impl Control {
    /// Opens the log under `dir`, replays it, and starts the writer.
    pub fn open(dir: &Path, options: Options) -> Result<Control, ControlError> {
        let store = Arc::new(Store::open(dir, options.sync)?);
        let state = replay(&store)?;
        let shared = Arc::new(RwLock::new(state.clone()));
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let writer = Writer {
            store: store.clone(),
            shared: shared.clone(),
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
            state: shared,
            store,
            writer: Mutex::new(Some(handle)),
        })
    }

    /// Decides, records and applies one command; answers once its commit is as durable as the
    /// sync mode promises.
    pub async fn submit(&self, submission: Submission) -> Result<Submitted, ControlError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Submit(Box::new(submission), tx))
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
    store: Arc<Store>,
    shared: Arc<RwLock<State>>,
    working: State,
    rules: Rules,
    last_at: Millis,
}

type ReplyTo = oneshot::Sender<Result<Submitted, ControlError>>;
/// An answer, and the sealed record (seq, bytes, commit) that must be durable before it is sent.
type Processed = (Answer, Option<(u64, Vec<u8>, Commit)>);

enum Answer {
    Committed(u64, Result<Reply, Rejection>),
    Remembered(Result<Reply, Rejection>),
    Failed(ControlError),
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut closing = false;
        while !closing {
            let Some(first) = rx.blocking_recv() else {
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
            for msg in batch {
                match msg {
                    Msg::Close => closing = true,
                    Msg::Submit(s, reply_to) => pending.push((self.process(*s), reply_to)),
                }
            }
            self.commit_group(pending);
        }
        rx.close();
        while let Ok(msg) = rx.try_recv() {
            if let Msg::Submit(_, reply_to) = msg {
                let _ = reply_to.send(Err(ControlError::Closed));
            }
        }
        if let Err(e) = self.store.flush() {
            tracing::error!(error = %e, "final flush of the log failed");
        }
    }

    /// Decides one submission against the working state and seals its commit.
    fn process(&mut self, s: Submission) -> Processed {
        if let Some(key) = &s.idempotency_key
            && let Some(first) = self.working.remembered(s.principal, key, &s.command)
        {
            return (Answer::Remembered(first), None);
        }
        // Commit times never go backwards, even if the wall clock does.
        let at = now_ms().max(self.last_at);
        self.last_at = at;
        let ctx = Ctx {
            at,
            principal: s.principal,
            plane: s.plane,
            new_id: Uuid::now_v7(),
            rules: self.rules,
        };
        let decided = match &s.idempotency_key {
            Some(key) => self
                .working
                .idempotency_conflict(s.principal, key, &s.command),
            None => Ok(()),
        }
        .and_then(|()| domain::decide(&self.working, &s.command, &ctx));
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
            self.store.append(&records)
        };
        match written {
            Ok(()) => {
                if !commits.is_empty() {
                    let mut shared = self.shared.write();
                    for c in &commits {
                        shared.apply(c);
                    }
                }
                for (answer, reply_to) in answers {
                    let _ = reply_to.send(match answer {
                        Answer::Committed(seq, result) => Ok(Submitted {
                            seq: Some(seq),
                            result,
                        }),
                        Answer::Remembered(result) => Ok(Submitted { seq: None, result }),
                        Answer::Failed(e) => Err(e),
                    });
                }
            }
            Err(e) => {
                tracing::error!(error = %e, commits = commits.len(), "group commit failed");
                // The working copy ran ahead of the disk; fall back to what is durable.
                self.working = self.shared.read().clone();
                let why = e.to_string();
                for (_, reply_to) in answers {
                    let _ = reply_to.send(Err(ControlError::WriteFailed(why.clone())));
                }
            }
        }
    }
}

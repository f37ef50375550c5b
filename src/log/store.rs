//! The store of commit records: reeve's write-ahead log in front of a redb file ([`Kv`]).

use std::fs::{File, OpenOptions, TryLockError};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::audit_index::{self, AuditFilter};
use super::frame::Checkpoint;
use super::kv::{Batch, Kv, Tree};
use super::wal::{DEFAULT_SEGMENT_BYTES, Wal, WalError};
use super::{Commit, Damage, GENESIS, Hash, LogError, Verifier};
use crate::domain::{AuditEntry, ColdBuild, ColdOp, History, Millis};
use uuid::Uuid;

/// How much durability an acknowledgement promises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SyncMode {
    /// One write to the write-ahead log and one `fdatasync` per group commit, before anyone is
    /// answered: an acknowledged command survives a power cut.
    #[default]
    Durable,
    /// Write each group commit to the write-ahead log but skip `fdatasync`: survives a crash
    /// of reeve, not necessarily of the machine.
    Batch,
    /// Like batch, and the WAL is `fdatasync`ed every half second in the background: the last
    /// half second of acknowledged commands can be lost in a crash of the machine.
    Interval,
}

pub struct Store {
    dir: PathBuf,
    kv: Arc<Kv>,
    /// Where the store's file is (a temporary copy's for a read-only open).
    kv_path: PathBuf,
    commits: Tree,
    /// Job output: data, not commands, so kept out of the commit chain. Keyed by
    /// `job id ‖ offset (BE)`, one chunk per key.
    logs: Tree,
    log_append: parking_lot::Mutex<()>,
    /// The store's own bookkeeping (the write-ahead log's marker).
    meta: Tree,
    sync: SyncMode,
    /// The write-ahead log; `None` for a copy opened to be read (see [`Store::open_copy`]).
    wal: Mutex<Option<Wal>>,
    /// Records the WAL holds durably that the store has not taken yet, in seq order. The
    /// background thread writes them in batches ([`Store::feed`]), so the store's write
    /// transaction is off the path every caller waits on; readers look here first.
    unfed: Mutex<Vec<(u64, Arc<[u8]>)>>,
    /// The audit entries of appended commits that the audit index has not taken yet.
    /// Shared, so that the background thread's copy costs a reference count per entry.
    unfed_audit: Mutex<Vec<Arc<AuditEntry>>>,
    /// The audit index: an entry per commit and the keys its filters use (see `audit_index`).
    audit: Tree,
    /// Builds that left memory (see `cold`).
    cold: Tree,
    /// What appended commits asked of `cold` that the store has not taken yet, by seq.
    unfed_cold: Mutex<Vec<(u64, ColdOp)>>,
    /// The last commit handed to the store, which a checkpoint makes durable there.
    fed: Mutex<Checkpoint>,
    /// Set when the store could not take commits that the WAL already holds: from then on
    /// nothing more is written, and the next open catches the store up from the WAL.
    failed: Mutex<Option<String>>,
    /// What opening found and set right (a torn tail cut, the store caught up), for the caller
    /// to report.
    notes: Vec<Note>,
    /// The background thread that feeds the store and checkpoints, and the way to wake it.
    background: Mutex<Option<(std::sync::mpsc::SyncSender<()>, std::thread::JoinHandle<()>)>>,
    /// The temporary dir holding the copy of the store's file a read-only open works on.
    _copy: Option<tempfile::TempDir>,
    _lock: File,
}

/// Something opening a data dir found that is not damage but is worth telling the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// An incomplete or garbled last frame: a write that was never acknowledged.
    TornTail {
        file: String,
        offset: u64,
        bytes: u64,
        why: String,
        cut: bool,
    },
    /// The store had not yet durably taken the newest commits; they were fed to it from the WAL.
    CaughtUp { from_seq: u64, to_seq: u64 },
    /// The store had lost commits it once held durably (its file was damaged); the WAL still held
    /// them all, so they were put back.
    Restored {
        from_seq: u64,
        to_seq: u64,
        checkpoint_at: String,
    },
    /// A data dir written before reeve kept a write-ahead log.
    NoWalYet { created: bool },
    /// Bytes after the end of a segment that is not the newest; nothing reads them.
    Stray(String),
    /// A data dir an older reeve kept in sled (`log/`) was moved into the store.
    Moved { commits: u64 },
    /// The store's copies of these commits failed their seals (its file was damaged); the
    /// WAL's sealed copies were written in their place.
    Rewritten { seqs: Vec<u64> },
}

impl Note {
    /// Whether the operator should look at it: something was damaged or cut, even if nothing
    /// acknowledged was lost. Catching up and starting a WAL are routine.
    pub fn is_warning(&self) -> bool {
        match self {
            Note::TornTail { .. }
            | Note::Restored { .. }
            | Note::Rewritten { .. }
            | Note::Stray(_) => true,
            Note::CaughtUp { .. } | Note::NoWalYet { .. } | Note::Moved { .. } => false,
        }
    }
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Note::TornTail {
                file,
                offset,
                bytes,
                why,
                cut,
            } => write!(
                f,
                "{file}: {} an incomplete last write of {bytes} bytes at byte {offset} ({why}); it was never acknowledged, so no acknowledged command is lost",
                if *cut { "cut off" } else { "found" }
            ),
            Note::CaughtUp { from_seq, to_seq } => write!(
                f,
                "the store was behind the write-ahead log; commits {from_seq}..{to_seq} were fed to it from the WAL"
            ),
            Note::Restored {
                from_seq,
                to_seq,
                checkpoint_at,
            } => write!(
                f,
                "the store's file ({STORE_FILE}) is damaged: it lost commits {from_seq}..{to_seq}, which the checkpoint in {checkpoint_at} says it held; the write-ahead log still holds them, so they were restored from it. Check the disk"
            ),
            Note::NoWalYet { created: true } => {
                f.write_str("this data dir had no write-ahead log yet; one was started")
            }
            Note::NoWalYet { created: false } => {
                f.write_str("this data dir has no write-ahead log yet (written by an older reeve)")
            }
            Note::Stray(s) => write!(f, "{s} (unused space; nothing reads it)"),
            Note::Rewritten { seqs } => write!(
                f,
                "the store's file ({STORE_FILE}) is damaged: its copies of commits {seqs:?} fail their seals; the write-ahead log holds them sealed and chained, so they were rewritten from it. Check the disk"
            ),
            Note::Moved { commits } => write!(
                f,
                "moved {commits} commits from sled's files (log/) into {STORE_FILE}; log/ was removed once the store was checked against the write-ahead log"
            ),
        }
    }
}

const COMMITS_TREE: &str = "commits";
const LOGS_TREE: &str = "logs";
/// The store's file in a data dir.
pub const STORE_FILE: &str = "store.redb";
/// Where reeve kept history in sled 0.34 before the store was redb (moved on open).
const SLED_DIR: &str = "log";
const AUDIT_TREE: &str = "audit";
const COLD_TREE: &str = "cold";
const META_TREE: &str = "meta";
/// In the `logs` tree beside the chunks: the commit time of the newest prune whose chunks are
/// known deleted (8 bytes, BE). Chunk keys are 24 bytes (`job id ‖ offset`), so this 5-byte
/// key never falls under a job's prefix; it lives in the same tree so that one atomic batch
/// deletes chunks and moves it.
const LOGS_SWEPT_KEY: &[u8] = b"swept";
/// Set in the `meta` table once the data dir has a write-ahead log, so that a WAL that
/// disappears is noticed instead of taken for a data dir that never had one.
const WAL_MARKER: &[u8] = b"reeve/wal";
const WAL_DIR: &str = "wal";
/// How often the background thread checkpoints the store (and, in interval mode, syncs the WAL).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
/// How often the background thread hands the store what the WAL took...
const FEED_EVERY: Duration = Duration::from_millis(5);
/// ...or how many records waiting wake it at once.
const FEED_AT: usize = 1024;

/// Appended after the last byte a capped log keeps.
pub const LOG_TRUNCATED: &str =
    "\n[reeve: log truncated here; the job's output went over its cap]\n";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The server's open: repairs what may be repaired (a torn tail, the store behind the WAL).
    Serve,
    /// A read-only look: the store's file is copied first (a data dir still in sled is moved
    /// into the copy) and only the copy is touched; the WAL is read, never written.
    Copy,
}

impl Store {
    /// Opens (or creates) the log under `dir`. A second process — or a second open in this
    /// process — on the same dir gets [`LogError::Locked`]. Damage is [`LogError::Damaged`].
    pub fn open(dir: &Path, sync: SyncMode) -> Result<Store, LogError> {
        Store::open_with(dir, sync, 0)
    }

    /// [`Store::open`] with new WAL segments preallocated to `segment_bytes` (0: the default).
    pub fn open_with(dir: &Path, sync: SyncMode, segment_bytes: u64) -> Result<Store, LogError> {
        let segment_bytes = if segment_bytes == 0 {
            DEFAULT_SEGMENT_BYTES
        } else {
            segment_bytes
        };
        Store::open_mode(dir, sync, Mode::Serve, segment_bytes)
    }

    /// Opens a data dir to read it without changing a byte of it: the store's file is copied
    /// to a temporary dir (opening may repair it, e.g. catch it up from the WAL) and the WAL is
    /// only read. The same checks as [`Store::open`] apply; what `open` would repair is reported
    /// in [`Store::notes`] and repaired in the copy only. Takes the data dir's lock like
    /// `open`, so a dir a running server holds is refused.
    pub fn open_copy(dir: &Path) -> Result<Store, LogError> {
        Store::open_mode(dir, SyncMode::Interval, Mode::Copy, DEFAULT_SEGMENT_BYTES)
    }

    fn open_mode(
        dir: &Path,
        sync: SyncMode,
        mode: Mode,
        segment_bytes: u64,
    ) -> Result<Store, LogError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| LogError::Io { path, source }
        };
        if mode == Mode::Serve {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let lock_path = dir.join("reeve.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LogError::Locked {
                    dir: dir.display().to_string(),
                });
            }
            Err(TryLockError::Error(source)) => {
                return Err(LogError::Io {
                    path: lock_path.display().to_string(),
                    source,
                });
            }
        }
        let kv_file = dir.join(STORE_FILE);
        let sled_dir = dir.join(SLED_DIR);
        // A data dir an older reeve kept in sled is moved into the store first (in the copy
        // only, for a read-only open); `log/` left beside a store is one whose move finished.
        let needs_move = !kv_file.exists() && sled_dir.join("db").exists();
        let (kv_path, copy) = match mode {
            Mode::Serve => (kv_file.clone(), None),
            Mode::Copy => {
                let tmp = tempfile::Builder::new()
                    .prefix("reeve-audit-")
                    .tempdir()
                    .map_err(io(&std::env::temp_dir()))?;
                let to = tmp.path().join(STORE_FILE);
                if needs_move {
                    let sled_copy = tmp.path().join(SLED_DIR);
                    copy_dir(&sled_dir, &sled_copy)?;
                    super::migrate::from_sled(dir, &sled_copy, &to)?;
                } else if kv_file.exists() {
                    std::fs::copy(&kv_file, &to).map_err(io(&kv_file))?;
                }
                (to, Some(tmp))
            }
        };
        let mut moved = None;
        if mode == Mode::Serve && needs_move {
            moved = Some(super::migrate::from_sled(dir, &sled_dir, &kv_path)?);
        }
        let kv = open_kv(dir, &kv_path)?;
        if mode == Mode::Copy {
            // The copy is thrown away after reading: nothing of it needs redb's shutdown.
            kv.skip_shutdown();
        }
        if mode == Mode::Serve {
            // The directory entry of a store just created must survive a power cut too.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        let mut store = Store {
            dir: dir.to_path_buf(),
            commits: kv.tree(COMMITS_TREE),
            logs: kv.tree(LOGS_TREE),
            audit: kv.tree(AUDIT_TREE),
            cold: kv.tree(COLD_TREE),
            meta: kv.tree(META_TREE),
            kv,
            kv_path,
            log_append: parking_lot::Mutex::new(()),
            sync,
            wal: Mutex::new(None),
            unfed: Mutex::new(Vec::new()),
            unfed_audit: Mutex::new(Vec::new()),
            unfed_cold: Mutex::new(Vec::new()),
            fed: Mutex::new(Checkpoint {
                seq: 0,
                hash: GENESIS,
            }),
            failed: Mutex::new(None),
            notes: Vec::new(),
            background: Mutex::new(None),
            _copy: copy,
            _lock: lock,
        };
        if let Some(commits) = moved {
            store.notes.push(Note::Moved { commits });
        }
        store.reconcile(mode, segment_bytes)?;
        if mode == Mode::Serve && sled_dir.exists() {
            // The store holds all of it and was checked against the WAL: sled's files go.
            std::fs::remove_dir_all(&sled_dir).map_err(io(&sled_dir))?;
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn sync_mode(&self) -> SyncMode {
        self.sync
    }

    fn store_err(&self, source: redb::Error) -> LogError {
        kv_error(&self.dir, &self.kv_path, source)
    }

    /// What opening found and set right: report these to the operator.
    pub fn notes(&self) -> &[Note] {
        &self.notes
    }

    /// Writes a group of sealed records as one WAL write and makes them as durable as the
    /// sync mode promises (durable: one `fdatasync`). Nobody may be answered before this
    /// returns; from then on the records are readable here, and [`Store::feed`] hands them to
    /// the store.
    pub fn append(
        &self,
        records: Vec<(u64, Vec<u8>)>,
        entries: Vec<AuditEntry>,
        cold: Vec<(u64, ColdOp)>,
    ) -> Result<(), LogError> {
        if let Some(why) = self.failed.lock().clone() {
            return Err(LogError::Failed(why));
        }
        if records.is_empty() {
            return Ok(());
        }
        {
            let mut wal = self.wal.lock();
            let wal = wal.as_mut().ok_or_else(|| {
                LogError::Failed("this store was opened read-only (a copy for auditing)".into())
            })?;
            wal.append(&records, self.sync == SyncMode::Durable)
                .map_err(|e| self.wal_err(e))?;
        }
        self.unfed_audit
            .lock()
            .extend(entries.into_iter().map(Arc::new));
        if !cold.is_empty() {
            self.unfed_cold.lock().extend(cold);
        }
        let waiting = {
            let mut unfed = self.unfed.lock();
            unfed.extend(
                records
                    .into_iter()
                    .map(|(seq, r)| (seq, Arc::<[u8]>::from(r))),
            );
            unfed.len()
        };
        if waiting >= FEED_AT
            && let Some((wake, _)) = self.background.lock().as_ref()
        {
            let _ = wake.try_send(());
        }
        Ok(())
    }

    /// Hands the store what the WAL holds and the store does not (the background thread does
    /// this). A failure here cannot undo the WAL (the records are acknowledged), so it stops
    /// the store instead: nothing more is written, and the next open catches it up from the WAL.
    pub fn feed(&self) {
        let pending: Vec<(u64, Arc<[u8]>)> = self.unfed.lock().clone();
        let Some((last_seq, last)) = pending.last().cloned() else {
            return;
        };
        let ops: Vec<(u64, ColdOp)> = self
            .unfed_cold
            .lock()
            .iter()
            .take_while(|(seq, _)| *seq <= last_seq)
            .cloned()
            .collect();
        // Entries of commits appended after `pending` was taken wait for their records, so the
        // index never reaches past the commits the store holds.
        let entries: Vec<Arc<AuditEntry>> = self
            .unfed_audit
            .lock()
            .iter()
            .take_while(|e| e.seq <= last_seq)
            .cloned()
            .collect();
        // The records, the builds they sent out of memory and their audit entries go in one
        // transaction: all of it or none.
        let written = (|| {
            let mut records = Batch::default();
            for (seq, record) in &pending {
                records.insert(seq.to_be_bytes(), record);
            }
            let cold = self.cold_batch(&ops, last_seq)?;
            let audit = audit_index::batch(&self.audit, entries.iter().map(|e| &**e), &|e| {
                self.store_err(e)
            })?;
            let mut batches = vec![(&self.commits, records), (&self.cold, cold)];
            batches.extend(audit.map(|a| (&self.audit, a)));
            self.kv.apply(batches).map_err(|e| self.store_err(e))
        })();
        if let Err(e) = written {
            let why = format!(
                "the store could not take commits the write-ahead log already holds ({e}); restart reeve to catch the store up from the WAL"
            );
            tracing::error!("{why}");
            *self.failed.lock() = Some(why);
            return;
        }
        // Only now may readers stop finding them here: they are in the store.
        self.unfed.lock().retain(|(seq, _)| *seq > last_seq);
        self.unfed_cold.lock().drain(..ops.len());
        self.unfed_audit.lock().retain(|e| e.seq > last_seq);
        let hash = super::wal::record_head(&last).map_or(GENESIS, |h| h.2);
        *self.fed.lock() = Checkpoint {
            seq: last_seq,
            hash,
        };
    }

    /// Makes the store durably hold everything handed to it (one durable commit of its file)
    /// and records that in the WAL, which lets older WAL segments go. Runs in the background
    /// every half second and at shutdown.
    pub fn checkpoint(&self) -> Result<(), LogError> {
        let fed = *self.fed.lock();
        let done = match self.wal.lock().as_ref() {
            Some(wal) => wal.checkpoint().seq >= fed.seq,
            None => return Ok(()),
        };
        if done {
            // Job output and prunes are written to the store outside of commits: they too
            // must reach the disk within a checkpoint's interval.
            if self.kv.is_dirty() && self.failed.lock().is_none() {
                self.flush_store()?;
            }
            if let Some(wal) = self.wal.lock().as_mut() {
                wal.sync().map_err(|e| self.wal_err(e))?;
            }
            return Ok(());
        }
        if self.failed.lock().is_some() {
            return Ok(());
        }
        self.flush_store()?;
        if let Some(wal) = self.wal.lock().as_mut() {
            wal.checkpoint_at(fed).map_err(|e| self.wal_err(e))?;
        }
        Ok(())
    }

    fn flush_store(&self) -> Result<(), LogError> {
        self.kv.flush().map_err(|e| self.store_err(e))
    }

    /// Starts the store's background thread: it hands the store what the WAL took (every few
    /// milliseconds, or at once when much is waiting) and checkpoints it every half second.
    /// One write transaction per batch, on the other core, keeps the store's writes off every
    /// caller's wait. The thread holds only a weak reference: it ends when the store is flushed
    /// or dropped.
    pub fn start_background(self: &Arc<Self>) {
        if self.wal.lock().is_none() {
            return;
        }
        let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
        let weak = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("reeve-store".into())
            .spawn(move || {
                let mut checkpointed = std::time::Instant::now();
                while let Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    woken.recv_timeout(FEED_EVERY)
                {
                    let Some(store) = weak.upgrade() else { break };
                    store.feed();
                    if checkpointed.elapsed() >= CHECKPOINT_EVERY {
                        checkpointed = std::time::Instant::now();
                        if let Err(e) = store.checkpoint() {
                            tracing::error!(error = %e, "checkpoint failed; will retry");
                        }
                    }
                }
            });
        match spawned {
            Ok(handle) => *self.background.lock() = Some((wake, handle)),
            Err(e) => tracing::error!(error = %e, "could not start the store's background thread"),
        }
    }

    /// Stops the background checkpoints and takes a last one, so that the next open finds
    /// the store and the WAL in step. Used at shutdown whatever the sync mode.
    pub fn flush(&self) -> Result<(), LogError> {
        let running = self.background.lock().take();
        if let Some((stop, handle)) = running {
            drop(stop);
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
        if self.wal.lock().is_none() {
            return Ok(());
        }
        self.feed();
        self.checkpoint()?;
        if let Some(wal) = self.wal.lock().as_mut() {
            wal.sync().map_err(|e| self.wal_err(e))?;
        }
        Ok(())
    }

    fn wal_err(&self, e: WalError) -> LogError {
        match e {
            WalError::Io { path, source } => LogError::Io { path, source },
            WalError::Damaged(d) => self.damage(d.first_seq, Some(d.location), d.max_seq, d.why),
        }
    }

    /// Damage found in this data dir, with how far it reaches.
    fn damage(
        &self,
        first_seq: Option<u64>,
        location: Option<String>,
        max_seq: u64,
        why: String,
    ) -> LogError {
        let head = max_seq
            .max(self.last_seq().unwrap_or(0))
            // `try_lock`: a caller may already hold the WAL's lock.
            .max(
                self.wal
                    .try_lock()
                    .and_then(|w| w.as_ref().map(|w| w.head().seq))
                    .unwrap_or(0),
            );
        LogError::Damaged(Box::new(Damage {
            dir: self.dir.display().to_string(),
            first_seq,
            location,
            affected: first_seq.map(|f| head.saturating_sub(f) + 1),
            why,
        }))
    }

    /// Damage that a reader of the store's commits found (a gap, a record that does not decode or
    /// chain): the replay on open reports it through here.
    pub fn damaged_at(&self, seq: u64, why: String) -> LogError {
        self.damage(Some(seq), Some("store.redb (commits table)".into()), 0, why)
    }

    /// The hash of the record the store holds under `seq`, checked against its body.
    fn store_hash(&self, seq: u64) -> Result<Option<Hash>, LogError> {
        match self.raw(seq)? {
            None => Ok(None),
            Some(record) => match super::wal::record_head(&record) {
                Ok((s, _, hash)) if s == seq => Ok(Some(hash)),
                // A record under the wrong key (a damaged key) is missing from its own place
                // too: the lower of the two is where the log stops being whole.
                Ok((s, _, _)) => Err(self.damage(
                    Some(s.min(seq)),
                    Some("store.redb (commits table)".into()),
                    0,
                    format!("the record stored under seq {seq} says it is seq {s}"),
                )),
                Err(why) => {
                    Err(self.damage(Some(seq), Some("store.redb (commits table)".into()), 0, why))
                }
            },
        }
    }

    /// Checks the store against the WAL and sets right what a crash leaves behind (a torn last
    /// write, the store behind the WAL) and what the WAL can mend (commits the store lost or
    /// holds damaged). Anything else that does not agree is damage.
    fn reconcile(&mut self, mode: Mode, segment_bytes: u64) -> Result<(), LogError> {
        let wal_dir = self.dir.join(WAL_DIR);
        let scan = super::wal::scan(&wal_dir).map_err(|e| self.wal_err(e))?;
        let store_last = self.last_seq()?;
        let store_head = Checkpoint {
            seq: store_last,
            hash: self.store_hash(store_last)?.unwrap_or(GENESIS),
        };
        let marker = self
            .meta
            .get(WAL_MARKER)
            .map_err(|e| self.store_err(e))?
            .is_some();
        let store_damage = |store: &Store, first: u64, why: String| {
            store.damage(
                Some(first),
                Some("store.redb (commits table)".into()),
                scan.head().map_or(0, |h| h.seq),
                why,
            )
        };
        if scan.segments.is_empty() {
            if marker {
                return Err(self.damage(
                    Some(store_last + 1),
                    Some(format!("{}", wal_dir.display())),
                    0,
                    format!(
                        "the write-ahead log is gone: {} holds no segment, though this data dir has kept one; the store holds commits up to {store_last}, and whatever came after cannot be checked",
                        wal_dir.display()
                    ),
                ));
            }
            if mode == Mode::Copy {
                self.notes.push(Note::NoWalYet { created: false });
                *self.fed.lock() = store_head;
                return Ok(());
            }
            // A data dir from before the WAL (or a new one): the store's head becomes the
            // checkpoint.
            self.flush_store()?;
            let wal =
                Wal::create(&wal_dir, segment_bytes, store_head).map_err(|e| self.wal_err(e))?;
            self.set_marker()?;
            if store_last > 0 {
                self.notes.push(Note::NoWalYet { created: true });
            }
            *self.wal.lock() = Some(wal);
            *self.fed.lock() = store_head;
            return Ok(());
        }
        let (checkpoint, checkpoint_at) = scan
            .checkpoint
            .clone()
            .unwrap_or((store_head, String::new()));
        // Where the WAL starts, the store must hold the very commit the WAL chains from.
        let first = scan.first_head().unwrap_or(store_head);
        let joins = first.seq <= store_last
            && (first.seq == 0 || self.store_hash(first.seq)? == Some(first.hash));
        if !joins && store_last >= first.seq {
            return Err(store_damage(
                self,
                first.seq,
                format!(
                    "the write-ahead log chains from commit {}, but the store holds a different commit {}",
                    first.seq, first.seq
                ),
            ));
        }
        if store_last < checkpoint.seq {
            if !joins {
                return Err(store_damage(
                    self,
                    store_last + 1,
                    format!(
                        "the store holds commits up to {store_last}, but the checkpoint in {checkpoint_at} says it durably held up to {}: the store lost commits, and the write-ahead log (from commit {}) no longer has them all",
                        checkpoint.seq,
                        first.seq + 1
                    ),
                ));
            }
            // The store lost commits it had taken, but the WAL still holds every one of them,
            // sealed and chained: put them back rather than refuse, and say so loudly.
            self.notes.push(Note::Restored {
                from_seq: store_last + 1,
                to_seq: checkpoint.seq,
                checkpoint_at: checkpoint_at.clone(),
            });
        } else if checkpoint.seq > 0 && self.store_hash(checkpoint.seq)? != Some(checkpoint.hash) {
            return Err(store_damage(
                self,
                checkpoint.seq,
                format!(
                    "the store's commit {} is not the one the checkpoint in {checkpoint_at} names",
                    checkpoint.seq
                ),
            ));
        }
        let mut rewrite = Batch::default();
        let mut rewritten = Vec::new();
        for (seq, record) in &scan.commits {
            if *seq > store_last {
                break;
            }
            let held = self.raw(*seq)?;
            if held.as_deref() != Some(record.as_slice()) {
                let which = match held.as_deref().map(super::wal::record_head) {
                    None => "the store does not hold it".to_string(),
                    Some(Err(_)) => {
                        // The store's copy fails its own seal while the WAL's is sealed and
                        // chained (the scan checked it): put the good copy back, loudly.
                        rewrite.insert(seq.to_be_bytes(), record.as_slice());
                        rewritten.push(*seq);
                        continue;
                    }
                    Some(Ok(_)) => "the two copies differ, and each is sealed".to_string(),
                };
                return Err(store_damage(
                    self,
                    *seq,
                    format!("the store and the write-ahead log disagree on commit {seq}: {which}"),
                ));
            }
        }
        if !rewritten.is_empty() {
            self.commits
                .apply_batch(rewrite)
                .map_err(|e| self.store_err(e))?;
            self.flush_store()?;
            self.notes.push(Note::Rewritten { seqs: rewritten });
        }
        let wal_head = scan.head().unwrap_or(store_head);
        if store_last > wal_head.seq {
            return Err(self.damage(
                Some(wal_head.seq + 1),
                Some(format!("{} (its end)", wal_dir.display())),
                store_last,
                format!(
                    "the store holds commits {}..{store_last} that the write-ahead log does not: the WAL lost its end",
                    wal_head.seq + 1
                ),
            ));
        }
        for s in &scan.stray {
            self.notes.push(Note::Stray(s.clone()));
        }
        if let Some(torn) = &scan.torn {
            let cut = mode == Mode::Serve;
            if cut {
                super::wal::cut(torn).map_err(|e| self.wal_err(e))?;
            }
            self.notes.push(Note::TornTail {
                file: format!(
                    "wal/{}",
                    torn.path
                        .file_name()
                        .map(|n| n.to_string_lossy())
                        .unwrap_or_default()
                ),
                offset: torn.offset,
                bytes: torn.bytes,
                why: torn.why.clone(),
                cut,
            });
        }
        if wal_head.seq > store_last {
            let mut batch = Batch::default();
            for (seq, record) in scan.commits.iter().filter(|(s, _)| *s > store_last) {
                batch.insert(seq.to_be_bytes(), record.as_slice());
            }
            self.commits
                .apply_batch(batch)
                .map_err(|e| self.store_err(e))?;
            // Commits up to the checkpoint were reported as restored above.
            let from_seq = store_last.max(checkpoint.seq) + 1;
            if from_seq <= wal_head.seq {
                self.notes.push(Note::CaughtUp {
                    from_seq,
                    to_seq: wal_head.seq,
                });
            }
        }
        *self.fed.lock() = wal_head;
        if mode == Mode::Copy {
            return Ok(());
        }
        let (_, temps) = super::wal::list(&wal_dir).map_err(|e| self.wal_err(e))?;
        for t in temps {
            let _ = std::fs::remove_file(t);
        }
        if !marker {
            self.set_marker()?;
        }
        let mut wal = Wal::resume(&wal_dir, segment_bytes, &scan).map_err(|e| self.wal_err(e))?;
        if wal_head.seq > checkpoint.seq || wal_head.seq > store_last {
            self.flush_store()?;
            wal.checkpoint_at(wal_head).map_err(|e| self.wal_err(e))?;
        }
        *self.wal.lock() = Some(wal);
        Ok(())
    }

    fn set_marker(&self) -> Result<(), LogError> {
        self.meta
            .insert(WAL_MARKER, [1u8])
            .map_err(|e| self.store_err(e))?;
        self.flush_store()
    }

    /// The raw record stored under `seq`.
    pub fn raw(&self, seq: u64) -> Result<Option<Vec<u8>>, LogError> {
        if let Some((_, r)) = self.unfed.lock().iter().find(|(s, _)| *s == seq) {
            return Ok(Some(r.to_vec()));
        }
        Ok(self
            .commits
            .get(seq.to_be_bytes())
            .map_err(|e| self.store_err(e))?
            .map(|v| v.to_vec()))
    }

    /// The raw records stored under `from_seq..=to_seq`, in order, each with the seq its key
    /// names (not the one inside the record: a tampered record must still be named by where it
    /// is stored). Nothing is decoded, so a reader decides what to check.
    pub fn raw_range(
        &self,
        from_seq: u64,
        to_seq: u64,
    ) -> impl Iterator<Item = Result<(u64, Arc<[u8]>), LogError>> + '_ {
        // Taken before the store is read: a record leaves `unfed` only once the store holds it,
        // so every record is found in one place or the other.
        let unfed: Vec<(u64, Arc<[u8]>)> = self
            .unfed
            .lock()
            .iter()
            .filter(|(s, _)| (from_seq..=to_seq).contains(s))
            .cloned()
            .collect();
        let store_to = unfed.first().map_or(to_seq, |(s, _)| to_seq.min(s - 1));
        let range = (from_seq <= store_to).then(|| {
            self.commits.range(
                Bound::Included(from_seq.to_be_bytes().to_vec()),
                Bound::Included(store_to.to_be_bytes().to_vec()),
            )
        });
        range
            .into_iter()
            .flatten()
            .map(move |item| {
                let (key, value) = item.map_err(|e| self.store_err(e))?;
                let seq = <[u8; 8]>::try_from(key.as_ref())
                    .map(u64::from_be_bytes)
                    .map_err(|_| LogError::Corrupt {
                        seq: 0,
                        why: format!(
                            "the commits tree holds a key of {} bytes, not an 8-byte sequence number",
                            key.len()
                        ),
                    })?;
                Ok((seq, Arc::from(value)))
            })
            .chain(unfed.into_iter().map(Ok))
    }

    /// The highest seq stored (0 for an empty log).
    pub fn last_seq(&self) -> Result<u64, LogError> {
        if let Some((seq, _)) = self.unfed.lock().last() {
            return Ok(*seq);
        }
        let last = self.commits.last().map_err(|e| self.store_err(e))?;
        Ok(last
            .and_then(|(k, _)| <[u8; 8]>::try_from(k.as_ref()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// One decoded commit (its own hash checked; the chain is checked on open).
    pub fn get(&self, seq: u64) -> Result<Option<Commit>, LogError> {
        self.raw(seq)?.map(|r| Commit::decode(&r)).transpose()
    }

    /// Every commit from `from_seq` on, in order, each decoded and its hash checked. The key
    /// each record is stored under must agree with the seq inside it.
    pub fn scan(&self, from_seq: u64) -> impl Iterator<Item = Result<Commit, LogError>> + '_ {
        self.raw_range(from_seq, u64::MAX).map(|item| {
            let (seq, value) = item?;
            let commit = Commit::decode(&value)?;
            if seq != commit.seq {
                return Err(LogError::Corrupt {
                    seq: commit.seq,
                    why: "stored under a different sequence number".into(),
                });
            }
            Ok(commit)
        })
    }

    /// Every commit from the start, with the chain verified (gapless seq, `prev_hash` links).
    pub fn replay(&self) -> impl Iterator<Item = Result<Commit, LogError>> + '_ {
        let mut verifier = Verifier::default();
        self.scan(1).map(move |c| {
            let c = c?;
            verifier.check(&c)?;
            Ok(c)
        })
    }

    /// How many bytes of output a job has (the truncation marker included).
    pub fn log_len(&self, job: uuid::Uuid) -> Result<u64, LogError> {
        let prefix = job.as_bytes();
        let last = self
            .logs
            .scan_prefix_rev(prefix)
            .next()
            .transpose()
            .map_err(|e| self.store_err(e))?;
        Ok(match last {
            Some((key, value)) => {
                let mut offset = [0u8; 8];
                offset.copy_from_slice(key.get(16..24).unwrap_or(&[0; 8]));
                u64::from_be_bytes(offset) + value.len() as u64
            }
            None => 0,
        })
    }

    /// Appends output to a job's log, keeping at most `cap` bytes of it (then a marker).
    /// Returns the log's length afterwards.
    pub fn append_log(&self, job: uuid::Uuid, bytes: &[u8], cap: u64) -> Result<u64, LogError> {
        let _one_writer = self.log_append.lock();
        let len = self.log_len(job)?;
        let kept = cap.saturating_sub(len.min(cap));
        if bytes.is_empty() || (kept == 0 && len > cap) {
            return Ok(len);
        }
        let mut chunk = bytes[..bytes.len().min(kept as usize)].to_vec();
        if (chunk.len() as u64) < bytes.len() as u64 {
            chunk.extend_from_slice(LOG_TRUNCATED.as_bytes());
        }
        let mut key = job.as_bytes().to_vec();
        key.extend_from_slice(&len.to_be_bytes());
        self.logs
            .insert(key, chunk.as_slice())
            .map_err(|e| self.store_err(e))?;
        Ok(len + chunk.len() as u64)
    }

    /// Writes one chunk of a job's output at `offset`, as another node took it in (cluster
    /// mode). Writing a chunk again is harmless: its key is the same.
    pub fn put_log_chunk(
        &self,
        job: uuid::Uuid,
        offset: u64,
        bytes: &[u8],
    ) -> Result<(), LogError> {
        let _one_writer = self.log_append.lock();
        let mut key = job.as_bytes().to_vec();
        key.extend_from_slice(&offset.to_be_bytes());
        self.logs
            .insert(key, bytes)
            .map_err(|e| self.store_err(e))?;
        Ok(())
    }

    /// A job's output from byte `offset` on.
    pub fn read_log(&self, job: uuid::Uuid, offset: u64) -> Result<Vec<u8>, LogError> {
        let mut out = Vec::new();
        for item in self.logs.scan_prefix(job.as_bytes()) {
            let (key, value) = item.map_err(|e| self.store_err(e))?;
            let mut at = [0u8; 8];
            at.copy_from_slice(key.get(16..24).unwrap_or(&[0; 8]));
            let start = u64::from_be_bytes(at);
            let end = start + value.len() as u64;
            if end <= offset {
                continue;
            }
            let skip = offset.saturating_sub(start) as usize;
            out.extend_from_slice(&value[skip..]);
        }
        Ok(out)
    }

    /// Deletes every chunk of these jobs' output (job log retention) and records, in the same
    /// atomic batch, that prunes up to commit time `swept_through` are done (see
    /// [`Store::logs_swept_through`]; it never moves back). Returns how many chunks went.
    pub fn prune_logs(
        &self,
        jobs: &[uuid::Uuid],
        swept_through: crate::domain::Millis,
    ) -> Result<usize, LogError> {
        // No append may slip in between listing a job's chunks and deleting them.
        let _one_writer = self.log_append.lock();
        let mut batch = Batch::default();
        let mut chunks = 0;
        for job in jobs {
            for key in self.logs.scan_prefix(job.as_bytes()).keys() {
                batch.remove(key.map_err(|e| self.store_err(e))?);
                chunks += 1;
            }
        }
        let through = swept_through.max(self.logs_swept_through()?);
        batch.insert(LOGS_SWEPT_KEY, through.to_be_bytes());
        self.logs
            .apply_batch(batch)
            .map_err(|e| self.store_err(e))?;
        Ok(chunks)
    }

    /// The commit time of the newest prune whose chunks [`Store::prune_logs`] deleted (0 when
    /// none was). A prune committed at or after it may have chunks left (a crash came between
    /// the commit and the deletion), so the server deletes those again on start.
    pub fn logs_swept_through(&self) -> Result<crate::domain::Millis, LogError> {
        let raw = self
            .logs
            .get(LOGS_SWEPT_KEY)
            .map_err(|e| self.store_err(e))?;
        Ok(raw
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, i64::from_be_bytes))
    }

    /// Writes audit entries (and their filter keys) to the index in one batch. Writing an
    /// entry again is harmless: its keys are the same.
    pub fn index_audit<'a>(
        &self,
        entries: impl IntoIterator<Item = &'a AuditEntry>,
    ) -> Result<(), LogError> {
        match audit_index::batch(&self.audit, entries, &|e| self.store_err(e))? {
            Some(batch) => self.audit.apply_batch(batch).map_err(|e| self.store_err(e)),
            None => Ok(()),
        }
    }

    /// Verifies the chain from seq 1 through `through` from raw bytes (each record's hash
    /// against its body, gapless seqs, each link to the one before), without decoding a body.
    /// A start from a snapshot folds only what follows it; this is how the commits before it
    /// are checked, in the background. Stops early, returning `Ok`, once `stop` is set.
    pub fn scrub(
        &self,
        through: u64,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<(), LogError> {
        let mut expected = 1u64;
        let mut prev_hash = GENESIS;
        for item in self.raw_range(1, through) {
            if expected.is_multiple_of(4096) && stop.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(());
            }
            let (key, record) = item?;
            if key != expected {
                return Err(self.damaged_at(
                    expected,
                    format!("missing: the log jumps from {} to {key}", expected - 1),
                ));
            }
            let (seq, prev, hash) =
                super::wal::record_head(&record).map_err(|why| self.damaged_at(key, why))?;
            if seq != key {
                return Err(self.damaged_at(
                    key,
                    format!("the record stored under seq {key} says it is seq {seq}"),
                ));
            }
            if prev != prev_hash {
                return Err(self.damaged_at(
                    key,
                    "prev_hash does not match the hash of the commit before it".into(),
                ));
            }
            prev_hash = hash;
            expected += 1;
        }
        if expected <= through {
            return Err(self.damaged_at(
                expected,
                format!("missing: the log ends at {} before {through}", expected - 1),
            ));
        }
        Ok(())
    }

    /// Stops the store for good: every later append fails with `why`.
    pub fn fail(&self, why: String) {
        *self.failed.lock() = Some(why);
    }

    /// Why the store stopped taking writes, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failed.lock().clone()
    }

    /// How long the write-ahead log's `fdatasync`s take (a handle that stays current; an
    /// empty one for a read-only copy, which never syncs).
    pub fn fdatasync_seconds(&self) -> prometheus_client::metrics::histogram::Histogram {
        match self.wal.lock().as_ref() {
            Some(wal) => wal.syncs(),
            None => prometheus_client::metrics::histogram::Histogram::new([]),
        }
    }

    /// Bytes the log takes on disk: the write-ahead log's segments and the store's file.
    pub fn disk_bytes(&self) -> u64 {
        fn size(path: &Path) -> u64 {
            match std::fs::symlink_metadata(path) {
                Ok(m) if m.is_dir() => std::fs::read_dir(path)
                    .map(|entries| entries.flatten().map(|e| size(&e.path())).sum())
                    .unwrap_or(0),
                Ok(m) => m.len(),
                Err(_) => 0,
            }
        }
        size(&self.dir.join("wal")) + size(&self.kv_path) + size(&self.dir.join(SLED_DIR))
    }

    /// Writes what commits up to `through` asked of the cold tree (in commit order), and
    /// deletes the chunks of the cold output they pruned first: a crash between the two leaves
    /// the ops to be written again.
    pub fn write_cold(&self, ops: &[(u64, ColdOp)], through: u64) -> Result<(), LogError> {
        let batch = self.cold_batch(ops, through)?;
        self.cold.apply_batch(batch).map_err(|e| self.store_err(e))
    }

    /// The writes of [`Store::write_cold`], after deleting the pruned chunks it deletes first.
    fn cold_batch(&self, ops: &[(u64, ColdOp)], through: u64) -> Result<Batch, LogError> {
        let pruned: Vec<Uuid> = ops
            .iter()
            .flat_map(|(_, op)| match op {
                ColdOp::LogsPruned { jobs, .. } => jobs.as_slice(),
                _ => &[],
            })
            .copied()
            .collect();
        if !pruned.is_empty() {
            self.prune_logs(&pruned, 0)?;
        }
        super::cold::batch(&self.cold, ops, through, &|e| self.store_err(e))
    }

    /// The last commit whose cold ops the store holds (0: none, or a data dir from before builds
    /// left memory).
    pub fn cold_through(&self) -> Result<u64, LogError> {
        super::cold::through(&self.cold, &|e| self.store_err(e))
    }

    fn pending_cold(&self) -> Vec<(u64, ColdOp)> {
        self.unfed_cold.lock().clone()
    }

    fn read_cold(
        &self,
        id: Uuid,
        pending: &[(u64, ColdOp)],
    ) -> Result<Option<ColdBuild>, LogError> {
        let record = super::cold::get(&self.cold, id, &|e| self.store_err(e))?;
        Ok(super::cold::overlay(record, id, pending))
    }

    /// Empties the audit index, for a fold to rebuild it.
    pub fn clear_audit_index(&self) -> Result<(), LogError> {
        self.unfed_audit.lock().clear();
        self.audit.clear().map_err(|e| self.store_err(e))
    }

    /// The highest seq the audit index on disk holds an entry for; every seq before it has
    /// one too (entries are written in seq order, a batch per transaction, and a crash leaves
    /// the store at its last durable commit: a prefix of its writes).
    pub fn audit_indexed_through(&self) -> Result<u64, LogError> {
        audit_index::last_seq(&self.audit, &|e| self.store_err(e))
    }

    /// Up to `limit` audit entries after `since` that match `filter`, in seq order: from the
    /// index on disk, and from entries appended but not yet indexed.
    pub fn audit_page(
        &self,
        filter: &AuditFilter,
        since: u64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, LogError> {
        // Taken before the index is read: an entry leaves `unfed_audit` only once the index holds
        // it, so every entry is found in one place or the other.
        let unfed: Vec<AuditEntry> = self
            .unfed_audit
            .lock()
            .iter()
            .filter(|e| e.seq > since && filter.matches(e))
            .map(|e| (**e).clone())
            .collect();
        let mut page =
            audit_index::page(&self.audit, filter, since, limit, &|e| self.store_err(e))?;
        // Unindexed entries are newer than every indexed one they do not duplicate.
        let after = page.last().map_or(since, |e| e.seq);
        page.extend(unfed.into_iter().filter(|e| e.seq > after));
        page.truncate(limit);
        Ok(page)
    }

    /// The highest seq the store durably holds (the WAL's last checkpoint); everything indexed with
    /// those commits is as durable.
    pub fn durable_seq(&self) -> u64 {
        match self.wal.lock().as_ref() {
            Some(wal) => wal.checkpoint().seq,
            None => 0,
        }
    }

    /// How many commits are stored (those the store holds and those it has yet to take).
    pub fn len(&self) -> usize {
        let unfed = self.unfed.lock();
        let first_unfed = unfed.first().map_or(u64::MAX, |(s, _)| *s);
        let in_store = match self.commits.len() {
            Ok(n) => n as usize,
            Err(e) => {
                tracing::error!(error = %e, "could not count the store's commits");
                0
            }
        };
        // A record is taken out of `unfed` only after the store holds it, so the two may
        // overlap for a moment: count each seq once.
        let overlap = self
            .commits
            .range(
                Bound::Included(first_unfed.to_be_bytes().to_vec()),
                Bound::Unbounded,
            )
            .count();
        in_store - overlap.min(in_store) + unfed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Opens the store's file, turning damage it reports (or a panic inside redb on a file
/// altered behind its back) into [`LogError::Damaged`].
/// Opens the store's file; see [`kv_error`] for what is damage.
fn open_kv(dir: &Path, path: &Path) -> Result<Arc<Kv>, LogError> {
    Kv::open(path).map_err(|e| kv_error(dir, path, e))
}

/// redb's errors: what it finds wrong in its file is damage to the data dir, not a fault of
/// the machine — `Corrupted` (the adapter turns a panic on a damaged page into it too), a
/// header it cannot read (a magic number or a format version not its own), a page pointer
/// past the end of the file.
fn kv_error(dir: &Path, path: &Path, source: redb::Error) -> LogError {
    let why = match &source {
        redb::Error::Corrupted(why) => format!("redb reports its file damaged: {why}"),
        redb::Error::Io(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            format!("redb cannot read its file: {e}")
        }
        redb::Error::UpgradeRequired(v) => {
            format!("the file says it is redb format version {v}, which this reeve does not read")
        }
        // Every table is created with the file and always opened with the same types: a table
        // that is missing or says it holds other types is a damaged table directory.
        redb::Error::TableTypeMismatch { .. }
        | redb::Error::TableDoesNotExist(_)
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TypeDefinitionChanged { .. } => {
            format!("redb's directory of tables is damaged: {source}")
        }
        _ => {
            return LogError::Store {
                dir: path.display().to_string(),
                source: Box::new(source),
            };
        }
    };
    LogError::Damaged(Box::new(Damage {
        dir: dir.display().to_string(),
        first_seq: None,
        location: Some(STORE_FILE.into()),
        affected: None,
        why,
    }))
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), LogError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| LogError::Io { path, source }
    };
    std::fs::create_dir_all(to).map_err(io(to))?;
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let path = entry.path();
        let target = to.join(entry.file_name());
        if entry.file_type().map_err(io(&path))?.is_dir() {
            copy_dir(&path, &target)?;
        } else {
            std::fs::copy(&path, &target).map_err(io(&path))?;
        }
    }
    Ok(())
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("sync", &self.sync)
            .finish_non_exhaustive()
    }
}

/// Cold builds are read from the store, with what the background thread has yet to write laid
/// over it.
impl History for Store {
    fn cold_build(&self, id: Uuid) -> Result<Option<ColdBuild>, String> {
        let pending = self.pending_cold();
        self.read_cold(id, &pending).map_err(|e| e.to_string())
    }

    fn cold_build_of_job(&self, job: Uuid) -> Result<Option<Uuid>, String> {
        let pending = self.pending_cold();
        if let Some(b) =
            super::cold::pending_builds(&pending).find(|b| b.jobs.iter().any(|j| j.id == job))
        {
            return Ok(Some(b.build.id));
        }
        super::cold::build_of_job(&self.cold, job, &|e| self.store_err(e))
            .map_err(|e| e.to_string())
    }

    fn cold_generations(&self, project: &str, number: u64) -> Result<Vec<Uuid>, String> {
        let pending = self.pending_cold();
        let mut out = super::cold::generations(&self.cold, project, number, &|e| self.store_err(e))
            .map_err(|e| e.to_string())?;
        for b in super::cold::pending_builds(&pending) {
            if b.build.project == project && b.build.number == number && !out.contains(&b.build.id)
            {
                out.push(b.build.id);
            }
        }
        Ok(out)
    }

    fn cold_builds(
        &self,
        project: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ColdBuild>, String> {
        let pending = self.pending_cold();
        let mut ids = super::cold::page(&self.cold, project, before, limit, &|e| self.store_err(e))
            .map_err(|e| e.to_string())?;
        for b in super::cold::pending_builds(&pending) {
            let key = (b.build.order, b.build.id);
            if b.build.project == project
                && before.is_none_or(|c| b.build.order < c)
                && !ids.contains(&key)
            {
                ids.push(key);
            }
        }
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.truncate(limit);
        let mut out = Vec::with_capacity(ids.len());
        for (_, id) in ids {
            match self.read_cold(id, &pending).map_err(|e| e.to_string())? {
                Some(b) => out.push(b),
                None => {
                    return Err(format!(
                        "the index of cold builds names build {id}, which has no record"
                    ));
                }
            }
        }
        Ok(out)
    }

    fn cold_prunable(&self, before: Millis, limit: usize) -> Result<Vec<Uuid>, String> {
        let pending = self.pending_cold();
        let mut gone: Vec<Uuid> = Vec::new();
        let mut fresh: Vec<(Millis, Uuid, Uuid)> = Vec::new();
        for (_, op) in &pending {
            match op {
                ColdOp::Evicted(b) => fresh.extend(
                    b.prunable()
                        .filter(|(at, _)| *at < before)
                        .map(|(at, j)| (at, j, b.build.id)),
                ),
                ColdOp::LogsPruned { jobs, .. } => gone.extend(jobs),
                ColdOp::Recalled(id) => fresh.retain(|(_, _, b)| b != id),
            }
        }
        // Read past what pending ops take away, so that a full page stays full.
        let extra = gone.len();
        let mut out: Vec<(Millis, Uuid)> =
            super::cold::prunable(&self.cold, before, limit + extra, &|e| self.store_err(e))
                .map_err(|e| e.to_string())?;
        out.extend(fresh.into_iter().map(|(at, j, _)| (at, j)));
        out.retain(|(_, j)| !gone.contains(j));
        out.sort_unstable();
        out.dedup();
        out.truncate(limit);
        Ok(out.into_iter().map(|(_, j)| j).collect())
    }
}

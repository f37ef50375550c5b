//! The sled-backed store of commit records.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use super::{Commit, LogError, Verifier};

/// How much durability an acknowledgement promises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SyncMode {
    /// Flush sled and `fdatasync` its data file once per group commit, before anyone is
    /// answered: an acknowledged command survives a power cut.
    #[default]
    Durable,
    /// Flush sled once per group commit but skip `fdatasync`: survives a crash of reeve, not
    /// necessarily of the machine.
    Batch,
    /// Leave flushing to sled's background flusher (every 500 ms): the last half second of
    /// acknowledged commands can be lost in a crash.
    Interval,
}

pub struct Store {
    dir: PathBuf,
    db: sled::Db,
    commits: sled::Tree,
    /// Job output: data, not commands, so kept out of the commit chain. Keyed by
    /// `job id ‖ offset (BE)`, one chunk per key.
    logs: sled::Tree,
    log_append: parking_lot::Mutex<()>,
    /// sled 0.34's `flush` issues `sync_file_range` only, which neither flushes the device
    /// cache nor file metadata, so durable mode `fdatasync`s this handle after each flush.
    data_file: File,
    sync: SyncMode,
    _lock: File,
}

const COMMITS_TREE: &str = "commits";
const LOGS_TREE: &str = "logs";

/// Appended after the last byte a capped log keeps.
pub const LOG_TRUNCATED: &str =
    "\n[reeve: log truncated here; the job's output went over its cap]\n";

impl Store {
    /// Opens (or creates) the log under `dir`. A second process — or a second open in this
    /// process — on the same dir gets [`LogError::Locked`].
    pub fn open(dir: &Path, sync: SyncMode) -> Result<Store, LogError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| LogError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
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
        let log_dir = dir.join("log");
        let sled_err = |source| LogError::Sled {
            dir: log_dir.display().to_string(),
            source,
        };
        let db = sled::Config::new()
            .path(&log_dir)
            .open()
            .map_err(sled_err)?;
        let commits = db.open_tree(COMMITS_TREE).map_err(sled_err)?;
        let logs = db.open_tree(LOGS_TREE).map_err(sled_err)?;
        let data_path = log_dir.join("db");
        let data_file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&data_path)
            .map_err(io(&data_path))?;
        // The directory entries sled just created must survive a power cut too.
        if let Ok(d) = File::open(&log_dir) {
            let _ = d.sync_all();
        }
        Ok(Store {
            dir: dir.to_path_buf(),
            db,
            commits,
            logs,
            log_append: parking_lot::Mutex::new(()),
            data_file,
            sync,
            _lock: lock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn sync_mode(&self) -> SyncMode {
        self.sync
    }

    fn sled_err(&self, source: sled::Error) -> LogError {
        LogError::Sled {
            dir: self.dir.display().to_string(),
            source,
        }
    }

    /// Writes a group of sealed records atomically and makes them as durable as the sync mode
    /// promises. Nobody may be answered before this returns.
    pub fn append(&self, records: &[(u64, Vec<u8>)]) -> Result<(), LogError> {
        let mut batch = sled::Batch::default();
        for (seq, record) in records {
            batch.insert(&seq.to_be_bytes(), record.as_slice());
        }
        self.commits
            .apply_batch(batch)
            .map_err(|e| self.sled_err(e))?;
        match self.sync {
            SyncMode::Durable => {
                self.db.flush().map_err(|e| self.sled_err(e))?;
                self.data_file.sync_data().map_err(|source| LogError::Io {
                    path: self.dir.join("log/db").display().to_string(),
                    source,
                })?;
            }
            SyncMode::Batch => {
                self.db.flush().map_err(|e| self.sled_err(e))?;
            }
            SyncMode::Interval => {}
        }
        Ok(())
    }

    /// Flushes everything written so far (used at shutdown whatever the sync mode).
    pub fn flush(&self) -> Result<(), LogError> {
        self.db.flush().map_err(|e| self.sled_err(e))?;
        self.data_file.sync_data().map_err(|source| LogError::Io {
            path: self.dir.join("log/db").display().to_string(),
            source,
        })
    }

    /// The raw record stored under `seq`.
    pub fn raw(&self, seq: u64) -> Result<Option<Vec<u8>>, LogError> {
        Ok(self
            .commits
            .get(seq.to_be_bytes())
            .map_err(|e| self.sled_err(e))?
            .map(|v| v.to_vec()))
    }

    /// The raw records stored under `from_seq..=to_seq`, in order, each with the seq its key
    /// names (not the one inside the record: a tampered record must still be named by where it
    /// is stored). Nothing is decoded, so a reader decides what to check.
    pub fn raw_range(
        &self,
        from_seq: u64,
        to_seq: u64,
    ) -> impl Iterator<Item = Result<(u64, sled::IVec), LogError>> + '_ {
        let range = (from_seq <= to_seq).then(|| from_seq.to_be_bytes()..=to_seq.to_be_bytes());
        range
            .into_iter()
            .flat_map(|r| self.commits.range(r))
            .map(move |item| {
                let (key, value) = item.map_err(|e| self.sled_err(e))?;
                let seq = <[u8; 8]>::try_from(key.as_ref())
                    .map(u64::from_be_bytes)
                    .map_err(|_| LogError::Corrupt {
                        seq: 0,
                        why: format!(
                            "the commits tree holds a key of {} bytes, not an 8-byte sequence number",
                            key.len()
                        ),
                    })?;
                Ok((seq, value))
            })
    }

    /// The highest seq stored (0 for an empty log), read from the last key.
    pub fn last_seq(&self) -> Result<u64, LogError> {
        let last = self.commits.last().map_err(|e| self.sled_err(e))?;
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
        self.commits
            .range(from_seq.to_be_bytes()..)
            .map(move |item| {
                let (key, value) = item.map_err(|e| self.sled_err(e))?;
                let commit = Commit::decode(&value)?;
                if key.as_ref() != commit.seq.to_be_bytes() {
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
            .scan_prefix(prefix)
            .next_back()
            .transpose()
            .map_err(|e| self.sled_err(e))?;
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
            .map_err(|e| self.sled_err(e))?;
        Ok(len + chunk.len() as u64)
    }

    /// A job's output from byte `offset` on.
    pub fn read_log(&self, job: uuid::Uuid, offset: u64) -> Result<Vec<u8>, LogError> {
        let mut out = Vec::new();
        for item in self.logs.scan_prefix(job.as_bytes()) {
            let (key, value) = item.map_err(|e| self.sled_err(e))?;
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

    pub fn len(&self) -> usize {
        self.commits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.commits.is_empty()
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("sync", &self.sync)
            .finish_non_exhaustive()
    }
}

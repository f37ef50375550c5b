//! Moving a data dir that an older reeve kept in sled 0.34 (`<data-dir>/log/`) into the redb
//! store. Every key and value is copied as it is, so the checks that follow the move (the WAL
//! against the store, the chain on replay) judge exactly what sled held.

use std::fs::File;
use std::path::Path;

use super::kv::{Batch, Kv};
use super::{Damage, LogError};

/// sled's page cache while it is read for the move.
const SLED_CACHE_BYTES: u64 = 64 << 20;
/// Entries per transaction of the copy.
const BATCH: u64 = 8192;

/// Copies every tree of the sled database in `sled_dir` into a new store at `to`, written
/// under a temporary name and renamed into place once it is durable, so a crash leaves either
/// no store (and the move is done again) or a whole one. Returns how many commits moved.
pub(super) fn from_sled(dir: &Path, sled_dir: &Path, to: &Path) -> Result<u64, LogError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| LogError::Io { path, source }
    };
    let db = open_sled(dir, sled_dir)?;
    let sled_err = |source| LogError::Sled {
        dir: sled_dir.display().to_string(),
        source,
    };
    let tmp = to.with_extension("redb.moving");
    if tmp.exists() {
        std::fs::remove_file(&tmp).map_err(io(&tmp))?;
    }
    let kv = Kv::open(&tmp).map_err(store_err(&tmp))?;
    let mut commits = 0u64;
    for name in ["commits", "logs", "audit", "cold"] {
        let from = db.open_tree(name).map_err(sled_err)?;
        let tree = kv.tree(name);
        let mut batch = Batch::default();
        let mut n = 0u64;
        for item in from.iter() {
            let (k, v) = item.map_err(sled_err)?;
            batch.insert(&k, &v);
            n += 1;
            if n.is_multiple_of(BATCH) {
                tree.apply_batch(std::mem::take(&mut batch))
                    .map_err(store_err(&tmp))?;
            }
        }
        tree.apply_batch(batch).map_err(store_err(&tmp))?;
        if name == "commits" {
            commits = n;
        }
    }
    // What sled's default tree held: the marker that the data dir has a write-ahead log.
    let meta = kv.tree("meta");
    for item in db.iter() {
        let (k, v) = item.map_err(sled_err)?;
        meta.insert(&k, &v).map_err(store_err(&tmp))?;
    }
    kv.flush().map_err(store_err(&tmp))?;
    drop(kv);
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, to).map_err(io(to))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(commits)
}

pub(super) fn store_err(path: &Path) -> impl Fn(redb::Error) -> LogError + '_ {
    move |source| LogError::Store {
        dir: path.display().to_string(),
        source: Box::new(source),
    }
}

/// Opens sled, turning a panic inside its recovery (seen on some damaged files) into an error.
fn open_sled(dir: &Path, log_dir: &Path) -> Result<sled::Db, LogError> {
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sled::Config::new()
            .path(log_dir)
            .cache_capacity(SLED_CACHE_BYTES)
            .open()
    }));
    let damaged = |why: String| {
        LogError::Damaged(Box::new(Damage {
            dir: dir.display().to_string(),
            first_seq: None,
            location: Some("log/ (sled's files)".into()),
            affected: None,
            why,
        }))
    };
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(sled::Error::Corruption { at, bt: _ })) => Err(damaged(format!(
            "sled reports its files corrupt{}",
            at.map(|p| format!(" at {p:?}")).unwrap_or_default()
        ))),
        Ok(Err(source)) => Err(LogError::Sled {
            dir: log_dir.display().to_string(),
            source,
        }),
        Err(panic) => {
            let why = super::kv::panic_message(&*panic);
            Err(damaged(format!("sled could not read its files: {why}")))
        }
    }
}

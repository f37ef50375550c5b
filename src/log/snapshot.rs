//! Snapshot files: the projections as of one commit, so that opening a data dir folds only the
//! commits after it instead of the whole history.
//!
//! A snapshot is a cache, never a source of truth: it is used only when the commit it names
//! (seq and hash) is on the log's chain, and anything wrong with it (a bad checksum, a layout
//! this build does not read, a head the log does not hold) means it is skipped with a warning
//! and an older one, or a full replay, is used instead. `reeve audit replay` never reads one.
//!
//! File `snapshots/<seq as 16 hex digits>.snap`:
//!
//! ```text
//! magic "reevesnp" (8) ‖ format u32 ‖ layout u32 ‖ seq u64 ‖ hash (32) ‖ len u64 ‖ payload ‖ crc32c u32
//! ```
//!
//! integers little-endian; the CRC covers every byte before it. `layout` is the version of the
//! payload's encoding, which its writer owns (the state's postcard layout); `format` is this
//! framing's. Files are written to a temporary name, synced, renamed and the directory synced,
//! so a crash leaves either the whole file or none.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::Hash;

const MAGIC: &[u8; 8] = b"reevesnp";
const FORMAT: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 4 + 8 + 32 + 8;
/// The largest payload a snapshot may claim; a length beyond it is damage, not an allocation.
const MAX_PAYLOAD: u64 = 16 << 30;

/// A snapshot read back whole, its checksum verified.
#[derive(Debug)]
pub struct Snapshot {
    pub path: PathBuf,
    pub layout: u32,
    pub seq: u64,
    pub hash: Hash,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    Invalid { path: String, why: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn file_name(seq: u64) -> String {
    format!("{seq:016x}.snap")
}

/// Writes a snapshot of `payload` taken at commit `seq` with hash `hash`; returns its path.
pub fn save(
    dir: &Path,
    layout: u32,
    seq: u64,
    hash: &Hash,
    payload: &[u8],
) -> Result<PathBuf, SnapshotError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let path = dir.join(file_name(seq));
    let tmp = dir.join(format!("{}.tmp", file_name(seq)));
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&FORMAT.to_le_bytes());
    header.extend_from_slice(&layout.to_le_bytes());
    header.extend_from_slice(&seq.to_le_bytes());
    header.extend_from_slice(hash);
    header.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header), payload);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, &mut file);
    out.write_all(&header)
        .and_then(|()| out.write_all(payload))
        .and_then(|()| out.write_all(&crc.to_le_bytes()))
        .and_then(|()| out.flush())
        .map_err(io_err(&tmp))?;
    drop(out);
    file.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    Ok(path)
}

/// The snapshots under `dir`, newest (highest seq) first. A missing directory holds none;
/// leftovers of an interrupted save and files that are not snapshots are ignored.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, SnapshotError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".snap")) else {
            continue;
        };
        if stem.len() == 16
            && let Ok(seq) = u64::from_str_radix(stem, 16)
        {
            found.push((seq, entry.path()));
        }
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    Ok(found)
}

/// Reads one snapshot whole and checks its framing and checksum (not its payload, which only
/// its writer can decode).
pub fn read(path: &Path) -> Result<Snapshot, SnapshotError> {
    let invalid = |why: String| SnapshotError::Invalid {
        path: path.display().to_string(),
        why,
    };
    let mut file = File::open(path).map_err(io_err(path))?;
    let mut header = [0u8; HEADER_LEN];
    file.read_exact(&mut header)
        .map_err(|e| invalid(format!("shorter than a snapshot header ({e})")))?;
    if &header[..8] != MAGIC {
        return Err(invalid("not a reeve snapshot (bad magic)".into()));
    }
    let u32_at = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&header[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let format = u32_at(8);
    if format != FORMAT {
        return Err(invalid(format!(
            "snapshot framing version {format}; this build reads version {FORMAT}"
        )));
    }
    let layout = u32_at(12);
    let seq = u64_at(16);
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&header[24..56]);
    let len = u64_at(56);
    let actual = file.metadata().map_err(io_err(path))?.len();
    if len > MAX_PAYLOAD || actual != HEADER_LEN as u64 + len + 4 {
        return Err(invalid(format!(
            "claims a {len}-byte payload, but the file is {actual} bytes (truncated or damaged)"
        )));
    }
    let mut payload = vec![0u8; len as usize];
    file.read_exact(&mut payload).map_err(io_err(path))?;
    let mut crc = [0u8; 4];
    file.read_exact(&mut crc).map_err(io_err(path))?;
    let expected = crc32c::crc32c_append(crc32c::crc32c(&header), &payload);
    if u32::from_le_bytes(crc) != expected {
        return Err(invalid("checksum mismatch (the file is damaged)".into()));
    }
    Ok(Snapshot {
        path: path.to_path_buf(),
        layout,
        seq,
        hash,
        payload,
    })
}

/// Deletes all but the newest `keep` snapshots, and leftovers of interrupted saves.
pub fn prune(dir: &Path, keep: usize) -> Result<(), SnapshotError> {
    for (_, path) in list(dir)?.into_iter().skip(keep) {
        std::fs::remove_file(&path).map_err(io_err(&path))?;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.ends_with(".snap.tmp"))
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(())
}

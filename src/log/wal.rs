//! reeve's write-ahead log: preallocated segment files under `<data-dir>/wal/`, one
//! `write` + one `fdatasync` per group commit. The store (`store.redb`) is fed behind it; see
//! `store.rs` for how the two are checked against each other when a data dir opens.
//!
//! A segment is named `<index, 16 hex digits>.wal`, is filled with zeros when it is created
//! (so that an `fdatasync` after a write into it never also has to journal a size change or
//! an extent conversion), and starts with a header frame naming its index, the commit it
//! chains from and the newest checkpoint. A new segment is written under a temporary name and
//! renamed once its header is durable, so a segment under its final name always has one.

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::frame::{self, Checkpoint, Frame, Read, SegmentHeader};
use super::{GENESIS, Hash, chain_hash};

/// The default size a segment is preallocated to.
pub const DEFAULT_SEGMENT_BYTES: u64 = 16 << 20;

const SUFFIX: &str = ".wal";

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("i/o error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Damaged(Box<WalDamage>),
}

/// Where the write-ahead log is damaged, as far as the log alone can tell.
#[derive(Debug, Clone)]
pub struct WalDamage {
    /// The first commit that is damaged or missing, when it can be named.
    pub first_seq: Option<u64>,
    /// The file and byte offset of the first bad frame.
    pub location: String,
    /// The highest seq any valid frame holds (after the damage too).
    pub max_seq: u64,
    pub why: String,
}

impl std::fmt::Display for WalDamage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.why, self.location)
    }
}

/// The seq, chain link and hash of a commit record, with the hash checked against the body.
/// Cheaper than [`super::Commit::decode`]: the body is hashed, not decoded.
pub fn record_head(record: &[u8]) -> Result<(u64, Hash, Hash), String> {
    if record.len() < 73 {
        return Err(format!(
            "a commit record of {} bytes is too short",
            record.len()
        ));
    }
    if record[0] != super::FORMAT_V1 {
        return Err(format!("a commit record of unknown format {}", record[0]));
    }
    let seq = u64::from_be_bytes(record[1..9].try_into().map_err(|_| "short record")?);
    let prev: Hash = record[9..41].try_into().map_err(|_| "short record")?;
    let hash: Hash = record[41..73].try_into().map_err(|_| "short record")?;
    if chain_hash(&prev, seq, &record[73..]) != hash {
        return Err(format!("commit {seq}'s hash does not match its contents"));
    }
    Ok((seq, prev, hash))
}

/// One segment as read from disk.
#[derive(Debug)]
pub struct ScannedSegment {
    pub index: u64,
    pub path: PathBuf,
    pub header: SegmentHeader,
    /// Where the next frame goes.
    pub end: u64,
    pub len: u64,
    /// The last commit in this segment (its header's head when it holds none).
    pub last: Checkpoint,
}

/// A torn write at the end of the newest segment: never acknowledged, so it is cut.
#[derive(Debug, Clone)]
pub struct Torn {
    pub path: PathBuf,
    pub offset: u64,
    pub bytes: u64,
    pub why: String,
}

/// Everything the write-ahead log holds, checked frame by frame.
#[derive(Debug, Default)]
pub struct Scan {
    pub segments: Vec<ScannedSegment>,
    /// `(seq, record)` in order, gapless and chained.
    pub commits: Vec<(u64, Vec<u8>)>,
    /// The newest checkpoint (a frame or a segment header), and where it was read.
    pub checkpoint: Option<(Checkpoint, String)>,
    pub torn: Option<Torn>,
    /// Stray bytes after the written end of a segment that is not the newest: harmless, but
    /// worth a warning.
    pub stray: Vec<String>,
}

impl Scan {
    /// The commit the first segment chains from.
    pub fn first_head(&self) -> Option<Checkpoint> {
        self.segments.first().map(|s| s.header.head)
    }

    /// The last commit the log holds.
    pub fn head(&self) -> Option<Checkpoint> {
        self.segments.last().map(|s| s.last)
    }
}

fn segment_name(index: u64) -> String {
    format!("{index:016x}{SUFFIX}")
}

/// Segment files by index, and leftover temporary files.
pub type Listing = (Vec<(u64, PathBuf)>, Vec<PathBuf>);

/// The segment files under `dir`, ordered by index. Temporary files of a segment that was
/// being created when reeve stopped are returned apart.
pub fn list(dir: &Path) -> Result<Listing, WalError> {
    let mut segments = Vec::new();
    let mut temps = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((segments, temps)),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".tmp") {
            temps.push(entry.path());
        } else if let Some(stem) = name.strip_suffix(SUFFIX)
            && stem.len() == 16
            && let Ok(index) = u64::from_str_radix(stem, 16)
        {
            segments.push((index, entry.path()));
        }
    }
    segments.sort();
    Ok((segments, temps))
}

/// Reads and checks every segment under `dir` without changing anything.
///
/// Damage is a frame that fails its checksum, its record hash, its seq or its chain link with
/// a valid frame after it (in the same segment or a later one), a missing or foreign segment
/// header, or segments that do not join. Only a bad frame at the very end of the newest
/// segment, with nothing valid after it, is a torn write, reported in [`Scan::torn`].
pub fn scan(dir: &Path) -> Result<Scan, WalError> {
    let (files, _) = list(dir)?;
    let mut out = Scan::default();
    let mut head: Option<Checkpoint> = None;
    let count = files.len();
    for (n, (index, path)) in files.into_iter().enumerate() {
        let newest = n + 1 == count;
        let buf = std::fs::read(&path).map_err(io_err(&path))?;
        let name = || {
            path.file_name()
                .map(|n| format!("wal/{}", n.to_string_lossy()))
                .unwrap_or_default()
        };
        let damage = |at: usize, first_seq: Option<u64>, why: String, max_seq: u64| {
            WalError::Damaged(Box::new(WalDamage {
                first_seq,
                location: format!("{} at byte {at}", name()),
                max_seq,
                why,
            }))
        };
        let header = match frame::read_at(&buf, 0) {
            Read::Frame(Frame::Header(h), next) if h.index == index => (h, next),
            Read::Frame(Frame::Header(h), _) => {
                return Err(damage(
                    0,
                    None,
                    format!("the segment's header says it is segment {}", h.index),
                    0,
                ));
            }
            other => {
                let why = match other {
                    Read::Bad(why) => why,
                    _ => "no segment header".into(),
                };
                let max = max_seq_after(&buf, 0);
                return Err(damage(
                    0,
                    head.map(|h| h.seq + 1),
                    format!("the segment header is unreadable: {why}"),
                    max,
                ));
            }
        };
        let (h, mut at) = header;
        if let Some(prev) = head
            && h.head != prev
        {
            return Err(damage(
                0,
                Some(prev.seq + 1),
                format!(
                    "segments do not join: this one follows commit {}, the one before ends at commit {}",
                    h.head.seq, prev.seq
                ),
                h.head.seq.max(max_seq_after(&buf, at)),
            ));
        }
        let mut last = h.head;
        if out
            .checkpoint
            .as_ref()
            .is_none_or(|(c, _)| h.checkpoint.seq >= c.seq)
        {
            out.checkpoint = Some((h.checkpoint, format!("{} at byte 0", name())));
        }
        loop {
            match frame::read_at(&buf, at) {
                Read::Frame(Frame::Commit(record), next) => {
                    let expected = last.seq + 1;
                    match record_head(record) {
                        Ok((seq, prev, hash)) if seq == expected && prev == last.hash => {
                            out.commits.push((seq, record.to_vec()));
                            last = Checkpoint { seq, hash };
                        }
                        Ok((seq, prev, _)) => {
                            let why = if seq != expected {
                                format!(
                                    "the frame holds commit {seq} where commit {expected} belongs"
                                )
                            } else {
                                debug_assert!(prev != last.hash);
                                format!(
                                    "commit {seq} does not chain from commit {}: its prev_hash differs",
                                    last.seq
                                )
                            };
                            return Err(damage(at, Some(expected), why, max_seq_after(&buf, at)));
                        }
                        Err(why) => {
                            return Err(damage(at, Some(expected), why, max_seq_after(&buf, next)));
                        }
                    }
                    at = next;
                }
                Read::Frame(Frame::Checkpoint(c), next) => {
                    if c.seq > last.seq || (c.seq == last.seq && c.hash != last.hash) {
                        return Err(damage(
                            at,
                            None,
                            format!(
                                "a checkpoint at commit {} that the log before it does not hold",
                                c.seq
                            ),
                            max_seq_after(&buf, next).max(last.seq),
                        ));
                    }
                    out.checkpoint = Some((c, format!("{} at byte {at}", name())));
                    at = next;
                }
                Read::Frame(Frame::Header(_), _) => {
                    return Err(damage(
                        at,
                        None,
                        "a second segment header inside a segment".into(),
                        max_seq_after(&buf, at).max(last.seq),
                    ));
                }
                Read::End => {
                    if let Some(p) = frame::next_valid(&buf, at) {
                        return Err(damage(
                            at,
                            Some(last.seq + 1),
                            format!(
                                "the segment reads as ending here, but a valid frame follows at byte {p}"
                            ),
                            max_seq_after(&buf, at).max(last.seq),
                        ));
                    }
                    let stray = frame::garbage_end(&buf, at);
                    if stray > at {
                        if newest {
                            out.torn = Some(Torn {
                                path: path.clone(),
                                offset: at as u64,
                                bytes: (stray - at) as u64,
                                why: "stray bytes after the last frame".into(),
                            });
                        } else {
                            out.stray.push(format!(
                                "{}: {} stray bytes after the last frame at byte {at}",
                                name(),
                                stray - at
                            ));
                        }
                    }
                    break;
                }
                Read::Bad(why) => {
                    if frame::next_valid(&buf, at + frame::ALIGN).is_some() || !newest {
                        let max = max_seq_after(&buf, at + frame::ALIGN).max(last.seq);
                        return Err(damage(at, Some(last.seq + 1), why, max));
                    }
                    out.torn = Some(Torn {
                        path: path.clone(),
                        offset: at as u64,
                        bytes: (frame::garbage_end(&buf, at) - at) as u64,
                        why,
                    });
                    break;
                }
            }
        }
        out.segments.push(ScannedSegment {
            index,
            path: path.clone(),
            header: h,
            end: at as u64,
            len: buf.len() as u64,
            last,
        });
        head = Some(last);
    }
    Ok(out)
}

/// The highest seq of any valid commit frame at or after `from`: how far damage reaches.
fn max_seq_after(buf: &[u8], from: usize) -> u64 {
    let mut max = 0;
    let mut at = from;
    while let Some(p) = frame::next_valid(buf, at) {
        match frame::read_at(buf, p) {
            Read::Frame(Frame::Commit(record), next) => {
                if let Ok((seq, _, _)) = record_head(record) {
                    max = max.max(seq);
                }
                at = next;
            }
            Read::Frame(_, next) => at = next,
            _ => at = p + frame::ALIGN,
        }
    }
    max
}

/// Overwrites a torn tail with zeros, so the next append starts on a clean end.
pub fn cut(torn: &Torn) -> Result<(), WalError> {
    let file = OpenOptions::new()
        .write(true)
        .open(&torn.path)
        .map_err(io_err(&torn.path))?;
    let zeros = vec![0u8; torn.bytes as usize];
    file.write_all_at(&zeros, torn.offset)
        .and_then(|()| file.sync_data())
        .map_err(io_err(&torn.path))
}

/// The write side: the newest segment, open for appending.
pub struct Wal {
    dir: PathBuf,
    segment_bytes: u64,
    file: File,
    path: PathBuf,
    index: u64,
    offset: u64,
    capacity: u64,
    /// Older segments still kept, with the last commit each holds.
    older: Vec<(u64, PathBuf, u64)>,
    /// The last commit written.
    head: Checkpoint,
    /// The newest checkpoint written (durable once `synced`).
    checkpoint: Checkpoint,
    buf: Vec<u8>,
    /// Whether anything was written since the last `fdatasync`.
    dirty: bool,
    /// How long each `fdatasync` took, in seconds (a shared handle, see [`Wal::syncs`]).
    syncs: Histogram,
}

/// 20 µs to about 0.6 s: an `fdatasync` on a good disk takes tens to hundreds of µs.
fn sync_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_02, 2.0, 16))
}

impl Wal {
    /// Starts a new log whose first segment chains from `head`, with `head` as checkpoint too.
    pub fn create(dir: &Path, segment_bytes: u64, head: Checkpoint) -> Result<Wal, WalError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let (file, path, capacity, offset) =
            create_segment(dir, 0, head, head, segment_bytes.max(4096))?;
        sync_dir(dir.parent().unwrap_or(dir))?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            segment_bytes,
            file,
            path,
            index: 0,
            offset,
            capacity,
            older: Vec::new(),
            head,
            checkpoint: head,
            buf: Vec::new(),
            dirty: false,
            syncs: sync_histogram(),
        })
    }

    /// Continues the log a [`scan`] read (its torn tail, if any, already cut).
    pub fn resume(dir: &Path, segment_bytes: u64, scan: &Scan) -> Result<Wal, WalError> {
        let Some(newest) = scan.segments.last() else {
            return Wal::create(
                dir,
                segment_bytes,
                Checkpoint {
                    seq: 0,
                    hash: GENESIS,
                },
            );
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&newest.path)
            .map_err(io_err(&newest.path))?;
        let older = scan.segments[..scan.segments.len() - 1]
            .iter()
            .map(|s| (s.index, s.path.clone(), s.last.seq))
            .collect();
        Ok(Wal {
            dir: dir.to_path_buf(),
            segment_bytes,
            file,
            path: newest.path.clone(),
            index: newest.index,
            offset: newest.end,
            capacity: newest.len,
            older,
            head: newest.last,
            checkpoint: scan
                .checkpoint
                .as_ref()
                .map_or(newest.header.checkpoint, |c| c.0),
            buf: Vec::new(),
            dirty: false,
            syncs: sync_histogram(),
        })
    }

    pub fn head(&self) -> Checkpoint {
        self.head
    }

    pub fn checkpoint(&self) -> Checkpoint {
        self.checkpoint
    }

    /// Writes a group of sealed records as one `write`, and `fdatasync`s it when `sync`.
    pub fn append(&mut self, records: &[(u64, Vec<u8>)], sync: bool) -> Result<(), WalError> {
        self.buf.clear();
        let mut head = self.head;
        for (seq, record) in records {
            frame::encode(&Frame::Commit(record), &mut self.buf);
            let hash = record
                .get(41..73)
                .and_then(|h| <Hash>::try_from(h).ok())
                .unwrap_or(GENESIS);
            head = Checkpoint { seq: *seq, hash };
        }
        self.write_buf(sync)?;
        self.head = head;
        Ok(())
    }

    /// Records that the store durably holds everything up to `c`, makes it durable, and removes
    /// the segments nothing needs any more.
    pub fn checkpoint_at(&mut self, c: Checkpoint) -> Result<(), WalError> {
        self.buf.clear();
        frame::encode(&Frame::Checkpoint(c), &mut self.buf);
        self.write_buf(true)?;
        self.checkpoint = c;
        self.recycle()
    }

    /// `fdatasync`s what was written since the last one.
    pub fn sync(&mut self) -> Result<(), WalError> {
        if self.dirty {
            let started = std::time::Instant::now();
            self.file.sync_data().map_err(io_err(&self.path))?;
            self.syncs.observe(started.elapsed().as_secs_f64());
            self.dirty = false;
        }
        Ok(())
    }

    /// The durations of this log's `fdatasync`s (a handle that stays current).
    pub fn syncs(&self) -> Histogram {
        self.syncs.clone()
    }

    fn write_buf(&mut self, sync: bool) -> Result<(), WalError> {
        let need = self.buf.len() as u64;
        if self.offset + need > self.capacity {
            self.roll(need)?;
        }
        self.file
            .write_all_at(&self.buf, self.offset)
            .map_err(io_err(&self.path))?;
        self.offset += need;
        self.dirty = true;
        if sync {
            self.sync()?;
        }
        Ok(())
    }

    fn roll(&mut self, need: u64) -> Result<(), WalError> {
        // Whatever the old segment holds must be durable before a newer one can exist.
        self.sync()?;
        let index = self.index + 1;
        let size = self.segment_bytes.max(need + 4096);
        let (file, path, capacity, offset) =
            create_segment(&self.dir, index, self.head, self.checkpoint, size)?;
        let old = std::mem::replace(&mut self.path, path);
        self.older.push((self.index, old, self.head.seq));
        self.file = file;
        self.index = index;
        self.offset = offset;
        self.capacity = capacity;
        self.recycle()
    }

    /// Deletes the older segments whose every commit is at or before the durable checkpoint:
    /// the store holds them, and the checkpoint itself lives in a newer segment.
    fn recycle(&mut self) -> Result<(), WalError> {
        if self.dirty {
            return Ok(());
        }
        let upto = self.checkpoint.seq;
        let mut removed = false;
        while let Some((_, path, last)) = self.older.first() {
            if *last > upto {
                break;
            }
            std::fs::remove_file(path).map_err(io_err(path))?;
            self.older.remove(0);
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

fn create_segment(
    dir: &Path,
    index: u64,
    head: Checkpoint,
    checkpoint: Checkpoint,
    size: u64,
) -> Result<(File, PathBuf, u64, u64), WalError> {
    let path = dir.join(segment_name(index));
    let tmp = dir.join(format!("{}.tmp", segment_name(index)));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    let size = size.next_multiple_of(4096);
    let zeros = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..n]).map_err(io_err(&tmp))?;
        left -= n as u64;
    }
    let mut buf = Vec::new();
    frame::encode(
        &Frame::Header(SegmentHeader {
            index,
            head,
            checkpoint,
        }),
        &mut buf,
    );
    file.write_all_at(&buf, 0).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir)?;
    Ok((file, path, size, buf.len() as u64))
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

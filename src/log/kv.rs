//! The history store's key-value layer: named tables of ordered byte keys in one redb file
//! (`<data-dir>/store.redb`), with the few operations the store needs.
//!
//! Why redb: a copy-on-write B-tree read through a bounded page cache, so neither opening it
//! nor keeping it open costs memory or time in proportion to what it holds. sled 0.34, which
//! held history before, keeps a page table entry for every node in memory and replays its
//! own log since its last open, so a start grew with history (see ARCHITECTURE.md).
//!
//! Writes commit with `Durability::None` (visible to readers at once, on disk at the next
//! durable commit): the write-ahead log in front of the store is what makes a command
//! durable, and [`Kv::flush`] — the store's checkpoint — makes everything written so far
//! durable with quick repair on, so that opening after a crash does not walk the whole file.

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::{Database, Durability, ReadableDatabase, TableDefinition};

pub type KvError = redb::Error;

type Def = TableDefinition<'static, &'static [u8], &'static [u8]>;

/// The tables a store has; each is created when the file is.
pub const TABLES: [&str; 5] = ["commits", "logs", "audit", "cold", "meta"];

/// How many entries one read transaction of a long range reads at most before the next takes
/// over, so that a walk of the whole history never pins an old version of the file for long.
const CHUNK: usize = 512;
/// The first chunk of a range: most readers take a few entries (a seek, a page of audit
/// blocks of several KiB each), so chunks start small and double.
const FIRST_CHUNK: usize = 8;

/// redb's page cache. Reads of old commits and audit pages are rare and cheap enough from
/// disk; a walk of the whole history (the scrub after a start) must not keep it all.
const CACHE_BYTES: usize = 64 << 20;

pub struct Kv {
    db: Arc<Database>,
    /// Something was committed since the last durable commit.
    dirty: Arc<AtomicBool>,
}

#[derive(Clone)]
pub struct Tree {
    db: Arc<Database>,
    dirty: Arc<AtomicBool>,
    def: Def,
}

/// Writes to one tree, applied in one transaction.
#[derive(Default)]
pub struct Batch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.ops
            .push((key.as_ref().to_vec(), Some(value.as_ref().to_vec())));
    }

    pub fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.ops.push((key.as_ref().to_vec(), None));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

impl Kv {
    /// Opens (or creates) the file, with every table present.
    pub fn open(path: &Path) -> Result<Kv, KvError> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)?;
        let kv = Kv {
            db: Arc::new(db),
            dirty: Arc::new(AtomicBool::new(false)),
        };
        let mut tx = kv.db.begin_write()?;
        tx.set_quick_repair(true);
        for name in TABLES {
            tx.open_table(def(name))?;
        }
        tx.commit()?;
        Ok(kv)
    }

    pub fn tree(&self, name: &'static str) -> Tree {
        Tree {
            db: self.db.clone(),
            dirty: self.dirty.clone(),
            def: def(name),
        }
    }

    /// Makes everything committed so far durable (one durable commit, with quick repair).
    pub fn flush(&self) -> Result<(), KvError> {
        self.dirty.store(false, Ordering::SeqCst);
        guarded(|| {
            let mut tx = self.db.begin_write()?;
            tx.set_quick_repair(true);
            tx.commit()?;
            Ok(())
        })
    }

    /// Whether anything was committed since the last [`Kv::flush`].
    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::SeqCst)
    }

    /// Applies batches to several trees in one transaction: all or none.
    pub fn apply(&self, batches: Vec<(&Tree, Batch)>) -> Result<(), KvError> {
        guarded(|| self.apply_unguarded(batches))
    }

    fn apply_unguarded(&self, batches: Vec<(&Tree, Batch)>) -> Result<(), KvError> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::None)
            .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
        for (tree, batch) in batches {
            let mut table = tx.open_table(tree.def)?;
            for (k, v) in &batch.ops {
                match v {
                    Some(v) => {
                        table.insert(k.as_slice(), v.as_slice())?;
                    }
                    None => {
                        table.remove(k.as_slice())?;
                    }
                }
            }
        }
        tx.commit()?;
        self.dirty.store(true, Ordering::SeqCst);
        Ok(())
    }
}

fn def(name: &'static str) -> Def {
    TableDefinition::new(name)
}

type Entry = (Vec<u8>, Vec<u8>);

/// What a caught panic said.
pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "no message".into())
}

/// Runs one operation on the file, turning a panic inside redb into an error. redb trusts
/// the pages it reads (it checks their checksums only in a repair), so a file altered behind
/// its back can make it index out of bounds; that is damage to report, not a crash.
fn guarded<T>(op: impl FnOnce() -> Result<T, KvError>) -> Result<T, KvError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(op)) {
        Ok(result) => result,
        Err(panic) => {
            let why = panic_message(&*panic);
            Err(redb::Error::Corrupted(format!(
                "the store's file could not be read ({why}): it is damaged"
            )))
        }
    }
}

impl Tree {
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, KvError> {
        guarded(|| {
            let tx = self.db.begin_read()?;
            let table = tx.open_table(self.def)?;
            Ok(table.get(key.as_ref())?.map(|v| v.value().to_vec()))
        })
    }

    pub fn insert(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<(), KvError> {
        let mut batch = Batch::default();
        batch.insert(key, value);
        self.apply_batch(batch)
    }

    pub fn apply_batch(&self, batch: Batch) -> Result<(), KvError> {
        Kv {
            db: self.db.clone(),
            dirty: self.dirty.clone(),
        }
        .apply(vec![(self, batch)])
    }

    /// Removes every entry.
    pub fn clear(&self) -> Result<(), KvError> {
        guarded(|| self.clear_unguarded())
    }

    fn clear_unguarded(&self) -> Result<(), KvError> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::None)
            .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
        tx.delete_table(self.def)?;
        tx.open_table(self.def)?;
        tx.commit()?;
        self.dirty.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// How many entries the tree holds (redb keeps the count: no walk).
    #[allow(clippy::len_without_is_empty)] // a fallible count; nothing asks for emptiness
    pub fn len(&self) -> Result<u64, KvError> {
        use redb::ReadableTableMetadata;
        guarded(|| {
            let tx = self.db.begin_read()?;
            Ok(tx.open_table(self.def)?.len()?)
        })
    }

    /// The last entry, if any.
    pub fn last(&self) -> Result<Option<Entry>, KvError> {
        self.range_rev(Bound::Unbounded, Bound::Unbounded)
            .next()
            .transpose()
    }

    /// Entries with keys in `[lo, hi]` bounds, in key order, read lazily in chunks.
    pub fn range(&self, lo: Bound<Vec<u8>>, hi: Bound<Vec<u8>>) -> Range {
        Range {
            tree: self.clone(),
            lo,
            hi,
            rev: false,
            buf: std::collections::VecDeque::new(),
            done: false,
            chunk: FIRST_CHUNK,
        }
    }

    /// The same entries, from the last.
    pub fn range_rev(&self, lo: Bound<Vec<u8>>, hi: Bound<Vec<u8>>) -> Range {
        Range {
            rev: true,
            ..self.range(lo, hi)
        }
    }

    /// Entries whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Range {
        let (lo, hi) = prefix_bounds(prefix);
        self.range(lo, hi)
    }

    /// The same entries, from the last.
    pub fn scan_prefix_rev(&self, prefix: &[u8]) -> Range {
        let (lo, hi) = prefix_bounds(prefix);
        self.range_rev(lo, hi)
    }

    fn read_chunk(
        &self,
        lo: &Bound<Vec<u8>>,
        hi: &Bound<Vec<u8>>,
        rev: bool,
        max: usize,
    ) -> Result<Vec<Entry>, KvError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(self.def)?;
        fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
            match b {
                Bound::Included(k) => Bound::Included(k.as_slice()),
                Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
                Bound::Unbounded => Bound::Unbounded,
            }
        }
        if let (Bound::Included(l) | Bound::Excluded(l), Bound::Included(h) | Bound::Excluded(h)) =
            (lo, hi)
            && l > h
        {
            return Ok(Vec::new());
        }
        let range = table.range::<&[u8]>((as_ref(lo), as_ref(hi)))?;
        let mut out = Vec::new();
        type Item<'a> = (
            redb::AccessGuard<'a, &'a [u8]>,
            redb::AccessGuard<'a, &'a [u8]>,
        );
        let mut take = |item: Result<Item<'_>, redb::StorageError>| -> Result<bool, KvError> {
            let (k, v) = item?;
            out.push((k.value().to_vec(), v.value().to_vec()));
            Ok(out.len() < max)
        };
        if rev {
            for item in range.rev() {
                if !take(item)? {
                    break;
                }
            }
        } else {
            for item in range {
                if !take(item)? {
                    break;
                }
            }
        }
        Ok(out)
    }
}

fn prefix_bounds(prefix: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let lo = Bound::Included(prefix.to_vec());
    // The first key past every key with this prefix: the prefix with its last byte that is
    // not 0xff raised by one, and what follows it dropped.
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return (lo, Bound::Excluded(end));
        }
    }
    (lo, Bound::Unbounded)
}

/// A lazily read range: each chunk is read in a transaction of its own.
pub struct Range {
    tree: Tree,
    lo: Bound<Vec<u8>>,
    hi: Bound<Vec<u8>>,
    rev: bool,
    buf: std::collections::VecDeque<Entry>,
    done: bool,
    chunk: usize,
}

impl Range {
    /// Only the keys.
    pub fn keys(self) -> impl Iterator<Item = Result<Vec<u8>, KvError>> {
        self.map(|item| item.map(|(k, _)| k))
    }
}

impl Iterator for Range {
    type Item = Result<Entry, KvError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() && !self.done {
            let max = self.chunk;
            self.chunk = (self.chunk * 2).min(CHUNK);
            match guarded(|| self.tree.read_chunk(&self.lo, &self.hi, self.rev, max)) {
                Ok(chunk) => {
                    if chunk.len() < max {
                        self.done = true;
                    }
                    if let Some((last, _)) = chunk.last() {
                        if self.rev {
                            self.hi = Bound::Excluded(last.clone());
                        } else {
                            self.lo = Bound::Excluded(last.clone());
                        }
                    }
                    self.buf = chunk.into();
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        self.buf.pop_front().map(Ok)
    }
}

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

/// The open file; every tree of it holds the same one.
pub struct Kv {
    /// `None` only once dropped without redb's own shutdown (see [`Drop`]).
    db: Option<Database>,
    /// Something was committed since the last durable commit.
    dirty: AtomicBool,
    /// redb panicked on this file (it is damaged), or the file is a throwaway copy: either way
    /// redb's shutdown, which writes, must not run on drop. A panic there would come while
    /// another destructor unwinds, and abort the process instead of letting it report.
    skip_shutdown: AtomicBool,
}

impl Drop for Kv {
    fn drop(&mut self) {
        if self.skip_shutdown.load(Ordering::SeqCst) {
            std::mem::forget(self.db.take());
        }
    }
}

#[derive(Clone)]
pub struct Tree {
    kv: Arc<Kv>,
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
    pub fn open(path: &Path) -> Result<Arc<Kv>, KvError> {
        guarded(|| Kv::open_unguarded(path))
    }

    fn db(&self) -> &Database {
        match &self.db {
            Some(db) => db,
            None => unreachable!("the database is taken only by drop"),
        }
    }

    /// Drop the file without redb's shutdown: for a copy that is thrown away after reading.
    pub fn skip_shutdown(&self) {
        self.skip_shutdown.store(true, Ordering::SeqCst);
    }

    /// Runs one operation on the file (see [`guarded`]); after a panic the file is known
    /// damaged and redb's shutdown is skipped.
    fn guard<T>(&self, op: impl FnOnce() -> Result<T, KvError>) -> Result<T, KvError> {
        let result = guarded(op);
        if matches!(&result, Err(redb::Error::Corrupted(why)) if why.starts_with(PANICKED)) {
            self.skip_shutdown();
        }
        result
    }

    fn open_unguarded(path: &Path) -> Result<Arc<Kv>, KvError> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)?;
        let kv = Arc::new(Kv {
            db: Some(db),
            dirty: AtomicBool::new(false),
            skip_shutdown: AtomicBool::new(false),
        });
        // Opening writes nothing to a file that has its tables: a write is where damage to
        // redb's allocator state can panic inside a destructor, which no guard can catch, and
        // a read-only look (`reeve audit`) must get to its checks.
        let present: Vec<String> = {
            use redb::TableHandle;
            let tx = kv.db().begin_read()?;
            tx.list_tables()?.map(|t| t.name().to_string()).collect()
        };
        if TABLES.iter().any(|t| !present.iter().any(|p| p == t)) {
            let mut tx = kv.db().begin_write()?;
            tx.set_quick_repair(true);
            for name in TABLES {
                tx.open_table(Def::new(name))?;
            }
            tx.commit()?;
        }
        Ok(kv)
    }

    pub fn tree(self: &Arc<Self>, name: &'static str) -> Tree {
        Tree {
            kv: self.clone(),
            def: TableDefinition::new(name),
        }
    }

    /// Makes everything committed so far durable (one durable commit, with quick repair).
    pub fn flush(&self) -> Result<(), KvError> {
        self.dirty.store(false, Ordering::SeqCst);
        self.guard(|| {
            let mut tx = self.db().begin_write()?;
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
        self.guard(|| self.apply_unguarded(batches))
    }

    fn apply_unguarded(&self, batches: Vec<(&Tree, Batch)>) -> Result<(), KvError> {
        let mut tx = self.db().begin_write()?;
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

type Entry = (Vec<u8>, Vec<u8>);

/// How the message of a panic caught inside redb begins.
const PANICKED: &str = "redb panicked reading or writing the file";

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
                "{PANICKED} ({why}): the file is damaged"
            )))
        }
    }
}

impl Tree {
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, KvError> {
        self.kv.guard(|| {
            let tx = self.kv.db().begin_read()?;
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
        self.kv.apply(vec![(self, batch)])
    }

    /// Removes every entry.
    pub fn clear(&self) -> Result<(), KvError> {
        self.kv.guard(|| self.clear_unguarded())
    }

    fn clear_unguarded(&self) -> Result<(), KvError> {
        let mut tx = self.kv.db().begin_write()?;
        tx.set_durability(Durability::None)
            .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
        tx.delete_table(self.def)?;
        tx.open_table(self.def)?;
        tx.commit()?;
        self.kv.dirty.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// How many entries the tree holds (redb keeps the count: no walk).
    #[allow(clippy::len_without_is_empty)] // a fallible count; nothing asks for emptiness
    pub fn len(&self) -> Result<u64, KvError> {
        use redb::ReadableTableMetadata;
        self.kv.guard(|| {
            let tx = self.kv.db().begin_read()?;
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
        let tx = self.kv.db().begin_read()?;
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
            match self
                .tree
                .kv
                .guard(|| self.tree.read_chunk(&self.lo, &self.hi, self.rev, max))
            {
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

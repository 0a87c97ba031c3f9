//! The cache index: which result a cache key stands for.
//!
//! A record maps a step's cache key to the filesystem it produced, as the chain of
//! layers (bottom first) whose blobs are in the content store. Records are small and
//! chains are short, so each record holds its whole chain: a hit needs one lookup.
//!
//! The index is one `redb` file (`index-v1.redb`). A redb database can be open for
//! writing in one process at a time, so the index is opened for each operation and
//! closed at once (read-only for lookups, which then write nothing); a process that
//! finds it open for writing elsewhere waits and retries. redb commits are atomic
//! and durable, so a process killed at any moment leaves the index as of its last
//! commit.

use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use kiln_image::Digest;
use redb::{
    Database, DatabaseError, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, ReadableTable,
    TableDefinition,
};
use serde::{Deserialize, Serialize};

const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records-v1");
/// Plain layer blob and compression → the compressed variant's [`LayerRecord`].
const VARIANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("variants-v1");

/// How long to wait for another process to close the index before giving up.
const OPEN_TIMEOUT: Duration = Duration::from_secs(120);

/// The threads of this process take turns at the index here: any number of readers, or
/// one writer. redb refuses a second open inside one process just as from another, and
/// the retry loop's pauses (2 ms, doubling to 50 ms) held a step back long after the
/// other thread had closed the index.
static THIS_PROCESS: RwLock<()> = RwLock::new(());

/// One layer of a cached result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    /// Digest of the blob as stored.
    pub blob: Digest,
    /// Size of the blob in bytes.
    pub size: u64,
    /// Media type of the blob.
    pub media_type: String,
    /// When the step that made the layer ran (seconds since the epoch; 0 when the layer
    /// came from elsewhere). A cached result keeps its layers' times, so an image
    /// rebuilt from the cache has the same history, and the same ID.
    #[serde(default)]
    pub created: i64,
}

/// What a cache key stands for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// The layers of the result, bottom first.
    pub layers: Vec<LayerRecord>,
    /// When the record was written (seconds since the epoch).
    pub created: i64,
}

/// Why the index could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The database failed.
    #[error("cache index {path}")]
    Database {
        /// The index file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: redb::Error,
    },
    /// Another process kept the index open for too long.
    #[error("cache index {path} stayed locked by another kiln process for {waited:?}")]
    Busy {
        /// The index file.
        path: PathBuf,
        /// How long this process waited.
        waited: Duration,
    },
    /// A record could not be decoded.
    #[error("cache index {path}: record for {key} is unreadable")]
    BadRecord {
        /// The index file.
        path: PathBuf,
        /// The key whose record is bad.
        key: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// The cache index file.
#[derive(Clone, Debug)]
pub struct CacheIndex {
    path: PathBuf,
}

impl CacheIndex {
    /// The index kept in `path` (created on first write).
    pub fn new(path: impl Into<PathBuf>) -> CacheIndex {
        CacheIndex { path: path.into() }
    }

    /// Where the index lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The record for `key`, if any.
    pub fn get(&self, key: &Digest) -> Result<Option<CacheRecord>, IndexError> {
        if !self.path.exists() {
            return Ok(None);
        }
        let key = key.to_string();
        let bytes = self.read(|txn| {
            let table = match txn.open_table(RECORDS) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            Ok(table.get(key.as_str())?.map(|v| v.value().to_vec()))
        })?;
        bytes.map(|b| self.decode(&key, &b)).transpose()
    }

    /// Records `key` → `record`, replacing an earlier record.
    pub fn put(&self, key: &Digest, record: &CacheRecord) -> Result<(), IndexError> {
        self.put_all([(key, record)])
    }

    /// Records every `key` → `record` of `records` in one commit.
    pub fn put_all<'a>(
        &self,
        records: impl IntoIterator<Item = (&'a Digest, &'a CacheRecord)>,
    ) -> Result<(), IndexError> {
        let encoded: Vec<(String, Vec<u8>)> = records
            .into_iter()
            .map(|(key, record)| {
                let bytes = serde_json::to_vec(record).expect("records serialise");
                (key.to_string(), bytes)
            })
            .collect();
        if encoded.is_empty() {
            return Ok(());
        }
        self.with_db(|db| {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(RECORDS)?;
                for (key, bytes) in &encoded {
                    table.insert(key.as_str(), bytes.as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        })
    }

    /// Removes the records of `keys`; absent keys are ignored.
    pub fn remove<'a>(&self, keys: impl IntoIterator<Item = &'a Digest>) -> Result<(), IndexError> {
        let keys: Vec<String> = keys.into_iter().map(Digest::to_string).collect();
        self.remove_raw(&keys)
    }

    /// Removes records by their keys as stored, which need not be digests.
    pub(crate) fn remove_raw(&self, keys: &[String]) -> Result<(), IndexError> {
        if keys.is_empty() || !self.path.exists() {
            return Ok(());
        }
        self.with_db(|db| {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(RECORDS)?;
                for key in keys {
                    table.remove(key.as_str())?;
                }
            }
            txn.commit()?;
            Ok(())
        })
    }

    /// Every record, for garbage collection (records keep their layers alive).
    pub fn all(&self) -> Result<Vec<(Digest, CacheRecord)>, IndexError> {
        let raw = self.raw()?;
        let mut records = Vec::with_capacity(raw.len());
        for (key, bytes) in raw {
            // Keys were written from digests; one that does not parse is skipped
            // rather than failing every GC run.
            let Ok(digest) = key.parse::<Digest>() else {
                continue;
            };
            records.push((digest, self.decode(&key, &bytes)?));
        }
        Ok(records)
    }

    /// Every record as stored: key text and undecoded value.
    pub(crate) fn raw(&self) -> Result<Vec<(String, Vec<u8>)>, IndexError> {
        if !self.path.exists() {
            return Ok(Vec::new());
        }
        self.read(|txn| {
            let table = match txn.open_table(RECORDS) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            let mut out = Vec::new();
            for entry in table.iter()? {
                let (k, v) = entry?;
                out.push((k.value().to_owned(), v.value().to_vec()));
            }
            Ok(out)
        })
    }

    /// The compressed variant remembered under `key` (see [`crate::variant`]); `None`
    /// when there is none or what is stored does not parse (it is then made again).
    pub(crate) fn variant(&self, key: &str) -> Result<Option<LayerRecord>, IndexError> {
        if !self.path.exists() {
            return Ok(None);
        }
        let bytes = self.read(|txn| {
            let table = match txn.open_table(VARIANTS) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            Ok(table.get(key)?.map(|v| v.value().to_vec()))
        })?;
        Ok(bytes.and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// Remembers `variant` under `key`.
    pub(crate) fn put_variant(&self, key: &str, variant: &LayerRecord) -> Result<(), IndexError> {
        let bytes = serde_json::to_vec(variant).expect("layer records serialise");
        self.with_db(|db| {
            let txn = db.begin_write()?;
            txn.open_table(VARIANTS)?.insert(key, bytes.as_slice())?;
            txn.commit()?;
            Ok(())
        })
    }

    fn decode(&self, key: &str, bytes: &[u8]) -> Result<CacheRecord, IndexError> {
        serde_json::from_slice(bytes).map_err(|source| IndexError::BadRecord {
            path: self.path.clone(),
            key: key.to_owned(),
            source,
        })
    }

    /// Runs `f` in a read transaction. The index is opened read-only, which writes
    /// nothing (opening it for writing costs several fsyncs, on opening and on
    /// closing) and lets readers in other processes in at the same time. An index left
    /// unclosed by a killed process is opened for writing instead, which repairs it.
    fn read<T>(
        &self,
        f: impl FnOnce(ReadTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, IndexError> {
        {
            // Held while reading, so that a writer of this process waits here rather
            // than polling the file lock the reader holds.
            let _turn = THIS_PROCESS.read().unwrap_or_else(PoisonError::into_inner);
            // Whatever else stops a read-only open, the writer's open repairs or reports.
            let opened = self.open_waiting(|path| match ReadOnlyDatabase::open(path) {
                Err(DatabaseError::DatabaseAlreadyOpen) => Err(DatabaseError::DatabaseAlreadyOpen),
                Err(_) => Err(DatabaseError::RepairAborted),
                ok => ok,
            })?;
            if let Some(db) = opened {
                return db
                    .begin_read()
                    .map_err(redb::Error::from)
                    .and_then(f)
                    .map_err(|e| self.db_error(e));
            }
        }
        self.with_db(|db| f(db.begin_read()?))
    }

    /// Opens the database for writing (waiting while another thread or process has
    /// it), runs `f`, closes it.
    fn with_db<T>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, redb::Error>,
    ) -> Result<T, IndexError> {
        let _turn = THIS_PROCESS.write().unwrap_or_else(PoisonError::into_inner);
        let db = self
            .open_waiting(|path| Database::create(path))?
            .ok_or_else(|| self.db_error(DatabaseError::RepairAborted.into()))?;
        f(&db).map_err(|e| self.db_error(e))
    }

    /// Opens the index with `open`, retrying while another process has it open for
    /// writing. `None` when it needs a repair that only a writer can make (a read-only
    /// open refuses an index whose last writer did not close it).
    fn open_waiting<D>(
        &self,
        open: impl Fn(&Path) -> Result<D, DatabaseError>,
    ) -> Result<Option<D>, IndexError> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            match open(&self.path) {
                Ok(db) => return Ok(Some(db)),
                Err(DatabaseError::DatabaseAlreadyOpen) => {
                    let waited = started.elapsed();
                    if waited > OPEN_TIMEOUT {
                        return Err(IndexError::Busy {
                            path: self.path.clone(),
                            waited,
                        });
                    }
                    thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(DatabaseError::RepairAborted) => return Ok(None),
                Err(e) => return Err(self.db_error(e.into())),
            }
        }
    }

    fn db_error(&self, source: redb::Error) -> IndexError {
        IndexError::Database {
            path: self.path.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn record(n: u8) -> CacheRecord {
        CacheRecord {
            layers: vec![LayerRecord {
                diff_id: Digest::of(&[n]),
                blob: Digest::of(&[n, n]),
                size: n as u64,
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                created: 7,
            }],
            created: 1,
        }
    }

    #[test]
    fn put_get_remove_and_list() {
        let dir = tempfile::tempdir().unwrap();
        let index = CacheIndex::new(dir.path().join("index-v1.redb"));
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        assert_eq!(
            index.get(&a).unwrap(),
            None,
            "a missing file is an empty index"
        );
        index.put(&a, &record(1)).unwrap();
        index.put(&b, &record(2)).unwrap();
        assert_eq!(index.get(&a).unwrap(), Some(record(1)));
        index.put(&a, &record(3)).unwrap();
        assert_eq!(index.get(&a).unwrap(), Some(record(3)));
        assert_eq!(index.all().unwrap().len(), 2);
        let c = Digest::of(b"c");
        index.put_all([(&a, &record(4)), (&c, &record(5))]).unwrap();
        assert_eq!(index.get(&a).unwrap(), Some(record(4)));
        assert_eq!(index.get(&c).unwrap(), Some(record(5)));
        index.remove([&c]).unwrap();
        index.remove([&a]).unwrap();
        assert_eq!(index.get(&a).unwrap(), None);
        assert_eq!(index.all().unwrap(), vec![(b, record(2))]);
    }

    #[test]
    fn reading_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index-v1.redb");
        let index = CacheIndex::new(&path);
        let a = Digest::of(b"a");
        index.put(&a, &record(1)).unwrap();
        let before = std::fs::read(&path).unwrap();
        assert_eq!(index.get(&a).unwrap(), Some(record(1)));
        assert_eq!(index.all().unwrap().len(), 1);
        assert_eq!(index.variant("none").unwrap(), None);
        assert!(
            std::fs::read(&path).unwrap() == before,
            "a read changed the index file"
        );
    }

    #[test]
    fn an_index_its_writer_never_closed_is_repaired_by_the_next_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index-v1.redb");
        let index = CacheIndex::new(&path);
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        index.put(&a, &record(1)).unwrap();
        // A writer killed with the index open: its commit is durable, the state a
        // clean close writes is not.
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let bytes = serde_json::to_vec(&record(2)).unwrap();
        txn.open_table(RECORDS)
            .unwrap()
            .insert(b.to_string().as_str(), bytes.as_slice())
            .unwrap();
        txn.commit().unwrap();
        std::mem::forget(db);
        release_file_locks(&path);
        assert!(
            matches!(
                ReadOnlyDatabase::open(&path),
                Err(DatabaseError::RepairAborted)
            ),
            "the index should need a repair"
        );

        assert_eq!(index.get(&b).unwrap(), Some(record(2)));
        assert_eq!(index.get(&a).unwrap(), Some(record(1)));
        assert!(ReadOnlyDatabase::open(&path).is_ok(), "left unrepaired");
    }

    /// Closes this process's descriptors of `path`, as the death of a process would.
    fn release_file_locks(path: &Path) {
        for fd in std::fs::read_dir("/proc/self/fd").unwrap() {
            let fd = fd.unwrap();
            if std::fs::read_link(fd.path()).ok().as_deref() == Some(path) {
                let n: i32 = fd.file_name().to_str().unwrap().parse().unwrap();
                // SAFETY: the descriptor belongs to the leaked database, which is never
                // used again.
                unsafe { libc::close(n) };
            }
        }
    }

    #[test]
    fn many_writers_at_once_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let index = Arc::new(CacheIndex::new(dir.path().join("index-v1.redb")));
        let threads: Vec<_> = (0..8u8)
            .map(|n| {
                let index = Arc::clone(&index);
                thread::spawn(move || {
                    for i in 0..10u8 {
                        index.put(&Digest::of(&[n, i]), &record(n)).unwrap();
                        assert!(index.get(&Digest::of(&[n, i])).unwrap().is_some());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(index.all().unwrap().len(), 80);
    }
}

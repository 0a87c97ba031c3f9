//! Cache records written behind the build.
//!
//! Writing a record opens the index for writing, commits and closes it: six
//! `fdatasync`s, several milliseconds each while other steps write data, during which
//! no other thread of the build can read the index. The step after needs the snapshot,
//! not the record, so records go to a thread of their own, which lets a record wait up
//! to a second for others (or for the build to finish) and commits them together.
//! Until then, lookups of this build find them here. A step's lock (see [`kiln_cache::StepLocks`]) travels with its record
//! and is released once the record is committed, so another build waiting for the same
//! step finds the record when its turn comes. The build waits for the writer
//! ([`RecordWriter::finish`]) before it uses the index otherwise or lets the store go.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kiln_cache::{CacheIndex, CacheRecord, IndexError, StepLock};
use kiln_image::Digest;

/// How long a record may wait for others to be committed with: at most this much of a
/// build's cache is lost when the process is killed.
const COMMIT_WITHIN: Duration = Duration::from_secs(1);

struct Pending {
    key: Digest,
    record: CacheRecord,
    /// Released when the record is committed.
    _turn: Option<StepLock>,
}

#[derive(Default)]
struct Shared {
    /// Records handed over and not committed yet.
    pending: Mutex<HashMap<Digest, CacheRecord>>,
    /// The first failure; nothing is written after it.
    failed: Mutex<Option<Arc<IndexError>>>,
}

/// Writes cache records on a thread of its own; see the module docs.
pub struct RecordWriter {
    shared: Arc<Shared>,
    queue: Mutex<Option<mpsc::Sender<Pending>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl RecordWriter {
    /// A writer into `index`.
    pub fn new(index: CacheIndex) -> std::io::Result<RecordWriter> {
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("kiln-records".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || write_queued(&index, &shared, &rx)
            })?;
        Ok(RecordWriter {
            shared,
            queue: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues `key` → `record`; `turn` is released once it is committed. Fails when an
    /// earlier record could not be written, or the writer has finished.
    pub fn put(
        &self,
        key: &Digest,
        record: &CacheRecord,
        turn: Option<StepLock>,
    ) -> anyhow::Result<()> {
        if let Some(e) = lock(&self.shared.failed).as_ref() {
            return Err(anyhow::Error::new(Arc::clone(e)));
        }
        let queue = lock(&self.queue);
        let Some(tx) = queue.as_ref() else {
            anyhow::bail!("internal error: a cache record was written after the build's last");
        };
        lock(&self.shared.pending).insert(key.clone(), record.clone());
        let pending = Pending {
            key: key.clone(),
            record: record.clone(),
            _turn: turn,
        };
        if tx.send(pending).is_err() {
            lock(&self.shared.pending).remove(key);
            anyhow::bail!("internal error: the cache record writer stopped");
        }
        Ok(())
    }

    /// A record queued and not committed yet.
    pub fn get(&self, key: &Digest) -> Option<CacheRecord> {
        lock(&self.shared.pending).get(key).cloned()
    }

    /// Takes no more records: those queued are committed now, without waiting.
    pub fn close(&self) {
        drop(lock(&self.queue).take());
    }

    /// Waits until every queued record is committed (closing the queue); the first
    /// failure, if any. Later calls return at once (with the same failure).
    pub fn finish(&self) -> Result<(), Arc<IndexError>> {
        self.close();
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
        match lock(&self.shared.failed).as_ref() {
            Some(e) => Err(Arc::clone(e)),
            None => Ok(()),
        }
    }
}

impl Drop for RecordWriter {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The writer thread: a record waits up to a second for others to come (or for the
/// build to finish), and they are committed together.
fn write_queued(index: &CacheIndex, shared: &Shared, rx: &mpsc::Receiver<Pending>) {
    let mut open = true;
    while open {
        let Ok(first) = rx.recv() else { break };
        let mut batch = vec![first];
        let until = Instant::now() + COMMIT_WITHIN;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(p) => batch.push(p),
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        batch.extend(rx.try_iter());
        if lock(&shared.failed).is_none()
            && let Err(e) = index.put_all(batch.iter().map(|p| (&p.key, &p.record)))
        {
            *lock(&shared.failed) = Some(Arc::new(e));
        }
        let mut pending = lock(&shared.pending);
        for p in &batch {
            // A later record of the same key may be queued behind this batch.
            if pending.get(&p.key) == Some(&p.record) {
                pending.remove(&p.key);
            }
        }
        drop(pending);
        drop(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_cache::LayerRecord;

    fn record(n: u8) -> CacheRecord {
        CacheRecord {
            layers: vec![LayerRecord {
                diff_id: Digest::of(&[n]),
                blob: Digest::of(&[n, n]),
                size: 1,
                media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                created: 0,
            }],
            created: 0,
        }
    }

    #[test]
    fn queued_records_are_found_at_once_and_committed_by_finish() {
        let dir = tempfile::tempdir().unwrap();
        let index = CacheIndex::new(dir.path().join("index-v1.redb"));
        let writer = RecordWriter::new(index.clone()).unwrap();
        let keys: Vec<Digest> = (0..50u8).map(|n| Digest::of(&[b'k', n])).collect();
        for (n, key) in keys.iter().enumerate() {
            writer.put(key, &record(n as u8), None).unwrap();
            let found = writer.get(key).or_else(|| index.get(key).unwrap());
            assert_eq!(found, Some(record(n as u8)));
        }
        writer.finish().unwrap();
        for (n, key) in keys.iter().enumerate() {
            assert_eq!(writer.get(key), None);
            assert_eq!(index.get(key).unwrap(), Some(record(n as u8)));
        }
        assert!(
            writer.put(&keys[0], &record(0), None).is_err(),
            "nothing is queued after the last record"
        );
    }

    #[test]
    fn a_failed_commit_fails_later_records_and_finish() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the index file should be: opening it fails.
        let path = dir.path().join("index-v1.redb");
        std::fs::create_dir(&path).unwrap();
        let writer = RecordWriter::new(CacheIndex::new(&path)).unwrap();
        writer.put(&Digest::of(b"a"), &record(1), None).unwrap();
        let err = writer.finish().unwrap_err();
        assert!(err.to_string().contains("index-v1.redb"), "{err}");
        assert_eq!(writer.get(&Digest::of(b"a")), None);
    }
}

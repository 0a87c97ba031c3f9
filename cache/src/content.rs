//! The content store: blobs by digest, laid out like an OCI image layout's `blobs/`.
//!
//! A blob's path is a function of its digest alone (`blobs/sha256/<hex>`), so readers
//! need no index and no lock: a file there is complete, because it only gets there by a
//! rename after its bytes were hashed, checked and synced. Writers stream into a temp
//! file under `ingest/` that they hold an exclusive lock on; see `docs/storage.md`
//! for how the collector tells an abandoned one. Two writers of the same blob both succeed:
//! identical bytes may replace each other.
//!
//! A blob's modification time is its last use, which the collector's keep-storage
//! limit orders by; committing a blob that is already present, or [`ContentStore::touch`],
//! renews it.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use kiln_image::{BlobRead, BlobWrite, Digest, Digester};
use tempfile::NamedTempFile;

use crate::CacheError;
use crate::scratch::{self, Swept};

/// Blobs by digest under one directory (`content-v1/` in a store root).
#[derive(Debug, Clone)]
pub struct ContentStore {
    /// `blobs/sha256/`: one file per blob, named by the hex of its digest.
    blobs: PathBuf,
    /// `ingest/`: temp files of writers in progress.
    ingest: PathBuf,
}

/// One blob as [`ContentStore::entries`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// The blob's digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written or touched.
    pub last_used: SystemTime,
}

impl ContentStore {
    /// Opens the content store in `dir`, creating its folders if needed.
    pub fn open(dir: &Path) -> Result<ContentStore, CacheError> {
        let store = ContentStore {
            blobs: dir.join("blobs").join("sha256"),
            ingest: dir.join("ingest"),
        };
        for d in [&store.blobs, &store.ingest] {
            fs::create_dir_all(d).map_err(CacheError::io("create", d))?;
        }
        Ok(store)
    }

    /// Starts writing a blob; see [`BlobWriter::commit`].
    pub fn writer(&self) -> Result<BlobWriter, CacheError> {
        self.new_writer(true)
    }

    /// Starts writing a blob whose writer hashes every byte it writes itself (the layer
    /// pipeline does): the store does not hash it again, and its
    /// [`commit`](BlobWriter::commit) must be given the writer's digest.
    pub fn writer_hashed_by_caller(&self) -> Result<BlobWriter, CacheError> {
        self.new_writer(false)
    }

    fn new_writer(&self, hash: bool) -> Result<BlobWriter, CacheError> {
        let temp = NamedTempFile::with_prefix_in("blob-", &self.ingest)
            .map_err(CacheError::io("create a temp file in", &self.ingest))?;
        temp.as_file()
            .lock()
            .map_err(CacheError::io("lock", temp.path()))?;
        Ok(BlobWriter {
            file: BufWriter::with_capacity(1 << 16, temp),
            digester: hash.then(Digester::new),
            len: 0,
            blobs: self.blobs.clone(),
        })
    }

    /// Whether the blob is present.
    pub fn contains(&self, d: &Digest) -> bool {
        self.path(d).is_file()
    }

    /// Where the blob is (or would be) stored.
    pub fn path(&self, d: &Digest) -> PathBuf {
        self.blobs.join(d.hex())
    }

    /// Opens the blob for reading.
    pub fn open_blob(&self, d: &Digest) -> Result<File, CacheError> {
        let path = self.path(d);
        File::open(&path).map_err(|e| self.absent_or(d, "open", &path, e))
    }

    /// Reads a whole blob into memory.
    pub fn read(&self, d: &Digest) -> Result<Vec<u8>, CacheError> {
        let path = self.path(d);
        fs::read(&path).map_err(|e| self.absent_or(d, "read", &path, e))
    }

    /// Stores `data` and returns its digest.
    pub fn put(&self, data: &[u8]) -> Result<Digest, CacheError> {
        let mut w = self.writer()?;
        w.write_all(data)
            .map_err(CacheError::io("write", w.temp_path()))?;
        Ok(w.commit(None)?.0)
    }

    /// The blob's size in bytes.
    pub fn size(&self, d: &Digest) -> Result<u64, CacheError> {
        let path = self.path(d);
        fs::metadata(&path)
            .map(|m| m.len())
            .map_err(|e| self.absent_or(d, "stat", &path, e))
    }

    /// Marks the blob as used now, for the keep-storage order of the collector.
    pub fn touch(&self, d: &Digest) -> Result<(), CacheError> {
        let path = self.path(d);
        touch(&path).map_err(|e| self.absent_or(d, "touch", &path, e))
    }

    /// Removes the blob.
    pub fn delete(&self, d: &Digest) -> Result<(), CacheError> {
        let path = self.path(d);
        fs::remove_file(&path).map_err(|e| self.absent_or(d, "remove", &path, e))
    }

    /// Every blob with its size. Files whose names are not digests are not blobs and are
    /// left out.
    pub fn list(&self) -> Result<Vec<(Digest, u64)>, CacheError> {
        Ok(self
            .entries()?
            .into_iter()
            .map(|b| (b.digest, b.size))
            .collect())
    }

    /// Every blob with its size and last use.
    pub fn entries(&self) -> Result<Vec<BlobInfo>, CacheError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.blobs).map_err(CacheError::io("list", &self.blobs))? {
            let entry = entry.map_err(CacheError::io("list", &self.blobs))?;
            let Some(digest) = entry
                .file_name()
                .to_str()
                .and_then(|hex| format!("sha256:{hex}").parse::<Digest>().ok())
            else {
                continue;
            };
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                // Deleted since it was listed.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(CacheError::io("stat", entry.path())(e)),
            };
            out.push(BlobInfo {
                digest,
                size: meta.len(),
                last_used: meta
                    .modified()
                    .map_err(CacheError::io("stat", entry.path()))?,
            });
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }

    /// Finds (and unless `dry_run`, removes) temp files of writers that died.
    pub(crate) fn sweep_ingest(&self, dry_run: bool) -> Result<Swept, CacheError> {
        scratch::sweep(&self.ingest, dry_run)
    }

    /// Where blobs being written are.
    pub(crate) fn ingest_dir(&self) -> &Path {
        &self.ingest
    }

    fn absent_or(&self, d: &Digest, op: &'static str, path: &Path, e: io::Error) -> CacheError {
        if e.kind() == io::ErrorKind::NotFound {
            CacheError::BlobNotFound(d.clone())
        } else {
            CacheError::io(op, path)(e)
        }
    }
}

/// Sets a file's modification time to now.
pub(crate) fn touch(path: &Path) -> io::Result<()> {
    File::open(path)?.set_modified(SystemTime::now())
}

/// A blob being written. Write the bytes, then [`commit`](BlobWriter::commit); dropped
/// without a commit, it removes its temp file and stores nothing.
pub struct BlobWriter {
    file: BufWriter<NamedTempFile>,
    /// Hashes what is written; `None` when the caller does.
    digester: Option<Digester>,
    len: u64,
    blobs: PathBuf,
}

impl BlobWriter {
    /// Checks the digest of what was written against `expected` (if given), syncs it and
    /// moves it into place. On a mismatch nothing is stored and
    /// [`CacheError::DigestMismatch`] is returned. Returns the digest and size.
    ///
    /// A writer from [`ContentStore::writer_hashed_by_caller`] stores what was written
    /// under `expected`, which must be given.
    pub fn commit(self, expected: Option<&Digest>) -> Result<(Digest, u64), CacheError> {
        let temp_path = self.temp_path().to_owned();
        let size = self.len;
        let temp = self
            .file
            .into_inner()
            .map_err(|e| CacheError::io("write", &temp_path)(e.into_error()))?;
        let actual = match (self.digester, expected) {
            (Some(digester), _) => digester.finish(),
            (None, Some(expected)) => expected.clone(),
            (None, None) => {
                return Err(CacheError::io("commit", &temp_path)(io::Error::other(
                    "a blob hashed by its writer needs that digest to be stored",
                )));
            }
        };
        if let Some(expected) = expected
            && *expected != actual
        {
            return Err(CacheError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let target = self.blobs.join(actual.hex());
        match touch(&target) {
            // Already stored (by us earlier or by a concurrent writer): identical bytes.
            Ok(()) => return Ok((actual, size)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(CacheError::io("touch", &target)(e)),
        }
        temp.as_file()
            .sync_all()
            .map_err(CacheError::io("sync", &temp_path))?;
        temp.persist(&target)
            .map_err(|e| CacheError::io("rename into place", &target)(e.error))?;
        scratch::sync_dir(&self.blobs)?;
        Ok((actual, size))
    }

    fn temp_path(&self) -> &Path {
        self.file.get_ref().path()
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        if let Some(digester) = &mut self.digester {
            digester.update(&buf[..n]);
        }
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl BlobRead for ContentStore {
    fn open_blob(&self, digest: &Digest) -> io::Result<Box<dyn Read + Send + '_>> {
        Ok(Box::new(ContentStore::open_blob(self, digest)?))
    }

    fn blob_size(&self, digest: &Digest) -> io::Result<u64> {
        Ok(self.size(digest)?)
    }

    fn read_blob(&self, digest: &Digest) -> io::Result<Vec<u8>> {
        Ok(self.read(digest)?)
    }
}

impl BlobWrite for ContentStore {
    fn has_blob(&self, digest: &Digest) -> bool {
        self.contains(digest)
    }

    fn write_blob(&self, expected: &Digest, data: &mut dyn Read) -> io::Result<u64> {
        let mut w = self.writer()?;
        io::copy(data, &mut w)?;
        Ok(w.commit(Some(expected))?.1)
    }

    fn put_blob(&self, data: &[u8]) -> io::Result<(Digest, u64)> {
        let digest = self.put(data)?;
        Ok((digest, data.len() as u64))
    }
}

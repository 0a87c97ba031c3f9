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
//!
//! A plain layer that a build committed as an overlay snapshot need not be written
//! twice: [`ContentStore::keep_as_snapshot`] records (in `kept/<hex>`) that the
//! snapshot's tree writes the blob, and the blob file is only written, from the tree,
//! when something first reads it ([`ContentStore::open_blob`]); its digest is checked
//! then. Until that, such a blob is present exactly as long as its snapshot is: the
//! collector writes it out before it removes a snapshot that a kept blob still needs.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use kiln_image::layer::{Compression, LayerDescriptor, Source, WriteOptions, write_layer};
use kiln_image::media_type::Flavor;
use kiln_image::{BlobRead, BlobWrite, Digest, Digester};
use tempfile::NamedTempFile;

use crate::root::SNAPSHOTS_DIR;
use crate::scratch::{self, Swept};
use crate::snapshot::{self, SnapshotMode};
use crate::{CacheError, ChainId};

/// Blobs by digest under one directory (`content-v1/` in a store root).
#[derive(Debug, Clone)]
pub struct ContentStore {
    /// `blobs/sha256/`: one file per blob, named by the hex of its digest.
    blobs: PathBuf,
    /// `ingest/`: temp files of writers in progress.
    ingest: PathBuf,
    /// `kept/`: one [`SnapshotLayer`] record per plain layer kept as its snapshot.
    kept: PathBuf,
    /// The overlay snapshots those records name.
    snapshots: PathBuf,
}

/// A plain layer kept as the overlay snapshot it was committed as, rather than as a blob
/// file: writing the snapshot's tree as a layer gives the blob's bytes again.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotLayer {
    /// The overlay snapshot whose `fs/` is the layer's tree.
    pub chain_id: ChainId,
    /// The blob's size in bytes.
    pub size: u64,
    /// Whether the tree is an overlay upper dir (whiteouts in overlay form) rather than
    /// a plain tree.
    pub overlay_upper: bool,
    /// The `SOURCE_DATE_EPOCH` the layer was written with.
    pub source_date_epoch: Option<i64>,
}

impl SnapshotLayer {
    fn write_options(&self) -> WriteOptions {
        WriteOptions {
            compression: Compression::None,
            source_date_epoch: self.source_date_epoch,
            source: if self.overlay_upper {
                Source::OverlayUpper
            } else {
                Source::Tree
            },
            ..WriteOptions::default()
        }
    }
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
    /// Whether it is kept as its snapshot (taking no space of its own) rather than as
    /// a file.
    pub in_snapshot: bool,
}

impl ContentStore {
    /// Opens the content store in `dir`, creating its folders if needed.
    pub fn open(dir: &Path) -> Result<ContentStore, CacheError> {
        let root = dir.parent().unwrap_or(dir);
        let store = ContentStore {
            blobs: dir.join("blobs").join("sha256"),
            ingest: dir.join("ingest"),
            kept: dir.join("kept"),
            snapshots: root
                .join(SNAPSHOTS_DIR)
                .join(SnapshotMode::Overlay.dir_name()),
        };
        for d in [&store.blobs, &store.ingest, &store.kept] {
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

    /// Whether the blob is present (as a file, or kept as a snapshot that still exists).
    pub fn contains(&self, d: &Digest) -> bool {
        self.path(d).is_file()
            || self
                .snapshot_layer(d)
                .ok()
                .flatten()
                .is_some_and(|layer| self.snapshot_tree(&layer.chain_id).is_some())
    }

    /// Where the blob is (or would be) stored.
    pub fn path(&self, d: &Digest) -> PathBuf {
        self.blobs.join(d.hex())
    }

    /// Opens the blob for reading. A blob kept as its snapshot is written out first.
    pub fn open_blob(&self, d: &Digest) -> Result<File, CacheError> {
        let path = self.path(d);
        match File::open(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.kept_path(d).exists() => {
                self.write_out(d)?;
                File::open(&path).map_err(|e| self.absent_or(d, "open", &path, e))
            }
            opened => opened.map_err(|e| self.absent_or(d, "open", &path, e)),
        }
    }

    /// Reads a whole blob into memory.
    pub fn read(&self, d: &Digest) -> Result<Vec<u8>, CacheError> {
        let mut bytes = Vec::new();
        self.open_blob(d)?
            .read_to_end(&mut bytes)
            .map_err(CacheError::io("read", self.path(d)))?;
        Ok(bytes)
    }

    /// Records that the plain layer `digest` is kept as the snapshot `layer` names, whose
    /// tree it was written from, instead of as a file. Nothing is recorded when the blob
    /// is present already. Commit the snapshot first: the record is only as good as it.
    pub fn keep_as_snapshot(&self, d: &Digest, layer: &SnapshotLayer) -> Result<(), CacheError> {
        if self.contains(d) {
            return self.touch(d);
        }
        let json = serde_json::to_vec(layer).expect("a kept layer record serialises");
        // Written in `ingest/` like a blob, so that the sweep of abandoned writes finds
        // the temp file of a process killed here.
        let mut temp = NamedTempFile::with_prefix_in("kept-", &self.ingest)
            .map_err(CacheError::io("create a temp file in", &self.ingest))?;
        temp.as_file()
            .lock()
            .map_err(CacheError::io("lock", temp.path()))?;
        temp.write_all(&json)
            .and_then(|()| temp.as_file().sync_all())
            .map_err(CacheError::io("write", temp.path()))?;
        let target = self.kept_path(d);
        temp.persist(&target)
            .map_err(|e| CacheError::io("rename into place", &target)(e.error))?;
        scratch::sync_dir(&self.kept)
    }

    /// Writes a blob kept as its snapshot out into a file of its own, checking that the
    /// tree still writes the bytes the digest names; afterwards the blob no longer
    /// depends on the snapshot.
    pub fn write_out(&self, d: &Digest) -> Result<(), CacheError> {
        let layer = self
            .snapshot_layer(d)?
            .ok_or_else(|| CacheError::BlobNotFound(d.clone()))?;
        let tree = self
            .snapshot_tree(&layer.chain_id)
            .ok_or_else(|| CacheError::BlobNotFound(d.clone()))?;
        let mut writer = self.writer_hashed_by_caller()?;
        let written = write_layer(&tree, &mut writer, &layer.write_options())
            .map_err(|source| self.unwritable(d, &layer, source))?;
        if written.digest != *d {
            return Err(CacheError::SnapshotChanged {
                blob: d.clone(),
                chain_id: layer.chain_id,
                actual: written.digest,
            });
        }
        writer.commit(Some(d))?;
        match fs::remove_file(self.kept_path(d)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(CacheError::io("remove", self.kept_path(d))(e))
            }
            _ => Ok(()),
        }
    }

    /// Writes a blob kept as its snapshot (and not written out) straight from the
    /// snapshot's tree into `out`, compressed with `compression`, as a layer of
    /// `flavor`; `None`, writing nothing, when the blob is not kept that way. The
    /// caller checks the returned diff ID against the plain blob's digest.
    pub fn write_kept<W: Write>(
        &self,
        d: &Digest,
        out: &mut W,
        compression: Compression,
        flavor: Flavor,
    ) -> Result<Option<LayerDescriptor>, CacheError> {
        if !self.in_snapshot(d) {
            return Ok(None);
        }
        let Some(layer) = self.snapshot_layer(d)? else {
            return Ok(None);
        };
        let tree = self
            .snapshot_tree(&layer.chain_id)
            .ok_or_else(|| CacheError::BlobNotFound(d.clone()))?;
        let options = WriteOptions {
            compression,
            flavor,
            ..layer.write_options()
        };
        write_layer(&tree, out, &options)
            .map(Some)
            .map_err(|source| self.unwritable(d, &layer, source))
    }

    /// What a blob kept as its snapshot hashes to now, written from the snapshot's tree
    /// without being stored.
    pub(crate) fn hash_kept(&self, d: &Digest) -> Result<Digest, CacheError> {
        let layer = self
            .snapshot_layer(d)?
            .ok_or_else(|| CacheError::BlobNotFound(d.clone()))?;
        let tree = self
            .snapshot_tree(&layer.chain_id)
            .ok_or_else(|| CacheError::SnapshotNotFound(layer.chain_id.clone()))?;
        write_layer(&tree, &mut io::sink(), &layer.write_options())
            .map(|written| written.digest)
            .map_err(|source| self.unwritable(d, &layer, source))
    }

    /// Blobs kept as snapshots, and the snapshot each needs.
    pub(crate) fn kept_layers(&self) -> Result<Vec<(Digest, ChainId)>, CacheError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.kept).map_err(CacheError::io("list", &self.kept))? {
            let entry = entry.map_err(CacheError::io("list", &self.kept))?;
            let Some(digest) = digest_of_name(&entry.file_name()) else {
                continue;
            };
            if let Some(layer) = self.snapshot_layer(&digest)? {
                out.push((digest, layer.chain_id));
            }
        }
        Ok(out)
    }

    /// Whether the blob is kept as its snapshot, with no file of its own yet.
    pub(crate) fn in_snapshot(&self, d: &Digest) -> bool {
        !self.path(d).exists() && self.kept_path(d).exists()
    }

    /// The record of a blob kept as its snapshot.
    fn snapshot_layer(&self, d: &Digest) -> Result<Option<SnapshotLayer>, CacheError> {
        let path = self.kept_path(d);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| CacheError::BadMetadata { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CacheError::io("read", &path)(e)),
        }
    }

    /// The tree of a committed overlay snapshot.
    fn snapshot_tree(&self, chain_id: &ChainId) -> Option<PathBuf> {
        let dir = self.snapshots.join(chain_id.digest().hex());
        dir.join(snapshot::META)
            .is_file()
            .then(|| dir.join(snapshot::FS))
    }

    /// Where the record of a blob kept as its snapshot is (or would be).
    pub(crate) fn kept_path(&self, d: &Digest) -> PathBuf {
        self.kept.join(d.hex())
    }

    fn unwritable(
        &self,
        d: &Digest,
        layer: &SnapshotLayer,
        source: kiln_image::layer::LayerError,
    ) -> CacheError {
        CacheError::FromSnapshot {
            blob: d.clone(),
            chain_id: layer.chain_id.clone(),
            source: Box::new(source),
        }
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
        match fs::metadata(&path) {
            Ok(meta) => Ok(meta.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => match self.snapshot_layer(d)? {
                Some(layer) => Ok(layer.size),
                None => Err(CacheError::BlobNotFound(d.clone())),
            },
            Err(e) => Err(CacheError::io("stat", &path)(e)),
        }
    }

    /// Marks the blob as used now, for the keep-storage order of the collector.
    pub fn touch(&self, d: &Digest) -> Result<(), CacheError> {
        let path = self.path(d);
        match touch(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let kept = self.kept_path(d);
                touch(&kept).map_err(|e| self.absent_or(d, "touch", &kept, e))
            }
            touched => touched.map_err(|e| self.absent_or(d, "touch", &path, e)),
        }
    }

    /// Removes the blob (its file, and its record if it is kept as a snapshot).
    pub fn delete(&self, d: &Digest) -> Result<(), CacheError> {
        let mut found = false;
        for path in [self.path(d), self.kept_path(d)] {
            match fs::remove_file(&path) {
                Ok(()) => found = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(CacheError::io("remove", &path)(e)),
            }
        }
        if found {
            Ok(())
        } else {
            Err(CacheError::BlobNotFound(d.clone()))
        }
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

    /// Every blob with its size and last use, those kept as snapshots included.
    pub fn entries(&self) -> Result<Vec<BlobInfo>, CacheError> {
        let mut out = Vec::new();
        for (dir, in_snapshot) in [(&self.blobs, false), (&self.kept, true)] {
            for entry in fs::read_dir(dir).map_err(CacheError::io("list", dir))? {
                let entry = entry.map_err(CacheError::io("list", dir))?;
                let Some(digest) = digest_of_name(&entry.file_name()) else {
                    continue;
                };
                let meta = match entry.metadata() {
                    Ok(meta) => meta,
                    // Deleted since it was listed.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(CacheError::io("stat", entry.path())(e)),
                };
                let size = if in_snapshot {
                    match self.snapshot_layer(&digest)? {
                        Some(layer) => layer.size,
                        None => continue,
                    }
                } else {
                    meta.len()
                };
                out.push(BlobInfo {
                    digest,
                    size,
                    last_used: meta
                        .modified()
                        .map_err(CacheError::io("stat", entry.path()))?,
                    in_snapshot,
                });
            }
        }
        // A blob written out while it was listed shows up twice: the file wins.
        out.sort_by(|a, b| {
            a.digest
                .cmp(&b.digest)
                .then(a.in_snapshot.cmp(&b.in_snapshot))
        });
        out.dedup_by(|later, first| later.digest == first.digest);
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

/// The digest a file of `blobs/sha256/` or `kept/` is named after; `None` for files that
/// are not blobs.
fn digest_of_name(name: &std::ffi::OsStr) -> Option<Digest> {
    let hex = name.to_str()?;
    if hex.len() != 64 {
        return None;
    }
    format!("sha256:{hex}").parse().ok()
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

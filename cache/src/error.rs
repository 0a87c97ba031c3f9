//! The one error type of this crate.
//!
//! Every store operation touches the filesystem, so most failures are I/O errors; they
//! carry the path and the operation that failed because a bare `No such file or
//! directory` names neither. The other variants are the store's own verdicts.

use std::io;
use std::path::PathBuf;

use kiln_image::Digest;

use crate::chain::ChainId;

/// What went wrong in the content store, the snapshotter or the garbage collector.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A filesystem operation failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done (`create`, `read`, `rename`, …).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The blob is not in the content store.
    #[error("blob {0} is not in the content store")]
    BlobNotFound(Digest),
    /// Written bytes do not hash to the digest they were announced with.
    #[error("content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest the caller announced.
        expected: Digest,
        /// The digest of the bytes actually written.
        actual: Digest,
    },
    /// The root was written by a newer kiln with a layout this one does not know.
    #[error(
        "store at {} has layout version {found}, this kiln understands up to {supported}",
        path.display()
    )]
    UnsupportedLayout {
        /// The layout file.
        path: PathBuf,
        /// The version found in it.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// A metadata file of the store is not valid JSON of the expected shape.
    #[error("cannot parse {}", path.display())]
    BadMetadata {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A blob announced (or shaped) as an image manifest or index cannot be parsed.
    #[error("blob {digest} looks like an image manifest or index but cannot be parsed")]
    BadManifest {
        /// The blob.
        digest: Digest,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A journal of an earlier boot names snapshots that may be incomplete on disk, and
    /// they could not all be removed; until they are, the store must not be used.
    #[error(
        "cannot remove the snapshots named in {}, which a crash may have left incomplete",
        journal.display()
    )]
    Recovery {
        /// The journal file.
        journal: PathBuf,
        /// What failed.
        #[source]
        source: Box<CacheError>,
    },
    /// The snapshot is not in the snapshot store.
    #[error("snapshot {0} does not exist")]
    SnapshotNotFound(ChainId),
    /// A snapshot can only be committed from a directory on the store's filesystem.
    #[error(
        "{} is not on the same filesystem as the snapshot store; create it under Snapshotter::scratch",
        path.display()
    )]
    CrossDevice {
        /// The directory that was to be committed.
        path: PathBuf,
    },
    /// A layer blob unpacks to a tar whose digest is not the diff ID the image promised.
    #[error("layer {blob} unpacks to diff ID {actual}, but {expected} was expected")]
    DiffIdMismatch {
        /// The layer blob.
        blob: Digest,
        /// The diff ID the image config names.
        expected: Digest,
        /// The digest of the uncompressed tar.
        actual: Digest,
    },
    /// A snapshot of no layers was asked for; an empty root filesystem is an empty
    /// directory, not a snapshot.
    #[error("a snapshot needs at least one layer")]
    NoLayers,
    /// The cache index failed.
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    /// A layer could not be unpacked into a snapshot.
    #[error("cannot unpack layer {blob} into snapshot {chain_id}")]
    Unpack {
        /// The layer blob.
        blob: Digest,
        /// The snapshot being built.
        chain_id: ChainId,
        /// What the layer applier reported.
        #[source]
        source: Box<kiln_image::layer::LayerError>,
    },
    /// A layer kept as its snapshot could not be written out of the snapshot's tree.
    #[error("cannot write layer {blob} from snapshot {chain_id}")]
    FromSnapshot {
        /// The layer blob.
        blob: Digest,
        /// The snapshot that holds it.
        chain_id: ChainId,
        /// What the layer writer reported.
        #[source]
        source: Box<kiln_image::layer::LayerError>,
    },
    /// A layer kept as its snapshot no longer matches it: the snapshot's tree was
    /// changed since the layer was committed.
    #[error("layer {blob} does not match snapshot {chain_id} any more: its tree writes {actual}")]
    SnapshotChanged {
        /// The layer blob.
        blob: Digest,
        /// The snapshot that held it.
        chain_id: ChainId,
        /// The digest of the layer the tree writes now.
        actual: Digest,
    },
    /// A plain layer could not be compressed for a registry or cache.
    #[error("cannot compress layer {blob}")]
    Compress {
        /// The plain layer blob.
        blob: Digest,
        /// What the compressor reported.
        #[source]
        source: Box<kiln_image::layer::LayerError>,
    },
}

impl CacheError {
    /// Wraps an I/O error with what was being done to which path.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> CacheError {
        let path = path.into();
        move |source| CacheError::Io { op, path, source }
    }
}

impl From<CacheError> for io::Error {
    /// For the `kiln_image` blob traits, which speak `io::Error`: absence stays
    /// `NotFound` and a digest mismatch becomes `InvalidData`, as the traits promise.
    fn from(err: CacheError) -> io::Error {
        let kind = match &err {
            CacheError::BlobNotFound(_) | CacheError::SnapshotNotFound(_) => {
                io::ErrorKind::NotFound
            }
            CacheError::DigestMismatch { .. }
            | CacheError::DiffIdMismatch { .. }
            | CacheError::BadMetadata { .. }
            | CacheError::BadManifest { .. }
            | CacheError::Unpack { .. }
            | CacheError::Compress { .. }
            | CacheError::FromSnapshot { .. }
            | CacheError::SnapshotChanged { .. } => io::ErrorKind::InvalidData,
            CacheError::Io { source, .. } => source.kind(),
            CacheError::UnsupportedLayout { .. } => io::ErrorKind::Unsupported,
            CacheError::CrossDevice { .. } => io::ErrorKind::CrossesDevices,
            CacheError::NoLayers => io::ErrorKind::InvalidInput,
            CacheError::Index(_) | CacheError::Recovery { .. } => io::ErrorKind::Other,
        };
        io::Error::new(kind, err)
    }
}

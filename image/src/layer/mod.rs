//! Layers: directory trees to layer blobs ([`write_layer`]) and layer blobs onto
//! directories ([`apply_layer`]), with whiteouts and compression.
//!
//! The content store and snapshotter in `kiln-cache` drive both: the writer turns a
//! container's overlay upper dir (or any tree) into a blob written to a temp file of the
//! content store, returning the digests the manifest and config need; the applier unpacks
//! pulled or cached layers into snapshot directories. Both stream: neither holds a whole
//! layer in memory.

mod apply;
mod compression;
mod diff;
mod gzip;
mod pipeline;
mod root;
mod tar_reader;
pub mod whiteout;
mod writer;

use std::io;
use std::path::PathBuf;

use oci_spec::image::{Descriptor, MediaType};

pub use apply::{Applied, ApplyOptions, apply_layer};
pub use compression::Compression;
pub use diff::diff_trees;
pub use tar_reader::{EXTENSION_MAX, HeaderProblem};
pub use whiteout::{WhiteoutMode, is_overlay_opaque};
pub use writer::{Source, WriteOptions, compress_layer, write_layer};

use crate::Digest;

/// A written layer, as a manifest and an image config refer to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerDescriptor {
    /// Digest of the blob (compressed bytes).
    pub digest: Digest,
    /// Size of the blob.
    pub size: u64,
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub diff_size: u64,
    /// The blob's media type.
    pub media_type: MediaType,
    /// The blob's compression.
    pub compression: Compression,
}

impl LayerDescriptor {
    /// The OCI descriptor of the blob, for a manifest's `layers`.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(self.media_type.clone(), self.size, &self.digest)
    }
}

/// Why a layer could not be written or applied.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// A compression level out of the algorithm's range.
    #[error("compression level {level} is not valid for {compression}")]
    InvalidLevel {
        /// The algorithm.
        compression: Compression,
        /// The level asked for.
        level: i32,
    },
    /// The blob is compressed with an algorithm layers may not use.
    #[error("layer is compressed with {format}, which is not supported (gzip, zstd or none)")]
    UnsupportedCompression {
        /// The format recognised.
        format: &'static str,
    },
    /// The source of a layer to write is not a directory.
    #[error("layer source {path} is not a directory")]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },
    /// Reading the source tree failed.
    #[error("cannot read {path}")]
    Walk {
        /// The file or directory.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// A file in the source tree has a name a layer reserves for whiteouts.
    #[error(
        "{path}: names starting with .wh. are reserved for whiteouts and cannot be put in a layer"
    )]
    ReservedName {
        /// The file.
        path: PathBuf,
    },
    /// A file changed size while it was being written into the layer.
    #[error("{path} changed while being read ({actual} of {expected} bytes)")]
    FileChanged {
        /// The file.
        path: PathBuf,
        /// Its size when listed.
        expected: u64,
        /// The bytes there were.
        actual: u64,
    },
    /// Writing the blob failed.
    #[error("cannot write the layer")]
    WriteLayer {
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// Reading or decompressing the blob failed outside any entry.
    #[error("cannot read the layer")]
    ReadLayer {
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The target directory cannot be opened.
    #[error("cannot open target directory {path}")]
    Target {
        /// The target.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The header of an entry is unreadable (corrupt, truncated or not a tar).
    #[error("layer entry #{index}: unreadable header")]
    ReadEntry {
        /// Position of the entry in the tar, from 0.
        index: usize,
        /// What is wrong.
        #[source]
        problem: HeaderProblem,
    },
    /// An entry was refused or could not be applied.
    #[error("layer entry #{index} {path:?}")]
    Entry {
        /// Position of the entry in the tar, from 0.
        index: usize,
        /// The entry's path as written in the tar.
        path: String,
        /// What is wrong.
        #[source]
        problem: EntryProblem,
    },
    /// Setting a directory's times at the end of an apply failed.
    #[error("cannot set the times of directory {path:?}")]
    DirectoryTimes {
        /// The directory.
        path: String,
        /// What is wrong.
        #[source]
        problem: EntryProblem,
    },
}

/// What is wrong with a path in a layer entry.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum PathProblem {
    /// The path has a NUL byte.
    #[error("path contains a NUL byte")]
    NulByte,
    /// The path is absolute.
    #[error("path is absolute")]
    Absolute,
    /// The path has a `..` component.
    #[error("path has a '..' component")]
    DotDot,
}

/// Why one layer entry was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum EntryProblem {
    /// The entry's own path is unacceptable.
    #[error(transparent)]
    Path(PathProblem),
    /// A directory on the way to the entry is a symlink.
    #[error("path goes through symlink {component:?}")]
    ThroughSymlink {
        /// The symlink, relative to the target.
        component: String,
    },
    /// A directory on the way to the entry is not a directory.
    #[error("{component:?} is not a directory")]
    ParentNotDirectory {
        /// The non-directory, relative to the target.
        component: String,
    },
    /// A non-directory entry names the target itself.
    #[error("entry names the layer root but is not a directory")]
    RootNotDirectory,
    /// A whiteout that names no file (`.wh.`, `.wh..`, `.wh...`).
    #[error("whiteout names no file in its directory")]
    BadWhiteout,
    /// A non-directory replaces a directory this layer already wrote into.
    #[error("replaces a directory written earlier in the same layer")]
    ReplacesDirectory,
    /// A symlink with an empty target or a NUL byte in it.
    #[error("invalid symlink target {target:?}")]
    BadSymlinkTarget {
        /// The target as written.
        target: String,
    },
    /// A hard link's target path is unacceptable.
    #[error("hard link target {target:?}")]
    LinkTarget {
        /// The target as written.
        target: String,
        /// What is wrong with it.
        #[source]
        problem: PathProblem,
    },
    /// A hard link to something that does not exist in the target.
    #[error("hard link target {target:?} does not exist")]
    LinkTargetMissing {
        /// The target as written.
        target: String,
    },
    /// A hard link to a directory.
    #[error("hard link target {target:?} is a directory")]
    LinkToDirectory {
        /// The target as written.
        target: String,
    },
    /// An entry type layers do not use.
    #[error("unsupported entry type {0:?}")]
    UnsupportedType(u8),
    /// A header field that is not a number or out of range.
    #[error("invalid {field} field")]
    BadHeaderField {
        /// The field.
        field: &'static str,
    },
    /// The archive ends inside the entry's data.
    #[error("archive ends after {actual} of the entry's {expected} bytes")]
    Truncated {
        /// Size announced by the header.
        expected: u64,
        /// Bytes present.
        actual: u64,
    },
    /// Reading the entry's data or extended header failed.
    #[error("cannot read the entry's data")]
    ReadData {
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// Setting an xattr failed.
    #[error("cannot set xattr {name}")]
    Xattr {
        /// The xattr.
        name: String,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// A filesystem operation failed.
    #[error("cannot {op}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The failure.
        #[source]
        source: io::Error,
    },
}

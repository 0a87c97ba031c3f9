//! File actions: what `COPY`, `ADD`, `WORKDIR` and heredoc sources do to a stage's
//! filesystem, performed on the host while the stage's overlay is mounted at `root`.
//!
//! # Shape
//!
//! - Every destination is a *container* path, resolved inside `root` as the container
//!   would resolve it ([`resolve_in_root`]): symlinks are followed, an absolute target
//!   means `root`, `..` stops at `root`. Nothing is ever written outside `root`, however
//!   hostile the image's symlinks are.
//! - [`copy`] takes a list of entries that is already the step's whole selection
//!   (`.dockerignore`, `--exclude`, wildcards and Docker's directory rules are applied by
//!   the caller, by the same walk that computes the step's cache key). Each entry is one
//!   filesystem object; directories are not walked, so nothing the selection left out
//!   can slip in.
//! - [`unpack`] extracts a local archive with the image crate's hardened layer applier
//!   into a scratch directory, then merges the result into place with the copier; so
//!   there is one tar extractor and one place that decides how files land in a stage.
//! - [`resolve_user`] (the `USER` of `RUN`) and [`resolve_owner`] (`--chown`) read the
//!   stage's `/etc/passwd` and `/etc/group`; they share parsing but not rules, because
//!   runc and BuildKit's copy resolve a bare uid differently.
//!
//! These functions block on disk I/O; async callers run them in
//! `tokio::task::spawn_blocking`.

mod actions;
mod chmod;
mod copy;
mod inroot;
mod unpack;
mod users;

use std::io;
use std::path::PathBuf;

use kiln_image::LayerError;

pub use actions::{mkdir, mkfile, rm};
pub use chmod::{Chmod, ChmodError};
pub use copy::{CopyEntry, CopyRequest, CopyStats, copy};
pub use inroot::resolve_in_root;
pub use unpack::{is_archive, unpack};
pub use users::{UserError, resolve_owner, resolve_user};

/// The numeric owner given to files a file action creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Why a file action failed. Destination paths are shown as the container sees them.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// A container path could not be resolved inside the root (a symlink loop, or an
    /// unreadable directory on the way).
    #[error("cannot resolve {path:?} inside the root filesystem")]
    Resolve {
        /// The container path.
        path: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// A copy entry's target is absolute or climbs with `..`.
    #[error("copy target {target:?} must be a relative path without '..'")]
    InvalidTarget {
        /// The target as given.
        target: PathBuf,
    },
    /// A source file could not be inspected or read.
    #[error("cannot read source {path:?}")]
    Source {
        /// The host path of the source.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// A source is a socket, which has no meaning in an image.
    #[error("source {path:?} is a socket, which cannot be copied")]
    UnsupportedSource {
        /// The host path of the source.
        path: PathBuf,
    },
    /// A non-directory would replace an existing directory.
    #[error("cannot copy {from:?} to {to:?}: a directory is in the way")]
    DirectoryInTheWay {
        /// The host path of the source.
        from: PathBuf,
        /// The container path of the directory.
        to: String,
    },
    /// A directory is needed where something else exists.
    #[error("{path:?} exists and is not a directory")]
    NotADirectory {
        /// The container path.
        path: String,
    },
    /// A file would be written where a directory is.
    #[error("{path:?} is a directory")]
    IsADirectory {
        /// The container path.
        path: String,
    },
    /// The parent directory of a destination does not exist and may not be created.
    #[error("parent directory of {path:?} does not exist")]
    ParentMissing {
        /// The container path whose parent is missing.
        path: String,
    },
    /// A path to remove does not exist.
    #[error("{path:?} does not exist")]
    NotFound {
        /// The container path.
        path: String,
    },
    /// `rm` was asked to remove the root directory itself.
    #[error("refusing to remove the root directory")]
    RemoveRoot,
    /// A filesystem operation on a destination failed.
    #[error("cannot {op} {path:?}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The container path.
        path: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// An extended attribute could not be copied.
    #[error("cannot copy xattr {name} to {path:?}")]
    Xattr {
        /// The attribute.
        name: String,
        /// The container path.
        path: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// An archive could not be opened or its compression read.
    #[error("cannot read archive {archive:?}")]
    ReadArchive {
        /// The host path of the archive.
        archive: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// An archive entry was refused (escaping paths, writes through symlinks) or could
    /// not be extracted; the source names the entry.
    #[error("cannot unpack {archive:?}")]
    Unpack {
        /// The host path of the archive.
        archive: PathBuf,
        /// What went wrong, and at which entry.
        #[source]
        source: LayerError,
    },
}

//! The two spellings of "this path was deleted": the OCI layer spelling (`.wh.<name>`
//! files and a `.wh..wh..opq` marker for a directory whose lower contents are hidden)
//! and overlayfs's (a 0/0 character device, and an `opaque` xattr on the directory).
//!
//! The writer turns overlay's spelling into OCI's when it reads an upper dir; the applier
//! either carries a whiteout out (deletes, for snapshots built by unpacking a whole chain
//! into one directory) or turns it back into overlay's spelling (for per-layer overlay
//! lower dirs), as [`WhiteoutMode`] says.

use std::path::Path;

/// Prefix of a whiteout file: `.wh.foo` deletes `foo`.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Prefix of whiteout-namespace metadata (AUFS's `.wh..wh.plnk` and the like), ignored.
pub const WHITEOUT_META_PREFIX: &str = ".wh..wh.";
/// The marker that makes its directory opaque.
pub const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
/// The xattr overlayfs (as root) uses to mark a directory opaque.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// The xattr overlayfs uses for opaque directories when mounted with `userxattr`.
pub const OVERLAY_USER_OPAQUE_XATTR: &str = "user.overlay.opaque";
/// Prefix of overlayfs's private xattrs, which never belong in a layer.
pub const OVERLAY_XATTR_PREFIX: &str = "trusted.overlay.";
/// Prefix of overlayfs's private xattrs under `userxattr`.
pub const OVERLAY_USER_XATTR_PREFIX: &str = "user.overlay.";

/// What the applier does with whiteouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WhiteoutMode {
    /// Delete what they name: the target holds the merged view of all layers so far.
    #[default]
    Remove,
    /// Write them in overlayfs's form (0/0 character devices and the `trusted.overlay.opaque`
    /// xattr): the target is one layer's own directory, used as an overlay lower dir.
    /// Needs root (`CAP_MKNOD` and `CAP_SYS_ADMIN` for `trusted.*` xattrs).
    Overlay,
}

/// Whether the directory at `path` is marked opaque by overlayfs.
pub fn is_overlay_opaque(path: &Path) -> std::io::Result<bool> {
    for name in [OVERLAY_OPAQUE_XATTR, OVERLAY_USER_OPAQUE_XATTR] {
        if xattr::get(path, name)?.as_deref() == Some(b"y") {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether an xattr belongs to overlayfs's bookkeeping rather than to the file.
/// `user.overlay.*` only counts when reading an overlay upper dir.
pub(super) fn is_overlay_xattr(name: &[u8], overlay_source: bool) -> bool {
    name.starts_with(OVERLAY_XATTR_PREFIX.as_bytes())
        || (overlay_source && name.starts_with(OVERLAY_USER_XATTR_PREFIX.as_bytes()))
}

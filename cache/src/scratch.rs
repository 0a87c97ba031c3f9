//! Scratch space: the temp files and directories that become store entries by rename,
//! and how an abandoned one is told from one still being written.
//!
//! Whoever creates a scratch entry holds an exclusive `flock` on it until it is renamed
//! into place or removed. The kernel drops that lock when the process dies, so an
//! entry whose lock can be taken has no living owner: it is what a crash left behind,
//! and [`sweep`] removes it. No clock is involved, so a slow writer is never mistaken
//! for a dead one.

use std::fs::File;
use std::path::Path;

use crate::CacheError;

/// Flushes a directory's entries (a rename or a create in it) to disk.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), CacheError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(CacheError::io("sync directory", dir))
}

//! Where kiln's state lives: `--root`, else `KILN_ROOT`, else `/var/lib/kiln` for root
//! and `$XDG_DATA_HOME/kiln` (or `~/.local/share/kiln`) for everyone else.
//!
//! The directory is made absolute against the working directory here, once: overlay
//! mounts and runc bundles name paths inside it, and both need them absolute.

use std::path::{Path, PathBuf};

/// The state directory for this invocation, as an absolute path.
pub fn resolve(explicit: Option<PathBuf>) -> PathBuf {
    absolute(&chosen(explicit))
}

fn chosen(explicit: Option<PathBuf>) -> PathBuf {
    if let Some(dir) = explicit {
        return dir;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/kiln");
    }
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(data).join("kiln");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".local/share/kiln")
}

/// `dir` against the working directory, without following symlinks or requiring that
/// it exists yet (the store creates it). Left as given if the working directory is gone;
/// opening the store reports that.
fn absolute(dir: &Path) -> PathBuf {
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_root_is_taken_from_the_working_directory() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(resolve(Some("store".into())), cwd.join("store"));
        assert_eq!(resolve(Some("/var/x".into())), PathBuf::from("/var/x"));
    }
}

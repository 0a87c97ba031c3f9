//! Where kiln's state lives: `--root`, else `KILN_ROOT`, else `/var/lib/kiln` for root
//! and `$XDG_DATA_HOME/kiln` (or `~/.local/share/kiln`) for everyone else.

use std::path::PathBuf;

/// The state directory for this invocation.
pub fn resolve(explicit: Option<PathBuf>) -> PathBuf {
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

//! Scratch space: the temp files and directories that become store entries by rename,
//! and how an abandoned one is told from one still being written.
//!
//! Whoever creates a scratch entry holds an exclusive `flock` on it until it is renamed
//! into place or removed. The kernel drops that lock when the process dies, so an
//! entry whose lock can be taken has no living owner: it is what a crash left behind,
//! and [`sweep`] removes it. No clock is involved, so a slow writer is never mistaken
//! for a dead one.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use crate::CacheError;

/// Flushes a directory's entries (a rename or a create in it) to disk.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), CacheError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(CacheError::io("sync directory", dir))
}

/// Takes the ownership lock on a fresh scratch entry (file or directory).
pub(crate) fn claim(path: &Path) -> Result<File, CacheError> {
    let handle = File::open(path).map_err(CacheError::io("open", path))?;
    handle.lock().map_err(CacheError::io("lock", path))?;
    Ok(handle)
}

/// What a sweep found (and, unless it was a dry run, removed).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Abandoned entries.
    pub entries: u64,
    /// Their size on disk in bytes.
    pub bytes: u64,
}

/// Finds the abandoned entries directly under `dir` and, unless `dry_run`, removes them.
/// Entries that vanish while being looked at were finished or removed by their owner.
pub(crate) fn sweep(dir: &Path, dry_run: bool) -> Result<Swept, CacheError> {
    sweep_with(dir, dry_run, |_, _| {})
}

/// [`sweep`], telling `found` each abandoned entry and its size.
///
/// An abandoned directory that a mount elsewhere still stacks (an overlay upper, work or
/// lower dir: the root of a container a killed process left running) is not touched:
/// removing it would pull files from under that container. The runtime's own cleanup
/// takes the container and its mount away; the next sweep then removes the directory.
/// Mounts *inside* an abandoned directory (views of a step a killed process had
/// mounted there) are detached first, so removal never reaches through them.
pub(crate) fn sweep_with(
    dir: &Path,
    dry_run: bool,
    mut found: impl FnMut(&Path, u64),
) -> Result<Swept, CacheError> {
    let mut swept = Swept::default();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(swept),
        Err(e) => return Err(CacheError::io("list", dir)(e)),
    };
    let mut mounts = None;
    for entry in entries {
        let path = entry.map_err(CacheError::io("list", dir))?.path();
        let handle = match File::open(&path) {
            Ok(handle) => handle,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(CacheError::io("open", &path)(e)),
        };
        match handle.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => continue,
            Err(std::fs::TryLockError::Error(e)) => return Err(CacheError::io("lock", &path)(e)),
        }
        let table = match &mounts {
            Some(table) => table,
            None => mounts.insert(MountTable::read()?),
        };
        if table.stacks_from(&path) {
            continue;
        }
        if !dry_run {
            table.unmount_under(&path)?;
        }
        let bytes = disk_usage(&path)?;
        found(&path, bytes);
        if !dry_run {
            remove_any(&path)?;
        }
        swept.entries += 1;
        swept.bytes += bytes;
    }
    Ok(swept)
}

/// This process's mounts, from `/proc/self/mountinfo`.
#[derive(Debug, Default)]
struct MountTable {
    /// Where each mount is.
    points: Vec<PathBuf>,
    /// Each overlay mount's point and the directories it is stacked from (upper, work
    /// and lower dirs).
    overlays: Vec<(PathBuf, Vec<PathBuf>)>,
}

impl MountTable {
    const MOUNTINFO: &str = "/proc/self/mountinfo";

    fn read() -> Result<MountTable, CacheError> {
        match fs::read_to_string(Self::MOUNTINFO) {
            Ok(text) => Ok(MountTable::parse(&text)),
            // No procfs: nothing can be known to be mounted.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(MountTable::default()),
            Err(e) => Err(CacheError::io("read", Self::MOUNTINFO)(e)),
        }
    }

    /// Reads a table: the mount point is the fifth field; after the ` - ` separator
    /// come the type, the source and the superblock options, which for overlayfs name
    /// its directories.
    fn parse(text: &str) -> MountTable {
        let mut table = MountTable::default();
        for line in text.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let Some(point) = fields.get(4) else {
                continue;
            };
            let point = unescape(point);
            table.points.push(point.clone());
            let Some(sep) = fields.iter().position(|f| *f == "-") else {
                continue;
            };
            if fields.get(sep + 1) != Some(&"overlay") {
                continue;
            }
            let options = fields.get(sep + 3).copied().unwrap_or_default();
            let mut dirs = Vec::new();
            for option in options.split(',') {
                let Some((key, value)) = option.split_once('=') else {
                    continue;
                };
                match key {
                    "upperdir" | "workdir" => dirs.push(unescape(value)),
                    "lowerdir" => dirs.extend(value.split(':').map(unescape)),
                    _ => {}
                }
            }
            table.overlays.push((point, dirs));
        }
        table
    }

    /// Whether a mount outside `path` is stacked from a directory inside it.
    fn stacks_from(&self, path: &Path) -> bool {
        self.overlays.iter().any(|(point, dirs)| {
            !point.starts_with(path) && dirs.iter().any(|dir| dir.starts_with(path))
        })
    }

    /// Detaches every mount at or below `path`, deepest first.
    fn unmount_under(&self, path: &Path) -> Result<(), CacheError> {
        let mut targets: Vec<&PathBuf> =
            self.points.iter().filter(|p| p.starts_with(path)).collect();
        targets.sort_by_key(|t| std::cmp::Reverse(t.as_os_str().len()));
        for target in targets {
            match rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH) {
                Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(CacheError::io("unmount", target)(e.into())),
            }
        }
        Ok(())
    }
}

/// A path as mountinfo writes it, with the kernel's octal escapes (of space, tab,
/// newline and backslash) undone.
fn unescape(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let raw = field.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let code = raw
            .get(i + 1..i + 4)
            .filter(|_| raw[i] == b'\\')
            .and_then(|octal| u8::from_str_radix(std::str::from_utf8(octal).ok()?, 8).ok());
        match code {
            Some(code) => {
                out.push(code);
                i += 4;
            }
            None => {
                out.push(raw[i]);
                i += 1;
            }
        }
    }
    std::ffi::OsString::from_vec(out).into()
}

/// Removes a file or a whole directory tree; absence is not an error.
pub(crate) fn remove_any(path: &Path) -> Result<(), CacheError> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(CacheError::io("remove", path)(e))
        }
        _ => Ok(()),
    }
}

/// Bytes a file or tree occupies on disk (allocated blocks; hard links counted once).
pub(crate) fn disk_usage(path: &Path) -> Result<u64, CacheError> {
    use std::collections::HashSet;
    use std::os::unix::fs::MetadataExt;

    let mut seen = HashSet::new();
    let mut total = 0;
    for entry in walkdir::WalkDir::new(path) {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e)
                if e.io_error()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound) =>
            {
                continue;
            }
            Err(e) => {
                let at = e.path().unwrap_or(path).to_owned();
                return Err(CacheError::io("walk", at)(e.into()));
            }
        };
        let meta = entry
            .metadata()
            .map_err(|e| CacheError::io("stat", entry.path())(e.into()))?;
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total += meta.blocks() * 512;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_takes_unclaimed_entries_and_leaves_claimed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live");
        fs::create_dir(&live).unwrap();
        let _claim = claim(&live).unwrap();
        fs::write(dir.path().join("dead-file"), [0u8; 10_000]).unwrap();
        fs::create_dir_all(dir.path().join("dead-dir/sub")).unwrap();
        fs::write(dir.path().join("dead-dir/sub/f"), b"x").unwrap();

        let found = sweep(dir.path(), true).unwrap();
        assert_eq!(found.entries, 2);
        assert!(found.bytes >= 10_000);
        assert!(
            dir.path().join("dead-file").exists(),
            "a dry run removes nothing"
        );

        assert_eq!(sweep(dir.path(), false).unwrap(), found);
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["live"]);
        assert_eq!(
            sweep(&dir.path().join("absent"), false).unwrap(),
            Swept::default()
        );
    }

    #[test]
    fn mount_table_reads_points_and_overlay_dirs() {
        let text = "36 35 98:0 /mnt1 /mnt/a\\040b rw,noatime master:1 - ext3 /dev/root rw\n\
                    37 35 0:5 / /proc rw - proc proc rw\n\
                    40 35 0:50 / /b/rootfs rw shared:9 - overlay overlay rw,lowerdir=/s/2/fs:/s/1/fs,upperdir=/t/snap-x/upper,workdir=/t/snap-x/work\n";
        let table = MountTable::parse(text);
        assert_eq!(
            table.points,
            [
                PathBuf::from("/mnt/a b"),
                PathBuf::from("/proc"),
                PathBuf::from("/b/rootfs")
            ]
        );
        assert!(table.stacks_from(Path::new("/t/snap-x")));
        assert!(table.stacks_from(Path::new("/s/1")));
        assert!(!table.stacks_from(Path::new("/t/snap-y")));
        assert!(!table.stacks_from(Path::new("/t/snap")));
        assert!(
            !table.stacks_from(Path::new("/b")),
            "a mount inside the directory does not keep it"
        );
    }

    #[test]
    fn sweep_detaches_mounts_inside_and_spares_what_a_mount_elsewhere_stacks_on() {
        use rustix::mount::{MountFlags, mount};
        assert!(
            rustix::process::geteuid().is_root(),
            "this test mounts overlayfs and tmpfs: run it as root"
        );
        let dir = tempfile::tempdir().unwrap();
        let scratch = dir.path().join("scratch");
        // A dead process's view of a step, mounted inside its scratch entry.
        let viewed = scratch.join("viewed");
        let lower = dir.path().join("lower");
        fs::create_dir_all(lower.join("bin")).unwrap();
        fs::write(lower.join("bin/precious"), b"layer").unwrap();
        for sub in ["upper", "work", "merged"] {
            fs::create_dir_all(viewed.join(sub)).unwrap();
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            viewed.join("upper").display(),
            viewed.join("work").display()
        );
        mount(
            "overlay",
            viewed.join("merged"),
            "overlay",
            MountFlags::empty(),
            Some(std::ffi::CString::new(options.clone()).unwrap().as_c_str()),
        )
        .unwrap();
        // A dead process's step root: mounted outside, stacked on its scratch entry.
        let stood_on = scratch.join("stood-on");
        for sub in ["upper", "work"] {
            fs::create_dir_all(stood_on.join(sub)).unwrap();
        }
        let root = dir.path().join("rootfs");
        fs::create_dir(&root).unwrap();
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            stood_on.join("upper").display(),
            stood_on.join("work").display()
        );
        mount(
            "overlay",
            &root,
            "overlay",
            MountFlags::empty(),
            Some(std::ffi::CString::new(options.clone()).unwrap().as_c_str()),
        )
        .unwrap();

        let swept = sweep(&scratch, false);
        let stood_on_left = stood_on.exists();
        rustix::mount::unmount(&root, rustix::mount::UnmountFlags::DETACH).unwrap();
        let swept = swept.unwrap();
        assert_eq!(swept.entries, 1);
        assert!(!viewed.exists(), "the viewed entry is removed");
        assert_eq!(
            fs::read(lower.join("bin/precious")).unwrap(),
            b"layer",
            "removal never reached through the mount"
        );
        assert!(stood_on_left, "an entry a mount stands on is kept");
        assert_eq!(sweep(&scratch, false).unwrap().entries, 1);
        assert!(!stood_on.exists(), "and removed once the mount is gone");
    }

    #[test]
    fn disk_usage_counts_hard_links_once() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), [1u8; 64 * 1024]).unwrap();
        let one = disk_usage(dir.path()).unwrap();
        fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        assert_eq!(disk_usage(dir.path()).unwrap(), one);
        assert!(one >= 64 * 1024);
    }
}

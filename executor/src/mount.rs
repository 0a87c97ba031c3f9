//! The overlay mount seam: [`Mounter`] with the Linux implementation.
//!
//! The rootfs overlay is mounted on the host, in the bundle, before runc starts (as
//! containerd and BuildKit do), because its upper dir must outlive the container: it is
//! the step's layer. The options are fixed so that the upper dir is a plain layer diff:
//! `index=off` lets the same lower dirs serve many overlays at once, `redirect_dir=off`
//! and `metacopy=off` keep renamed directories and chowned files as full copies instead
//! of xattr references into the lowers that a layer tar cannot express. Where the
//! kernel has it (5.10 and later), `volatile` is added: overlayfs then neither flushes
//! the upper dir when the overlay is unmounted nor turns the step's own `fsync` calls
//! into disk writes. The upper dir is written back by the kernel in its own time, like
//! any file; whether it reached the disk before a crash of the machine is the
//! snapshot journal's concern (see the cache crate), not each step's.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::mount::{MountFlags, UnmountFlags};

/// The kernel copies mount data into one page; longer option strings are refused.
const MAX_OPTIONS_LEN: usize = 4095;

/// The directories of an overlay mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayMount {
    /// Read-only layers, top first; at least one.
    pub lowers: Vec<PathBuf>,
    /// Receives the changes.
    pub upper: PathBuf,
    /// Overlayfs's scratch dir, on the same filesystem as `upper`.
    pub work: PathBuf,
}

impl OverlayMount {
    /// The `mount -o` option string for this overlay.
    pub fn options(&self) -> Result<Vec<u8>, MountError> {
        if self.lowers.is_empty() {
            return Err(MountError::NoLowerDir);
        }
        let mut out = b"lowerdir=".to_vec();
        for (i, lower) in self.lowers.iter().enumerate() {
            if i > 0 {
                out.push(b':');
            }
            out.extend_from_slice(option_path(lower)?);
        }
        out.extend_from_slice(b",upperdir=");
        out.extend_from_slice(option_path(&self.upper)?);
        out.extend_from_slice(b",workdir=");
        out.extend_from_slice(option_path(&self.work)?);
        out.extend_from_slice(b",index=off,redirect_dir=off,metacopy=off");
        if out.len() > MAX_OPTIONS_LEN {
            return Err(MountError::OptionsTooLong {
                len: out.len(),
                layers: self.lowers.len(),
            });
        }
        Ok(out)
    }
}

/// Overlay option strings separate paths with `:` and options with `,`.
fn option_path(path: &Path) -> Result<&[u8], MountError> {
    let bytes = path.as_os_str().as_bytes();
    if bytes
        .iter()
        .any(|b| matches!(b, b':' | b',' | b'\\' | b'\0'))
    {
        return Err(MountError::UnusablePath {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

/// Mounts and unmounts overlays; the seam that lets the executor run without root in
/// unit tests.
pub trait Mounter: Send + Sync {
    /// Mounts `overlay` on `target`, an existing empty directory.
    fn mount_overlay(&self, overlay: &OverlayMount, target: &Path) -> Result<(), MountError>;

    /// Unmounts whatever is mounted on `target`; [`MountError::NotMounted`] when
    /// `target` is not a mount point.
    fn unmount(&self, target: &Path) -> Result<(), MountError>;
}

/// Why a mount or unmount failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// An overlay needs at least one lower dir.
    #[error("an overlay needs at least one lower dir")]
    NoLowerDir,
    /// A path holds a character that overlay options cannot carry.
    #[error("path {path:?} contains ':', ',', '\\' or NUL and cannot be an overlay dir")]
    UnusablePath {
        /// The offending path.
        path: PathBuf,
    },
    /// Too many or too long lower dirs for one mount call.
    #[error(
        "overlay options for {layers} lower dirs are {len} bytes, over the kernel's limit of 4095"
    )]
    OptionsTooLong {
        /// Length of the option string.
        len: usize,
        /// Number of lower dirs.
        layers: usize,
    },
    /// The mount system call failed.
    #[error("mounting overlay on {target:?}")]
    Mount {
        /// Where it was to be mounted.
        target: PathBuf,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// The unmount system call failed.
    #[error("unmounting {target:?}")]
    Unmount {
        /// What was to be unmounted.
        target: PathBuf,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// Nothing is mounted there.
    #[error("{target:?} is not a mount point")]
    NotMounted {
        /// The path.
        target: PathBuf,
    },
}

/// `mount(2)`/`umount2(2)` on the host.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinuxMounter;

/// Whether overlayfs refused `volatile` once (a kernel older than 5.10): then it is not
/// asked for again.
static NO_VOLATILE: AtomicBool = AtomicBool::new(false);

impl Mounter for LinuxMounter {
    fn mount_overlay(&self, overlay: &OverlayMount, target: &Path) -> Result<(), MountError> {
        let options = overlay.options()?;
        let mount = |options: Vec<u8>| {
            let options = CString::new(options).map_err(|_| MountError::UnusablePath {
                path: target.to_owned(),
            })?;
            rustix::mount::mount(
                "overlay",
                target,
                "overlay",
                MountFlags::empty(),
                options.as_c_str(),
            )
            .map_err(|errno| MountError::Mount {
                target: target.to_owned(),
                source: errno.into(),
            })
        };
        // A volatile overlay leaves this mark in its work dir, and overlayfs refuses to
        // mount that work dir again while it is there. Within one boot an unmounted
        // overlay's upper dir is whole (the page cache has it), so the mark can go; scratch
        // of an earlier boot is never mounted again, only removed.
        let mark = overlay.work.join("work").join("incompat").join("volatile");
        if mark.exists() {
            std::fs::remove_dir_all(&mark).map_err(|source| MountError::Mount {
                target: target.to_owned(),
                source,
            })?;
        }
        if !NO_VOLATILE.load(Ordering::Relaxed) {
            let mut volatile = options.clone();
            volatile.extend_from_slice(b",volatile");
            match mount(volatile) {
                Err(MountError::Mount { source, .. })
                    if source.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) =>
                {
                    NO_VOLATILE.store(true, Ordering::Relaxed);
                }
                mounted => return mounted,
            }
        }
        mount(options)
    }

    fn unmount(&self, target: &Path) -> Result<(), MountError> {
        let result = match rustix::mount::unmount(target, UnmountFlags::empty()) {
            // Something still holds the mount (a process that escaped the container's
            // teardown): detach it so no mount is left in the table; the kernel frees
            // it when the last user goes.
            Err(rustix::io::Errno::BUSY) => rustix::mount::unmount(target, UnmountFlags::DETACH),
            other => other,
        };
        match result {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::INVAL) => Err(MountError::NotMounted {
                target: target.to_owned(),
            }),
            Err(errno) => Err(MountError::Unmount {
                target: target.to_owned(),
                source: errno.into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlay(lowers: &[&str]) -> OverlayMount {
        OverlayMount {
            lowers: lowers.iter().map(PathBuf::from).collect(),
            upper: "/s/up".into(),
            work: "/s/work".into(),
        }
    }

    #[test]
    fn options_list_lowers_top_first() {
        let opts = overlay(&["/s/top", "/s/base"]).options().unwrap();
        assert_eq!(
            String::from_utf8(opts).unwrap(),
            "lowerdir=/s/top:/s/base,upperdir=/s/up,workdir=/s/work,\
             index=off,redirect_dir=off,metacopy=off"
        );
    }

    #[test]
    fn options_refuse_what_the_kernel_would_misparse() {
        assert!(matches!(
            overlay(&[]).options(),
            Err(MountError::NoLowerDir)
        ));
        assert!(matches!(
            overlay(&["/s/a:b"]).options(),
            Err(MountError::UnusablePath { path }) if path == Path::new("/s/a:b")
        ));
        let long = format!("/{}", "x".repeat(200));
        let many: Vec<&str> = std::iter::repeat_n(long.as_str(), 30).collect();
        assert!(matches!(
            overlay(&many).options(),
            Err(MountError::OptionsTooLong { layers: 30, .. })
        ));
    }
}

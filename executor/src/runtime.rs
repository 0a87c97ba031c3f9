//! The OCI runtime seam: [`Runtime`] with the runc implementation.
//!
//! A container is started with `runc run` in the foreground rather than `create` +
//! `start`: the runtime process then stays our child and exits with the container's
//! status, so waiting needs no polling of runc's state and output flows straight from
//! the container to our pipes. Killing and deleting go through separate runc commands,
//! keyed by the container id, because they must also work on containers left behind by
//! a crashed process.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};

/// Starts, kills, deletes and lists containers.
pub trait Runtime: Send + Sync {
    /// Runs container `id` from the bundle at `bundle` in the foreground. The returned
    /// child exits with the container's status and has stdout and stderr piped.
    fn run(&self, id: &str, bundle: &Path) -> Result<Child, RuntimeError>;

    /// Sends SIGKILL to the container's processes.
    fn kill(&self, id: &str) -> Result<(), RuntimeError>;

    /// Deletes the container, killing it first if it still runs; succeeds if it is
    /// already gone.
    fn delete(&self, id: &str) -> Result<(), RuntimeError>;

    /// The ids of the containers this runtime knows.
    fn list(&self) -> Result<Vec<String>, RuntimeError>;
}

/// Why a runtime command failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime binary could not be started.
    #[error("cannot start OCI runtime {binary:?}")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// A runtime command exited unsuccessfully.
    #[error("{binary:?} {action} {id} failed ({status}): {stderr}")]
    Command {
        /// The binary.
        binary: PathBuf,
        /// The subcommand (`kill`, `delete`, `list`).
        action: &'static str,
        /// The container id, empty for `list`.
        id: String,
        /// How it exited.
        status: ExitStatus,
        /// What it printed on stderr, trimmed.
        stderr: String,
    },
}

/// runc (or a CLI-compatible runtime) with a kiln-owned state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runc {
    binary: PathBuf,
    root: PathBuf,
}

impl Runc {
    /// Uses `binary` (looked up in `PATH` when it has no slash) with `--root root`.
    pub fn new(binary: impl Into<PathBuf>, root: impl Into<PathBuf>) -> Runc {
        Runc {
            binary: binary.into(),
            root: root.into(),
        }
    }

    /// The runtime binary.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Whether runc has state for container `id` (anything that is not certainly
    /// absent counts).
    fn knows(&self, id: &str) -> bool {
        !matches!(
            std::fs::symlink_metadata(self.root.join(id)),
            Err(e) if e.kind() == io::ErrorKind::NotFound
        )
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root").arg(&self.root);
        cmd
    }

    fn output(
        &self,
        action: &'static str,
        id: &str,
        args: &[&OsStr],
    ) -> Result<Output, RuntimeError> {
        let output = self
            .command()
            .arg(action)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| RuntimeError::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        if output.status.success() {
            Ok(output)
        } else {
            Err(RuntimeError::Command {
                binary: self.binary.clone(),
                action,
                id: id.to_owned(),
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }
}

impl Runtime for Runc {
    fn run(&self, id: &str, bundle: &Path) -> Result<Child, RuntimeError> {
        use std::os::unix::process::CommandExt;
        let mut command = self.command();
        let kiln = rustix::process::getpid();
        // SAFETY: the hook only makes two system calls, which is all that is allowed
        // between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // If kiln dies, the runtime dies with it rather than go on setting up a
                // container nobody will clean up after: the runtime's own init follows
                // it, and a container already started is found by `runc list` and
                // removed by the next build's cleanup. (The signal is tied to the thread
                // that spawns the runtime, which supervises it to its end.)
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))?;
                if rustix::process::getppid() != Some(kiln) {
                    return Err(io::Error::other("kiln exited before the runtime started"));
                }
                Ok(())
            });
        }
        command
            .arg("run")
            .arg("--bundle")
            .arg(bundle)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a terminal's Ctrl-C reaches kiln, which cancels
            // and cleans up in order, rather than runc directly.
            .process_group(0)
            .spawn()
            .map_err(|source| RuntimeError::Spawn {
                binary: self.binary.clone(),
                source,
            })
    }

    fn kill(&self, id: &str) -> Result<(), RuntimeError> {
        self.output("kill", id, &[OsStr::new(id), OsStr::new("KILL")])
            .map(drop)
    }

    fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        // runc keeps a container's state in `<root>/<id>/`, and a container run in the
        // foreground removes it itself when it ends; with no state there is nothing to
        // delete, and no runc to start for it.
        if !self.knows(id) {
            return Ok(());
        }
        self.output("delete", id, &[OsStr::new("--force"), OsStr::new(id)])
            .map(drop)
    }

    fn list(&self) -> Result<Vec<String>, RuntimeError> {
        // An empty (or absent) state directory lists nothing; asking runc is for the rest.
        let empty = match std::fs::read_dir(&self.root) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) => e.kind() == io::ErrorKind::NotFound,
        };
        if empty {
            return Ok(Vec::new());
        }
        let output = self.output("list", "", &[OsStr::new("--quiet")])?;
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runtime whose binary does not exist: any command it starts fails.
    fn unstartable(root: &Path) -> Runc {
        Runc::new("/nonexistent/runc", root)
    }

    #[test]
    fn nothing_to_list_or_delete_starts_no_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("state");
        let runc = unstartable(&root);
        assert_eq!(runc.list().unwrap(), Vec::<String>::new());
        std::fs::create_dir(&root).unwrap();
        assert_eq!(runc.list().unwrap(), Vec::<String>::new());
        runc.delete("kiln-1-0-gone").unwrap();

        // Once runc has state, it is asked.
        std::fs::create_dir(root.join("kiln-1-1-left")).unwrap();
        assert!(matches!(runc.list(), Err(RuntimeError::Spawn { .. })));
        assert!(matches!(
            runc.delete("kiln-1-1-left"),
            Err(RuntimeError::Spawn { .. })
        ));
    }
}

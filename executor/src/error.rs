//! The executor's error type: the step's own failure (exit code and output tail),
//! cancellation and timeout, and the infrastructure failures around it, each naming the
//! path or command involved.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::mount::MountError;
use crate::request::RequestError;
use crate::runtime::RuntimeError;

/// Why a step did not produce an outcome.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The request cannot be run as given.
    #[error("invalid exec request")]
    Request(#[from] RequestError),
    /// The command ran and exited with a code not in `ok_exit_codes`.
    #[error("process {command:?} did not complete successfully: exit code {exit_code}")]
    Failed {
        /// The command line, arguments joined by spaces.
        command: String,
        /// Its exit code (128 + signal number if a signal killed it).
        exit_code: i32,
        /// The last lines of its output, stdout and stderr interleaved.
        tail: String,
    },
    /// The cancel token fired; the container was killed and cleaned up.
    #[error("cancelled")]
    Cancelled,
    /// The timeout passed; the container was killed and cleaned up.
    #[error("timed out after {after:?}")]
    TimedOut {
        /// The timeout that was set.
        after: Duration,
    },
    /// The host's resolver configuration could not be read.
    #[error("reading the host's resolver configuration {path:?}")]
    HostResolvConf {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The bundle directory or a file in it could not be written or removed.
    #[error("preparing or removing the container bundle at {path:?}")]
    Bundle {
        /// The bundle (or state) directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The rootfs could not be prepared or tidied (working directory, mount stubs).
    #[error("preparing or tidying the rootfs at {path:?}")]
    Rootfs {
        /// The rootfs directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The runtime spec could not be built or written.
    #[error("writing the runtime spec to {path:?}")]
    Spec {
        /// Where `config.json` was to go.
        path: PathBuf,
        /// What oci-spec said.
        #[source]
        source: oci_spec::OciSpecError,
    },
    /// Mounting or unmounting the rootfs failed.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// A runtime command failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Waiting on the container or reading its output failed.
    #[error("supervising container {id}")]
    Supervise {
        /// The container id.
        id: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}

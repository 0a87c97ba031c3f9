//! Runs build steps: commands in throw-away containers through an OCI runtime over
//! overlayfs snapshots. It depends on neither the solver nor the cache; callers hand it
//! prepared directories (lower layers, a fresh upper and work dir, host sides of extra
//! mounts) and get back the upper directory that becomes the step's layer.
//!
//! # Shape
//!
//! - [`Executor::run`] is a **blocking** call. Each step spends its life waiting on a
//!   child process, so the solver runs it inside `tokio::task::spawn_blocking`; a
//!   [`CancelToken`] in the request (cancelled from the async side, e.g. on SIGINT)
//!   and an optional timeout stop it early. Output is streamed to an [`ExecOutput`]
//!   callback as it arrives, so a progress display can show the tail of a running step.
//! - A non-zero exit is an error, [`ExecError::Failed`], carrying the exit code and the
//!   last lines of output; callers that accept other codes list them in
//!   [`ExecRequest::ok_exit_codes`] and get an [`ExecOutcome`] instead.
//! - Everything that touches the OS goes through two seams, [`Mounter`] (overlay
//!   mount/unmount) and [`Runtime`] (runc run/kill/delete/list), so that the spec
//!   generation and the sequencing and cleanup logic are tested without root.
//!
//! # Networking
//!
//! kiln has no CNI or bridge networking. [`NetworkMode::Sandbox`], the default for
//! `RUN`, therefore does what BuildKit does when no CNI is configured: the container
//! shares the host's network namespace but has its own UTS namespace, its own hostname,
//! and generated `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` (the host's
//! nameservers). [`NetworkMode::Host`] is the same container today; it is a separate
//! mode so that a real sandbox network can replace `Sandbox` later without changing what
//! `--network=host` means. [`NetworkMode::None`] gets a fresh network namespace with only
//! the loopback interface up and a `resolv.conf` without nameservers.
//!
//! # Confinement, and where it differs from Docker
//!
//! A step gets Docker's capability set, masked and read-only `/proc` paths, read-only
//! `/sys` and cgroup tree, runc's default device nodes and `RLIMIT_NOFILE` 1048576. A
//! step never gets more than kiln itself holds: capabilities outside kiln's permitted
//! set are dropped and the open-files limit is lowered to kiln's own hard limit when it
//! lacks `CAP_SYS_RESOURCE` (as when kiln itself runs in a container); otherwise runc
//! would refuse to start. Not applied (yet): Docker's seccomp profile and AppArmor
//! profile. Insecure steps get every capability kiln holds and no masking, but not the
//! host's device nodes.
//!
//! The rootfs overlay is one `mount(2)` call, whose options must fit in a page: around
//! twenty lower dirs with long paths is the limit, beyond which
//! [`MountError::OptionsTooLong`] says so.
//!
//! # State on disk
//!
//! A [`RuncExecutor`] owns one state directory: `runc/` is runc's `--root`, and
//! `bundles/<id>/` holds one running step's bundle (`config.json`, the `rootfs` mount
//! point, the generated `/etc` files) and a `lock` file that the running process holds
//! locked. [`RuncExecutor::cleanup_stale`] removes containers, mounts and bundles whose
//! lock is free, i.e. those left by a process that crashed; steps of another live build
//! sharing the directory are left alone.
#![deny(missing_docs)]

mod bundle;
mod cancel;
mod error;
mod etc_files;
pub mod file;
mod mount;
mod request;
mod rootpath;
mod runc_executor;
mod runtime;
mod spec;
mod stubs;
mod supervise;

pub use cancel::CancelToken;
pub use error::ExecError;
pub use mount::{LinuxMounter, MountError, Mounter, OverlayMount};
pub use request::{
    ExecOutcome, ExecOutput, ExecRequest, Mount, MountKind, NetworkMode, OutputStream,
    RequestError, Rootfs, SecurityMode, User,
};
pub use runc_executor::RuncExecutor;
pub use runtime::{Runc, Runtime, RuntimeError};
pub use spec::{DEFAULT_CAPABILITIES, DEFAULT_HOSTNAME, DEFAULT_PATH};

/// Runs one command in a container and returns the directory holding its changes.
///
/// Implementations block until the command has finished and everything it used is
/// cleaned up; async callers run them in `tokio::task::spawn_blocking`.
pub trait Executor {
    /// Runs `req` to completion, cancellation or timeout.
    fn run(&self, req: ExecRequest) -> Result<ExecOutcome, ExecError>;
}

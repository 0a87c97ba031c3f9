//! What a caller asks for ([`ExecRequest`]) and what it gets back ([`ExecOutcome`]).
//!
//! The request is an options struct with public fields and `with_*` setters: the solver
//! fills it from an exec op whose user, environment and mounts are already resolved, so
//! nothing here looks names up in the image (`USER app` arrives as numbers).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cancel::CancelToken;
use crate::spec::DEFAULT_HOSTNAME;

/// One command to run in a throw-away container.
pub struct ExecRequest {
    /// The command and its arguments (`["/bin/sh", "-c", "make"]`); not empty.
    pub args: Vec<String>,
    /// Environment variables, in order. `PATH` is added with [`crate::DEFAULT_PATH`]
    /// when absent, as Docker does.
    pub env: Vec<(String, String)>,
    /// The working directory inside the container, absolute; created (owned by root,
    /// mode 0755) when missing, and then part of the step's changes.
    pub cwd: PathBuf,
    /// Who the command runs as.
    pub user: User,
    /// The container's hostname, also written to `/etc/hostname` and `/etc/hosts`.
    pub hostname: String,
    /// Which network the command sees.
    pub network: NetworkMode,
    /// Docker's default confinement, or none (`RUN --security=insecure`).
    pub security: SecurityMode,
    /// Extra mounts, applied in order after the standard ones.
    pub mounts: Vec<Mount>,
    /// The filesystem the command runs on.
    pub rootfs: Rootfs,
    /// Receives output as it arrives; `None` keeps only the tail for error messages.
    pub output: Option<Box<dyn ExecOutput>>,
    /// Exit codes that count as success; `[0]` unless set.
    pub ok_exit_codes: Vec<i32>,
    /// Kill the command after this long.
    pub timeout: Option<Duration>,
    /// Kill the command when this is cancelled.
    pub cancel: CancelToken,
}

impl ExecRequest {
    /// A request to run `args` on `rootfs` as root in `/`, with the default hostname,
    /// the sandbox network and Docker's default confinement.
    pub fn new(args: Vec<String>, rootfs: Rootfs) -> ExecRequest {
        ExecRequest {
            args,
            env: Vec::new(),
            cwd: PathBuf::from("/"),
            user: User::default(),
            hostname: DEFAULT_HOSTNAME.to_owned(),
            network: NetworkMode::default(),
            security: SecurityMode::default(),
            mounts: Vec::new(),
            rootfs,
            output: None,
            ok_exit_codes: vec![0],
            timeout: None,
            cancel: CancelToken::new(),
        }
    }

    /// Sets the environment.
    pub fn with_env(mut self, env: Vec<(String, String)>) -> Self {
        self.env = env;
        self
    }

    /// Sets the working directory.
    pub fn with_cwd(mut self, cwd: impl Into<PathBuf>) -> Self {
        self.cwd = cwd.into();
        self
    }

    /// Sets the user.
    pub fn with_user(mut self, user: User) -> Self {
        self.user = user;
        self
    }

    /// Sets the hostname.
    pub fn with_hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = hostname.into();
        self
    }

    /// Sets the network mode.
    pub fn with_network(mut self, network: NetworkMode) -> Self {
        self.network = network;
        self
    }

    /// Sets the security mode.
    pub fn with_security(mut self, security: SecurityMode) -> Self {
        self.security = security;
        self
    }

    /// Adds an extra mount.
    pub fn with_mount(mut self, mount: Mount) -> Self {
        self.mounts.push(mount);
        self
    }

    /// Sets where output goes.
    pub fn with_output(mut self, output: impl ExecOutput + 'static) -> Self {
        self.output = Some(Box::new(output));
        self
    }

    /// Sets the exit codes that count as success.
    pub fn with_ok_exit_codes(mut self, codes: Vec<i32>) -> Self {
        self.ok_exit_codes = codes;
        self
    }

    /// Sets a timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the cancel token.
    pub fn with_cancel(mut self, cancel: CancelToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// Checks what the runtime would otherwise reject late or misread.
    pub fn validate(&self) -> Result<(), RequestError> {
        if self.args.is_empty() {
            return Err(RequestError::EmptyArgs);
        }
        require_absolute("working directory", &self.cwd)?;
        for (name, _) in &self.env {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return Err(RequestError::BadEnvName { name: name.clone() });
            }
        }
        if self.hostname.is_empty()
            || self.hostname.len() > 64
            || self
                .hostname
                .chars()
                .any(|c| c.is_whitespace() || c == '\0')
        {
            return Err(RequestError::BadHostname {
                hostname: self.hostname.clone(),
            });
        }
        for mount in &self.mounts {
            require_absolute("mount destination", &mount.destination)?;
            if mount.destination == Path::new("/") {
                return Err(RequestError::MountOverRoot);
            }
            if let MountKind::Bind { source, .. } = &mount.kind {
                require_absolute("bind mount source", source)?;
            }
        }
        match &self.rootfs {
            Rootfs::Overlay {
                lowers,
                upper,
                work,
            } => {
                for lower in lowers {
                    require_absolute("overlay lower dir", lower)?;
                }
                require_absolute("overlay upper dir", upper)?;
                require_absolute("overlay work dir", work)?;
            }
            Rootfs::Dir(dir) => require_absolute("rootfs dir", dir)?,
        }
        Ok(())
    }
}

fn require_absolute(what: &'static str, path: &Path) -> Result<(), RequestError> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(RequestError::RelativePath {
            what,
            path: path.to_owned(),
        })
    }
}

impl fmt::Debug for ExecRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecRequest")
            .field("args", &self.args)
            .field("env", &self.env)
            .field("cwd", &self.cwd)
            .field("user", &self.user)
            .field("hostname", &self.hostname)
            .field("network", &self.network)
            .field("security", &self.security)
            .field("mounts", &self.mounts)
            .field("rootfs", &self.rootfs)
            .field("output", &self.output.as_ref().map(|_| "<sink>"))
            .field("ok_exit_codes", &self.ok_exit_codes)
            .field("timeout", &self.timeout)
            .field("cancel", &self.cancel)
            .finish()
    }
}

/// Why a request cannot be run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    /// No command was given.
    #[error("no command to run")]
    EmptyArgs,
    /// A path that must be absolute is not.
    #[error("{what} {path:?} is not an absolute path")]
    RelativePath {
        /// Which field.
        what: &'static str,
        /// The offending path.
        path: PathBuf,
    },
    /// An environment variable name is empty or holds `=` or NUL.
    #[error("environment variable name {name:?} is not valid")]
    BadEnvName {
        /// The offending name.
        name: String,
    },
    /// The hostname is empty, too long, or holds whitespace or NUL.
    #[error("hostname {hostname:?} is not valid")]
    BadHostname {
        /// The offending hostname.
        hostname: String,
    },
    /// A mount targets `/`, which is the rootfs.
    #[error("a mount cannot replace the root directory")]
    MountOverRoot,
}

/// The numeric identity the command runs as, already resolved from `USER`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary group ids.
    pub additional_gids: Vec<u32>,
}

/// Which network a command sees; see the crate docs for what each one is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NetworkMode {
    /// The default for `RUN`: the host's network with a private hostname.
    #[default]
    Sandbox,
    /// A fresh network namespace with only loopback.
    None,
    /// The host's network namespace.
    Host,
}

/// How tightly the command is confined.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SecurityMode {
    /// Docker's defaults: its capability set, masked and read-only kernel paths,
    /// read-only `/sys`, only the default device nodes.
    #[default]
    Sandbox,
    /// `RUN --security=insecure`: every capability, nothing masked, `/sys` and the
    /// cgroup tree writable, every device allowed in the device cgroup.
    Insecure,
}

/// The filesystem a command runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rootfs {
    /// An overlay of `lowers` (top first) with a fresh `upper` and `work` dir on the
    /// same filesystem; after the run `upper` holds the changes, whiteouts included.
    Overlay {
        /// Read-only layers, top first; may be empty (`FROM scratch`).
        lowers: Vec<PathBuf>,
        /// An empty directory that receives the changes.
        upper: PathBuf,
        /// An empty directory on the same filesystem as `upper`, for overlayfs.
        work: PathBuf,
    },
    /// A plain directory, changed in place (a copying snapshotter's working copy).
    Dir(PathBuf),
}

impl Rootfs {
    /// The directory holding the step's changes once it has run.
    pub fn changes_dir(&self) -> &Path {
        match self {
            Rootfs::Overlay { upper, .. } => upper,
            Rootfs::Dir(dir) => dir,
        }
    }
}

/// An extra mount for the command; the caller prepares host paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Absolute path inside the container.
    pub destination: PathBuf,
    /// What is mounted there.
    pub kind: MountKind,
}

/// What an extra [`Mount`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    /// A bind mount of a host path: `RUN --mount=type=bind` (usually read-only) and
    /// `--mount=type=cache` (a writable host directory the cache prepared).
    Bind {
        /// The host path.
        source: PathBuf,
        /// Mount read-only.
        readonly: bool,
    },
    /// An empty tmpfs, `RUN --mount=type=tmpfs`.
    Tmpfs {
        /// Size limit in bytes; the kernel's default (half of RAM) when `None`.
        size: Option<u64>,
    },
}

/// Which stream a chunk of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Receives a command's output as it arrives, in chunks that need not end at a line.
///
/// Any `FnMut(OutputStream, &[u8]) + Send` closure is one.
pub trait ExecOutput: Send {
    /// Called with each chunk read from the command.
    fn write(&mut self, stream: OutputStream, chunk: &[u8]);
}

impl<F: FnMut(OutputStream, &[u8]) + Send> ExecOutput for F {
    fn write(&mut self, stream: OutputStream, chunk: &[u8]) {
        self(stream, chunk)
    }
}

/// A command that ran to an accepted exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// The exit code, one of [`ExecRequest::ok_exit_codes`].
    pub exit_code: i32,
    /// The directory holding the changes: the overlay upper dir, or the rootfs dir.
    pub upper: PathBuf,
    /// Wall time from the start of the request to the end of cleanup.
    pub duration: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ExecRequest {
        ExecRequest::new(vec!["true".into()], Rootfs::Dir("/r".into()))
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(request().validate(), Ok(()));
    }

    #[test]
    fn rejects_what_runc_would_misread() {
        let empty = ExecRequest::new(vec![], Rootfs::Dir("/r".into()));
        assert_eq!(empty.validate(), Err(RequestError::EmptyArgs));
        assert!(matches!(
            request().with_cwd("work").validate(),
            Err(RequestError::RelativePath {
                what: "working directory",
                ..
            })
        ));
        assert!(matches!(
            request()
                .with_env(vec![("A=B".into(), "c".into())])
                .validate(),
            Err(RequestError::BadEnvName { .. })
        ));
        assert!(matches!(
            request().with_hostname("a b").validate(),
            Err(RequestError::BadHostname { .. })
        ));
        let over_root = request().with_mount(Mount {
            destination: "/".into(),
            kind: MountKind::Tmpfs { size: None },
        });
        assert_eq!(over_root.validate(), Err(RequestError::MountOverRoot));
        let relative_lower = ExecRequest::new(
            vec!["true".into()],
            Rootfs::Overlay {
                lowers: vec!["l".into()],
                upper: "/u".into(),
                work: "/w".into(),
            },
        );
        assert!(matches!(
            relative_lower.validate(),
            Err(RequestError::RelativePath {
                what: "overlay lower dir",
                ..
            })
        ));
    }

    #[test]
    fn error_messages_name_the_place() {
        let err = request().with_cwd("src").validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "working directory \"src\" is not an absolute path"
        );
    }
}

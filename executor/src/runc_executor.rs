//! [`RuncExecutor`]: the sequence that turns a request into a finished container run.
//!
//! bundle + lock → generated `/etc` files → rootfs overlay mount → working directory →
//! `config.json` and a record of the mount points runc will create → `runc run` under
//! supervision → stubs removed → unmount → copy-ups pruned → bundle removed.
//!
//! Each acquired resource (bundle, mount, container) is held by a guard whose `Drop`
//! releases it, so an error, a cancellation or a panic anywhere in the sequence leaves
//! no container, mount or directory behind; on the normal path each guard is released
//! explicitly so that a failure to clean up is reported rather than swallowed.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use crate::Executor;
use crate::bundle::{self, Bundle};
use crate::error::ExecError;
use crate::etc_files;
use crate::mount::{LinuxMounter, MountError, Mounter, OverlayMount};
use crate::request::{ExecOutcome, ExecRequest, Rootfs};
use crate::rootpath;
use crate::runtime::{Runc, Runtime, RuntimeError};
use crate::spec::{self, SpecInputs};
use crate::stubs::MountStubs;
use crate::supervise::{Ending, Sinks, TAIL_LINES, Tail, supervise, wait_exit};

/// Mount points that stay in a step's layer when the rootfs lacked them: the kernel
/// filesystems every container gets (mounts below them land inside those filesystems,
/// not in the layer). `docker build` leaves these empty directories in
/// the layer of a step that needed them, and kiln's layers must be the same.
const KEPT_MOUNT_POINTS: [&str; 3] = ["/proc", "/dev", "/sys"];

/// The state directory's sub-folder that is runc's `--root`.
const RUNC_ROOT: &str = "runc";

/// How long a container killed through the runtime gets to go before its runtime
/// process is killed directly.
const KILL_GRACE: Duration = Duration::from_secs(1);

/// Runs steps with an OCI runtime (runc by default) over overlayfs.
#[derive(Debug)]
pub struct RuncExecutor<M = LinuxMounter, R = Runc> {
    state_dir: PathBuf,
    host_resolv_conf: PathBuf,
    nofile: u64,
    grantable_caps: u64,
    mounter: M,
    runtime: R,
}

impl RuncExecutor {
    /// An executor keeping its state in `state_dir`, running `runc` from `PATH`.
    pub fn new(state_dir: impl Into<PathBuf>) -> RuncExecutor {
        let state_dir = state_dir.into();
        let runtime = Runc::new("runc", state_dir.join(RUNC_ROOT));
        RuncExecutor::with_parts(state_dir, LinuxMounter, runtime)
    }

    /// Uses another runc-compatible runtime binary (`--runtime`).
    pub fn with_runtime_binary(mut self, binary: impl Into<PathBuf>) -> Self {
        self.runtime = Runc::new(binary, self.state_dir.join(RUNC_ROOT));
        self
    }

    /// The directory runc keeps container state in (its `--root`) for `state_dir`.
    pub fn runc_root(state_dir: &Path) -> PathBuf {
        state_dir.join(RUNC_ROOT)
    }
}

impl<M: Mounter, R: Runtime> RuncExecutor<M, R> {
    /// An executor with explicit OS seams; tests pass recording ones.
    pub fn with_parts(state_dir: impl Into<PathBuf>, mounter: M, runtime: R) -> Self {
        RuncExecutor {
            state_dir: state_dir.into(),
            host_resolv_conf: PathBuf::from("/etc/resolv.conf"),
            nofile: spec::nofile_limit(),
            grantable_caps: spec::grantable_capabilities(),
            mounter,
            runtime,
        }
    }

    /// Reads the host's resolver configuration from `path` instead of
    /// `/etc/resolv.conf`.
    pub fn with_host_resolv_conf(mut self, path: impl Into<PathBuf>) -> Self {
        self.host_resolv_conf = path.into();
        self
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Removes containers, rootfs mounts and bundles left by processes that died while
    /// running a step in this state directory; returns how many steps were cleaned.
    /// Steps of live processes (another build on the same root) are left alone.
    pub fn cleanup_stale(&self) -> Result<usize, ExecError> {
        let mut ids = self.runtime.list()?;
        let state_err = |source| ExecError::Bundle {
            path: self.state_dir.clone(),
            source,
        };
        for id in bundle::known_ids(&self.state_dir).map_err(state_err)? {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        let mut cleaned = 0;
        for id in ids {
            let Some(step) = bundle::stale(&self.state_dir, &id).map_err(state_err)? else {
                continue;
            };
            self.runtime.delete(step.id())?;
            let rootfs = step.dir(&self.state_dir).join("rootfs");
            if rootfs.exists() {
                // A crashed run may have stacked mounts; take them all off.
                loop {
                    match self.mounter.unmount(&rootfs) {
                        Ok(()) => continue,
                        Err(MountError::NotMounted { .. }) => break,
                        Err(err) => return Err(err.into()),
                    }
                }
            }
            let dir = step.dir(&self.state_dir);
            step.remove(&self.state_dir)
                .map_err(|source| ExecError::Bundle { path: dir, source })?;
            cleaned += 1;
        }
        Ok(cleaned)
    }

    fn host_resolv_conf(&self) -> Result<String, ExecError> {
        match fs::read_to_string(&self.host_resolv_conf) {
            Ok(text) => Ok(text),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(String::new()),
            Err(source) => Err(ExecError::HostResolvConf {
                path: self.host_resolv_conf.clone(),
                source,
            }),
        }
    }

    /// Starts the container and supervises it to its end; the container is gone when
    /// this returns.
    fn run_container(
        &self,
        bundle: &Bundle,
        req: &mut ExecRequest,
        tail: &mut Tail,
    ) -> Result<Ending, ExecError> {
        let deadline = req.timeout.map(|t| Instant::now() + t);
        let child = self.runtime.run(bundle.id(), bundle.dir())?;
        let mut container = ContainerGuard {
            runtime: &self.runtime,
            id: bundle.id(),
            child,
            finished: false,
        };
        let mut sinks = Sinks {
            output: req.output.as_deref_mut().map(|o| o as _),
            tail,
        };
        let ending = supervise(&mut container.child, &mut sinks, deadline, &req.cancel).map_err(
            |source| ExecError::Supervise {
                id: bundle.id().to_owned(),
                source,
            },
        )?;
        match ending {
            Ending::Exited(_) => container.delete()?,
            Ending::Cancelled | Ending::TimedOut => container.stop()?,
        }
        Ok(ending)
    }
}

impl<M: Mounter, R: Runtime> Executor for RuncExecutor<M, R> {
    fn run(&self, mut req: ExecRequest) -> Result<ExecOutcome, ExecError> {
        let started = Instant::now();
        req.validate()?;
        let host_resolv = self.host_resolv_conf()?;
        let bundle = Bundle::create(&self.state_dir).map_err(|source| ExecError::Bundle {
            path: self.state_dir.clone(),
            source,
        })?;
        let bundle_err = |source| ExecError::Bundle {
            path: bundle.dir().to_owned(),
            source,
        };
        let write =
            |name: &str, contents: String| bundle.write(name, &contents).map_err(bundle_err);
        let mut inputs = SpecInputs {
            root: PathBuf::new(),
            hosts: write("hosts", etc_files::hosts(&req.hostname))?,
            hostname: write("hostname", etc_files::hostname(&req.hostname))?,
            resolv_conf: write(
                "resolv.conf",
                etc_files::resolv_conf(&host_resolv, req.network),
            )?,
            nofile: self.nofile,
            grantable_caps: self.grantable_caps,
        };

        let mount = match &req.rootfs {
            Rootfs::Overlay {
                lowers,
                upper,
                work,
            } => {
                let lowers = if lowers.is_empty() {
                    // Overlayfs needs a lower dir; `FROM scratch` has none.
                    vec![bundle.create_dir("empty").map_err(bundle_err)?]
                } else {
                    lowers.clone()
                };
                let overlay = OverlayMount {
                    lowers,
                    upper: upper.clone(),
                    work: work.clone(),
                };
                let target = bundle.create_dir("rootfs").map_err(bundle_err)?;
                Some(MountGuard::mount(&self.mounter, overlay, target)?)
            }
            Rootfs::Dir(_) => None,
        };
        inputs.root = match (&mount, &req.rootfs) {
            (Some(mount), _) => mount.target.clone(),
            (None, rootfs) => rootfs.changes_dir().to_owned(),
        };
        let rootfs_err = |source| ExecError::Rootfs {
            path: inputs.root.clone(),
            source,
        };
        rootpath::create_dir_all(&inputs.root, &req.cwd).map_err(rootfs_err)?;

        let config = bundle.path("config.json");
        let spec_err = |source| ExecError::Spec {
            path: config.clone(),
            source,
        };
        let spec = spec::runtime_spec(&req, &inputs).map_err(spec_err)?;
        let destinations = spec
            .mounts()
            .iter()
            .flatten()
            .map(|m| m.destination().as_path())
            .filter(|d| !KEPT_MOUNT_POINTS.iter().any(|kept| d.starts_with(kept)));
        let stubs = MountStubs::record(
            &inputs.root,
            destinations,
            mount
                .as_ref()
                .map(|m| (m.overlay.upper.as_path(), m.overlay.lowers.as_slice())),
        )
        .map_err(rootfs_err)?;
        spec.save(&config).map_err(spec_err)?;

        let mut tail = Tail::default();
        let ending = self.run_container(&bundle, &mut req, &mut tail)?;

        if let Ending::Exited(_) = ending {
            stubs.remove().map_err(rootfs_err)?;
        }
        if let Some(mount) = mount {
            mount.unmount()?;
            if let Ending::Exited(_) = ending {
                stubs.prune_copy_ups().map_err(|source| ExecError::Rootfs {
                    path: req.rootfs.changes_dir().to_owned(),
                    source,
                })?;
            }
        }
        let bundle_dir = bundle.dir().to_owned();
        bundle.remove().map_err(|source| ExecError::Bundle {
            path: bundle_dir,
            source,
        })?;

        match ending {
            Ending::Exited(code) if req.ok_exit_codes.contains(&code) => Ok(ExecOutcome {
                exit_code: code,
                upper: req.rootfs.changes_dir().to_owned(),
                duration: started.elapsed(),
            }),
            Ending::Exited(code) => Err(ExecError::Failed {
                command: req.args.join(" "),
                exit_code: code,
                tail: tail.lines(TAIL_LINES),
            }),
            Ending::Cancelled => Err(ExecError::Cancelled),
            Ending::TimedOut => Err(ExecError::TimedOut {
                after: req.timeout.unwrap_or_default(),
            }),
        }
    }
}

/// The mounted rootfs overlay; unmounted on drop unless unmounted explicitly.
struct MountGuard<'a, M: Mounter> {
    mounter: &'a M,
    overlay: OverlayMount,
    target: PathBuf,
    mounted: bool,
}

impl<'a, M: Mounter> MountGuard<'a, M> {
    fn mount(mounter: &'a M, overlay: OverlayMount, target: PathBuf) -> Result<Self, MountError> {
        mounter.mount_overlay(&overlay, &target)?;
        Ok(MountGuard {
            mounter,
            overlay,
            target,
            mounted: true,
        })
    }

    fn unmount(mut self) -> Result<(), MountError> {
        self.mounted = false;
        self.mounter.unmount(&self.target)
    }
}

impl<M: Mounter> Drop for MountGuard<'_, M> {
    fn drop(&mut self) {
        if self.mounted {
            let _ = self.mounter.unmount(&self.target);
        }
    }
}

/// A started container and its runtime process; killed and deleted on drop unless
/// finished explicitly.
struct ContainerGuard<'a, R: Runtime> {
    runtime: &'a R,
    id: &'a str,
    child: Child,
    finished: bool,
}

impl<R: Runtime> ContainerGuard<'_, R> {
    /// After the container exited by itself: make sure the runtime forgot it.
    fn delete(mut self) -> Result<(), RuntimeError> {
        self.finished = true;
        self.runtime.delete(self.id)
    }

    /// Kills the container and its runtime process, then deletes the container.
    fn stop(mut self) -> Result<(), ExecError> {
        self.finished = true;
        self.kill().map_err(|source| ExecError::Supervise {
            id: self.id.to_owned(),
            source,
        })?;
        Ok(self.runtime.delete(self.id)?)
    }

    fn kill(&mut self) -> io::Result<()> {
        // The runtime refuses while the container is still being created; the runtime
        // process itself is killed then, and `delete --force` takes what it left.
        let grace = match self.runtime.kill(self.id) {
            Ok(()) => KILL_GRACE,
            Err(_) => Duration::ZERO,
        };
        if wait_exit(&mut self.child, grace)?.is_none() {
            self.child.kill()?;
            self.child.wait()?;
        }
        Ok(())
    }
}

impl<R: Runtime> Drop for ContainerGuard<'_, R> {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.kill();
            let _ = self.runtime.delete(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cancel::CancelToken;
    use crate::request::OutputStream;
    use oci_spec::runtime::Spec;
    use std::collections::{HashMap, HashSet};
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    use std::sync::{Arc, Mutex};

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Call {
        Mount {
            lowers: Vec<PathBuf>,
            target: PathBuf,
        },
        Unmount(PathBuf),
        Run(String),
        Kill(String),
        Delete(String),
        List,
    }

    /// Records calls; "mounts" by remembering the target.
    #[derive(Default)]
    struct RecordingMounter {
        calls: Arc<Mutex<Vec<Call>>>,
        mounted: Mutex<HashSet<PathBuf>>,
        fail: bool,
    }

    impl Mounter for RecordingMounter {
        fn mount_overlay(&self, overlay: &OverlayMount, target: &Path) -> Result<(), MountError> {
            self.calls.lock().unwrap().push(Call::Mount {
                lowers: overlay.lowers.clone(),
                target: target.to_owned(),
            });
            if self.fail {
                return Err(MountError::Mount {
                    target: target.to_owned(),
                    source: io::Error::from(io::ErrorKind::PermissionDenied),
                });
            }
            self.mounted.lock().unwrap().insert(target.to_owned());
            Ok(())
        }

        fn unmount(&self, target: &Path) -> Result<(), MountError> {
            self.calls
                .lock()
                .unwrap()
                .push(Call::Unmount(target.to_owned()));
            if self.mounted.lock().unwrap().remove(target) {
                Ok(())
            } else {
                Err(MountError::NotMounted {
                    target: target.to_owned(),
                })
            }
        }
    }

    /// Records calls; "runs" a container by running its args on the host with its env.
    #[derive(Default)]
    struct RecordingRuntime {
        calls: Arc<Mutex<Vec<Call>>>,
        specs: Mutex<Vec<Spec>>,
        pids: Mutex<HashMap<String, u32>>,
        listed: Vec<String>,
        missing_binary: bool,
    }

    impl Runtime for RecordingRuntime {
        fn run(&self, id: &str, bundle: &Path) -> Result<Child, RuntimeError> {
            self.calls.lock().unwrap().push(Call::Run(id.to_owned()));
            if self.missing_binary {
                return Err(RuntimeError::Spawn {
                    binary: "no-such-runtime".into(),
                    source: io::Error::from(io::ErrorKind::NotFound),
                });
            }
            let spec = Spec::load(bundle.join("config.json")).unwrap();
            let process = spec.process().clone().unwrap();
            let args = process.args().clone().unwrap();
            let child = Command::new(&args[0])
                .args(&args[1..])
                .env_clear()
                .envs(
                    process
                        .env()
                        .iter()
                        .flatten()
                        .filter_map(|kv| kv.split_once('=')),
                )
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0)
                .spawn()
                .unwrap();
            self.pids.lock().unwrap().insert(id.to_owned(), child.id());
            self.specs.lock().unwrap().push(spec);
            Ok(child)
        }

        fn kill(&self, id: &str) -> Result<(), RuntimeError> {
            self.calls.lock().unwrap().push(Call::Kill(id.to_owned()));
            let pid = self.pids.lock().unwrap()[id];
            let pgid = rustix::process::Pid::from_raw(pid as i32).unwrap();
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
            Ok(())
        }

        fn delete(&self, id: &str) -> Result<(), RuntimeError> {
            self.calls.lock().unwrap().push(Call::Delete(id.to_owned()));
            Ok(())
        }

        fn list(&self) -> Result<Vec<String>, RuntimeError> {
            self.calls.lock().unwrap().push(Call::List);
            Ok(self.listed.clone())
        }
    }

    struct Fixture {
        dir: tempfile::TempDir,
        exec: RuncExecutor<RecordingMounter, RecordingRuntime>,
    }

    fn fixture_with(mounter: RecordingMounter, runtime: RecordingRuntime) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["state", "lower", "upper", "work"] {
            fs::create_dir(dir.path().join(sub)).unwrap();
        }
        fs::write(dir.path().join("resolv.conf"), "nameserver 10.1.1.1\n").unwrap();
        let exec = RuncExecutor::with_parts(dir.path().join("state"), mounter, runtime)
            .with_host_resolv_conf(dir.path().join("resolv.conf"));
        Fixture { dir, exec }
    }

    fn fixture() -> Fixture {
        fixture_with(RecordingMounter::default(), RecordingRuntime::default())
    }

    impl Fixture {
        fn request(&self, script: &str) -> ExecRequest {
            let d = self.dir.path();
            ExecRequest::new(
                vec!["/bin/sh".into(), "-c".into(), script.into()],
                Rootfs::Overlay {
                    lowers: vec![d.join("lower")],
                    upper: d.join("upper"),
                    work: d.join("work"),
                },
            )
        }

        fn calls(&self) -> Vec<Call> {
            let mut calls = self.exec.mounter.calls.lock().unwrap().clone();
            calls.extend(self.exec.runtime.calls.lock().unwrap().iter().cloned());
            calls
        }

        fn run_id(&self) -> String {
            self.calls()
                .into_iter()
                .find_map(|c| match c {
                    Call::Run(id) => Some(id),
                    _ => None,
                })
                .expect("the runtime was started")
        }

        /// Nothing of the run is left in the state directory.
        fn assert_clean(&self) {
            assert_eq!(
                bundle::known_ids(self.exec.state_dir()).unwrap(),
                Vec::<String>::new()
            );
            assert!(self.exec.mounter.mounted.lock().unwrap().is_empty());
        }
    }

    #[test]
    fn a_successful_run_mounts_runs_deletes_unmounts_in_order() {
        let fx = fixture();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let req =
            fx.request("echo hello; echo oops >&2")
                .with_output(move |stream, chunk: &[u8]| {
                    sink.lock().unwrap().push((stream, chunk.to_vec()))
                });
        let outcome = fx.exec.run(req).unwrap();
        assert_eq!(outcome.exit_code, 0);
        assert_eq!(outcome.upper, fx.dir.path().join("upper"));

        let id = fx.run_id();
        let target = fx.exec.state_dir().join("bundles").join(&id).join("rootfs");
        // Mounter calls first, then runtime calls, each in order.
        assert_eq!(
            fx.calls(),
            [
                Call::Mount {
                    lowers: vec![fx.dir.path().join("lower")],
                    target: target.clone()
                },
                Call::Unmount(target),
                Call::Run(id.clone()),
                Call::Delete(id),
            ]
        );
        let seen = seen.lock().unwrap();
        assert!(seen.contains(&(OutputStream::Stdout, b"hello\n".to_vec())));
        assert!(seen.contains(&(OutputStream::Stderr, b"oops\n".to_vec())));
        fx.assert_clean();
    }

    #[test]
    fn the_spec_points_at_the_mounted_rootfs_and_generated_files() {
        let fx = fixture();
        fx.exec
            .run(fx.request("true").with_hostname("builder"))
            .unwrap();
        let spec = fx.exec.runtime.specs.lock().unwrap()[0].clone();
        let id = fx.run_id();
        let bundle = fx.exec.state_dir().join("bundles").join(&id);
        assert_eq!(spec.root().as_ref().unwrap().path(), &bundle.join("rootfs"));
        let hosts = spec
            .mounts()
            .iter()
            .flatten()
            .find(|m| m.destination() == Path::new("/etc/hosts"))
            .unwrap();
        assert_eq!(
            hosts.source().as_deref(),
            Some(bundle.join("hosts").as_path())
        );
        assert_eq!(spec.hostname().as_deref(), Some("builder"));
    }

    #[test]
    fn a_non_zero_exit_fails_with_the_tail_and_still_cleans_up() {
        let fx = fixture();
        let err = fx
            .exec
            .run(fx.request("for i in 1 2 3; do echo line $i; done; exit 3"))
            .unwrap_err();
        match err {
            ExecError::Failed {
                exit_code, tail, ..
            } => {
                assert_eq!(exit_code, 3);
                assert_eq!(tail, "line 1\nline 2\nline 3");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        assert!(fx.calls().contains(&Call::Delete(fx.run_id())));
        fx.assert_clean();
    }

    #[test]
    fn accepted_exit_codes_give_an_outcome() {
        let fx = fixture();
        let outcome = fx
            .exec
            .run(fx.request("exit 3").with_ok_exit_codes(vec![0, 3]))
            .unwrap();
        assert_eq!(outcome.exit_code, 3);
    }

    #[test]
    fn cancelling_kills_deletes_and_cleans_up_quickly() {
        let fx = fixture();
        let cancel = CancelToken::new();
        let remote = cancel.clone();
        let canceller = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            remote.cancel();
        });
        let start = Instant::now();
        let err = fx
            .exec
            .run(fx.request("sleep 100").with_cancel(cancel))
            .unwrap_err();
        canceller.join().unwrap();
        assert!(matches!(err, ExecError::Cancelled), "{err:?}");
        assert!(start.elapsed() < Duration::from_secs(2));
        let id = fx.run_id();
        let calls = fx.calls();
        let kill = calls
            .iter()
            .position(|c| *c == Call::Kill(id.clone()))
            .unwrap();
        let delete = calls
            .iter()
            .position(|c| *c == Call::Delete(id.clone()))
            .unwrap();
        assert!(kill < delete);
        fx.assert_clean();
    }

    #[test]
    fn a_timeout_kills_and_reports_it() {
        let fx = fixture();
        let err = fx
            .exec
            .run(
                fx.request("sleep 100")
                    .with_timeout(Duration::from_millis(100)),
            )
            .unwrap_err();
        assert!(
            matches!(err, ExecError::TimedOut { after } if after == Duration::from_millis(100)),
            "{err:?}"
        );
        fx.assert_clean();
    }

    #[test]
    fn a_panic_while_the_container_runs_still_cleans_up() {
        let fx = fixture();
        let req = fx
            .request("echo boom; sleep 100")
            .with_output(|_: OutputStream, _: &[u8]| panic!("sink failed"));
        let start = Instant::now();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fx.exec.run(req)));
        assert!(caught.is_err());
        assert!(start.elapsed() < Duration::from_secs(5));
        let id = fx.run_id();
        assert!(fx.calls().contains(&Call::Kill(id.clone())));
        assert!(fx.calls().contains(&Call::Delete(id)));
        fx.assert_clean();
    }

    #[test]
    fn a_runtime_that_cannot_start_still_unmounts_and_removes_the_bundle() {
        let fx = fixture_with(
            RecordingMounter::default(),
            RecordingRuntime {
                missing_binary: true,
                ..Default::default()
            },
        );
        let err = fx.exec.run(fx.request("true")).unwrap_err();
        assert!(matches!(
            err,
            ExecError::Runtime(RuntimeError::Spawn { .. })
        ));
        assert!(fx.calls().iter().any(|c| matches!(c, Call::Unmount(_))));
        fx.assert_clean();
    }

    #[test]
    fn a_failed_mount_runs_nothing_and_leaves_nothing() {
        let fx = fixture_with(
            RecordingMounter {
                fail: true,
                ..Default::default()
            },
            RecordingRuntime::default(),
        );
        let err = fx.exec.run(fx.request("true")).unwrap_err();
        assert!(matches!(err, ExecError::Mount(MountError::Mount { .. })));
        assert!(!fx.calls().iter().any(|c| matches!(c, Call::Run(_))));
        fx.assert_clean();
    }

    #[test]
    fn scratch_gets_an_empty_lower_dir() {
        let fx = fixture();
        let d = fx.dir.path();
        let req = ExecRequest::new(
            vec!["true".into()],
            Rootfs::Overlay {
                lowers: vec![],
                upper: d.join("upper"),
                work: d.join("work"),
            },
        );
        fx.exec.run(req).unwrap();
        let id = fx.run_id();
        let Call::Mount { lowers, .. } = &fx.calls()[0] else {
            panic!("first call is not a mount");
        };
        assert_eq!(
            lowers,
            &[fx.exec.state_dir().join("bundles").join(id).join("empty")]
        );
    }

    #[test]
    fn invalid_requests_touch_nothing() {
        let fx = fixture();
        let err = fx
            .exec
            .run(fx.request("true").with_cwd("relative"))
            .unwrap_err();
        assert!(matches!(err, ExecError::Request(_)));
        assert!(fx.calls().is_empty());
    }

    #[test]
    fn cleanup_stale_removes_dead_steps_and_spares_live_ones() {
        let fx = fixture_with(
            RecordingMounter::default(),
            RecordingRuntime {
                listed: vec!["kiln-dead".into()],
                ..Default::default()
            },
        );
        let state = fx.exec.state_dir().to_owned();
        let live = Bundle::create(&state).unwrap();
        let dead = state.join("bundles/kiln-dead");
        fs::create_dir_all(dead.join("rootfs")).unwrap();
        fs::write(dead.join("config.json"), "{}").unwrap();
        fs::write(state.join("locks/kiln-dead"), "").unwrap();
        fx.exec
            .mounter
            .mounted
            .lock()
            .unwrap()
            .insert(dead.join("rootfs"));

        assert_eq!(fx.exec.cleanup_stale().unwrap(), 1);
        assert!(!dead.exists());
        assert!(live.dir().exists());
        let calls = fx.calls();
        assert!(calls.contains(&Call::Delete("kiln-dead".into())));
        assert!(!calls.contains(&Call::Delete(live.id().to_owned())));
        assert_eq!(
            calls
                .iter()
                .filter(|c| **c == Call::Unmount(dead.join("rootfs")))
                .count(),
            2
        );
        live.remove().unwrap();
    }
}

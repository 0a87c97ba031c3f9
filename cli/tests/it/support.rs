//! What the end-to-end tests share: a `kiln` with its own temporary root, a busybox root
//! filesystem tarball, and a private `dockerd` that is stopped when dropped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `kiln` binary with a fresh `--root`.
pub struct Kiln {
    /// Holds the root and anything else a test writes.
    pub dir: tempfile::TempDir,
}

impl Kiln {
    pub fn new() -> Kiln {
        Kiln {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Runs kiln and returns its output, whatever the exit status.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--root")
            .arg(self.root())
            .args(args)
            .output()
            .expect("run kiln")
    }

    /// Runs kiln, fails the test unless it succeeds, and returns its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kiln {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Runs kiln, fails the test if it succeeds, and returns its standard error.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "kiln {args:?} unexpectedly succeeded"
        );
        String::from_utf8(out.stderr).expect("utf-8 output")
    }
}

/// The static busybox Debian's `busybox-static` installs.
const BUSYBOX: &str = "/bin/busybox";

/// Writes a root filesystem tarball: `/bin/busybox` plus `sh`, `echo` and `cat` links.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    assert!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} is missing: install Debian's busybox-static"
    );
    let path = dir.join("rootfs.tar");
    let mut tar = tar::Builder::new(File::create(&path).expect("create rootfs.tar"));
    let mut dir_header = tar::Header::new_ustar();
    dir_header.set_entry_type(tar::EntryType::Directory);
    dir_header.set_mode(0o755);
    dir_header.set_size(0);
    tar.append_data(&mut dir_header, "bin/", std::io::empty())
        .unwrap();
    tar.append_path_with_name(BUSYBOX, "bin/busybox").unwrap();
    for name in ["sh", "echo", "cat"] {
        let mut link = tar::Header::new_ustar();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_mode(0o777);
        link.set_size(0);
        tar.append_link(&mut link, format!("bin/{name}"), "busybox")
            .unwrap();
    }
    tar.finish().unwrap();
    path
}

/// Fails the test, naming the package, unless `program` is on the PATH.
pub fn require(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{program} is not installed: apt-get install -y {package}"
    );
}

/// A `dockerd` of the test's own, on a socket in a temp dir; stopped on drop.
pub struct Dockerd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Dockerd {
    pub fn start() -> Dockerd {
        require("dockerd", "docker.io");
        require("docker", "docker.io");
        // Short paths: the socket path must fit in a sockaddr_un.
        let dir = tempfile::Builder::new()
            .prefix("kd")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let d = dir.path();
        let log = File::create(d.join("log")).expect("dockerd log");
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("-H")
            .arg(format!("unix://{}", d.join("s").display()))
            .arg("--exec-root")
            .arg(d.join("x"))
            .arg("--pidfile")
            .arg(d.join("pid"))
            .args(["--bridge", "none", "--iptables=false"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let mut daemon = Dockerd { child, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = daemon
                .docker(&["version"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ready {
                return daemon;
            }
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("dockerd exited with {status}: {}", daemon.log());
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer within 60s: {}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// A `docker` command talking to this daemon.
    pub fn docker(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("docker");
        cmd.env(
            "DOCKER_HOST",
            format!("unix://{}", self.dir.path().join("s").display()),
        )
        .env("DOCKER_BUILDKIT", "0")
        .args(args);
        cmd
    }

    /// Runs docker, fails the test unless it succeeds, returns its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args).output().expect("run docker");
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SIGTERM lets dockerd stop the containerd it started; SIGKILL only if it hangs.
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

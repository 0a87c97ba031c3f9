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

impl Kiln {
    /// A `kiln` command on this root, to run or spawn.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.arg("--root").arg(self.root());
        cmd
    }
}

/// What kiln left behind on `root` that only a running kiln should have: mounts below
/// the root, runc containers in its executor state, and entries in the scratch and
/// state folders that are empty between commands. One line per leftover.
pub fn leftovers(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    for line in mountinfo.lines() {
        if let Some(point) = line.split(' ').nth(4)
            && Path::new(point).starts_with(root)
        {
            found.push(format!("mount {point}"));
        }
    }
    let runc_root = root.join("executor-v1/runc");
    if runc_root.exists() {
        require("runc", "runc");
        let out = Command::new("runc")
            .arg("--root")
            .arg(&runc_root)
            .args(["list", "--quiet"])
            .output()
            .expect("run runc list");
        assert!(
            out.status.success(),
            "runc list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            found.push(format!("runc container {id}"));
        }
    }
    for dir in [
        "content-v1/ingest",
        "snapshots-v1/tmp",
        "executor-v1/bundles",
        "executor-v1/locks",
        "tmp",
    ] {
        if let Ok(entries) = std::fs::read_dir(root.join(dir)) {
            for entry in entries {
                let entry = entry.unwrap();
                // What is inside says which step of which process left it.
                let inside: Vec<String> = walkdir::WalkDir::new(entry.path())
                    .min_depth(1)
                    .max_depth(3)
                    .into_iter()
                    .filter_map(Result::ok)
                    .map(|e| {
                        e.path()
                            .strip_prefix(entry.path())
                            .unwrap()
                            .display()
                            .to_string()
                    })
                    .collect();
                found.push(format!("{dir}/{} {inside:?}", entry.file_name().display()));
            }
        }
    }
    // Temp files of writers that rename into place (layout, image store, stat caches).
    for dir in ["", "contexthash-v1"] {
        if let Ok(entries) = std::fs::read_dir(root.join(dir)) {
            for entry in entries {
                let name = entry.unwrap().file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') {
                    found.push(format!("{dir}/{name}"));
                }
            }
        }
    }
    found
}

/// The first lines of a test Dockerfile: a busybox base stage made from scratch.
pub const BUSYBOX_BASE: &str = "FROM scratch AS base\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n";

/// Makes `dir` a build context holding busybox and `dockerfile` (for [`BUSYBOX_BASE`]),
/// after checking that runc is installed.
pub fn busybox_context(dir: &Path, dockerfile: &str) -> PathBuf {
    assert!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} is missing: install Debian's busybox-static"
    );
    require("runc", "runc");
    std::fs::create_dir_all(dir).expect("create the context");
    std::fs::copy(BUSYBOX, dir.join("busybox")).expect("copy busybox");
    std::fs::write(dir.join("Dockerfile"), dockerfile).expect("write the Dockerfile");
    dir.to_owned()
}

/// Every regular file under `dir`, symlinks not followed.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            out.extend(files_under(&path));
        } else if meta.is_file() {
            out.push(path);
        }
    }
    out
}

/// Files under `dir` whose bytes contain `needle`, either as stored or once gzip or
/// zstd (as layers are) has been undone.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let contains = |bytes: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    let mut found = Vec::new();
    for path in files_under(dir) {
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let mut plain = Vec::new();
        if let Ok((compression, mut reader)) = kiln_image::Compression::decompress(&bytes[..])
            && compression != kiln_image::Compression::None
        {
            let _ = std::io::Read::read_to_end(&mut reader, &mut plain);
        }
        if contains(&bytes) || contains(&plain) {
            found.push(path);
        }
    }
    found
}

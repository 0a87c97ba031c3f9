//! `TestContext`: a temp dir with a busybox lower layer, fresh upper/work dirs, a state
//! dir and an executor over them, plus helpers to run a script and inspect the results.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use kiln_executor::{
    ExecError, ExecOutcome, ExecRequest, Executor, OutputStream, Rootfs, RuncExecutor,
};

/// Applets linked into the test rootfs.
const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "id", "pwd", "env", "ls", "sleep", "rm", "mkdir", "touch", "grep",
    "hostname", "true", "false", "test", "stat",
];

/// Fails the test unless it runs as root with runc and busybox at hand.
pub fn require_tools() {
    assert!(
        rustix::process::geteuid().is_root(),
        "the executor tests run containers and need root"
    );
    let runc = Command::new("runc").arg("--version").output();
    assert!(
        runc.is_ok_and(|o| o.status.success()),
        "runc is missing: install the Debian package runc"
    );
    assert!(
        Path::new("/bin/busybox").is_file(),
        "/bin/busybox is missing: install the Debian package busybox-static"
    );
}

/// Output captured from a run.
#[derive(Debug, Default, Clone)]
pub struct Captured {
    pub stdout: String,
    pub stderr: String,
}

pub struct TestContext {
    pub dir: tempfile::TempDir,
    pub exec: RuncExecutor,
}

impl TestContext {
    /// A lower layer with busybox, `/etc/passwd` and some files to delete; no `/etc/hosts`.
    pub fn new() -> TestContext {
        let ctx = TestContext::bare();
        let lower = ctx.lower();
        // As in an image whose first RUN already made the kernel mount points.
        for kernel in ["dev", "proc", "sys"] {
            fs::create_dir_all(lower.join(kernel)).unwrap();
        }
        fs::create_dir_all(lower.join("etc")).unwrap();
        fs::write(lower.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        fs::create_dir_all(lower.join("data")).unwrap();
        fs::write(lower.join("data/keep"), "keep").unwrap();
        fs::write(lower.join("data/remove-me"), "bye").unwrap();
        fs::create_dir_all(lower.join("tree/a/b")).unwrap();
        fs::write(lower.join("tree/a/b/old"), "old").unwrap();
        ctx
    }

    /// A lower layer with only `/bin` (busybox and its applets).
    pub fn bare() -> TestContext {
        require_tools();
        let dir = tempfile::tempdir().unwrap();
        for sub in ["lower/bin", "upper", "work", "state"] {
            fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let bin = dir.path().join("lower/bin");
        fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
        for applet in APPLETS {
            symlink("busybox", bin.join(applet)).unwrap();
        }
        let exec = RuncExecutor::new(dir.path().join("state"));
        TestContext { dir, exec }
    }

    pub fn lower(&self) -> PathBuf {
        self.dir.path().join("lower")
    }

    pub fn upper(&self) -> PathBuf {
        self.dir.path().join("upper")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn overlay(&self) -> Rootfs {
        Rootfs::Overlay {
            lowers: vec![self.lower()],
            upper: self.upper(),
            work: self.dir.path().join("work"),
        }
    }

    /// `sh -c script` over the overlay rootfs.
    pub fn request(&self, script: &str) -> ExecRequest {
        ExecRequest::new(
            vec!["/bin/sh".into(), "-c".into(), script.into()],
            self.overlay(),
        )
    }

    /// Runs `req`, capturing its output.
    pub fn run(&self, req: ExecRequest) -> (Result<ExecOutcome, ExecError>, Captured) {
        let captured = Arc::new(Mutex::new(Captured::default()));
        let sink = Arc::clone(&captured);
        let req = req.with_output(move |stream, chunk: &[u8]| {
            let text = String::from_utf8_lossy(chunk);
            let mut c = sink.lock().unwrap();
            match stream {
                OutputStream::Stdout => c.stdout.push_str(&text),
                OutputStream::Stderr => c.stderr.push_str(&text),
            }
        });
        let result = self.exec.run(req);
        let captured = captured.lock().unwrap().clone();
        (result, captured)
    }

    /// Runs `script` and returns its stdout, failing the test on any error.
    pub fn stdout_of(&self, req: ExecRequest) -> String {
        let (result, out) = self.run(req);
        if let Err(err) = result {
            panic!(
                "run failed: {err:?}\nstdout: {}\nstderr: {}",
                out.stdout, out.stderr
            );
        }
        out.stdout
    }

    /// Every path in the upper dir, relative, sorted.
    pub fn upper_tree(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.upper(), Path::new(""), &mut out);
        out.sort();
        out
    }

    /// Nothing of a run is left: no mount under the temp dir, no runc container, no
    /// bundle or lock.
    pub fn assert_no_leftovers(&self) {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let dir = self.dir.path().to_str().unwrap();
        let leaked: Vec<&str> = mountinfo.lines().filter(|l| l.contains(dir)).collect();
        assert!(leaked.is_empty(), "mounts left behind: {leaked:#?}");
        let list = Command::new("runc")
            .arg("--root")
            .arg(RuncExecutor::runc_root(&self.state()))
            .args(["list", "--quiet"])
            .output()
            .unwrap();
        assert!(list.status.success());
        assert_eq!(
            String::from_utf8_lossy(&list.stdout).trim(),
            "",
            "containers left"
        );
        for sub in ["bundles", "locks"] {
            let entries: Vec<_> = fs::read_dir(self.state().join(sub))
                .map(|rd| rd.map(|e| e.unwrap().file_name()).collect())
                .unwrap_or_default();
            assert!(entries.is_empty(), "{sub} left behind: {entries:?}");
        }
    }
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<String>) {
    for entry in fs::read_dir(root.join(rel)).unwrap() {
        let entry = entry.unwrap();
        let path = rel.join(entry.file_name());
        out.push(path.to_string_lossy().into_owned());
        if entry.file_type().unwrap().is_dir() {
            walk(root, &path, out);
        }
    }
}

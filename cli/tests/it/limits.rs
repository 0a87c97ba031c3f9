//! Builds at the edges of the machine: a root on a full filesystem, and a layer far
//! larger than the memory kiln may use.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{BUSYBOX_BASE, Kiln, busybox_context, leftovers};

/// A tmpfs mounted over a directory for the length of a test.
struct Tmpfs<'a> {
    dir: &'a Path,
}

impl<'a> Tmpfs<'a> {
    fn mount(dir: &'a Path, size: &str) -> Tmpfs<'a> {
        let euid = fs::metadata("/proc/self").expect("stat /proc/self").uid();
        assert_eq!(euid, 0, "mounting a tmpfs needs root");
        mount(
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"],
            dir,
        );
        Tmpfs { dir }
    }

    fn resize(&self, size: &str) {
        mount(&["-o", &format!("remount,size={size}")], self.dir);
    }

    /// Bytes in use.
    fn used(&self) -> u64 {
        let out = Command::new("df")
            .args(["-B1", "--output=used"])
            .arg(self.dir)
            .output()
            .expect("run df");
        let text = String::from_utf8_lossy(&out.stdout);
        let used = text.lines().nth(1).map(str::trim);
        used.and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("df printed {text:?}"))
    }
}

fn mount(args: &[&str], dir: &Path) {
    let out = Command::new("mount")
        .args(args)
        .arg(dir)
        .output()
        .expect("run mount");
    assert!(
        out.status.success(),
        "mount {args:?} {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir).status();
    }
}

fn build(kiln: &Kiln, ctx: &Path, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["build", "--progress", "plain"];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    let out = kiln.run(&args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The lines of a build's output from its first error on.
fn error_report(stderr: &str) -> String {
    stderr
        .lines()
        .skip_while(|l| !l.contains("ERROR"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `kiln store check` passes and nothing of a running kiln is left on the root.
fn store_is_sound(kiln: &Kiln, after: &str) {
    let check = kiln.run(&["store", "check"]);
    assert!(
        check.status.success(),
        "store check after {after}: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let left = leftovers(&kiln.root());
    assert!(left.is_empty(), "left after {after}: {left:?}");
}

#[test]
fn a_full_disk_fails_the_step_clearly_and_the_store_stays_usable() {
    let kiln = Kiln::new();
    // The whole test directory, root and context, on 64 MiB: the RUN steps write into
    // snapshots under the root, and their layers go to the root's content store.
    let tmpfs = Tmpfs::mount(kiln.dir.path(), "64m");
    let ctx = busybox_context(&kiln.dir.path().join("ctx"), BUSYBOX_BASE);
    let (ok, stderr) = build(&kiln, &ctx, &[]);
    assert!(ok, "the base does not fit:\n{stderr}");
    let base_used = tmpfs.used();

    // 100 MiB does not fit at all: the step itself runs out (and busybox's dd says so).
    let step = "RUN dd if=/dev/urandom of=/big bs=1M count=100";
    fs::write(ctx.join("Dockerfile"), format!("{BUSYBOX_BASE}{step}\n")).unwrap();
    let (ok, stderr) = build(&kiln, &ctx, &[]);
    assert!(!ok, "{step} fitted in 64 MiB:\n{stderr}");
    let report = error_report(&stderr);
    assert!(
        report.to_lowercase().contains("no space left on device"),
        "the step ran out of space without saying so:\n{stderr}"
    );
    assert!(report.contains(step), "the step is not named:\n{stderr}");
    store_is_sound(&kiln, step);
    let used = tmpfs.used();
    assert!(
        used < base_used + (4 << 20),
        "{step} left {} KiB behind",
        (used - base_used) >> 10
    );
    println!("{step} on 64 MiB (the step runs out):\n{report}\n");

    // 40 MiB fits in the step's snapshot, which is all a build keeps of it; exporting
    // it needs a second copy as a blob, and kiln runs out of space writing that.
    let step = "RUN dd if=/dev/urandom of=/big bs=1M count=40";
    fs::write(ctx.join("Dockerfile"), format!("{BUSYBOX_BASE}{step}\n")).unwrap();
    let (ok, stderr) = build(&kiln, &ctx, &[]);
    assert!(ok, "{step} did not fit once:\n{stderr}");
    let archive = kiln.dir.path().join("image.tar");
    let output = format!(
        "type=oci,dest={},compression=uncompressed",
        archive.display()
    );
    let (ok, stderr) = build(&kiln, &ctx, &["-o", &output]);
    assert!(!ok, "the export of {step} fitted in 64 MiB:\n{stderr}");
    assert!(
        stderr.to_lowercase().contains("no space left on device"),
        "kiln ran out of space without saying so:\n{stderr}"
    );
    store_is_sound(&kiln, "the export");
    let used = tmpfs.used();
    assert!(
        used < base_used + (44 << 20),
        "the export left {} KiB behind besides the step's snapshot",
        (used - base_used) >> 10
    );
    println!("exporting {step} on 64 MiB (kiln runs out):\n{stderr}\n");

    // What still fits builds.
    fs::write(
        ctx.join("Dockerfile"),
        format!("{BUSYBOX_BASE}RUN head -c 1m /dev/urandom > /small\n"),
    )
    .unwrap();
    let (ok, stderr) = build(&kiln, &ctx, &[]);
    assert!(ok, "a small step after a full disk:\n{stderr}");

    // With room again, the big step builds, and the store is still sound.
    tmpfs.resize("256m");
    fs::write(
        ctx.join("Dockerfile"),
        format!("{BUSYBOX_BASE}RUN dd if=/dev/urandom of=/big bs=1M count=40\n"),
    )
    .unwrap();
    let (ok, stderr) = build(&kiln, &ctx, &[]);
    assert!(ok, "the big step once there is room:\n{stderr}");
    store_is_sound(&kiln, "the builds that fitted");
}

/// Runs `cmd` and returns its exit status and the peak resident memory of that process
/// alone (its `VmHWM`, read while it runs; runc and containers are not counted).
fn run_measuring_peak(mut cmd: Command) -> (std::process::Output, u64) {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let status_path = format!("/proc/{}/status", child.id());
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let out = child.wait_with_output().expect("wait");
        done_tx.send(()).unwrap();
        out
    });
    let mut peak_kib = 0;
    loop {
        if let Ok(status) = fs::read_to_string(&status_path)
            && let Some(kib) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak_kib = peak_kib.max(kib);
        }
        if done_rx.recv_timeout(Duration::from_millis(20)).is_ok() {
            break;
        }
    }
    (waiter.join().unwrap(), peak_kib << 10)
}

#[test]
fn a_five_gib_layer_is_built_in_bounded_memory() {
    const LIMIT: u64 = 300 << 20;
    let kiln = Kiln::new();
    // 64 MiB of random bytes written 80 times: 5 GiB that neither gzip's nor zstd's
    // window (without long-distance matching) can shrink.
    let dockerfile = format!(
        "{BUSYBOX_BASE}RUN head -c 64m /dev/urandom > /r && \
         for i in $(seq 80); do cat /r; done > /big && rm /r && ls -l /big\n"
    );
    let ctx = busybox_context(&kiln.dir.path().join("ctx"), &dockerfile);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.arg("--root")
        .arg(kiln.root())
        .args(["build", "--progress", "plain", "-t", "big:1"])
        .arg(&ctx);
    let started = Instant::now();
    let (out, peak) = run_measuring_peak(cmd);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("5368709120"),
        "the layer is not 5 GiB:\n{stderr}"
    );
    println!(
        "5 GiB layer: kiln peak RSS {} MiB, build took {:.1}s",
        peak >> 20,
        took.as_secs_f64()
    );
    assert!(peak > 0, "no VmHWM was read");
    assert!(
        peak < LIMIT,
        "kiln's peak RSS was {} MiB, more than {} MiB",
        peak >> 20,
        LIMIT >> 20
    );
    let history = kiln.ok(&["history", "big:1"]);
    assert!(
        history.contains("GB") || history.contains("5.37"),
        "{history}"
    );
}

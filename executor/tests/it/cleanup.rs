//! Cancellation, timeouts and stale state: nothing is left behind.

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_executor::{CancelToken, ExecError, LinuxMounter, Mounter, OverlayMount, RuncExecutor};

use crate::support::TestContext;

#[test]
fn cancelling_a_sleep_returns_quickly_and_leaves_nothing() {
    let ctx = TestContext::new();
    let cancel = CancelToken::new();
    let remote = cancel.clone();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        let at = Instant::now();
        remote.cancel();
        at
    });
    let (result, out) = ctx.run(ctx.request("echo started; sleep 100").with_cancel(cancel));
    let returned = Instant::now();
    let cancelled_at = canceller.join().unwrap();
    assert!(matches!(result, Err(ExecError::Cancelled)), "{result:?}");
    assert_eq!(out.stdout, "started\n");
    let took = returned - cancelled_at;
    assert!(took < Duration::from_secs(2), "cancellation took {took:?}");
    ctx.assert_no_leftovers();
}

#[test]
fn a_timeout_kills_the_step() {
    let ctx = TestContext::new();
    let start = Instant::now();
    let (result, _) = ctx.run(
        ctx.request("sleep 100")
            .with_timeout(Duration::from_millis(500)),
    );
    assert!(
        matches!(result, Err(ExecError::TimedOut { .. })),
        "{result:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(3));
    ctx.assert_no_leftovers();
}

#[test]
fn cleanup_stale_removes_a_crashed_runs_container_mount_and_bundle() {
    let ctx = TestContext::new();
    // What a process killed mid-run leaves: a bundle with a mounted rootfs, a lock
    // nobody holds, and a running container.
    let id = "kiln-crashed-0-0";
    let bundle = ctx.state().join("bundles").join(id);
    let rootfs = bundle.join("rootfs");
    fs::create_dir_all(&rootfs).unwrap();
    fs::create_dir_all(ctx.state().join("locks")).unwrap();
    fs::write(ctx.state().join("locks").join(id), "").unwrap();
    LinuxMounter
        .mount_overlay(
            &OverlayMount {
                lowers: vec![ctx.lower()],
                upper: ctx.upper(),
                work: ctx.dir.path().join("work"),
            },
            &rootfs,
        )
        .unwrap();
    let spec = Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(&bundle)
        .status()
        .unwrap();
    assert!(spec.success());
    let config = fs::read_to_string(bundle.join("config.json")).unwrap();
    let config = config
        .replace("\"terminal\": true", "\"terminal\": false")
        .replace("\"sh\"", "\"sleep\", \"100\"");
    fs::write(bundle.join("config.json"), config).unwrap();
    let started = Command::new("runc")
        .arg("--root")
        .arg(RuncExecutor::runc_root(&ctx.state()))
        .args(["run", "--detach", "--bundle"])
        .arg(&bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(started.success(), "could not start the stale container");

    // A live step in the same state dir, which must survive.
    let live_cancel = CancelToken::new();
    let live = std::thread::scope(|s| {
        let running =
            s.spawn(|| ctx.run(ctx.request("sleep 100").with_cancel(live_cancel.clone())));
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(ctx.exec.cleanup_stale().unwrap(), 1);
        live_cancel.cancel();
        running.join().unwrap()
    });
    assert!(matches!(live.0, Err(ExecError::Cancelled)), "{:?}", live.0);
    assert!(!bundle.exists());
    ctx.assert_no_leftovers();
}

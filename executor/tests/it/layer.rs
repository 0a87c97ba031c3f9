//! What lands in the upper dir: the command's changes and nothing of the machinery.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use kiln_executor::{ExecRequest, Executor, Rootfs};

use crate::support::TestContext;

#[test]
fn a_written_file_lands_in_the_upper_and_etc_files_do_not() {
    let ctx = TestContext::new();
    let out = ctx.stdout_of(ctx.request(
        "echo content > /out.txt; cat /etc/hosts /etc/hostname /etc/resolv.conf >/dev/null && echo ok",
    ));
    assert_eq!(out, "ok\n");
    assert_eq!(ctx.upper_tree(), ["out.txt"]);
    assert_eq!(
        fs::read_to_string(ctx.upper().join("out.txt")).unwrap(),
        "content\n"
    );
    ctx.assert_no_leftovers();
}

#[test]
fn scratch_keeps_only_the_kernel_mount_points_as_docker_build_does() {
    let ctx = TestContext::bare();
    ctx.stdout_of(ctx.request("touch /made"));
    assert_eq!(ctx.upper_tree(), ["dev", "made", "proc", "sys"]);
}

#[test]
fn no_lower_dirs_at_all_still_runs() {
    let ctx = TestContext::bare();
    // The busybox tree becomes the upper dir's starting content instead of a lower.
    fs::remove_dir(ctx.upper()).unwrap();
    fs::rename(ctx.lower(), ctx.upper()).unwrap();
    let req = ExecRequest::new(
        vec!["/bin/sh".into(), "-c".into(), "echo scratch".into()],
        Rootfs::Overlay {
            lowers: vec![],
            upper: ctx.upper(),
            work: ctx.dir.path().join("work"),
        },
    );
    assert_eq!(ctx.stdout_of(req), "scratch\n");
    assert!(
        ctx.upper().join("proc").is_dir(),
        "kept, as docker build keeps it"
    );
    assert!(!ctx.upper().join("etc").exists());
    ctx.assert_no_leftovers();
}

#[test]
fn changes_under_etc_keep_etc_but_not_the_stubs() {
    let ctx = TestContext::new();
    ctx.stdout_of(ctx.request("echo x > /etc/motd"));
    assert_eq!(ctx.upper_tree(), ["etc", "etc/motd"]);
}

#[test]
fn deleting_a_lower_file_leaves_a_whiteout() {
    let ctx = TestContext::new();
    ctx.stdout_of(ctx.request("rm /data/remove-me"));
    let meta = fs::symlink_metadata(ctx.upper().join("data/remove-me")).unwrap();
    assert!(meta.file_type().is_char_device());
    assert_eq!(meta.rdev(), 0);
    assert!(!ctx.upper().join("data/keep").exists());
}

#[test]
fn recreating_a_removed_lower_dir_makes_it_opaque() {
    let ctx = TestContext::new();
    ctx.stdout_of(ctx.request("rm -rf /tree && mkdir /tree && touch /tree/new"));
    let mut value = [0u8; 4];
    let n = rustix::fs::lgetxattr(
        ctx.upper().join("tree"),
        "trusted.overlay.opaque",
        &mut value,
    )
    .expect("the recreated dir is opaque");
    assert_eq!(&value[..n], b"y");
    assert_eq!(ctx.upper_tree(), ["tree", "tree/new"]);
}

#[test]
fn a_plain_dir_rootfs_is_changed_in_place_without_stubs() {
    let ctx = TestContext::new();
    let rootfs = ctx.lower();
    let req = ExecRequest::new(
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "touch /made && rm /data/remove-me".into(),
        ],
        Rootfs::Dir(rootfs.clone()),
    );
    let outcome = ctx.exec.run(req).unwrap();
    assert_eq!(outcome.upper, rootfs);
    assert!(rootfs.join("made").is_file());
    assert!(!rootfs.join("data/remove-me").exists());
    for stub in ["etc/hosts", "etc/hostname", "etc/resolv.conf"] {
        assert!(!rootfs.join(stub).exists(), "{stub} left in the rootfs");
    }
    ctx.assert_no_leftovers();
}

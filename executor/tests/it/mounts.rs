//! Extra mounts: bind (read-only and read-write, as cache mounts use), tmpfs.

use std::fs;

use kiln_executor::{Mount, MountKind};

use crate::support::TestContext;

#[test]
fn binds_and_tmpfs_are_mounted_and_leave_no_trace() {
    let ctx = TestContext::new();
    let context = ctx.dir.path().join("context");
    let cache = ctx.dir.path().join("cache");
    fs::create_dir_all(&context).unwrap();
    fs::create_dir_all(&cache).unwrap();
    fs::write(context.join("input"), "from the context\n").unwrap();
    let req = ctx
        .request(
            "cat /src/input; touch /src/x 2>/dev/null && echo src-writable; \
             echo cached > /root/.cache/go/entry; echo scratch > /tmp/t; cat /tmp/t",
        )
        .with_mount(Mount {
            destination: "/src".into(),
            kind: MountKind::Bind {
                source: context.clone(),
                readonly: true,
            },
        })
        .with_mount(Mount {
            destination: "/root/.cache/go".into(),
            kind: MountKind::Bind {
                source: cache.clone(),
                readonly: false,
            },
        })
        .with_mount(Mount {
            destination: "/tmp".into(),
            kind: MountKind::Tmpfs {
                size: Some(1 << 20),
            },
        });
    let out = ctx.stdout_of(req);
    assert_eq!(out, "from the context\nscratch\n");
    assert_eq!(fs::read_to_string(cache.join("entry")).unwrap(), "cached\n");
    assert_eq!(ctx.upper_tree(), Vec::<String>::new());
    ctx.assert_no_leftovers();
}

/// The rootfs overlay is volatile (the kernel has it here): an unmount does not flush
/// the upper dir, and the same upper and work dirs mount again afterwards, as a step's
/// view does when a COPY and the RUN after it share a workspace.
#[test]
fn overlays_are_volatile_and_mount_again_on_the_same_dirs() {
    use kiln_executor::{LinuxMounter, Mounter, OverlayMount};
    let ctx = TestContext::new();
    let dir = &ctx.dir.path().join("overlay");
    for d in ["", "lower", "upper", "work", "merged"] {
        fs::create_dir(dir.join(d)).unwrap();
    }
    fs::write(dir.join("lower/below"), "below\n").unwrap();
    let overlay = OverlayMount {
        lowers: vec![dir.join("lower")],
        upper: dir.join("upper"),
        work: dir.join("work"),
    };
    let target = dir.join("merged");
    for round in ["first", "second"] {
        LinuxMounter.mount_overlay(&overlay, &target).unwrap();
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let line = mountinfo
            .lines()
            .find(|l| l.contains(target.to_str().unwrap()))
            .expect("the overlay is in the mount table");
        assert!(line.contains("volatile"), "{round} mount: {line}");
        fs::write(target.join(round), round).unwrap();
        assert_eq!(fs::read_to_string(target.join("below")).unwrap(), "below\n");
        LinuxMounter.unmount(&target).unwrap();
    }
    assert_eq!(
        fs::read_to_string(dir.join("upper/first")).unwrap(),
        "first"
    );
    assert_eq!(
        fs::read_to_string(dir.join("upper/second")).unwrap(),
        "second"
    );
}

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

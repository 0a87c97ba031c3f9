//! The snapshotter: chain IDs, committing trees, lower dir stacks, races, overlay mounts.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};

use kiln_cache::{CacheError, ChainId, LayerRef, SnapshotMode, Snapshotter, Store};
use kiln_image::Digest;

use crate::{TestContext, names};

#[test]
fn chain_ids_follow_the_image_spec() {
    // sha256("layer one"), sha256("layer two"), and sha256 of
    // "sha256:<first> sha256:<second>", all computed outside this code.
    let one: Digest = "sha256:f191e625176e7514249870c60bc24622131b04927a418001d1969c9cecd260f1"
        .parse()
        .unwrap();
    let two: Digest = "sha256:77c7ed05b2e49df2e55d70cb007508cc66b2f5419a940bfd6f8749ba7db77c45"
        .parse()
        .unwrap();
    assert_eq!(Digest::of(b"layer one"), one);
    assert_eq!(Digest::of(b"layer two"), two);
    let chain = ChainId::prefixes([&one, &two]);
    assert_eq!(chain[0].to_string(), one.to_string());
    assert_eq!(
        chain[1].to_string(),
        "sha256:d440fc2ac5bfa225471b58c5d6b4283504f5dfbcd6251023a635cdcd0c058e3e"
    );
    assert_eq!(ChainId::of(Some(&chain[0]), &two), chain[1]);
}

/// Makes a directory under the snapshotter's scratch with the given files.
fn tree(snapshots: &Snapshotter, files: &[(&str, &str)]) -> (kiln_cache::ScratchDir, PathBuf) {
    let scratch = snapshots.scratch().unwrap();
    let dir = scratch.path().join("upper");
    fs::create_dir(&dir).unwrap();
    for (name, text) in files {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    (scratch, dir)
}

fn commit(
    snapshots: &Snapshotter,
    parent: Option<&ChainId>,
    files: &[(&str, &str)],
) -> kiln_cache::SnapshotInfo {
    let (_scratch, dir) = tree(snapshots, files);
    let diff_id = Digest::of(format!("{files:?}").as_bytes());
    snapshots.commit_dir(parent, &diff_id, &dir).unwrap()
}

#[test]
fn overlay_lowerdirs_are_the_chain_top_first() {
    let ctx = TestContext::new();
    let store = Store::open(ctx.path()).unwrap();
    let snapshots = store.snapshotter(SnapshotMode::Overlay).unwrap();
    let base = commit(&snapshots, None, &[("a", "1")]);
    let mid = commit(&snapshots, Some(&base.chain_id), &[("b", "2")]);
    let top = commit(&snapshots, Some(&mid.chain_id), &[("c", "3")]);

    assert_eq!(base.chain_id, ChainId::base(&base.diff_id));
    assert_eq!(
        top.chain_id,
        ChainId::prefixes([&base.diff_id, &mid.diff_id, &top.diff_id])[2]
    );
    assert_eq!(top.parent.as_ref(), Some(&mid.chain_id));
    assert_eq!(top.mode, SnapshotMode::Overlay);
    assert!(top.size > 0);
    let expected_fs = ctx
        .join("snapshots-v1/overlay")
        .join(top.chain_id.digest().hex())
        .join("fs");
    assert_eq!(top.fs, expected_fs);
    assert_eq!(fs::read_to_string(top.fs.join("c")).unwrap(), "3");
    assert!(
        !top.fs.join("a").exists(),
        "an overlay snapshot holds its own layer only"
    );

    assert_eq!(
        snapshots.lowerdirs(&top.chain_id).unwrap(),
        vec![top.fs.clone(), mid.fs, base.fs]
    );
    assert_eq!(
        snapshots.get(&top.chain_id).unwrap().unwrap().chain_id,
        top.chain_id
    );
    assert_eq!(snapshots.list().unwrap().len(), 3);
    assert!(
        names(&ctx.join("snapshots-v1/tmp")).is_empty(),
        "scratch is cleaned up"
    );

    let meta: serde_json::Value =
        serde_json::from_slice(&fs::read(top.fs.parent().unwrap().join("meta.json")).unwrap())
            .unwrap();
    assert_eq!(meta["parent"], mid.chain_id.to_string());
    assert_eq!(meta["diffId"], top.diff_id.to_string());
}

#[test]
fn copy_mode_lowerdirs_is_one_tree() {
    let ctx = TestContext::new();
    let store = Store::open(ctx.path()).unwrap();
    let snapshots = store.snapshotter(SnapshotMode::Copy).unwrap();
    let base = commit(&snapshots, None, &[("a", "1")]);
    let top = commit(&snapshots, Some(&base.chain_id), &[("a", "1"), ("b", "2")]);
    assert_eq!(
        snapshots.lowerdirs(&top.chain_id).unwrap(),
        vec![top.fs.clone()]
    );
    assert!(top.fs.starts_with(ctx.join("snapshots-v1/copy")));
    // The other mode does not see it.
    let overlay = store.snapshotter(SnapshotMode::Overlay).unwrap();
    assert!(overlay.get(&top.chain_id).unwrap().is_none());
}

#[test]
fn missing_snapshots_and_parents_are_named() {
    let ctx = TestContext::new();
    let store = Store::open(ctx.path()).unwrap();
    let snapshots = store.snapshotter(SnapshotMode::Overlay).unwrap();
    let ghost = ChainId::base(&Digest::of(b"ghost"));
    let err = snapshots.lowerdirs(&ghost).unwrap_err();
    assert!(
        matches!(&err, CacheError::SnapshotNotFound(id) if *id == ghost),
        "{err:?}"
    );
    let (_scratch, dir) = tree(&snapshots, &[("x", "y")]);
    let err = snapshots
        .commit_dir(Some(&ghost), &Digest::of(b"x"), &dir)
        .unwrap_err();
    assert!(
        matches!(&err, CacheError::SnapshotNotFound(id) if *id == ghost),
        "{err:?}"
    );
    assert_eq!(err.to_string(), format!("snapshot {ghost} does not exist"));
}

#[test]
fn commit_from_another_filesystem_is_refused() {
    let ctx = TestContext::new();
    let store = Store::open(ctx.path()).unwrap();
    let snapshots = store.snapshotter(SnapshotMode::Overlay).unwrap();
    let shm = Path::new("/dev/shm");
    let dev = |p: &Path| std::os::unix::fs::MetadataExt::dev(&fs::metadata(p).unwrap());
    assert_ne!(
        dev(shm),
        dev(ctx.path()),
        "this test needs /dev/shm on a different filesystem than the temp dir"
    );
    let elsewhere = tempfile::tempdir_in(shm).unwrap();
    fs::write(elsewhere.path().join("f"), "x").unwrap();
    let err = snapshots
        .commit_dir(None, &Digest::of(b"f"), elsewhere.path())
        .unwrap_err();
    assert!(matches!(err, CacheError::CrossDevice { .. }), "{err:?}");
    assert!(
        elsewhere.path().join("f").exists(),
        "a refused directory is left alone"
    );
}

#[test]
fn concurrent_commits_of_one_snapshot_both_succeed() {
    const RACERS: usize = 4;
    let ctx = TestContext::new();
    Store::open(ctx.path()).unwrap();
    let start = Arc::new(Barrier::new(RACERS));
    let diff_id = Digest::of(b"same layer");
    let handles: Vec<_> = (0..RACERS)
        .map(|i| {
            let (root, start, diff_id) = (ctx.join("snapshots-v1"), start.clone(), diff_id.clone());
            std::thread::spawn(move || {
                let snapshots = Snapshotter::open(&root, SnapshotMode::Overlay).unwrap();
                let (_scratch, dir) =
                    tree(&snapshots, &[("file", "same"), ("racer", &i.to_string())]);
                start.wait();
                snapshots.commit_dir(None, &diff_id, &dir).unwrap()
            })
        })
        .collect();
    let infos: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(
        infos
            .iter()
            .all(|i| i.chain_id == infos[0].chain_id && i.fs == infos[0].fs)
    );
    assert_eq!(
        names(&ctx.join("snapshots-v1/overlay")),
        [ChainId::base(&diff_id).digest().hex()]
    );
    assert_eq!(
        fs::read_to_string(infos[0].fs.join("file")).unwrap(),
        "same"
    );
    assert!(names(&ctx.join("snapshots-v1/tmp")).is_empty());
}

/// Mounts an overlay of `lowers` (top first, read-only) at `target`; unmounts on drop.
struct OverlayMount {
    target: PathBuf,
}

impl OverlayMount {
    fn new(lowers: &[PathBuf], target: &Path) -> OverlayMount {
        let lowerdir = lowers
            .iter()
            .map(|p| p.to_str().unwrap())
            .collect::<Vec<_>>()
            .join(":");
        let status = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!("ro,lowerdir={lowerdir}"))
            .arg(target)
            .status()
            .expect("run mount (util-linux) to mount overlayfs; this test needs root");
        assert!(
            status.success(),
            "mount -t overlay failed: {status}; this test needs root and overlayfs"
        );
        OverlayMount {
            target: target.to_owned(),
        }
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        let status = Command::new("umount").arg(&self.target).status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "umount {} failed",
            self.target.display()
        );
    }
}

#[test]
fn overlay_mount_of_lowerdirs_honours_whiteouts() {
    let ctx = TestContext::new();
    let store = Store::open(ctx.path()).unwrap();
    let snapshots = store.snapshotter(SnapshotMode::Overlay).unwrap();
    let base = commit(
        &snapshots,
        None,
        &[
            ("keep", "base"),
            ("gone", "base"),
            ("dir/old", "base"),
            ("over", "base"),
        ],
    );

    // The top layer in overlay form: a 0/0 character device deletes `gone`, the opaque
    // xattr hides what `dir` held below, and `over` is replaced.
    let (_scratch, upper) = tree(&snapshots, &[("over", "top"), ("dir/new", "top")]);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        upper.join("gone"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    )
    .expect("mknod a whiteout (needs root)");
    rustix::fs::setxattr(
        upper.join("dir"),
        "trusted.overlay.opaque",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .expect("set trusted.overlay.opaque (needs root)");
    let top = snapshots
        .commit_dir(Some(&base.chain_id), &Digest::of(b"top layer"), &upper)
        .unwrap();

    let merged = ctx.join("merged");
    fs::create_dir(&merged).unwrap();
    let lowers = snapshots.lowerdirs(&top.chain_id).unwrap();
    let mount = OverlayMount::new(&lowers, &merged);
    let read = |name: &str| fs::read_to_string(merged.join(name)).ok();
    assert_eq!(read("keep").as_deref(), Some("base"));
    assert_eq!(read("over").as_deref(), Some("top"));
    assert_eq!(read("gone"), None, "the whiteout hides the lower file");
    assert_eq!(
        names(&merged.join("dir")),
        ["new"],
        "the opaque dir hides lower entries"
    );
    drop(mount);
    assert!(names(&merged).is_empty());
}

/// An uncompressed layer tar of `(path, contents)` entries; a path ending in `/` is a
/// directory.
fn layer_tar(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, text) in entries {
        let mut header = tar::Header::new_gnu();
        if path.ends_with('/') {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
        } else {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o644);
            header.set_size(text.len() as u64);
        }
        header.set_mtime(1_700_000_000);
        header.set_uid(0);
        header.set_gid(0);
        builder
            .append_data(&mut header, path, text.as_bytes())
            .unwrap();
    }
    builder.into_inner().unwrap()
}

/// Two layers in the content store: a base, and a top layer that deletes `gone`, makes
/// `dir` opaque and replaces `over`.
fn two_layers(store: &Store) -> Vec<LayerRef> {
    let base = layer_tar(&[
        ("keep", "base"),
        ("gone", "base"),
        ("dir/", ""),
        ("dir/old", "base"),
        ("over", "base"),
    ]);
    let top = layer_tar(&[
        (".wh.gone", ""),
        ("dir/", ""),
        ("dir/.wh..wh..opq", ""),
        ("dir/new", "top"),
        ("over", "top"),
    ]);
    [base, top]
        .iter()
        .map(|tar| LayerRef {
            blob: store.content().put(tar).unwrap(),
            diff_id: Digest::of(tar),
        })
        .collect()
}

#[test]
fn prepare_overlay_unpacks_each_layer_in_overlay_form() {
    let ctx = TestContext::new();
    let store = Store::open(ctx.path()).unwrap();
    let layers = two_layers(&store);
    let snapshots = store.snapshotter(SnapshotMode::Overlay).unwrap();
    let top = snapshots.prepare(store.content(), &layers).unwrap();
    let chain = ChainId::prefixes([&layers[0].diff_id, &layers[1].diff_id]);
    assert_eq!(top.chain_id, chain[1]);
    assert_eq!(top.parent.as_ref(), Some(&chain[0]));
    assert_eq!(top.diff_id, layers[1].diff_id);

    let whiteout = fs::symlink_metadata(top.fs.join("gone")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &whiteout.file_type()
    ));
    assert_eq!(std::os::unix::fs::MetadataExt::rdev(&whiteout), 0);
    let mut opaque = [0u8; 8];
    let n =
        rustix::fs::getxattr(top.fs.join("dir"), "trusted.overlay.opaque", &mut opaque).unwrap();
    assert_eq!(&opaque[..n], b"y");

    let lowers = snapshots.lowerdirs(&top.chain_id).unwrap();
    assert_eq!(lowers.len(), 2);
    let merged = ctx.join("merged");
    fs::create_dir(&merged).unwrap();
    let mount = OverlayMount::new(&lowers, &merged);
    let read = |name: &str| fs::read_to_string(merged.join(name)).ok();
    assert_eq!(read("keep").as_deref(), Some("base"));
    assert_eq!(read("over").as_deref(), Some("top"));
    assert_eq!(read("gone"), None);
    assert_eq!(names(&merged.join("dir")), ["new"]);
    drop(mount);

    // Preparing again, or a prefix, unpacks nothing new.
    assert_eq!(
        snapshots.prepare(store.content(), &layers).unwrap().fs,
        top.fs
    );
    assert_eq!(
        snapshots
            .prepare(store.content(), &layers[..1])
            .unwrap()
            .chain_id,
        chain[0]
    );
    assert_eq!(snapshots.list().unwrap().len(), 2);
    assert!(names(&ctx.join("snapshots-v1/tmp")).is_empty());
}

#[test]
fn prepare_copy_applies_the_whole_chain_into_one_tree() {
    let ctx = TestContext::new();
    let store = Store::open(ctx.path()).unwrap();
    let layers = two_layers(&store);
    let snapshots = store.snapshotter(SnapshotMode::Copy).unwrap();
    let top = snapshots.prepare(store.content(), &layers).unwrap();
    assert_eq!(
        snapshots.lowerdirs(&top.chain_id).unwrap(),
        vec![top.fs.clone()]
    );
    assert_eq!(names(&top.fs), ["dir", "keep", "over"]);
    assert_eq!(names(&top.fs.join("dir")), ["new"]);
    assert_eq!(fs::read_to_string(top.fs.join("over")).unwrap(), "top");
    assert_eq!(
        snapshots.list().unwrap().len(),
        1,
        "no per-prefix snapshots in copy mode"
    );
}

#[test]
fn prepare_refuses_a_layer_that_does_not_match_its_diff_id() {
    let ctx = TestContext::new();
    let store = Store::open(ctx.path()).unwrap();
    let mut layers = two_layers(&store);
    let promised = Digest::of(b"what the config says");
    layers[1].diff_id = promised.clone();
    let snapshots = store.snapshotter(SnapshotMode::Overlay).unwrap();
    let err = snapshots.prepare(store.content(), &layers).unwrap_err();
    match &err {
        CacheError::DiffIdMismatch {
            blob,
            expected,
            actual,
        } => {
            assert_eq!(blob, &layers[1].blob);
            assert_eq!(expected, &promised);
            assert_ne!(actual, &promised);
        }
        other => panic!("expected a diff ID mismatch, got {other:?}"),
    }
    assert_eq!(
        snapshots.list().unwrap().len(),
        1,
        "only the good base layer is committed"
    );
    assert!(names(&ctx.join("snapshots-v1/tmp")).is_empty());
}

#[test]
fn prepare_names_what_is_missing() {
    let ctx = TestContext::new();
    let store = Store::open(ctx.path()).unwrap();
    let snapshots = store.snapshotter(SnapshotMode::Overlay).unwrap();
    let absent = Digest::of(b"never stored");
    let err = snapshots
        .prepare(
            store.content(),
            &[LayerRef {
                blob: absent.clone(),
                diff_id: absent.clone(),
            }],
        )
        .unwrap_err();
    assert!(
        matches!(&err, CacheError::BlobNotFound(d) if *d == absent),
        "{err:?}"
    );
    let err = snapshots.prepare(store.content(), &[]).unwrap_err();
    assert!(matches!(err, CacheError::NoLayers), "{err:?}");

    let garbage = store.content().put(b"\x1f\x8bnot really gzip").unwrap();
    let err = snapshots
        .prepare(
            store.content(),
            &[LayerRef {
                blob: garbage.clone(),
                diff_id: absent,
            }],
        )
        .unwrap_err();
    assert!(
        matches!(&err, CacheError::Unpack { blob, .. } if *blob == garbage),
        "{err:?}"
    );
    assert!(err.to_string().contains(&garbage.to_string()), "{err}");
}

#[test]
fn concurrent_prepares_of_one_chain_all_succeed() {
    const RACERS: usize = 4;
    let ctx = TestContext::new();
    let store = Store::open(ctx.path()).unwrap();
    let layers = two_layers(&store);
    let start = Arc::new(Barrier::new(RACERS));
    let handles: Vec<_> = (0..RACERS)
        .map(|_| {
            let (root, start, layers) = (ctx.path().to_owned(), start.clone(), layers.clone());
            std::thread::spawn(move || {
                let store = Store::open(&root).unwrap();
                let snapshots = store.snapshotter(SnapshotMode::Overlay).unwrap();
                start.wait();
                snapshots.prepare(store.content(), &layers).unwrap()
            })
        })
        .collect();
    let infos: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(infos.iter().all(|i| *i.fs == *infos[0].fs));
    assert_eq!(names(&ctx.join("snapshots-v1/overlay")).len(), 2);
    assert!(names(&ctx.join("snapshots-v1/tmp")).is_empty());
    let merged = ctx.join("merged");
    fs::create_dir(&merged).unwrap();
    let lowers = store
        .snapshotter(SnapshotMode::Overlay)
        .unwrap()
        .lowerdirs(&infos[0].chain_id)
        .unwrap();
    let _mount = OverlayMount::new(&lowers, &merged);
    assert_eq!(names(&merged), ["dir", "keep", "over"]);
}

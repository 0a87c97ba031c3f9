//! Tree → layer → tree: the applied tree equals the source in every attribute a layer
//! carries (types, modes, owners, contents, link targets, hard links, xattrs, mtimes);
//! the same tree always gives the same digests; SOURCE_DATE_EPOCH clamps times.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use kiln_image::layer::{ApplyOptions, WriteOptions};
use kiln_image::media_type::Flavor;
use kiln_image::{Compression, Digest};
use proptest::prelude::*;

use crate::common::{TestContext, is_root, set_mtime, snapshot};

const ALL: [Compression; 3] = [Compression::None, Compression::Gzip, Compression::Zstd];

/// A tree with one of everything a layer can hold.
fn rich_tree(root: &Path) {
    let long_dir = root.join("d".repeat(120));
    fs::create_dir_all(long_dir.join("sub")).unwrap();
    fs::write(long_dir.join("sub").join("f".repeat(200)), b"long path").unwrap();
    fs::create_dir(root.join("bin")).unwrap();
    fs::write(root.join("bin/tool"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    let big: Vec<u8> = (0..3_500_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(root.join("big.bin"), &big).unwrap();
    fs::write(root.join("linked"), b"one inode, three names").unwrap();
    fs::hard_link(root.join("linked"), root.join("bin/linked2")).unwrap();
    fs::hard_link(root.join("linked"), root.join("zz-linked3")).unwrap();
    symlink("/usr/share/zoneinfo/UTC", root.join("localtime")).unwrap();
    symlink("t".repeat(150), root.join("long-target")).unwrap();
    symlink("../escape/attempt", root.join("bin/relative")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    fs::create_dir(root.join("private")).unwrap();
    fs::set_permissions(root.join("private"), fs::Permissions::from_mode(0o750)).unwrap();
    xattr::set(root.join("empty"), "user.kiln.note", b"value\0with nul").unwrap();
    if is_root() {
        let dev = |name: &str, ft, maj, min| {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                root.join(name),
                ft,
                rustix::fs::Mode::from_raw_mode(0o666),
                rustix::fs::makedev(maj, min),
            )
            .unwrap()
        };
        dev("null", rustix::fs::FileType::CharacterDevice, 1, 3);
        dev("loop0", rustix::fs::FileType::BlockDevice, 7, 0);
        std::os::unix::fs::lchown(root.join("bin/tool"), Some(1000), Some(2000)).unwrap();
        std::os::unix::fs::lchown(root.join("localtime"), Some(3_000_000), Some(3_000_001))
            .unwrap();
        std::os::unix::fs::chown(root.join("private"), Some(65534), Some(65534)).unwrap();
        // cap_net_bind_service=ep, version 2 capability blob.
        let cap: [u8; 20] = [0, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        xattr::set(root.join("bin/tool"), "security.capability", &cap).unwrap();
        // Restore set-uid, which chown cleared.
        fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    }
    let _ = std::os::unix::net::UnixListener::bind(root.join("socket")).unwrap();
    // Times last, children before parents, including pre-epoch and far-future ones.
    let mut paths: Vec<_> = walkdir::WalkDir::new(root)
        .min_depth(1)
        .contents_first(true)
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .collect();
    paths.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in paths.iter().enumerate() {
        set_mtime(p, 1_500_000_000 + i as i64 * 1000);
    }
    set_mtime(&root.join("empty"), -86_400);
    set_mtime(&root.join("big.bin"), 9_000_000_000);
}

#[test]
fn rich_tree_round_trips_with_every_compression() {
    let cx = TestContext::new();
    let src = cx.mkdir("src");
    rich_tree(&src);
    assert!(src.join("socket").exists());
    let expected = snapshot(&src);
    for compression in ALL {
        let (desc, blob) = cx.write(&src, &WriteOptions::default().with_compression(compression));
        assert_eq!(desc.compression, compression);
        assert_eq!(desc.size, blob.len() as u64);
        assert_eq!(desc.digest, Digest::of(&blob));
        let dst = cx.mkdir(&format!("dst-{compression}"));
        let applied = cx.apply(&blob, &dst, &ApplyOptions::default()).unwrap();
        assert_eq!(applied.compression, compression);
        assert_eq!(applied.diff_id, desc.diff_id, "{compression}");
        assert_eq!(applied.diff_size, desc.diff_size);
        let got = snapshot(&dst);
        for (path, node) in &expected {
            assert_eq!(
                got.get(path),
                Some(node),
                "{compression}: {}",
                path.display()
            );
        }
        assert_eq!(got.len(), expected.len(), "{compression}: extra files");
    }
}

#[test]
fn layers_are_readable_by_gnu_tar_and_standard_decompressors() {
    let cx = TestContext::new();
    let src = cx.mkdir("src");
    rich_tree(&src);
    for (compression, flag) in [
        (Compression::Gzip, "-z"),
        (Compression::Zstd, "--zstd"),
        (Compression::None, "-v"),
    ] {
        let (_, blob) = cx.write(&src, &WriteOptions::default().with_compression(compression));
        let file = cx.dir.path().join(format!("layer-{compression}"));
        fs::write(&file, &blob).unwrap();
        let out = std::process::Command::new("tar")
            .args(["-t", flag, "-f"])
            .arg(&file)
            .output()
            .expect("GNU tar is needed for this test (apt-get install tar)");
        assert!(
            out.status.success(),
            "{compression}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(
            listing.contains(&format!("{}/sub/{}", "d".repeat(120), "f".repeat(200))),
            "{listing}"
        );
        assert!(listing.lines().any(|l| l.ends_with("bin/")), "{listing}");
    }
}

#[test]
fn same_tree_gives_same_digests() {
    let cx = TestContext::new();
    let a = cx.mkdir("a");
    rich_tree(&a);
    // A copy made by applying: other inode numbers, other creation order.
    let b = cx.mkdir("b");
    let (_, blob) = cx.write(
        &a,
        &WriteOptions::default().with_compression(Compression::None),
    );
    cx.apply(&blob, &b, &ApplyOptions::default()).unwrap();
    fs::remove_file(a.join("socket")).unwrap();
    for compression in ALL {
        for level in [None, Some(1)] {
            let mut options = WriteOptions::default().with_compression(compression);
            if let Some(l) = level {
                options = options.with_level(l);
            }
            let (d1, b1) = cx.write(&a, &options);
            let (d2, _) = cx.write(&a, &options);
            let (d3, _) = cx.write(&b, &options);
            assert_eq!(d1, d2, "{compression} {level:?}");
            assert_eq!(d1, d3, "{compression} {level:?}: copy differs");
            assert_eq!(d1.digest, Digest::of(&b1));
        }
    }
}

#[test]
fn source_date_epoch_clamps_later_times_only() {
    let cx = TestContext::new();
    let src = cx.mkdir("src");
    fs::create_dir(src.join("dir")).unwrap();
    fs::write(src.join("dir/new"), b"n").unwrap();
    fs::write(src.join("old"), b"o").unwrap();
    symlink("old", src.join("link")).unwrap();
    set_mtime(&src.join("dir/new"), 2_000_000_000);
    set_mtime(&src.join("old"), 1_000_000_000);
    set_mtime(&src.join("link"), 1_900_000_000);
    set_mtime(&src.join("dir"), 1_800_000_000);
    let epoch = 1_700_000_000;
    let options = WriteOptions::default().with_source_date_epoch(epoch);
    let (desc, blob) = cx.write(&src, &options);

    let mut times = std::collections::BTreeMap::new();
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(&blob[..])
        .read_to_end(&mut tar_bytes)
        .unwrap();
    for e in tar::Archive::new(&tar_bytes[..]).entries().unwrap() {
        let e = e.unwrap();
        times.insert(
            e.path().unwrap().display().to_string(),
            e.header().mtime().unwrap(),
        );
    }
    assert_eq!(times["dir/new"], epoch as u64);
    assert_eq!(times["dir/"], epoch as u64);
    assert_eq!(times["link"], epoch as u64);
    assert_eq!(times["old"], 1_000_000_000);

    // Touching a file to a time after the epoch changes nothing in the layer.
    set_mtime(&src.join("dir/new"), 2_100_000_000);
    assert_eq!(cx.write(&src, &options).0, desc);
    let dst = cx.mkdir("dst");
    cx.apply(&blob, &dst, &ApplyOptions::default()).unwrap();
    assert_eq!(snapshot(&dst)[Path::new("dir/new")].mtime, epoch);
}

#[test]
fn descriptor_and_levels() {
    let cx = TestContext::new();
    let src = cx.mkdir("src");
    fs::write(src.join("f"), b"x".repeat(100_000)).unwrap();
    let (desc, _) = cx.write(
        &src,
        &WriteOptions::default()
            .with_compression(Compression::Zstd)
            .with_flavor(Flavor::Oci),
    );
    let d = desc.descriptor();
    assert_eq!(
        d.media_type().to_string(),
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    assert_eq!(d.size(), desc.size);
    assert_eq!(d.digest().to_string(), desc.digest.to_string());
    let (docker, _) = cx.write(&src, &WriteOptions::default().with_flavor(Flavor::Docker));
    assert_eq!(
        docker.media_type.to_string(),
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    let mut sink = Vec::new();
    let err =
        kiln_image::layer::write_layer(&src, &mut sink, &WriteOptions::default().with_level(12))
            .unwrap_err();
    assert_eq!(
        err.to_string(),
        "compression level 12 is not valid for gzip"
    );
    let (fast, _) = cx.write(&src, &WriteOptions::default().with_level(1));
    let (best, _) = cx.write(&src, &WriteOptions::default().with_level(9));
    assert_eq!(fast.diff_id, best.diff_id);
    assert_ne!(fast.digest, best.digest);
}

#[test]
fn reserved_names_and_missing_sources_are_errors() {
    let cx = TestContext::new();
    let src = cx.mkdir("src");
    fs::write(src.join(".wh.sneaky"), b"").unwrap();
    let mut sink = Vec::new();
    let err =
        kiln_image::layer::write_layer(&src, &mut sink, &WriteOptions::default()).unwrap_err();
    assert!(err.to_string().contains(".wh.sneaky"), "{err}");
    let err =
        kiln_image::layer::write_layer(&src.join("nope"), &mut sink, &WriteOptions::default())
            .unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

/// One generated file-system object.
#[derive(Debug, Clone)]
enum Gen {
    File { data: Vec<u8>, mode: u32 },
    Dir { mode: u32 },
    Symlink { target: String },
    HardLink { to: usize },
}

#[derive(Debug, Clone)]
struct GenEntry {
    path: Vec<String>,
    what: Gen,
    mtime: i64,
    owner: (u32, u32),
    xattr: Option<Vec<u8>>,
}

fn gen_entry() -> impl Strategy<Value = GenEntry> {
    let name = prop::sample::select(vec![
        "a",
        "b",
        "c",
        "dir",
        "x.txt",
        "long-name-0123456789",
        "ü",
        "sp ace",
    ]);
    let path =
        prop::collection::vec(name, 1..4).prop_map(|v| v.into_iter().map(String::from).collect());
    let what = prop_oneof![
        4 => (prop::collection::vec(any::<u8>(), 0..3000), prop::sample::select(vec![0o644, 0o755, 0o600, 0o4711, 0o000])).prop_map(|(data, mode)| Gen::File { data, mode }),
        2 => prop::sample::select(vec![0o755, 0o700, 0o1777]).prop_map(|mode| Gen::Dir { mode }),
        1 => "[a-z/.]{1,40}".prop_map(|target| Gen::Symlink { target }),
        1 => (0usize..16).prop_map(|to| Gen::HardLink { to }),
    ];
    (
        path,
        what,
        0i64..4_000_000_000,
        (0u32..3, 0u32..3),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
    )
        .prop_map(|(path, what, mtime, (u, g), xattr)| GenEntry {
            path,
            what,
            mtime,
            owner: (u * 1000, g * 1000),
            xattr,
        })
}

/// Builds the generated tree; entries that collide with earlier ones are dropped.
fn build(root: &Path, entries: &[GenEntry]) {
    let mut files = Vec::new();
    for e in entries {
        let parent = e.path[..e.path.len() - 1]
            .iter()
            .fold(root.to_owned(), |p, c| p.join(c));
        let path = parent.join(e.path.last().unwrap());
        if fs::create_dir_all(&parent).is_err() || fs::symlink_metadata(&path).is_ok() {
            continue;
        }
        let made = match &e.what {
            Gen::File { data, .. } => fs::write(&path, data).is_ok(),
            Gen::Dir { .. } => fs::create_dir(&path).is_ok(),
            Gen::Symlink { target } => symlink(target, &path).is_ok(),
            Gen::HardLink { to } => match files.get(*to % files.len().max(1)) {
                Some(first) => fs::hard_link(first, &path).is_ok(),
                None => false,
            },
        };
        if !made {
            continue;
        }
        if let Gen::File { .. } = e.what {
            files.push(path.clone());
        }
        if is_root() {
            std::os::unix::fs::lchown(&path, Some(e.owner.0), Some(e.owner.1)).unwrap();
        }
        match &e.what {
            Gen::File { mode, .. } | Gen::Dir { mode } => {
                fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).unwrap()
            }
            _ => {}
        }
        if let (Some(v), false) = (&e.xattr, matches!(e.what, Gen::Symlink { .. })) {
            xattr::set(&path, "user.gen", v).unwrap();
        }
    }
    // Times after all writes, deepest first, so parents keep theirs.
    let mut all: Vec<_> = walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .collect();
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in all.iter().enumerate() {
        set_mtime(p, entries[i % entries.len()].mtime);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_round_trip(entries in prop::collection::vec(gen_entry(), 1..24), pick in 0usize..3) {
        let cx = TestContext::new();
        let src = cx.mkdir("src");
        build(&src, &entries);
        let compression = ALL[pick];
        let (desc, blob) = cx.write(&src, &WriteOptions::default().with_compression(compression).with_level(1));
        let dst = cx.mkdir("dst");
        let applied = cx.apply(&blob, &dst, &ApplyOptions::default()).unwrap();
        prop_assert_eq!(applied.diff_id, desc.diff_id);
        prop_assert_eq!(snapshot(&dst), snapshot(&src));
    }
}

//! File actions on real directories, as root: copies (contents, metadata, links,
//! overwrites), destinations whose symlinks try to leave the root, archive extraction
//! and the small actions.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use kiln_executor::file::{
    self, Chmod, CopyEntry, CopyRequest, CopyStats, FileError, Owner, copy, is_archive, mkdir,
    mkfile, rm, unpack,
};
use rustix::fs::{AtFlags, CWD, Timespec, Timestamps};

/// A source directory and a destination root side by side in a temp dir.
struct Dirs {
    dir: tempfile::TempDir,
}

impl Dirs {
    fn new() -> Dirs {
        assert!(
            rustix::process::geteuid().is_root(),
            "the file action tests set owners and need root"
        );
        let dirs = Dirs {
            dir: tempfile::tempdir().unwrap(),
        };
        fs::create_dir(dirs.src()).unwrap();
        fs::create_dir(dirs.root()).unwrap();
        dirs
    }

    fn src(&self) -> PathBuf {
        self.dir.path().join("src")
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Writes a source file with `mode`.
    fn file(&self, rel: &str, data: &str, mode: u32) -> PathBuf {
        let path = self.src().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, data).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    /// Creates a source directory with `mode`.
    fn dir(&self, rel: &str, mode: u32) -> PathBuf {
        let path = self.src().join(rel);
        fs::create_dir_all(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn request(&self, dest: &str, entries: Vec<CopyEntry>) -> CopyRequest {
        CopyRequest {
            root: self.root(),
            dest: dest.to_owned(),
            entries,
            owner: None,
            chmod: None,
            create_parents: true,
        }
    }
}

fn entry(source: &Path, target: &str) -> CopyEntry {
    CopyEntry {
        source: source.to_owned(),
        target: PathBuf::from(target),
    }
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn owner(path: &Path) -> (u32, u32) {
    let meta = fs::symlink_metadata(path).unwrap();
    (meta.uid(), meta.gid())
}

fn set_times(path: &Path, atime: (i64, i64), mtime: (i64, i64)) {
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: atime.0,
            tv_nsec: atime.1 as _,
        },
        last_modification: Timespec {
            tv_sec: mtime.0,
            tv_nsec: mtime.1 as _,
        },
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

fn times(path: &Path) -> ((i64, i64), (i64, i64)) {
    let meta = fs::symlink_metadata(path).unwrap();
    (
        (meta.atime(), meta.atime_nsec()),
        (meta.mtime(), meta.mtime_nsec()),
    )
}

#[test]
fn a_file_goes_into_a_directory_created_with_its_parents() {
    let d = Dirs::new();
    let a = d.file("a.txt", "hello", 0o640);
    let stats = copy(&d.request("/app/conf", vec![entry(&a, "a.txt")])).unwrap();
    assert_eq!(
        stats,
        CopyStats {
            files: 1,
            bytes: 5,
            ..CopyStats::default()
        }
    );
    let root = d.root();
    assert_eq!(
        fs::read_to_string(root.join("app/conf/a.txt")).unwrap(),
        "hello"
    );
    assert_eq!(mode(&root.join("app/conf/a.txt")), 0o640);
    assert_eq!(mode(&root.join("app")), 0o755);
    assert_eq!(mode(&root.join("app/conf")), 0o755);
}

#[test]
fn a_file_goes_to_an_exact_path_and_parents_take_the_owner() {
    let d = Dirs::new();
    let tool = d.file("tool", "#!/bin/sh\n", 0o755);
    let mut req = d.request("/opt/bin/mytool", vec![entry(&tool, "")]);
    req.owner = Some(Owner {
        uid: 1000,
        gid: 1001,
    });
    copy(&req).unwrap();
    let root = d.root();
    assert_eq!(owner(&root.join("opt/bin/mytool")), (1000, 1001));
    assert_eq!(owner(&root.join("opt/bin")), (1000, 1001));
    assert_eq!(mode(&root.join("opt/bin/mytool")), 0o755);

    req.dest = "/missing/parent/file".to_owned();
    req.create_parents = false;
    let err = copy(&req).unwrap_err();
    assert!(
        matches!(err, FileError::ParentMissing { ref path } if path == "/missing/parent/file"),
        "{err}"
    );
}

#[test]
fn directory_contents_merge_with_existing_directories() {
    let d = Dirs::new();
    let top = d.dir("ctx", 0o750);
    let x = d.file("ctx/x", "x", 0o600);
    let sub = d.dir("ctx/sub", 0o705);
    let y = d.file("ctx/sub/y", "yy", 0o644);
    let keep = d.dir("ctx/keep", 0o711);
    let root = d.root();
    fs::create_dir_all(root.join("dst/keep")).unwrap();
    fs::set_permissions(root.join("dst"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(root.join("dst/old"), "old").unwrap();

    let entries = vec![
        entry(&top, ""),
        entry(&keep, "keep"),
        entry(&sub, "sub"),
        entry(&y, "sub/y"),
        entry(&x, "x"),
    ];
    let stats = copy(&d.request("/dst", entries)).unwrap();
    assert_eq!((stats.dirs, stats.files, stats.bytes), (3, 2, 3));
    // The destination existed: it keeps its own mode. Directories below take the
    // source's, whether created or existing.
    assert_eq!(mode(&root.join("dst")), 0o700);
    assert_eq!(mode(&root.join("dst/keep")), 0o711);
    assert_eq!(mode(&root.join("dst/sub")), 0o705);
    assert_eq!(fs::read_to_string(root.join("dst/sub/y")).unwrap(), "yy");
    assert_eq!(fs::read_to_string(root.join("dst/old")).unwrap(), "old");

    // Created, the destination takes the source directory's mode.
    copy(&d.request("/fresh", vec![entry(&top, "")])).unwrap();
    assert_eq!(mode(&root.join("fresh")), 0o750);
}

#[test]
fn symlinks_are_copied_as_symlinks() {
    let d = Dirs::new();
    let link = d.src().join("link");
    symlink("/does/not/exist", &link).unwrap();
    rustix::fs::chownat(
        CWD,
        &link,
        Some(rustix::fs::Uid::from_raw(7)),
        Some(rustix::fs::Gid::from_raw(8)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
    let stats = copy(&d.request("/d", vec![entry(&link, "l")])).unwrap();
    assert_eq!(stats.symlinks, 1);
    let copied = d.root().join("d/l");
    assert_eq!(
        fs::read_link(&copied).unwrap(),
        Path::new("/does/not/exist")
    );
    assert_eq!(owner(&copied), (7, 8));

    let mut req = d.request("/d", vec![entry(&link, "l")]);
    req.owner = Some(Owner { uid: 5, gid: 6 });
    copy(&req).unwrap();
    assert_eq!(owner(&copied), (5, 6));
}

#[test]
fn hard_links_within_a_request_are_kept() {
    let d = Dirs::new();
    let one = d.file("one", "same", 0o644);
    let two = d.src().join("two");
    fs::hard_link(&one, &two).unwrap();
    let other = d.file("other", "same", 0o644);
    let entries = vec![
        entry(&one, "a/one"),
        entry(&two, "b/two"),
        entry(&other, "other"),
    ];
    let stats = copy(&d.request("/l", entries)).unwrap();
    assert_eq!((stats.files, stats.hard_links), (2, 1));
    let root = d.root();
    let ino = |p: &str| fs::metadata(root.join(p)).unwrap().ino();
    assert_eq!(ino("l/a/one"), ino("l/b/two"));
    assert_ne!(ino("l/a/one"), ino("l/other"));
    assert_eq!(fs::metadata(root.join("l/a/one")).unwrap().nlink(), 2);
}

#[test]
fn modes_owners_and_chmod_apply_to_files_and_directories() {
    let d = Dirs::new();
    let dir = d.dir("dir", 0o700);
    let plain = d.file("dir/plain", "", 0o640);
    let exec = d.file("dir/exec", "", 0o700);
    let setuid = d.file("dir/setuid", "", 0o4755);
    let sticky = d.dir("dir/sticky", 0o1777);
    let entries = vec![
        entry(&dir, ""),
        entry(&plain, "plain"),
        entry(&exec, "exec"),
        entry(&setuid, "setuid"),
        entry(&sticky, "sticky"),
    ];
    let root = d.root();

    copy(&d.request("/keep", entries.clone())).unwrap();
    assert_eq!(mode(&root.join("keep/setuid")), 0o4755);
    assert_eq!(mode(&root.join("keep/sticky")), 0o1777);
    assert_eq!(owner(&root.join("keep/plain")), (0, 0));

    let cases: &[(&str, &str, [u32; 5])] = &[
        // dest, chmod: modes of dir, plain, exec, setuid, sticky
        ("/octal", "751", [0o751, 0o751, 0o751, 0o4751, 0o1751]),
        ("/sym", "a+X", [0o711, 0o640, 0o711, 0o4755, 0o1777]),
        (
            "/sym2",
            "u=rw,go-rwx,u+X",
            [0o700, 0o600, 0o600, 0o600, 0o1700],
        ),
        ("/sym3", "g+w,o=", [0o720, 0o660, 0o720, 0o4770, 0o770]),
    ];
    for (dest, spec, want) in cases {
        let mut req = d.request(dest, entries.clone());
        req.chmod = Some(spec.parse::<Chmod>().unwrap());
        req.owner = Some(Owner {
            uid: 1000,
            gid: 1000,
        });
        copy(&req).unwrap();
        let base = root.join(&dest[1..]);
        let got = ["", "plain", "exec", "setuid", "sticky"].map(|p| mode(&base.join(p)));
        assert_eq!(
            got,
            *want,
            "{spec}: got {:?}",
            got.map(|m| format!("{m:o}"))
        );
        for p in ["", "plain", "sticky"] {
            assert_eq!(owner(&base.join(p)), (1000, 1000), "{spec} {p}");
        }
    }
}

#[test]
fn access_and_modification_times_are_kept() {
    let d = Dirs::new();
    let dir = d.dir("dir", 0o755);
    let file = d.file("dir/f", "data", 0o644);
    let link = d.src().join("dir/l");
    symlink("f", &link).unwrap();
    set_times(&file, (1_000_000_000, 123), (1_100_000_000, 456_789));
    set_times(&link, (1_200_000_000, 1), (1_300_000_000, 2));
    set_times(&dir, (900_000_000, 5), (950_000_000, 6));
    let entries = vec![
        entry(&dir, "dir"),
        entry(&file, "dir/f"),
        entry(&link, "dir/l"),
    ];
    copy(&d.request("/t", entries)).unwrap();
    let root = d.root();
    assert_eq!(
        times(&root.join("t/dir/f")),
        ((1_000_000_000, 123), (1_100_000_000, 456_789))
    );
    assert_eq!(
        times(&root.join("t/dir/l")),
        ((1_200_000_000, 1), (1_300_000_000, 2))
    );
    // Set after the directory's contents were written into it.
    assert_eq!(
        times(&root.join("t/dir")),
        ((900_000_000, 5), (950_000_000, 6))
    );
}

#[test]
fn xattrs_are_copied_except_overlay_ones() {
    let d = Dirs::new();
    let file = d.file("f", "x", 0o644);
    xattr::set(&file, "user.kiln.test", b"value").expect(
        "setting user xattrs needs a filesystem that supports them (ext4, xfs, tmpfs >= 6.6)",
    );
    let dir = d.dir("d", 0o755);
    xattr::set(&dir, "trusted.overlay.opaque", b"y").unwrap();
    xattr::set(&dir, "user.kiln.dir", b"d").unwrap();
    copy(&d.request("/x", vec![entry(&file, "f"), entry(&dir, "d")])).unwrap();
    let root = d.root();
    assert_eq!(
        xattr::get(root.join("x/f"), "user.kiln.test")
            .unwrap()
            .as_deref(),
        Some(&b"value"[..])
    );
    assert_eq!(
        xattr::get(root.join("x/d"), "user.kiln.dir")
            .unwrap()
            .as_deref(),
        Some(&b"d"[..])
    );
    assert_eq!(
        xattr::get(root.join("x/d"), "trusted.overlay.opaque").unwrap(),
        None
    );
}

#[test]
fn existing_files_and_symlinks_are_replaced_not_followed() {
    let d = Dirs::new();
    let new = d.file("new", "new", 0o600);
    let root = d.root();
    fs::create_dir(root.join("w")).unwrap();
    fs::write(root.join("w/file"), "old old old").unwrap();
    fs::set_permissions(root.join("w/file"), fs::Permissions::from_mode(0o777)).unwrap();
    fs::write(root.join("precious"), "precious").unwrap();
    symlink("/precious", root.join("w/link")).unwrap();

    copy(&d.request("/w", vec![entry(&new, "file"), entry(&new, "link")])).unwrap();
    assert_eq!(fs::read_to_string(root.join("w/file")).unwrap(), "new");
    assert_eq!(mode(&root.join("w/file")), 0o600);
    assert!(fs::symlink_metadata(root.join("w/link")).unwrap().is_file());
    assert_eq!(
        fs::read_to_string(root.join("precious")).unwrap(),
        "precious"
    );
}

#[test]
fn a_directory_in_the_way_of_a_file_is_an_error_naming_both() {
    let d = Dirs::new();
    let a = d.file("a.txt", "a", 0o644);
    fs::create_dir_all(d.root().join("app/a.txt")).unwrap();
    let err = copy(&d.request("/app", vec![entry(&a, "a.txt")])).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, FileError::DirectoryInTheWay { .. }), "{text}");
    assert!(
        text.contains("src/a.txt") && text.contains("\"/app/a.txt\""),
        "{text}"
    );

    // And a file where a directory entry goes.
    let dir = d.dir("dir", 0o755);
    fs::write(d.root().join("app/dir"), "").unwrap();
    let err = copy(&d.request("/app", vec![entry(&dir, "dir")])).unwrap_err();
    assert!(
        matches!(err, FileError::NotADirectory { ref path } if path == "/app/dir"),
        "{err}"
    );
}

#[test]
fn bad_targets_and_sources_are_errors() {
    let d = Dirs::new();
    let a = d.file("a", "a", 0o644);
    for target in ["../a", "/abs", "x/../../a"] {
        let err = copy(&d.request("/d", vec![entry(&a, target)])).unwrap_err();
        assert!(
            matches!(err, FileError::InvalidTarget { .. }),
            "{target}: {err}"
        );
    }
    let missing = d.src().join("missing");
    let err = copy(&d.request("/d", vec![entry(&missing, "m")])).unwrap_err();
    assert!(
        matches!(err, FileError::Source { ref path, .. } if *path == missing),
        "{err}"
    );
    // Nothing was done for a request with a bad target.
    assert!(!d.root().join("d").exists());

    let socket = d.src().join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let err = copy(&d.request("/d", vec![entry(&socket, "s")])).unwrap_err();
    assert!(
        matches!(err, FileError::UnsupportedSource { ref path } if *path == socket),
        "{err}"
    );
}

#[test]
fn fifos_and_device_nodes_are_recreated() {
    let d = Dirs::new();
    let fifo = d.src().join("fifo");
    let null = d.src().join("null");
    let dev = rustix::fs::makedev(1, 3);
    rustix::fs::mknodat(
        CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    rustix::fs::mknodat(
        CWD,
        &null,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        dev,
    )
    .unwrap();
    let stats = copy(&d.request("/dev", vec![entry(&fifo, "fifo"), entry(&null, "null")])).unwrap();
    assert_eq!(stats.special, 2);
    let root = d.root();
    let fifo_meta = fs::symlink_metadata(root.join("dev/fifo")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(
        &fifo_meta.file_type()
    ));
    assert_eq!(mode(&root.join("dev/fifo")), 0o640);
    let null_meta = fs::symlink_metadata(root.join("dev/null")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &null_meta.file_type()
    ));
    assert_eq!(null_meta.rdev(), dev);
}

#[test]
fn destination_symlinks_never_lead_outside_the_root() {
    let d = Dirs::new();
    let a = d.file("a", "inside", 0o644);
    let root = d.root();
    let outside = d.dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    symlink("/", root.join("etc")).unwrap();
    symlink("../../../../..", root.join("up")).unwrap();
    symlink(&outside, root.join("abs")).unwrap();
    fs::create_dir(root.join("sub")).unwrap();
    symlink("../../outside", root.join("sub/rel")).unwrap();
    let name = format!("kiln-escape-{}", std::process::id());

    for dest in ["/etc", "/up", "/abs", "/sub/rel", "/up/etc/../abs"] {
        copy(&d.request(dest, vec![entry(&a, &name)])).unwrap();
        copy(&d.request(&format!("{dest}/exact-{name}"), vec![entry(&a, "")])).unwrap();
    }
    assert!(root.join(&name).is_file());
    assert!(root.join(format!("exact-{name}")).is_file());
    assert!(
        root.join(outside.strip_prefix("/").unwrap())
            .join(&name)
            .is_file()
    );
    assert!(root.join("outside").join(&name).is_file());
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    assert!(!Path::new("/").join(&name).exists());
    assert!(!d.dir.path().join(&name).exists());

    // Directories an entry needs are created inside too.
    copy(&d.request("/up/deep", vec![entry(&a, "er/f")])).unwrap();
    assert!(root.join("deep/er/f").is_file());
    assert_eq!(
        file::resolve_in_root(&root, "/sub/rel/x").unwrap(),
        root.join("outside/x")
    );
}

/// Builds a tar: a directory, a file owned by 1234:5678, a symlink and a hard link.
fn sample_tar() -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, mode: u32, data: &[u8], link: Option<&str>| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(1234);
        h.set_gid(5678);
        h.set_mtime(1_500_000_000);
        h.set_size(data.len() as u64);
        if let Some(link) = link {
            h.set_link_name(link).unwrap();
        }
        tar.append_data(&mut h, path, data).unwrap();
    };
    add("pkg/", tar::EntryType::Directory, 0o750, b"", None);
    add("pkg/bin/", tar::EntryType::Directory, 0o755, b"", None);
    add(
        "pkg/bin/run",
        tar::EntryType::Regular,
        0o755,
        b"#!/bin/sh\n",
        None,
    );
    add(
        "pkg/README",
        tar::EntryType::Regular,
        0o644,
        b"readme",
        None,
    );
    add(
        "pkg/latest",
        tar::EntryType::Symlink,
        0o777,
        b"",
        Some("bin/run"),
    );
    add(
        "pkg/again",
        tar::EntryType::Link,
        0o644,
        b"",
        Some("pkg/README"),
    );
    tar.into_inner().unwrap()
}

fn compressed(kind: &str, tar: &[u8]) -> Vec<u8> {
    match kind {
        "tar" => tar.to_vec(),
        "tar.gz" => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(tar).unwrap();
            gz.finish().unwrap()
        }
        "tar.bz2" => {
            let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            bz.write_all(tar).unwrap();
            bz.finish().unwrap()
        }
        "tar.xz" => {
            let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
            xz.write_all(tar).unwrap();
            xz.finish().unwrap()
        }
        other => panic!("no compression {other}"),
    }
}

#[test]
fn archives_are_recognised_by_their_contents() {
    let d = Dirs::new();
    let tar = sample_tar();
    for kind in ["tar", "tar.gz", "tar.bz2", "tar.xz"] {
        let path = d.src().join("archive.bin");
        fs::write(&path, compressed(kind, &tar)).unwrap();
        assert!(is_archive(&path).unwrap(), "{kind}");
    }
    let text = d.file("notes.tar.gz", "just text, not a tar at all", 0o644);
    assert!(!is_archive(&text).unwrap());
    let gz_text = d.src().join("text.gz");
    fs::write(&gz_text, compressed("tar.gz", &[b'x'; 600])).unwrap();
    assert!(!is_archive(&gz_text).unwrap());
    let corrupt = d.src().join("corrupt.xz");
    fs::write(&corrupt, [0xfd, b'7', b'z', b'X', b'Z', 0, 1, 2, 3]).unwrap();
    assert!(!is_archive(&corrupt).unwrap());
    let err = is_archive(&d.src().join("missing")).unwrap_err();
    assert!(matches!(err, FileError::ReadArchive { .. }), "{err}");
}

#[test]
fn archives_unpack_in_every_compression() {
    let tar = sample_tar();
    for kind in ["tar", "tar.gz", "tar.bz2", "tar.xz"] {
        let d = Dirs::new();
        let archive = d.src().join(format!("a.{kind}"));
        fs::write(&archive, compressed(kind, &tar)).unwrap();
        let root = d.root();
        fs::create_dir_all(root.join("opt/pkg")).unwrap();
        fs::write(root.join("opt/pkg/README"), "old readme").unwrap();
        fs::write(root.join("opt/pkg/other"), "untouched").unwrap();

        let stats = unpack(&root, "/opt", &archive, None).unwrap();
        assert_eq!(
            (stats.files, stats.hard_links, stats.symlinks),
            (2, 1, 1),
            "{kind}"
        );
        let pkg = root.join("opt/pkg");
        assert_eq!(
            fs::read_to_string(pkg.join("README")).unwrap(),
            "readme",
            "{kind}"
        );
        assert_eq!(fs::read_to_string(pkg.join("other")).unwrap(), "untouched");
        assert_eq!(mode(&pkg), 0o750, "{kind}");
        assert_eq!(mode(&pkg.join("bin/run")), 0o755);
        assert_eq!(owner(&pkg.join("bin/run")), (1234, 5678));
        assert_eq!(
            fs::read_link(pkg.join("latest")).unwrap(),
            Path::new("bin/run")
        );
        assert_eq!(
            fs::metadata(pkg.join("again")).unwrap().ino(),
            fs::metadata(pkg.join("README")).unwrap().ino()
        );
        assert_eq!(
            fs::metadata(pkg.join("README")).unwrap().mtime(),
            1_500_000_000
        );
        // The scratch directory is gone.
        let names: Vec<_> = fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["opt"], "{kind}");

        let owned = unpack(&root, "/owned", &archive, Some(Owner { uid: 1, gid: 2 })).unwrap();
        assert_eq!(owned.files, 2);
        assert_eq!(owner(&root.join("owned/pkg/bin/run")), (1, 2));
        assert_eq!(owner(&root.join("owned/pkg/latest")), (1, 2));
    }
}

#[test]
fn archive_directories_merge_through_directory_symlinks_in_the_root() {
    let d = Dirs::new();
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(3);
    tar.append_data(&mut h, "lib/libx.so", &b"elf"[..]).unwrap();
    let archive = d.src().join("lib.tar");
    fs::write(&archive, tar.into_inner().unwrap()).unwrap();
    let root = d.root();
    fs::create_dir_all(root.join("usr/lib")).unwrap();
    symlink("usr/lib", root.join("lib")).unwrap();
    unpack(&root, "/", &archive, None).unwrap();
    assert_eq!(
        fs::read_to_string(root.join("usr/lib/libx.so")).unwrap(),
        "elf"
    );
    assert!(fs::symlink_metadata(root.join("lib")).unwrap().is_symlink());
}

/// A tar with one entry whose name is written as is, bypassing the tar crate's checks.
fn raw_tar(entries: &[(&[u8], tar::EntryType, &[u8])]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, kind, link) in entries {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_size(if *kind == tar::EntryType::Regular {
            4
        } else {
            0
        });
        h.set_cksum();
        let data: &[u8] = if *kind == tar::EntryType::Regular {
            b"evil"
        } else {
            b""
        };
        tar.append(&h, data).unwrap();
    }
    tar.into_inner().unwrap()
}

#[test]
fn hostile_archives_are_refused_naming_the_entry() {
    use tar::EntryType::{Link, Regular, Symlink};
    let cases: &[(&str, Vec<u8>, &str)] = &[
        (
            "dotdot",
            raw_tar(&[(b"../../evil", Regular, b"")]),
            "../../evil",
        ),
        ("absolute", raw_tar(&[(b"/evil", Regular, b"")]), "/evil"),
        (
            "through a symlink",
            raw_tar(&[(b"esc", Symlink, b"/"), (b"esc/evil", Regular, b"")]),
            "esc/evil",
        ),
        (
            "through a relative symlink",
            raw_tar(&[(b"up", Symlink, b"../../.."), (b"up/evil", Regular, b"")]),
            "up/evil",
        ),
        (
            "hard link outside",
            raw_tar(&[(b"hl", Link, b"../../../etc/passwd")]),
            "hl",
        ),
    ];
    for (what, bytes, entry_name) in cases {
        let d = Dirs::new();
        let archive = d.src().join("evil.tar");
        fs::write(&archive, bytes).unwrap();
        assert!(is_archive(&archive).unwrap(), "{what}");
        let err = unpack(&d.root(), "/x/y", &archive, None).unwrap_err();
        let chain = {
            let mut text = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        };
        assert!(matches!(err, FileError::Unpack { .. }), "{what}: {chain}");
        assert!(
            chain.contains(&format!("{entry_name:?}")),
            "{what}: {chain}"
        );
        assert!(!d.dir.path().join("evil").exists(), "{what}");
        assert!(!d.root().join("x/evil").exists(), "{what}");
        assert!(!Path::new("/evil").exists(), "{what}");
    }
}

#[test]
fn mkdir_mkfile_and_rm() {
    let d = Dirs::new();
    let root = d.root();
    let app = Some(Owner { uid: 100, gid: 101 });
    mkdir(&root, "/work/dir", 0o750, true, app).unwrap();
    assert_eq!(mode(&root.join("work")), 0o750);
    assert_eq!(owner(&root.join("work/dir")), (100, 101));
    // Existing: left as it is.
    mkdir(&root, "/work", 0o700, false, None).unwrap();
    assert_eq!(mode(&root.join("work")), 0o750);
    let err = mkdir(&root, "/no/parent", 0o755, false, None).unwrap_err();
    assert!(matches!(err, FileError::ParentMissing { .. }), "{err}");

    symlink("/work", root.join("wl")).unwrap();
    mkfile(&root, "/wl/dir/hello.sh", b"echo hi\n", 0o755, app).unwrap();
    let script = root.join("work/dir/hello.sh");
    assert_eq!(fs::read(&script).unwrap(), b"echo hi\n");
    assert_eq!((mode(&script), owner(&script)), (0o755, (100, 101)));
    mkfile(&root, "/work/dir/hello.sh", b"x", 0o600, None).unwrap();
    assert_eq!(fs::read(&script).unwrap(), b"x");
    assert_eq!(mode(&script), 0o600);
    let err = mkfile(&root, "/work", b"x", 0o644, None).unwrap_err();
    assert!(matches!(err, FileError::IsADirectory { .. }), "{err}");
    let err = mkfile(&root, "/nowhere/f", b"x", 0o644, None).unwrap_err();
    assert!(matches!(err, FileError::ParentMissing { .. }), "{err}");

    // rm removes the symlink, not what it points to.
    rm(&root, "/wl", false).unwrap();
    assert!(!root.join("wl").exists() && root.join("work/dir/hello.sh").exists());
    rm(&root, "/work", false).unwrap();
    assert!(!root.join("work").exists());
    rm(&root, "/work", true).unwrap();
    let err = rm(&root, "/work", false).unwrap_err();
    assert!(matches!(err, FileError::NotFound { .. }), "{err}");
    assert!(matches!(
        rm(&root, "/", false).unwrap_err(),
        FileError::RemoveRoot
    ));
    assert!(matches!(
        rm(&root, "/..", false).unwrap_err(),
        FileError::RemoveRoot
    ));
    assert!(root.is_dir());
}

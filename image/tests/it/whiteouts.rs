//! Whiteouts: an overlayfs upper dir written as a layer and applied over its lower dir
//! gives what the overlay mount showed; applied in overlay form it mounts to the same
//! view; OCI whiteout entries delete and hide as the image spec says.

use std::fs;
use std::path::Path;
use std::process::Command;

use kiln_image::layer::{ApplyOptions, Source, WhiteoutMode, WriteOptions};

use crate::common::{RawTar, TestContext, is_root, snapshot};

fn require_root() {
    assert!(
        is_root(),
        "this test needs root (overlayfs mounts, 0/0 character devices, trusted.* xattrs)"
    );
}

fn mount_overlay(lower: &str, upper: Option<(&Path, &Path)>, merged: &Path) {
    let mut opts = format!("lowerdir={lower}");
    if let Some((upper, work)) = upper {
        opts += &format!(",upperdir={},workdir={}", upper.display(), work.display());
    }
    let out = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(merged)
        .output()
        .expect("mount(8) is needed for overlay tests");
    assert!(
        out.status.success(),
        "overlay mount failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn umount(path: &Path) {
    let st = Command::new("umount").arg(path).status().unwrap();
    assert!(st.success());
}

fn lower_tree(root: &Path) {
    fs::create_dir_all(root.join("opaque/sub")).unwrap();
    fs::create_dir_all(root.join("dir")).unwrap();
    fs::write(root.join("gone"), b"deleted above").unwrap();
    fs::write(root.join("keep"), b"kept").unwrap();
    fs::write(root.join("opaque/old"), b"hidden").unwrap();
    fs::write(root.join("opaque/sub/old2"), b"hidden").unwrap();
    fs::write(root.join("dir/x"), b"x").unwrap();
    fs::write(root.join("dir/gone-too"), b"y").unwrap();
}

#[test]
fn overlay_upper_dir_round_trips_to_the_merged_view() {
    require_root();
    let cx = TestContext::new();
    let lower = cx.mkdir("lower");
    lower_tree(&lower);
    let (upper, work, merged) = (cx.mkdir("upper"), cx.mkdir("work"), cx.mkdir("merged"));
    mount_overlay(lower.to_str().unwrap(), Some((&upper, &work)), &merged);
    let changes = (|| -> std::io::Result<()> {
        fs::remove_file(merged.join("gone"))?;
        fs::remove_file(merged.join("dir/gone-too"))?;
        fs::remove_dir_all(merged.join("opaque"))?;
        fs::create_dir(merged.join("opaque"))?;
        fs::write(merged.join("opaque/new"), b"new")?;
        fs::write(merged.join("added"), b"added")?;
        fs::write(merged.join("keep"), b"changed")?;
        Ok(())
    })();
    let expected = snapshot(&merged);
    umount(&merged);
    changes.unwrap();
    // The upper dir really holds overlay's spelling.
    let gone = fs::symlink_metadata(upper.join("gone")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &gone.file_type()
    ));
    assert_eq!(
        xattr::get(upper.join("opaque"), "trusted.overlay.opaque")
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );

    let (_, base) = cx.write(&lower, &WriteOptions::default());
    let (_, diff) = cx.write(
        &upper,
        &WriteOptions::default().with_source(Source::OverlayUpper),
    );
    let listing = list(&diff);
    for name in [".wh.gone", "dir/.wh.gone-too", "opaque/.wh..wh..opq"] {
        assert!(
            listing.iter().any(|l| l == name),
            "{name} missing from {listing:?}"
        );
    }
    assert!(!listing.iter().any(|l| l == "gone"), "{listing:?}");

    // Unpacked into one directory, whiteouts delete.
    let flat = cx.mkdir("flat");
    cx.apply(&base, &flat, &ApplyOptions::default()).unwrap();
    cx.apply(&diff, &flat, &ApplyOptions::default()).unwrap();
    assert_eq!(snapshot(&flat), expected);

    // Unpacked per layer in overlay form, the layers mount to the same view.
    let (l0, l1, view) = (cx.mkdir("l0"), cx.mkdir("l1"), cx.mkdir("view"));
    let overlay = ApplyOptions::default().with_whiteouts(WhiteoutMode::Overlay);
    cx.apply(&base, &l0, &overlay).unwrap();
    cx.apply(&diff, &l1, &overlay).unwrap();
    assert_eq!(
        xattr::get(l1.join("opaque"), "trusted.overlay.opaque")
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
    mount_overlay(&format!("{}:{}", l1.display(), l0.display()), None, &view);
    let got = snapshot(&view);
    umount(&view);
    assert_eq!(got, expected);
}

#[test]
fn oci_whiteouts_delete_and_hide() {
    let cx = TestContext::new();
    let target = cx.mkdir("t");
    lower_tree(&target);
    let tar = RawTar::new()
        .file(".wh.gone", b"")
        .dir("opaque/")
        .file("opaque/early", b"written before the marker")
        .file("opaque/.wh..wh..opq", b"")
        .file("opaque/late", b"written after")
        .file("dir/.wh.gone-too", b"")
        .file("dir/.wh.never-existed", b"")
        .file("nowhere/.wh.x", b"")
        .file(".wh..wh.plnk", b"")
        .finish();
    cx.apply(&tar, &target, &ApplyOptions::default()).unwrap();
    let mut names: Vec<String> = snapshot(&target)
        .keys()
        .map(|p| p.display().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        // "nowhere" is not created: a whiteout with nothing below it hides nothing.
        [
            "dir",
            "dir/x",
            "keep",
            "opaque",
            "opaque/early",
            "opaque/late"
        ]
    );
}

fn list(blob: &[u8]) -> Vec<String> {
    let mut tar = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(blob), &mut tar).unwrap();
    tar::Archive::new(&tar[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect()
}

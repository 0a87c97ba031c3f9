//! Any bytes, as a layer (plain, gzip or zstd tar), applied onto a directory that holds
//! symlinks pointing out of it: applying never panics, and nothing outside the target
//! changes, or is linked to, whatever the layer says.
//!
//! The first byte picks the options: bit 0 writes whiteouts in overlay form, bit 1
//! restores owners, bit 2 recomputes the header checksums of the tar that follows (so
//! that mutations reach the applier instead of stopping at the checksum). Layers that
//! decompress to more than [`UNPACKED_MAX`] are skipped: a few bytes of zstd can stand
//! for gigabytes, which would only slow the fuzzer down and fill the disk.
#![no_main]

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kiln_image::Compression;
use kiln_image::layer::{ApplyOptions, WhiteoutMode, apply_layer};
use libfuzzer_sys::fuzz_target;

const SENTINEL: &[u8] = b"outside the target: never read, never written";

/// The most bytes a layer may decompress to here.
const UNPACKED_MAX: u64 = 1 << 20;

fn unpacked_size(layer: &[u8]) -> u64 {
    match Compression::decompress(layer) {
        Ok((_, reader)) => {
            io::copy(&mut reader.take(UNPACKED_MAX + 1), &mut io::sink()).unwrap_or(0)
        }
        Err(_) => 0,
    }
}

/// `<tmp>/sandbox/{target,outside/sentinel}`, made once per process.
struct Sandbox {
    root: PathBuf,
    target: PathBuf,
    outside: PathBuf,
    sentinel: fs::Metadata,
}

fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("kiln-fuzz-apply-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let outside = root.join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("sentinel"), SENTINEL).unwrap();
        let sentinel = fs::symlink_metadata(outside.join("sentinel")).unwrap();
        Sandbox {
            target: root.join("target"),
            root,
            outside,
            sentinel,
        }
    })
}

/// A fresh target: a file, a directory, and links leading out of the target.
fn reset(s: &Sandbox) {
    if s.target.exists() {
        fs::remove_dir_all(&s.target).unwrap();
    }
    fs::create_dir(&s.target).unwrap();
    fs::write(s.target.join("lower"), b"lower").unwrap();
    fs::create_dir(s.target.join("d")).unwrap();
    symlink("..", s.target.join("up")).unwrap();
    symlink("../outside", s.target.join("out")).unwrap();
    symlink(&s.outside, s.target.join("abs")).unwrap();
    symlink("../outside/sentinel", s.target.join("d/sentinel")).unwrap();
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn check_outside(s: &Sandbox) {
    assert_eq!(
        names(&s.root),
        ["outside", "target"],
        "something escaped the target"
    );
    assert_eq!(
        names(&s.outside),
        ["sentinel"],
        "something was written outside"
    );
    let path = s.outside.join("sentinel");
    assert_eq!(
        fs::read(&path).unwrap(),
        SENTINEL,
        "the sentinel was changed"
    );
    let now = fs::symlink_metadata(&path).unwrap();
    let before = &s.sentinel;
    assert_eq!(now.nlink(), 1, "the sentinel was hard-linked");
    assert_eq!(
        (
            now.ino(),
            now.mode(),
            now.uid(),
            now.gid(),
            now.mtime(),
            now.mtime_nsec()
        ),
        (
            before.ino(),
            before.mode(),
            before.uid(),
            before.gid(),
            before.mtime(),
            before.mtime_nsec()
        ),
        "the sentinel's metadata changed"
    );
    assert!(
        fs::symlink_metadata(s.root.parent().unwrap().join("escape")).is_err(),
        "a file escaped the sandbox"
    );
}

/// Recomputes the checksum of every header a tar reader would visit.
fn fix_checksums(tar: &mut [u8]) {
    let mut at = 0;
    while at + 512 <= tar.len() {
        let block = &mut tar[at..at + 512];
        if block.iter().all(|&b| b == 0) {
            break;
        }
        let size = std::str::from_utf8(&block[124..136])
            .ok()
            .and_then(|s| u64::from_str_radix(s.trim_matches(|c| c == '\0' || c == ' '), 8).ok())
            .unwrap_or(0);
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let data = size.div_ceil(512).saturating_mul(512);
        at = match usize::try_from(data)
            .ok()
            .and_then(|d| (at + 512).checked_add(d))
        {
            Some(next) => next,
            None => break,
        };
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, layer)) = data.split_first() else {
        return;
    };
    if unpacked_size(layer) > UNPACKED_MAX {
        return;
    }
    let s = sandbox();
    reset(s);
    let options = ApplyOptions::default()
        .with_whiteouts(if flags & 1 != 0 {
            WhiteoutMode::Overlay
        } else {
            WhiteoutMode::Remove
        })
        .with_same_owner(flags & 2 != 0);
    let mut layer = layer.to_vec();
    if flags & 4 != 0 {
        fix_checksums(&mut layer);
    }
    let _ = apply_layer(&layer[..], &s.target, &options);
    check_outside(s);
});

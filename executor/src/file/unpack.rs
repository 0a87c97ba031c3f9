//! `ADD` of a local archive: recognising one, and extracting it into the stage.
//!
//! An archive is what Docker takes for one: a file whose contents, once decompressed
//! (gzip, bzip2, xz or zstd, recognised by their magic bytes, never by the file name),
//! start with a valid tar header. Anything else is copied as a plain file.
//!
//! Extraction reuses the image crate's layer applier, which refuses entries that would
//! leave the directory it extracts into (absolute paths, `..`, writes through
//! symlinks) with an error naming the entry. It extracts into a scratch directory
//! inside `root` (so on the same filesystem, and gone with the stage if kiln dies), and
//! the copier then merges the result into the destination: so `--chown`, replacing
//! existing files, and resolving the destination's own symlinks inside the root behave
//! exactly as they do for `COPY`. As in Docker, a directory of the archive merges into
//! a symlink to a directory already in the stage (an archive's `lib/` lands in
//! `/usr/lib` when `/lib` links there); owners come from the archive unless an owner is
//! given. Whiteout entries (`.wh.*`) are names a layer cannot carry, and are dropped.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use kiln_image::Compression;
use kiln_image::layer::{ApplyOptions, apply_layer};

use super::copy::copy_following_dir_symlinks;
use super::inroot::io_error;
use super::{CopyEntry, CopyRequest, CopyStats, FileError, Owner};

const BZIP2_MAGIC: &[u8] = b"BZh";
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0];
const TAR_BLOCK: usize = 512;

/// Whether the file at `path` is an archive `ADD` extracts. Unreadable or corrupt
/// compressed data means it is not; a file that cannot be opened is an error.
pub fn is_archive(path: &Path) -> Result<bool, FileError> {
    let mut reader = open(path)?;
    let mut block = [0u8; TAR_BLOCK];
    let mut got = 0;
    while got < TAR_BLOCK {
        match reader.read(&mut block[got..]) {
            Ok(0) | Err(_) => return Ok(false),
            Ok(n) => got += n,
        }
    }
    Ok(is_tar_header(&block))
}

/// Extracts the archive at `archive` into the directory `dest` (a container path,
/// created if missing) of the stage mounted at `root`, giving every extracted file
/// `owner` when set.
pub fn unpack(
    root: &Path,
    dest: &str,
    archive: &Path,
    owner: Option<Owner>,
) -> Result<CopyStats, FileError> {
    let reader = open(archive)?;
    let scratch = tempfile::Builder::new()
        .prefix(".kiln-unpack-")
        .tempdir_in(root)
        .map_err(|e| io_error(root, "create a scratch directory in", root, e))?;
    apply_layer(reader, scratch.path(), &ApplyOptions::default()).map_err(|source| {
        FileError::Unpack {
            archive: archive.to_owned(),
            source,
        }
    })?;
    let mut entries = Vec::new();
    for item in walkdir::WalkDir::new(scratch.path())
        .min_depth(1)
        .sort_by_file_name()
    {
        let item = item.map_err(|e| {
            let path = e.path().unwrap_or(scratch.path()).to_owned();
            io_error(root, "read the scratch directory", &path, e.into())
        })?;
        let target = item
            .path()
            .strip_prefix(scratch.path())
            .expect("walked paths are under the walk's root")
            .to_owned();
        entries.push(CopyEntry {
            source: item.into_path(),
            target,
        });
    }
    let stats = copy_following_dir_symlinks(&CopyRequest {
        root: root.to_owned(),
        dest: dest.to_owned(),
        entries,
        owner,
        chmod: None,
        create_parents: true,
    })?;
    let scratch_path = scratch.path().to_owned();
    scratch
        .close()
        .map_err(|e| io_error(root, "remove the scratch directory", &scratch_path, e))?;
    Ok(stats)
}

/// The decompressed contents of the file at `path`.
fn open(path: &Path) -> Result<Box<dyn Read>, FileError> {
    let failed = |source| FileError::ReadArchive {
        archive: path.to_owned(),
        source,
    };
    let mut reader = BufReader::new(File::open(path).map_err(failed)?);
    let head = reader.fill_buf().map_err(failed)?;
    if head.starts_with(BZIP2_MAGIC) {
        return Ok(Box::new(bzip2::bufread::MultiBzDecoder::new(reader)));
    }
    if head.starts_with(XZ_MAGIC) {
        return Ok(Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(
            reader,
        )));
    }
    // gzip, zstd or plain: the formats layers use, recognised the same way.
    Compression::decompress(reader)
        .map(|(_, reader)| reader)
        .map_err(|source| FileError::Unpack {
            archive: path.to_owned(),
            source,
        })
}

/// Whether `block` is a tar header: not all zeros, and its checksum (the sum of its
/// bytes with the checksum field read as spaces, unsigned or signed as old tars wrote
/// it) matches the octal number in the checksum field.
fn is_tar_header(block: &[u8; TAR_BLOCK]) -> bool {
    let field = &block[148..156];
    let digits: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ' || b == 0)
        .take_while(|b| (b'0'..=b'7').contains(b))
        .collect();
    let Some(stored) = std::str::from_utf8(&digits)
        .ok()
        .filter(|d| !d.is_empty())
        .and_then(|d| i64::from_str_radix(d, 8).ok())
    else {
        return false;
    };
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    stored == unsigned || stored == signed
}

//! Any bytes as the JSON documents of an image archive: decoding never panics, and
//! neither does loading an archive made of them.
//!
//! The first byte picks what the rest is. 0 to 3: one document, given to the decoder of
//! an OCI index, an OCI manifest, Docker's `manifest.json` or an image config's diff IDs,
//! then through the checks the loader makes of what decoded (descriptor digests,
//! platforms); configs also as kiln's whole image config. 4 and up: parts separated by
//! `\n--\n`, put into a tar and loaded into an in-memory store — as `index.json` then
//! blobs named by their digests (even), or as `manifest.json` then members `1`, `2`, …
//! (odd).
#![no_main]

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use kiln_image::archive::decode::{
    decode_config, decode_config_diff_ids, decode_docker_manifest, decode_index, decode_manifest,
};
use kiln_image::oci_spec::image::Descriptor;
use kiln_image::{BlobRead, BlobWrite, Compression, Digest, Platform, archive};
use libfuzzer_sys::fuzz_target;

/// Blobs in a map, checked against their digests as the trait requires.
#[derive(Default)]
struct MemStore {
    blobs: Mutex<HashMap<Digest, Vec<u8>>>,
}

impl MemStore {
    fn get(&self, digest: &Digest) -> io::Result<Vec<u8>> {
        let blobs = self.blobs.lock().unwrap();
        blobs
            .get(digest)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
}

impl BlobRead for MemStore {
    fn open_blob(&self, digest: &Digest) -> io::Result<Box<dyn Read + Send + '_>> {
        Ok(Box::new(io::Cursor::new(self.get(digest)?)))
    }

    fn blob_size(&self, digest: &Digest) -> io::Result<u64> {
        Ok(self.get(digest)?.len() as u64)
    }
}

impl BlobWrite for MemStore {
    fn has_blob(&self, digest: &Digest) -> bool {
        self.blobs.lock().unwrap().contains_key(digest)
    }

    fn write_blob(&self, expected: &Digest, data: &mut dyn Read) -> io::Result<u64> {
        let mut buf = Vec::new();
        data.read_to_end(&mut buf)?;
        if Digest::of(&buf) != *expected {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "digest mismatch",
            ));
        }
        let len = buf.len() as u64;
        self.blobs.lock().unwrap().insert(expected.clone(), buf);
        Ok(len)
    }
}

/// The most bytes a part may decompress to here.
const UNPACKED_MAX: u64 = 1 << 20;

fn unpacked_size(part: &[u8]) -> u64 {
    match Compression::decompress(part) {
        Ok((_, reader)) => {
            io::copy(&mut reader.take(UNPACKED_MAX + 1), &mut io::sink()).unwrap_or(0)
        }
        Err(_) => 0,
    }
}

fn scratch() -> &'static PathBuf {
    static SCRATCH: OnceLock<PathBuf> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("kiln-fuzz-archive-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

fn check_descriptor(desc: &Descriptor) {
    let _ = Digest::try_from(desc.digest());
    if let Some(platform) = desc.platform() {
        let _ = Platform::from(platform).to_string();
    }
}

fn split_parts(data: &[u8]) -> Vec<&[u8]> {
    const SEP: &[u8] = b"\n--\n";
    let mut parts = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.windows(SEP.len()).position(|w| w == SEP) {
        parts.push(&rest[..at]);
        rest = &rest[at + SEP.len()..];
    }
    parts.push(rest);
    parts
}

fn archive_of(oci: bool, parts: &[&[u8]]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, name, data).unwrap();
    };
    let (first, blobs) = parts.split_first().expect("split gives one part at least");
    if oci {
        add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
        add("index.json", first);
        for blob in blobs {
            add(&format!("blobs/sha256/{}", Digest::of(blob).hex()), blob);
        }
    } else {
        add("manifest.json", first);
        for (i, blob) in blobs.iter().enumerate() {
            add(&(i + 1).to_string(), blob);
        }
    }
    tar.into_inner().unwrap()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode {
        0 => {
            if let Ok(index) = decode_index(rest) {
                index.manifests().iter().for_each(check_descriptor);
            }
        }
        1 => {
            if let Ok(manifest) = decode_manifest(rest) {
                check_descriptor(manifest.config());
                manifest.layers().iter().for_each(check_descriptor);
            }
        }
        2 => {
            if let Ok(entries) = decode_docker_manifest(rest) {
                for entry in entries {
                    for name in entry.repo_tags {
                        let _ = name.parse::<kiln_image::ImageRef>();
                    }
                }
            }
        }
        3 => {
            let _ = decode_config_diff_ids(rest);
            let _ = decode_config(rest);
        }
        _ => {
            let parts = split_parts(rest);
            // Layers are decompressed to check their diff IDs: no bombs.
            if parts.iter().any(|part| unpacked_size(part) > UNPACKED_MAX) {
                return;
            }
            let tar = archive_of(mode % 2 == 0, &parts);
            let store = MemStore::default();
            if let Ok(images) = archive::load(&tar[..], &store, scratch()) {
                for image in images {
                    assert!(
                        store.has_blob(&image.config),
                        "a loaded image's config is stored"
                    );
                }
            }
        }
    }
});

//! Writing an archive: always an OCI image layout, plus Docker's `manifest.json` and
//! `repositories` for the docker format.
//!
//! This is the shape `docker save` has produced since Docker 25: one set of
//! `blobs/sha256/<hex>` serves both readers, so a docker-format archive is also a valid
//! OCI layout and loads back into kiln with its manifests byte for byte. Older Docker
//! daemons read only `manifest.json` and decompress the layers it lists, so compressed
//! layers need no rewriting.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Read, Write};

use oci_spec::image::{Descriptor, ImageIndexBuilder, ImageManifest, MediaType, OciLayoutBuilder};

use super::docker::DockerManifestEntry;
use super::members::read_limited;
use super::{
    ANNOTATION_IMAGE_NAME, ArchiveError, ArchiveFormat, ArchiveImage, descriptor_digest, json_err,
};
use crate::{BlobRead, Digest, Digester};

/// Writes `images` from `store` as one archive to `out`, returning `out`.
pub fn save<W, S>(
    out: W,
    format: ArchiveFormat,
    images: &[ArchiveImage],
    store: &S,
) -> Result<W, ArchiveError>
where
    W: Write,
    S: BlobRead + ?Sized,
{
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Deterministic);
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        header.set_mtime(0);
        tar.append_data(&mut header, dir, io::empty())
            .map_err(ArchiveError::Write)?;
    }
    let layout = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()
        .expect("the layout version is set");
    append_file(&mut tar, "oci-layout", &to_json(&layout, "oci-layout")?)?;

    let mut written = BTreeSet::new();
    let mut index_entries = Vec::new();
    let mut docker_entries = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for image in images {
        let manifest_digest = descriptor_digest(&image.manifest, "image manifest")?;
        let what = format!("manifest {manifest_digest}");
        let bytes = read_limited(store, &manifest_digest, &what)?;
        let manifest: ImageManifest = serde_json::from_slice(&bytes).map_err(json_err(&what))?;
        let config = descriptor_digest(manifest.config(), &what)?;
        append_blob(
            &mut tar,
            store,
            &mut written,
            &manifest_digest,
            bytes.len() as u64,
        )?;
        append_blob(
            &mut tar,
            store,
            &mut written,
            &config,
            manifest.config().size(),
        )?;
        let mut layer_paths = Vec::new();
        for layer in manifest.layers() {
            let digest = descriptor_digest(layer, &what)?;
            append_blob(&mut tar, store, &mut written, &digest, layer.size())?;
            layer_paths.push(blob_path(&digest));
        }

        let target = Descriptor::new(
            image.manifest.media_type().clone(),
            image.manifest.size(),
            &manifest_digest,
        );
        let mut repo_tags = Vec::new();
        for name in &image.names {
            let mut annotations =
                HashMap::from([(ANNOTATION_IMAGE_NAME.to_owned(), name.to_string())]);
            if let Some(tag) = name.tag() {
                annotations.insert(
                    oci_spec::image::ANNOTATION_REF_NAME.to_owned(),
                    tag.to_owned(),
                );
                repo_tags.push(format!("{}:{tag}", name.familiar()));
                if let Some(top) = manifest.layers().last() {
                    let top = descriptor_digest(top, &what)?;
                    repositories
                        .entry(name.familiar().to_owned())
                        .or_default()
                        .insert(tag.to_owned(), top.hex().to_owned());
                }
            }
            let mut entry = target.clone();
            entry.set_annotations(Some(annotations));
            index_entries.push(entry);
        }
        if image.names.is_empty() {
            index_entries.push(target);
        }
        docker_entries.push(DockerManifestEntry {
            config: blob_path(&config),
            repo_tags,
            layers: layer_paths,
        });
    }

    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(index_entries)
        .build()
        .expect("every required index field is set");
    append_file(&mut tar, "index.json", &to_json(&index, "index.json")?)?;
    if format == ArchiveFormat::Docker {
        append_file(
            &mut tar,
            "manifest.json",
            &to_json(&docker_entries, "manifest.json")?,
        )?;
        append_file(
            &mut tar,
            "repositories",
            &to_json(&repositories, "repositories")?,
        )?;
    }
    tar.into_inner().map_err(ArchiveError::Write)
}

/// Where a blob lives inside the archive.
pub fn blob_path(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

fn to_json<T: serde::Serialize>(value: &T, what: &str) -> Result<Vec<u8>, ArchiveError> {
    serde_json::to_vec(value).map_err(json_err(what))
}

fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    data: &[u8],
) -> Result<(), ArchiveError> {
    let mut header = file_header(data.len() as u64);
    tar.append_data(&mut header, path, data)
        .map_err(ArchiveError::Write)
}

fn file_header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(size);
    header.set_mtime(0);
    header
}

/// Copies a blob into the archive once, checking on the way that the store still holds
/// what its digest says.
fn append_blob<W, S>(
    tar: &mut tar::Builder<W>,
    store: &S,
    written: &mut BTreeSet<Digest>,
    digest: &Digest,
    size: u64,
) -> Result<(), ArchiveError>
where
    W: Write,
    S: BlobRead + ?Sized,
{
    if !written.insert(digest.clone()) {
        return Ok(());
    }
    let read_err = |source| ArchiveError::ReadBlob {
        digest: digest.clone(),
        source,
    };
    let actual_size = store.blob_size(digest).map_err(read_err)?;
    if actual_size != size {
        return Err(ArchiveError::SizeMismatch {
            digest: digest.clone(),
            expected: size,
            actual: actual_size,
        });
    }
    let blob = store.open_blob(digest).map_err(read_err)?;
    let mut verified = VerifyingReader {
        inner: blob.take(size),
        digester: Digester::new(),
        expected: digest,
    };
    let mut header = file_header(size);
    tar.append_data(&mut header, blob_path(digest), &mut verified)
        .map_err(|source| {
            if source.kind() == io::ErrorKind::InvalidData {
                ArchiveError::ReadBlob {
                    digest: digest.clone(),
                    source,
                }
            } else {
                ArchiveError::Write(source)
            }
        })
}

/// Hashes what it reads and fails at the end if the digest is not the expected one.
struct VerifyingReader<'a, R> {
    inner: R,
    digester: Digester,
    expected: &'a Digest,
}

impl<R: Read> Read for VerifyingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let actual = self.digester.clone().finish();
            if &actual != self.expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("stored content hashes to {actual}"),
                ));
            }
        }
        self.digester.update(&buf[..n]);
        Ok(n)
    }
}

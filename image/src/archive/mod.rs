//! Image archives: what `docker save`/`docker load` exchange, and OCI image layouts in
//! a tar (`oci-archive:` to skopeo).
//!
//! Both directions go through the blob traits only ([`BlobRead`], [`BlobWrite`]), so
//! this code neither knows nor cares how the content store keeps blobs. Loading is
//! all-or-nothing from the caller's point of view: [`load`] stores blobs as it reads
//! (unreferenced ones are garbage to the collector if a later check fails) but returns
//! the images to tag only once every manifest, config, layer and diff ID has been
//! checked, so a broken or hostile archive leaves no image half-tagged.
//!
//! Archives may be plain tars or gzip- or zstd-compressed ones. Three layouts are read:
//! - OCI image layouts (`oci-layout`, `index.json`, `blobs/`), which Docker 25 and later
//!   also write next to `manifest.json`; preferred when present, as it keeps manifests
//!   byte for byte;
//! - Docker's `manifest.json` with configs and layers under any member names, including
//!   Docker 20.10's `<id>/layer.tar` (uncompressed, or compressed by other tools) and
//!   its symlinks between layer directories; kiln writes an OCI manifest for these.

pub mod decode;
mod docker;
mod members;
mod oci;
#[cfg(test)]
mod tests;
mod writer;

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use oci_spec::image::Descriptor;

pub use members::METADATA_LIMIT;
pub use writer::save;

use crate::layer::{Compression, LayerError};
use crate::{BlobRead, BlobWrite, Digest, DigestError, ImageRef, Platform, RefError};

/// The annotation containerd and Docker put the full image name in.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

/// Which kind of archive [`save`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// What `docker load` reads: an OCI layout plus `manifest.json` and `repositories`.
    Docker,
    /// A bare OCI image layout.
    Oci,
}

/// An image to write into an archive.
#[derive(Clone, Debug)]
pub struct ArchiveImage {
    /// The names it is saved under (none: saved untagged).
    pub names: Vec<ImageRef>,
    /// Its image manifest.
    pub manifest: Descriptor,
}

/// An image found in an archive, all of whose blobs are now in the store.
#[derive(Clone, Debug)]
pub struct LoadedImage {
    /// The names the archive gives it (possibly none).
    pub names: Vec<ImageRef>,
    /// Its image manifest.
    pub manifest: Descriptor,
    /// Its config's digest, the image ID.
    pub config: Digest,
}

/// Why an archive could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Reading the archive stream failed.
    #[error("reading the archive")]
    Read(#[source] io::Error),
    /// The archive's compression is not one kiln reads.
    #[error("reading the archive")]
    Compression(#[source] LayerError),
    /// A layer's compression could not be recognised or undone.
    #[error("reading layer {digest}")]
    Layer {
        /// The layer blob.
        digest: Digest,
        /// The cause.
        #[source]
        source: LayerError,
    },
    /// Writing the archive stream failed.
    #[error("writing the archive")]
    Write(#[source] io::Error),
    /// A scratch file could not be made.
    #[error("creating a scratch file in {dir}")]
    Scratch {
        /// The scratch directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A member name is not UTF-8.
    #[error("archive member name {name:?} is not valid UTF-8")]
    NonUtf8Name {
        /// The name, lossily decoded.
        name: String,
    },
    /// A member name is absolute or climbs out with `..`.
    #[error("archive member {name:?} points outside the archive")]
    UnsafeName {
        /// The name.
        name: String,
    },
    /// A link member points outside the archive.
    #[error("archive link {name:?} -> {target:?} points outside the archive")]
    UnsafeLink {
        /// The link's name.
        name: String,
        /// Its target.
        target: String,
    },
    /// Links from a member go round in circles or too deep.
    #[error("archive links starting at {name:?} do not lead to a file")]
    LinkLoop {
        /// Where the chain starts.
        name: String,
    },
    /// A member the archive's manifests name is not in it.
    #[error("archive member {name:?} is missing")]
    MissingMember {
        /// The name looked for.
        name: String,
    },
    /// Metadata bigger than [`METADATA_LIMIT`].
    #[error("{name} is {size} bytes, more than the {limit} bytes allowed for metadata")]
    TooLarge {
        /// The member or blob.
        name: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A `blobs/sha256/<hex>` member does not hash to its name.
    #[error("archive member {name:?} does not match its digest")]
    BlobMismatch {
        /// The member.
        name: String,
        /// The store's report.
        #[source]
        source: io::Error,
    },
    /// The store refused a member.
    #[error("storing archive member {name:?}")]
    Store {
        /// The member.
        name: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Reading a blob back from the store failed.
    #[error("reading blob {digest}")]
    ReadBlob {
        /// The blob.
        digest: Digest,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The archive has neither `index.json` nor `manifest.json`.
    #[error("not an image archive: neither index.json nor manifest.json found")]
    UnknownFormat,
    /// A descriptor names a blob that is neither in the archive nor in the store.
    #[error("{what}: blob {digest} is neither in the archive nor in the store")]
    MissingBlob {
        /// Where the descriptor was found.
        what: String,
        /// The blob.
        digest: Digest,
    },
    /// A blob's size differs from its descriptor's.
    #[error("blob {digest} is {actual} bytes, its descriptor says {expected}")]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// The descriptor's size.
        expected: u64,
        /// The blob's size.
        actual: u64,
    },
    /// A layer does not unpack to the diff ID its config lists.
    #[error("{what}: layer {layer:?} has diff ID {actual}, the config says {expected}")]
    DiffIdMismatch {
        /// The image.
        what: String,
        /// The layer member.
        layer: String,
        /// From the config.
        expected: Digest,
        /// Computed.
        actual: Digest,
    },
    /// The manifest and the config disagree on the number of layers.
    #[error("{what}: {layers} layers listed but the config has {diff_ids} diff IDs")]
    LayerCount {
        /// The image.
        what: String,
        /// Layers in the manifest.
        layers: usize,
        /// Diff IDs in the config.
        diff_ids: usize,
    },
    /// JSON that does not parse as what it should be.
    #[error("parsing {what}")]
    Json {
        /// The document.
        what: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A digest that is not a valid sha256 digest.
    #[error("{what}: invalid digest")]
    Digest {
        /// Where it was found.
        what: String,
        /// The cause.
        #[source]
        source: DigestError,
    },
    /// An image name that is not a valid reference.
    #[error("{what}: invalid image name {name:?}")]
    Name {
        /// Where it was found.
        what: String,
        /// The name.
        name: String,
        /// The cause.
        #[source]
        source: RefError,
    },
    /// An index without a manifest for this machine.
    #[error("{what} has no manifest for {platform}")]
    NoPlatformManifest {
        /// The index.
        what: String,
        /// The platform looked for.
        platform: Platform,
    },
    /// A descriptor of a kind that cannot be loaded as an image.
    #[error("{what}: media type {media_type:?} is not an image manifest or index")]
    UnsupportedMediaType {
        /// Where it was found.
        what: String,
        /// The media type.
        media_type: String,
    },
}

/// Reads an archive (a tar, plain or gzip- or zstd-compressed) into `store`, using `scratch` for
/// temporary files, and returns the images it holds once all of them check out.
pub fn load<R, S>(input: R, store: &S, scratch: &Path) -> Result<Vec<LoadedImage>, ArchiveError>
where
    R: Read,
    S: BlobRead + BlobWrite + ?Sized,
{
    let (_, tar) = Compression::decompress(input).map_err(ArchiveError::Compression)?;
    let members = members::Members::read(tar, store, scratch)?;
    if members.contains("index.json") {
        oci::load(&members, store)
    } else if members.contains("manifest.json") {
        docker::load(&members, store)
    } else {
        Err(ArchiveError::UnknownFormat)
    }
}

fn descriptor_digest(desc: &Descriptor, what: &str) -> Result<Digest, ArchiveError> {
    Digest::try_from(desc.digest()).map_err(|source| ArchiveError::Digest {
        what: what.to_owned(),
        source,
    })
}

fn json_err(what: &str) -> impl FnOnce(serde_json::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Json {
        what: what.to_owned(),
        source,
    }
}

fn parse_name(name: &str, what: &str) -> Result<ImageRef, ArchiveError> {
    name.parse().map_err(|source| ArchiveError::Name {
        what: what.to_owned(),
        name: name.to_owned(),
        source,
    })
}

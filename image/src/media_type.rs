//! Media types kiln reads and writes, OCI's and Docker's.
//!
//! `oci-spec`'s [`MediaType`] names the OCI types and carries every other string as
//! `Other`; Docker's schema 2 types arrive that way from registries and `docker save`.
//! [`classify`] folds both families onto what kiln needs to know (is it a manifest, an
//! index, a config, a layer and how is that compressed), and [`Flavor`] gives the type
//! to write when an image is exported in one family or the other.

use oci_spec::image::MediaType;

use crate::layer::Compression;

/// Docker's image manifest (schema 2).
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker's manifest list (multi-platform index).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker's image configuration.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker's uncompressed layer (as containerd names it).
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker's gzip layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker's zstd layer (as containerd and BuildKit name it).
pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
/// Docker's foreign (non-distributable) gzip layer.
pub const DOCKER_FOREIGN_LAYER_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// Which family of media types an image uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Flavor {
    /// The OCI image specification's types.
    #[default]
    Oci,
    /// Docker's schema 2 types (what `docker save` and older registries expect).
    Docker,
}

/// What a blob of some media type is, as far as kiln is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A single-platform image manifest.
    Manifest(Flavor),
    /// A multi-platform index (OCI index or Docker manifest list).
    Index(Flavor),
    /// An image configuration.
    Config(Flavor),
    /// A filesystem layer.
    Layer {
        /// How its tar is compressed.
        compression: Compression,
        /// Its family.
        flavor: Flavor,
        /// False for foreign / non-distributable layers, which are not pushed.
        distributable: bool,
    },
    /// Anything else (attestations, artifacts, unknown types).
    Other,
}

/// Classifies a media type.
pub fn classify(media_type: &MediaType) -> Kind {
    let layer = |compression, flavor, distributable| Kind::Layer {
        compression,
        flavor,
        distributable,
    };
    match media_type {
        MediaType::ImageManifest => Kind::Manifest(Flavor::Oci),
        MediaType::ImageIndex => Kind::Index(Flavor::Oci),
        MediaType::ImageConfig => Kind::Config(Flavor::Oci),
        MediaType::ImageLayer => layer(Compression::None, Flavor::Oci, true),
        MediaType::ImageLayerGzip => layer(Compression::Gzip, Flavor::Oci, true),
        MediaType::ImageLayerZstd => layer(Compression::Zstd, Flavor::Oci, true),
        MediaType::ImageLayerNonDistributable => layer(Compression::None, Flavor::Oci, false),
        MediaType::ImageLayerNonDistributableGzip => layer(Compression::Gzip, Flavor::Oci, false),
        MediaType::ImageLayerNonDistributableZstd => layer(Compression::Zstd, Flavor::Oci, false),
        MediaType::Other(s) => match s.as_str() {
            DOCKER_MANIFEST => Kind::Manifest(Flavor::Docker),
            DOCKER_MANIFEST_LIST => Kind::Index(Flavor::Docker),
            DOCKER_CONFIG => Kind::Config(Flavor::Docker),
            DOCKER_LAYER => layer(Compression::None, Flavor::Docker, true),
            DOCKER_LAYER_GZIP => layer(Compression::Gzip, Flavor::Docker, true),
            DOCKER_LAYER_ZSTD => layer(Compression::Zstd, Flavor::Docker, true),
            DOCKER_FOREIGN_LAYER_GZIP => layer(Compression::Gzip, Flavor::Docker, false),
            _ => Kind::Other,
        },
        _ => Kind::Other,
    }
}

/// The compression of a layer media type, or `None` if it is not a layer type.
pub fn layer_compression(media_type: &MediaType) -> Option<Compression> {
    match classify(media_type) {
        Kind::Layer { compression, .. } => Some(compression),
        _ => None,
    }
}

impl Flavor {
    /// The manifest media type.
    pub fn manifest(self) -> MediaType {
        match self {
            Flavor::Oci => MediaType::ImageManifest,
            Flavor::Docker => MediaType::Other(DOCKER_MANIFEST.to_owned()),
        }
    }

    /// The index / manifest list media type.
    pub fn index(self) -> MediaType {
        match self {
            Flavor::Oci => MediaType::ImageIndex,
            Flavor::Docker => MediaType::Other(DOCKER_MANIFEST_LIST.to_owned()),
        }
    }

    /// The image configuration media type.
    pub fn config(self) -> MediaType {
        match self {
            Flavor::Oci => MediaType::ImageConfig,
            Flavor::Docker => MediaType::Other(DOCKER_CONFIG.to_owned()),
        }
    }

    /// The media type of a distributable layer with `compression`.
    pub fn layer(self, compression: Compression) -> MediaType {
        match (self, compression) {
            (Flavor::Oci, Compression::None) => MediaType::ImageLayer,
            (Flavor::Oci, Compression::Gzip) => MediaType::ImageLayerGzip,
            (Flavor::Oci, Compression::Zstd) => MediaType::ImageLayerZstd,
            (Flavor::Docker, Compression::None) => MediaType::Other(DOCKER_LAYER.to_owned()),
            (Flavor::Docker, Compression::Gzip) => MediaType::Other(DOCKER_LAYER_GZIP.to_owned()),
            (Flavor::Docker, Compression::Zstd) => MediaType::Other(DOCKER_LAYER_ZSTD.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_and_oci_types_are_understood() {
        let m = |s: &str| classify(&MediaType::from(s));
        assert_eq!(m(DOCKER_MANIFEST), Kind::Manifest(Flavor::Docker));
        assert_eq!(m(DOCKER_MANIFEST_LIST), Kind::Index(Flavor::Docker));
        assert_eq!(m(DOCKER_CONFIG), Kind::Config(Flavor::Docker));
        assert_eq!(
            m("application/vnd.oci.image.index.v1+json"),
            Kind::Index(Flavor::Oci)
        );
        assert_eq!(
            layer_compression(&MediaType::from(DOCKER_LAYER_GZIP)),
            Some(Compression::Gzip)
        );
        assert_eq!(
            layer_compression(&MediaType::from(
                "application/vnd.oci.image.layer.v1.tar+zstd"
            )),
            Some(Compression::Zstd)
        );
        assert_eq!(
            m(DOCKER_FOREIGN_LAYER_GZIP),
            Kind::Layer {
                compression: Compression::Gzip,
                flavor: Flavor::Docker,
                distributable: false
            }
        );
        assert_eq!(m("application/vnd.in-toto+json"), Kind::Other);
        assert_eq!(layer_compression(&MediaType::ImageConfig), None);
    }

    #[test]
    fn flavors_round_trip_through_classify() {
        for flavor in [Flavor::Oci, Flavor::Docker] {
            assert_eq!(classify(&flavor.manifest()), Kind::Manifest(flavor));
            assert_eq!(classify(&flavor.index()), Kind::Index(flavor));
            assert_eq!(classify(&flavor.config()), Kind::Config(flavor));
            for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
                assert_eq!(
                    classify(&flavor.layer(c)),
                    Kind::Layer {
                        compression: c,
                        flavor,
                        distributable: true
                    }
                );
            }
        }
        assert_eq!(
            Flavor::Docker.layer(Compression::Gzip).to_string(),
            DOCKER_LAYER_GZIP
        );
    }
}

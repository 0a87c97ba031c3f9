//! Cache records that travel between stores: what `--cache-to` writes and
//! `--cache-from` reads.
//!
//! A remote cache is an OCI image manifest whose config blob
//! ([`CACHE_CONFIG_MEDIA_TYPE`]) lists cache records, and whose layers are the layer
//! blobs those records point at, so that a registry or an OCI layout keeps them
//! alive and can serve them one by one. The format is described in
//! `docs/remote-cache.md`. Keys are the same cache keys the local index uses: they
//! depend only on the build's inputs, never on the store, so a record made on one
//! machine is a hit on another.
//!
//! This module encodes and decodes that artifact and reads and writes it in an OCI
//! layout directory; fetching blobs lazily is the caller's business.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use kiln_image::oci_spec::image::{
    Descriptor, ImageIndex, ImageIndexBuilder, ImageManifest, ImageManifestBuilder, MediaType,
};
use kiln_image::{BlobRead, Digest};
use serde::{Deserialize, Serialize};

use crate::index::{CacheRecord, LayerRecord};

/// Media type of the cache config blob.
pub const CACHE_CONFIG_MEDIA_TYPE: &str = "application/vnd.kiln.cache.config.v1+json";

/// The artifact type recorded on a cache manifest.
pub const CACHE_ARTIFACT_TYPE: &str = "application/vnd.kiln.cache.v1";

/// The annotation naming a cache manifest in an OCI layout's `index.json`.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The name a cache gets in an OCI layout when none is given.
pub const DEFAULT_LAYOUT_TAG: &str = "cache";

/// Largest cache config kiln reads (a record per step; this allows hundreds of
/// thousands).
pub const MAX_CONFIG_SIZE: u64 = 64 << 20;

/// The cache config blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheConfig {
    /// Format version, 1.
    pub version: u32,
    /// One entry per layer of the manifest, in the same order.
    pub layers: Vec<CacheLayer>,
    /// The records.
    pub records: Vec<CacheEntry>,
}

/// What the cache config adds to a manifest layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheLayer {
    /// Digest of the uncompressed tar.
    #[serde(rename = "diffID")]
    pub diff_id: Digest,
    /// When the step that made the layer ran (seconds since the epoch).
    pub created: i64,
}

/// One record: a cache key and the chain of layers it stands for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The cache key.
    pub key: Digest,
    /// Indexes into the manifest's layers, bottom first.
    pub layers: Vec<usize>,
    /// When the record was made (seconds since the epoch).
    pub created: i64,
}

/// Why a remote cache could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RemoteCacheError {
    /// The manifest is not a kiln cache.
    #[error(
        "{place}: not a kiln cache (config media type {found:?}, expected {CACHE_CONFIG_MEDIA_TYPE})"
    )]
    NotACache {
        /// Where it came from.
        place: String,
        /// The config media type found.
        found: String,
    },
    /// The cache config is malformed.
    #[error("{place}: malformed cache config: {reason}")]
    Malformed {
        /// Where it came from.
        place: String,
        /// What is wrong.
        reason: String,
    },
    /// A file of an OCI layout could not be read or written.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
}

/// A cache ready to be written: the manifest, its config, and the layer blobs.
#[derive(Clone, Debug)]
pub struct EncodedCache {
    /// The manifest (JSON).
    pub manifest: Vec<u8>,
    /// The manifest's digest.
    pub manifest_digest: Digest,
    /// The config blob (JSON).
    pub config: Vec<u8>,
    /// The config blob's digest.
    pub config_digest: Digest,
    /// The layer blobs, as the manifest lists them.
    pub layers: Vec<LayerRecord>,
}

/// Encodes `records` as a cache artifact. Layers shared by several records are listed
/// once; a blob that two steps made at different times (two steps can write the same
/// bytes) is listed once per time, since each step's history is dated by its own.
/// Records are listed by key, whatever order the steps finished in (stages run side
/// by side), so that the same records always make the same artifact.
pub fn encode(records: &[(Digest, CacheRecord)]) -> EncodedCache {
    let mut layers: Vec<LayerRecord> = Vec::new();
    let mut position: HashMap<(Digest, i64), usize> = HashMap::new();
    let mut entries = Vec::with_capacity(records.len());
    let mut seen_keys = BTreeMap::new();
    let mut records: Vec<&(Digest, CacheRecord)> = records.iter().collect();
    records.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, record) in records {
        if seen_keys.insert(key.clone(), ()).is_some() {
            continue;
        }
        let indexes = record
            .layers
            .iter()
            .map(|layer| {
                *position
                    .entry((layer.blob.clone(), layer.created))
                    .or_insert_with(|| {
                        layers.push(layer.clone());
                        layers.len() - 1
                    })
            })
            .collect();
        entries.push(CacheEntry {
            key: key.clone(),
            layers: indexes,
            created: record.created,
        });
    }
    let config = CacheConfig {
        version: 1,
        layers: layers
            .iter()
            .map(|l| CacheLayer {
                diff_id: l.diff_id.clone(),
                created: l.created,
            })
            .collect(),
        records: entries,
    };
    let config = serde_json::to_vec(&config).expect("cache configs serialise");
    let config_digest = Digest::of(&config);
    let descriptors: Vec<Descriptor> = layers
        .iter()
        .map(|l| Descriptor::new(MediaType::from(l.media_type.as_str()), l.size, &l.blob))
        .collect();
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .artifact_type(MediaType::Other(CACHE_ARTIFACT_TYPE.to_owned()))
        .config(Descriptor::new(
            MediaType::Other(CACHE_CONFIG_MEDIA_TYPE.to_owned()),
            config.len() as u64,
            &config_digest,
        ))
        .layers(descriptors)
        .build()
        .expect("a manifest with a config is complete");
    let manifest = serde_json::to_vec(&manifest).expect("manifests serialise");
    EncodedCache {
        manifest_digest: Digest::of(&manifest),
        manifest,
        config,
        config_digest,
        layers,
    }
}

/// The config descriptor of a cache manifest, checked to be one; `place` names where
/// the manifest came from in errors.
pub fn config_descriptor<'m>(
    manifest: &'m ImageManifest,
    place: &str,
) -> Result<&'m Descriptor, RemoteCacheError> {
    let config = manifest.config();
    match config.media_type() {
        MediaType::Other(t) if t == CACHE_CONFIG_MEDIA_TYPE => Ok(config),
        other => Err(RemoteCacheError::NotACache {
            place: place.to_owned(),
            found: other.to_string(),
        }),
    }
}

/// Decodes the records of a cache manifest and its config blob.
pub fn decode(
    manifest: &ImageManifest,
    config: &[u8],
    place: &str,
) -> Result<Vec<(Digest, CacheRecord)>, RemoteCacheError> {
    config_descriptor(manifest, place)?;
    let malformed = |reason: String| RemoteCacheError::Malformed {
        place: place.to_owned(),
        reason,
    };
    let parsed: CacheConfig =
        serde_json::from_slice(config).map_err(|e| malformed(e.to_string()))?;
    if parsed.version != 1 {
        return Err(malformed(format!(
            "version {} (this kiln reads version 1)",
            parsed.version
        )));
    }
    let descriptors = manifest.layers();
    if descriptors.len() != parsed.layers.len() {
        return Err(malformed(format!(
            "{} layers in the manifest but {} in the config",
            descriptors.len(),
            parsed.layers.len()
        )));
    }
    let mut layers = Vec::with_capacity(descriptors.len());
    for (i, (descriptor, extra)) in descriptors.iter().zip(&parsed.layers).enumerate() {
        let blob: Digest = descriptor
            .digest()
            .to_string()
            .parse()
            .map_err(|e| malformed(format!("layer {i}: {e}")))?;
        layers.push(LayerRecord {
            diff_id: extra.diff_id.clone(),
            blob,
            size: descriptor.size(),
            media_type: descriptor.media_type().to_string(),
            created: extra.created,
        });
    }
    parsed
        .records
        .into_iter()
        .map(|entry| {
            let chain = entry
                .layers
                .iter()
                .map(|&i| {
                    layers.get(i).cloned().ok_or_else(|| {
                        malformed(format!(
                            "record {} names layer {i} of {}",
                            entry.key,
                            layers.len()
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((
                entry.key,
                CacheRecord {
                    layers: chain,
                    created: entry.created,
                },
            ))
        })
        .collect()
}

/// Keeps the records whose chains are part of the final image's chain `image`
/// (`mode=min`): the steps of the stage that became the image, not those of other
/// stages.
pub fn only_image_chain(
    records: Vec<(Digest, CacheRecord)>,
    image: &[LayerRecord],
) -> Vec<(Digest, CacheRecord)> {
    records
        .into_iter()
        .filter(|(_, record)| {
            record.layers.len() <= image.len()
                && record
                    .layers
                    .iter()
                    .zip(image)
                    .all(|(a, b)| a.blob == b.blob)
        })
        .collect()
}

/// The cache an image carries in its config (`--cache-to type=inline`): records for
/// the image's own layer chain, which is all an inline cache can hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InlineCache {
    /// Format version, 1.
    pub version: u32,
    /// When each of the image's layers was made, bottom first.
    pub created: Vec<i64>,
    /// The records.
    pub records: Vec<InlineRecord>,
}

/// One record of an inline cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InlineRecord {
    /// The cache key.
    pub key: Digest,
    /// How many of the image's layers, from the bottom, the result is.
    pub layers: usize,
    /// When the record was made.
    pub created: i64,
}

/// The inline cache for an image whose layers are `image`: the records among `records`
/// whose chains are part of it.
pub fn encode_inline(records: Vec<(Digest, CacheRecord)>, image: &[LayerRecord]) -> InlineCache {
    let mut seen = HashMap::new();
    let mut records = only_image_chain(records, image);
    // By key, as in `encode`: the image config must not depend on which stage finished
    // first.
    records.sort_by(|a, b| a.0.cmp(&b.0));
    let records = records
        .into_iter()
        .filter(|(key, _)| seen.insert(key.clone(), ()).is_none())
        .map(|(key, record)| InlineRecord {
            key,
            layers: record.layers.len(),
            created: record.created,
        })
        .collect();
    InlineCache {
        version: 1,
        created: image.iter().map(|l| l.created).collect(),
        records,
    }
}

/// The records of an inline cache, over the image's layers as its manifest and config
/// list them (`created` is filled in from the cache).
pub fn decode_inline(
    value: &serde_json::Value,
    mut image: Vec<LayerRecord>,
    place: &str,
) -> Result<Vec<(Digest, CacheRecord)>, RemoteCacheError> {
    let malformed = |reason: String| RemoteCacheError::Malformed {
        place: place.to_owned(),
        reason,
    };
    let cache: InlineCache = serde_json::from_value(value.clone())
        .map_err(|e| malformed(format!("inline cache: {e}")))?;
    if cache.version != 1 {
        return Err(malformed(format!(
            "inline cache version {} (this kiln reads version 1)",
            cache.version
        )));
    }
    if cache.created.len() != image.len() {
        return Err(malformed(format!(
            "inline cache dates {} layers but the image has {}",
            cache.created.len(),
            image.len()
        )));
    }
    for (layer, created) in image.iter_mut().zip(&cache.created) {
        layer.created = *created;
    }
    cache
        .records
        .into_iter()
        .map(|r| {
            let chain = image.get(..r.layers).ok_or_else(|| {
                malformed(format!(
                    "record {} names {} layers of {}",
                    r.key,
                    r.layers,
                    image.len()
                ))
            })?;
            Ok((
                r.key,
                CacheRecord {
                    layers: chain.to_vec(),
                    created: r.created,
                },
            ))
        })
        .collect()
}

/// An OCI image layout directory holding caches (`type=local`).
#[derive(Clone, Debug)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// The layout in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Layout {
        Layout { dir: dir.into() }
    }

    /// The layout's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a blob lives in the layout.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir
            .join("blobs")
            .join(digest.algorithm())
            .join(digest.hex())
    }

    fn io(&self, path: PathBuf) -> impl FnOnce(io::Error) -> RemoteCacheError {
        move |source| RemoteCacheError::Io { path, source }
    }

    /// Writes `cache` under `tag`, copying its layer blobs from `blobs` (blobs the
    /// layout already has are kept). The index is replaced last, so a reader sees the
    /// old cache or the new one, never a manifest whose blobs are missing.
    pub fn write(
        &self,
        cache: &EncodedCache,
        tag: &str,
        blobs: &dyn BlobRead,
    ) -> Result<(), RemoteCacheError> {
        let blob_dir = self.dir.join("blobs").join("sha256");
        fs::create_dir_all(&blob_dir).map_err(self.io(blob_dir.clone()))?;
        for layer in &cache.layers {
            let path = self.blob_path(&layer.blob);
            if path.exists() {
                continue;
            }
            let mut source =
                blobs
                    .open_blob(&layer.blob)
                    .map_err(|source| RemoteCacheError::Io {
                        path: PathBuf::from(layer.blob.to_string()),
                        source,
                    })?;
            self.put(&path, |file| io::copy(&mut source, file).map(|_| ()))?;
        }
        self.put(&self.blob_path(&cache.config_digest), |f| {
            f.write_all(&cache.config)
        })?;
        self.put(&self.blob_path(&cache.manifest_digest), |f| {
            f.write_all(&cache.manifest)
        })?;
        self.put(&self.dir.join("oci-layout"), |f| {
            f.write_all(br#"{"imageLayoutVersion":"1.0.0"}"#)
        })?;

        let mut manifests: Vec<Descriptor> = match self.read_index()? {
            Some(index) => index
                .manifests()
                .iter()
                .filter(|d| {
                    d.annotations()
                        .as_ref()
                        .and_then(|a| a.get(REF_NAME))
                        .is_none_or(|name| name != tag)
                })
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        let mut descriptor = Descriptor::new(
            MediaType::ImageManifest,
            cache.manifest.len() as u64,
            &cache.manifest_digest,
        );
        descriptor.set_artifact_type(Some(MediaType::Other(CACHE_ARTIFACT_TYPE.to_owned())));
        descriptor.set_annotations(Some([(REF_NAME.to_owned(), tag.to_owned())].into()));
        manifests.push(descriptor);
        let index = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(manifests)
            .build()
            .expect("an index with manifests is complete");
        let index = serde_json::to_vec(&index).expect("indexes serialise");
        self.put(&self.dir.join("index.json"), |f| f.write_all(&index))
    }

    /// Writes a file by way of a temporary one beside it.
    fn put(
        &self,
        path: &Path,
        fill: impl FnOnce(&mut fs::File) -> io::Result<()>,
    ) -> Result<(), RemoteCacheError> {
        let dir = path.parent().unwrap_or(&self.dir);
        let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(self.io(dir.to_owned()))?;
        fill(temp.as_file_mut())
            .and_then(|()| temp.as_file().sync_all())
            .map_err(self.io(path.to_owned()))?;
        temp.persist(path)
            .map_err(|e| e.error)
            .map_err(self.io(path.to_owned()))?;
        Ok(())
    }

    fn read_index(&self) -> Result<Option<ImageIndex>, RemoteCacheError> {
        let path = self.dir.join("index.json");
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(path)(e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| RemoteCacheError::Malformed {
                place: path.display().to_string(),
                reason: e.to_string(),
            })
    }

    /// Reads the records of the cache named `tag`.
    pub fn read(&self, tag: &str) -> Result<Vec<(Digest, CacheRecord)>, RemoteCacheError> {
        let place = format!("{}:{tag}", self.dir.display());
        let malformed = |reason: String| RemoteCacheError::Malformed {
            place: place.clone(),
            reason,
        };
        let index = self
            .read_index()?
            .ok_or_else(|| malformed("no index.json: not an OCI layout".to_owned()))?;
        let descriptor = index
            .manifests()
            .iter()
            .find(|d| {
                d.annotations()
                    .as_ref()
                    .and_then(|a| a.get(REF_NAME))
                    .is_some_and(|name| name == tag)
            })
            .ok_or_else(|| malformed(format!("no manifest named {tag:?} in index.json")))?;
        let manifest_digest: Digest = descriptor
            .digest()
            .to_string()
            .parse()
            .map_err(|e| malformed(format!("manifest digest: {e}")))?;
        let manifest_bytes = self.read_verified(&manifest_digest, &place)?;
        let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| malformed(format!("manifest {manifest_digest}: {e}")))?;
        let config = config_descriptor(&manifest, &place)?;
        if config.size() > MAX_CONFIG_SIZE {
            return Err(malformed(format!(
                "cache config of {} bytes is larger than {MAX_CONFIG_SIZE}",
                config.size()
            )));
        }
        let config_digest: Digest = config
            .digest()
            .to_string()
            .parse()
            .map_err(|e| malformed(format!("config digest: {e}")))?;
        let config_bytes = self.read_verified(&config_digest, &place)?;
        decode(&manifest, &config_bytes, &place)
    }

    /// Reads a small blob and checks its digest.
    fn read_verified(&self, digest: &Digest, place: &str) -> Result<Vec<u8>, RemoteCacheError> {
        let path = self.blob_path(digest);
        let bytes = fs::read(&path).map_err(self.io(path))?;
        if Digest::of(&bytes) != *digest {
            return Err(RemoteCacheError::Malformed {
                place: place.to_owned(),
                reason: format!("blob {digest} does not match its digest"),
            });
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(n: u8) -> LayerRecord {
        LayerRecord {
            diff_id: Digest::of(&[b'd', n]),
            blob: Digest::of(&[b'b', n]),
            size: u64::from(n) * 10,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".to_owned(),
            created: i64::from(n),
        }
    }

    fn record(layers: &[u8]) -> CacheRecord {
        CacheRecord {
            layers: layers.iter().map(|&n| layer(n)).collect(),
            created: 7,
        }
    }

    fn key(n: u8) -> Digest {
        Digest::of(&[b'k', n])
    }

    #[test]
    fn encode_decode_round_trip_lists_shared_layers_once() {
        let records = vec![
            (key(1), record(&[1])),
            (key(2), record(&[1, 2])),
            (key(3), record(&[1, 2])),
            (key(4), record(&[])),
            (key(5), record(&[3])),
        ];
        let cache = encode(&records);
        assert_eq!(cache.layers.len(), 3);
        let manifest: ImageManifest = serde_json::from_slice(&cache.manifest).unwrap();
        assert_eq!(manifest.layers().len(), 3);
        assert_eq!(Digest::of(&cache.config), cache.config_digest);
        let decoded = decode(&manifest, &cache.config, "test").unwrap();
        assert_eq!(decoded, by_key(records));
    }

    /// `records` in the order a cache lists them.
    fn by_key(mut records: Vec<(Digest, CacheRecord)>) -> Vec<(Digest, CacheRecord)> {
        records.sort_by(|a, b| a.0.cmp(&b.0));
        records
    }

    #[test]
    fn the_same_records_in_another_order_make_the_same_cache() {
        let records = vec![
            (key(1), record(&[1])),
            (key(2), record(&[1, 2])),
            (key(3), record(&[3])),
        ];
        let reversed: Vec<_> = records.iter().rev().cloned().collect();
        assert_eq!(
            encode(&records).manifest_digest,
            encode(&reversed).manifest_digest
        );
        let image = [layer(1), layer(2)];
        assert_eq!(
            serde_json::to_vec(&encode_inline(records, &image)).unwrap(),
            serde_json::to_vec(&encode_inline(reversed, &image)).unwrap()
        );
    }

    #[test]
    fn one_blob_made_at_two_times_keeps_both_times() {
        // A COPY --from of a file a RUN wrote can make the very same blob.
        let early = layer(1);
        let late = LayerRecord {
            created: 99,
            ..layer(1)
        };
        let records = vec![
            (
                key(1),
                CacheRecord {
                    layers: vec![layer(2), early],
                    created: 1,
                },
            ),
            (
                key(2),
                CacheRecord {
                    layers: vec![layer(2), layer(3), late],
                    created: 2,
                },
            ),
        ];
        let cache = encode(&records);
        assert_eq!(cache.layers.len(), 4);
        let manifest: ImageManifest = serde_json::from_slice(&cache.manifest).unwrap();
        assert_eq!(
            decode(&manifest, &cache.config, "t").unwrap(),
            by_key(records)
        );
    }

    #[test]
    fn encoding_is_deterministic() {
        let records = vec![(key(1), record(&[1, 2])), (key(2), record(&[1]))];
        assert_eq!(
            encode(&records).manifest_digest,
            encode(&records).manifest_digest
        );
    }

    #[test]
    fn decode_rejects_bad_configs() {
        let cache = encode(&[(key(1), record(&[1, 2]))]);
        let manifest: ImageManifest = serde_json::from_slice(&cache.manifest).unwrap();
        let mut config: CacheConfig = serde_json::from_slice(&cache.config).unwrap();
        config.records[0].layers.push(9);
        let err = decode(&manifest, &serde_json::to_vec(&config).unwrap(), "here").unwrap_err();
        assert!(err.to_string().contains("names layer 9 of 2"), "{err}");
        config.records[0].layers.pop();
        config.layers.pop();
        let err = decode(&manifest, &serde_json::to_vec(&config).unwrap(), "here").unwrap_err();
        assert!(
            err.to_string().contains("2 layers in the manifest but 1"),
            "{err}"
        );
        let err = decode(&manifest, b"{", "here").unwrap_err();
        assert!(
            err.to_string().starts_with("here: malformed cache config"),
            "{err}"
        );
        config.version = 2;
        let err = decode(&manifest, &serde_json::to_vec(&config).unwrap(), "here").unwrap_err();
        assert!(err.to_string().contains("version 2"), "{err}");
    }

    #[test]
    fn an_image_manifest_is_not_a_cache() {
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .config(Descriptor::new(
                MediaType::ImageConfig,
                2,
                &Digest::of(b"{}"),
            ))
            .layers(vec![])
            .build()
            .unwrap();
        let err = decode(&manifest, b"{}", "r/x:1").unwrap_err();
        assert!(err.to_string().contains("not a kiln cache"), "{err}");
    }

    #[test]
    fn min_mode_keeps_the_image_chain() {
        let image = record(&[1, 2, 3]).layers;
        let records = vec![
            (key(1), record(&[1])),
            (key(2), record(&[1, 2])),
            (key(3), record(&[1, 2, 3])),
            (key(4), record(&[1, 5])),
            (key(5), record(&[1, 2, 3, 4])),
            (key(6), record(&[])),
        ];
        let kept: Vec<Digest> = only_image_chain(records, &image)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(kept, vec![key(1), key(2), key(3), key(6)]);
    }

    #[test]
    fn inline_round_trip() {
        let image = record(&[1, 2, 3]).layers;
        let records = vec![
            (key(1), record(&[1])),
            (key(2), record(&[1, 2])),
            (key(4), record(&[1, 5])),
            (key(3), record(&[1, 2, 3])),
        ];
        let inline = encode_inline(records.clone(), &image);
        assert_eq!(inline.records.len(), 3);
        let value = serde_json::to_value(&inline).unwrap();
        let mut undated = image.clone();
        for l in &mut undated {
            l.created = 0;
        }
        let decoded = decode_inline(&value, undated.clone(), "img").unwrap();
        let expected: Vec<_> = records.into_iter().filter(|(k, _)| *k != key(4)).collect();
        assert_eq!(decoded, by_key(expected));
        let err = decode_inline(&value, undated[..2].to_vec(), "img").unwrap_err();
        assert!(
            err.to_string()
                .contains("dates 3 layers but the image has 2"),
            "{err}"
        );
        let mut bad = inline.clone();
        bad.records[0].layers = 7;
        let err = decode_inline(&serde_json::to_value(&bad).unwrap(), undated, "img").unwrap_err();
        assert!(err.to_string().contains("names 7 layers of 3"), "{err}");
    }

    struct Blobs(HashMap<Digest, Vec<u8>>);

    impl BlobRead for Blobs {
        fn open_blob(&self, digest: &Digest) -> io::Result<Box<dyn io::Read + Send + '_>> {
            let bytes = self.0.get(digest).ok_or(io::ErrorKind::NotFound)?;
            Ok(Box::new(&bytes[..]))
        }
        fn blob_size(&self, digest: &Digest) -> io::Result<u64> {
            Ok(self.0.get(digest).ok_or(io::ErrorKind::NotFound)?.len() as u64)
        }
    }

    fn real_layer(content: &[u8], created: i64) -> (LayerRecord, Vec<u8>) {
        let record = LayerRecord {
            diff_id: Digest::of(content),
            blob: Digest::of(content),
            size: content.len() as u64,
            media_type: "application/vnd.oci.image.layer.v1.tar".to_owned(),
            created,
        };
        (record, content.to_vec())
    }

    #[test]
    fn layout_round_trip_and_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().join("cache"));
        let (a, a_bytes) = real_layer(b"layer a", 1);
        let (b, b_bytes) = real_layer(b"layer b", 2);
        let blobs = Blobs(
            [(a.blob.clone(), a_bytes), (b.blob.clone(), b_bytes)]
                .into_iter()
                .collect(),
        );
        let first = vec![(
            key(1),
            CacheRecord {
                layers: vec![a.clone()],
                created: 3,
            },
        )];
        layout.write(&encode(&first), "main", &blobs).unwrap();
        let second = vec![(
            key(2),
            CacheRecord {
                layers: vec![a.clone(), b.clone()],
                created: 4,
            },
        )];
        layout.write(&encode(&second), "other", &blobs).unwrap();
        assert_eq!(layout.read("main").unwrap(), first);
        assert_eq!(layout.read("other").unwrap(), second);
        assert_eq!(fs::read(layout.blob_path(&b.blob)).unwrap(), b"layer b");
        // Writing a tag again replaces it.
        layout.write(&encode(&second), "main", &blobs).unwrap();
        assert_eq!(layout.read("main").unwrap(), second);
        let index = layout.read_index().unwrap().unwrap();
        assert_eq!(index.manifests().len(), 2);

        let err = layout.read("absent").unwrap_err();
        assert!(
            err.to_string().contains("no manifest named \"absent\""),
            "{err}"
        );
        // A damaged config blob is noticed.
        let cache = encode(&second);
        fs::write(layout.blob_path(&cache.config_digest), b"{}").unwrap();
        let err = layout.read("main").unwrap_err();
        assert!(
            err.to_string().contains("does not match its digest"),
            "{err}"
        );
    }
}

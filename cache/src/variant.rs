//! Compressed variants of plain layers.
//!
//! The layers a build makes are stored as plain tars: the blob is the diff itself, so
//! writing a layer hashes it once and compresses nothing, and unpacking it needs no
//! decompression. A layer is compressed when it leaves the store for a registry or a
//! cache, once: the compressed blob is a blob of its own, and the cache index remembers
//! which variant belongs to which plain layer, so the next push of that layer finds it
//! ready. If the collector has taken the variant since, it is made again (compression
//! is deterministic, so it comes out the same).
//!
//! Layers that arrived compressed (pulled, loaded, fetched from a remote cache) are
//! kept as they came and leave as they are.

use std::io::BufReader;

use kiln_image::Digest;
use kiln_image::layer::{Compression, compress_layer};
use kiln_image::media_type::{Kind, classify};
use kiln_image::oci_spec::image::{ImageIndex, ImageManifest, MediaType};

use crate::{CacheError, CacheIndex, ContentStore, LayerRecord};

/// `layer` as it should leave the store: itself when it is already compressed (or
/// `compression` is none, or it is not a layer media type kiln knows), otherwise its
/// `compression` variant, made and remembered on first use.
pub fn compressed(
    content: &ContentStore,
    index: &CacheIndex,
    layer: &LayerRecord,
    compression: Compression,
) -> Result<LayerRecord, CacheError> {
    let Kind::Layer {
        compression: Compression::None,
        flavor,
        ..
    } = classify(&MediaType::from(layer.media_type.as_str()))
    else {
        return Ok(layer.clone());
    };
    if compression == Compression::None {
        return Ok(layer.clone());
    }
    let key = variant_key(&layer.blob, compression);
    if let Some(known) = index.variant(&key)?
        && content.contains(&known.blob)
    {
        // Renewed: a variant in use is the last the size-limited collector takes.
        content.touch(&known.blob)?;
        return Ok(LayerRecord {
            created: layer.created,
            ..known
        });
    }
    let mut writer = content.writer_hashed_by_caller()?;
    // A layer kept as its snapshot is compressed straight from the snapshot's tree,
    // without writing the plain blob out first.
    let written = match content.write_kept(&layer.blob, &mut writer, compression, flavor)? {
        Some(written) => written,
        None => {
            let plain = content.open_blob(&layer.blob)?;
            compress_layer(
                BufReader::with_capacity(1 << 20, plain),
                &mut writer,
                compression,
                None,
                flavor,
            )
            .map_err(|source| CacheError::Compress {
                blob: layer.blob.clone(),
                source: Box::new(source),
            })?
        }
    };
    // What was read is what was compressed: a plain blob that changed on disk is not
    // passed on under its name.
    if written.diff_id != layer.blob {
        return Err(CacheError::DigestMismatch {
            expected: layer.blob.clone(),
            actual: written.diff_id,
        });
    }
    writer.commit(Some(&written.digest))?;
    let variant = LayerRecord {
        diff_id: layer.diff_id.clone(),
        blob: written.digest,
        size: written.size,
        media_type: written.media_type.to_string(),
        created: layer.created,
    };
    index.put_variant(&key, &variant)?;
    Ok(variant)
}

/// The `compression` variant of the plain layer blob `plain` made earlier, if any
/// (its blob may have been collected since).
pub fn known(
    index: &CacheIndex,
    plain: &Digest,
    compression: Compression,
) -> Result<Option<LayerRecord>, CacheError> {
    Ok(index.variant(&variant_key(plain, compression))?)
}

fn variant_key(plain: &Digest, compression: Compression) -> String {
    format!("{plain}/{compression}")
}

/// The image `manifest` (a manifest or an index in the store) as it should be pushed:
/// itself when every layer it names is already compressed, otherwise a new document
/// (written to the store) whose plain layers are replaced by their `compression`
/// variants. The config, and with it the image ID, stays the same. Index entries the
/// store does not hold are left as they are.
pub fn distributable(
    content: &ContentStore,
    index: &CacheIndex,
    manifest: &Digest,
    compression: Compression,
) -> Result<Digest, CacheError> {
    let bytes = content.read(manifest)?;
    let bad = |source| CacheError::BadManifest {
        digest: manifest.clone(),
        source,
    };
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(bad)?;
    let changed = if value.get("manifests").is_some() {
        let mut list: ImageIndex = serde_json::from_value(value).map_err(bad)?;
        let mut entries = list.manifests().clone();
        let mut changed = false;
        for entry in &mut entries {
            let Ok(child) = Digest::try_from(entry.digest()) else {
                continue;
            };
            if !content.contains(&child) {
                continue;
            }
            let pushed = distributable(content, index, &child, compression)?;
            if pushed != child {
                entry.set_size(content.size(&pushed)?);
                entry.set_digest((&pushed).into());
                changed = true;
            }
        }
        list.set_manifests(entries);
        changed.then(|| serde_json::to_vec(&list))
    } else {
        let mut image: ImageManifest = serde_json::from_value(value).map_err(bad)?;
        let mut layers = image.layers().clone();
        let mut changed = false;
        for descriptor in &mut layers {
            let Ok(blob) = Digest::try_from(descriptor.digest()) else {
                continue;
            };
            let layer = LayerRecord {
                diff_id: blob.clone(),
                blob,
                size: descriptor.size(),
                media_type: descriptor.media_type().to_string(),
                created: 0,
            };
            let variant = compressed(content, index, &layer, compression)?;
            if variant.blob != layer.blob {
                descriptor.set_media_type(MediaType::from(variant.media_type.as_str()));
                descriptor.set_size(variant.size);
                descriptor.set_digest((&variant.blob).into());
                changed = true;
            }
        }
        image.set_layers(layers);
        changed.then(|| serde_json::to_vec(&image))
    };
    match changed {
        None => Ok(manifest.clone()),
        Some(json) => content.put(&json.map_err(bad)?),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use kiln_image::layer::{Source, WriteOptions, write_layer};
    use kiln_image::media_type::Flavor;

    use super::*;
    use crate::Store;

    fn plain_layer(store: &Store, flavor: Flavor) -> LayerRecord {
        let tree = tempfile::tempdir().unwrap();
        fs::write(tree.path().join("hello"), "hello ".repeat(10_000)).unwrap();
        let content = store.content();
        let mut writer = content.writer_hashed_by_caller().unwrap();
        let options = WriteOptions::default()
            .with_compression(Compression::None)
            .with_flavor(flavor)
            .with_source(Source::Tree);
        let layer = write_layer(tree.path(), &mut writer, &options).unwrap();
        writer.commit(Some(&layer.digest)).unwrap();
        assert_eq!(
            layer.digest, layer.diff_id,
            "a plain layer's blob is its diff"
        );
        LayerRecord {
            diff_id: layer.diff_id,
            blob: layer.digest,
            size: layer.size,
            media_type: layer.media_type.to_string(),
            created: 7,
        }
    }

    #[test]
    fn a_plain_layer_is_compressed_once_and_remembered() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let plain = plain_layer(&store, Flavor::Oci);
        let gzip = compressed(store.content(), &store.index(), &plain, Compression::Gzip).unwrap();
        assert_eq!(
            gzip.media_type,
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        assert_eq!(gzip.diff_id, plain.diff_id);
        assert_eq!(gzip.created, 7);
        assert!(
            gzip.size < plain.size / 10,
            "{} of {}",
            gzip.size,
            plain.size
        );
        let bytes = store.content().read(&gzip.blob).unwrap();
        let (found, mut tar) = Compression::decompress(bytes.as_slice()).unwrap();
        assert_eq!(found, Compression::Gzip);
        let mut unpacked = Vec::new();
        std::io::copy(&mut tar, &mut unpacked).unwrap();
        assert_eq!(kiln_image::Digest::of(&unpacked), plain.blob);

        // Remembered: the same variant, not made again (its blob keeps its inode).
        let inode = |d: &kiln_image::Digest| {
            std::os::unix::fs::MetadataExt::ino(&fs::metadata(store.content().path(d)).unwrap())
        };
        let first = inode(&gzip.blob);
        assert_eq!(
            compressed(store.content(), &store.index(), &plain, Compression::Gzip).unwrap(),
            gzip
        );
        assert_eq!(inode(&gzip.blob), first);

        // Collected since: made again, the same bytes.
        store.content().delete(&gzip.blob).unwrap();
        assert_eq!(
            compressed(store.content(), &store.index(), &plain, Compression::Gzip).unwrap(),
            gzip
        );
        assert!(store.content().contains(&gzip.blob));

        // A separate variant per compression.
        let zstd = compressed(store.content(), &store.index(), &plain, Compression::Zstd).unwrap();
        assert_eq!(
            zstd.media_type,
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
        assert_ne!(zstd.blob, gzip.blob);
    }

    #[test]
    fn compressed_and_unknown_layers_leave_as_they_are() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let plain = plain_layer(&store, Flavor::Docker);
        let gzip = compressed(store.content(), &store.index(), &plain, Compression::Gzip).unwrap();
        assert_eq!(
            gzip.media_type,
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
        assert_eq!(
            compressed(store.content(), &store.index(), &gzip, Compression::Zstd).unwrap(),
            gzip
        );
        assert_eq!(
            compressed(store.content(), &store.index(), &plain, Compression::None).unwrap(),
            plain
        );
        let foreign = LayerRecord {
            media_type: "application/x-unknown".into(),
            ..plain.clone()
        };
        assert_eq!(
            compressed(store.content(), &store.index(), &foreign, Compression::Gzip).unwrap(),
            foreign
        );
    }

    #[test]
    fn a_plain_blob_changed_on_disk_is_not_passed_on() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let plain = plain_layer(&store, Flavor::Oci);
        let path = store.content().path(&plain.blob);
        let mut bytes = fs::read(&path).unwrap();
        bytes[600] ^= 1;
        fs::write(&path, bytes).unwrap();
        let err =
            compressed(store.content(), &store.index(), &plain, Compression::Gzip).unwrap_err();
        assert!(
            matches!(err, CacheError::DigestMismatch { ref expected, .. } if *expected == plain.blob),
            "{err}"
        );
    }
}

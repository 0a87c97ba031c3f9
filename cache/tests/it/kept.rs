//! Layers kept as their overlay snapshot: present while the snapshot is, written out
//! when read, checked against the snapshot's tree, and saved by the collector before it
//! removes a snapshot that a wanted layer lives in.

use std::fs;
use std::io::Read;

use kiln_cache::content::SnapshotLayer;
use kiln_cache::{
    CacheError, ChainId, GcOptions, GcRoots, LayerRecord, Problem, SnapshotMode, Store, variant,
};
use kiln_image::Digest;
use kiln_image::layer::{Compression, Source, WriteOptions, compress_layer, write_layer};
use kiln_image::media_type::Flavor;

use crate::TestContext;

/// A committed overlay snapshot holding two files, on a parent (so that its chain ID is
/// not its diff ID), and the plain layer its tree writes, kept as that snapshot.
/// Returns the layer's bytes too.
fn kept_layer(store: &Store) -> (Digest, ChainId, Vec<u8>) {
    let snapshots = store.snapshotter(SnapshotMode::Overlay).unwrap();
    let scratch = snapshots.scratch().unwrap();
    let base = scratch.path().join("base");
    fs::create_dir(&base).unwrap();
    let parent = snapshots
        .commit_dir(None, &Digest::of(b"base layer"), &base)
        .unwrap()
        .chain_id;
    let tree = scratch.path().join("tree");
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::write(tree.join("etc/motd"), "kept as a snapshot\n").unwrap();
    fs::write(tree.join("big"), vec![7u8; 300_000]).unwrap();
    let options = WriteOptions {
        compression: Compression::None,
        source: Source::Tree,
        ..WriteOptions::default()
    };
    let mut bytes = Vec::new();
    let layer = write_layer(&tree, &mut bytes, &options).unwrap();
    assert_eq!(layer.digest, Digest::of(&bytes));
    let info = snapshots
        .commit_dir(Some(&parent), &layer.diff_id, &tree)
        .unwrap();
    store
        .content()
        .keep_as_snapshot(
            &layer.digest,
            &SnapshotLayer {
                chain_id: info.chain_id.clone(),
                size: layer.size,
                overlay_upper: false,
                source_date_epoch: None,
            },
        )
        .unwrap();
    (layer.digest, info.chain_id, bytes)
}

fn read_all(store: &Store, digest: &Digest) -> Result<Vec<u8>, CacheError> {
    let mut out = Vec::new();
    store
        .content()
        .open_blob(digest)?
        .read_to_end(&mut out)
        .unwrap();
    Ok(out)
}

#[test]
fn a_kept_layer_is_present_and_written_out_when_first_read() {
    let ctx = TestContext::new();
    let store = Store::open(ctx.path()).unwrap();
    let content = store.content();
    let (digest, _, bytes) = kept_layer(&store);

    assert!(content.contains(&digest));
    assert!(
        !content.path(&digest).exists(),
        "no blob file before a read"
    );
    assert_eq!(content.size(&digest).unwrap(), bytes.len() as u64);
    let listed = content.entries().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].in_snapshot);
    assert_eq!(listed[0].size, bytes.len() as u64);
    assert!(store.check().unwrap().is_clean());

    assert_eq!(read_all(&store, &digest).unwrap(), bytes);
    assert!(content.path(&digest).is_file(), "written out by the read");
    let listed = content.entries().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(!listed[0].in_snapshot);
    // Keeping it again changes nothing: the file is there.
    let (again, _, _) = kept_layer(&store);
    assert_eq!(again, digest);
    assert!(!content.entries().unwrap()[0].in_snapshot);
}

#[test]
fn a_kept_layer_goes_with_its_snapshot() {
    let ctx = TestContext::new();
    let store = Store::open(ctx.path()).unwrap();
    let (digest, chain_id, _) = kept_layer(&store);
    store
        .snapshotter(SnapshotMode::Overlay)
        .unwrap()
        .remove(&chain_id)
        .unwrap();

    assert!(!store.content().contains(&digest));
    assert!(matches!(
        read_all(&store, &digest),
        Err(CacheError::BlobNotFound(d)) if d == digest
    ));
    let report = store.check().unwrap();
    assert!(
        matches!(
            &report.findings[..],
            [f] if matches!(&f.problem, Problem::UnreadableBlob { digest: d, .. } if *d == digest)
        ),
        "{report:?}"
    );
    let store = store.lock_exclusive().unwrap();
    store.repair().unwrap();
    assert!(store.store().content().entries().unwrap().is_empty());
    assert!(store.store().check().unwrap().is_clean());
}

#[test]
fn a_changed_snapshot_is_refused_and_reported() {
    let ctx = TestContext::new();
    let store = Store::open(ctx.path()).unwrap();
    let (digest, chain_id, _) = kept_layer(&store);
    let motd = store
        .snapshotter(SnapshotMode::Overlay)
        .unwrap()
        .get(&chain_id)
        .unwrap()
        .unwrap()
        .fs
        .join("etc/motd");
    fs::write(&motd, "edited by hand\n").unwrap();

    assert!(matches!(
        read_all(&store, &digest),
        Err(CacheError::SnapshotChanged { blob, chain_id: c, .. }) if blob == digest && c == chain_id
    ));
    assert!(!store.content().path(&digest).exists());
    let report = store.check().unwrap();
    assert!(
        matches!(
            &report.findings[..],
            [f] if matches!(&f.problem, Problem::CorruptBlob { digest: d, .. } if *d == digest)
        ),
        "{report:?}"
    );
    let store = store.lock_exclusive().unwrap();
    store.repair().unwrap();
    assert!(!store.store().content().contains(&digest));
}

#[test]
fn the_collector_writes_a_wanted_layer_out_before_removing_its_snapshot() {
    let ctx = TestContext::new();
    let store = Store::open(ctx.path()).unwrap();
    let (digest, chain_id, bytes) = kept_layer(&store);
    // The cache wants the blob; nothing reaches the snapshot.
    let roots = GcRoots {
        tagged: Vec::new(),
        cache: vec![digest.clone()],
    };
    let usage = store.disk_usage(&roots).unwrap();
    assert_eq!(usage.blobs.count, 1);
    assert_eq!(usage.blobs.bytes, 0, "the snapshot holds its bytes");

    let store = store.lock_exclusive().unwrap();
    let report = store.gc(&roots, &GcOptions::default()).unwrap();
    assert!(report.blobs.is_empty(), "{report:?}");
    assert_eq!(report.snapshots.len(), 2, "{report:?}");
    assert_eq!(report.snapshots[0].chain_id, chain_id);
    let content = store.store().content();
    assert!(content.path(&digest).is_file());
    assert_eq!(content.read(&digest).unwrap(), bytes);
    assert!(!content.entries().unwrap()[0].in_snapshot);
}

#[test]
fn collecting_a_kept_layer_leaves_a_wanted_snapshot() {
    let ctx = TestContext::new();
    let store = Store::open(ctx.path()).unwrap();
    let (digest, chain_id, _) = kept_layer(&store);
    let roots = GcRoots {
        tagged: Vec::new(),
        cache: vec![chain_id.digest().clone()],
    };
    let store = store.lock_exclusive().unwrap();
    let report = store.gc(&roots, &GcOptions::default()).unwrap();
    assert_eq!(
        report.blobs.iter().map(|(d, _)| d).collect::<Vec<_>>(),
        [&digest]
    );
    assert!(report.snapshots.is_empty());
    assert!(!store.store().content().contains(&digest));
    assert!(
        store
            .store()
            .snapshotter(SnapshotMode::Overlay)
            .unwrap()
            .get(&chain_id)
            .unwrap()
            .is_some()
    );
}

#[test]
fn a_kept_layer_is_compressed_from_its_snapshot_without_being_written_out() {
    let ctx = TestContext::new();
    let store = Store::open(ctx.path()).unwrap();
    let content = store.content();
    let (digest, _, bytes) = kept_layer(&store);
    let layer = LayerRecord {
        diff_id: digest.clone(),
        blob: digest.clone(),
        size: bytes.len() as u64,
        media_type: "application/vnd.oci.image.layer.v1.tar".to_owned(),
        created: 0,
    };
    let gzip = variant::compressed(content, &store.index(), &layer, Compression::Gzip).unwrap();
    assert!(
        !content.path(&digest).exists(),
        "the plain layer was written out"
    );
    // The variant is what compressing the plain bytes gives.
    let mut expected = Vec::new();
    let from_bytes = compress_layer(
        &bytes[..],
        &mut expected,
        Compression::Gzip,
        None,
        Flavor::Oci,
    )
    .unwrap();
    assert_eq!(gzip.blob, from_bytes.digest);
    assert_eq!(gzip.diff_id, digest);
    assert_eq!(content.read(&gzip.blob).unwrap(), expected);
}

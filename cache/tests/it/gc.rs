//! Garbage collection and disk usage: roots, tiers, keep-storage, crash leftovers.

use std::fs::{self, File};
use std::io::Write;
use std::time::{Duration, SystemTime};

use kiln_cache::gc::RemovedSnapshot;
use kiln_cache::{CacheError, ChainId, GcOptions, GcRoots, SnapshotMode, Snapshotter, Store};
use kiln_image::Digest;

use crate::{TestContext, TestImage, names};

/// Commits a snapshot of one file; its diff ID is that of `layer`.
fn snapshot(snapshots: &Snapshotter, parent: Option<&ChainId>, layer: &Digest) -> ChainId {
    let scratch = snapshots.scratch().unwrap();
    let dir = scratch.path().join("upper");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("file"), layer.to_string()).unwrap();
    snapshots.commit_dir(parent, layer, &dir).unwrap().chain_id
}

/// Snapshots for every prefix of the image's layers.
fn unpack(snapshots: &Snapshotter, image: &TestImage) -> Vec<ChainId> {
    let mut chain: Vec<ChainId> = Vec::new();
    for layer in &image.layers {
        let next = snapshot(snapshots, chain.last(), layer);
        chain.push(next);
    }
    chain
}

fn set_last_use(path: &std::path::Path, secs_ago: u64) {
    File::open(path)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(secs_ago))
        .unwrap();
}

fn sorted(mut v: Vec<Digest>) -> Vec<Digest> {
    v.sort();
    v
}

#[test]
fn keeps_what_tags_reach_and_removes_the_rest() {
    let ctx = TestContext::new();
    let store = Store::open(ctx.path()).unwrap();
    let content = store.content();
    let snapshots = store.snapshotter(SnapshotMode::Overlay).unwrap();
    let image = TestImage::write(content, &[b"base layer", b"app layer"]);
    let index = TestImage::index(content, &[&image]);
    let chain = unpack(&snapshots, &image);
    let stray = content.put(b"stray blob").unwrap();
    let stray_layer = TestImage::write(content, &[b"orphan image layer"]);
    let stray_chain = snapshot(&snapshots, Some(&chain[1]), &Digest::of(b"stray diff"));

    let roots = GcRoots {
        tagged: vec![index.clone()],
        cache: vec![],
    };
    let usage = store.disk_usage(&roots).unwrap();
    assert_eq!(usage.blobs.count, 9);
    assert_eq!(usage.snapshots.count, 3);

    let exclusive = store.lock_exclusive().unwrap();
    let report = exclusive.gc(&roots, &GcOptions::default()).unwrap();
    let mut expected_gone = vec![stray.clone()];
    expected_gone.extend(stray_layer.blobs());
    assert_eq!(
        sorted(report.blobs.iter().map(|(d, _)| d.clone()).collect()),
        sorted(expected_gone)
    );
    assert_eq!(
        report
            .snapshots
            .iter()
            .map(|s| &s.chain_id)
            .collect::<Vec<_>>(),
        [&stray_chain]
    );
    assert_eq!(
        usage.reclaimable, report.bytes_freed,
        "du predicted what gc freed"
    );

    let store = exclusive.into_shared().unwrap();
    let mut kept = vec![index];
    kept.extend(image.blobs());
    assert_eq!(
        sorted(
            store
                .content()
                .list()
                .unwrap()
                .into_iter()
                .map(|(d, _)| d)
                .collect()
        ),
        sorted(kept)
    );
    assert_eq!(
        snapshots.lowerdirs(&chain[1]).unwrap().len(),
        2,
        "the image's chain stays mountable"
    );
    assert!(snapshots.get(&stray_chain).unwrap().is_none());
}

#[test]
fn cache_roots_are_kept_unless_all() {
    let ctx = TestContext::new();
    let store = Store::open(ctx.path()).unwrap();
    let content = store.content();
    let snapshots = store.snapshotter(SnapshotMode::Overlay).unwrap();
    let tagged = TestImage::write(content, &[b"tagged layer"]);
    let cached = TestImage::write(content, &[b"cached layer"]);
    let tagged_chain = unpack(&snapshots, &tagged);
    // A RUN result known only to the cache index, by its snapshot's chain ID.
    let run_result = snapshot(
        &snapshots,
        Some(&tagged_chain[0]),
        &Digest::of(b"run output"),
    );
    let roots = GcRoots {
        tagged: vec![tagged.manifest.clone()],
        cache: vec![cached.manifest.clone(), run_result.digest().clone()],
    };
    let usage = store.disk_usage(&roots).unwrap();
    assert_eq!(usage.reclaimable, 0);
    let exclusive = store.lock_exclusive().unwrap();
    let report = exclusive.gc(&roots, &GcOptions::default()).unwrap();
    assert!(
        report.blobs.is_empty() && report.snapshots.is_empty(),
        "{report:?}"
    );

    let report = exclusive
        .gc(
            &roots,
            &GcOptions {
                keep: None,
                all: true,
            },
        )
        .unwrap();
    assert_eq!(usage.reclaimable_all, report.bytes_freed);
    assert_eq!(
        sorted(report.blobs.iter().map(|(d, _)| d.clone()).collect()),
        sorted(cached.blobs())
    );
    assert_eq!(report.snapshots.len(), 1);
    assert_eq!(report.snapshots[0].chain_id, run_result);
    // The tagged image's snapshot, parent of the removed one, stays.
    assert!(snapshots.get(&tagged_chain[0]).unwrap().is_some());
    for blob in tagged.blobs() {
        assert!(exclusive.store().content().contains(&blob));
    }
}

#[test]
fn keep_storage_removes_least_recently_used_first() {
    let ctx = TestContext::new();
    let store = Store::open(ctx.path()).unwrap();
    let content = store.content();
    let old = content.put(&[1; 1000]).unwrap();
    let middle = content.put(&[2; 1000]).unwrap();
    let recent = content.put(&[3; 1000]).unwrap();
    set_last_use(&content.path(&old), 300);
    set_last_use(&content.path(&middle), 200);
    set_last_use(&content.path(&recent), 100);
    // Using a blob again makes it recent.
    content.touch(&old).unwrap();

    let exclusive = store.lock_exclusive().unwrap();
    let roots = GcRoots::default();
    let report = exclusive
        .gc(
            &roots,
            &GcOptions {
                keep: Some(2000),
                all: false,
            },
        )
        .unwrap();
    assert_eq!(report.blobs, vec![(middle, 1000)]);
    let report = exclusive
        .gc(
            &roots,
            &GcOptions {
                keep: Some(2000),
                all: false,
            },
        )
        .unwrap();
    assert!(
        report.blobs.is_empty(),
        "already under the limit: {report:?}"
    );
    let report = exclusive
        .gc(
            &roots,
            &GcOptions {
                keep: Some(1),
                all: false,
            },
        )
        .unwrap();
    assert_eq!(report.blobs, vec![(recent, 1000), (old, 1000)]);
}

#[test]
fn keep_storage_takes_unreachable_before_cache_content() {
    let ctx = TestContext::new();
    let store = Store::open(ctx.path()).unwrap();
    let content = store.content();
    let cached = content.put(&[1; 1000]).unwrap();
    let unreachable = content.put(&[2; 1000]).unwrap();
    set_last_use(&content.path(&cached), 500);
    let roots = GcRoots {
        tagged: vec![],
        cache: vec![cached.clone()],
    };
    let exclusive = store.lock_exclusive().unwrap();
    let report = exclusive
        .gc(
            &roots,
            &GcOptions {
                keep: Some(1000),
                all: true,
            },
        )
        .unwrap();
    assert_eq!(
        report.blobs,
        vec![(unreachable, 1000)],
        "the older cache blob goes last"
    );
    let report = exclusive
        .gc(
            &roots,
            &GcOptions {
                keep: Some(0),
                all: false,
            },
        )
        .unwrap();
    assert!(
        report.blobs.is_empty(),
        "without all, cache content stays: {report:?}"
    );
}

#[test]
fn removing_an_overlay_snapshot_takes_its_descendants() {
    let ctx = TestContext::new();
    let store = Store::open(ctx.path()).unwrap();
    let snapshots = store.snapshotter(SnapshotMode::Overlay).unwrap();
    let parent = snapshot(&snapshots, None, &Digest::of(b"p"));
    let child = snapshot(&snapshots, Some(&parent), &Digest::of(b"c"));
    let grandchild = snapshot(&snapshots, Some(&child), &Digest::of(b"g"));
    // The parent is the least recently used, so it goes first, and its line with it.
    set_last_use(
        &snapshots
            .get(&parent)
            .unwrap()
            .unwrap()
            .fs
            .with_file_name("meta.json"),
        1000,
    );
    let size = snapshots.get(&parent).unwrap().unwrap().size;
    let exclusive = store.lock_exclusive().unwrap();
    let report = exclusive
        .gc(
            &GcRoots::default(),
            &GcOptions {
                keep: Some(size * 2),
                all: false,
            },
        )
        .unwrap();
    let removed: Vec<&ChainId> = report.snapshots.iter().map(|s| &s.chain_id).collect();
    assert_eq!(removed, [&grandchild, &child, &parent]);
    assert!(snapshots.list().unwrap().is_empty());
    assert!(matches!(
        report.snapshots[0],
        RemovedSnapshot {
            mode: SnapshotMode::Overlay,
            ..
        }
    ));
}

#[test]
fn crash_leftovers_are_ignored_then_swept() {
    let ctx = TestContext::new();
    let image_layer;
    let live_writer;
    {
        let store = Store::open(ctx.path()).unwrap();
        image_layer = store.content().put(b"survivor").unwrap();
        let snapshots = store.snapshotter(SnapshotMode::Overlay).unwrap();
        snapshot(&snapshots, None, &image_layer);
        // A writer that is still running, in a handle that does not hold the root lock.
        let content = kiln_cache::ContentStore::open(&ctx.join("content-v1")).unwrap();
        let mut w = content.writer().unwrap();
        w.write_all(b"in flight").unwrap();
        live_writer = w;
    }
    // Another process using the store: opening it then leaves the leftovers alone.
    let busy = Store::open(ctx.path()).unwrap();
    // What a killed process leaves: temp blobs, a half-unpacked snapshot, a snapshot
    // directory without its metadata.
    fs::write(ctx.join("content-v1/ingest/blob-dead1"), vec![0u8; 5000]).unwrap();
    fs::write(ctx.join("content-v1/ingest/blob-dead2"), b"partial").unwrap();
    fs::create_dir_all(ctx.join("snapshots-v1/tmp/snap-dead/fs/usr/bin")).unwrap();
    fs::write(
        ctx.join("snapshots-v1/tmp/snap-dead/fs/usr/bin/half"),
        vec![0u8; 9000],
    )
    .unwrap();
    let broken = ChainId::base(&Digest::of(b"broken"));
    fs::create_dir_all(
        ctx.join("snapshots-v1/overlay")
            .join(broken.digest().hex())
            .join("fs"),
    )
    .unwrap();

    let store = Store::open(ctx.path()).unwrap();
    let snapshots = store.snapshotter(SnapshotMode::Overlay).unwrap();
    assert!(
        snapshots.get(&broken).unwrap().is_none(),
        "a snapshot without metadata is not one"
    );
    assert_eq!(snapshots.list().unwrap().len(), 1);
    assert_eq!(store.content().list().unwrap().len(), 1);
    let usage = store.disk_usage(&GcRoots::default()).unwrap();
    assert_eq!(usage.scratch.entries, 4);

    // A snapshot can be built over the broken directory's name.
    let scratch = snapshots.scratch().unwrap();
    fs::create_dir(scratch.path().join("up")).unwrap();
    let rebuilt = snapshots
        .commit_dir(None, &Digest::of(b"broken"), &scratch.path().join("up"))
        .unwrap();
    assert_eq!(rebuilt.chain_id, broken);
    drop(scratch);
    drop(busy);

    let roots = GcRoots {
        tagged: vec![image_layer.clone()],
        cache: vec![broken.digest().clone()],
    };
    let exclusive = store.lock_exclusive().unwrap();
    let report = exclusive.gc(&roots, &GcOptions::default()).unwrap();
    assert_eq!(report.scratch.entries, 3, "{report:?}");
    assert!(report.scratch.bytes >= 14000);
    assert!(report.blobs.is_empty() && report.snapshots.is_empty());
    assert_eq!(
        names(&ctx.join("content-v1/ingest")).len(),
        1,
        "the live writer's file stays"
    );
    assert!(names(&ctx.join("snapshots-v1/tmp")).is_empty());
    let (d, _) = live_writer.commit(None).unwrap();
    assert_eq!(exclusive.store().content().read(&d).unwrap(), b"in flight");
}

#[test]
fn an_unparseable_manifest_root_stops_the_collection() {
    let ctx = TestContext::new();
    let store = Store::open(ctx.path()).unwrap();
    let bad = store
        .content()
        .put(br#"{"schemaVersion": 2, "config": 7, "layers": "no"}"#)
        .unwrap();
    let keep_me = store.content().put(b"would be lost").unwrap();
    let exclusive = store.lock_exclusive().unwrap();
    let roots = GcRoots {
        tagged: vec![bad.clone()],
        cache: vec![],
    };
    let err = exclusive.gc(&roots, &GcOptions::default()).unwrap_err();
    assert!(
        matches!(&err, CacheError::BadManifest { digest, .. } if *digest == bad),
        "{err:?}"
    );
    assert!(exclusive.store().content().contains(&keep_me));
}

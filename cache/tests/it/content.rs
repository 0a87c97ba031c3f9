//! The content store: the blob-trait conformance suite, verified writes, concurrency.

use std::io::{ErrorKind, Read, Write};
use std::sync::{Arc, Barrier};

use kiln_cache::{CacheError, ContentStore};
use kiln_image::{BlobRead, BlobWrite, Digest};

use crate::{TestContext, names};

/// What every `BlobRead + BlobWrite` implementation must do.
fn blob_trait_conformance<S: BlobRead + BlobWrite>(store: &S) {
    let data = b"conformance blob".to_vec();
    let digest = Digest::of(&data);
    let absent = Digest::of(b"never written");

    assert!(!store.has_blob(&digest));
    assert_eq!(
        store.open_blob(&absent).err().map(|e| e.kind()),
        Some(ErrorKind::NotFound)
    );
    assert_eq!(
        store.blob_size(&absent).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        store.read_blob(&absent).unwrap_err().kind(),
        ErrorKind::NotFound
    );

    assert_eq!(
        store.write_blob(&digest, &mut &data[..]).unwrap(),
        data.len() as u64
    );
    assert!(store.has_blob(&digest));
    assert_eq!(store.blob_size(&digest).unwrap(), data.len() as u64);
    assert_eq!(store.read_blob(&digest).unwrap(), data);
    let mut streamed = Vec::new();
    store
        .open_blob(&digest)
        .unwrap()
        .read_to_end(&mut streamed)
        .unwrap();
    assert_eq!(streamed, data);

    // Writing it again is fine and changes nothing.
    assert_eq!(
        store.write_blob(&digest, &mut &data[..]).unwrap(),
        data.len() as u64
    );
    assert_eq!(store.read_blob(&digest).unwrap(), data);

    // Bytes that do not match the announced digest are refused and not stored.
    let liar = Digest::of(b"something else");
    let err = store.write_blob(&liar, &mut &b"not it"[..]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData);
    assert!(!store.has_blob(&liar));
    assert!(!store.has_blob(&Digest::of(b"not it")));

    let (put, size) = store.put_blob(b"put me").unwrap();
    assert_eq!(put, Digest::of(b"put me"));
    assert_eq!(size, 6);
    assert_eq!(store.read_blob(&put).unwrap(), b"put me");

    let empty = store.put_blob(b"").unwrap();
    assert_eq!(store.read_blob(&empty.0).unwrap(), b"");
}

#[test]
fn content_store_conforms_to_the_blob_traits() {
    let ctx = TestContext::new();
    let store = ContentStore::open(ctx.path()).unwrap();
    blob_trait_conformance(&store);
    assert!(
        names(&ctx.join("ingest")).is_empty(),
        "no temp file is left behind"
    );
}

#[test]
fn blobs_live_at_oci_layout_paths() {
    let ctx = TestContext::new();
    let store = ContentStore::open(ctx.path()).unwrap();
    let d = store.put(b"hello").unwrap();
    let expected = ctx.join("blobs/sha256").join(d.hex());
    assert_eq!(store.path(&d), expected);
    assert_eq!(std::fs::read(expected).unwrap(), b"hello");
    assert_eq!(store.list().unwrap(), vec![(d.clone(), 5)]);
    assert_eq!(store.size(&d).unwrap(), 5);
}

#[test]
fn mismatched_commit_stores_nothing_and_names_both_digests() {
    let ctx = TestContext::new();
    let store = ContentStore::open(ctx.path()).unwrap();
    let expected = Digest::of(b"expected");
    let mut w = store.writer().unwrap();
    w.write_all(b"actual").unwrap();
    match w.commit(Some(&expected)) {
        Err(CacheError::DigestMismatch {
            expected: e,
            actual,
        }) => {
            assert_eq!(e, expected);
            assert_eq!(actual, Digest::of(b"actual"));
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert!(store.list().unwrap().is_empty());
    assert!(names(&ctx.join("ingest")).is_empty());
}

#[test]
fn dropped_writer_leaves_nothing() {
    let ctx = TestContext::new();
    let store = ContentStore::open(ctx.path()).unwrap();
    let mut w = store.writer().unwrap();
    w.write_all(b"abandoned").unwrap();
    assert_eq!(names(&ctx.join("ingest")).len(), 1);
    drop(w);
    assert!(names(&ctx.join("ingest")).is_empty());
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn missing_blobs_are_reported_by_digest() {
    let ctx = TestContext::new();
    let store = ContentStore::open(ctx.path()).unwrap();
    let d = Digest::of(b"nope");
    assert!(!store.contains(&d));
    for err in [
        store.read(&d).unwrap_err(),
        store.open_blob(&d).unwrap_err(),
        store.size(&d).unwrap_err(),
        store.delete(&d).unwrap_err(),
        store.touch(&d).unwrap_err(),
    ] {
        assert!(
            matches!(&err, CacheError::BlobNotFound(x) if *x == d),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("blob {d} is not in the content store")
        );
    }
    let put = store.put(b"x").unwrap();
    store.delete(&put).unwrap();
    assert!(!store.contains(&put));
}

#[test]
fn foreign_files_are_not_listed_as_blobs() {
    let ctx = TestContext::new();
    let store = ContentStore::open(ctx.path()).unwrap();
    let d = store.put(b"real").unwrap();
    std::fs::write(ctx.join("blobs/sha256/not-a-digest"), b"junk").unwrap();
    assert_eq!(store.list().unwrap(), vec![(d, 4)]);
}

#[test]
fn concurrent_writers_with_separate_handles_all_succeed() {
    const WRITERS: usize = 8;
    let ctx = TestContext::new();
    let shared: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    let shared = Arc::new(shared);
    let start = Arc::new(Barrier::new(WRITERS));
    let dir = ctx.path().to_owned();
    let handles: Vec<_> = (0..WRITERS)
        .map(|i| {
            let (shared, start, dir) = (shared.clone(), start.clone(), dir.clone());
            std::thread::spawn(move || {
                let store = ContentStore::open(&dir).unwrap();
                let own = format!("blob of writer {i}").into_bytes();
                start.wait();
                let mut w = store.writer().unwrap();
                for chunk in shared.chunks(4096) {
                    w.write_all(chunk).unwrap();
                }
                let (d_shared, size) = w.commit(Some(&Digest::of(&shared))).unwrap();
                assert_eq!(size, shared.len() as u64);
                let d_own = store.put(&own).unwrap();
                (d_shared, d_own, own)
            })
        })
        .collect();
    let store = ContentStore::open(ctx.path()).unwrap();
    for handle in handles {
        let (d_shared, d_own, own) = handle.join().unwrap();
        assert_eq!(store.read(&d_shared).unwrap(), *shared);
        assert_eq!(store.read(&d_own).unwrap(), own);
    }
    assert_eq!(store.list().unwrap().len(), WRITERS + 1);
    assert!(names(&ctx.join("ingest")).is_empty());
}

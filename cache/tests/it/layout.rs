//! The store root: the layout it creates, its version check, and its lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kiln_cache::{CacheError, Store};

use crate::{TestContext, names};

#[test]
fn open_creates_the_versioned_layout() {
    let ctx = TestContext::new();
    let root = ctx.join("state");
    let store = Store::open(&root).unwrap();
    assert_eq!(store.root(), root);
    assert_eq!(
        names(&root),
        ["content-v1", "kiln-layout", "lock", "snapshots-v1"]
    );
    assert_eq!(
        std::fs::read_to_string(root.join("kiln-layout")).unwrap(),
        r#"{"layoutVersion":1}"#
    );
    assert_eq!(names(&root.join("content-v1")), ["blobs", "ingest", "kept"]);
    assert_eq!(
        names(&root.join("snapshots-v1")),
        ["copy", "overlay", "tmp"]
    );
    drop(store);
    // Reopening an existing root works and changes nothing.
    let store = Store::open(&root).unwrap();
    let d = store.content().put(b"kept").unwrap();
    drop(store);
    assert!(Store::open(&root).unwrap().content().contains(&d));
}

#[test]
fn a_newer_layout_is_refused_by_name() {
    let ctx = TestContext::new();
    std::fs::write(ctx.join("kiln-layout"), r#"{"layoutVersion":2}"#).unwrap();
    let err = Store::open(ctx.path()).unwrap_err();
    assert!(
        matches!(
            err,
            CacheError::UnsupportedLayout {
                found: 2,
                supported: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("kiln-layout"), "{err}");
    assert!(err.to_string().contains("layout version 2"), "{err}");
}

#[test]
fn a_damaged_layout_file_is_an_error_naming_it() {
    let ctx = TestContext::new();
    std::fs::write(ctx.join("kiln-layout"), "not json").unwrap();
    let err = Store::open(ctx.path()).unwrap_err();
    assert!(matches!(err, CacheError::BadMetadata { .. }), "{err:?}");
    assert!(err.to_string().contains("kiln-layout"), "{err}");
}

#[test]
fn shared_users_coexist_and_the_exclusive_lock_waits_for_them() {
    let ctx = TestContext::new();
    let first = Store::open(ctx.path()).unwrap();
    let second = Store::open(ctx.path()).unwrap();
    let collecting = Arc::new(AtomicBool::new(false));
    let releasing = Arc::new(AtomicBool::new(false));
    let waiter = {
        let root = ctx.path().to_owned();
        let (collecting, releasing) = (collecting.clone(), releasing.clone());
        std::thread::spawn(move || {
            let exclusive = Store::open(&root).unwrap().lock_exclusive().unwrap();
            collecting.store(true, Ordering::SeqCst);
            // While held, nobody else can open the store.
            std::thread::sleep(Duration::from_millis(200));
            releasing.store(true, Ordering::SeqCst);
            exclusive.into_shared().unwrap()
        })
    };
    let in_use = "exclusive lock taken while the store was in use";
    std::thread::sleep(Duration::from_millis(300));
    assert!(!collecting.load(Ordering::SeqCst), "{in_use}");
    drop(first);
    std::thread::sleep(Duration::from_millis(100));
    assert!(!collecting.load(Ordering::SeqCst), "{in_use}");
    drop(second);
    while !collecting.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Opening the store now waits until the collector goes back to shared.
    let third = Store::open(ctx.path()).unwrap();
    assert!(
        releasing.load(Ordering::SeqCst),
        "opened the store while it was held exclusively"
    );
    let back = waiter.join().unwrap();
    drop((third, back));
}

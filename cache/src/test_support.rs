//! Helpers shared by this crate's unit tests.

use crate::LayerRef;
use crate::root::Store;

/// A plain layer holding one one-byte file `name`, stored as a blob of `store`.
pub(crate) fn one_file_layer(store: &Store, name: &str) -> LayerRef {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(1);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, name, &b"x"[..]).unwrap();
    let blob = store.content().put(&tar.into_inner().unwrap()).unwrap();
    LayerRef {
        diff_id: blob.clone(),
        blob,
    }
}

//! The OCI image model as kiln uses it: content digests, image references, platforms,
//! layer tars and their compression, image archives and registries.
//!
//! Types from the OCI specifications are not redefined here: [`oci_spec`] is re-exported
//! and used directly; this crate adds the validated newtypes and the operations on them.
#![deny(missing_docs)]

pub mod archive;
pub mod blob;
pub mod config;
pub mod digest;
pub mod layer;
pub mod media_type;
pub mod platform;
pub mod reference;
pub mod registry;
pub mod store;

pub use blob::{BlobRead, BlobWrite};
pub use config::ImageConfig;
pub use digest::{Digest, DigestError, Digester};
pub use layer::{Compression, LayerDescriptor, LayerError};
pub use oci_spec;
pub use platform::{Platform, PlatformError};
pub use reference::{ImageRef, RefError};
pub use registry::{RegistryClient, RegistryError};
pub use store::{ImageStore, StoreError};

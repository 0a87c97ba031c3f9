//! Lowers a parsed Dockerfile into a build graph of content-addressed steps, computes
//! their cache keys, and schedules them.
//!
//! - [`lower`]: a parsed Dockerfile and the build's options → a [`BuildGraph`] and the
//!   target's image configuration ([`lower()`]);
//! - [`op`]: what a step does ([`Op`]), and what people see of it ([`OpMetadata`]);
//! - [`graph`]: the deduplicated DAG of steps ([`BuildGraph`]);
//! - [`key`]: cache keys ([`CacheKey`]) over a versioned canonical encoding;
//! - [`scheduler`]: the [`Solver`], which reaches execution only through its own
//!   [`Worker`] trait, so this crate knows nothing of containers or disks.
#![deny(missing_docs)]

pub mod graph;
pub mod key;
pub mod lower;
pub mod op;
pub mod scheduler;

pub use graph::{BuildGraph, Vertex, VertexId};
pub use key::{CACHE_KEY_VERSION, CacheKey, cache_key, op_digest};
pub use lower::{
    ImageResolver, LayerStep, LowerError, LowerOptions, Lowered, Place, ResolveError,
    ResolvedImage, lower,
};
pub use op::{ExecOp, FileAction, FileOp, MergeOp, Op, OpMetadata, Selector, SourceOp};
pub use scheduler::{SolveError, SolveEvent, SolveOptions, Solved, Solver, StepStatus, Worker};

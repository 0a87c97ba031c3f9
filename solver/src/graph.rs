//! The build graph: a DAG of steps, deduplicated as it is built.
//!
//! Vertices are only ever added on top of existing ones, so the graph cannot have a
//! cycle and insertion order is a topological order. Adding an op that is already in
//! the graph over the same inputs returns the existing vertex: identical steps — the
//! same `RUN` in two stages over the same base — are solved once.

use std::collections::HashMap;

use kiln_image::Digest;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Dfs, Reversed};

use crate::key::op_digest;
use crate::op::{Op, OpMetadata};

/// A vertex's handle in its [`BuildGraph`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VertexId(NodeIndex);

impl VertexId {
    /// The vertex's position in insertion order.
    pub fn index(self) -> usize {
        self.0.index()
    }
}

/// One step: an op, the vertices it reads, and its display metadata.
#[derive(Clone, Debug)]
pub struct Vertex {
    /// What the step does.
    pub op: Op,
    /// Its inputs, in the order the op refers to them.
    pub inputs: Vec<VertexId>,
    /// What people see about it.
    pub meta: OpMetadata,
    digest: Digest,
}

impl Vertex {
    /// The op's digest, as it enters cache keys.
    pub fn op_digest(&self) -> &Digest {
        &self.digest
    }
}

/// A DAG of build steps.
#[derive(Default, Debug)]
pub struct BuildGraph {
    graph: DiGraph<Vertex, ()>,
    seen: HashMap<(Digest, Vec<VertexId>), VertexId>,
}

impl BuildGraph {
    /// An empty graph.
    pub fn new() -> BuildGraph {
        BuildGraph::default()
    }

    /// Adds a step, or returns the identical step already present. When an existing
    /// step is returned, a request to bypass the cache is kept if either asked for it.
    pub fn add(&mut self, op: Op, inputs: Vec<VertexId>, meta: OpMetadata) -> VertexId {
        let digest = op_digest(&op);
        if let Some(&id) = self.seen.get(&(digest.clone(), inputs.clone())) {
            self.graph[id.0].meta.ignore_cache |= meta.ignore_cache;
            return id;
        }
        let node = self.graph.add_node(Vertex {
            op,
            inputs: inputs.clone(),
            meta,
            digest: digest.clone(),
        });
        for input in &inputs {
            self.graph.add_edge(input.0, node, ());
        }
        let id = VertexId(node);
        self.seen.insert((digest, inputs), id);
        id
    }

    /// The vertex behind a handle.
    pub fn vertex(&self, id: VertexId) -> &Vertex {
        &self.graph[id.0]
    }

    /// How many vertices the graph holds.
    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    /// Whether the graph is empty.
    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    /// Every vertex the targets need, themselves included, inputs before consumers.
    pub fn required(&self, targets: &[VertexId]) -> Vec<VertexId> {
        let reversed = Reversed(&self.graph);
        let mut needed = vec![false; self.graph.node_count()];
        for target in targets {
            let mut dfs = Dfs::new(reversed, target.0);
            while let Some(node) = dfs.next(reversed) {
                needed[node.index()] = true;
            }
        }
        needed
            .iter()
            .enumerate()
            .filter(|(_, needed)| **needed)
            .map(|(i, _)| VertexId(NodeIndex::new(i)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::{MergeOp, SourceOp};

    fn meta(name: &str) -> OpMetadata {
        OpMetadata {
            name: name.into(),
            ..OpMetadata::default()
        }
    }

    #[test]
    fn identical_steps_are_added_once() {
        let mut g = BuildGraph::new();
        let a = g.add(Op::Source(SourceOp::Scratch), vec![], meta("a"));
        let b = g.add(Op::Source(SourceOp::Scratch), vec![], meta("b"));
        assert_eq!(a, b);
        let m1 = g.add(Op::Merge(MergeOp { inputs: 1 }), vec![a], meta("m"));
        let m2 = g.add(Op::Merge(MergeOp { inputs: 1 }), vec![a], meta("m"));
        assert_eq!(m1, m2);
        assert_eq!(g.len(), 2);
        assert_eq!(g.vertex(a).meta.name, "a", "the first metadata is kept");
    }

    #[test]
    fn required_is_what_targets_need_in_topological_order() {
        let mut g = BuildGraph::new();
        let scratch = g.add(Op::Source(SourceOp::Scratch), vec![], meta("s"));
        let ctx = g.add(
            Op::Source(SourceOp::Local {
                name: "context".into(),
                excludes: vec![],
            }),
            vec![],
            meta("c"),
        );
        let unused = g.add(Op::Merge(MergeOp { inputs: 1 }), vec![ctx], meta("u"));
        let merged = g.add(
            Op::Merge(MergeOp { inputs: 2 }),
            vec![scratch, ctx],
            meta("m"),
        );
        assert_eq!(g.required(&[merged]), vec![scratch, ctx, merged]);
        assert_eq!(g.required(&[unused]), vec![ctx, unused]);
        assert_eq!(g.required(&[unused, merged]).len(), 4);
    }
}

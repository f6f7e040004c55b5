//! The IR: a dataflow graph of typed ops over a petgraph `StableDiGraph`.
//!
//! Edges are the single source of truth for connectivity: an edge `src -> dst` with weight
//! `{ src_output, dst_input }` feeds output `src_output` of `src` into input slot `dst_input`
//! of `dst`. An optional slot without an edge is absent. `StableDiGraph` keeps every `NodeId`
//! valid while passes remove nodes (plain `Graph` would move the last node into the hole).

mod consts;
mod infer;
mod infer_add_rms_norm;
mod infer_gated_norm;
mod infer_mamba2_step;
mod infer_ssd_scan;
mod infer_standard;
mod op;
pub mod print;
pub mod quant;
pub mod standard_ops;
mod types;
mod validate;

use std::collections::HashMap;
use std::fmt;

use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

pub use consts::{encode_f32, encode_f64, ConstSource, ConstTensor, ConstTransform, UnaryFn};
pub use infer::infer_node;
pub use op::{
    conv_slots, norm_slots, scan_slots, ssd_slots, step2_slots, step_slots, AddRmsNormConfig, CausalConv1dConfig,
    CausalConvWithStateConfig, GatedRmsNormConfig, LinearAttentionConfig, Mamba2LayerStepConfig, MambaLayerStepConfig,
    MatMulNBitsConfig, Op, SelectiveScanConfig, Slices, SsdDims, SsdScanConfig,
};
pub use op::{gated_norm_slots, FusedGatedRmsNormConfig};
pub use quant::BlockQuant;
pub use types::{Dim, Elem, Shape, ValueType};
pub use validate::{validate, ValidatedGraph, ValidationError};

/// A node of the graph (newtype over the petgraph index, so it cannot be confused with others).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(NodeIndex<u32>);

impl NodeId {
    pub fn index(self) -> usize {
        self.0.index()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0.index())
    }
}

/// One output of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueRef {
    pub node: NodeId,
    pub output: usize,
}

impl From<NodeId> for ValueRef {
    fn from(node: NodeId) -> ValueRef {
        ValueRef { node, output: 0 }
    }
}

impl fmt::Display for ValueRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.output == 0 {
            write!(f, "{}", self.node)
        } else {
            write!(f, "{}.{}", self.node, self.output)
        }
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    /// A readable, unique name (`layers.3.mixer.in_proj`): ONNX node names and error messages.
    pub name: String,
    pub op: Op,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    pub src_output: usize,
    pub dst_input: usize,
}

/// A named graph output.
#[derive(Debug, Clone)]
pub struct GraphOutput {
    pub name: String,
    pub value: ValueRef,
}

#[derive(Debug, Clone, Default)]
pub struct Graph {
    g: StableDiGraph<Node, Edge>,
    outputs: Vec<GraphOutput>,
}

impl Graph {
    pub fn new() -> Graph {
        Graph::default()
    }

    /// Adds a node fed by `inputs` (one entry per slot; `None` = absent optional input).
    pub fn add(&mut self, name: impl Into<String>, op: Op, inputs: &[Option<ValueRef>]) -> NodeId {
        let id = NodeId(self.g.add_node(Node { name: name.into(), op }));
        for (slot, input) in inputs.iter().enumerate() {
            if let Some(v) = input {
                self.connect(*v, id, slot);
            }
        }
        id
    }

    /// Adds a node whose inputs are all present.
    pub fn add_op(&mut self, name: impl Into<String>, op: Op, inputs: &[ValueRef]) -> NodeId {
        let inputs: Vec<Option<ValueRef>> = inputs.iter().copied().map(Some).collect();
        self.add(name, op, &inputs)
    }

    pub fn add_output(&mut self, name: impl Into<String>, value: ValueRef) {
        self.outputs.push(GraphOutput { name: name.into(), value });
    }

    pub fn outputs(&self) -> &[GraphOutput] {
        &self.outputs
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.g[id.0]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.g[id.0]
    }

    pub fn op(&self, id: NodeId) -> &Op {
        &self.g[id.0].op
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.g.contains_node(id.0)
    }

    pub fn node_ids(&self) -> Vec<NodeId> {
        self.g.node_indices().map(NodeId).collect()
    }

    pub fn node_count(&self) -> usize {
        self.g.node_count()
    }

    /// The value feeding `slot` of `node`, if any.
    pub fn input(&self, node: NodeId, slot: usize) -> Option<ValueRef> {
        self.g
            .edges_directed(node.0, Direction::Incoming)
            .find(|e| e.weight().dst_input == slot)
            .map(|e| ValueRef { node: NodeId(e.source()), output: e.weight().src_output })
    }

    /// All input slots of `node` (as many as the op has), absent ones as `None`.
    pub fn node_inputs(&self, node: NodeId) -> Vec<Option<ValueRef>> {
        let arity = self.op(node).input_names().len();
        let mut slots = vec![None; arity];
        for e in self.g.edges_directed(node.0, Direction::Incoming) {
            let w = e.weight();
            if w.dst_input >= slots.len() {
                slots.resize(w.dst_input + 1, None);
            }
            slots[w.dst_input] = Some(ValueRef { node: NodeId(e.source()), output: w.src_output });
        }
        slots
    }

    /// Sets (or clears) the value feeding `slot` of `node`.
    pub fn set_input(&mut self, node: NodeId, slot: usize, value: Option<ValueRef>) {
        let old: Vec<_> = self
            .g
            .edges_directed(node.0, Direction::Incoming)
            .filter(|e| e.weight().dst_input == slot)
            .map(|e| e.id())
            .collect();
        for e in old {
            self.g.remove_edge(e);
        }
        if let Some(v) = value {
            self.connect(v, node, slot);
        }
    }

    fn connect(&mut self, v: ValueRef, dst: NodeId, slot: usize) {
        self.g.add_edge(v.node.0, dst.0, Edge { src_output: v.output, dst_input: slot });
    }

    /// The (node, slot) pairs that read `value`, plus how many graph outputs are it.
    pub fn users(&self, value: ValueRef) -> Vec<(NodeId, usize)> {
        let mut users: Vec<_> = self
            .g
            .edges_directed(value.node.0, Direction::Outgoing)
            .filter(|e| e.weight().src_output == value.output)
            .map(|e| (NodeId(e.target()), e.weight().dst_input))
            .collect();
        users.sort();
        users
    }

    /// Whether `value` has exactly one reader and is not a graph output: a pass may absorb it.
    pub fn is_single_use(&self, value: ValueRef) -> bool {
        self.users(value).len() == 1 && !self.outputs.iter().any(|o| o.value == value)
    }

    /// Redirects every reader of `old` (nodes and graph outputs) to `new`.
    pub fn replace_uses(&mut self, old: ValueRef, new: ValueRef) {
        for (user, slot) in self.users(old) {
            self.set_input(user, slot, Some(new));
        }
        for o in &mut self.outputs {
            if o.value == old {
                o.value = new;
            }
        }
    }

    /// Removes every node no graph output depends on. Inputs are kept (they are the interface).
    pub fn remove_dead(&mut self) -> usize {
        let mut live = std::collections::HashSet::new();
        let mut stack: Vec<NodeIndex<u32>> = self.outputs.iter().map(|o| o.value.node.0).collect();
        while let Some(n) = stack.pop() {
            if live.insert(n) {
                stack.extend(self.g.neighbors_directed(n, Direction::Incoming));
            }
        }
        let dead: Vec<_> =
            self.g.node_indices().filter(|n| !live.contains(n) && !matches!(self.g[*n].op, Op::Input { .. })).collect();
        for n in &dead {
            self.g.remove_node(*n);
        }
        dead.len()
    }

    /// Nodes in an order where every node comes after its inputs; ties broken by creation order
    /// so emission and listings are deterministic.
    pub fn topo_order(&self) -> Result<Vec<NodeId>, ValidationError> {
        let mut indegree: HashMap<NodeIndex<u32>, usize> = HashMap::new();
        for n in self.g.node_indices() {
            let preds: std::collections::HashSet<_> = self.g.neighbors_directed(n, Direction::Incoming).collect();
            indegree.insert(n, preds.len());
        }
        let mut ready: std::collections::BTreeSet<NodeIndex<u32>> =
            indegree.iter().filter(|(_, d)| **d == 0).map(|(n, _)| *n).collect();
        let mut order = Vec::with_capacity(self.g.node_count());
        while let Some(n) = ready.pop_first() {
            order.push(NodeId(n));
            let succs: std::collections::HashSet<_> = self.g.neighbors_directed(n, Direction::Outgoing).collect();
            for s in succs {
                let d = indegree.get_mut(&s).expect("successor is a node");
                *d -= 1;
                if *d == 0 {
                    ready.insert(s);
                }
            }
        }
        if order.len() != self.g.node_count() {
            return Err(ValidationError::Cycle);
        }
        Ok(order)
    }
}

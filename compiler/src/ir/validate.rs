//! Validation: infers every value's type in topological order. Emission and the interpreter take
//! the resulting [`ValidatedGraph`], so unvalidated IR cannot be emitted (it does not type-check).

use std::collections::{HashMap, HashSet};

use super::infer::{infer_node, InferError};
use super::types::ValueType;
use super::{Graph, NodeId, ValueRef};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationError {
    #[error("node '{node}' ({op}): {source}")]
    Node { node: String, op: &'static str, source: InferError },
    #[error("node '{node}' reads output {output} of '{producer}', which has only {available}")]
    NoSuchOutput { node: String, producer: String, output: usize, available: usize },
    #[error("graph output '{name}' reads output {output} of '{producer}', which has only {available}")]
    NoSuchGraphOutput { name: String, producer: String, output: usize, available: usize },
    #[error("two nodes are named '{0}'")]
    DuplicateName(String),
    #[error("two graph outputs are named '{0}'")]
    DuplicateOutput(String),
    #[error("the graph has no outputs")]
    NoOutputs,
    #[error("the graph has a cycle")]
    Cycle,
}

/// Proof that a graph was validated, with every value's type and a topological order.
pub struct ValidatedGraph<'g> {
    pub graph: &'g Graph,
    pub order: Vec<NodeId>,
    types: HashMap<ValueRef, ValueType>,
}

impl ValidatedGraph<'_> {
    pub fn type_of(&self, v: ValueRef) -> &ValueType {
        &self.types[&v]
    }
}

pub fn validate(graph: &Graph) -> Result<ValidatedGraph<'_>, ValidationError> {
    if graph.outputs().is_empty() {
        return Err(ValidationError::NoOutputs);
    }
    let mut names = HashSet::new();
    for id in graph.node_ids() {
        let name = &graph.node(id).name;
        if !names.insert(name.clone()) {
            return Err(ValidationError::DuplicateName(name.clone()));
        }
    }
    let order = graph.topo_order()?;
    let mut types: HashMap<ValueRef, ValueType> = HashMap::new();
    for &id in &order {
        let node = graph.node(id);
        let inputs = graph.node_inputs(id);
        for v in inputs.iter().flatten() {
            if !types.contains_key(v) {
                let producer = graph.node(v.node);
                return Err(ValidationError::NoSuchOutput {
                    node: node.name.clone(),
                    producer: producer.name.clone(),
                    output: v.output,
                    available: producer.op.num_outputs(),
                });
            }
        }
        let in_types: Vec<Option<&ValueType>> = inputs.iter().map(|v| v.map(|v| &types[&v])).collect();
        let outs = infer_node(&node.op, &in_types).map_err(|source| ValidationError::Node {
            node: node.name.clone(),
            op: node.op.kind(),
            source,
        })?;
        debug_assert_eq!(outs.len(), node.op.num_outputs());
        for (k, t) in outs.into_iter().enumerate() {
            types.insert(ValueRef { node: id, output: k }, t);
        }
    }
    let mut out_names = HashSet::new();
    for o in graph.outputs() {
        if !out_names.insert(o.name.clone()) {
            return Err(ValidationError::DuplicateOutput(o.name.clone()));
        }
        if !types.contains_key(&o.value) {
            let producer = graph.node(o.value.node);
            return Err(ValidationError::NoSuchGraphOutput {
                name: o.name.clone(),
                producer: producer.name.clone(),
                output: o.value.output,
                available: producer.op.num_outputs(),
            });
        }
    }
    Ok(ValidatedGraph { graph, order, types })
}

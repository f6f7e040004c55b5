//! Small constructors over the generated ONNX protobuf types.

use onnx_protobuf::{
    attribute_proto::AttributeType, tensor_shape_proto::dimension::Value as DimValue, tensor_shape_proto::Dimension,
    type_proto, AttributeProto, NodeProto, StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};

use crate::ir::{Dim, Elem, ValueType};

/// ONNX `TensorProto.DataType` codes.
pub fn data_type(elem: Elem) -> i32 {
    match elem {
        Elem::F32 => 1,
        Elem::U8 => 2,
        Elem::I64 => 7,
        Elem::F16 => 10,
        Elem::BF16 => 16,
    }
}

pub fn value_info(name: &str, ty: &ValueType) -> ValueInfoProto {
    let mut shape = TensorShapeProto::new();
    for d in &ty.shape.0 {
        let mut dim = Dimension::new();
        dim.value = Some(match d {
            Dim::Known(n) => DimValue::DimValue(*n as i64),
            Dim::Sym(s) => DimValue::DimParam(s.clone()),
        });
        shape.dim.push(dim);
    }
    let mut tensor = type_proto::Tensor::new();
    tensor.elem_type = data_type(ty.elem);
    tensor.shape = Some(shape).into();
    let mut tp = TypeProto::new();
    tp.value = Some(type_proto::Value::TensorType(tensor));
    let mut vi = ValueInfoProto::new();
    vi.name = name.to_string();
    vi.type_ = Some(tp).into();
    vi
}

pub fn node(op_type: &str, domain: &str, name: &str, inputs: Vec<String>, outputs: Vec<String>) -> NodeProto {
    let mut n = NodeProto::new();
    n.op_type = op_type.to_string();
    n.domain = domain.to_string();
    n.name = name.to_string();
    n.input = inputs;
    n.output = outputs;
    n
}

pub fn attr_int(name: &str, v: i64) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.to_string();
    a.type_ = AttributeType::INT.into();
    a.i = v;
    a
}

pub fn attr_float(name: &str, v: f32) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.to_string();
    a.type_ = AttributeType::FLOAT.into();
    a.f = v;
    a
}

pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.to_string();
    a.type_ = AttributeType::INTS.into();
    a.ints = v.to_vec();
    a
}

pub fn attr_string(name: &str, v: &str) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.to_string();
    a.type_ = AttributeType::STRING.into();
    a.s = v.as_bytes().to_vec();
    a
}

pub fn attr_tensor(name: &str, t: TensorProto) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.to_string();
    a.type_ = AttributeType::TENSOR.into();
    a.t = Some(t).into();
    a
}

/// A tensor with its data inline.
pub fn tensor(name: &str, elem: Elem, dims: &[usize], raw: Vec<u8>) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.to_string();
    t.data_type = data_type(elem);
    t.dims = dims.iter().map(|&d| d as i64).collect();
    t.raw_data = raw;
    t
}

pub fn i64_tensor(name: &str, values: &[i64]) -> TensorProto {
    tensor(name, Elem::I64, &[values.len()], values.iter().flat_map(|v| v.to_le_bytes()).collect())
}

pub fn entry(key: &str, value: &str) -> StringStringEntryProto {
    let mut e = StringStringEntryProto::new();
    e.key = key.to_string();
    e.value = value.to_string();
    e
}

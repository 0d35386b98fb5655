//! The writer of the shipped model's `.onnx` file: logistic regression as a standard graph
//! (Gather -> Mul -> ReduceSum -> Add -> Sigmoid) through tract's protobuf types, so any
//! ONNX runtime runs it.

use super::{INPUT_INDICES, INPUT_VALUES, OUTPUT};
use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::dimension::Value as Dim;

/// Write logistic regression weights as a standard ONNX model honouring the contract.
pub fn write_onnx(weights: &[f32], bias: f32) -> Vec<u8> {
    use prost::Message as _;
    let graph = pb::GraphProto {
        name: "filterd-spam-lr".into(),
        node: vec![
            node(
                "Gather",
                &["weights", INPUT_INDICES],
                "w",
                vec![int_attribute("axis", 0)],
            ),
            node("Mul", &["w", INPUT_VALUES], "wx", vec![]),
            node(
                "ReduceSum",
                &["wx"],
                "z0",
                vec![
                    pb::AttributeProto {
                        name: "axes".into(),
                        r#type: pb::attribute_proto::AttributeType::Ints as i32,
                        ints: vec![0],
                        ..Default::default()
                    },
                    int_attribute("keepdims", 1),
                ],
            ),
            node("Add", &["z0", "bias"], "z", vec![]),
            node("Sigmoid", &["z"], OUTPUT, vec![]),
        ],
        initializer: vec![
            float_tensor("weights", vec![weights.len() as i64], weights.to_vec()),
            float_tensor("bias", vec![1], vec![bias]),
        ],
        input: vec![
            value_info(
                INPUT_INDICES,
                tensor_type(DataType::Int64, Dim::DimParam("N".into())),
            ),
            value_info(
                INPUT_VALUES,
                tensor_type(DataType::Float, Dim::DimParam("N".into())),
            ),
        ],
        output: vec![value_info(
            OUTPUT,
            tensor_type(DataType::Float, Dim::DimValue(1)),
        )],
        ..Default::default()
    };
    let model = pb::ModelProto {
        ir_version: 7,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 11,
        }],
        producer_name: "filterd corpus-tools".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        ..Default::default()
    };
    model.encode_to_vec()
}

/// A one-dimensional tensor type.
fn tensor_type(elem: DataType, dim: Dim) -> pb::TypeProto {
    pb::TypeProto {
        denotation: String::new(),
        value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
            elem_type: elem as i32,
            shape: Some(pb::TensorShapeProto {
                dim: vec![pb::tensor_shape_proto::Dimension {
                    denotation: String::new(),
                    value: Some(dim),
                }],
            }),
        })),
    }
}

fn value_info(name: &str, t: pb::TypeProto) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(t),
        ..Default::default()
    }
}

fn node(
    op: &str,
    inputs: &[&str],
    output: &str,
    attribute: Vec<pb::AttributeProto>,
) -> pb::NodeProto {
    pb::NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: format!("{op}_{output}"),
        op_type: op.into(),
        attribute,
        ..Default::default()
    }
}

fn int_attribute(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

fn float_tensor(name: &str, dims: Vec<i64>, data: Vec<f32>) -> pb::TensorProto {
    pb::TensorProto {
        dims,
        data_type: DataType::Float as i32,
        float_data: data,
        name: name.into(),
        ..Default::default()
    }
}

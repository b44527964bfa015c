//! Runs the pooling and upsampling nodes of a model channel-last, so that tract's
//! declutter can cancel the layout moves between our channel-last convolutions.
//!
//! Why: after `conv_nhwc` every convolution sits between `move C last` and `move C
//! back`. tract's declutter removes a pair of moves by pushing one through its
//! neighbours until it meets the other, asking each node to adopt the new layout
//! (`TypedOp::change_axes`). Concat, Slice, the matrix products and the element-wise
//! ops can; tract's `MaxPool` and `NearestUpsample` cannot, and neither can our own
//! convolutions ([`crate::conv`], [`crate::depthwise`]), which only run channel-last.
//! tract's own convolution gets around the blocked nodes by switching back to
//! channel-first itself; ours cannot, so YOLOv4-tiny kept 24 moves (6–15 ms of ~110).
//! Here, as `conv_nhwc` does for convolutions, every channel-first pool and upsample
//! becomes `move C last → the node, channel-last → move C back`; the declutter then
//! cancels these moves against the convolutions' own.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::model::Rewriter;
use tract_onnx::tract_core::ops::cnn::{MaxPool, PoolSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;
use tract_onnx::tract_core::ops::nn::resize::NearestUpsample;
use tract_onnx::tract_core::rule_if;

/// Rewrites pools and upsamples channel-last and declutters; keeps the result only when
/// it has fewer layout moves than the plain declutter (a model without channel-last
/// neighbours around its pools would gain two moves per pool).
pub fn channel_last_through(model: &mut TypedModel) -> TractResult<()> {
    let mut wrapped = model.clone();
    Rewriter::<()>::default()
        .with_rule_for("runnel-channel-last-maxpool", wrap_maxpool)
        .with_rule_for("runnel-channel-last-upsample", wrap_upsample)
        .rewrite(&(), &mut wrapped)?;
    wrapped.declutter()?;
    model.declutter()?;
    if moves(&wrapped) < moves(model) {
        *model = wrapped;
    }
    Ok(())
}

/// The layout moves in `model`.
pub fn moves(model: &TypedModel) -> usize {
    model
        .nodes
        .iter()
        .filter(|n| {
            n.op_as::<AxisOp>()
                .is_some_and(|op| matches!(op, AxisOp::Move(..)))
        })
        .count()
}

/// `node'` (channel-last) between `move C last` and `move C back`, in place of `node`.
fn wrap(
    model: &TypedModel,
    node: &TypedNode,
    c_axis: usize,
    op: impl TypedOp,
) -> TractResult<TypedModelPatch> {
    let last = model.outlet_fact(node.inputs[0])?.rank() - 1;
    let mut patch = TypedModelPatch::default();
    let wire = patch.tap_model(model, node.inputs[0])?;
    let name = &node.name;
    let wire = patch.wire_node(
        format!("{name}.nhwc_in"),
        AxisOp::Move(c_axis, last),
        &[wire],
    )?[0];
    let wire = patch.wire_node(format!("{name}.nhwc"), op, &[wire])?[0];
    let wire = patch.wire_node(
        format!("{name}.nhwc_out"),
        AxisOp::Move(last, c_axis),
        &[wire],
    )?[0];
    patch.shunt_outside(model, node.id.into(), wire)?;
    Ok(patch)
}

fn wrap_maxpool(
    _ctx: &(),
    model: &TypedModel,
    node: &TypedNode,
    _name: &str,
    op: &MaxPool,
) -> TractResult<Option<TypedModelPatch>> {
    rule_if!(op.with_index_outputs.is_none());
    let (format, c_axis) = match op.pool_spec.data_format {
        DataFormat::NCHW => (DataFormat::NHWC, 1),
        DataFormat::CHW => (DataFormat::HWC, 0),
        _ => return Ok(None),
    };
    let pool = MaxPool {
        pool_spec: PoolSpec {
            data_format: format,
            ..op.pool_spec.clone()
        },
        with_index_outputs: None,
    };
    wrap(model, node, c_axis, pool).map(Some)
}

/// An upsample does not know its layout: the channel axis is taken to be the one before
/// the spatial axes, as in the convolutions' NCHW and CHW (a batch axis first when the
/// rank is 4), and must not be scaled.
fn wrap_upsample(
    _ctx: &(),
    model: &TypedModel,
    node: &TypedNode,
    _name: &str,
    op: &NearestUpsample,
) -> TractResult<Option<TypedModelPatch>> {
    let rank = op.scales.len();
    let c_axis = match rank {
        4 => 1,
        3 => 0,
        _ => return Ok(None),
    };
    rule_if!(op.scales[c_axis] == 1 && op.scales[..c_axis].iter().all(|&s| s == 1));
    rule_if!(model.outlet_fact(node.inputs[0])?.datum_type == f32::datum_type());
    let upsample = ChannelLastUpsample {
        sh: op.scales[rank - 2],
        sw: op.scales[rank - 1],
    };
    wrap(model, node, c_axis, upsample).map(Some)
}

/// Nearest-neighbour upsampling of a channel-last `[N,] H, W, C` float tensor by whole
/// factors: each pixel's channel vector copied `sh × sw` times. (tract's `NearestUpsample`
/// is fast when the two last axes are the scaled ones, channel-first, and walks every
/// element otherwise: 3.1 ms against 0.03 for YOLOv4-tiny's 13×13×128 upsample.)
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChannelLastUpsample {
    /// Factor on H.
    pub sh: usize,
    /// Factor on W.
    pub sw: usize,
}

impl Op for ChannelLastUpsample {
    fn name(&self) -> StaticName {
        "RunnelUpsample".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{}×{} channel-last", self.sh, self.sw)])
    }

    op_as_typed_op!();
}

impl EvalOp for ChannelLastUpsample {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let shape = input.shape();
        ensure!(shape.len() >= 3, "upsample input of rank {}", shape.len());
        let r = shape.len();
        let (h, w, c) = (shape[r - 3], shape[r - 2], shape[r - 1]);
        let mut out_shape: TVec<usize> = shape.into();
        out_shape[r - 3] = h * self.sh;
        out_shape[r - 2] = w * self.sw;
        let plain = input.try_as_plain_ram()?;
        let src = plain.as_slice::<f32>()?;
        let mut output = Tensor::zero::<f32>(&out_shape)?;
        {
            let mut view = output.try_as_plain_ram_mut()?;
            let dst = view.as_slice_mut::<f32>()?;
            let row_in = w * c;
            let row_out = row_in * self.sw;
            if row_in > 0 {
                for (y, in_row) in src.chunks_exact(row_in).enumerate() {
                    let first = y * self.sh * row_out;
                    let out_rows = &mut dst[first..first + self.sh * row_out];
                    let (head, rest) = out_rows.split_at_mut(row_out);
                    for (x, pixel) in in_row.chunks_exact(c).enumerate() {
                        for k in 0..self.sw {
                            let at = (x * self.sw + k) * c;
                            head[at..at + c].copy_from_slice(pixel);
                        }
                    }
                    for copy in rest.chunks_exact_mut(row_out) {
                        copy.copy_from_slice(head);
                    }
                }
            }
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for ChannelLastUpsample {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape = inputs[0].shape.to_tvec();
        let r = shape.len();
        ensure!(r >= 3 && inputs[0].datum_type == f32::datum_type());
        shape[r - 3] = shape[r - 3].clone() * self.sh;
        shape[r - 2] = shape[r - 2].clone() * self.sw;
        Ok(tvec!(f32::fact(shape)))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::cnn::PaddingSpec;

    /// `source (channel-last) → move C first → node → move C last → output`, and the
    /// same model after [`channel_last_through`]: outputs equal, no moves left.
    fn check(node: impl TypedOp, shape: [usize; 4]) -> TypedModel {
        let mut model = TypedModel::default();
        let source = model.add_source("x", f32::fact(shape)).unwrap();
        let moved = model
            .wire_node("to_nchw", AxisOp::Move(3, 1), &[source])
            .unwrap();
        let out = model.wire_node("node", node, &moved).unwrap();
        let back = model
            .wire_node("to_nhwc", AxisOp::Move(1, 3), &out)
            .unwrap();
        model.select_output_outlets(&back).unwrap();

        let len: usize = shape.iter().product();
        let data: Vec<f32> = (0..len).map(|i| ((i * 7919) % 97) as f32 - 48.0).collect();
        let input = Tensor::from_shape(&shape, &data).unwrap();
        let run = |model: &TypedModel| {
            let plan = model.clone().into_runnable().unwrap();
            plan.run(tvec!(input.clone().into_tvalue()))
                .unwrap()
                .remove(0)
        };
        let expected = run(&model);
        let mut rewritten = model.clone();
        channel_last_through(&mut rewritten).unwrap();
        assert_eq!(*run(&rewritten), *expected);
        assert_eq!(moves(&rewritten), 0, "{rewritten}");
        rewritten
    }

    #[test]
    fn a_maxpool_between_channel_last_nodes_runs_channel_last() {
        let pool = MaxPool {
            pool_spec: PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: tvec![2, 2],
                padding: PaddingSpec::Valid,
                dilations: None,
                strides: Some(tvec![2, 2]),
                input_channels: 5,
                output_channels: 5,
            },
            with_index_outputs: None,
        };
        let model = check(pool, [1, 6, 8, 5]);
        let pools: Vec<_> = model
            .nodes
            .iter()
            .filter_map(|n| n.op_as::<MaxPool>())
            .collect();
        assert_eq!(pools.len(), 1);
        assert_eq!(pools[0].pool_spec.data_format, DataFormat::NHWC);
    }

    #[test]
    fn an_upsample_between_channel_last_nodes_runs_channel_last() {
        let model = check(
            NearestUpsample {
                scales: tvec![1, 1, 2, 3],
            },
            [2, 3, 4, 5],
        );
        let ups: Vec<_> = model
            .nodes
            .iter()
            .filter_map(|n| n.op_as::<ChannelLastUpsample>())
            .collect();
        assert_eq!(ups, [&ChannelLastUpsample { sh: 2, sw: 3 }]);
    }

    #[test]
    fn a_lone_pool_keeps_its_layout() {
        let mut model = TypedModel::default();
        let source = model.add_source("x", f32::fact([1, 5, 6, 8])).unwrap();
        let up = NearestUpsample {
            scales: tvec![1, 1, 2, 2],
        };
        let out = model.wire_node("up", up, &[source]).unwrap();
        model.select_output_outlets(&out).unwrap();
        channel_last_through(&mut model).unwrap();
        assert_eq!(moves(&model), 0);
    }
}

//! Channel-last depthwise convolution for the CPU, swapped into the tract model in place of
//! its own depthwise op.
//!
//! Why: MobileNet-style models (EfficientNet-Lite0 among them) spend most of their
//! non-matmul time in depthwise convolutions, and tract 0.23 has no vectorized depthwise
//! kernel on x86-64: its depthwise walked each channel plane with scalar code and took
//! about 40% of an inference (11.5 of 28 ms, measured per op with
//! `cargo run --release -p runnel-vision --example profile`). Channel-last, a depthwise
//! convolution is, per output pixel and per kernel tap, one multiply-add over a
//! contiguous vector of channels, which the compiler vectorizes; on x86-64 the loop is
//! compiled a second time for AVX2 with FMA and picked at run time.
//!
//! The rewrite runs on the decluttered model before tract's own optimization: each
//! float 2-D depthwise `Conv` with constant weights becomes `move C last → this op →
//! move C back`; tract's declutter pass then cancels the moves between consecutive
//! convolutions once the others run channel-last too (`conv_nhwc`).

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::model::Rewriter;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat};
use tract_onnx::tract_core::ops::nn::DataFormat;
use tract_onnx::tract_core::{rule_if, rule_if_some};

/// Replaces the model's float 2-D depthwise convolutions by [`ChannelLastDepthwise`].
pub fn channel_last_depthwise(model: &mut TypedModel) -> TractResult<()> {
    Rewriter::<()>::default()
        .with_rule_for("runnel-channel-last-depthwise", rewrite_conv)
        .rewrite(&(), model)
}

fn rewrite_conv(
    _ctx: &(),
    model: &TypedModel,
    node: &TypedNode,
    name: &str,
    op: &Conv,
) -> TractResult<Option<TypedModelPatch>> {
    let spec = &op.pool_spec;
    rule_if!(op.q_params.is_none());
    rule_if!(node.inputs.len() == 3);
    rule_if!(spec.kernel_shape.len() == 2);
    rule_if!(op.group > 1 && op.group == spec.input_channels && op.group == spec.output_channels);
    let x = model.outlet_fact(node.inputs[0])?;
    rule_if!(x.datum_type == f32::datum_type());
    rule_if_some!(shape = x.shape.as_concrete());
    rule_if_some!(kernel = model.outlet_fact(node.inputs[1])?.konst.clone());
    rule_if_some!(bias = model.outlet_fact(node.inputs[2])?.konst.clone());
    rule_if!(kernel.datum_type() == f32::datum_type() && bias.datum_type() == f32::datum_type());

    // The channel axis, and whether the data has a batch axis (declutter drops N = 1).
    let (c_axis, batched) = match spec.data_format {
        DataFormat::NCHW => (1, true),
        DataFormat::NHWC => (3, true),
        DataFormat::CHW => (0, false),
        DataFormat::HWC => (2, false),
    };
    let rank = if batched { 4 } else { 3 };
    rule_if!(shape.len() == rank);
    let n = if batched { shape[0] } else { 1 };
    let c = shape[c_axis];
    let spatial: Vec<usize> = (0..rank)
        .filter(|&a| a != c_axis && (!batched || a != 0))
        .map(|a| shape[a])
        .collect();
    let (h, w) = (spatial[0], spatial[1]);
    let (kh, kw) = (spec.kernel_shape[0], spec.kernel_shape[1]);
    rule_if_some!(weights = tap_major_weights(&kernel, op.kernel_fmt, c, kh, kw));
    let bias = bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
    let bias = match bias.len() {
        1 => vec![bias[0]; c],
        len if len == c => bias,
        _ => return Ok(None),
    };
    let padded = spec.computed_padding(&[h, w]);
    let (strides, dilations) = (spec.strides(), spec.dilations());
    let geometry = Geometry {
        batched,
        n,
        h,
        w,
        c,
        kh,
        kw,
        stride: (strides[0], strides[1]),
        dilation: (dilations[0], dilations[1]),
        pad: (padded[0].pad_before, padded[1].pad_before),
        oh: padded[0].convoluted,
        ow: padded[1].convoluted,
    };
    rule_if!(geometry.oh > 0 && geometry.ow > 0);
    let (clip, last) = following_clip(model, node)?;
    let op = ChannelLastDepthwise {
        geometry,
        weights: weights.into(),
        bias: bias.into(),
        clip,
    };

    let mut patch = TypedModelPatch::default();
    let mut wire = patch.tap_model(model, node.inputs[0])?;
    let channels_last = rank - 1;
    if c_axis != channels_last {
        let to_last = AxisOp::Move(c_axis, channels_last);
        wire = patch.wire_node(format!("{name}.nhwc_in"), to_last, &[wire])?[0];
    }
    wire = patch.wire_node(name, op, &[wire])?[0];
    if c_axis != channels_last {
        let back = AxisOp::Move(channels_last, c_axis);
        wire = patch.wire_node(format!("{name}.nhwc_out"), back, &[wire])?[0];
    }
    patch.shunt_outside(model, last, wire)?;
    Ok(Some(patch))
}

/// A `Max(·, lo)` and then maybe a `Min(·, hi)` with scalar constants right after the
/// convolution (ReLU, ReLU6), to be clamped inside the op instead of in two more passes
/// over the output; and the outlet the rewritten op replaces.
pub(crate) fn following_clip(
    model: &TypedModel,
    node: &TypedNode,
) -> TractResult<(Option<(f32, f32)>, OutletId)> {
    let conv_out = OutletId::new(node.id, 0);
    let Some((lo, max_node)) = scalar_bin_op_after(model, conv_out, "Max")? else {
        return Ok((None, conv_out));
    };
    let max_out = OutletId::new(max_node, 0);
    match scalar_bin_op_after(model, max_out, "Min")? {
        Some((hi, min_node)) => Ok((Some((lo, hi)), OutletId::new(min_node, 0))),
        None => Ok((Some((lo, f32::INFINITY)), max_out)),
    }
}

/// The constant and node of the binary op `name`, if it is the only reader of `outlet`
/// and its other operand is one float constant.
fn scalar_bin_op_after(
    model: &TypedModel,
    outlet: OutletId,
    name: &str,
) -> TractResult<Option<(f32, usize)>> {
    let successors = &model.node(outlet.node).outputs[outlet.slot].successors;
    rule_if!(successors.len() == 1 && !model.outputs.contains(&outlet));
    let next = model.node(successors[0].node);
    rule_if_some!(bin = next.op_as::<TypedBinOp>());
    rule_if!(bin.0.name() == name && next.inputs.len() == 2);
    let other = next.inputs[1 - successors[0].slot];
    rule_if_some!(konst = model.outlet_fact(other)?.konst.clone());
    rule_if!(konst.datum_type() == f32::datum_type() && konst.len() == 1);
    rule_if!(model.outlet_fact(next.id.into())?.shape == model.outlet_fact(outlet)?.shape);
    let value = konst.try_as_plain_ram()?.as_slice::<f32>()?[0];
    Ok(Some((value, next.id)))
}

/// The kernel as `[kh * kw][c]`: one vector of channel weights per tap.
fn tap_major_weights(
    kernel: &Tensor,
    format: KernelFormat,
    c: usize,
    kh: usize,
    kw: usize,
) -> Option<Vec<f32>> {
    let values = kernel.try_as_plain_ram().ok()?;
    let values = values.as_slice::<f32>().ok()?;
    if values.len() != c * kh * kw {
        return None;
    }
    // Index of (channel, ky, kx) in the stored kernel; the group's single in/out channel
    // per group makes I = 1 (OIHW, OHWI) or O = c with I = 1 (HWIO).
    let index = |ch: usize, ky: usize, kx: usize| match format {
        KernelFormat::OIHW => (ch * kh + ky) * kw + kx,
        KernelFormat::OHWI => (ch * kh + ky) * kw + kx,
        KernelFormat::HWIO => (ky * kw + kx) * c + ch,
    };
    let mut out = vec![0f32; c * kh * kw];
    for ky in 0..kh {
        for kx in 0..kw {
            for ch in 0..c {
                out[(ky * kw + kx) * c + ch] = values[index(ch, ky, kx)];
            }
        }
    }
    Some(out)
}

/// Where the convolution reads and writes: input `[n, h, w, c]`, output `[n, oh, ow, c]`
/// (or `[h, w, c]` and `[oh, ow, c]` without a batch axis, n = 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Geometry {
    batched: bool,
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    kh: usize,
    kw: usize,
    stride: (usize, usize),
    dilation: (usize, usize),
    /// Zero rows above and zero columns left of the input.
    pad: (usize, usize),
    oh: usize,
    ow: usize,
}

impl Geometry {
    fn input_shape(&self) -> TVec<usize> {
        self.shape(self.h, self.w)
    }

    fn output_shape(&self) -> TVec<usize> {
        self.shape(self.oh, self.ow)
    }

    fn shape(&self, h: usize, w: usize) -> TVec<usize> {
        if self.batched {
            tvec!(self.n, h, w, self.c)
        } else {
            tvec!(h, w, self.c)
        }
    }
}

/// A depthwise 2-D convolution on channel-last float data with its weights built in.
#[derive(Debug, Clone)]
pub struct ChannelLastDepthwise {
    geometry: Geometry,
    /// `[kh * kw][c]`.
    weights: Arc<[f32]>,
    /// `[c]`.
    bias: Arc<[f32]>,
    /// Clamp to `lo..=hi` after the sum (a fused ReLU6).
    clip: Option<(f32, f32)>,
}

/// Bitwise, so that equality is total (tract merges equal nodes).
impl PartialEq for ChannelLastDepthwise {
    fn eq(&self, other: &Self) -> bool {
        let clip = |c: Option<(f32, f32)>| c.map(|(lo, hi)| (lo.to_bits(), hi.to_bits()));
        self.geometry == other.geometry
            && clip(self.clip) == clip(other.clip)
            && same_bits(&self.weights, &other.weights)
            && same_bits(&self.bias, &other.bias)
    }
}

/// Whether two float slices hold the same bits (a total equality for op parameters).
pub(crate) fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

impl Eq for ChannelLastDepthwise {}

impl Op for ChannelLastDepthwise {
    fn name(&self) -> StaticName {
        "RunnelDepthwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?} clip {:?}", self.geometry, self.clip)])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for ChannelLastDepthwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let g = &self.geometry;
        ensure!(
            input.shape() == g.input_shape().as_slice(),
            "depthwise input shape {:?}, expected {:?}",
            input.shape(),
            g.input_shape()
        );
        let plain = input.try_as_plain_ram()?;
        let input = plain.as_slice::<f32>()?;
        let mut output = Tensor::zero::<f32>(&g.output_shape())?;
        {
            let mut view = output.try_as_plain_ram_mut()?;
            let out = view.as_slice_mut::<f32>()?;
            convolve(g, &self.weights, &self.bias, self.clip, input, out);
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for ChannelLastDepthwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1 && inputs[0].datum_type == f32::datum_type());
        Ok(tvec!(f32::fact(self.geometry.output_shape())))
    }

    as_op!();
}

/// Weights, bias and clamp of one convolution.
type Params<'a> = (&'a [f32], &'a [f32], Option<(f32, f32)>);

fn convolve(
    g: &Geometry,
    weights: &[f32],
    bias: &[f32],
    clip: Option<(f32, f32)>,
    input: &[f32],
    output: &mut [f32],
) {
    let params = (weights, bias, clip);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU was just checked to have the features the function is built for.
        unsafe { convolve_avx2(g, params, input, output) };
        return;
    }
    convolve_any::<false>(g, params, input, output)
}

/// The same loop, compiled with 8-wide vectors and fused multiply-adds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn convolve_avx2(g: &Geometry, params: Params, input: &[f32], output: &mut [f32]) {
    convolve_any::<true>(g, params, input, output)
}

/// Per output pixel: start from the bias, then for each kernel tap inside the input add
/// weight × input over the channel vector. Taps in the padding read zeros, so they are
/// skipped.
#[inline(always)]
fn convolve_any<const FMA: bool>(g: &Geometry, params: Params, input: &[f32], output: &mut [f32]) {
    let c = g.c;
    let image_in = g.h * g.w * c;
    let image_out = g.oh * g.ow * c;
    // Input offsets (of the channel vector) of the taps inside the image, per output pixel.
    let mut taps: Vec<(usize, usize)> = Vec::with_capacity(g.kh * g.kw);
    for (image, out_image) in input
        .chunks_exact(image_in)
        .zip(output.chunks_exact_mut(image_out))
    {
        for (oy, out_row) in out_image.chunks_exact_mut(g.ow * c).enumerate() {
            for (ox, out) in out_row.chunks_exact_mut(c).enumerate() {
                taps.clear();
                for ky in 0..g.kh {
                    let Some(iy) = (oy * g.stride.0 + ky * g.dilation.0)
                        .checked_sub(g.pad.0)
                        .filter(|&iy| iy < g.h)
                    else {
                        continue;
                    };
                    for kx in 0..g.kw {
                        if let Some(ix) = (ox * g.stride.1 + kx * g.dilation.1)
                            .checked_sub(g.pad.1)
                            .filter(|&ix| ix < g.w)
                        {
                            taps.push(((iy * g.w + ix) * c, (ky * g.kw + kx) * c));
                        }
                    }
                }
                pixel::<FMA>(&taps, image, params, out);
            }
        }
    }
}

/// One output pixel: the bias, then weight × input over the channel vector for each tap,
/// then the clamp.
/// (Holding a block of channels in registers across the taps measured slower: 4.4 ms
/// against 3.6 ms for the model's 16 depthwise convolutions.)
#[inline(always)]
fn pixel<const FMA: bool>(taps: &[(usize, usize)], image: &[f32], params: Params, out: &mut [f32]) {
    let (weights, bias, clip) = params;
    let c = out.len();
    out.copy_from_slice(bias);
    for &(xi, ki) in taps {
        let x = &image[xi..xi + c];
        let k = &weights[ki..ki + c];
        for ((o, &x), &k) in out.iter_mut().zip(x).zip(k) {
            // `mul_add` is one instruction only where the CPU has FMA; elsewhere a call.
            *o = if FMA { x.mul_add(k, *o) } else { *o + x * k };
        }
    }
    if let Some((lo, hi)) = clip {
        for o in out.iter_mut() {
            *o = o.max(lo).min(hi);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `x → Conv(depthwise) [→ ReLU6]` in NCHW as tract builds it (tract's own
    /// depthwise op, the reference) and rewritten, and compares the outputs.
    fn check(c: usize, side: usize, k: usize, stride: usize, pad: usize, relu6: bool) {
        check_dilated(c, side, k, stride, pad, 1, relu6)
    }

    fn check_dilated(
        c: usize,
        side: usize,
        k: usize,
        stride: usize,
        pad: usize,
        dilation: usize,
        relu6: bool,
    ) {
        use tract_onnx::tract_core::ops::cnn::{PaddingSpec, PoolSpec};
        let (h, w) = (side, side + 1);
        let x: Vec<f32> = (0..c * h * w)
            .map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5)
            .collect();
        let kernel: Vec<f32> = (0..c * k * k).map(|i| ((i as f32) * 0.37).sin()).collect();
        let bias: Vec<f32> = (0..c).map(|i| i as f32 * 0.01).collect();

        let mut model = TypedModel::default();
        let input = model.add_source("x", f32::fact([1, c, h, w])).unwrap();
        let kt = model
            .add_const("k", Tensor::from_shape(&[c, 1, k, k], &kernel).unwrap())
            .unwrap();
        let bt = model
            .add_const("b", Tensor::from_shape(&[c], &bias).unwrap())
            .unwrap();
        let pool_spec = PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: tvec!(k, k),
            padding: PaddingSpec::ExplicitOnnxPool(tvec!(pad, pad), tvec!(pad, pad), false),
            dilations: Some(tvec!(dilation, dilation)),
            strides: Some(tvec!(stride, stride)),
            input_channels: c,
            output_channels: c,
        };
        let conv = Conv {
            pool_spec,
            kernel_fmt: KernelFormat::OIHW,
            group: c,
            q_params: None,
        };
        let mut y = model.wire_node("conv", conv, &[input, kt, bt]).unwrap();
        if relu6 {
            use tract_onnx::tract_core::ops::math;
            let scalar = |v: f32| Tensor::from_shape(&[1, 1, 1, 1], &[v]).unwrap();
            let zero = model.add_const("zero", scalar(0.0)).unwrap();
            let six = model.add_const("six", scalar(6.0)).unwrap();
            y = model.wire_node("max", math::max(), &[y[0], zero]).unwrap();
            y = model.wire_node("min", math::min(), &[y[0], six]).unwrap();
        }
        model.select_output_outlets(&y).unwrap();
        let run = |model: TypedModel| {
            let plan = model.into_optimized().unwrap().into_runnable().unwrap();
            let xt = Tensor::from_shape(&[1, c, h, w], &x).unwrap();
            let out = plan.run(tvec!(xt.into())).unwrap();
            let view = out[0].try_as_plain_ram().unwrap();
            view.as_slice::<f32>().unwrap().to_vec()
        };
        let expected = run(model.clone());
        channel_last_depthwise(&mut model).unwrap();
        assert!(
            model
                .nodes
                .iter()
                .any(|n| n.op_is::<ChannelLastDepthwise>()),
            "the conv was not rewritten"
        );
        if relu6 {
            let op = model
                .nodes
                .iter()
                .find_map(|n| n.op_as::<ChannelLastDepthwise>())
                .unwrap();
            assert_eq!(op.clip, Some((0.0, 6.0)), "the clip was not fused");
        }
        let got = run(model);
        assert_eq!(got.len(), expected.len());
        for (i, (a, b)) in got.iter().zip(&expected).enumerate() {
            assert!((a - b).abs() < 1e-4, "element {i}: {a} vs {b}");
        }
    }

    #[test]
    fn matches_reference_3x3_same() {
        check(32, 9, 3, 1, 1, false);
    }

    #[test]
    fn matches_reference_5x5_stride_2() {
        check(20, 11, 5, 2, 2, false);
    }

    #[test]
    fn matches_reference_without_padding() {
        check(7, 6, 3, 2, 0, false);
    }

    #[test]
    fn matches_reference_dilated() {
        check_dilated(16, 12, 3, 1, 2, 2, false);
    }

    #[test]
    fn fuses_a_following_relu6() {
        check(48, 8, 3, 1, 1, true);
    }
}

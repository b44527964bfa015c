//! Dense (one group) 2-D convolution on channel-last data, without a padded copy of its
//! input, swapped into the tract model in place of tract's own.
//!
//! Why: tract 0.23 runs such a convolution, channel-last, as `Pad → lazy im2col → matrix
//! product`. The `Pad` copies the whole input into a zero-bordered tensor first (5.6 MB
//! for YOLOv4-tiny's 208×208×32 layer, the largest allocation of an inference), and the
//! lazy im2col gathers the input again, element by element, for every panel of output
//! channels. Channel-last, the kernel row `ky` of a convolution is a plain matrix product
//! with the input itself: output pixel `(oy, ox)` needs the `kw` input pixels
//! `ix = ox·sx − pl … + kw − 1` of row `iy = oy·sy + ky − pt`, which lie next to each
//! other in memory as one vector of `kw·cin` floats, and the next output pixel's vector
//! starts `sx·cin` floats further on. So per kernel row:
//!
//! ```text
//! out[pixels, cout] += in[pixels (row stride sx·cin), kw·cin] × w[ky][kw·cin, cout]
//! ```
//!
//! with the input read in place by the matrix product's own packing. With stride 1 and
//! an output as wide as the input, consecutive output rows continue the same pattern, so
//! one product covers a whole image per kernel row. Output pixels whose taps reach into
//! the zero border (the first and last columns; rows are simply left out) are recomputed
//! afterwards from their valid taps only. Bias and a following LeakyReLU / ReLU / ReLU6
//! are applied in the same pass.
//!
//! On a CPU with AVX2 and FMA a direct kernel does the work instead (`direct_rows`), at
//! any stride: per block of 16 output channels and 6 output pixels of a row, twelve
//! accumulators stay in registers while it walks the `kw · cin` contiguous inputs of each
//! valid kernel row (pixels `stride · cin` apart), broadcasting one input and multiplying
//! it with two vectors of weights packed once per block. Border pixels take only their
//! kernel columns inside the image, so nothing is padded or packed per inference. Other
//! CPUs go through the products above, on `matrixmultiply`'s kernels.
//!
//! The model loader swaps it in after tract's `conv_nhwc` transform
//! (`model.rs::channels_last`), and [`crate::layout`] makes the pools and upsamples
//! channel-last too, so that the declutter cancels the layout moves between them (this
//! op has no `change_axes`: it only runs channel-last). The border columns of a layer
//! run down the column, six rows per tile, rather than a pixel at a time (on 13×13 and
//! 26×26 layers they are a sixth and a thirteenth of the pixels), and the loop order
//! keeps the smaller of the weights and the input in the caches. Measured on
//! YOLOv4-tiny, one thread, batch 1, AMD EPYC (Zen 2), `cargo run --release -p
//! runnel-vision --example profile -- detect nodes`: 87–91 ms per inference, 13×13×256
//! → 512 in 8.5 ms (10.5 with a pixel at a time), 208×208×32 → 64 stride 2 in 4.9 ms
//! (7.6 through `matrixmultiply`), 104×104×64 → 64 in 9.0 (10.8 blocks-outer).

use std::ops::Range;
use std::sync::Arc;

use rayon::prelude::*;
use tract_linalg::multithread::{Executor, current_tract_executor};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::model::Rewriter;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat};
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::nn::{DataFormat, LeakyRelu};
use tract_onnx::tract_core::{rule_if, rule_if_some};

/// Replaces the model's float dense 2-D convolutions with a kernel of more than one tap
/// by [`ChannelLastConv`], on CPUs with AVX2 and FMA (elsewhere tract's own are as fast:
/// the products here are `matrixmultiply`'s portable kernels). This includes a network's
/// first convolution (three colour channels), which tract's direct spatial convolution
/// does faster alone (YOLOv4-tiny's 416×416×3 → 32: 2.6 ms against 3.6) but then runs
/// channel-first, and the 1.6 ms move of its 208×208×32 output back to channel-last
/// costs more.
pub fn channel_last_conv(model: &mut TypedModel) -> TractResult<()> {
    if !direct_kernel_available() {
        return Ok(());
    }
    rewrite_all(model)
}

/// The rewrite itself, on any CPU (the tests check the portable products too).
fn rewrite_all(model: &mut TypedModel) -> TractResult<()> {
    Rewriter::<()>::default()
        .with_rule_for("runnel-channel-last-conv", rewrite_conv)
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
    rule_if!(op.group == 1);
    let (kh, kw) = (spec.kernel_shape[0], spec.kernel_shape[1]);
    rule_if!(kh * kw > 1);
    rule_if!(spec.dilations().iter().all(|&d| d == 1));
    let x = model.outlet_fact(node.inputs[0])?;
    rule_if!(x.datum_type == f32::datum_type());
    rule_if_some!(shape = x.shape.as_concrete());
    rule_if_some!(kernel = model.outlet_fact(node.inputs[1])?.konst.clone());
    rule_if_some!(bias = model.outlet_fact(node.inputs[2])?.konst.clone());
    rule_if!(kernel.datum_type() == f32::datum_type() && bias.datum_type() == f32::datum_type());

    let (c_axis, batched) = match spec.data_format {
        DataFormat::NCHW => (1, true),
        DataFormat::NHWC => (3, true),
        DataFormat::CHW => (0, false),
        DataFormat::HWC => (2, false),
    };
    let rank = if batched { 4 } else { 3 };
    rule_if!(shape.len() == rank);
    let n = if batched { shape[0] } else { 1 };
    let cin = shape[c_axis];
    let cout = spec.output_channels;
    rule_if!(cin == spec.input_channels && cin > 0 && cout > 0);
    let spatial: Vec<usize> = (0..rank)
        .filter(|&a| a != c_axis && (!batched || a != 0))
        .map(|a| shape[a])
        .collect();
    let (h, w) = (spatial[0], spatial[1]);
    rule_if_some!(weights = row_major_weights(&kernel, op.kernel_fmt, cin, cout, kh, kw));
    let bias = bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
    let bias = match bias.len() {
        1 => vec![bias[0]; cout],
        len if len == cout => bias,
        _ => return Ok(None),
    };
    let padded = spec.computed_padding(&[h, w]);
    let strides = spec.strides();
    let geometry = Geometry {
        batched,
        n,
        h,
        w,
        cin,
        cout,
        kh,
        kw,
        stride: (strides[0], strides[1]),
        pad: (padded[0].pad_before, padded[1].pad_before),
        oh: padded[0].convoluted,
        ow: padded[1].convoluted,
    };
    rule_if!(geometry.oh > 0 && geometry.ow > 0 && geometry.stride.0 > 0 && geometry.stride.1 > 0);
    let (activation, last, then_move) = following_activation(model, node)?;
    // One layout of the weights only: the direct kernel's, or the products'.
    let direct = direct_kernel_available();
    let (weights, blocked) = if direct {
        (Vec::new(), cout_blocked(&weights, cout))
    } else {
        (weights, Vec::new())
    };
    let op = ChannelLastConv {
        geometry,
        blocked: Aligned::new(&blocked),
        weights: weights.into(),
        bias: bias.into(),
        activation,
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
    if let Some(mv) = then_move {
        wire = patch.wire_node(format!("{name}.moved"), mv, &[wire])?[0];
    }
    patch.shunt_outside(model, last, wire)?;
    Ok(Some(patch))
}

/// What is applied to each output value after the sum, inside the op.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Activation {
    Identity,
    /// `x < 0 ? alpha·x : x`.
    Leaky(f32),
    /// Clamp to `lo..=hi` (ReLU, ReLU6).
    Clip(f32, f32),
}

impl Activation {
    fn bits(self) -> (u8, u32, u32) {
        match self {
            Activation::Identity => (0, 0, 0),
            Activation::Leaky(a) => (1, a.to_bits(), 0),
            Activation::Clip(lo, hi) => (2, lo.to_bits(), hi.to_bits()),
        }
    }

    fn apply(self, out: &mut [f32]) {
        match self {
            Activation::Identity => {}
            Activation::Leaky(alpha) => {
                for o in out {
                    if *o < 0.0 {
                        *o *= alpha;
                    }
                }
            }
            Activation::Clip(lo, hi) => {
                for o in out {
                    *o = o.max(lo).min(hi);
                }
            }
        }
    }
}

/// A LeakyReLU that is the only reader of the convolution's output (directly, or
/// behind a layout move that is the output's only reader: the activation works per
/// element, so it commutes with the move), or a clamp as [`crate::depthwise`] fuses
/// it; the outlet the rewritten op replaces; and the move to re-apply after the op.
fn following_activation(
    model: &TypedModel,
    node: &TypedNode,
) -> TractResult<(Activation, OutletId, Option<AxisOp>)> {
    let only_reader = |node: &TypedNode| -> Option<usize> {
        let out = OutletId::new(node.id, 0);
        let successors = &node.outputs[0].successors;
        (successors.len() == 1 && !model.outputs.contains(&out)).then(|| successors[0].node)
    };
    let leaky = |id: usize| -> Option<f32> {
        let ew = model.node(id).op_as::<ElementWiseOp>()?;
        let leaky = ew.0.downcast_ref::<LeakyRelu>()?;
        ew.1.is_none().then_some(leaky.alpha)
    };
    if let Some(next) = only_reader(node) {
        if let Some(alpha) = leaky(next) {
            return Ok((Activation::Leaky(alpha), next.into(), None));
        }
        let mover = model.node(next);
        if let Some(mv) = mover.op_as::<AxisOp>()
            && matches!(mv, AxisOp::Move(..))
            && let Some(after) = only_reader(mover)
            && let Some(alpha) = leaky(after)
        {
            return Ok((Activation::Leaky(alpha), after.into(), Some(mv.clone())));
        }
    }
    let (clip, last) = crate::depthwise::following_clip(model, node)?;
    Ok((
        clip.map_or(Activation::Identity, |(lo, hi)| Activation::Clip(lo, hi)),
        last,
        None,
    ))
}

/// The kernel as `[kh][kw · cin][cout]`: per kernel row, the right-hand matrix of its
/// product (row `kx · cin + ci`, column `co`).
fn row_major_weights(
    kernel: &Tensor,
    format: KernelFormat,
    cin: usize,
    cout: usize,
    kh: usize,
    kw: usize,
) -> Option<Vec<f32>> {
    let values = kernel.try_as_plain_ram().ok()?;
    let values = values.as_slice::<f32>().ok()?;
    if values.len() != cout * cin * kh * kw {
        return None;
    }
    let index = |co: usize, ci: usize, ky: usize, kx: usize| match format {
        KernelFormat::OIHW => ((co * cin + ci) * kh + ky) * kw + kx,
        KernelFormat::OHWI => ((co * kh + ky) * kw + kx) * cin + ci,
        KernelFormat::HWIO => ((ky * kw + kx) * cin + ci) * cout + co,
    };
    let mut out = vec![0f32; values.len()];
    for ky in 0..kh {
        for kx in 0..kw {
            for ci in 0..cin {
                let row = (ky * kw + kx) * cin + ci;
                for co in 0..cout {
                    out[row * cout + co] = values[index(co, ci, ky, kx)];
                }
            }
        }
    }
    Some(out)
}

/// Where the convolution reads and writes: input `[n, h, w, cin]`, output
/// `[n, oh, ow, cout]` (or without the batch axis, n = 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Geometry {
    batched: bool,
    n: usize,
    h: usize,
    w: usize,
    cin: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    stride: (usize, usize),
    /// Zero rows above and zero columns left of the input.
    pad: (usize, usize),
    oh: usize,
    ow: usize,
}

impl Geometry {
    fn input_shape(&self) -> TVec<usize> {
        self.shape(self.h, self.w, self.cin)
    }

    fn output_shape(&self) -> TVec<usize> {
        self.shape(self.oh, self.ow, self.cout)
    }

    fn shape(&self, h: usize, w: usize, c: usize) -> TVec<usize> {
        if self.batched {
            tvec!(self.n, h, w, c)
        } else {
            tvec!(h, w, c)
        }
    }

    /// The input row output row `oy` reads for kernel row `ky`, if it is not padding.
    fn input_row(&self, oy: usize, ky: usize) -> Option<usize> {
        (oy * self.stride.0 + ky)
            .checked_sub(self.pad.0)
            .filter(|&iy| iy < self.h)
    }

    /// The output rows of `rows` whose kernel row `ky` lies inside the input.
    fn rows_for_tap(&self, ky: usize, rows: &Range<usize>) -> Range<usize> {
        let first = rows.clone().find(|&oy| self.input_row(oy, ky).is_some());
        let Some(first) = first else { return 0..0 };
        let last = rows
            .clone()
            .rev()
            .find(|&oy| self.input_row(oy, ky).is_some())
            .unwrap_or(first);
        first..last + 1
    }

    /// The output columns all of whose taps lie inside the input.
    fn interior_columns(&self) -> Range<usize> {
        let (sx, pl) = (self.stride.1, self.pad.1);
        let lo = pl.div_ceil(sx).min(self.ow);
        let hi = match (self.w + pl).checked_sub(self.kw) {
            Some(reach) => (reach / sx + 1).min(self.ow),
            None => 0,
        };
        lo..hi.max(lo)
    }

    /// The kernel columns of output column `ox` that lie inside the input.
    fn taps_of_column(&self, ox: usize) -> Range<usize> {
        let left = ox * self.stride.1;
        let lo = self.pad.1.saturating_sub(left).min(self.kw);
        let hi = (self.w + self.pad.1).saturating_sub(left).min(self.kw);
        lo..hi.max(lo)
    }
}

/// A dense 2-D convolution on channel-last float data with its weights built in.
#[derive(Debug, Clone)]
pub struct ChannelLastConv {
    geometry: Geometry,
    /// `[kh][kw · cin][cout]`, for the products (empty when the direct kernel runs).
    weights: Arc<[f32]>,
    /// The same in blocks of [`BLOCK`] output channels, `[cout / BLOCK][kh][kw · cin][BLOCK]`
    /// (the last block zero-filled), for the direct kernel (empty when the products run),
    /// on cache lines.
    blocked: Aligned,
    /// `[cout]`.
    bias: Arc<[f32]>,
    activation: Activation,
}

/// Bitwise, so that equality is total (tract merges equal nodes).
impl PartialEq for ChannelLastConv {
    fn eq(&self, other: &Self) -> bool {
        use crate::depthwise::same_bits;
        self.geometry == other.geometry
            && self.activation.bits() == other.activation.bits()
            && same_bits(&self.weights, &other.weights)
            && same_bits(self.blocked.get(), other.blocked.get())
            && same_bits(&self.bias, &other.bias)
    }
}

impl Eq for ChannelLastConv {}

impl Op for ChannelLastConv {
    fn name(&self) -> StaticName {
        "RunnelConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?} {:?}", self.geometry, self.activation)])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for ChannelLastConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let g = &self.geometry;
        ensure!(
            input.shape() == g.input_shape().as_slice(),
            "convolution input shape {:?}, expected {:?}",
            input.shape(),
            g.input_shape()
        );
        let plain = input.try_as_plain_ram()?;
        let input = plain.as_slice::<f32>()?;
        let mut output = Tensor::zero::<f32>(&g.output_shape())?;
        {
            let mut view = output.try_as_plain_ram_mut()?;
            let out = view.as_slice_mut::<f32>()?;
            let image_in = g.h * g.w * g.cin;
            let row_out = g.ow * g.cout;
            let pool = match current_tract_executor() {
                Executor::MultiThread(pool) if g.oh >= 2 * pool.current_num_threads() => Some(pool),
                _ => None,
            };
            for (image, out_image) in input
                .chunks_exact(image_in)
                .zip(out.chunks_exact_mut(g.oh * row_out))
            {
                match &pool {
                    // Each worker takes a band of output rows; a band's products read
                    // any input row but write only its own rows.
                    Some(pool) => {
                        let band = g.oh.div_ceil(pool.current_num_threads());
                        pool.install(|| {
                            out_image
                                .par_chunks_mut(band * row_out)
                                .enumerate()
                                .try_for_each(|(i, rows)| {
                                    let first = i * band;
                                    let range = first..first + rows.len() / row_out;
                                    self.convolve_rows(image, rows, range)
                                })
                        })?;
                    }
                    None => self.convolve_rows(image, out_image, 0..g.oh)?,
                }
            }
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for ChannelLastConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1 && inputs[0].datum_type == f32::datum_type());
        Ok(tvec!(f32::fact(self.geometry.output_shape())))
    }

    as_op!();
}

impl ChannelLastConv {
    /// Output rows `rows` (held in `out`) of one image: bias, one product per kernel
    /// row over the interior columns, the border columns from their valid taps, then
    /// the activation.
    fn convolve_rows(&self, image: &[f32], out: &mut [f32], rows: Range<usize>) -> TractResult<()> {
        let g = &self.geometry;
        let (cin, cout) = (g.cin, g.cout);
        let (sy, sx) = g.stride;
        let k = g.kw * cin;
        if !self.blocked.get().is_empty() {
            self.direct_rows(image, out, &rows)?;
            self.activation.apply(out);
            return Ok(());
        }
        let first = rows.start;
        for px in out.chunks_exact_mut(cout) {
            px.copy_from_slice(&self.bias);
        }
        let interior = g.interior_columns();
        let whole_rows = sx == 1 && sy == 1 && g.ow == g.w;
        if !interior.is_empty() {
            for ky in 0..g.kh {
                let tap_rows = g.rows_for_tap(ky, &rows);
                if tap_rows.is_empty() {
                    continue;
                }
                let b = Mat {
                    offset: ky * k * cout,
                    rows: k,
                    cols: cout,
                    row_stride: cout,
                };
                if whole_rows {
                    // One product over every pixel from the first interior one of the
                    // first row to the last interior one of the last row; the border
                    // pixels in between get wrapped taps and are redone below.
                    let iy = g.input_row(tap_rows.start, ky).unwrap_or(0);
                    let pixels = (tap_rows.len() - 1) * g.w + interior.end - interior.start;
                    let a = Mat {
                        offset: (iy * g.w + interior.start - g.pad.1) * cin,
                        rows: pixels,
                        cols: k,
                        row_stride: cin,
                    };
                    let c = Mat {
                        offset: ((tap_rows.start - first) * g.ow + interior.start) * cout,
                        rows: pixels,
                        cols: cout,
                        row_stride: cout,
                    };
                    gemm_acc(image, a, &self.weights, b, out, c)?;
                } else {
                    for oy in tap_rows {
                        let Some(iy) = g.input_row(oy, ky) else {
                            continue;
                        };
                        let a = Mat {
                            offset: (iy * g.w + interior.start * sx - g.pad.1) * cin,
                            rows: interior.len(),
                            cols: k,
                            row_stride: sx * cin,
                        };
                        let c = Mat {
                            offset: ((oy - first) * g.ow + interior.start) * cout,
                            rows: interior.len(),
                            cols: cout,
                            row_stride: cout,
                        };
                        gemm_acc(image, a, &self.weights, b, out, c)?;
                    }
                }
            }
        }
        let border = (0..g.ow).filter(|ox| !interior.contains(ox));
        for ox in border {
            for oy in rows.clone() {
                let at = ((oy - first) * g.ow + ox) * cout;
                out[at..at + cout].copy_from_slice(&self.bias);
            }
            let taps = g.taps_of_column(ox);
            if taps.is_empty() {
                continue;
            }
            let ix = ox * sx + taps.start - g.pad.1;
            for ky in 0..g.kh {
                let tap_rows = g.rows_for_tap(ky, &rows);
                if tap_rows.is_empty() {
                    continue;
                }
                let Some(iy) = g.input_row(tap_rows.start, ky) else {
                    continue;
                };
                let a = Mat {
                    offset: (iy * g.w + ix) * cin,
                    rows: tap_rows.len(),
                    cols: taps.len() * cin,
                    row_stride: sy * g.w * cin,
                };
                let b = Mat {
                    offset: (ky * k + taps.start * cin) * cout,
                    rows: taps.len() * cin,
                    cols: cout,
                    row_stride: cout,
                };
                let c = Mat {
                    offset: ((tap_rows.start - first) * g.ow + ox) * cout,
                    rows: tap_rows.len(),
                    cols: cout,
                    row_stride: g.ow * cout,
                };
                gemm_acc(image, a, &self.weights, b, out, c)?;
            }
        }
        self.activation.apply(out);
        Ok(())
    }
}

/// Output channels per block of the direct kernel: two AVX vectors.
const BLOCK: usize = 16;

/// Output pixels of one row per step of the direct kernel.
const TILE: usize = 6;

/// Floats that start on a cache line: a block's 16 weights of one input are one line, so
/// that the kernel's two vector loads of them never straddle two (a weights array at 16
/// bytes past a line can cost a split load per vector).
#[derive(Debug, Clone)]
struct Aligned {
    data: Arc<[f32]>,
    /// Where the aligned floats start in `data`.
    at: usize,
}

impl Aligned {
    /// Cache-line size, in floats.
    const LINE: usize = 16;

    fn new(values: &[f32]) -> Aligned {
        let mut data: Arc<[f32]> = vec![0f32; values.len() + Self::LINE].into();
        let misaligned = (data.as_ptr() as usize / std::mem::size_of::<f32>()) % Self::LINE;
        let at = (Self::LINE - misaligned) % Self::LINE;
        if let Some(d) = Arc::get_mut(&mut data) {
            d[at..at + values.len()].copy_from_slice(values);
        }
        Aligned { data, at }
    }

    fn get(&self) -> &[f32] {
        &self.data[self.at..self.data.len() - Self::LINE + self.at]
    }
}

/// `[kh][kw · cin][cout]` weights as `[ceil(cout / BLOCK)][kh][kw · cin][BLOCK]`.
fn cout_blocked(weights: &[f32], cout: usize) -> Vec<f32> {
    let rows = weights.len() / cout.max(1);
    let blocks = cout.div_ceil(BLOCK);
    let mut out = vec![0f32; blocks * rows * BLOCK];
    for b in 0..blocks {
        for r in 0..rows {
            for j in 0..BLOCK.min(cout - b * BLOCK) {
                out[(b * rows + r) * BLOCK + j] = weights[r * cout + b * BLOCK + j];
            }
        }
    }
    out
}

fn direct_kernel_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl ChannelLastConv {
    /// Every column of output rows `rows`, written whole (bias plus every
    /// valid tap), without packing the input. Per block of [`BLOCK`] output channels and
    /// [`TILE`] output pixels, the accumulators stay in registers while the kernel walks
    /// the `kw · cin` contiguous inputs of each valid kernel row; border pixels take only
    /// their kernel columns inside the image.
    fn direct_rows(&self, image: &[f32], out: &mut [f32], rows: &Range<usize>) -> TractResult<()> {
        let g = &self.geometry;
        let k = g.kw * g.cin;
        let interior = g.interior_columns();
        // Bounds, once (so that the kernel can index without checks): interior pixels
        // read `kw` whole pixels inside the row, border pixels only their valid taps, rows
        // only valid input rows (`Geometry::input_row`); the output rows are in `out`.
        let sx = g.stride.1;
        ensure!(g.ow >= interior.end);
        ensure!(interior.is_empty() || interior.start * sx >= g.pad.1);
        ensure!(interior.is_empty() || (interior.end - 1) * sx + g.kw <= g.w + g.pad.1);
        ensure!(image.len() >= g.h * g.w * g.cin);
        ensure!(out.len() >= rows.len() * g.ow * g.cout);
        ensure!(self.blocked.get().len() >= g.cout.div_ceil(BLOCK) * g.kh * k * BLOCK);
        ensure!(self.bias.len() >= g.cout);
        let border: Vec<Tap> = (0..g.ow)
            .filter(|ox| !interior.contains(ox))
            .map(|ox| Tap {
                ox,
                kx: g.taps_of_column(ox),
            })
            .collect();
        for t in &border {
            ensure!(t.kx.is_empty() || t.ox * sx + t.kx.start >= g.pad.1);
            ensure!(t.kx.is_empty() || t.ox * sx + t.kx.end <= g.w + g.pad.1);
        }
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: the CPU has AVX2 and FMA (`direct_kernel_available`), and every
            // index the kernel forms is inside the slices by the checks above.
            unsafe { direct_avx2(self, image, out, rows.clone(), interior, &border) };
        }
        Ok(())
    }
}

/// Output pixel `ox` and the kernel columns it takes.
#[derive(Debug, Clone)]
struct Tap {
    ox: usize,
    kx: Range<usize>,
}

/// The direct kernel (see [`ChannelLastConv::direct_rows`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn direct_avx2(
    op: &ChannelLastConv,
    image: &[f32],
    out: &mut [f32],
    rows: Range<usize>,
    interior: Range<usize>,
    border: &[Tap],
) {
    let g = &op.geometry;
    let k = g.kw * g.cin;
    let first = rows.start;
    // Per output row, its kernel rows inside the image: (ky, iy).
    let row_taps: Vec<Vec<(usize, usize)>> = rows
        .clone()
        .map(|oy| {
            (0..g.kh)
                .filter_map(|ky| g.input_row(oy, ky).map(|iy| (ky, iy)))
                .collect()
        })
        .collect();
    let blocks: Vec<Block> = (0..g.cout.div_ceil(BLOCK))
        .map(|block| {
            let width = BLOCK.min(g.cout - block * BLOCK);
            let mut bias = [0f32; BLOCK];
            bias[..width].copy_from_slice(&op.bias[block * BLOCK..block * BLOCK + width]);
            Block {
                weights: &op.blocked.get()[block * g.kh * k * BLOCK..],
                bias,
                block,
                width,
            }
        })
        .collect();
    // Consecutive pixels of a row are `stride · cin` inputs apart; of a column,
    // `stride · w · cin`.
    let along = Step {
        input: g.stride.1 * g.cin,
        output: 1,
    };
    let down = Step {
        input: g.stride.0 * g.w * g.cin,
        output: g.ow,
    };
    // The interior columns of one output row of one block of channels.
    let row_of = |ctx: &Block, oy: usize, taps: &[(usize, usize)], out: &mut [f32]| {
        let row = (oy - first) * g.ow;
        let mut ox = interior.start;
        while ox < interior.end {
            let n = (interior.end - ox).min(TILE);
            let at = Tap { ox, kx: 0..g.kw };
            // SAFETY: as `direct_rows` checked.
            unsafe { tiles(n, g, ctx, taps, image, &at, out, row, along) };
            ox += n;
        }
    };
    // The rows all of whose kernel rows lie inside the input (a contiguous range).
    let full = {
        let mut f = rows
            .clone()
            .zip(&row_taps)
            .filter(|(_, t)| t.len() == g.kh)
            .map(|(oy, _)| oy);
        let lo = f.next();
        match (lo, f.next_back().or(lo)) {
            (Some(lo), Some(hi)) => lo..hi + 1,
            _ => 0..0,
        }
    };
    // The border columns of one block: down each column in tiles of pixels over the
    // full rows (same kernel rows, inputs one input row per stride apart), one pixel at
    // a time in the rows that reach into the padding.
    let border_of = |ctx: &Block, out: &mut [f32]| {
        for at in border {
            for (oy, taps) in rows.clone().zip(&row_taps) {
                if !full.contains(&oy) {
                    // SAFETY: as `direct_rows` checked.
                    unsafe { tiles(1, g, ctx, taps, image, at, out, (oy - first) * g.ow, along) };
                }
            }
            let mut oy = full.start;
            while oy < full.end {
                let n = (full.end - oy).min(TILE);
                let taps = &row_taps[oy - first];
                // SAFETY: as `direct_rows` checked; rows `oy..oy + n` are full rows of
                // `rows`, so every kernel row of each lies inside the input.
                unsafe { tiles(n, g, ctx, taps, image, at, out, (oy - first) * g.ow, down) };
                oy += n;
            }
        }
    };
    // Whichever is smaller stays in the caches while the other streams past once: the
    // weights (every block per output row: wide shallow layers), or the input rows (every
    // output row per block: deep narrow layers, whose weights are megabytes).
    if op.blocked.get().len() <= g.h * g.w * g.cin {
        for (oy, taps) in rows.clone().zip(&row_taps) {
            for ctx in &blocks {
                row_of(ctx, oy, taps, out);
            }
        }
        for ctx in &blocks {
            border_of(ctx, out);
        }
    } else {
        for ctx in &blocks {
            for (oy, taps) in rows.clone().zip(&row_taps) {
                row_of(ctx, oy, taps, out);
            }
            border_of(ctx, out);
        }
    }
}

/// How far apart consecutive pixels of a tile are: in the input (in floats) and in the
/// output (in pixels).
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy)]
struct Step {
    input: usize,
    output: usize,
}

/// [`tile`] for `n` (1 to [`TILE`]) pixels.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tiles(
    n: usize,
    g: &Geometry,
    b: &Block,
    taps: &[(usize, usize)],
    image: &[f32],
    at: &Tap,
    out: &mut [f32],
    row: usize,
    step: Step,
) {
    // SAFETY: the caller's.
    unsafe {
        match n {
            0 => {}
            1 => tile::<1>(g, b, taps, image, at, out, row, step),
            2 => tile::<2>(g, b, taps, image, at, out, row, step),
            3 => tile::<3>(g, b, taps, image, at, out, row, step),
            4 => tile::<4>(g, b, taps, image, at, out, row, step),
            5 => tile::<5>(g, b, taps, image, at, out, row, step),
            _ => tile::<TILE>(g, b, taps, image, at, out, row, step),
        }
    }
}

/// One block of output channels: its weights `[kh][kw · cin][BLOCK]`, bias, index and
/// width (the last block may be narrower).
struct Block<'a> {
    weights: &'a [f32],
    bias: [f32; BLOCK],
    block: usize,
    width: usize,
}

/// `N` output pixels, the first at column `at.ox` of output row `row` (in pixels from
/// the start of `out`), the others `step` apart (along the row or down the column; all
/// taking kernel columns `at.kx`, and the kernel rows `taps` of the first pixel's row,
/// each pixel's input `step.input` further), one block of output channels: the bias,
/// then weight × input over every valid kernel row's inputs, then the store.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const N: usize>(
    g: &Geometry,
    b: &Block,
    taps: &[(usize, usize)],
    image: &[f32],
    at: &Tap,
    out: &mut [f32],
    row: usize,
    step: Step,
) {
    use std::arch::x86_64::*;
    let (cin, k) = (g.cin, g.kw * g.cin);
    let first_k = at.kx.start * cin;
    let len = at.kx.len() * cin;
    // SAFETY: the caller checked that every input, weight and output index formed here
    // lies inside its slice (`ChannelLastConv::direct_rows`).
    unsafe {
        let b0 = _mm256_loadu_ps(b.bias.as_ptr());
        let b1 = _mm256_loadu_ps(b.bias.as_ptr().add(8));
        let mut acc = [[b0, b1]; N];
        let x = image.as_ptr();
        for &(ky, iy) in taps {
            let w = b.weights.as_ptr().add((ky * k + first_k) * BLOCK);
            let start = (iy * g.w + at.ox * g.stride.1 + at.kx.start - g.pad.1) * cin;
            for i in 0..len {
                let w0 = _mm256_loadu_ps(w.add(i * BLOCK));
                let w1 = _mm256_loadu_ps(w.add(i * BLOCK + 8));
                for (p, a) in acc.iter_mut().enumerate() {
                    let v = _mm256_broadcast_ss(&*x.add(start + p * step.input + i));
                    a[0] = _mm256_fmadd_ps(v, w0, a[0]);
                    a[1] = _mm256_fmadd_ps(v, w1, a[1]);
                }
            }
        }
        for (p, a) in acc.iter().enumerate() {
            let o = (row + at.ox + p * step.output) * g.cout + b.block * BLOCK;
            if b.width == BLOCK {
                _mm256_storeu_ps(out.as_mut_ptr().add(o), a[0]);
                _mm256_storeu_ps(out.as_mut_ptr().add(o + 8), a[1]);
            } else {
                let mut tmp = [0f32; BLOCK];
                _mm256_storeu_ps(tmp.as_mut_ptr(), a[0]);
                _mm256_storeu_ps(tmp.as_mut_ptr().add(8), a[1]);
                out[o..o + b.width].copy_from_slice(&tmp[..b.width]);
            }
        }
    }
}

/// A row-major matrix inside a slice: `rows × cols` from `offset`, rows `row_stride`
/// apart (rows may overlap: the input's kernel-row vectors do).
#[derive(Debug, Clone, Copy)]
struct Mat {
    offset: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
}

impl Mat {
    /// One past the last element, if the matrix has any.
    fn end(&self) -> Option<usize> {
        (self.rows > 0 && self.cols > 0)
            .then(|| self.offset + (self.rows - 1) * self.row_stride + self.cols)
    }
}

/// `c += a × b`, each a [`Mat`] inside its slice (bounds checked here).
fn gemm_acc(
    a_data: &[f32],
    a: Mat,
    b_data: &[f32],
    b: Mat,
    c_data: &mut [f32],
    c: Mat,
) -> TractResult<()> {
    ensure!(
        a.cols == b.rows && a.rows == c.rows && b.cols == c.cols,
        "product shapes {a:?} {b:?} {c:?}"
    );
    let (Some(a_end), Some(b_end), Some(c_end)) = (a.end(), b.end(), c.end()) else {
        return Ok(());
    };
    ensure!(
        a_end <= a_data.len() && b_end <= b_data.len() && c_end <= c_data.len(),
        "convolution product out of bounds"
    );
    let stride = |s: usize| isize::try_from(s).map_err(|e| format_err!("stride {s}: {e}"));
    // SAFETY: the three matrices were just checked to lie inside their slices (the last
    // element of each is below its slice's length); `c` is borrowed mutably, `a` and `b`
    // only read, and `c` does not alias them (a separate slice).
    unsafe {
        matrixmultiply::sgemm(
            a.rows,
            a.cols,
            b.cols,
            1.0,
            a_data.as_ptr().add(a.offset),
            stride(a.row_stride)?,
            1,
            b_data.as_ptr().add(b.offset),
            stride(b.row_stride)?,
            1,
            1.0,
            c_data.as_mut_ptr().add(c.offset),
            stride(c.row_stride)?,
            1,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::cnn::{PaddingSpec, PoolSpec};

    #[derive(Clone, Copy)]
    struct Case {
        cin: usize,
        cout: usize,
        h: usize,
        w: usize,
        k: (usize, usize),
        stride: (usize, usize),
        /// (top, left, bottom, right)
        pad: (usize, usize, usize, usize),
        leaky: bool,
    }

    fn case(cin: usize, cout: usize, side: usize, k: usize, stride: usize, pad: usize) -> Case {
        Case {
            cin,
            cout,
            h: side,
            w: side + 1,
            k: (k, k),
            stride: (stride, stride),
            pad: (pad, pad, pad, pad),
            leaky: false,
        }
    }

    /// Runs `x → Conv [→ LeakyRelu]` in NCHW as tract builds it (the reference) and
    /// rewritten, and compares the outputs.
    fn check(c: Case) {
        let x: Vec<f32> = (0..c.cin * c.h * c.w)
            .map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5)
            .collect();
        let kernel: Vec<f32> = (0..c.cout * c.cin * c.k.0 * c.k.1)
            .map(|i| ((i as f32) * 0.37).sin())
            .collect();
        let bias: Vec<f32> = (0..c.cout).map(|i| i as f32 * 0.01 - 0.1).collect();

        let mut model = TypedModel::default();
        let input = model
            .add_source("x", f32::fact([1, c.cin, c.h, c.w]))
            .unwrap();
        let kt = model
            .add_const(
                "k",
                Tensor::from_shape(&[c.cout, c.cin, c.k.0, c.k.1], &kernel).unwrap(),
            )
            .unwrap();
        let bt = model
            .add_const("b", Tensor::from_shape(&[c.cout], &bias).unwrap())
            .unwrap();
        let pool_spec = PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: tvec!(c.k.0, c.k.1),
            padding: PaddingSpec::ExplicitOnnxPool(
                tvec!(c.pad.0, c.pad.1),
                tvec!(c.pad.2, c.pad.3),
                false,
            ),
            dilations: None,
            strides: Some(tvec!(c.stride.0, c.stride.1)),
            input_channels: c.cin,
            output_channels: c.cout,
        };
        let conv = Conv {
            pool_spec,
            kernel_fmt: KernelFormat::OIHW,
            group: 1,
            q_params: None,
        };
        let mut y = model.wire_node("conv", conv, &[input, kt, bt]).unwrap();
        if c.leaky {
            let leaky = tract_onnx::tract_core::ops::nn::leaky_relu(0.1);
            y = model.wire_node("leaky", leaky, &y).unwrap();
        }
        model.select_output_outlets(&y).unwrap();
        let run = |model: TypedModel, threads: usize| {
            let plan = model
                .into_optimized()
                .unwrap()
                .into_runnable_with_options(&RunOptions {
                    executor: Some(if threads > 1 {
                        Executor::multithread(threads)
                    } else {
                        Executor::SingleThread
                    }),
                    ..RunOptions::default()
                })
                .unwrap();
            let xt = Tensor::from_shape(&[1, c.cin, c.h, c.w], &x).unwrap();
            let out = plan.run(tvec!(xt.into())).unwrap();
            let view = out[0].try_as_plain_ram().unwrap();
            view.as_slice::<f32>().unwrap().to_vec()
        };
        let expected = run(model.clone(), 1);
        rewrite_all(&mut model).unwrap();
        let op = model
            .nodes
            .iter()
            .find_map(|n| n.op_as::<ChannelLastConv>())
            .expect("the conv was not rewritten");
        if c.leaky {
            assert_eq!(
                op.activation,
                Activation::Leaky(0.1),
                "the LeakyReLU was not fused"
            );
        }
        for threads in [1, 3] {
            let got = run(model.clone(), threads);
            assert_eq!(got.len(), expected.len());
            for (i, (a, b)) in got.iter().zip(&expected).enumerate() {
                assert!(
                    (a - b).abs() < 1e-4 * (1.0 + b.abs()),
                    "{threads} threads, element {i}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn matches_reference_3x3_same() {
        check(case(16, 24, 9, 3, 1, 1));
    }

    #[test]
    fn matches_reference_with_a_partial_channel_block_and_every_tile_width() {
        // 40 output channels: two blocks of 16 and one of 8; rows of 13, 14, …, 18
        // pixels leave 11 … 16 interior ones: a tile of 6 and a rest of every width.
        for w in 13..19 {
            check(Case {
                w,
                ..case(9, 40, 5, 3, 1, 1)
            });
        }
    }

    #[test]
    fn matches_reference_3x3_same_square_with_leaky_relu() {
        check(Case {
            w: 9,
            leaky: true,
            ..case(5, 7, 9, 3, 1, 1)
        });
    }

    #[test]
    fn matches_reference_stride_2_asymmetric_padding() {
        // Darknet's downsampling: pad only after, as YOLOv4-tiny's first layers.
        check(Case {
            pad: (1, 1, 0, 0),
            ..case(3, 8, 12, 3, 2, 0)
        });
        check(Case {
            pad: (0, 0, 1, 1),
            ..case(4, 8, 13, 3, 2, 0)
        });
    }

    #[test]
    fn matches_reference_5x5_stride_2() {
        check(case(6, 10, 11, 5, 2, 2));
    }

    #[test]
    fn matches_reference_without_padding() {
        check(case(7, 9, 6, 3, 1, 0));
        check(case(7, 9, 6, 3, 2, 0));
    }

    #[test]
    fn matches_reference_when_the_border_is_wider_than_the_image() {
        // Every column is a border column; some outputs see only padding.
        check(case(3, 4, 2, 3, 1, 2));
        check(Case {
            k: (1, 3),
            pad: (0, 1, 0, 1),
            ..case(5, 6, 4, 3, 1, 1)
        });
    }
}

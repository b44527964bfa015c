//! Per-op inference time of a bundled model, one thread, batch 1:
//!
//!     cargo run --release -p runnel-vision --example profile                 # classifier, as runnel runs it
//!     cargo run --release -p runnel-vision --example profile -- detect       # the detector, as runnel runs it
//!     cargo run --release -p runnel-vision --example profile -- detect tract # tract's own convolutions, channel-last
//!     cargo run --release -p runnel-vision --example profile -- detect nchw  # tract's own, channel-first
//!     cargo run --release -p runnel-vision --example profile -- detect nodes # per node, not per op kind
//!     cargo run --release -p runnel-vision --example profile -- detect plan  # print the optimized plan first
//!
//! Prints the time per op kind, largest first. Used to find where inference time goes
//! (see `runnel_vision::depthwise` and `runnel_vision::conv`).
use std::collections::HashMap;
use std::time::Instant;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::format_err;
use tract_onnx::tract_core::plan::{SimpleState, eval};

fn main() -> TractResult<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let detect = args.first().map(String::as_str) == Some("detect");
    let has = |flag: &str| args.iter().any(|a| a == flag);
    let by_node = has("nodes");
    let (path, side) = if detect {
        ("assets/models/yolov4-tiny/model.onnx", 416)
    } else {
        ("assets/models/efficientnet-lite0/model.onnx", 224)
    };
    let mut model = tract_onnx::onnx().model_for_path(path)?;
    model.set_input_fact(0, f32::fact([1, 3, side, side]).into())?;
    let mut typed = model.into_typed()?.into_decluttered()?;
    if !has("tract") {
        runnel_vision::depthwise::channel_last_depthwise(&mut typed)?;
    }
    if !has("nchw") {
        let nhwc = tract_onnx::tract_core::transform::get_transform("conv_nhwc")?
            .ok_or_else(|| format_err!("tract has no conv_nhwc transform"))?;
        typed.transform(nhwc.as_ref())?;
        // As `model.rs::channels_last` does.
        if has("tract") {
            typed.declutter()?;
        } else {
            runnel_vision::conv::channel_last_conv(&mut typed)?;
            runnel_vision::layout::channel_last_through(&mut typed)?;
        }
    } else {
        typed.declutter()?;
    }
    let optimized = typed.into_optimized()?;
    if has("plan") {
        for node in optimized
            .eval_order()?
            .into_iter()
            .map(|id| optimized.node(id))
        {
            let inputs: Vec<String> = node.inputs.iter().map(|i| i.node.to_string()).collect();
            println!(
                "#{} {} {} <- [{}]",
                node.id,
                node.op().name(),
                node.name,
                inputs.join(",")
            );
        }
    }
    let plan = optimized.into_runnable()?;

    let input: Tensor = tract_ndarray::Array4::<f32>::from_elem((1, 3, side, side), 0.3).into();
    let mut state = SimpleState::new(&plan)?;
    let (warmup, runs) = if detect { (2, 10) } else { (5, 30) };
    let mut per_op: HashMap<String, (f64, usize)> = HashMap::new();
    for run in 0..warmup + runs {
        state.run_plan_with_eval(
            tvec!(input.clone().into()),
            |ctx, op_state, node, inputs| {
                let started = Instant::now();
                let outputs = eval(ctx, op_state, node, inputs);
                if run >= warmup {
                    let key = if by_node {
                        format!("{} {}", node.op().name(), node.name)
                    } else {
                        node.op().name().to_string()
                    };
                    let entry = per_op.entry(key).or_default();
                    entry.0 += started.elapsed().as_secs_f64() * 1e3;
                    entry.1 += 1;
                }
                outputs
            },
        )?;
    }
    let mut rows: Vec<_> = per_op.into_iter().collect();
    rows.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
    let total: f64 = rows.iter().map(|r| r.1.0).sum::<f64>() / runs as f64;
    println!("{total:.2} ms per inference");
    for (op, (ms, count)) in rows {
        println!("{:>8.2} ms {:>4}× {op}", ms / runs as f64, count / runs);
    }
    Ok(())
}

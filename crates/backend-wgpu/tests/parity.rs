//! The op parity kit on wgpu: every op against the f64 oracles (fresh random
//! inputs, awkward sizes, poisoned outputs, sentinels), with and without
//! subgroup reductions, and with weights split over many small bindings.

mod common;

use std::sync::Arc;

use tessera_backend::parity::Tolerances;
use tessera_backend::{Backend, HostTensor};
use tessera_backend_wgpu::{WeightFormat, WgpuOptions};
use tessera_gguf::GgufFile;

tessera_backend::parity_tests! {
    every_op_on_wgpu: common::backend("parity_default", WgpuOptions::default()), Tolerances::F32;
    every_op_on_wgpu_without_subgroups: common::backend(
        "parity_no_subgroups",
        WgpuOptions { use_subgroups: false, ..WgpuOptions::default() },
    ), Tolerances::F32;
    // 4 KiB parts: the kit's larger tables and matrices span several bindings.
    every_op_on_wgpu_with_weights_split_over_bindings: common::backend(
        "parity_split_weights",
        WgpuOptions { max_weight_part_bytes: Some(4096), ..WgpuOptions::default() },
    ), Tolerances::F32;
}

#[test]
fn a_weight_over_the_part_limit_is_split_by_rows() {
    let options = WgpuOptions {
        max_weight_part_bytes: Some(64 * 1024),
        ..WgpuOptions::default()
    };
    let Some(backend) = common::backend("split_embedding", options) else {
        return;
    };
    let path = tessera_tests::fixture("tiny-q8.gguf");
    let file = Arc::new(GgufFile::open(&path).expect("fixture opens"));
    let table = HostTensor::from_gguf(&file, "token_embd.weight")
        .expect("2-D")
        .expect("present");
    let weight = backend.upload_weight(&table).expect("uploads");
    assert_eq!(weight.format(), WeightFormat::Q8_0);
    // One byte of quants per element: rows × cols / 64 KiB parts at least.
    let min_parts = (table.rows * table.cols).div_ceil(64 * 1024);
    assert!(
        weight.parts() >= min_parts && weight.parts() > 1,
        "{} parts for {} × {}",
        weight.parts(),
        table.rows,
        table.cols
    );
}

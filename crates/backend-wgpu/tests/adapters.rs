//! Adapters by number (`serve --backend wgpu --devices …`): every usable
//! adapter can be opened by its number, and a number past the last is a clear
//! error that says how many there are.

mod common;

use tessera_backend_wgpu::{adapter_count, WgpuBackend, WgpuOptions};

#[test]
fn adapters_open_by_number_and_a_missing_number_says_how_many_exist() {
    // Skips (with the reason) where this machine has no adapter at all.
    if common::backend("adapters", WgpuOptions::default()).is_none() {
        return;
    }
    let count = adapter_count(true);
    assert!(count >= 1);
    for number in 0..count {
        let options = WgpuOptions {
            allow_cpu_adapter: true,
            adapter: Some(number),
            ..WgpuOptions::default()
        };
        let backend = WgpuBackend::with_options(&options).expect("a usable adapter opens");
        println!("adapter {number}: {}", backend.adapter());
    }
    let past = WgpuOptions {
        allow_cpu_adapter: true,
        adapter: Some(count),
        ..WgpuOptions::default()
    };
    let error = WgpuBackend::with_options(&past)
        .err()
        .expect("no such adapter");
    let message = error.to_string();
    assert!(
        message.contains(&format!("number {count}"))
            && message.contains(&format!("{count} usable")),
        "{message}"
    );
}

//! Fuzzes the GGUF parser: any input must give `Ok` or `Err`, never a panic, and a
//! file that parses must hand out only in-bounds tensor data.
//!
//! Run from `crates/gguf/fuzz`: `cargo +nightly fuzz run parse`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_gguf::GgufFile;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    for (key, value) in file.metadata() {
        // Identity, not equality: a NaN value is not equal to itself.
        assert!(file.get(key).is_some_and(|v| std::ptr::eq(v, value)));
        let _ = (
            file.get_u32(key),
            file.get_f32(key),
            file.get_i32_array(key),
        );
    }
    for info in file.tensors() {
        assert_eq!(file.tensor_data(info).len() as u64, info.size);
    }
});

//! Fuzzes the GGUF parser and the model/tokenizer readers on arbitrary bytes.
//! The check lives in `tessera_fuzz_cases::gguf`; `scripts/fuzz.sh` runs it.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tessera_fuzz_cases::gguf(data));

//! Fuzzes the embedding request parsing, validation and preparation for both
//! dialects. The check lives in `tessera_fuzz_cases::embeddings`;
//! `scripts/fuzz.sh` runs it.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tessera_fuzz_cases::embeddings(data));

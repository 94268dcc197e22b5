//! Fuzzes the rerank request parsing, validation and tokenisation for every dialect.
//! The check lives in `tessera_fuzz_cases::request`; `scripts/fuzz.sh` runs it.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tessera_fuzz_cases::request(data));

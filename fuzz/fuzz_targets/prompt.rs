//! Fuzzes the tokenizer and prompt builder on arbitrary text.
//! The check lives in `tessera_fuzz_cases::prompt`; `scripts/fuzz.sh` runs it.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tessera_fuzz_cases::prompt(data));

//! Helpers shared by the integration tests: a raw byte builder for hand-made (and
//! deliberately broken) GGUF files, a small valid fixture, and a seeded PRNG.

#![allow(dead_code)] // each test binary uses a different subset

use tessera_gguf::{GgmlType, GgufWriter, MetaArray, MetaValue};

/// Appends GGUF fields byte by byte, so that tests can write what the writer refuses to.
#[derive(Default)]
pub struct Raw(pub Vec<u8>);

impl Raw {
    /// Magic, version, tensor count and key/value count.
    pub fn header(version: u32, tensor_count: u64, kv_count: u64) -> Raw {
        let mut raw = Raw(b"GGUF".to_vec());
        raw.u32(version).u64(tensor_count).u64(kv_count);
        raw
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }

    /// A GGUF string: u64 length, then the bytes.
    pub fn str(&mut self, s: &[u8]) -> &mut Self {
        self.u64(s.len() as u64).bytes(s)
    }

    /// A key with a u32 value (type id 4).
    pub fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.str(key.as_bytes()).u32(4).u32(v)
    }

    /// A key with a string value (type id 8).
    pub fn kv_str(&mut self, key: &str, v: &str) -> &mut Self {
        self.str(key.as_bytes()).u32(8).str(v.as_bytes())
    }

    /// A tensor info: name, dims, type id, data offset relative to the data section.
    pub fn tensor_info(
        &mut self,
        name: &str,
        dims: &[u64],
        type_id: u32,
        offset: u64,
    ) -> &mut Self {
        self.str(name.as_bytes()).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(type_id).u64(offset)
    }

    /// Zero bytes up to the next multiple of `alignment`.
    pub fn pad(&mut self, alignment: usize) -> &mut Self {
        while self.0.len() % alignment != 0 {
            self.0.push(0);
        }
        self
    }

    pub fn zeros(&mut self, n: usize) -> &mut Self {
        self.0.resize(self.0.len() + n, 0);
        self
    }

    pub fn build(&self) -> Vec<u8> {
        self.0.clone()
    }
}

/// A small valid file with a bit of every structure: scalars, a string, arrays (one
/// nested), a Q8_0 tensor and an F32 tensor. The last tensor ends exactly at the end of
/// the file (32 bytes at an aligned offset), so every strict prefix is invalid.
pub fn small_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", MetaValue::String("qwen3".into()));
    w.add_metadata("qwen3.block_count", MetaValue::U32(2));
    w.add_metadata("qwen3.rope.freq_base", MetaValue::F32(1_000_000.0));
    w.add_metadata("flag", MetaValue::Bool(true));
    w.add_metadata(
        "tokenizer.ggml.tokens",
        MetaValue::Array(MetaArray::String(vec![
            "a".into(),
            "bb".into(),
            "ccc".into(),
        ])),
    );
    w.add_metadata(
        "tokenizer.ggml.token_type",
        MetaValue::Array(MetaArray::I32(vec![1, 2, 3])),
    );
    w.add_metadata(
        "nested",
        MetaValue::Array(MetaArray::Array(vec![
            MetaArray::U8(vec![7]),
            MetaArray::String(vec!["x".into()]),
        ])),
    );
    let q8: Vec<u8> = (0..68u32).map(|i| (i * 7 % 251) as u8).collect();
    w.add_tensor("token_embd.weight", vec![32, 2], GgmlType::Q8_0, q8)
        .expect("valid Q8_0 tensor");
    let f32_bytes: Vec<u8> = (0..8)
        .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
        .collect();
    w.add_tensor("output_norm.weight", vec![8], GgmlType::F32, f32_bytes)
        .expect("valid F32 tensor");
    w.to_bytes().expect("writing to memory succeeds")
}

/// xorshift64*: deterministic, dependency-free randomness for mutation tests.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-enough value in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn f32_in(&mut self, lo: f32, hi: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * unit
    }
}

/// A unique path in the temp dir for one test.
pub fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("tessera-gguf-{}-{name}.gguf", std::process::id()))
}

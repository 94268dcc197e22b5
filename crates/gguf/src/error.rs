//! The one error type of this crate: every variant names what is wrong and where.

use std::path::PathBuf;

/// Bytes as `0x47 0x47 …`.
fn hex_bytes(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("0x{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Bytes as text in quotes, with `.` for what is not printable ASCII.
fn printable(bytes: &[u8]) -> String {
    let text: String = bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect();
    format!("{text:?}")
}

/// Everything that can go wrong opening, parsing or querying a GGUF file.
///
/// `what` fields describe the place in the file in words ("key 3", "value of key
/// \"general.name\"", "tensor 12 (\"blk.0.attn_q.weight\") offset"); `offset` fields
/// are absolute byte offsets from the start of the file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened or memory-mapped. The OS error is part of
    /// the message (and not a `source`, so a printed chain says it once).
    #[error("cannot open or map {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    #[error(
        "not a GGUF file: it starts with the bytes {} ({}); a GGUF file starts with 0x47 0x47 0x55 0x46 (\"GGUF\")",
        hex_bytes(got),
        printable(got)
    )]
    BadMagic { got: [u8; 4] },

    #[error("unsupported GGUF version {version}: only version 3 is supported")]
    UnsupportedVersion { version: u32 },

    #[error(
        "file ends early: {what} at byte offset {offset} needs {needed} bytes, \
         only {available} remain"
    )]
    UnexpectedEof {
        what: String,
        offset: u64,
        needed: u64,
        available: u64,
    },

    /// A count read from the file cannot be right: even at the smallest encoding of
    /// one entry, the entries would not fit in the rest of the file.
    #[error(
        "{what} at byte offset {offset} is {count}, but each entry needs at least \
         {min_entry_bytes} bytes and only {remaining} bytes remain"
    )]
    CountTooLarge {
        what: String,
        offset: u64,
        count: u64,
        min_entry_bytes: u64,
        remaining: u64,
    },

    #[error("{what} at byte offset {offset} is {len} bytes long; the limit is {max}")]
    StringTooLong {
        what: String,
        offset: u64,
        len: u64,
        max: u64,
    },

    #[error("{what} at byte offset {offset} is not valid UTF-8")]
    InvalidUtf8 { what: String, offset: u64 },

    #[error("{what} at byte offset {offset}: unknown metadata value type id {id}")]
    UnknownValueType { what: String, offset: u64, id: u32 },

    #[error("{what} at byte offset {offset}: bool byte is {got}, expected 0 or 1")]
    InvalidBool { what: String, offset: u64, got: u8 },

    #[error("{what} at byte offset {offset}: arrays nested deeper than {max} levels")]
    NestingTooDeep {
        what: String,
        offset: u64,
        max: usize,
    },

    #[error("duplicate metadata key {key:?} (the second one starts at byte offset {offset})")]
    DuplicateKey { key: String, offset: u64 },

    #[error("general.alignment is {value}; it must be a non-zero power of two")]
    BadAlignment { value: u64 },

    #[error("tensor {index} ({name:?}): {n_dims} dimensions, at most {max} are allowed")]
    TooManyDims {
        index: u64,
        name: String,
        n_dims: u32,
        max: u32,
    },

    #[error("tensor {index} ({name:?}): unknown ggml type id {id}")]
    UnknownTensorType { index: u64, name: String, id: u32 },

    #[error("duplicate tensor name {name:?} (tensors {first} and {second})")]
    DuplicateTensor {
        name: String,
        first: u64,
        second: u64,
    },

    /// Shape and type do not give a valid byte size: a row length that is not a
    /// multiple of the block size, or an element or byte count that overflows.
    #[error("tensor {name:?}: shape {dims:?} of type {ggml_type} is invalid: {reason}")]
    BadShape {
        name: String,
        dims: Vec<u64>,
        ggml_type: &'static str,
        reason: String,
    },

    #[error(
        "tensor {name:?}: data offset {offset} (relative to the data section) is not a \
         multiple of the alignment {alignment}"
    )]
    MisalignedTensor {
        name: String,
        offset: u64,
        alignment: u64,
    },

    #[error(
        "tensor {name:?}: {size} bytes of data at byte offset {offset} run past the end \
         of the file ({file_size} bytes)"
    )]
    TensorOutOfBounds {
        name: String,
        offset: u64,
        size: u64,
        file_size: u64,
    },

    /// The writer was handed a tensor name longer than GGUF allows.
    #[error("tensor name {name:?} is {len} bytes long; the limit is {max}")]
    TensorNameTooLong { name: String, len: u64, max: u64 },

    /// The writer was handed a data buffer whose length does not match the shape.
    #[error(
        "tensor {name:?}: expected {expected} bytes of data for its shape and type, got {got}"
    )]
    TensorSizeMismatch {
        name: String,
        expected: u64,
        got: u64,
    },

    #[error("metadata key {key:?} not found")]
    MissingKey { key: String },

    #[error("metadata key {key:?}: expected {expected}, got {got}")]
    WrongType {
        key: String,
        expected: &'static str,
        got: String,
    },
}

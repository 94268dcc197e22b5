//! GGUF v3 reading over a memory map, the Q8_0 block type, and a small writer.
//!
//! Every offset, count and length read from a file is bounds-checked: a truncated
//! or corrupt file yields a [`GgufError`] naming what is wrong, never a panic.

mod convert;
mod error;
mod parse;
mod q8_0;
mod reader;
mod tensor;
mod types;
mod value;
mod writer;

pub use convert::{bf16_to_f32_slice, f16_to_f32_slice};
pub use error::GgufError;
pub use q8_0::{dequantize_row_q8_0, quantize_row_q8_0, BlockQ8_0, QK8_0};
pub use reader::{GgufFile, TensorInfo};
pub use tensor::{HostTensor, TensorError};
pub use types::GgmlType;
pub use value::{MetaArray, MetaValue};
pub use writer::GgufWriter;

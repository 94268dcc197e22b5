//! ggml tensor types: ids as stored in GGUF, block sizes and bytes per block.

/// Super-block length of the k-quants and i-quants (ggml's `QK_K`).
const QK_K: u64 = 256;

/// Declares [`GgmlType`] and its per-type facts from one table, so that each lookup is
/// an exhaustive `match` the compiler checks.
macro_rules! ggml_types {
    ($($variant:ident = $id:literal, block $block:expr, bytes $bytes:expr;)*) => {
        /// Every tensor type id llama.cpp's ggml knows. Ids 4, 5 (Q4_2, Q4_3), 31–33
        /// (Q4_0_4_4 and friends) and 36–38 (IQ4_NL_4_4 and friends) were removed
        /// upstream and are rejected like any other unknown id.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[allow(non_camel_case_types)]
        #[repr(u32)]
        pub enum GgmlType {
            $($variant = $id,)*
        }

        impl GgmlType {
            /// Every known type, in id order.
            pub const ALL: &'static [GgmlType] = &[$(GgmlType::$variant,)*];

            pub fn from_id(id: u32) -> Option<GgmlType> {
                match id {
                    $($id => Some(GgmlType::$variant),)*
                    _ => None,
                }
            }

            /// The name llama.cpp and gguf-py print: "F32", "Q8_0", "BF16", ...
            pub fn name(self) -> &'static str {
                match self {
                    $(GgmlType::$variant => stringify!($variant),)*
                }
            }

            /// Elements per block: 1 for the plain types, 32 for Q8_0, 256 for the
            /// k-quants.
            pub fn block_size(self) -> u64 {
                match self {
                    $(GgmlType::$variant => $block,)*
                }
            }

            /// Bytes per block: 4 for F32, 2 for F16 and BF16, 34 for Q8_0, ...
            pub fn type_size(self) -> u64 {
                match self {
                    $(GgmlType::$variant => $bytes,)*
                }
            }
        }
    };
}

// Block sizes and bytes per block after ggml's `type_traits` table and gguf-py's
// `GGML_QUANT_SIZES`.
ggml_types! {
    F32 = 0, block 1, bytes 4;
    F16 = 1, block 1, bytes 2;
    Q4_0 = 2, block 32, bytes 2 + 16;
    Q4_1 = 3, block 32, bytes 2 + 2 + 16;
    Q5_0 = 6, block 32, bytes 2 + 4 + 16;
    Q5_1 = 7, block 32, bytes 2 + 2 + 4 + 16;
    Q8_0 = 8, block 32, bytes 2 + 32;
    Q8_1 = 9, block 32, bytes 2 + 2 + 32;
    Q2_K = 10, block QK_K, bytes 2 + 2 + QK_K / 16 + QK_K / 4;
    Q3_K = 11, block QK_K, bytes 2 + QK_K / 4 + QK_K / 8 + 12;
    Q4_K = 12, block QK_K, bytes 2 + 2 + QK_K / 2 + 12;
    Q5_K = 13, block QK_K, bytes 2 + 2 + QK_K / 2 + QK_K / 8 + 12;
    Q6_K = 14, block QK_K, bytes 2 + QK_K / 2 + QK_K / 4 + QK_K / 16;
    Q8_K = 15, block QK_K, bytes 4 + QK_K + QK_K / 8;
    IQ2_XXS = 16, block QK_K, bytes 2 + QK_K / 4;
    IQ2_XS = 17, block QK_K, bytes 2 + QK_K / 4 + QK_K / 32;
    IQ3_XXS = 18, block QK_K, bytes 2 + QK_K / 4 + QK_K / 8;
    IQ1_S = 19, block QK_K, bytes 2 + QK_K / 8 + QK_K / 16;
    IQ4_NL = 20, block 32, bytes 2 + 16;
    IQ3_S = 21, block QK_K, bytes 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4;
    IQ2_S = 22, block QK_K, bytes 2 + QK_K / 4 + QK_K / 16;
    IQ4_XS = 23, block QK_K, bytes 2 + 2 + QK_K / 2 + QK_K / 64;
    I8 = 24, block 1, bytes 1;
    I16 = 25, block 1, bytes 2;
    I32 = 26, block 1, bytes 4;
    I64 = 27, block 1, bytes 8;
    F64 = 28, block 1, bytes 8;
    IQ1_M = 29, block QK_K, bytes QK_K / 8 + QK_K / 16 + QK_K / 32;
    BF16 = 30, block 1, bytes 2;
    TQ1_0 = 34, block QK_K, bytes 2 + 4 * 13;
    TQ2_0 = 35, block QK_K, bytes 2 + 64;
    MXFP4 = 39, block 32, bytes 1 + 16;
    NVFP4 = 40, block 64, bytes 4 + 32;
}

impl GgmlType {
    pub fn id(self) -> u32 {
        self as u32
    }

    /// Bytes for a tensor of `elements` elements; `None` when `elements` is not a
    /// multiple of the block size or the byte count overflows `u64`.
    pub fn byte_size(self, elements: u64) -> Option<u64> {
        let block = self.block_size();
        if elements % block != 0 {
            return None;
        }
        (elements / block).checked_mul(self.type_size())
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_names_match_variants() {
        for &ty in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(ty.id()), Some(ty));
            assert_eq!(format!("{ty:?}"), ty.name());
            assert_eq!(ty.to_string(), ty.name());
        }
        assert_eq!(GgmlType::ALL.len(), 33);
        assert_eq!(GgmlType::Q8_0.id(), 8);
        assert_eq!(GgmlType::BF16.id(), 30);
        assert_eq!(GgmlType::MXFP4.id(), 39);
    }

    #[test]
    fn sizes_of_the_types_we_serve() {
        assert_eq!(
            (GgmlType::F32.block_size(), GgmlType::F32.type_size()),
            (1, 4)
        );
        assert_eq!(
            (GgmlType::F16.block_size(), GgmlType::F16.type_size()),
            (1, 2)
        );
        assert_eq!(
            (GgmlType::BF16.block_size(), GgmlType::BF16.type_size()),
            (1, 2)
        );
        assert_eq!(
            (GgmlType::Q8_0.block_size(), GgmlType::Q8_0.type_size()),
            (32, 34)
        );
        assert_eq!(GgmlType::Q4_K.type_size(), 144);
        assert_eq!(GgmlType::Q6_K.type_size(), 210);
        assert_eq!(GgmlType::Q8_K.type_size(), 292);
        assert_eq!(GgmlType::IQ4_XS.type_size(), 136);
        assert_eq!(GgmlType::TQ1_0.type_size(), 54);
    }

    #[test]
    fn byte_size_rejects_partial_blocks_and_overflow() {
        assert_eq!(GgmlType::Q8_0.byte_size(64), Some(68));
        assert_eq!(GgmlType::Q8_0.byte_size(33), None);
        assert_eq!(GgmlType::BF16.byte_size(3), Some(6));
        assert_eq!(GgmlType::F32.byte_size(u64::MAX), None);
        assert_eq!(GgmlType::F32.byte_size(0), Some(0));
    }

    #[test]
    fn removed_ids_are_unknown() {
        for id in [4, 5, 31, 32, 33, 36, 37, 38, 41, 1000, u32::MAX] {
            assert_eq!(GgmlType::from_id(id), None, "id {id}");
        }
    }
}

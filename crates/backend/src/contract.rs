//! Each op's contract, stated once: the checks every backend runs before it
//! touches memory, and the constants every backend must compute the same way.
//! A backend calls these, then adds only what its own kernels limit (a head
//! size a shader supports, a count that must fit 32 bits).

use crate::{AttentionLayout, AttentionShape, BackendError, KvRef, Qkv};

/// RoPE's rotation frequencies as Hugging Face's Qwen3 computes them, in f32:
/// `1 / theta^(2i / head_dim)` for `i < head_dim / 2`.
pub fn rope_inv_freq(theta: f32, head_dim: usize) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32))
        .collect()
}

/// RoPE on `[tokens, heads, head_dim]` with one position per token: an even
/// head size, and room for every token in `x_len` elements.
pub fn check_rope(
    x_len: usize,
    positions: &[u32],
    heads: usize,
    head_dim: usize,
) -> Result<(), BackendError> {
    if !head_dim.is_multiple_of(2) {
        return Err(BackendError::Invalid {
            op: "rope",
            detail: format!("head_dim {head_dim} is odd"),
        });
    }
    BackendError::check_len("rope", "x", positions.len() * heads * head_dim, x_len)
}

/// Element counts of the attention op's own buffers.
#[derive(Clone, Copy, Debug)]
pub struct AttentionLens {
    pub q: usize,
    pub k: usize,
    pub v: usize,
    pub out: usize,
}

impl AttentionLens {
    /// The lengths of the op's buffers, the inputs' as `len` reads them.
    pub fn of<B>(qkv: Qkv<'_, B>, out: usize, len: impl Fn(&B) -> usize) -> AttentionLens {
        AttentionLens {
            q: len(qkv.q),
            k: len(qkv.k),
            v: len(qkv.v),
            out,
        }
    }
}

/// Attention over a packed layout: query heads in whole GQA groups, every
/// buffer (and each prefix's K and V, whose lengths `len` reads) large enough
/// for the layout, and every sequence's prefix index among `prefixes`.
pub fn check_attention<B>(
    shape: AttentionShape,
    layout: &AttentionLayout,
    lens: AttentionLens,
    prefixes: &[KvRef<'_, B>],
    len: impl Fn(&B) -> usize,
) -> Result<(), BackendError> {
    let AttentionShape {
        n_heads,
        n_kv_heads,
        ..
    } = shape;
    if n_kv_heads == 0 || !n_heads.is_multiple_of(n_kv_heads) {
        return Err(BackendError::Invalid {
            op: "attention",
            detail: format!("{n_heads} query heads cannot share {n_kv_heads} KV heads"),
        });
    }
    let tokens = layout.total_tokens();
    let (qw, kvw) = (shape.q_width(), shape.kv_width());
    BackendError::check_len("attention", "q", tokens * qw, lens.q)?;
    BackendError::check_len("attention", "k", tokens * kvw, lens.k)?;
    BackendError::check_len("attention", "v", tokens * kvw, lens.v)?;
    BackendError::check_len("attention", "out", tokens * qw, lens.out)?;
    for p in prefixes {
        BackendError::check_len("attention", "prefix k", p.len * kvw, len(p.k))?;
        BackendError::check_len("attention", "prefix v", p.len * kvw, len(p.v))?;
    }
    if let Some(p) = layout
        .sequences
        .iter()
        .filter_map(|s| s.prefix)
        .find(|&p| p >= prefixes.len())
    {
        return Err(BackendError::Invalid {
            op: "attention",
            detail: format!("sequence names prefix {p}, only {} given", prefixes.len()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: AttentionShape = AttentionShape {
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 8,
    };

    fn lens(tokens: usize) -> AttentionLens {
        AttentionLens {
            q: tokens * 32,
            k: tokens * 16,
            v: tokens * 16,
            out: tokens * 32,
        }
    }

    #[test]
    fn attention_checks_groups_lengths_and_prefix_indices() {
        let layout = AttentionLayout::packed_with_prefixes(&[2, 3], &[None, Some(0)]);
        let prefix_k = vec![0.0f32; 4 * 16];
        let prefix = [KvRef {
            k: &prefix_k,
            v: &prefix_k,
            len: 4,
        }];
        let len = |b: &Vec<f32>| b.len();
        assert!(check_attention(SHAPE, &layout, lens(5), &prefix, len).is_ok());
        let short = AttentionLens {
            v: 5 * 16 - 1,
            ..lens(5)
        };
        let err = check_attention(SHAPE, &layout, short, &prefix, len).unwrap_err();
        assert!(err.to_string().contains("v has 79"), "{err}");
        let err = check_attention(SHAPE, &layout, lens(5), &[], len).unwrap_err();
        assert!(err.to_string().contains("prefix 0, only 0"), "{err}");
        let odd = AttentionShape {
            n_kv_heads: 3,
            ..SHAPE
        };
        assert!(check_attention(odd, &layout, lens(5), &prefix, len).is_err());
        let long_prefix = [KvRef {
            len: 5,
            ..prefix[0]
        }];
        assert!(check_attention(SHAPE, &layout, lens(5), &long_prefix, len).is_err());
    }

    #[test]
    fn rope_needs_an_even_head_and_room_for_every_token() {
        assert!(check_rope(2 * 3 * 8, &[0, 1], 3, 8).is_ok());
        assert!(check_rope(2 * 3 * 8 - 1, &[0, 1], 3, 8).is_err());
        assert!(check_rope(100, &[0], 1, 7).is_err());
        let f = rope_inv_freq(10_000.0, 8);
        assert_eq!(f.len(), 4);
        assert_eq!(f[0], 1.0);
        assert!((f[1] - 0.1).abs() < 1e-7, "{}", f[1]);
    }
}

//! What each op kind of a profiled run had to compute and move at least: its
//! FLOPs and its minimum bytes, from the model's shape and the run's passes,
//! following the engine's forward pass (`crates/engine/src/forward.rs`) op by
//! op. Achieved FLOP/s and bytes/s are these over the op's measured time.
//!
//! Minimum bytes: the op's inputs read once and its results written once (f32
//! activations), its weights read once per call; scratch buffers an op also
//! writes are not counted. Element-wise work is counted at a fixed number of
//! FLOPs per element (the constants below); a matmul at 2 per weight and row.
//! Ops without a model here (`copy rows`, which only MLP chunks and prefix
//! capture use; `upload`) carry none.

/// Bytes of one f32 activation.
const F32: f64 = 4.0;
/// RMSNorm per element: square, sum, scale by the inverse root, times the weight.
const NORM_FLOPS: f64 = 4.0;
/// NeoX RoPE per element: a pair's rotation is 4 multiplies and 2 adds.
const ROPE_FLOPS: f64 = 3.0;
/// SwiGLU per element: silu (negate, exp, add, divide) times up.
const SWIGLU_FLOPS: f64 = 5.0;

/// The model dimensions the costs depend on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelShape {
    pub layers: usize,
    pub hidden: usize,
    pub ffn: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Bytes per weight element of the projections (Q8_0: 34 per 32).
    pub weight_bytes: f64,
}

/// One forward pass: a shared prefix already computed (its K/V read by every
/// document) and the documents' token counts.
#[derive(Clone, Debug, PartialEq)]
pub struct PassShape {
    pub prefix: usize,
    pub docs: Vec<usize>,
}

/// One op kind's cost over a run: FLOPs, the bytes that grow with the rows,
/// and the bytes each call reads whatever its rows (the weights).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OpCost {
    pub flops: f64,
    pub bytes: f64,
    pub bytes_per_call: f64,
}

impl OpCost {
    /// Minimum bytes of the op over `calls` calls.
    pub fn bytes_for(&self, calls: usize) -> f64 {
        self.bytes + self.bytes_per_call * calls as f64
    }

    fn add(&mut self, flops: f64, bytes: f64) {
        self.flops += flops;
        self.bytes += bytes;
    }
}

/// Visible (query, key) pairs of one document of `len` tokens after a prefix
/// of `prefix`: each token sees the prefix and the document up to itself.
pub fn visible_pairs(prefix: usize, len: usize) -> f64 {
    let (p, l) = (prefix as f64, len as f64);
    l * p + l * (l + 1.0) / 2.0
}

/// The cost of every modelled op kind over `passes`, with `prefix_rows` rows
/// of query prefix computed during the run as well (a cold cache: counted as
/// one sequence from position 0, which is exact when nothing of it was cached).
pub fn op_costs(
    model: &ModelShape,
    passes: &[PassShape],
    prefix_rows: usize,
) -> Vec<(&'static str, OpCost)> {
    let m = model;
    let (h, f, wb) = (m.hidden as f64, m.ffn as f64, m.weight_bytes);
    let q = (m.heads * m.head_dim) as f64;
    let kv = (m.kv_heads * m.head_dim) as f64;
    let layers = m.layers as f64;
    let inner = layers - 1.0;
    let attention_flops = 4.0 * q; // per visible pair: q·k and p·v over every query head

    let mut embedding = OpCost::default();
    let mut qkv = OpCost {
        bytes_per_call: h * (q + 2.0 * kv) * wb + h * F32,
        ..OpCost::default()
    };
    let mut qk_rope = OpCost {
        bytes_per_call: 2.0 * m.head_dim as f64 * F32,
        ..OpCost::default()
    };
    let mut attention = OpCost::default();
    let mut o = OpCost {
        bytes_per_call: q * h * wb,
        ..OpCost::default()
    };
    let mut gate_up = OpCost {
        bytes_per_call: 2.0 * h * f * wb + h * F32,
        ..OpCost::default()
    };
    let mut down = OpCost {
        bytes_per_call: f * h * wb,
        ..OpCost::default()
    };
    let mut gather = OpCost::default();
    let mut final_norm = OpCost {
        bytes_per_call: h * F32,
        ..OpCost::default()
    };
    let mut head = OpCost {
        bytes_per_call: 2.0 * h * wb,
        ..OpCost::default()
    };
    let mut read_back = OpCost::default();

    // Rows through the layers: every layer's q/k/v for all rows; the last
    // layer's attention output, o and MLP only for each sequence's last row.
    let mut layer_rows = |rows: f64, mlp_rows: f64| {
        embedding.add(rows * h, rows * (h * wb + h * F32 + F32));
        let r = layers * rows;
        qkv.add(
            r * (NORM_FLOPS * h + 2.0 * h * (q + 2.0 * kv)),
            r * (h + q + 2.0 * kv) * F32,
        );
        qk_rope.add(
            r * (NORM_FLOPS + ROPE_FLOPS) * (q + kv),
            r * (2.0 * (q + kv) * F32 + F32),
        );
        o.add(mlp_rows * (2.0 * q * h + h), mlp_rows * (q + 2.0 * h) * F32);
        gate_up.add(
            mlp_rows * (NORM_FLOPS * h + 2.0 * h * 2.0 * f),
            mlp_rows * (h + 2.0 * f) * F32,
        );
        down.add(
            mlp_rows * (SWIGLU_FLOPS * f + 2.0 * f * h + h),
            mlp_rows * (2.0 * f + 2.0 * h) * F32,
        );
    };
    for pass in passes {
        let rows: f64 = pass.docs.iter().sum::<usize>() as f64;
        let seqs = pass.docs.len() as f64;
        layer_rows(rows, inner * rows + seqs);
        let pairs: f64 = pass
            .docs
            .iter()
            .map(|&len| visible_pairs(pass.prefix, len))
            .sum();
        let prefix_kv = pass.prefix as f64 * 2.0 * kv * F32;
        attention.add(
            layers * pairs * attention_flops,
            layers * (rows * (2.0 * q + 2.0 * kv) * F32 + prefix_kv),
        );
        gather.add(0.0, seqs * (q + h) * F32 * 2.0);
        final_norm.add(seqs * NORM_FLOPS * h, seqs * 2.0 * h * F32);
        head.add(seqs * 2.0 * 2.0 * h, seqs * (h + 2.0) * F32);
        read_back.add(0.0, seqs * 2.0 * F32);
    }
    if prefix_rows > 0 {
        // Capturing a prefix stops after the last layer's K/V: its attention,
        // o and MLP run in the layers before.
        let rows = prefix_rows as f64;
        layer_rows(rows, inner * rows);
        attention.add(
            inner * visible_pairs(0, prefix_rows) * attention_flops,
            inner * rows * (2.0 * q + 2.0 * kv) * F32,
        );
    }
    vec![
        ("embedding", embedding),
        ("norm + q/k/v", qkv),
        ("qk-norm + rope", qk_rope),
        ("attention", attention),
        ("o + residual", o),
        ("norm + gate/up", gate_up),
        ("swiglu + down + residual", down),
        ("gather rows", gather),
        ("rms_norm", final_norm),
        ("score head", head),
        ("read back", read_back),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small shape whose sums are easy by hand.
    fn shape() -> ModelShape {
        ModelShape {
            layers: 2,
            hidden: 8,
            ffn: 16,
            heads: 2,
            kv_heads: 1,
            head_dim: 4,
            weight_bytes: 34.0 / 32.0,
        }
    }

    fn cost(costs: &[(&str, OpCost)], op: &str) -> OpCost {
        costs.iter().find(|(name, _)| *name == op).unwrap().1
    }

    #[test]
    fn visible_pairs_count_prefix_and_causal_keys() {
        // 3 tokens after 2 prefix tokens see 3, 4 and 5 keys.
        assert_eq!(visible_pairs(2, 3), 12.0);
        assert_eq!(visible_pairs(0, 1), 1.0);
    }

    #[test]
    fn matmul_flops_and_bytes_on_a_known_pass() {
        // One pass, prefix 2, documents of 3 and 1 tokens: 4 rows, 2 sequences.
        let passes = [PassShape {
            prefix: 2,
            docs: vec![3, 1],
        }];
        let costs = op_costs(&shape(), &passes, 0);
        // q width 8, kv width 4: q/k/v is 8 × 16 weights; 2 layers × 4 rows.
        // Per row: norm 4 × 8 = 32, matmul 2 × 8 × 16 = 256.
        let qkv = cost(&costs, "norm + q/k/v");
        assert_eq!(qkv.flops, 8.0 * (32.0 + 256.0));
        // Per row x in (8) and q, k, v out (16) as f32.
        assert_eq!(qkv.bytes, 8.0 * 24.0 * 4.0);
        // Weights 128 Q8_0 elements (136 bytes) and the norm's 8 f32 per call.
        assert_eq!(qkv.bytes_per_call, 136.0 + 32.0);
        assert_eq!(qkv.bytes_for(2), 8.0 * 96.0 + 2.0 * 168.0);

        // o: layer 1 all 4 rows, layer 2 only the 2 last rows: 6 rows of
        // 2 × 8 × 8 + 8 (the residual add).
        let o = cost(&costs, "o + residual");
        assert_eq!(o.flops, 6.0 * 136.0);
        // gate/up: 6 rows of norm 32 + 2 × 8 × 32.
        assert_eq!(cost(&costs, "norm + gate/up").flops, 6.0 * (32.0 + 512.0));
        // down: 6 rows of swiglu 5 × 16 + 2 × 16 × 8 + 8.
        assert_eq!(
            cost(&costs, "swiglu + down + residual").flops,
            6.0 * (80.0 + 256.0 + 8.0)
        );
    }

    #[test]
    fn attention_counts_visible_pairs_per_head_and_layer() {
        let passes = [PassShape {
            prefix: 2,
            docs: vec![3, 1],
        }];
        let attention = cost(&op_costs(&shape(), &passes, 0), "attention");
        // Pairs: 3 tokens after 2 → 3 + 4 + 5 = 12; 1 token after 2 → 3. 15
        // pairs × 2 heads × (4 + 4 multiply-adds of head_dim 4 → 16 FLOPs)
        // × 2 layers.
        assert_eq!(attention.flops, 15.0 * 2.0 * 16.0 * 2.0);
        // Per layer: 4 rows × (q 8 in, out 8, k 4, v 4) f32 and the prefix's
        // 2 rows of k and v (8 f32).
        assert_eq!(attention.bytes, 2.0 * (4.0 * 24.0 * 4.0 + 2.0 * 8.0 * 4.0));
    }

    #[test]
    fn a_prefix_computed_in_the_run_adds_its_rows() {
        let none = op_costs(&shape(), &[], 3);
        // 3 prefix rows: q/k/v in both layers, attention and o in the first only.
        assert_eq!(cost(&none, "norm + q/k/v").flops, 6.0 * 288.0);
        assert_eq!(cost(&none, "o + residual").flops, 3.0 * 136.0);
        // 1 + 2 + 3 pairs × 2 heads × 16 FLOPs, one layer.
        assert_eq!(cost(&none, "attention").flops, 6.0 * 32.0);
        assert_eq!(cost(&none, "score head").flops, 0.0);
    }
}

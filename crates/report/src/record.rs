//! One measurement of `tessera bench` as it is written (JSON Lines, CSV,
//! Markdown) and read back by `tessera report`: device, backend, arithmetic,
//! model shape, workload, figures, the device's ceilings and the per-op
//! profile with each op kind's FLOPs and minimum bytes.

use serde::{Deserialize, Serialize};
use tessera_runtime::profile::{by_layer, by_op, OpTime};
use tessera_runtime::Ceilings;

use crate::op_cost::OpCost;

/// One op kind of a profile: milliseconds over the profiled run, its share of
/// the ops' total, how many calls, and what it had to compute and move at
/// least (`op_cost`; absent for op kinds without a cost model).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpShare {
    pub op: String,
    pub ms: f64,
    pub share: f64,
    pub calls: usize,
    #[serde(default)]
    pub flops: Option<f64>,
    #[serde(default)]
    pub bytes: Option<f64>,
}

impl OpShare {
    /// Achieved GFLOP/s, when the op's FLOPs are known and it took time.
    pub fn gflop_per_s(&self) -> Option<f64> {
        self.flops
            .filter(|_| self.ms > 0.0)
            .map(|f| f / (self.ms * 1e-3) / 1e9)
    }

    /// Achieved GB/s of minimum traffic.
    pub fn gb_per_s(&self) -> Option<f64> {
        self.bytes
            .filter(|_| self.ms > 0.0)
            .map(|b| b / (self.ms * 1e-3) / 1e9)
    }
}

/// A per-op profile of one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Wall time of the profiled run (slower than an unprofiled one: the device
    /// is waited on around every op).
    pub wall_ms: f64,
    /// Wall time not spent inside any op: the host between ops and passes.
    pub host_ms: f64,
    pub ops: Vec<OpShare>,
    /// Milliseconds per layer; index 0 is what runs before the first layer.
    pub layers_ms: Vec<f64>,
}

impl Profile {
    /// The profile of `ops` timed over `wall_seconds`, each op kind with its
    /// cost where `costs` models it.
    pub fn from_ops(ops: &[OpTime], wall_seconds: f64, costs: &[(&str, OpCost)]) -> Profile {
        let total: f64 = ops.iter().map(|o| o.seconds).sum();
        Profile {
            wall_ms: wall_seconds * 1e3,
            host_ms: (wall_seconds - total).max(0.0) * 1e3,
            ops: by_op(ops)
                .into_iter()
                .map(|(op, seconds, calls)| {
                    let cost = costs.iter().find(|(name, _)| *name == op).map(|c| c.1);
                    OpShare {
                        op: op.to_string(),
                        ms: seconds * 1e3,
                        share: if total > 0.0 { seconds / total } else { 0.0 },
                        calls,
                        flops: cost.map(|c| c.flops),
                        bytes: cost.map(|c| c.bytes_for(calls)),
                    }
                })
                .collect(),
            layers_ms: by_layer(ops).into_iter().map(|s| s * 1e3).collect(),
        }
    }
}

/// One measurement of `tessera bench`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub tessera: String,
    pub commit: String,
    pub device: String,
    pub cpu: String,
    pub backend: String,
    /// The path's arithmetic: `fast`/`reference` on the CPU, `w8a8`/`w8a16`
    /// on CUDA, `f32` elsewhere.
    pub arithmetic: String,
    /// The bench's command line (its flags), as run.
    #[serde(default)]
    pub flags: String,
    pub model: String,
    pub layers: usize,
    pub hidden: usize,
    pub ffn: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// `rerank` or `prefill`.
    pub workload: String,
    pub docs: usize,
    pub doc_tokens: usize,
    pub query_tokens: usize,
    pub batch_tokens: usize,
    pub passes: usize,
    pub billed_tokens: usize,
    pub runs: usize,
    pub median_s: f64,
    pub tokens_per_s: f64,
    pub docs_per_s: f64,
    /// The CPU reference path on the first documents, when measured.
    #[serde(default)]
    pub reference_tokens_per_s: Option<f64>,
    /// The run's matmul work (2 · the layers' matmul weights · the token rows
    /// the passes computed) per second of its median run.
    #[serde(default)]
    pub matmul_gflop_per_s: Option<f64>,
    /// The device's own ceilings measured in the same run (the CPU: a large
    /// copy and the fast path's matmul at a large shape; CUDA: a
    /// device-to-device copy and cuBLAS's bf16 GEMM).
    #[serde(default)]
    pub ceilings: Option<Ceilings>,
    /// Why `ceilings` is absent, when the device has none measured.
    #[serde(default)]
    pub no_ceilings: Option<String>,
    #[serde(default)]
    pub profile: Option<Profile>,
}

impl Record {
    /// The device line without what loading measured (`, model resident 4.61
    /// GB of 85.0 GB`, `, model mapped …`), which varies from run to run.
    pub fn device_name(&self) -> &str {
        device_name(&self.device)
    }
}

/// A device line without what loading measured (see [`Record::device_name`]).
pub fn device_name(device: &str) -> &str {
    device.split(", model ").next().unwrap_or(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_drop_what_loading_measured() {
        assert_eq!(
            device_name(
                "cuda:0 cuda (NVIDIA H100), w8a16, model resident 4.61 GB of 85.0 GB, GEMMs: x"
            ),
            "cuda:0 cuda (NVIDIA H100), w8a16"
        );
        assert_eq!(
            device_name("cpu (2 threads), model mapped 0.01 GB"),
            "cpu (2 threads)"
        );
        assert_eq!(device_name("wgpu:0 llvmpipe"), "wgpu:0 llvmpipe");
    }

    #[test]
    fn achieved_rates_are_the_costs_over_the_time() {
        let op = OpShare {
            op: "attention".into(),
            ms: 2.0,
            share: 1.0,
            calls: 1,
            flops: Some(6e9),
            bytes: Some(1e9),
        };
        // 6 GFLOP in 2 ms: 3,000 GFLOP/s; 1 GB in 2 ms: 500 GB/s.
        assert_eq!(op.gflop_per_s(), Some(3000.0));
        assert_eq!(op.gb_per_s(), Some(500.0));
        let idle = OpShare { ms: 0.0, ..op };
        assert_eq!(idle.gflop_per_s(), None);
    }

    #[test]
    fn profile_costs_scale_weight_bytes_by_calls() {
        let ops = [
            OpTime {
                op: "o + residual",
                layer: 1,
                seconds: 0.001,
            },
            OpTime {
                op: "o + residual",
                layer: 2,
                seconds: 0.001,
            },
            OpTime {
                op: "copy rows",
                layer: 2,
                seconds: 0.002,
            },
        ];
        let cost = OpCost {
            flops: 10.0,
            bytes: 100.0,
            bytes_per_call: 7.0,
        };
        let p = Profile::from_ops(&ops, 0.005, &[("o + residual", cost)]);
        let o = p.ops.iter().find(|o| o.op == "o + residual").unwrap();
        assert_eq!((o.calls, o.flops, o.bytes), (2, Some(10.0), Some(114.0)));
        let copy = p.ops.iter().find(|o| o.op == "copy rows").unwrap();
        assert_eq!((copy.flops, copy.bytes), (None, None));
        assert!((p.host_ms - 1.0).abs() < 1e-9);
    }
}

//! A per-op profile of any backend: [`Profiled`] wraps a backend and, while its
//! [`Profiler`] is recording, waits for the device before and after every op and
//! records the op's wall time. Waiting per op costs a round trip to the device
//! each time (≈ 10–20 µs on a GPU), so a profiled pass is slower than a plain
//! one; what it gives is each op's own time, which a device's queue otherwise
//! hides. Off, the wrapper only forwards.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::{
    AttentionLayout, AttentionShape, Backend, BackendError, GateUp, HostTensor, KvRef, Norm, Qkv,
    Rope, Rows,
};

/// One timed op: its kind, the layer it ran in (0 before the first layer's
/// q/k/v projection: the embedding; the final norm and the head count with the
/// last layer) and its seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct OpTime {
    pub op: &'static str,
    pub layer: usize,
    pub seconds: f64,
}

/// Recording state shared between a [`Profiled`] backend and whoever reads the
/// profile (the backend itself moves into the engine).
#[derive(Debug, Default)]
pub struct Profiler {
    recording: AtomicBool,
    layer: AtomicUsize,
    ops: Mutex<Vec<OpTime>>,
}

impl Profiler {
    pub fn new() -> Arc<Profiler> {
        Arc::new(Profiler::default())
    }

    /// Clears what was recorded and starts recording.
    pub fn start(&self) {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.layer.store(0, Ordering::SeqCst);
        self.recording.store(true, Ordering::SeqCst);
    }

    /// Stops recording and returns the ops timed since `start`, in order.
    pub fn finish(&self) -> Vec<OpTime> {
        self.recording.store(false, Ordering::SeqCst);
        std::mem::take(&mut *self.ops.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn recording(&self) -> bool {
        self.recording.load(Ordering::SeqCst)
    }
}

/// Per-kind totals of a profile, largest first: (op, seconds, calls).
pub fn by_op(ops: &[OpTime]) -> Vec<(&'static str, f64, usize)> {
    let mut totals: Vec<(&'static str, f64, usize)> = Vec::new();
    for op in ops {
        match totals.iter_mut().find(|(name, _, _)| *name == op.op) {
            Some(entry) => {
                entry.1 += op.seconds;
                entry.2 += 1;
            }
            None => totals.push((op.op, op.seconds, 1)),
        }
    }
    totals.sort_by(|a, b| b.1.total_cmp(&a.1));
    totals
}

/// Seconds per layer (index 0: before the first layer), summed over the passes
/// (each pass's embedding starts the count again).
pub fn by_layer(ops: &[OpTime]) -> Vec<f64> {
    let layers = ops.iter().map(|o| o.layer).max().map_or(0, |l| l + 1);
    let mut totals = vec![0.0; layers];
    for op in ops {
        totals[op.layer] += op.seconds;
    }
    totals
}

/// A backend whose ops are timed while its profiler records.
pub struct Profiled<B> {
    inner: B,
    profiler: Arc<Profiler>,
}

impl<B: Backend> Profiled<B> {
    pub fn new(inner: B, profiler: Arc<Profiler>) -> Profiled<B> {
        Profiled { inner, profiler }
    }

    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// Runs `f`, timed between two waits for the device when recording.
    fn timed<R>(
        &self,
        op: &'static str,
        f: impl FnOnce(&B) -> Result<R, BackendError>,
    ) -> Result<R, BackendError> {
        if !self.profiler.recording() {
            return f(&self.inner);
        }
        self.inner.synchronize()?;
        let start = Instant::now();
        let result = f(&self.inner)?;
        self.inner.synchronize()?;
        let seconds = start.elapsed().as_secs_f64();
        let layer = self.profiler.layer.load(Ordering::SeqCst);
        self.profiler
            .ops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(OpTime { op, layer, seconds });
        Ok(result)
    }
}

impl<B: Backend> Backend for Profiled<B> {
    type Buffer = B::Buffer;
    type Weight = B::Weight;

    fn name(&self) -> String {
        self.inner.name()
    }

    fn max_activation_elements(&self) -> Option<usize> {
        self.inner.max_activation_elements()
    }

    fn upload_weight(&self, tensor: &HostTensor) -> Result<Self::Weight, BackendError> {
        self.inner.upload_weight(tensor)
    }

    fn alloc(&self, len: usize) -> Result<Self::Buffer, BackendError> {
        self.inner.alloc(len)
    }

    fn write(&self, buf: &mut Self::Buffer, data: &[f32]) -> Result<(), BackendError> {
        self.timed("upload", |b| b.write(buf, data))
    }

    fn read(&self, buf: &Self::Buffer, len: usize) -> Result<Vec<f32>, BackendError> {
        self.timed("read back", |b| b.read(buf, len))
    }

    fn embedding(
        &self,
        table: &Self::Weight,
        ids: &[u32],
        out: &mut Self::Buffer,
    ) -> Result<(), BackendError> {
        // A pass begins: its layers count from 1 again.
        self.profiler.layer.store(0, Ordering::SeqCst);
        self.timed("embedding", |b| b.embedding(table, ids, out))
    }

    fn rms_norm(
        &self,
        x: &Self::Buffer,
        weight: &Self::Weight,
        rows: usize,
        dim: usize,
        eps: f32,
        out: &mut Self::Buffer,
    ) -> Result<(), BackendError> {
        self.timed("rms_norm", |b| b.rms_norm(x, weight, rows, dim, eps, out))
    }

    fn rms_norm_inplace(
        &self,
        x: &mut Self::Buffer,
        weight: &Self::Weight,
        rows: usize,
        dim: usize,
        eps: f32,
    ) -> Result<(), BackendError> {
        self.timed("rms_norm", |b| {
            b.rms_norm_inplace(x, weight, rows, dim, eps)
        })
    }

    fn matmul(
        &self,
        x: &Self::Buffer,
        rows: usize,
        weight: &Self::Weight,
        out: &mut Self::Buffer,
    ) -> Result<(), BackendError> {
        self.timed("matmul", |b| b.matmul(x, rows, weight, out))
    }

    fn rope(
        &self,
        x: &mut Self::Buffer,
        positions: &[u32],
        heads: usize,
        head_dim: usize,
        theta: f32,
    ) -> Result<(), BackendError> {
        self.timed("rope", |b| b.rope(x, positions, heads, head_dim, theta))
    }

    fn attention(
        &self,
        qkv: Qkv<'_, Self::Buffer>,
        shape: AttentionShape,
        layout: &AttentionLayout,
        prefixes: &[KvRef<'_, Self::Buffer>],
        out: &mut Self::Buffer,
    ) -> Result<(), BackendError> {
        self.timed("attention", |b| {
            b.attention(qkv, shape, layout, prefixes, out)
        })
    }

    fn swiglu(
        &self,
        gate: &Self::Buffer,
        up: &Self::Buffer,
        len: usize,
        out: &mut Self::Buffer,
    ) -> Result<(), BackendError> {
        self.timed("swiglu", |b| b.swiglu(gate, up, len, out))
    }

    fn add_inplace(
        &self,
        x: &mut Self::Buffer,
        y: &Self::Buffer,
        len: usize,
    ) -> Result<(), BackendError> {
        self.timed("add", |b| b.add_inplace(x, y, len))
    }

    fn gather_rows(
        &self,
        x: &Self::Buffer,
        rows: &[usize],
        dim: usize,
        out: &mut Self::Buffer,
    ) -> Result<(), BackendError> {
        self.timed("gather rows", |b| b.gather_rows(x, rows, dim, out))
    }

    fn copy_rows(
        &self,
        src: &Self::Buffer,
        src_row: usize,
        dst: &mut Self::Buffer,
        dst_row: usize,
        rows: usize,
        width: usize,
    ) -> Result<(), BackendError> {
        self.timed("copy rows", |b| {
            b.copy_rows(src, src_row, dst, dst_row, rows, width)
        })
    }

    fn score_head(
        &self,
        x: &Self::Buffer,
        rows: usize,
        weight: &Self::Weight,
        head_rows: [usize; 2],
        out: &mut Self::Buffer,
    ) -> Result<(), BackendError> {
        self.timed("score head", |b| {
            b.score_head(x, rows, weight, head_rows, out)
        })
    }

    fn mlp_chunk_rows(&self) -> usize {
        self.inner.mlp_chunk_rows()
    }

    /// Three weights are a layer's q/k/v projection: a new layer starts.
    fn rms_norm_matmuls(
        &self,
        x: Rows<'_, Self::Buffer>,
        norm: Norm<'_, Self::Weight>,
        weights: &[&Self::Weight],
        normed: &mut Self::Buffer,
        outs: &mut [&mut Self::Buffer],
    ) -> Result<(), BackendError> {
        let op = if weights.len() == 3 {
            self.profiler.layer.fetch_add(1, Ordering::SeqCst);
            "norm + q/k/v"
        } else {
            "norm + gate/up"
        };
        self.timed(op, |b| b.rms_norm_matmuls(x, norm, weights, normed, outs))
    }

    fn qk_norm_rope(
        &self,
        q: &mut Self::Buffer,
        k: &mut Self::Buffer,
        q_norm: Norm<'_, Self::Weight>,
        k_norm: Norm<'_, Self::Weight>,
        rope: Rope<'_>,
        shape: AttentionShape,
    ) -> Result<(), BackendError> {
        self.timed("qk-norm + rope", |b| {
            b.qk_norm_rope(q, k, q_norm, k_norm, rope, shape)
        })
    }

    fn matmul_add(
        &self,
        x: &Self::Buffer,
        rows: usize,
        weight: &Self::Weight,
        n: usize,
        scratch: &mut Self::Buffer,
        out: &mut Self::Buffer,
    ) -> Result<(), BackendError> {
        self.timed("o + residual", |b| {
            b.matmul_add(x, rows, weight, n, scratch, out)
        })
    }

    fn swiglu_matmul_add(
        &self,
        gate_up: GateUp<'_, Self::Buffer>,
        down: &Self::Weight,
        n: usize,
        act: &mut Self::Buffer,
        scratch: &mut Self::Buffer,
        out: &mut Self::Buffer,
    ) -> Result<(), BackendError> {
        self.timed("swiglu + down + residual", |b| {
            b.swiglu_matmul_add(gate_up, down, n, act, scratch, out)
        })
    }

    fn synchronize(&self) -> Result<(), BackendError> {
        self.inner.synchronize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(op: &'static str, layer: usize, seconds: f64) -> OpTime {
        OpTime { op, layer, seconds }
    }

    #[test]
    fn totals_by_op_and_by_layer() {
        let ops = [
            op("embedding", 0, 1.0),
            op("norm + q/k/v", 1, 2.0),
            op("attention", 1, 5.0),
            op("norm + q/k/v", 2, 3.0),
            op("attention", 2, 4.0),
        ];
        assert_eq!(
            by_op(&ops),
            vec![
                ("attention", 9.0, 2),
                ("norm + q/k/v", 5.0, 2),
                ("embedding", 1.0, 1)
            ]
        );
        assert_eq!(by_layer(&ops), vec![1.0, 7.0, 7.0]);
        assert!(by_layer(&[]).is_empty());
    }
}

//! The CPU backend against the parity kit's f64 oracles: the reference in f32,
//! the fast path (int8 activations) at W8A8 tolerances on every instruction set
//! this CPU has; and proof that the kit catches a wrong op.

use tessera_backend::parity::{run_all, Tolerances};
use tessera_backend::Backend;
use tessera_backend_cpu::{CpuBackend, Isa, Precision};

/// The fast path on `isa`, or `None` (printed) when this CPU lacks it.
fn fast(isa: Isa) -> Option<CpuBackend> {
    match CpuBackend::with_isa(Precision::Fast, Some(2), isa) {
        Ok(backend) => Some(backend),
        Err(why) => {
            println!("skipped: {why}");
            None
        }
    }
}

tessera_backend::parity_tests! {
    every_op_on_the_cpu_reference: Some(CpuBackend::new()), Tolerances::F32;
    every_op_on_the_cpu_fast_avx512_vnni: fast(Isa::Avx512Vnni), Tolerances::W8A8;
    every_op_on_the_cpu_fast_avx_vnni: fast(Isa::AvxVnni), Tolerances::W8A8;
    every_op_on_the_cpu_fast_avx2: fast(Isa::Avx2), Tolerances::W8A8;
    every_op_on_the_cpu_fast_scalar: fast(Isa::Scalar), Tolerances::W8A8;
}

#[test]
fn kit_catches_a_wrong_op() {
    // A backend whose swiglu forgets the `up` factor must fail the kit.
    struct Broken(CpuBackend);
    impl Backend for Broken {
        type Buffer = Vec<f32>;
        type Weight = tessera_backend_cpu::CpuWeight;
        fn name(&self) -> String {
            "broken".into()
        }
        fn upload_weight(
            &self,
            t: &tessera_backend::HostTensor,
        ) -> Result<Self::Weight, tessera_backend::BackendError> {
            self.0.upload_weight(t)
        }
        fn alloc(&self, len: usize) -> Result<Vec<f32>, tessera_backend::BackendError> {
            self.0.alloc(len)
        }
        fn write(&self, b: &mut Vec<f32>, d: &[f32]) -> Result<(), tessera_backend::BackendError> {
            self.0.write(b, d)
        }
        fn read(
            &self,
            b: &Vec<f32>,
            len: usize,
        ) -> Result<Vec<f32>, tessera_backend::BackendError> {
            self.0.read(b, len)
        }
        fn embedding(
            &self,
            t: &Self::Weight,
            ids: &[u32],
            out: &mut Vec<f32>,
        ) -> Result<(), tessera_backend::BackendError> {
            self.0.embedding(t, ids, out)
        }
        fn rms_norm(
            &self,
            x: &Vec<f32>,
            w: &Self::Weight,
            r: usize,
            d: usize,
            e: f32,
            o: &mut Vec<f32>,
        ) -> Result<(), tessera_backend::BackendError> {
            self.0.rms_norm(x, w, r, d, e, o)
        }
        fn rms_norm_inplace(
            &self,
            x: &mut Vec<f32>,
            w: &Self::Weight,
            r: usize,
            d: usize,
            e: f32,
        ) -> Result<(), tessera_backend::BackendError> {
            self.0.rms_norm_inplace(x, w, r, d, e)
        }
        fn matmul(
            &self,
            x: &Vec<f32>,
            r: usize,
            w: &Self::Weight,
            o: &mut Vec<f32>,
        ) -> Result<(), tessera_backend::BackendError> {
            // Off by one row: writes one element past the output.
            self.0.matmul(x, r, w, o)?;
            let n = w.rows();
            o[r * n] = 0.0;
            Ok(())
        }
        fn rope(
            &self,
            x: &mut Vec<f32>,
            p: &[u32],
            h: usize,
            d: usize,
            t: f32,
        ) -> Result<(), tessera_backend::BackendError> {
            self.0.rope(x, p, h, d, t)
        }
        fn attention(
            &self,
            qkv: tessera_backend::Qkv<'_, Vec<f32>>,
            s: tessera_backend::AttentionShape,
            l: &tessera_backend::AttentionLayout,
            p: &[tessera_backend::KvRef<'_, Vec<f32>>],
            o: &mut Vec<f32>,
        ) -> Result<(), tessera_backend::BackendError> {
            self.0.attention(qkv, s, l, p, o)
        }
        fn swiglu(
            &self,
            g: &Vec<f32>,
            u: &Vec<f32>,
            len: usize,
            o: &mut Vec<f32>,
        ) -> Result<(), tessera_backend::BackendError> {
            let _ = u;
            for i in 0..len {
                o[i] = g[i] / (1.0 + (-g[i]).exp());
            }
            Ok(())
        }
        fn add_inplace(
            &self,
            x: &mut Vec<f32>,
            y: &Vec<f32>,
            len: usize,
        ) -> Result<(), tessera_backend::BackendError> {
            // Leaves the last element unwritten-looking.
            self.0.add_inplace(x, y, len)?;
            x[len - 1] = f32::NAN;
            Ok(())
        }
        fn gather_rows(
            &self,
            x: &Vec<f32>,
            r: &[usize],
            d: usize,
            o: &mut Vec<f32>,
        ) -> Result<(), tessera_backend::BackendError> {
            self.0.gather_rows(x, r, d, o)
        }
        fn copy_rows(
            &self,
            s: &Vec<f32>,
            sr: usize,
            d: &mut Vec<f32>,
            dr: usize,
            r: usize,
            w: usize,
        ) -> Result<(), tessera_backend::BackendError> {
            self.0.copy_rows(s, sr, d, dr, r, w)
        }
        fn score_head(
            &self,
            x: &Vec<f32>,
            r: usize,
            w: &Self::Weight,
            h: [usize; 2],
            o: &mut Vec<f32>,
        ) -> Result<(), tessera_backend::BackendError> {
            self.0.score_head(x, r, w, h, o)
        }
    }
    let reports = run_all(&Broken(CpuBackend::new()), Tolerances::F32, 1);
    let failed_ops = |op: &str| reports.iter().filter(|r| r.op == op && !r.passed()).count();
    let total_ops = |op: &str| reports.iter().filter(|r| r.op == op).count();
    assert_eq!(
        failed_ops("swiglu"),
        total_ops("swiglu"),
        "a wrong swiglu passed"
    );
    assert_eq!(
        failed_ops("matmul"),
        total_ops("matmul"),
        "an out-of-bounds write passed"
    );
    assert_eq!(failed_ops("add"), total_ops("add"), "a NaN output passed");
    assert_eq!(failed_ops("rope"), 0);
    // The fused ops' defaults run the broken basic ops, and the kit sees it.
    for op in ["norm_matmuls", "matmul_add", "swiglu_mm_add"] {
        assert!(total_ops(op) > 0, "no {op} cases ran");
        assert_eq!(failed_ops(op), total_ops(op), "a broken {op} passed");
    }
    assert_eq!(failed_ops("qk_norm_rope"), 0);
}

//! The wgmma attention (`kernels/attention_wgmma.cu`) on the
//! emulated device: the kit's attention cases with v4 selected (those at head
//! sizes 64 and 128 run it, the others v3), and a deeper case — several
//! sequences, two of them behind one prefix whose last tile is partial, GQA
//! groups of 4 and 8, own lengths across tiles — against the CPU reference at the
//! W8A16 attention tolerance. And its mutants: each slip fails that case.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera_backend::parity::{run_all, Tolerances, SEED};
use tessera_backend::{AttentionLayout, AttentionShape, Backend, KvRef, Qkv};
use tessera_backend_cpu::CpuBackend;
use tessera_backend_cuda::ops::attention::{wgmma_kernel_for_head_dim, AttentionKernel};
use tessera_backend_cuda::{Arithmetic, KernelBackend, MatmulPath};
use tessera_cuda_emulated::{emulated_w8a16, EmulatedDevice};

/// Every attention case of the kit passes with v4 selected, and the ones it
/// runs (head sizes 64 and 128) are three: no prefix over two own tiles
/// (70 rows, MHA), a 130-key prefix (three tiles, the last partial) before
/// 17 rows with 4 query heads per KV head, and a 5-key prefix before a
/// 66-row sequence beside a 3-row one (head size 64).
#[test]
fn the_kits_attention_cases_pass_on_the_wgmma_attention() {
    let backend = emulated_w8a16().with_attention(AttentionKernel::Wgmma);
    let reports = run_all(&backend, Tolerances::W8A16, SEED);
    let attention: Vec<_> = reports.iter().filter(|r| r.op == "attention").collect();
    let on_wgmma = attention
        .iter()
        .filter(|r| r.case.ends_with("_d64") || r.case.ends_with("_d128"))
        .count();
    for r in &attention {
        println!("{r}");
    }
    assert_eq!(on_wgmma, 3);
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.to_string())
        .collect();
    assert!(failed.is_empty(), "failed:\n{}", failed.join("\n"));
}

/// Sequences of 150, 37 and 64 rows, the first two behind one 100-key prefix
/// (two tiles, the second partial); `n_heads` query heads over 2 KV heads.
const LENGTHS: [usize; 3] = [150, 37, 64];
const PREFIX: usize = 100;

struct Case {
    shape: AttentionShape,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    pk: Vec<f32>,
    pv: Vec<f32>,
    layout: AttentionLayout,
    want: Vec<f32>,
}

fn case(n_heads: usize, head_dim: usize) -> Case {
    let shape = AttentionShape {
        n_heads,
        n_kv_heads: 2,
        head_dim,
    };
    let mut rng = StdRng::seed_from_u64(27);
    let mut random = |len: usize, scale: f32| -> Vec<f32> {
        (0..len).map(|_| rng.random_range(-scale..scale)).collect()
    };
    let tokens: usize = LENGTHS.iter().sum();
    let q = random(tokens * shape.q_width(), 1.5);
    let k = random(tokens * shape.kv_width(), 1.5);
    let v = random(tokens * shape.kv_width(), 1.0);
    let pk = random(PREFIX * shape.kv_width(), 1.5);
    let pv = random(PREFIX * shape.kv_width(), 1.0);
    let layout = AttentionLayout::packed_with_prefixes(&LENGTHS, &[Some(0), Some(0), None]);
    let mut case = Case {
        shape,
        q,
        k,
        v,
        pk,
        pv,
        layout,
        want: Vec::new(),
    };
    case.want = run(&CpuBackend::reference(), &case).expect("the CPU reference runs");
    case
}

/// The attention of `case` on `b`.
fn run<B: Backend>(b: &B, case: &Case) -> Result<Vec<f32>, String> {
    let upload = |values: &[f32]| -> Result<B::Buffer, String> {
        let mut buf = b.alloc(values.len()).map_err(|e| e.to_string())?;
        b.write(&mut buf, values).map_err(|e| e.to_string())?;
        Ok(buf)
    };
    let (q, k, v) = (upload(&case.q)?, upload(&case.k)?, upload(&case.v)?);
    let (pk, pv) = (upload(&case.pk)?, upload(&case.pv)?);
    let mut out = b.alloc(case.q.len()).map_err(|e| e.to_string())?;
    let prefixes = [KvRef {
        k: &pk,
        v: &pv,
        len: PREFIX,
    }];
    b.attention(
        Qkv {
            q: &q,
            k: &k,
            v: &v,
        },
        case.shape,
        &case.layout,
        &prefixes,
        &mut out,
    )
    .map_err(|e| e.to_string())?;
    b.read(&out, case.q.len()).map_err(|e| e.to_string())
}

fn nmse(device: EmulatedDevice, case: &Case) -> Result<f64, String> {
    let b = KernelBackend::with_device(device)
        .with_arithmetic(Arithmetic::W8A16)
        .expect("the emulated mma device runs W8A16")
        .with_attention(AttentionKernel::Wgmma);
    let got = run(&b, case)?;
    let want: Vec<f64> = case.want.iter().map(|&w| f64::from(w)).collect();
    Ok(tessera_backend::parity::nmse(&got, &want))
}

#[test]
fn the_wgmma_attention_matches_the_reference_through_prefix_and_own_tiles() {
    let tolerance = Tolerances::W8A16.attention;
    // GQA 4 (the model's: a warpgroup is 4 heads × 16 rows) at both head
    // sizes, and GQA 8 (the two warpgroups hold different heads of the
    // same rows).
    for (n_heads, head_dim) in [(8, 64), (8, 128), (16, 64)] {
        let case = case(n_heads, head_dim);
        let got = nmse(EmulatedDevice::new(MatmulPath::Mma), &case);
        println!("{n_heads}/2 heads, d{head_dim}: NMSE {got:?}");
        let got = got.unwrap_or_else(|e| panic!("d{head_dim}: {e}"));
        assert!(got <= tolerance, "d{head_dim}: NMSE {got} > {tolerance}");
    }
}

/// Each piece of v4 has a mutant that must fail the deep case: P's A
/// fragment (registers 1 and 2 swapped), the causal edge (a row also sees
/// the key after its own), the prefix's partial tile (its first key past the
/// prefix admitted), the GQA grouping (query heads round-robin over KV
/// heads), S's wait (`wait_group 2`: the softmax reads accumulators still in
/// flight, NaN in the emulator), O rescaled while the previous tile's P·V
/// still accumulates into it (the rescale is lost), and the ring (a slot freed before the wgmma
/// reading it are waited for: the producer's next copy overwrites an operand
/// in flight, which the emulator reports).
#[test]
fn wgmma_attention_mutants_fail_the_deep_case() {
    let tolerance = Tolerances::W8A16.attention;
    let case = case(8, 128);
    let kernel = wgmma_kernel_for_head_dim(128).expect("d128");
    let mutants: &[(&str, Option<&str>)] = &[
        ("mutant_attention_p_fragment", None),
        ("mutant_attention_wgmma_causal", None),
        ("mutant_attention_prefix_edge", None),
        ("mutant_attention_wgmma_gqa", None),
        ("mutant_attention_s_wait", None),
        ("mutant_attention_o_rescale", None),
        (
            "mutant_attention_empty_arrive",
            Some("written before wgmma.wait_group"),
        ),
    ];
    for &(space, error) in mutants {
        let mutant = format!("{space}::{kernel}");
        let device = EmulatedDevice::new(MatmulPath::Mma).with_kernel_replaced(kernel, &mutant);
        let got = nmse(device, &case);
        println!("{mutant}: {got:?}");
        match (error, got) {
            (Some(expected), Err(e)) => assert!(e.contains(expected), "{mutant}: {e}"),
            (Some(_), Ok(v)) => panic!("{mutant} ran to the end: NMSE {v}"),
            // A single key too many among the 100-250 a row sees costs ≈ 1e-3.
            (None, Ok(v)) => assert!(
                v.is_nan() || v > 100.0 * tolerance,
                "{mutant}: NMSE {v} passes"
            ),
            (None, Err(e)) => panic!("{mutant}: {e}"),
        }
    }
}

/// `tessera tune` offers v4 where it runs (the emulator has `wgmma`) at a head
/// size it has a kernel for, after its output agrees with v3's; a v4 that
/// disagrees (here the P-fragment mutant) is left out with the reason, so it
/// is never chosen for being fast.
#[test]
fn tune_times_the_wgmma_attention_only_when_it_agrees_with_v3() {
    use tessera_backend_cuda::tuning::{tune_attention, AttentionWorkload};
    let shape = AttentionShape {
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 64,
    };
    let workload = AttentionWorkload {
        docs: 2,
        doc_tokens: 70,
        prefix_tokens: 5,
    };
    let timed = |device: EmulatedDevice| {
        let backend = KernelBackend::with_device(device)
            .with_arithmetic(Arithmetic::W8A16)
            .expect("the emulated mma device runs W8A16");
        let mut said = Vec::new();
        let entries = tune_attention(&backend, shape, &[workload], 1, |line| {
            said.push(line.to_string())
        })
        .expect("tune runs");
        let names: Vec<String> = entries[0]
            .candidates
            .iter()
            .map(|c| c.kernel.clone())
            .collect();
        (names, said)
    };
    let (names, _) = timed(EmulatedDevice::new(MatmulPath::Mma));
    assert_eq!(names, ["f16kv", "mma", "wgmma"]);
    let wrong = EmulatedDevice::new(MatmulPath::Mma).with_kernel_replaced(
        "attention_wgmma_d64",
        "mutant_attention_p_fragment::attention_wgmma_d64",
    );
    let (names, said) = timed(wrong);
    assert_eq!(names, ["f16kv", "mma"]);
    assert!(
        said.iter()
            .any(|l| l.contains("wgmma") && l.contains("disagrees with f16kv")),
        "{said:?}"
    );
}

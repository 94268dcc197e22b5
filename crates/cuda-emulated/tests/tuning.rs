//! `tessera tune`'s engine on the emulated device: every candidate of every
//! shape is launched and timed, the table names a winner per shape and row
//! count, survives a round trip through its file, steers the backend's choice,
//! and the GEMMs it picks still pass the kit. (The times themselves are the
//! emulator's, meaningless for a GPU.)

use tessera_backend::parity::{run_all, Tolerances, SEED};
use tessera_backend::AttentionShape;
use tessera_backend_cuda::ops::w8a16::GEMM_CONFIGS;
use tessera_backend_cuda::tuning::{
    candidates, tune, tune_attention, AttentionWorkload, GemmShape, TuningTable,
};
use tessera_backend_cuda::{Device, GemmPolicy};
use tessera_cuda_emulated::emulated_w8a16;

#[test]
fn tune_times_every_candidate_and_its_table_steers_the_backend() {
    let backend = emulated_w8a16();
    // The kit's grouped norm-matmul shape and one plain projection.
    let shapes = [
        GemmShape {
            n: vec![96, 32, 32],
            k: 128,
        },
        GemmShape {
            n: vec![65],
            k: 256,
        },
    ];
    let rows = [9, 70];
    let mut lines = Vec::new();
    let table = tune(&backend, &shapes, &rows, 1, |line| {
        lines.push(line.to_string())
    })
    .unwrap();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(table.gemm.len(), 4);
    let identity = backend.device().identity();
    assert_eq!(table.device, identity);
    for entry in &table.gemm {
        let expected = candidates(&identity, entry.rows, &entry.shape);
        assert_eq!(entry.candidates.len(), expected.len());
        for config in GEMM_CONFIGS {
            assert!(entry.candidates.iter().any(|c| c.config == config.name));
        }
        let fastest = entry
            .candidates
            .iter()
            .map(|c| c.micros)
            .fold(f64::INFINITY, f64::min);
        assert_eq!(entry.micros, fastest);
        assert!(entry.micros > 0.0 && entry.tflops > 0.0);
    }
    // k 256 is four stages: split two ways is a candidate.
    assert!(table.gemm[2].candidates.iter().any(|c| c.split_k == 2));

    let dir = std::env::temp_dir().join(format!("tessera-tune-{}", std::process::id()));
    let path = dir.join("emulated.json");
    table.write(&path).unwrap();
    let read = TuningTable::read(&path).unwrap();
    assert_eq!(read.device, table.device);
    assert_eq!(read.gemm.len(), table.gemm.len());
    for (a, b) in read.gemm.iter().zip(&table.gemm) {
        assert_eq!(
            (&a.shape, a.rows, &a.config, a.split_k),
            (&b.shape, b.rows, &b.config, b.split_k)
        );
        // JSON keeps the times to their printed digits.
        assert!((a.micros - b.micros).abs() <= 1e-9 * b.micros);
        assert_eq!(a.candidates.len(), b.candidates.len());
    }

    // The backend runs what the table says for its shapes.
    let tuned = emulated_w8a16().with_tuning(read, &path).unwrap();
    assert!(matches!(tuned.gemm_policy(), GemmPolicy::Table(_)));
    for entry in &table.gemm {
        let choice = tuned.gemm_choice(entry.rows, &entry.shape.n, entry.shape.k);
        assert_eq!(choice.config.name, entry.config);
        assert_eq!(choice.split_k, entry.split_k);
    }
    for report in run_all(&tuned, Tolerances::W8A16, SEED) {
        assert!(report.passed(), "{report}");
    }

    // Attention: both kernels timed on a small GQA workload with a prefix; the
    // table's choice is what the backend then runs at that head size.
    let shape = AttentionShape {
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 16,
    };
    let workload = AttentionWorkload {
        docs: 2,
        doc_tokens: 70,
        prefix_tokens: 5,
    };
    let attention = tune_attention(&backend, shape, &[workload], 1, |_| {}).unwrap();
    assert_eq!(attention.len(), 1);
    let names: Vec<&str> = attention[0]
        .candidates
        .iter()
        .map(|c| c.kernel.as_str())
        .collect();
    assert_eq!(names, ["f16kv", "mma"]);
    let mut with_attention = table.clone();
    with_attention.attention = attention.clone();
    let tuned = emulated_w8a16().with_tuning(with_attention, &path).unwrap();
    assert_eq!(tuned.attention_kernel(16).name(), attention[0].kernel);
    // No tensor-core kernel at this head size: nothing to time.
    let odd = AttentionShape {
        head_dim: 20,
        ..shape
    };
    assert!(tune_attention(&backend, odd, &[workload], 1, |_| {})
        .unwrap()
        .is_empty());

    // A device with another size is another device.
    let other = emulated_w8a16();
    let mut foreign = table.clone();
    foreign.device.multiprocessors += 1;
    let message = other.with_tuning(foreign, &path).err().unwrap().to_string();
    assert!(message.contains("run `tessera tune`"), "{message}");
    std::fs::remove_dir_all(dir).ok();
}

/// A configuration that computes something else than the built-in choice —
/// here the wgmma kernel with its A fragment registers swapped, standing in
/// for a kernel the emulator passes but a card gets wrong — is not timed:
/// `tune` says why, and the table never names it; the others still are.
#[test]
fn tune_leaves_out_a_configuration_that_disagrees_with_the_builtin_choice() {
    use tessera_backend_cuda::{Arithmetic, KernelBackend, MatmulPath};
    use tessera_cuda_emulated::EmulatedDevice;
    let kernel = "matmul_w8a16_wgmma_128x128";
    let device = EmulatedDevice::new(MatmulPath::Mma)
        .with_kernel_replaced(kernel, &format!("mutant_wgmma_a_fragment::{kernel}"));
    let backend = KernelBackend::with_device(device)
        .with_arithmetic(Arithmetic::W8A16)
        .expect("the emulated mma device runs W8A16");
    let shape = GemmShape {
        n: vec![65],
        k: 256,
    };
    let mut lines = Vec::new();
    let table = tune(&backend, &[shape], &[9], 1, |line| {
        lines.push(line.to_string())
    })
    .unwrap();
    let said: Vec<&String> = lines.iter().filter(|l| l.contains("disagrees")).collect();
    assert_eq!(said.len(), 1, "{lines:?}");
    assert!(said[0].contains("wgmma-128x128"), "{}", said[0]);
    let timed: Vec<&str> = table.gemm[0]
        .candidates
        .iter()
        .map(|c| c.config.as_str())
        .collect();
    assert!(!timed.contains(&"wgmma-128x128"), "{timed:?}");
    assert!(
        timed.contains(&"wgmma-256x128") && timed.contains(&"256x128"),
        "{timed:?}"
    );
}

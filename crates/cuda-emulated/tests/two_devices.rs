//! The emulated CUDA backend as two devices behind one scheduler, as
//! `serve --devices 0,1` runs real GPUs: both compute under concurrent
//! requests, every score equals one device's, and a device whose launches
//! start failing leaves rotation while the other answers.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use tessera_backend_cuda::{KernelBackend, MatmulPath};
use tessera_cuda_emulated::{emulated, EmulatedCudaBackend, EmulatedDevice};
use tessera_engine::scheduler::{QueueBudget, Scheduler, SchedulerConfig, SchedulerError};
use tessera_engine::{RerankOptions, Reranker};
use tessera_gguf::GgufFile;
use tessera_tests::fixture;

fn reranker(backend: EmulatedCudaBackend) -> Reranker<EmulatedCudaBackend> {
    let file = Arc::new(GgufFile::open(fixture("tiny-q8.gguf")).expect("fixture"));
    Reranker::load(backend, &file, None).expect("loads")
}

fn documents(i: usize) -> Vec<String> {
    (0..3)
        .map(|d| format!("request {i} document {d} about resetting a password"))
        .collect()
}

#[test]
fn two_emulated_devices_share_the_queue_and_score_as_one() {
    let single = reranker(emulated());
    let config = SchedulerConfig {
        max_batch_tokens: 256,
        ..SchedulerConfig::default()
    };
    let scheduler = Scheduler::spawn(
        vec![reranker(emulated()), reranker(emulated())],
        config,
        &QueueBudget::new(),
        None,
    )
    .expect("spawn");
    let prepared: Vec<_> = (0..12)
        .map(|i| {
            single
                .prepare(
                    "how do I reset my password",
                    &documents(i),
                    &RerankOptions::default(),
                )
                .expect("prepares")
        })
        .collect();
    let pending: Vec<_> = prepared
        .iter()
        .map(|p| scheduler.submit(p.score.clone()).expect("queued"))
        .collect();
    for (i, (p, prep)) in pending.into_iter().zip(&prepared).enumerate() {
        let got = p.blocking_wait().expect("scored").items;
        let want = single.score_request(&prep.score, 256).expect("one device");
        assert_eq!(got, want, "request {i}: the same bits on either device");
    }
    let devices = scheduler.devices();
    assert!(
        devices.iter().all(|d| d.batches > 0),
        "both devices computed: {devices:?}"
    );
    scheduler.shutdown();
}

#[test]
fn a_device_whose_launches_fail_leaves_rotation() {
    // Device 0 fails every launch once the fault counter is armed.
    let faults = Arc::new(AtomicUsize::new(0));
    let failing = KernelBackend::with_device(
        EmulatedDevice::new(MatmulPath::Mma).with_launch_faults(Arc::clone(&faults)),
    );
    let scheduler = Scheduler::spawn(
        vec![reranker(failing), reranker(emulated())],
        SchedulerConfig::default(),
        &QueueBudget::new(),
        None,
    )
    .expect("spawn");
    faults.store(usize::MAX, std::sync::atomic::Ordering::SeqCst);
    let single = reranker(emulated());
    let mut device_errors = 0;
    for i in 0..40 {
        let request = single
            .prepare("q", &documents(i), &RerankOptions::default())
            .expect("prepares")
            .score;
        match scheduler.submit(request).expect("queued").blocking_wait() {
            Ok(_) => {}
            Err(SchedulerError::Device(_)) => device_errors += 1,
            Err(other) => panic!("{other}"),
        }
    }
    let devices = scheduler.devices();
    assert!(devices[0].retired, "{devices:?}");
    assert!(!devices[1].retired);
    assert_eq!(device_errors, 3);
    scheduler.shutdown();
}

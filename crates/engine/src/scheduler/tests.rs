//! The scheduler against a scorer whose scores encode their input, and which can be
//! held at a gate to make queueing observable.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;

/// Score of a pair = (sum of prefix ids, sum of document ids); records batch shapes.
struct EchoScorer {
    batches: Arc<Mutex<Vec<Vec<usize>>>>,
    gate: Option<Mutex<mpsc::Receiver<()>>>,
    calls: Arc<AtomicUsize>,
}

impl EchoScorer {
    fn new() -> Self {
        EchoScorer {
            batches: Arc::default(),
            gate: None,
            calls: Arc::default(),
        }
    }

    fn gated() -> (Self, mpsc::Sender<()>) {
        let (open, gate) = mpsc::channel();
        let mut scorer = EchoScorer::new();
        scorer.gate = Some(Mutex::new(gate));
        (scorer, open)
    }
}

fn echo(prefix: &[u32], doc: &[u32]) -> PairScore {
    PairScore {
        yes_logit: prefix.iter().sum::<u32>() as f32,
        no_logit: doc.iter().sum::<u32>() as f32,
    }
}

impl DeviceModel for EchoScorer {
    type Output = PairScore;

    fn compute(&self, groups: &[PrefixGroup<'_>]) -> Result<Vec<Vec<PairScore>>, EngineError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(gate) = &self.gate {
            let _ = gate.lock().expect("gate").recv();
        }
        self.batches
            .lock()
            .expect("batches")
            .push(groups.iter().map(|g| g.documents.len()).collect());
        Ok(groups
            .iter()
            .map(|g| g.documents.iter().map(|d| echo(g.prefix, d)).collect())
            .collect())
    }
}

fn request(prefix: u32, docs: usize, doc_len: usize) -> PackedRequest {
    PackedRequest {
        prefix: vec![prefix; 4],
        documents: (0..docs).map(|i| vec![i as u32; doc_len]).collect(),
    }
}

fn config(max_batch_tokens: usize, max_queue_tokens: usize) -> SchedulerConfig {
    SchedulerConfig {
        max_batch_tokens,
        max_queue_tokens,
    }
}

fn wait_until(mut condition: impl FnMut() -> bool) {
    for _ in 0..500 {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("condition not reached in time");
}

#[test]
fn large_request_is_spread_over_batches_and_reassembled_in_order() {
    let scorer = EchoScorer::new();
    let batches = Arc::clone(&scorer.batches);
    let scheduler = Scheduler::spawn(vec![scorer], config(30, 10_000), &QueueBudget::new(), None)
        .expect("spawn");
    let req = request(1, 10, 5);
    let out = scheduler
        .submit(req.clone())
        .expect("queued")
        .blocking_wait()
        .expect("scored");
    let expected: Vec<PairScore> = req.documents.iter().map(|d| echo(&req.prefix, d)).collect();
    assert_eq!(out.items, expected);
    assert!(
        out.batches > 1,
        "30-token batches cannot hold 10 × 9 tokens"
    );
    // Budget: prefix (4) once plus 5 per document ⇒ 5 documents per batch.
    assert_eq!(*batches.lock().expect("batches"), vec![vec![5], vec![5]]);
    assert_eq!(scheduler.stats().queued_tokens, 0);
    scheduler.shutdown();
}

#[test]
fn queued_requests_share_a_batch_as_separate_groups() {
    let (scorer, open) = EchoScorer::gated();
    let batches = Arc::clone(&scorer.batches);
    let calls = Arc::clone(&scorer.calls);
    let scheduler = Scheduler::spawn(
        vec![scorer],
        config(1000, 10_000),
        &QueueBudget::new(),
        None,
    )
    .expect("spawn");
    let first = scheduler.submit(request(1, 1, 3)).expect("queued");
    wait_until(|| calls.load(Ordering::SeqCst) == 1);
    let second = scheduler.submit(request(2, 2, 3)).expect("queued");
    let third = scheduler.submit(request(3, 3, 3)).expect("queued");
    for _ in 0..2 {
        open.send(()).expect("gate");
    }
    let (a, b, c) = (
        first.blocking_wait().expect("first"),
        second.blocking_wait().expect("second"),
        third.blocking_wait().expect("third"),
    );
    assert_eq!((a.items.len(), b.items.len(), c.items.len()), (1, 2, 3));
    assert_eq!(b.items[1], echo(&[2; 4], &[1; 3]));
    assert_eq!(*batches.lock().expect("batches"), vec![vec![1], vec![2, 3]]);
    scheduler.shutdown();
}

/// A short request sent while a long one is being computed rides in the next
/// pass (shortest first), and the long one keeps the rest of that pass (at
/// least half): the short one is answered after one more pass, not after the
/// long one's remaining passes, and both get their own scores in order.
#[test]
fn a_short_request_is_answered_in_the_next_pass_not_after_a_long_one() {
    let (scorer, open) = EchoScorer::gated();
    let batches = Arc::clone(&scorer.batches);
    let calls = Arc::clone(&scorer.calls);
    // 30 tokens a pass: the long request's prefix (4) + 5 documents of 5.
    let scheduler = Scheduler::spawn(vec![scorer], config(30, 10_000), &QueueBudget::new(), None)
        .expect("spawn");
    let long = request(1, 20, 5);
    let long_pending = scheduler.submit(long.clone()).expect("queued");
    wait_until(|| calls.load(Ordering::SeqCst) == 1);
    let short = request(2, 1, 5);
    let short_pending = scheduler.submit(short.clone()).expect("queued");
    // The first pass ends; the second carries the short request.
    open.send(()).expect("gate");
    open.send(()).expect("gate");
    let short_out = short_pending.blocking_wait().expect("short");
    assert_eq!(
        short_out.items,
        vec![echo(&short.prefix, &short.documents[0])]
    );
    // Only two passes were let through: the long request (four passes at
    // least) is still being computed.
    assert_eq!(short_out.batches, 1);
    for _ in 0..10 {
        let _ = open.send(());
    }
    let long_out = long_pending.blocking_wait().expect("long");
    let expected: Vec<PairScore> = long
        .documents
        .iter()
        .map(|d| echo(&long.prefix, d))
        .collect();
    assert_eq!(long_out.items, expected);
    let batches = batches.lock().expect("batches").clone();
    // Pass 2: the short one (4 + 5) first, the long one in the rest (4 + 3 × 5).
    assert_eq!(batches[..2], [vec![5], vec![1, 3]]);
    assert_eq!(batches.iter().flatten().sum::<usize>(), 21);
    scheduler.shutdown();
}

/// However many short requests keep arriving, the oldest request gets at least
/// half of every pass.
#[test]
fn short_requests_never_starve_the_oldest() {
    let (scorer, open) = EchoScorer::gated();
    let batches = Arc::clone(&scorer.batches);
    let calls = Arc::clone(&scorer.calls);
    let scheduler = Scheduler::spawn(vec![scorer], config(30, 10_000), &QueueBudget::new(), None)
        .expect("spawn");
    let long = scheduler.submit(request(1, 10, 5)).expect("queued");
    wait_until(|| calls.load(Ordering::SeqCst) == 1);
    // Eight short requests, more than fit in one pass.
    let shorts: Vec<_> = (0..8)
        .map(|i| scheduler.submit(request(10 + i, 1, 5)).expect("queued"))
        .collect();
    for _ in 0..20 {
        let _ = open.send(());
    }
    long.blocking_wait().expect("long");
    for pending in shorts {
        pending.blocking_wait().expect("short");
    }
    let batches = batches.lock().expect("batches").clone();
    // While the long request lasts, each pass gives it its share: the shorts
    // (9 tokens each) take at most 15 of 30, so it keeps 3 documents (19).
    assert_eq!(batches[0], [5]);
    assert_eq!(batches[1].last(), Some(&3), "{batches:?}");
    assert_eq!(batches[2].last(), Some(&2), "{batches:?}");
    scheduler.shutdown();
}

#[test]
fn overload_is_refused_with_a_retry_hint_and_oversize_as_too_large() {
    let (scorer, open) = EchoScorer::gated();
    let calls = Arc::clone(&scorer.calls);
    let scheduler =
        Scheduler::spawn(vec![scorer], config(1000, 40), &QueueBudget::new(), None).expect("spawn");
    let first = scheduler.submit(request(1, 2, 6)).expect("20 tokens fit");
    wait_until(|| calls.load(Ordering::SeqCst) == 1);
    let second = scheduler.submit(request(1, 2, 6)).expect("40 tokens fit");
    match scheduler.submit(request(1, 1, 1)) {
        Err(SchedulerError::Overloaded {
            retry_after,
            queued,
            ..
        }) => {
            assert_eq!(queued, 40);
            assert!(retry_after >= Duration::from_secs(1));
        }
        other => panic!("expected overload, got {:?}", other.map(|_| ())),
    }
    assert!(matches!(
        scheduler.submit(request(1, 5, 6)),
        Err(SchedulerError::TooLarge {
            tokens: 50,
            capacity: 40
        })
    ));
    open.send(()).expect("gate");
    open.send(()).expect("gate");
    first.blocking_wait().expect("first");
    second.blocking_wait().expect("second");
    scheduler.shutdown();
}

#[test]
fn abandoned_request_is_never_computed() {
    let (scorer, open) = EchoScorer::gated();
    let calls = Arc::clone(&scorer.calls);
    let scheduler = Scheduler::spawn(vec![scorer], config(10, 10_000), &QueueBudget::new(), None)
        .expect("spawn");
    let first = scheduler.submit(request(1, 1, 3)).expect("queued");
    wait_until(|| calls.load(Ordering::SeqCst) == 1);
    let abandoned = scheduler.submit(request(2, 4, 3)).expect("queued");
    drop(abandoned);
    open.send(()).expect("gate");
    first.blocking_wait().expect("first");
    wait_until(|| scheduler.stats().dropped_requests == 1);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "no batch for the dropped request"
    );
    assert_eq!(scheduler.stats().queued_tokens, 0);
    scheduler.shutdown();
}

#[test]
fn shutdown_answers_what_is_queued_then_refuses() {
    let (scorer, open) = EchoScorer::gated();
    let calls = Arc::clone(&scorer.calls);
    let scheduler = Scheduler::spawn(vec![scorer], config(10, 10_000), &QueueBudget::new(), None)
        .expect("spawn");
    let first = scheduler.submit(request(1, 1, 3)).expect("queued");
    wait_until(|| calls.load(Ordering::SeqCst) == 1);
    let second = scheduler.submit(request(2, 1, 3)).expect("queued");
    scheduler.close();
    assert!(matches!(
        scheduler.submit(request(3, 1, 3)),
        Err(SchedulerError::ShuttingDown)
    ));
    open.send(()).expect("gate");
    open.send(()).expect("gate");
    let stopper = {
        let scheduler = scheduler.clone();
        std::thread::spawn(move || scheduler.shutdown())
    };
    assert!(first.blocking_wait().is_ok());
    assert!(second.blocking_wait().is_ok());
    stopper.join().expect("shutdown");
    assert!(!scheduler.is_running());
}

struct FailingScorer;

impl DeviceModel for FailingScorer {
    type Output = PairScore;

    fn compute(&self, groups: &[PrefixGroup<'_>]) -> Result<Vec<Vec<PairScore>>, EngineError> {
        if groups.iter().any(|g| g.prefix[0] == 7) {
            panic!("boom");
        }
        Err(EngineError::EmptySequence { index: 0 })
    }
}

#[test]
fn scorer_errors_and_panics_reach_the_caller_and_the_thread_survives() {
    let scheduler = Scheduler::spawn(
        vec![FailingScorer],
        config(100, 10_000),
        &QueueBudget::new(),
        None,
    )
    .expect("spawn");
    let panicked = scheduler
        .submit(request(7, 1, 1))
        .expect("queued")
        .blocking_wait();
    assert!(matches!(panicked, Err(SchedulerError::Compute(m)) if m.contains("panicked")));
    let failed = scheduler
        .submit(request(1, 1, 1))
        .expect("queued")
        .blocking_wait();
    assert!(matches!(failed, Err(SchedulerError::Compute(m)) if m.contains("empty")));
    assert!(scheduler.is_running());
    assert_eq!(scheduler.stats().queued_tokens, 0);
    scheduler.shutdown();
}

/// Scores like [`EchoScorer`], counting its batches; or fails every batch as a
/// device error.
struct Replica {
    batches: Arc<AtomicUsize>,
    broken: bool,
}

impl DeviceModel for Replica {
    type Output = PairScore;

    fn compute(&self, groups: &[PrefixGroup<'_>]) -> Result<Vec<Vec<PairScore>>, EngineError> {
        self.batches.fetch_add(1, Ordering::SeqCst);
        // Long enough that concurrent requests find the other replica idle.
        std::thread::sleep(Duration::from_millis(5));
        if self.broken {
            return Err(EngineError::Backend(tessera_backend::BackendError::Device(
                "the device fell off the bus".into(),
            )));
        }
        Ok(groups
            .iter()
            .map(|g| g.documents.iter().map(|d| echo(g.prefix, d)).collect())
            .collect())
    }
}

fn replicas(broken: [bool; 2]) -> (Scheduler, [Arc<AtomicUsize>; 2]) {
    let counts = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
    let scorers = broken
        .iter()
        .zip(&counts)
        .map(|(&broken, batches)| Replica {
            batches: Arc::clone(batches),
            broken,
        })
        .collect();
    let scheduler =
        Scheduler::spawn(scorers, config(8, 10_000), &QueueBudget::new(), None).expect("spawn");
    (scheduler, counts)
}

#[test]
fn replicas_share_one_queue_and_both_compute() {
    let (scheduler, counts) = replicas([false, false]);
    let pending: Vec<Pending> = (0..40)
        .map(|i| scheduler.submit(request(i, 2, 3)).expect("queued"))
        .collect();
    for (i, p) in pending.into_iter().enumerate() {
        let output = p.blocking_wait().expect("scored");
        let want: Vec<PairScore> = request(i as u32, 2, 3)
            .documents
            .iter()
            .map(|d| echo(&[i as u32; 4], d))
            .collect();
        assert_eq!(output.items, want, "request {i}");
    }
    let [a, b] = counts.map(|c| c.load(Ordering::SeqCst));
    assert!(
        a > 0 && b > 0,
        "both replicas computed: {a} and {b} batches"
    );
    let devices = scheduler.devices();
    assert_eq!(devices.len(), 2);
    assert_eq!(
        devices[0].batches as usize + devices[1].batches as usize,
        a + b
    );
    assert!(devices.iter().all(|d| !d.retired && d.busy_seconds > 0.0));
    scheduler.shutdown();
}

#[test]
fn a_failing_device_leaves_rotation_and_the_other_serves_its_requests() {
    let (scheduler, counts) = replicas([true, false]);
    let mut device_errors = 0;
    for i in 0..200 {
        match scheduler
            .submit(request(i, 1, 3))
            .expect("queued")
            .blocking_wait()
        {
            Ok(_) => {}
            Err(SchedulerError::Device(message)) => {
                assert!(message.contains("fell off"));
                device_errors += 1;
            }
            Err(other) => panic!("{other}"),
        }
        if scheduler.devices()[0].retired {
            break;
        }
    }
    let devices = scheduler.devices();
    assert!(
        devices[0].retired,
        "device 0 still in rotation: {devices:?}"
    );
    assert!(devices[0].failure.contains("fell off"));
    assert_eq!(device_errors, DEVICE_FAILURES_UNHEALTHY);
    assert!(scheduler.device_failing().is_none(), "device 1 serves");
    // From now on only device 1 computes, and every request succeeds.
    let broken_batches = counts[0].load(Ordering::SeqCst);
    for i in 0..20 {
        let output = scheduler
            .submit(request(i, 2, 3))
            .expect("queued")
            .blocking_wait();
        assert!(output.is_ok(), "{output:?}");
    }
    assert_eq!(counts[0].load(Ordering::SeqCst), broken_batches);
    assert!(scheduler.is_running());
    scheduler.shutdown();
}

#[test]
fn the_last_device_is_never_retired_but_reported_failing() {
    let (scheduler, _) = replicas([true, true]);
    for i in 0..(4 * DEVICE_FAILURES_UNHEALTHY as u32) {
        let result = scheduler
            .submit(request(i, 1, 3))
            .expect("queued")
            .blocking_wait();
        assert!(matches!(result, Err(SchedulerError::Device(_))));
    }
    let devices = scheduler.devices();
    assert_eq!(
        devices.iter().filter(|d| d.retired).count(),
        1,
        "one left in rotation: {devices:?}"
    );
    assert!(scheduler
        .device_failing()
        .is_some_and(|m| m.contains("fell off")));
    scheduler.shutdown();
}

/// "Embeds" a sequence as its ids as floats: the vector shows exactly which
/// tokens were computed together.
struct EchoEmbedder;

impl DeviceModel for EchoEmbedder {
    type Output = Vec<f32>;

    fn compute(&self, groups: &[PrefixGroup<'_>]) -> Result<Vec<Vec<Vec<f32>>>, EngineError> {
        per_sequence(groups, |sequences| {
            Ok(sequences
                .iter()
                .map(|s| s.iter().map(|&id| id as f32).collect())
                .collect())
        })
    }
}

#[test]
fn an_embedding_model_gets_whole_sequences_back_in_order_across_batches() {
    let scheduler = Scheduler::spawn(
        vec![EchoEmbedder],
        config(5, 1000),
        &QueueBudget::new(),
        None,
    )
    .expect("spawn");
    let request = PackedRequest {
        prefix: vec![9],
        documents: vec![vec![1, 2], vec![3], vec![4, 5, 6], vec![7]],
    };
    let output = scheduler.submit(request).expect("queued").blocking_wait();
    let output = output.expect("embedded");
    // The prefix is prepended to each sequence; a budget of 5 tokens takes
    // several batches, reassembled in input order.
    assert_eq!(
        output.items,
        [
            vec![9.0, 1.0, 2.0],
            vec![9.0, 3.0],
            vec![9.0, 4.0, 5.0, 6.0],
            vec![9.0, 7.0]
        ]
    );
    assert!(output.batches >= 2, "{} batches", output.batches);
    scheduler.shutdown();
}

#[test]
fn schedulers_in_one_budget_refuse_work_when_their_sum_is_full() {
    let (scorer, open) = EchoScorer::gated();
    let budget = QueueBudget::new();
    let scores = Scheduler::spawn(vec![scorer], config(64, 50), &budget, None).expect("spawn");
    let vectors =
        Scheduler::spawn(vec![EchoEmbedder], config(64, 50), &budget, None).expect("spawn");
    // 3 × (4 + 8) = 36 tokens held by the gated scorer.
    let held = scores.submit(request(1, 3, 8)).expect("queued");
    wait_until(|| scores.stats().queued_tokens == 36);
    let too_many = PackedRequest {
        prefix: Vec::new(),
        documents: vec![vec![1; 15]],
    };
    match vectors.submit(too_many) {
        Err(SchedulerError::Overloaded { queued, .. }) => assert_eq!(queued, 36),
        other => panic!("the shared budget should refuse: {:?}", other.map(|_| ())),
    }
    let fits = PackedRequest {
        prefix: Vec::new(),
        documents: vec![vec![1; 14]],
    };
    let vector = vectors.submit(fits).expect("fits beside").blocking_wait();
    assert_eq!(vector.expect("embedded").items[0].len(), 14);
    open.send(()).expect("open");
    held.blocking_wait().expect("scored");
    wait_until(|| budget.0.load(Ordering::Acquire) == 0);
    scores.shutdown();
    vectors.shutdown();
}

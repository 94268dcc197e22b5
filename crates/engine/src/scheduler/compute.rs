//! A compute thread's loop (one per device): take queued requests, fill a batch
//! up to the token budget, score it, hand finished requests their results; when
//! the device is taken out of rotation, hand what it holds back to the queue.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::time::Instant;

use tessera_backend::BackendError;

use super::{
    BatchReport, Computed, DeviceModel, Job, SchedulerError, Shared, DEVICE_FAILURES_UNHEALTHY,
};
use crate::pack::next_pass;
use crate::{EngineError, PrefixGroup};

/// A slice of one active job's documents that goes into the current batch.
struct Slot {
    job: usize,
    start: usize,
    end: usize,
}

pub(super) fn run<S: DeviceModel>(shared: &Shared<S::Output>, scorer: &S, device: usize) {
    // Jobs taken off the shared queue; the front one may be partly done.
    let mut active: VecDeque<Job<S::Output>> = VecDeque::new();
    loop {
        if shared.devices[device].retired.load(Ordering::Acquire) {
            hand_back(shared, active);
            return;
        }
        drop_abandoned(shared, &mut active);
        if !refill(shared, &mut active) {
            return;
        }
        let slots = plan_batch(&active, shared.config.max_batch_tokens);
        score_batch(shared, scorer, device, &mut active, &slots);
    }
}

/// A retired device's jobs go back to the front of the queue, in order, for
/// the devices still serving.
fn hand_back<T>(shared: &Shared<T>, active: VecDeque<Job<T>>) {
    let mut state = shared.lock();
    for job in active.into_iter().rev() {
        state.jobs.push_front(job);
    }
    drop(state);
    shared.wake.notify_all();
}

/// Whether another device than `device` still serves.
fn another_serves<T>(shared: &Shared<T>, device: usize) -> bool {
    shared.devices.iter().enumerate().any(|(i, slot)| {
        i != device
            && !slot.retired.load(Ordering::Acquire)
            && slot.failures.load(Ordering::Acquire) < DEVICE_FAILURES_UNHEALTHY
    })
}

/// Moves queued jobs into `active` until there is a batch's worth of work; blocks
/// while there is none. `false` once closed and everything is answered.
///
/// Short jobs (half a pass or less) queued behind that work join too, up to a
/// pass of them, wherever they are in the queue: [`plan_batch`] puts them in
/// the next pass, so a short request waits about one pass behind a long one,
/// not for all of it.
fn refill<T>(shared: &Shared<T>, active: &mut VecDeque<Job<T>>) -> bool {
    let budget = shared.config.max_batch_tokens;
    let mut have: usize = active.iter().map(Job::tokens_left).sum();
    let mut state = shared.lock();
    loop {
        while have < budget {
            let Some(job) = state.jobs.pop_front() else {
                break;
            };
            if job.abandoned() {
                forget(shared, job);
                continue;
            }
            have += job.tokens_left();
            active.push_back(job);
        }
        let mut short = 0;
        let mut i = 0;
        while i < state.jobs.len() && short < budget {
            let left = state.jobs[i].tokens_left();
            if left > budget / 2 || short + left > budget {
                i += 1;
                continue;
            }
            let Some(job) = state.jobs.remove(i) else {
                break;
            };
            if job.abandoned() {
                forget(shared, job);
                continue;
            }
            short += left;
            active.push_back(job);
        }
        if !active.is_empty() {
            return true;
        }
        if state.closed {
            return false;
        }
        state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
    }
}

fn drop_abandoned<T>(shared: &Shared<T>, active: &mut VecDeque<Job<T>>) {
    let mut kept = VecDeque::with_capacity(active.len());
    for job in active.drain(..) {
        if job.abandoned() {
            forget(shared, job);
        } else {
            kept.push_back(job);
        }
    }
    *active = kept;
}

/// Releases an abandoned job's queue tokens.
fn forget<T>(shared: &Shared<T>, job: Job<T>) {
    shared
        .queued_tokens
        .fetch_sub(job.tokens_left(), Ordering::AcqRel);
    shared.queued_requests.fetch_sub(1, Ordering::AcqRel);
    shared.dropped.fetch_add(1, Ordering::AcqRel);
    shared
        .observer
        .request_dropped(job.request.documents.len() - job.cursor);
}

/// The next pass over the active jobs, up to the token budget; always at least
/// one document.
///
/// Shortest remaining first, so that a short request rides in the next pass
/// instead of waiting for a long one to finish; but the oldest job (the front)
/// keeps at least half of every pass, so a stream of short requests slows it
/// by at most half and never starves it. (Fair share by tokens would need every
/// job in every pass, splitting a short request over as many passes as there
/// are jobs; shortest-first answers it in one.)
fn plan_batch<T>(active: &VecDeque<Job<T>>, budget: usize) -> Vec<Slot> {
    let mut order: Vec<usize> = (0..active.len()).collect();
    // Each job's tokens summed once; ties keep their queue order.
    order.sort_by_cached_key(|&i| active[i].tokens_left());
    if order.first().is_none_or(|&first| first == 0) {
        return pass_over(active, &order, budget);
    }
    // The oldest waits behind shorter ones: they take at most half the pass,
    // it takes what is left.
    order.retain(|&i| i != 0);
    let mut slots = pass_over(active, &order, budget / 2);
    let used: usize = slots.iter().map(|s| slot_tokens(active, s)).sum();
    let oldest = &active[0];
    let taken = fitting(oldest, budget.saturating_sub(used));
    if taken == 0 {
        // Its next document does not fit beside them: this pass is its own.
        return pass_over(active, &[0], budget);
    }
    slots.push(Slot {
        job: 0,
        start: oldest.cursor,
        end: oldest.cursor + taken,
    });
    slots
}

/// [`next_pass`] over the active jobs taken in `order`.
fn pass_over<T>(active: &VecDeque<Job<T>>, order: &[usize], budget: usize) -> Vec<Slot> {
    let queue = order.iter().map(|&i| {
        let job = &active[i];
        let left = &job.request.documents[job.cursor..];
        (job.request.prefix.len(), left.iter().map(Vec::len))
    });
    next_pass(queue, budget)
        .into_iter()
        .zip(order)
        .map(|(taken, &index)| {
            let start = active[index].cursor;
            Slot {
                job: index,
                start,
                end: start + taken,
            }
        })
        .collect()
}

/// Tokens a slot costs: its job's prefix once, plus its documents.
fn slot_tokens<T>(active: &VecDeque<Job<T>>, slot: &Slot) -> usize {
    let request = &active[slot.job].request;
    request.prefix.len()
        + request.documents[slot.start..slot.end]
            .iter()
            .map(Vec::len)
            .sum::<usize>()
}

/// How many of `job`'s next documents fit in `room` tokens (its prefix once).
fn fitting<T>(job: &Job<T>, room: usize) -> usize {
    let prefix = job.request.prefix.len();
    let mut used = 0;
    let mut taken = 0;
    for document in &job.request.documents[job.cursor..] {
        let cost = document.len() + if taken == 0 { prefix } else { 0 };
        if used + cost > room {
            break;
        }
        used += cost;
        taken += 1;
    }
    taken
}

fn score_batch<S: DeviceModel>(
    shared: &Shared<S::Output>,
    scorer: &S,
    device: usize,
    active: &mut VecDeque<Job<S::Output>>,
    slots: &[Slot],
) {
    let groups: Vec<PrefixGroup<'_>> = slots
        .iter()
        .map(|s| {
            let request = &active[s.job].request;
            PrefixGroup {
                prefix: &request.prefix,
                documents: request.documents[s.start..s.end]
                    .iter()
                    .map(Vec::as_slice)
                    .collect(),
            }
        })
        .collect();
    let tokens: usize = groups
        .iter()
        .map(|g| g.prefix.len() + g.documents.iter().map(|d| d.len()).sum::<usize>())
        .sum();
    let documents: usize = slots.iter().map(|s| s.end - s.start).sum();
    let started = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(|| scorer.compute(&groups)));
    let elapsed = started.elapsed();
    drop(groups);

    let result = match outcome {
        Ok(Ok(scores)) if scores.len() == slots.len() => Ok(scores),
        Ok(Ok(scores)) => Err(Failure::Model(format!(
            "the scorer returned {} groups for {}",
            scores.len(),
            slots.len()
        ))),
        Ok(Err(EngineError::Backend(BackendError::Device(message)))) => {
            Err(Failure::Device(message))
        }
        Ok(Err(error)) => Err(Failure::Model(error.to_string())),
        Err(_) => Err(Failure::Model("the scorer panicked".to_string())),
    };
    let slot = &shared.devices[device];
    let mut retired = None;
    match &result {
        Err(Failure::Device(message)) => {
            *slot.last_failure.lock().unwrap_or_else(|e| e.into_inner()) = message.clone();
            let failures = slot.failures.fetch_add(1, Ordering::AcqRel) + 1;
            // Out of rotation while another device serves; the last one keeps
            // trying (and the server reports it failing).
            if failures >= DEVICE_FAILURES_UNHEALTHY && another_serves(shared, device) {
                slot.retired.store(true, Ordering::Release);
                retired = Some(message.clone());
            }
        }
        _ => slot.failures.store(0, Ordering::Release),
    }
    slot.batches.fetch_add(1, Ordering::AcqRel);
    slot.busy_nanos.fetch_add(
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
        Ordering::AcqRel,
    );
    shared.batches.fetch_add(1, Ordering::AcqRel);
    shared.observer.batch_done(&BatchReport {
        device,
        groups: slots.len(),
        documents,
        tokens,
        elapsed,
        failed: result.is_err(),
        prefix_cache: scorer.prefix_cache_stats(),
    });
    if let Some(failure) = retired {
        shared.observer.device_retired(device, &failure);
    }
    if result.is_ok() && elapsed.as_secs_f64() > 0.0 {
        let rate = tokens as f64 / elapsed.as_secs_f64();
        let old = shared.tokens_per_second();
        let smoothed = if old > 0.0 {
            0.8 * old + 0.2 * rate
        } else {
            rate
        };
        shared
            .throughput
            .store(smoothed.to_bits(), Ordering::Relaxed);
    }

    let mut finished = Vec::new();
    match result {
        Ok(scores) => {
            for (slot, group_scores) in slots.iter().zip(scores) {
                let job = &mut active[slot.job];
                if group_scores.len() != slot.end - slot.start {
                    finished.push((
                        slot.job,
                        Some(Failure::Model("the scorer returned too few scores".into())),
                    ));
                    continue;
                }
                let prefix = job.request.prefix.len();
                let done: usize = job.request.documents[slot.start..slot.end]
                    .iter()
                    .map(|d| prefix + d.len())
                    .sum();
                shared.queued_tokens.fetch_sub(done, Ordering::AcqRel);
                job.items.extend(group_scores);
                job.cursor = slot.end;
                job.started.get_or_insert(started);
                job.compute_time += elapsed;
                job.batches += 1;
                if job.cursor == job.request.documents.len() {
                    finished.push((slot.job, None));
                }
            }
        }
        Err(failure) => finished.extend(slots.iter().map(|s| (s.job, Some(failure.clone())))),
    }
    // Remove from the back so earlier indices stay valid.
    finished.sort_by_key(|f| std::cmp::Reverse(f.0));
    for (index, error) in finished {
        if let Some(job) = active.remove(index) {
            answer(shared, job, error);
        }
    }
}

/// Why a batch failed: the device (a retry may succeed: 503) or the model.
#[derive(Clone, Debug)]
enum Failure {
    Device(String),
    Model(String),
}

fn answer<T>(shared: &Shared<T>, job: Job<T>, error: Option<Failure>) {
    shared
        .queued_tokens
        .fetch_sub(job.tokens_left(), Ordering::AcqRel);
    shared.queued_requests.fetch_sub(1, Ordering::AcqRel);
    let result = match error {
        Some(Failure::Device(message)) => Err(SchedulerError::Device(message)),
        Some(Failure::Model(message)) => Err(SchedulerError::Compute(message)),
        None => {
            let started = job.started.unwrap_or(job.submitted);
            Ok(Computed {
                queue_time: started.saturating_duration_since(job.submitted),
                compute_time: job.compute_time,
                batches: job.batches,
                items: job.items,
            })
        }
    };
    if job.reply.send(result).is_err() {
        // The caller left while its last batch ran.
        shared.dropped.fetch_add(1, Ordering::AcqRel);
        shared.observer.request_dropped(0);
    } else {
        shared.completed.fetch_add(1, Ordering::AcqRel);
    }
}

//! Where requests are tokenised: at most `threads` at once, each on a blocking
//! thread, so a burst of requests cannot start hundreds of tokenising threads
//! before the queue budget (which counts tokens, known only afterwards) has
//! admitted any of them. The others wait for a turn on the async runtime,
//! holding no thread; their number is a gauge beside the busy threads'.

use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Semaphore;

use crate::ServiceError;

/// The gauges the pool keeps: threads tokenising now, their most since the
/// start, and requests waiting for a thread.
#[derive(Clone, Default)]
pub struct PoolGauges {
    pub busy: Gauge,
    pub busy_peak: Gauge,
    pub waiting: Gauge,
}

pub struct TokenizePool {
    turns: Arc<Semaphore>,
    gauges: PoolGauges,
}

/// Decrements a gauge when dropped: a waiting request whose client leaves
/// stops counting, whichever way its future ends.
struct Counted(Gauge);

impl Counted {
    fn new(gauge: &Gauge) -> Counted {
        gauge.inc();
        Counted(gauge.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl TokenizePool {
    /// A pool of `threads` (at least 1).
    pub fn new(threads: usize, gauges: PoolGauges) -> TokenizePool {
        TokenizePool {
            turns: Arc::new(Semaphore::new(threads.max(1))),
            gauges,
        }
    }

    /// Runs `work` on a blocking thread once one of the pool's turns is free.
    pub async fn run<T, F>(&self, work: F) -> Result<T, ServiceError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let waiting = Counted::new(&self.gauges.waiting);
        let turn = Arc::clone(&self.turns)
            .acquire_owned()
            .await
            .map_err(|_| ServiceError::NotReady)?;
        drop(waiting);
        let gauges = self.gauges.clone();
        tokio::task::spawn_blocking(move || {
            // The turn is held until the work is done, even if the request
            // that asked for it has gone: the thread is busy either way.
            let _turn = turn;
            let _busy = Counted::new(&gauges.busy);
            gauges
                .busy_peak
                .inner()
                .fetch_max(gauges.busy.get(), std::sync::atomic::Ordering::AcqRel);
            work()
        })
        .await
        .map_err(|e| ServiceError::TaskFailed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn no_more_threads_than_turns_however_many_ask() {
        let gauges = PoolGauges::default();
        let pool = Arc::new(TokenizePool::new(2, gauges.clone()));
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let pool = Arc::clone(&pool);
                tokio::spawn(async move {
                    pool.run(move || {
                        std::thread::sleep(Duration::from_millis(5));
                        i * 2
                    })
                    .await
                })
            })
            .collect();
        let mut sum = 0;
        for task in tasks {
            sum += task.await.expect("joined").expect("ran");
        }
        assert_eq!(sum, (0..64).map(|i| i * 2).sum::<i64>());
        assert_eq!(
            gauges.busy_peak.get(),
            2,
            "two turns, so two threads at most"
        );
        assert_eq!(gauges.busy.get(), 0);
        assert_eq!(gauges.waiting.get(), 0);
    }
}

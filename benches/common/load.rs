//! Load shapes for the request-rate benchmarks: a closed loop of N clients, an open loop at a
//! fixed rate (latency measured from when each request was due, so a stall counts against the
//! server, not the schedule), and the median and range of repeated runs.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The median of repeated runs with their lowest and highest.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    pub median: f64,
    pub low: f64,
    pub high: f64,
}

impl Spread {
    pub fn of(mut values: Vec<f64>) -> Spread {
        values.sort_by(f64::total_cmp);
        Spread { median: values[values.len() / 2], low: values[0], high: values[values.len() - 1] }
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digits = if self.median < 10.0 { 2 } else { 0 };
        write!(f, "{:.*} ({:.*}–{:.*})", digits, self.median, digits, self.low, digits, self.high)
    }
}

/// Runs `op(0..count)` with `clients` in flight; returns the wall time.
pub async fn closed_loop<F, Fut>(count: usize, clients: usize, op: F) -> Duration
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (next, op) = (next.clone(), op.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    op(i).await;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("worker");
    }
    started.elapsed()
}

/// Operations per second of `count` operations that took `took`.
pub fn rate(count: usize, took: Duration) -> f64 {
    count as f64 / took.as_secs_f64()
}

/// Starts `op(i)` at `per_second` for `length`, each on a task of its own, with at most
/// `in_flight` running at once (as a browser or a CDN caps its connections to a host: the rest
/// wait their turn), and returns every latency, measured from when the operation was due, so
/// that waiting counts against the server.
pub async fn open_loop<F, Fut>(per_second: f64, length: Duration, in_flight: usize, op: F) -> Vec<Duration>
where
    F: Fn(usize) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let count = (per_second * length.as_secs_f64()) as usize;
    let interval = Duration::from_secs_f64(1.0 / per_second);
    let started = tokio::time::Instant::now();
    let turns = Arc::new(tokio::sync::Semaphore::new(in_flight.max(1)));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let due = started + interval * i as u32;
        tokio::time::sleep_until(due).await;
        let (request, turns) = (op(i), turns.clone());
        tasks.push(tokio::spawn(async move {
            let _turn = turns.acquire_owned().await.expect("the semaphore is never closed");
            request.await;
            due.elapsed()
        }));
    }
    let mut latencies = Vec::with_capacity(count);
    for task in tasks {
        latencies.push(task.await.expect("request"));
    }
    latencies
}

/// The `p`-th percentile (0 to 100) of `latencies`.
pub fn percentile(latencies: &mut [Duration], p: f64) -> Duration {
    latencies.sort();
    let at = ((latencies.len() as f64 * p / 100.0).ceil() as usize).clamp(1, latencies.len());
    latencies[at - 1]
}

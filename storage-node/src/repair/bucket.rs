//! The copy rate limit: a token bucket in bytes, and a stream of pack bytes that waits on it.
//! The bucket is shared by every copy of one repairer, so the limit holds for the node as a
//! whole, not per pack.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};

/// A token bucket: `rate` bytes per second, at most one second's worth saved up.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `rate` bytes per second (at least one byte per second).
    pub fn new(rate: u64, now: Instant) -> Self {
        let rate = rate.max(1) as f64;
        TokenBucket { rate, capacity: rate, tokens: rate, last: now }
    }

    /// Takes `bytes` at `now`, and says how long to wait before sending them (zero while the
    /// bucket holds enough). The bucket may go into debt: the wait pays it back.
    pub fn take(&mut self, bytes: usize, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-self.tokens / self.rate) }
    }
}

/// A bucket shared by the copies of one repairer.
pub type SharedBucket = Arc<Mutex<TokenBucket>>;

/// `stream`, each piece passed on only once `bucket` allows it.
pub fn throttle(
    stream: impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static,
    bucket: SharedBucket,
) -> impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static {
    stream.then(move |piece| {
        let bucket = bucket.clone();
        async move {
            if let Ok(bytes) = &piece {
                let now = Instant::now();
                let wait = bucket.lock().unwrap_or_else(PoisonError::into_inner).take(bytes.len(), now);
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
            piece
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_lets_a_second_through_then_makes_the_rest_wait_at_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1000, start);
        assert_eq!(bucket.take(600, start), Duration::ZERO);
        assert_eq!(bucket.take(400, start), Duration::ZERO, "a second's worth saved up");
        assert_eq!(bucket.take(500, start), Duration::from_millis(500), "in debt: half a second");
        // Half a second later the debt is paid; the next 1000 bytes take a second.
        let later = start + Duration::from_millis(500);
        assert_eq!(bucket.take(1000, later), Duration::from_secs(1));
    }

    #[test]
    fn an_idle_bucket_saves_up_no_more_than_a_second() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1000, start);
        let much_later = start + Duration::from_secs(60);
        assert_eq!(bucket.take(1000, much_later), Duration::ZERO);
        assert_eq!(bucket.take(1000, much_later), Duration::from_secs(1));
        let rate_zero = TokenBucket::new(0, start).take(2, start);
        assert_eq!(rate_zero, Duration::from_secs(1), "a rate of 0 is 1 byte/s, not a division by zero");
    }

    #[tokio::test]
    async fn a_throttled_stream_takes_as_long_as_its_bytes_at_the_rate() {
        let bucket = Arc::new(Mutex::new(TokenBucket::new(10_000, Instant::now())));
        let pieces = (0..4).map(|_| Ok(Bytes::from(vec![0u8; 5_000])));
        let started = Instant::now();
        let sent: Vec<_> = throttle(futures::stream::iter(pieces), bucket).collect().await;
        assert_eq!(sent.len(), 4);
        // 20 kB at 10 kB/s with 10 kB saved up: about a second of waiting.
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "{took:?}");
    }
}

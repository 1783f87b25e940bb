//! The key cache's listener: one dedicated catalog connection per node that `LISTEN`s on
//! [`super::CHANNEL`], applies the notices as they arrive, and proves every
//! [`super::CONFIRM_EVERY`] that it is up to date by a probe that must come back; on a loss it
//! clears the cache and connects again.

use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::StreamExt;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use super::{CHANNEL, CONFIRM_EVERY, KeyCache, MAX_RECONNECT_AFTER, RECONNECT_AFTER, TRUSTED_FOR};

impl KeyCache {
    /// The listener: connects, listens, confirms, and starts again after a loss, until `stop`.
    /// A connection that never proved itself (a catalog that is down, or a pooler through which
    /// notices do not come back) is tried again less and less often, up to every 30 s.
    pub(super) async fn follow(self, config: tokio_postgres::Config, stop: CancellationToken) {
        let mut delay = RECONNECT_AFTER;
        loop {
            let outcome = tokio::select! {
                outcome = self.listen_once(&config) => outcome,
                () = stop.cancelled() => Ok(()),
            };
            let was_trusted = self.state().confirmed.is_some();
            self.lost();
            if stop.is_cancelled() {
                return;
            }
            self.counts.losses.fetch_add(1, Ordering::Relaxed);
            delay = if was_trusted { RECONNECT_AFTER } else { (delay * 2).min(MAX_RECONNECT_AFTER) };
            match outcome {
                Err(err) => tracing::warn!(
                    error = %crate::catalog::describe(&err),
                    "the access-key cache lost its catalog connection; keys are read from the catalog until it is back"
                ),
                Ok(()) if was_trusted => tracing::warn!(
                    "the access-key cache's catalog connection stalled; keys are read from the catalog until a new one listens"
                ),
                Ok(()) => tracing::warn!(
                    "the access-key cache's own notice did not come back through its catalog connection \
                     (a transaction-pooling proxy drops LISTEN); the cache stays off and keys are read from the catalog"
                ),
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stop.cancelled() => return,
            }
        }
    }

    /// One listening connection, for as long as it proves itself.
    async fn listen_once(&self, config: &tokio_postgres::Config) -> Result<(), tokio_postgres::Error> {
        let (client, mut connection) = config.connect(NoTls).await?;
        // This connection's own channel, for the probes that prove it receives notices.
        let probe = format!("{CHANNEL}_probe_{:016x}", rand::random::<u64>());
        let (probed_tx, probed) = tokio::sync::watch::channel(0u64);
        let cache = self.clone();
        let own = probe.clone();
        // The connection's messages are read here: notices applied, probes' numbers passed on.
        let mut driver = tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                if let AsyncMessage::Notification(notice) = message? {
                    if notice.channel() == own {
                        probed_tx.send_replace(notice.payload().parse().unwrap_or_default());
                    } else {
                        cache.invalidate(notice.payload());
                    }
                }
            }
            Ok::<(), tokio_postgres::Error>(())
        });
        let listened = client.batch_execute(&format!("LISTEN {CHANNEL}; LISTEN {probe}")).await;
        let outcome = match listened {
            Ok(()) => self.confirm_while_alive(&client, &probe, probed, &mut driver).await,
            Err(err) => Err(err),
        };
        driver.abort();
        outcome
    }

    /// Every [`CONFIRM_EVERY`], notifies the connection's own probe channel and waits for that
    /// notice to come back: the notices of the catalog are delivered in commit order, so once
    /// it is back every revocation committed before it was sent has been applied. Ends when a
    /// query fails, the connection ends, or a probe is not back within [`TRUSTED_FOR`].
    async fn confirm_while_alive(
        &self,
        client: &tokio_postgres::Client,
        probe: &str,
        mut probed: tokio::sync::watch::Receiver<u64>,
        driver: &mut tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    ) -> Result<(), tokio_postgres::Error> {
        let mut fresh = true;
        for number in 1u64.. {
            let sent = Instant::now();
            let round_trip = async {
                client.batch_execute(&format!("NOTIFY {probe}, '{number}'")).await?;
                Ok::<bool, tokio_postgres::Error>(probed.wait_for(|back| *back >= number).await.is_ok())
            };
            tokio::select! {
                answered = tokio::time::timeout(TRUSTED_FOR, round_trip) => match answered {
                    Ok(Ok(true)) => self.confirm(sent, std::mem::take(&mut fresh)),
                    Ok(Err(err)) => return Err(err),
                    Ok(Ok(false)) | Err(_) => return Ok(()),
                },
                ended = &mut *driver => return ended.unwrap_or(Ok(())),
            }
            tokio::select! {
                () = tokio::time::sleep(CONFIRM_EVERY) => {}
                ended = &mut *driver => return ended.unwrap_or(Ok(())),
            }
        }
        Ok(())
    }
}

//! Watching a running local instance and restarting it when it dies.
//!
//! The supervisor checks the postmaster every half second. When it is gone, the health turns
//! [`InstanceHealth::Down`] at once (so `/readyz` answers 503), and the supervisor restarts the
//! instance with a backoff. If every attempt fails it returns [`InstanceError::GaveUp`] and the
//! process exits non-zero: Silo never stays up half-alive.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{InstanceError, LocalInstance, log_tail};

const CHECK_INTERVAL: Duration = Duration::from_millis(500);
const RESTART_BACKOFF: [Duration; 5] = [
    Duration::from_millis(200),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];

/// The health of a supervised instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceHealth {
    /// Running, with this postmaster pid.
    Up { pid: u32 },
    /// Not running; a restart is under way.
    Down { reason: String },
    /// Restarts failed; the supervisor has given up.
    Failed { reason: String },
}

/// A running supervisor: its health feed, its restart counter and its task.
#[derive(Debug)]
pub struct SupervisorHandle {
    /// The current health, updated on every change.
    pub health: watch::Receiver<InstanceHealth>,
    /// How many times the instance has been restarted after dying.
    pub restarts: Arc<AtomicU64>,
    /// Ends with `Ok` on cancellation, or [`InstanceError::GaveUp`].
    pub task: JoinHandle<Result<(), InstanceError>>,
}

/// Supervises `instance`, which runs as `pid`, until `shutdown` is cancelled.
pub fn supervise(instance: Arc<LocalInstance>, pid: u32, shutdown: CancellationToken) -> SupervisorHandle {
    let (tx, health) = watch::channel(InstanceHealth::Up { pid });
    let restarts = Arc::new(AtomicU64::new(0));
    let counter = restarts.clone();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(CHECK_INTERVAL) => {}
            }
            if instance.running_pid().is_some() {
                continue;
            }
            let tail = log_tail(&instance.log_path(), 5);
            tracing::error!(server_log = %tail, "Postgres exited unexpectedly; restarting it");
            let _ =
                tx.send(InstanceHealth::Down { reason: "Postgres exited unexpectedly; restarting".into() });
            match restart(&instance, &shutdown).await {
                Ok(Some(pid)) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(pid, "Postgres restarted");
                    let _ = tx.send(InstanceHealth::Up { pid });
                }
                Ok(None) => return Ok(()),
                Err(err) => {
                    tracing::error!(error = %err, "giving up on Postgres");
                    let _ = tx.send(InstanceHealth::Failed { reason: err.to_string() });
                    return Err(err);
                }
            }
        }
    });
    SupervisorHandle { health, restarts, task }
}

/// Tries to start the instance again with backoff. `Ok(None)` means shutdown came first.
async fn restart(
    instance: &Arc<LocalInstance>,
    shutdown: &CancellationToken,
) -> Result<Option<u32>, InstanceError> {
    let mut last = String::new();
    for (attempt, delay) in RESTART_BACKOFF.iter().enumerate() {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = tokio::time::sleep(*delay) => {}
        }
        let starting = instance.clone();
        match tokio::task::spawn_blocking(move || starting.start()).await {
            Ok(Ok(pid)) => return Ok(Some(pid)),
            Ok(Err(err)) => {
                tracing::warn!(attempt = attempt + 1, error = %err, "Postgres restart failed");
                last = err.to_string();
            }
            Err(join) => last = join.to_string(),
        }
    }
    Err(InstanceError::GaveUp { attempts: RESTART_BACKOFF.len() as u32, last })
}

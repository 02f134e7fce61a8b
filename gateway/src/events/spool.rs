//! A durable local spool for dual-write events that Kafka did not take:
//! one file per event, fsync'd (file and directory) before the caller gets
//! its response, re-published in order by a background task.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::{OutgoingEvent, Publisher};
use crate::metrics::Metrics;

const MAGIC: &[u8] = b"GWSPOOL1\n";
const EXT: &str = "event";
/// Events re-published concurrently per pass.
const BATCH: usize = 256;

/// Why an event could not be spooled.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// `spool.max_events` reached.
    #[error("spool is full ({0} events)")]
    Full(usize),
    /// Disk or filesystem failure.
    #[error("spool write failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The spool directory and its bookkeeping.
pub struct Spool {
    dir: PathBuf,
    max_events: usize,
    depth: AtomicUsize,
    wake: Notify,
}

impl Spool {
    /// Opens (creating if needed) the spool directory and counts what is in it.
    pub fn open(dir: &Path, max_events: usize) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let depth = list(dir)?.len();
        Ok(Self {
            dir: dir.to_path_buf(),
            max_events,
            depth: AtomicUsize::new(depth),
            wake: Notify::new(),
        })
    }

    /// Events waiting to be re-published.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    /// Writes the event durably. Returns once it is on disk.
    pub async fn put(&self, event: &OutgoingEvent) -> Result<(), SpoolError> {
        let depth = self.depth.fetch_add(1, Ordering::AcqRel);
        if depth >= self.max_events {
            self.depth.fetch_sub(1, Ordering::AcqRel);
            return Err(SpoolError::Full(self.max_events));
        }
        let dir = self.dir.clone();
        let event = event.clone();
        let written = tokio::task::spawn_blocking(move || write_event(&dir, &event))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r);
        match written {
            Ok(()) => {
                self.wake.notify_one();
                Ok(())
            }
            Err(e) => {
                self.depth.fetch_sub(1, Ordering::AcqRel);
                Err(SpoolError::Io(e))
            }
        }
    }

    /// One pass: re-publishes up to a batch of spooled events, oldest first,
    /// deleting each once Kafka acknowledged it. Returns how many went out
    /// and whether any failed.
    pub async fn drain_once(&self, publisher: &Publisher, metrics: &Metrics) -> (usize, bool) {
        let files = match list(&self.dir) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "cannot list spool");
                return (0, true);
            }
        };
        let batch: Vec<_> = files.into_iter().take(BATCH).collect();
        let mut loaded = Vec::with_capacity(batch.len());
        for path in batch {
            match read_event(&path) {
                Ok(ev) => loaded.push((path, ev)),
                Err(e) => {
                    // Never delete what cannot be read: park it for a human.
                    tracing::error!(file = %path.display(), error = %e, "unreadable spool file, moved aside");
                    let _ = std::fs::rename(&path, path.with_extension("corrupt"));
                    self.depth.fetch_sub(1, Ordering::AcqRel);
                    metrics
                        .events_lost
                        .with_label_values(&["spool_corrupt"])
                        .inc();
                }
            }
        }
        let results =
            futures::future::join_all(loaded.iter().map(|(_, ev)| publisher.publish(ev))).await;
        let mut sent = 0;
        let mut failed = false;
        for ((path, ev), result) in loaded.iter().zip(results) {
            match result {
                Ok(_) => {
                    if let Err(e) = std::fs::remove_file(path) {
                        tracing::error!(file = %path.display(), error = %e, "published but cannot delete spool file; it will be published again");
                        continue;
                    }
                    self.depth.fetch_sub(1, Ordering::AcqRel);
                    metrics
                        .events_republished
                        .with_label_values(&[&ev.route])
                        .inc();
                    sent += 1;
                }
                Err(e) if !e.retryable() => {
                    // Kafka will never take it: park it for a human rather
                    // than block everything queued behind it.
                    tracing::error!(file = %path.display(), topic = %ev.topic, error = %e, "spooled event rejected by Kafka, moved aside");
                    let _ = std::fs::rename(path, path.with_extension("rejected"));
                    self.depth.fetch_sub(1, Ordering::AcqRel);
                    metrics
                        .events_lost
                        .with_label_values(&["rejected_by_kafka"])
                        .inc();
                }
                Err(e) => {
                    failed = true;
                    tracing::debug!(topic = %ev.topic, error = %e, "spooled event still not accepted");
                }
            }
        }
        metrics
            .spool_depth
            .set(i64::try_from(self.depth()).unwrap_or(i64::MAX));
        (sent, failed)
    }

    /// Runs forever: drains whenever something is spooled, and retries at
    /// `interval` while Kafka refuses.
    pub async fn run(self: Arc<Self>, publisher: Publisher, metrics: Metrics, interval: Duration) {
        loop {
            if self.depth() == 0 {
                self.wake.notified().await;
            }
            let (sent, failed) = self.drain_once(&publisher, &metrics).await;
            if sent > 0 {
                tracing::info!(sent, left = self.depth(), "re-published spooled events");
            }
            if failed || sent == 0 {
                tokio::time::sleep(interval).await;
            }
        }
    }
}

fn list(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == EXT))
        .collect();
    files.sort();
    Ok(files)
}

fn write_event(dir: &Path, event: &OutgoingEvent) -> std::io::Result<()> {
    // Time-ordered names keep re-publication in arrival order.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let name = format!("{nanos:024}-{}", event.id);
    let tmp = dir.join(format!("{name}.tmp"));
    let header = serde_json::to_vec(event).map_err(std::io::Error::other)?;
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(MAGIC)?;
        f.write_all(&header)?;
        f.write_all(b"\n")?;
        f.write_all(&event.payload)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(format!("{name}.{EXT}")))?;
    std::fs::File::open(dir)?.sync_all()
}

fn read_event(path: &Path) -> std::io::Result<OutgoingEvent> {
    let bytes = std::fs::read(path)?;
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| std::io::Error::other("bad magic"))?;
    let nl = rest
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| std::io::Error::other("no header"))?;
    let mut event: OutgoingEvent =
        serde_json::from_slice(&rest[..nl]).map_err(std::io::Error::other)?;
    event.payload = rest[nl + 1..].to_vec();
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> OutgoingEvent {
        OutgoingEvent::new(
            "r",
            "t",
            "com.shop.X",
            "k".into(),
            vec![0, 0, 0, 0, 1, 2, 3, b'\n', 4],
            &super::super::EventContext::default(),
        )
    }

    #[tokio::test]
    async fn spooled_event_survives_reopen_byte_for_byte() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ev = event();
        {
            let spool = Spool::open(dir.path(), 10).expect("open");
            spool.put(&ev).await.expect("put");
            assert_eq!(spool.depth(), 1);
        }
        let spool = Spool::open(dir.path(), 10).expect("reopen");
        assert_eq!(spool.depth(), 1);
        let files = list(dir.path()).expect("list");
        assert_eq!(read_event(&files[0]).expect("read"), ev);
    }

    #[tokio::test]
    async fn full_spool_refuses_loudly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path(), 1).expect("open");
        spool.put(&event()).await.expect("first fits");
        assert!(matches!(
            spool.put(&event()).await,
            Err(SpoolError::Full(1))
        ));
        assert_eq!(spool.depth(), 1);
    }
}

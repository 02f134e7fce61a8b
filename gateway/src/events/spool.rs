//! A durable local spool for dual-write events that Kafka did not take:
//! one file per event, fsync'd (file and directory) before the caller gets
//! its response, re-published by a background task, oldest first and
//! strictly in order per (topic, key).
//!
//! File names carry a sequence number (not the wall clock), so replay order
//! is arrival order; an in-memory index built once at open avoids listing
//! the directory on every pass. All file I/O runs on the blocking pool.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use super::{OutgoingEvent, Publisher};
use crate::metrics::Metrics;

const MAGIC: &[u8] = b"GWSPOOL1\n";
const EXT: &str = "event";
/// Events looked at per re-publish pass.
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

#[derive(Default)]
struct Index {
    /// Spooled files by sequence number.
    files: BTreeMap<u64, PathBuf>,
    /// Writes under way (they count against `max_events`).
    pending: usize,
}

/// The spool directory and its bookkeeping.
pub struct Spool {
    dir: PathBuf,
    max_events: usize,
    index: Mutex<Index>,
    next_seq: AtomicU64,
    wake: Notify,
}

impl Spool {
    /// Opens (creating if needed) the spool directory, removes half-written
    /// files a crash left behind, and indexes what is there.
    pub fn open(dir: &Path, max_events: usize) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            match path.extension().and_then(|e| e.to_str()) {
                // Never renamed into place, so never acknowledged to anyone.
                Some("tmp") => std::fs::remove_file(&path)?,
                Some(EXT) => match sequence_of(&path) {
                    Some(seq) => {
                        files.insert(seq, path);
                    }
                    None => {
                        tracing::error!(file = %path.display(), "spool file with an unknown name, moved aside");
                        std::fs::rename(&path, path.with_extension("corrupt"))?;
                    }
                },
                _ => {}
            }
        }
        let next = files.keys().next_back().map_or(0, |s| s + 1);
        Ok(Self {
            dir: dir.to_path_buf(),
            max_events,
            index: Mutex::new(Index { files, pending: 0 }),
            next_seq: AtomicU64::new(next),
            wake: Notify::new(),
        })
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (single inserts/removes), so a poisoned lock is still usable.
        self.index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Calls `f` with every event waiting in the spool, oldest first.
    /// Blocking file I/O: call it from the blocking pool.
    pub fn for_each(&self, mut f: impl FnMut(&OutgoingEvent)) {
        let files: Vec<PathBuf> = self.index().files.values().cloned().collect();
        for path in files {
            match read_event(&path) {
                Ok(event) => f(&event),
                // Re-published and removed meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "unreadable spool file")
                }
            }
        }
    }

    /// Events waiting to be re-published.
    pub fn depth(&self) -> usize {
        self.index().files.len()
    }

    /// Writes the event durably. Returns once it is on disk.
    pub async fn put(&self, event: &OutgoingEvent) -> Result<(), SpoolError> {
        {
            let mut index = self.index();
            if index.files.len() + index.pending >= self.max_events {
                return Err(SpoolError::Full(self.max_events));
            }
            index.pending += 1;
        }
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("{seq:020}-{}.{EXT}", event.id));
        let (dir, target, event) = (self.dir.clone(), path.clone(), event.clone());
        let written = tokio::task::spawn_blocking(move || write_event(&dir, &target, &event))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r);
        let mut index = self.index();
        index.pending -= 1;
        written?;
        index.files.insert(seq, path);
        drop(index);
        self.wake.notify_one();
        Ok(())
    }

    /// One pass over the oldest events: each (topic, key) is re-published in
    /// order and stops at its first retryable failure; different keys go out
    /// concurrently. Returns how many were delivered and whether any failed.
    pub async fn drain_once(&self, publisher: &Publisher, metrics: &Metrics) -> (usize, bool) {
        let batch: Vec<(u64, PathBuf)> = self
            .index()
            .files
            .iter()
            .take(BATCH)
            .map(|(s, p)| (*s, p.clone()))
            .collect();
        if batch.is_empty() {
            return (0, false);
        }
        let loaded = blocking(move || {
            batch
                .into_iter()
                .map(|(seq, path)| {
                    let event = read_event(&path);
                    (seq, path, event)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();

        let mut groups: Vec<Vec<(u64, PathBuf, OutgoingEvent)>> = Vec::new();
        let mut group_of: HashMap<(String, String), usize> = HashMap::new();
        for (seq, path, event) in loaded {
            match event {
                Ok(ev) => {
                    let k = (ev.topic.clone(), ev.key.clone());
                    let g = *group_of.entry(k).or_insert_with(|| {
                        groups.push(Vec::new());
                        groups.len() - 1
                    });
                    groups[g].push((seq, path, ev));
                }
                Err(e) => {
                    // Never delete what cannot be read: park it for a human.
                    tracing::error!(file = %path.display(), error = %e, "unreadable spool file, moved aside");
                    self.set_aside(seq, path, "corrupt").await;
                    metrics
                        .events_lost
                        .with_label_values(&["spool_corrupt"])
                        .inc();
                }
            }
        }

        let outcomes = futures::future::join_all(
            groups
                .into_iter()
                .map(|group| self.publish_group(group, publisher, metrics)),
        )
        .await;
        let sent = outcomes.iter().map(|(n, _)| n).sum();
        let failed = outcomes.iter().any(|(_, f)| *f);
        metrics
            .spool_depth
            .set(i64::try_from(self.depth()).unwrap_or(i64::MAX));
        (sent, failed)
    }

    async fn publish_group(
        &self,
        group: Vec<(u64, PathBuf, OutgoingEvent)>,
        publisher: &Publisher,
        metrics: &Metrics,
    ) -> (usize, bool) {
        let mut sent = 0;
        for (seq, path, event) in group {
            let span = crate::telemetry::record_span(
                "republish",
                &event.topic,
                &event.topic,
                &event.headers,
            );
            match tracing::Instrument::instrument(publisher.publish(&event), span).await {
                Ok(_) => {
                    let p = path.clone();
                    if let Some(Err(e)) = blocking(move || std::fs::remove_file(&p)).await {
                        tracing::error!(file = %path.display(), error = %e, "published but cannot delete spool file; it will be published again after a restart");
                    }
                    self.index().files.remove(&seq);
                    metrics
                        .events_republished
                        .with_label_values(&[&event.route])
                        .inc();
                    sent += 1;
                }
                Err(e) if !e.retryable() => {
                    // Kafka will never take it: park it rather than block the
                    // events queued behind it.
                    tracing::error!(file = %path.display(), topic = %event.topic, error = %e, "spooled event rejected by Kafka, moved aside");
                    self.set_aside(seq, path, "rejected").await;
                    metrics
                        .events_lost
                        .with_label_values(&["rejected_by_kafka"])
                        .inc();
                }
                Err(e) => {
                    tracing::debug!(topic = %event.topic, error = %e, "spooled event still not accepted");
                    return (sent, true);
                }
            }
        }
        (sent, false)
    }

    async fn set_aside(&self, seq: u64, path: PathBuf, ext: &'static str) {
        let p = path.clone();
        if let Some(Err(e)) = blocking(move || std::fs::rename(&p, p.with_extension(ext))).await {
            tracing::error!(file = %path.display(), error = %e, "cannot move spool file aside; skipped until restart");
        }
        self.index().files.remove(&seq);
    }

    /// Runs forever: drains whenever something is spooled, and pauses
    /// `interval` only after a pass that delivered nothing.
    pub async fn run(self: Arc<Self>, publisher: Publisher, metrics: Metrics, interval: Duration) {
        loop {
            if self.depth() == 0 {
                self.wake.notified().await;
            }
            let (sent, _failed) = self.drain_once(&publisher, &metrics).await;
            if sent > 0 {
                tracing::info!(sent, left = self.depth(), "re-published spooled events");
            } else {
                tokio::time::sleep(interval).await;
            }
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

fn sequence_of(path: &Path) -> Option<u64> {
    path.file_name()?.to_str()?.split('-').next()?.parse().ok()
}

fn write_event(dir: &Path, target: &Path, event: &OutgoingEvent) -> std::io::Result<()> {
    let tmp = target.with_extension("tmp");
    let header = serde_json::to_vec(event).map_err(std::io::Error::other)?;
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(MAGIC)?;
        f.write_all(&header)?;
        f.write_all(b"\n")?;
        f.write_all(&event.payload)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, target)?;
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
mod tests;

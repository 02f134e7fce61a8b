//! `kafka.bootstrap = "embedded"`: librdkafka's in-process mock cluster, for
//! development and fast tests. It keeps everything in memory.

use std::sync::mpsc;
use std::thread;

/// A running mock cluster. It lives on its own thread (the handle is not
/// `Send`) until this value is dropped.
pub struct EmbeddedKafka {
    bootstrap: String,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl EmbeddedKafka {
    /// Starts a one-broker mock cluster with `topics` created (3 partitions
    /// each); other topics are auto-created on first use.
    pub fn start(topics: Vec<String>) -> Result<Self, String> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name("embedded-kafka".into())
            .spawn(move || match rdkafka::mocking::MockCluster::new(1) {
                Ok(cluster) => {
                    for topic in &topics {
                        if let Err(e) = cluster.create_topic(topic, 3, 1) {
                            tracing::warn!(topic, error = %e, "embedded Kafka: cannot create topic");
                        }
                    }
                    let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                    // Blocks until the sender is dropped.
                    let _ = stop_rx.recv();
                    drop(cluster);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                }
            })
            .map_err(|e| e.to_string())?;
        let bootstrap = ready_rx
            .recv()
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("embedded Kafka did not start: {e}"))?;
        Ok(Self {
            bootstrap,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The cluster's `bootstrap.servers`.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }
}

impl Drop for EmbeddedKafka {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

//! `kafka.bootstrap = "embedded"`: librdkafka's in-process mock cluster, for
//! development and fast tests. It keeps everything in memory.

use std::sync::mpsc;
use std::thread;

/// A running mock cluster. It lives on its own thread (the handle is not
/// `Send`) until this value is dropped.
pub struct EmbeddedKafka {
    bootstrap: String,
    commands: Option<mpsc::Sender<Command>>,
    thread: Option<thread::JoinHandle<()>>,
}

/// What the cluster's thread can be asked to do.
enum Command {
    /// Take the broker down (`true`) or bring it back (`false`), then reply.
    Down(bool, mpsc::Sender<Result<(), String>>),
}

impl EmbeddedKafka {
    /// Starts a one-broker mock cluster with `topics` created (3 partitions
    /// each); other topics are auto-created on first use.
    pub fn start(topics: Vec<String>) -> Result<Self, String> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (commands_tx, commands_rx) = mpsc::channel::<Command>();
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
                    // Serves commands until the sender is dropped.
                    while let Ok(command) = commands_rx.recv() {
                        match command {
                            Command::Down(down, reply) => {
                                let r = if down {
                                    cluster.broker_down(1)
                                } else {
                                    cluster.broker_up(1)
                                };
                                let _ = reply.send(r.map_err(|e| e.to_string()));
                            }
                        }
                    }
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
            commands: Some(commands_tx),
            thread: Some(thread),
        })
    }

    /// The cluster's `bootstrap.servers`.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Takes the (single) broker down, or brings it back up: clients get
    /// connection errors meanwhile. For fault injection in the demo and in
    /// tests.
    pub fn set_down(&self, down: bool) -> Result<(), String> {
        let (tx, rx) = mpsc::channel();
        self.commands
            .as_ref()
            .ok_or("the cluster is stopped")?
            .send(Command::Down(down, tx))
            .map_err(|_| "the cluster's thread is gone".to_string())?;
        rx.recv()
            .map_err(|_| "the cluster's thread is gone".to_string())?
    }
}

impl Drop for EmbeddedKafka {
    fn drop(&mut self) {
        drop(self.commands.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

use super::*;
use crate::config::KafkaConfig;
use crate::events::embedded::EmbeddedKafka;
use crate::events::EventContext;

fn event(key: &str, n: u8) -> OutgoingEvent {
    OutgoingEvent::new(
        "r",
        "spool.test",
        "com.shop.X",
        key.into(),
        vec![0, 0, 0, 0, 1, n, b'\n', 4],
        &EventContext::default(),
    )
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn spooled_events_survive_reopen_byte_for_byte_in_arrival_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (event("k", 1), event("k", 2));
    {
        let spool = Spool::open(dir.path(), 10).expect("open");
        spool.put(&a).await.expect("put");
        spool.put(&b).await.expect("put");
        assert_eq!(spool.depth(), 2);
    }
    std::fs::write(dir.path().join("00000000000000000009-x.tmp"), b"half").expect("tmp");
    let spool = Spool::open(dir.path(), 10).expect("reopen");
    assert_eq!(spool.depth(), 2);
    assert!(
        files(dir.path(), "tmp").is_empty(),
        "crash leftovers are removed"
    );
    let on_disk = files(dir.path(), EXT);
    assert_eq!(read_event(&on_disk[0]).expect("read"), a);
    assert_eq!(read_event(&on_disk[1]).expect("read"), b);
    // New events continue the sequence after the existing ones.
    spool.put(&event("k", 3)).await.expect("put");
    assert_eq!(sequence_of(&files(dir.path(), EXT)[2]), Some(2));
}

#[tokio::test]
async fn full_spool_refuses_loudly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path(), 1).expect("open");
    spool.put(&event("k", 1)).await.expect("first fits");
    assert!(matches!(
        spool.put(&event("k", 2)).await,
        Err(SpoolError::Full(1))
    ));
    assert_eq!(spool.depth(), 1);
}

#[tokio::test]
async fn drain_publishes_in_order_deletes_and_parks_unreadable_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path(), 100).expect("open");
    for n in 0..5 {
        spool
            .put(&event(if n % 2 == 0 { "even" } else { "odd" }, n))
            .await
            .expect("put");
    }
    std::fs::write(
        dir.path().join("00000000000000000099-bad.event"),
        b"garbage",
    )
    .expect("write");
    let spool = Spool::open(dir.path(), 100).expect("reopen");
    assert_eq!(spool.depth(), 6);

    let kafka = EmbeddedKafka::start(vec!["spool.test".into()]).expect("embedded kafka");
    let config = KafkaConfig {
        bootstrap: kafka.bootstrap().to_string(),
        publish_timeout_ms: 5_000,
        queue_max_messages: 1_000,
        properties: Default::default(),
        control_topic: "c".into(),
        audit_topic: "a".into(),
        operations_topic: "o".into(),
        shadow_topic: "s".into(),
        canary_figures_topic: "f".into(),
        control_replication_factor: 1,
        security: Default::default(),
    };
    let publisher = Publisher::new(&config, kafka.bootstrap()).expect("producer");
    let metrics = Metrics::new();
    let (sent, failed) = spool.drain_once(&publisher, &metrics).await;
    assert_eq!((sent, failed), (5, false));
    assert_eq!(spool.depth(), 0);
    assert!(files(dir.path(), EXT).is_empty());
    assert_eq!(files(dir.path(), "corrupt").len(), 1);
    assert_eq!(
        metrics.events_republished.with_label_values(&["r"]).get(),
        5
    );
    assert_eq!(
        metrics
            .events_lost
            .with_label_values(&["spool_corrupt"])
            .get(),
        1
    );

    // Per key, Kafka holds the events in the order they were spooled.
    let mut by_key: HashMap<String, Vec<u8>> = HashMap::new();
    for (key, payload) in read_all(kafka.bootstrap(), "spool.test", 5) {
        by_key.entry(key).or_default().push(payload[5]);
    }
    assert_eq!(by_key["even"], vec![0, 2, 4]);
    assert_eq!(by_key["odd"], vec![1, 3]);
}

fn read_all(bootstrap: &str, topic: &str, expected: usize) -> Vec<(String, Vec<u8>)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "spool-test")
        .create()
        .expect("consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    while out.len() < expected && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            out.push((key, m.payload().unwrap_or_default().to_vec()));
        }
    }
    out
}

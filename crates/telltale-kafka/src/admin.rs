//! Topic administration: the engine creates its output topics when they are missing, and tests
//! create their input topics.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use crate::Error;
use crate::config::Connection;

/// Wakes the thread that blocks on a future.
struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future to completion on this thread (rdkafka's admin calls complete from librdkafka's
/// own threads, so no async runtime is needed).
pub fn block_on<F: Future>(f: F) -> F::Output {
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

/// Names of the topics the cluster has.
pub fn topic_names(conn: &Connection) -> Result<Vec<String>, Error> {
    let consumer: BaseConsumer = conn.client_config(&[], &[])?.create()?;
    let md = consumer.fetch_metadata(None, Duration::from_secs(10))?;
    Ok(md.topics().iter().map(|t| t.name().to_owned()).collect())
}

/// Creates each `(name, partitions)` topic that does not exist yet, with `replication` copies
/// (`None`: the broker's default); existing ones are left alone.
pub fn ensure_topics(
    conn: &Connection,
    topics: &[(&str, i32)],
    replication: Option<u16>,
) -> Result<(), Error> {
    let replication = replication.map_or(-1, i32::from);
    let existing = topic_names(conn)?;
    let missing: Vec<NewTopic<'_>> = topics
        .iter()
        .filter(|(name, _)| !existing.iter().any(|e| e == name))
        .map(|(name, partitions)| {
            NewTopic::new(name, *partitions, TopicReplication::Fixed(replication))
        })
        .collect();
    create(conn, &missing, "topic")
}

/// Creates `topics` (one that exists by now is left alone); `what` names them in the log.
fn create(conn: &Connection, topics: &[NewTopic<'_>], what: &str) -> Result<(), Error> {
    if topics.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = conn.client_config(&[], &[])?.create()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in block_on(admin.create_topics(topics, &opts))? {
        match r {
            Ok(name) => tracing::info!(target: "telltale::kafka", "created {what} {name}"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(Error::Kafka(rdkafka::error::KafkaError::AdminOp(code)))
                    .inspect_err(|_| tracing::error!("cannot create {what} {name}: {code}"));
            }
        }
    }
    Ok(())
}

/// Creates the compacted topic `name` with `partitions` when it does not exist yet (an existing
/// one is left alone).
pub fn ensure_compacted_topic(
    conn: &Connection,
    name: &str,
    partitions: i32,
    replication: Option<u16>,
) -> Result<(), Error> {
    if topic_names(conn)?.iter().any(|e| e == name) {
        return Ok(());
    }
    let replication = replication.map_or(-1, i32::from);
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replication))
        .set("cleanup.policy", "compact");
    create(conn, &[topic], "compacted topic")
}

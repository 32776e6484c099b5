//! [`Log`] on a Fluvio cluster (cargo feature `fluvio`): topics with computed partitions,
//! records placed by the reader's own partitioner (the partition travels in the record key),
//! named consumers with manual offsets, committed and flushed only through what was delivered.

use std::collections::HashMap;
use std::sync::Arc;

use fluvio::consumer::{ConsumerConfigExtBuilder, ConsumerStream, OffsetManagementStrategy};
use fluvio::metadata::partition::PartitionSpec;
use fluvio::metadata::topic::TopicSpec;
use fluvio::{Fluvio, FluvioClusterConfig, Offset, TopicProducerConfigBuilder, TopicProducerPool};
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use tokio::sync::Mutex;

use super::log::{Log, LogError, LogResult, PartitionReader, Read};

fn err(what: &str, e: impl std::fmt::Display) -> LogError {
    LogError(format!("fluvio: {what}: {e}"))
}

/// Places each record in the partition its key names (the reader chose it).
struct Explicit;

impl fluvio::Partitioner for Explicit {
    fn partition(
        &self,
        config: &fluvio::PartitionerConfig,
        key: Option<&[u8]>,
        _value: &[u8],
    ) -> fluvio::PartitionId {
        key.and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| k.parse::<u32>().ok())
            .filter(|p| *p < config.partition_count)
            .unwrap_or(0)
    }
}

/// A Fluvio cluster.
pub struct FluvioLog {
    fluvio: Fluvio,
    producers: Mutex<HashMap<String, Arc<TopicProducerPool>>>,
    /// Bytes a consumer fetch asks for at most (Fluvio's default when None).
    max_bytes: Option<i32>,
}

impl FluvioLog {
    /// Connects to the cluster's public endpoint (`host:port`).
    pub async fn connect(endpoint: &str) -> LogResult<Self> {
        Self::connect_with(FluvioClusterConfig::new(endpoint)).await
    }

    /// Connects as `[fluvio]` says: its endpoint, over TLS when `[fluvio.tls]` is set.
    pub async fn connect_to(cfg: &crate::config::FluvioCfg) -> LogResult<Self> {
        let config = FluvioClusterConfig::new(&cfg.endpoint);
        let Some(tls) = &cfg.tls else {
            return Self::connect_with(config).await;
        };
        #[cfg(feature = "fluvio-tls")]
        {
            let paths = fluvio::config::TlsPaths {
                domain: tls.domain.clone(),
                key: tls.key.clone(),
                cert: tls.cert.clone(),
                ca_cert: tls.ca_cert.clone(),
            };
            Self::connect_with(config.with_tls(paths)).await
        }
        #[cfg(not(feature = "fluvio-tls"))]
        {
            let _ = (config, tls);
            Err(LogError(format!(
                "[fluvio.tls] for {}: this odoo-cdc was built without TLS to Fluvio; build it with `--features fluvio-tls`",
                cfg.endpoint
            )))
        }
    }

    async fn connect_with(config: FluvioClusterConfig) -> LogResult<Self> {
        let endpoint = config.endpoint.clone();
        let fluvio = Fluvio::connect_with_config(&config)
            .await
            .map_err(|e| err(&format!("cannot connect to {endpoint}"), e))?;
        Ok(Self {
            fluvio,
            producers: Mutex::new(HashMap::new()),
            max_bytes: None,
        })
    }

    /// Consumer fetches of at most `bytes` (tests make the 0.50.1 bug bite with a small one).
    pub fn max_bytes(mut self, bytes: i32) -> Self {
        self.max_bytes = Some(bytes);
        self
    }

    async fn create_topic(&self, topic: &str, partitions: u32) -> LogResult<u32> {
        let admin = self.fluvio.admin().await;
        let found = admin
            .list::<TopicSpec, String>(vec![topic.to_string()])
            .await
            .map_err(|e| err("listing topics", e))?;
        // The SC's filter matches names loosely: the one named exactly so.
        if let Some(t) = found.iter().find(|t| t.name == topic) {
            return Ok(t.spec.partitions());
        }
        admin
            .create(
                topic.to_string(),
                false,
                TopicSpec::new_computed(partitions, 1, None),
            )
            .await
            .map_err(|e| err(&format!("creating {topic}"), e))?;
        Ok(partitions)
    }

    /// Every topic's partition count, for `odoo-cdc fluvio status`.
    pub async fn topics(&self) -> LogResult<Vec<(String, u32)>> {
        let admin = self.fluvio.admin().await;
        let all = admin
            .all::<TopicSpec>()
            .await
            .map_err(|e| err("listing topics", e))?;
        Ok(all
            .into_iter()
            .map(|t| (t.name, t.spec.partitions()))
            .collect())
    }

    /// Deletes `topic` with its records and offsets (`odoo-cdc demo --scale-out` removes the
    /// topics it made).
    pub async fn delete_topic(&self, topic: &str) -> LogResult<()> {
        self.producers.lock().await.remove(topic);
        self.fluvio
            .admin()
            .await
            .delete::<TopicSpec>(topic.to_string())
            .await
            .map_err(|e| err(&format!("deleting {topic}"), e))
    }

    /// Every consumer's committed offsets: (consumer, topic, partition, offset).
    pub async fn consumer_offsets(&self) -> LogResult<Vec<(String, String, u32, i64)>> {
        let offsets = self
            .fluvio
            .consumer_offsets()
            .await
            .map_err(|e| err("reading consumer offsets", e))?;
        Ok(offsets
            .into_iter()
            .map(|o| (o.consumer_id, o.topic, o.partition, o.offset))
            .collect())
    }

    /// A stream of one partition for the consumer (manual offsets), from `from` or from its
    /// committed offset + 1.
    async fn stream(
        &self,
        topic: &str,
        partition: u32,
        consumer: &str,
        from: Option<i64>,
    ) -> LogResult<Stream> {
        let start = match from {
            Some(n) => Offset::absolute(n).map_err(|e| err("offset", e))?,
            None => Offset::beginning(),
        };
        let mut b = ConsumerConfigExtBuilder::default();
        b.topic(topic.to_string())
            .partition(partition)
            .offset_consumer(consumer.to_string())
            .offset_start(start)
            .offset_strategy(OffsetManagementStrategy::Manual);
        if let Some(m) = self.max_bytes {
            b.max_bytes(m);
        }
        let config = b.build().map_err(|e| err("consumer config", e))?;
        let stream = self
            .fluvio
            .consumer_with_config(config)
            .await
            .map_err(|e| err(&format!("reading {topic}/{partition}"), e))?;
        Ok(Box::new(stream))
    }

    async fn producer(&self, topic: &str) -> LogResult<Arc<TopicProducerPool>> {
        let mut g = self.producers.lock().await;
        if let Some(p) = g.get(topic) {
            return Ok(p.clone());
        }
        let config = TopicProducerConfigBuilder::default()
            .partitioner(Arc::new(Explicit))
            .build()
            .map_err(|e| err("producer config", e))?;
        let p = Arc::new(
            self.fluvio
                .topic_producer_with_config(topic.to_string(), config)
                .await
                .map_err(|e| err(&format!("producer for {topic}"), e))?,
        );
        g.insert(topic.to_string(), p.clone());
        Ok(p)
    }
}

impl Log for FluvioLog {
    fn partitions<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, LogResult<u32>> {
        Box::pin(async move {
            let admin = self.fluvio.admin().await;
            let found = admin
                .list::<TopicSpec, String>(vec![topic.to_string()])
                .await
                .map_err(|e| err("listing topics", e))?;
            found
                .iter()
                .find(|t| t.name == topic)
                .map(|t| t.spec.partitions())
                .ok_or_else(|| LogError(format!("fluvio: no topic {topic}")))
        })
    }

    fn ensure_topic<'a>(
        &'a self,
        topic: &'a str,
        partitions: u32,
    ) -> BoxFuture<'a, LogResult<u32>> {
        Box::pin(self.create_topic(topic, partitions))
    }

    fn append<'a>(
        &'a self,
        topic: &'a str,
        records: Vec<(u32, Vec<u8>)>,
    ) -> BoxFuture<'a, LogResult<()>> {
        Box::pin(async move {
            let producer = self.producer(topic).await?;
            let mut outputs = Vec::with_capacity(records.len());
            for (p, value) in records {
                let out = producer
                    .send(p.to_string(), value)
                    .await
                    .map_err(|e| err(&format!("sending to {topic}"), e));
                match out {
                    Ok(o) => outputs.push(o),
                    Err(e) => {
                        // A producer that failed keeps its error: start afresh next time.
                        self.producers.lock().await.remove(topic);
                        return Err(e);
                    }
                }
            }
            if let Err(e) = producer.flush().await {
                self.producers.lock().await.remove(topic);
                return Err(err(&format!("flushing {topic}"), e));
            }
            // Acknowledged by the SPU, each one.
            for o in outputs {
                if let Err(e) = o.wait().await {
                    self.producers.lock().await.remove(topic);
                    return Err(err(&format!("acknowledgement from {topic}"), e));
                }
            }
            Ok(())
        })
    }

    fn open<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        consumer: &'a str,
        from: Option<i64>,
    ) -> BoxFuture<'a, LogResult<Box<dyn PartitionReader>>> {
        Box::pin(async move {
            let stream = self.stream(topic, partition, consumer, from).await?;
            Ok(Box::new(Reader { stream }) as Box<dyn PartitionReader>)
        })
    }

    fn commit_at<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        consumer: &'a str,
        offset: i64,
    ) -> BoxFuture<'a, LogResult<()>> {
        Box::pin(async move {
            // Fluvio commits the last record a stream yielded: a stream of the consumer that
            // yields exactly the record at `offset`, committed and flushed (acknowledged).
            let mut stream = self
                .stream(topic, partition, consumer, Some(offset))
                .await?;
            match tokio::time::timeout(std::time::Duration::from_secs(10), stream.next()).await {
                Ok(Some(Ok(r))) if r.offset() == offset => {}
                Ok(Some(Ok(r))) => {
                    return Err(LogError(format!(
                        "fluvio: committing {topic}/{partition} at {offset}: the stream yielded {} first",
                        r.offset()
                    )))
                }
                Ok(Some(Err(e))) => return Err(err("reading the record to commit", e)),
                Ok(None) | Err(_) => {
                    return Err(LogError(format!(
                        "fluvio: committing {topic}/{partition} at {offset}: no record there"
                    )))
                }
            }
            stream
                .offset_commit()
                .await
                .map_err(|e| err("committing the offset", e))?;
            stream
                .offset_flush()
                .await
                .map_err(|e| err("flushing the offset", e))
        })
    }

    fn committed<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        consumer: &'a str,
    ) -> BoxFuture<'a, LogResult<Option<i64>>> {
        Box::pin(async move {
            Ok(self
                .consumer_offsets()
                .await?
                .into_iter()
                .find(|(c, t, p, _)| c == consumer && t == topic && *p == partition)
                .map(|(_, _, _, o)| o))
        })
    }

    fn end<'a>(&'a self, topic: &'a str, partition: u32) -> BoxFuture<'a, LogResult<i64>> {
        Box::pin(async move {
            // The SC's view of the partition: its leader's high watermark (what consumers
            // can read), refreshed by the SPU every few seconds.
            let admin = self.fluvio.admin().await;
            let name = format!("{topic}-{partition}");
            let found = admin
                .list::<PartitionSpec, String>(vec![name.clone()])
                .await
                .map_err(|e| err(&format!("status of {name}"), e))?;
            found
                .iter()
                .find(|p| p.name == name)
                .map(|p| p.status.leader.hw)
                .ok_or_else(|| LogError(format!("fluvio: no partition {name}")))
        })
    }
}

type Stream = Box<dyn ConsumerStream + Send>;

struct Reader {
    stream: Stream,
}

impl PartitionReader for Reader {
    fn next(&mut self) -> BoxFuture<'_, Option<LogResult<Read>>> {
        Box::pin(async move {
            match self.stream.next().await? {
                Ok(r) => Some(Ok((r.offset(), r.value().to_vec()))),
                Err(e) => Some(Err(err("reading", e))),
            }
        })
    }
}

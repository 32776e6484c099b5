//! Scale-out: `odoo-cdc run --role reader` writes the slot's events to the `[fluvio]` topics,
//! `odoo-cdc run --role worker --sinks shopify,wms [--partitions 0-3]` delivers them, and
//! `odoo-cdc fluvio status` shows topics, partitions, committed offsets and lag. Fluvio needs
//! the cargo feature `fluvio`; without it the roles say how to build it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::config::Config;
use crate::runtime::log::{topic_of, Log, LogPublisher, LogSubscription, Route, Subscribe};
use crate::runtime::{Shared, SinkStats};

/// What one `odoo-cdc run` process does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Everything in one process, on the in-process transport.
    All,
    /// The slot into the topics, and the webhooks (write-back into Odoo).
    Reader,
    /// Sink workers on the topics.
    Worker {
        /// The sinks this process delivers for (every configured one when empty).
        sinks: Vec<String>,
        /// The partitions it owns (all when None).
        partitions: Option<Vec<u32>>,
    },
}

/// Reads `0-3,6` as partitions 0, 1, 2, 3 and 6.
pub fn parse_partitions(text: &str) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: u32 = a
            .trim()
            .parse()
            .with_context(|| format!("--partitions {text:?}: {a:?} is not a partition number"))?;
        let b: u32 = b
            .trim()
            .parse()
            .with_context(|| format!("--partitions {text:?}: {b:?} is not a partition number"))?;
        if b < a {
            bail!("--partitions {text:?}: {a}-{b} runs backwards");
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    if out.is_empty() {
        bail!("--partitions {text:?}: no partition given");
    }
    Ok(out)
}

/// The cluster of `[fluvio]`.
pub async fn connect(cfg: &Config) -> Result<Arc<dyn Log>> {
    let Some(f) = &cfg.fluvio else {
        bail!("scale-out needs a [fluvio] section with the cluster's endpoint");
    };
    #[cfg(feature = "fluvio")]
    {
        let log = crate::runtime::fluvio_log::FluvioLog::connect_to(f)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Arc::new(log))
    }
    #[cfg(not(feature = "fluvio"))]
    {
        bail!(
            "[fluvio] {}: this odoo-cdc was built without Fluvio; build it with `cargo build --release -p pipeline --features fluvio`",
            f.endpoint
        )
    }
}

/// The reader's half: one route per sink (the sinks are built for their `wants` and keys and
/// never started here; Shopify's guard runs where the Shopify worker runs).
pub async fn publisher(
    cfg: &Config,
    log: Arc<dyn Log>,
    sinks: Vec<Box<dyn sinks::Sink>>,
    shared: Arc<Shared>,
) -> Result<LogPublisher> {
    let Some(f) = &cfg.fluvio else {
        bail!("--role reader needs a [fluvio] section with the cluster's endpoint");
    };
    let mut routes = Vec::new();
    for s in sinks {
        let topic = topic_of(&f.topic_prefix, s.name());
        let n = log
            .ensure_topic(&topic, f.partitions)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        tracing::info!(sink = s.name(), %topic, partitions = n, "publishing to the log");
        routes.push(Route::new(s, topic, n));
    }
    Ok(LogPublisher::new(log, routes).reporting(shared))
}

/// Holds the partitions a worker owns: a session advisory lock per (topic, partition) on a
/// connection of its own. Two workers never own one partition; a worker whose connection
/// drops has lost them and stops.
struct Ownership {
    client: tokio_postgres::Client,
}

impl Ownership {
    async fn take(source: &cdc::SourceConfig, owned: &[(String, Vec<u32>)]) -> Result<Self> {
        let client = source
            .sql_client()
            .await
            .context("connecting to hold the partitions")?;
        for (topic, partitions) in owned {
            for p in partitions {
                let got: bool = client
                    .query_one(
                        "SELECT pg_try_advisory_lock(hashtext('odoo-cdc partition ' || $1), $2::int)",
                        &[topic, &i32::try_from(*p).unwrap_or(i32::MAX)],
                    )
                    .await?
                    .get(0);
                if !got {
                    bail!("partition {p} of {topic} is owned by another worker: give each worker its own --partitions");
                }
            }
        }
        Ok(Self { client })
    }

    async fn lost(&self) -> bool {
        self.client.is_closed() || self.client.simple_query("SELECT 1").await.is_err()
    }
}

/// The two workers `odoo-cdc demo --scale-out` and the `scale-out` benchmark run: Shopify's
/// sinks (inventory and fulfillments) in one, the WMS and the books in the other.
pub const TWO_WORKERS: [&[&str]; 2] = [&["shopify", "shopify_fulfillment"], &["wms", "accounting"]];

/// What one worker delivers: some of the configured sinks (all when empty), some partitions
/// of their topics (all when None).
#[derive(Debug, Clone, Default)]
pub struct Assignment {
    /// The sinks, by name.
    pub sinks: Vec<String>,
    /// The partitions.
    pub partitions: Option<Vec<u32>>,
}

/// `odoo-cdc run --role worker`: delivers the topics' events to the chosen sinks until `stop`.
pub async fn run_worker(
    cfg: Config,
    source: cdc::SourceConfig,
    log: Arc<dyn Log>,
    assignment: Assignment,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let state = crate::state::StateDb::connect(&source)
        .await
        .context("connecting for odoo-cdc's state")?;
    crate::state::migrate(&*state.client().await?).await?;
    let shared = Arc::new(Shared {
        state: Some(state.clone()),
        unready_after_secs: cfg.runtime.unready_after_secs.into(),
        ..Shared::default()
    });
    let _health = super::run::serve_health(&cfg, &shared).await?;
    deliver(&cfg, &source, shared, log, assignment, stop).await
}

/// A worker on `shared` (whose state database it uses): takes its partitions, delivers them
/// until `stop`, then what it took, and returns.
pub async fn deliver(
    cfg: &Config,
    source: &cdc::SourceConfig,
    shared: Arc<Shared>,
    log: Arc<dyn Log>,
    assignment: Assignment,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let Some(f) = cfg.fluvio.clone() else {
        bail!("--role worker needs a [fluvio] section with the cluster's endpoint");
    };
    let Some(state) = shared.state.clone() else {
        bail!("a worker needs odoo-cdc's state database");
    };
    let Assignment {
        sinks: only,
        partitions,
    } = assignment;
    let mut sinks = super::run::build_sinks(cfg, &state)
        .await?
        .into_runtime(&shared);
    let known: Vec<&'static str> = sinks.iter().map(|s| s.name()).collect();
    for name in &only {
        if !known.contains(&name.as_str()) {
            bail!(
                "--sinks {name}: not a configured sink (configured: {})",
                known.join(", ")
            );
        }
    }
    if !only.is_empty() {
        sinks.retain(|s| only.iter().any(|n| n == s.name()));
    }
    let mut owned = Vec::new();
    let names: Vec<&'static str> = sinks.iter().map(|s| s.name()).collect();
    for name in names {
        let topic = topic_of(&f.topic_prefix, name);
        // The reader creates the topics: a worker started first waits for them.
        let mut waited = std::time::Instant::now();
        let n = loop {
            match log.partitions(&topic).await {
                Ok(n) => break n,
                Err(e) => {
                    if waited.elapsed() >= Duration::from_secs(10) {
                        tracing::warn!(%topic, error = %e, "waiting for the reader to create the topic");
                        waited = std::time::Instant::now();
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        let mine = match &partitions {
            Some(p) => {
                if let Some(bad) = p.iter().find(|p| **p >= n) {
                    bail!("--partitions: {topic} has {n} partitions, no partition {bad}");
                }
                p.clone()
            }
            None => (0..n).collect(),
        };
        owned.push((topic, mine));
    }
    let ownership = Ownership::take(source, &owned).await?;
    let mut tasks = Vec::new();
    if sinks.iter().any(|s| s.name() == "shopify") {
        // The inbox runs with the reader: its orders reach this guard through the state
        // database (LISTEN/NOTIFY), and their fences are passed by the records' LSNs.
        tasks.push(tokio::spawn(crate::writeback::inbox::feed_guard(
            state.clone(),
            shared.guard.clone(),
        )));
    }
    for (sink, (topic, mine)) in sinks.into_iter().zip(owned) {
        let name = sink.name();
        tracing::info!(sink = name, %topic, partitions = ?mine, "delivering from the log");
        let stats = Arc::new(SinkStats::new(&shared.metrics, name));
        let sub = LogSubscription::start(
            log.clone(),
            Subscribe {
                topic,
                consumer: format!("{}-{name}", f.consumer_prefix),
                partitions: mine,
                read_ahead: 256,
            },
            stats.clone(),
            shared.progress.clone(),
        )
        .await;
        tasks.push(crate::runtime::worker::spawn_worker(
            sink,
            &shared,
            stats,
            Duration::from_secs(cfg.runtime.max_hold_secs),
            cfg.runtime.partitions,
            Box::new(sub),
        ));
    }
    shared.set_replication(None);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep(Duration::from_secs(2)) => {
                if ownership.lost().await {
                    for t in &tasks {
                        t.abort();
                    }
                    bail!("the connection holding this worker's partitions was lost: stopping so no other worker shares them (it starts again and takes them back)");
                }
            }
        }
    }
    // Graceful: what was taken is delivered (offsets are committed after delivery only, so
    // anything cut short is delivered again by the next start).
    shared
        .stopping
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !shared.quiet() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for t in &tasks {
        t.abort();
    }
    Ok(())
}

/// `odoo-cdc fluvio status`: every odoo-cdc topic with its partitions, and per partition each
/// consumer's committed offset and lag (records after it).
pub async fn status(cfg: &Config, out: &mut impl std::io::Write) -> Result<()> {
    let Some(f) = &cfg.fluvio else {
        bail!("no [fluvio] section");
    };
    #[cfg(feature = "fluvio")]
    {
        let log = crate::runtime::fluvio_log::FluvioLog::connect_to(f)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let topics = log.topics().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let offsets = log
            .consumer_offsets()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        writeln!(out, "topic\tpartition\tend\tconsumer\tcommitted\tlag")?;
        for (topic, n) in topics
            .iter()
            .filter(|(t, _)| t.starts_with(&format!("{}-", f.topic_prefix)))
        {
            for p in 0..*n {
                let end = log
                    .end(topic, p)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let mine: Vec<_> = offsets
                    .iter()
                    .filter(|(_, t, q, _)| t == topic && *q == p)
                    .collect();
                if mine.is_empty() {
                    writeln!(out, "{topic}\t{p}\t{end}\t-\t-\t{end}")?;
                }
                for (c, _, _, o) in mine {
                    writeln!(
                        out,
                        "{topic}\t{p}\t{end}\t{c}\t{o}\t{}",
                        (end - o - 1).max(0)
                    )?;
                }
            }
        }
        Ok(())
    }
    #[cfg(not(feature = "fluvio"))]
    {
        let _ = out;
        bail!(
            "[fluvio] {}: this odoo-cdc was built without Fluvio; build it with `cargo build --release -p pipeline --features fluvio`",
            f.endpoint
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_ranges_and_lists_and_bad_ones_are_named() {
        assert_eq!(parse_partitions("0-3").unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(parse_partitions("5, 0-1,1").unwrap(), vec![0, 1, 5]);
        let e = parse_partitions("3-1").unwrap_err().to_string();
        assert!(e.contains("backwards"), "{e}");
        let e = parse_partitions("a-2").unwrap_err().to_string();
        assert!(e.contains("\"a\""), "{e}");
        assert!(parse_partitions("").is_err());
    }
}

//! A log in memory with Fluvio's shape and faults: partitions with contiguous offsets, named
//! consumers with committed offsets,
//! and injected failures — appends refused, streams cut, and fluvio 0.50.1's lost records
//! (a fetch cut at `max_bytes` jumps over records). It is the fake the seam's tests and the
//! benchmark run on where no Fluvio cluster can.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::Notify;

use super::log::{Log, LogError, LogResult, PartitionReader, Read};

/// Faults to inject.
#[derive(Debug, Default, Clone)]
pub struct LogFaults {
    /// The next this many appends fail (nothing of them is written).
    pub fail_appends: u64,
    /// A stream that has yielded this many records ends (the client reconnects).
    pub cut_streams_after: Option<u64>,
    /// fluvio 0.50.1's bug: a stream that started more than this many bytes behind the end
    /// jumps over one record each time a fetch of that many bytes is full.
    pub skip_at_max_bytes: Option<usize>,
}

#[derive(Default)]
struct Topic {
    partitions: Vec<Vec<Vec<u8>>>,
}

#[derive(Default)]
struct Inner {
    topics: HashMap<String, Topic>,
    /// (consumer, topic, partition) -> committed offset.
    committed: HashMap<(String, String, u32), i64>,
    faults: LogFaults,
}

/// The log.
#[derive(Clone, Default)]
pub struct MemoryLog {
    inner: Arc<Mutex<Inner>>,
    appended: Arc<Notify>,
    /// Records skipped by the injected bug.
    pub skipped: Arc<AtomicU64>,
    down: Arc<AtomicBool>,
}

impl MemoryLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates `topic` with `partitions` (again: nothing changes).
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        if let Ok(mut g) = self.inner.lock() {
            g.topics.entry(topic.to_string()).or_insert_with(|| Topic {
                partitions: vec![Vec::new(); partitions.max(1) as usize],
            });
        }
    }

    /// Sets the faults.
    pub fn set_faults(&self, faults: LogFaults) {
        if let Ok(mut g) = self.inner.lock() {
            g.faults = faults;
        }
    }

    /// Makes every call fail (the cluster unreachable) or answer again.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        self.appended.notify_waiters();
    }

    /// The records of one partition.
    pub fn records(&self, topic: &str, partition: u32) -> Vec<Vec<u8>> {
        self.inner
            .lock()
            .ok()
            .and_then(|g| {
                g.topics
                    .get(topic)
                    .and_then(|t| t.partitions.get(partition as usize).cloned())
            })
            .unwrap_or_default()
    }

    fn check_up(&self) -> LogResult<()> {
        if self.down.load(Ordering::SeqCst) {
            Err(LogError("the log is unreachable (injected)".into()))
        } else {
            Ok(())
        }
    }
}

fn lock(inner: &Mutex<Inner>) -> LogResult<std::sync::MutexGuard<'_, Inner>> {
    inner
        .lock()
        .map_err(|_| LogError("the log's lock is poisoned".into()))
}

impl Log for MemoryLog {
    fn partitions<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, LogResult<u32>> {
        Box::pin(async move {
            self.check_up()?;
            let g = lock(&self.inner)?;
            g.topics
                .get(topic)
                .map(|t| t.partitions.len() as u32)
                .ok_or_else(|| LogError(format!("no topic {topic}")))
        })
    }

    fn ensure_topic<'a>(
        &'a self,
        topic: &'a str,
        partitions: u32,
    ) -> BoxFuture<'a, LogResult<u32>> {
        Box::pin(async move {
            self.check_up()?;
            self.create_topic(topic, partitions);
            self.partitions(topic).await
        })
    }

    fn append<'a>(
        &'a self,
        topic: &'a str,
        records: Vec<(u32, Vec<u8>)>,
    ) -> BoxFuture<'a, LogResult<()>> {
        Box::pin(async move {
            self.check_up()?;
            {
                let mut g = lock(&self.inner)?;
                if g.faults.fail_appends > 0 {
                    g.faults.fail_appends -= 1;
                    return Err(LogError("append refused (injected)".into()));
                }
                let t = g
                    .topics
                    .get_mut(topic)
                    .ok_or_else(|| LogError(format!("no topic {topic}")))?;
                let n = t.partitions.len() as u32;
                if let Some((p, _)) = records.iter().find(|(p, _)| *p >= n) {
                    return Err(LogError(format!("{topic} has no partition {p}")));
                }
                for (p, r) in records {
                    t.partitions[p as usize].push(r);
                }
            }
            self.appended.notify_waiters();
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
            self.check_up()?;
            let g = lock(&self.inner)?;
            if g.topics
                .get(topic)
                .and_then(|t| t.partitions.get(partition as usize))
                .is_none()
            {
                return Err(LogError(format!("no partition {topic}/{partition}")));
            }
            let start = from.unwrap_or_else(|| {
                g.committed
                    .get(&(consumer.to_string(), topic.to_string(), partition))
                    .map_or(0, |c| c + 1)
            });
            let faults = g.faults.clone();
            // The bug bites a consumer that starts far behind (a backlog of several fetches).
            let behind: usize = g
                .topics
                .get(topic)
                .map(|t| {
                    t.partitions[partition as usize]
                        .iter()
                        .skip(usize::try_from(start).unwrap_or(0))
                        .map(Vec::len)
                        .sum()
                })
                .unwrap_or(0);
            let skip_every = faults.skip_at_max_bytes.filter(|m| behind > *m);
            Ok(Box::new(MemReader {
                log: self.clone(),
                topic: topic.to_string(),
                partition,
                next: start.max(0),
                yielded: 0,
                cut_after: faults.cut_streams_after,
                skip_every,
                fetched_bytes: 0,
                skip_next: false,
            }) as Box<dyn PartitionReader>)
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
            self.check_up()?;
            let mut g = lock(&self.inner)?;
            g.committed
                .insert((consumer.to_string(), topic.to_string(), partition), offset);
            Ok(())
        })
    }

    fn committed<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        consumer: &'a str,
    ) -> BoxFuture<'a, LogResult<Option<i64>>> {
        Box::pin(async move {
            self.check_up()?;
            let g = lock(&self.inner)?;
            Ok(g.committed
                .get(&(consumer.to_string(), topic.to_string(), partition))
                .copied())
        })
    }

    fn end<'a>(&'a self, topic: &'a str, partition: u32) -> BoxFuture<'a, LogResult<i64>> {
        Box::pin(async move {
            self.check_up()?;
            let g = lock(&self.inner)?;
            g.topics
                .get(topic)
                .and_then(|t| t.partitions.get(partition as usize))
                .map(|p| p.len() as i64)
                .ok_or_else(|| LogError(format!("no partition {topic}/{partition}")))
        })
    }
}

struct MemReader {
    log: MemoryLog,
    topic: String,
    partition: u32,
    next: i64,
    yielded: u64,
    cut_after: Option<u64>,
    skip_every: Option<usize>,
    fetched_bytes: usize,
    skip_next: bool,
}

impl MemReader {
    fn exists(&self, offset: i64) -> bool {
        self.log.inner.lock().is_ok_and(|g| {
            g.topics
                .get(&self.topic)
                .and_then(|t| t.partitions.get(self.partition as usize))
                .is_some_and(|p| usize::try_from(offset).is_ok_and(|o| o < p.len()))
        })
    }
}

impl PartitionReader for MemReader {
    fn next(&mut self) -> BoxFuture<'_, Option<LogResult<Read>>> {
        Box::pin(async move {
            loop {
                if self.log.down.load(Ordering::SeqCst) {
                    return Some(Err(LogError("the stream broke (injected)".into())));
                }
                if self.cut_after.is_some_and(|n| self.yielded >= n) {
                    return None;
                }
                let notified = self.log.appended.notified();
                let record = {
                    let Ok(g) = self.log.inner.lock() else {
                        return Some(Err(LogError("the log's lock is poisoned".into())));
                    };
                    g.topics
                        .get(&self.topic)
                        .and_then(|t| t.partitions.get(self.partition as usize))
                        .and_then(|p| p.get(usize::try_from(self.next).unwrap_or(usize::MAX)))
                        .cloned()
                };
                match record {
                    Some(bytes) => {
                        if let Some(max) = self.skip_every {
                            if self.skip_next {
                                // The last fetch was cut at max_bytes with more behind it: the
                                // next one starts one record too far, and that record is never
                                // yielded.
                                self.skip_next = false;
                                self.next += 1;
                                self.log.skipped.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            self.fetched_bytes += bytes.len();
                            if self.fetched_bytes >= max {
                                self.fetched_bytes = 0;
                                // Only a fetch cut short of records already in the log skips
                                // (a backlog); at the end of the log the next fetch is right.
                                self.skip_next = self.exists(self.next + 1);
                            }
                        }
                        let offset = self.next;
                        self.next += 1;
                        self.yielded += 1;
                        return Some(Ok((offset, bytes)));
                    }
                    None => {
                        let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
                    }
                }
            }
        })
    }
}

//! A sink the runtime has never heard of, registered from a test: it records sellable changes
//! into a table (idempotently, by key and source commit) and refuses one key for good. The
//! runtime gives it the initial synchronisation, the stream's changes in order, and dead
//! letters its refusals, exactly as it does for the built-in sinks.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use odoo_cdc_tests::{seeded_and_published, sell_one, Db};
use sinks::{Batching, Outcome, Sink, SinkError, Wants};
use transforms::{RetailEvent, Sourced};

struct TableSink {
    db: Arc<tokio_postgres::Client>,
    refuse: String,
}

impl Sink for TableSink {
    fn name(&self) -> &'static str {
        "table"
    }

    fn wants(&self) -> Wants {
        Arc::new(|e| matches!(e, RetailEvent::SellableChanged { .. }))
    }

    fn batching(&self, _partitions: usize) -> Batching {
        Batching {
            slice: 100,
            write_interval: Duration::ZERO,
        }
    }

    fn deliver<'a>(
        &'a mut self,
        batch: &'a [Sourced],
        _partitions: usize,
    ) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for s in batch {
                let key = s.event.key();
                if key == self.refuse {
                    out.push(Outcome::Dead(format!("{key} is refused by the table sink")));
                    continue;
                }
                let RetailEvent::SellableChanged { qty, .. } = &s.event else {
                    out.push(Outcome::Done);
                    continue;
                };
                let r = self
                    .db
                    .execute(
                        "INSERT INTO table_sink (key, lsn, qty) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                        &[&key, &(s.source_commit_lsn as i64), &qty.to_string()],
                    )
                    .await;
                out.push(sinks::sink::outcome(
                    r.map(drop)
                        .map_err(|e| SinkError::transient(format!("table sink: {e}"))),
                ));
            }
            out
        })
    }
}

/// Polls `f` (which may block briefly: psql) every 100 ms for up to `secs` seconds.
async fn wait(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if tokio::task::block_in_place(&mut f) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sink_registered_from_outside_gets_the_stream_and_dead_letters() {
    let db = Db::start();
    let (mut c, info) = seeded_and_published(&db, 5).await;
    db.sql("CREATE TABLE table_sink (key text, lsn bigint, qty text, PRIMARY KEY (key, lsn))");
    let recorder = Arc::new(db.cluster.superuser_client("odoo").await.expect("connect"));
    let wh = &info.warehouses[0].code;
    let refused = format!("{}@{wh}", info.products[1].sku);
    let cfg: pipeline::config::Config = format!("[source]\nurl = \"{}\"\n", db.url())
        .parse()
        .expect("config");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sink = TableSink {
        db: recorder,
        refuse: refused.clone(),
    };
    let run = tokio::spawn(pipeline::cli::run::run_with(
        cfg,
        false,
        vec![Box::new(sink)],
        async {
            let _ = stop_rx.await;
        },
    ));
    let count = |sql: &str| db.sql(sql).trim().parse::<i64>().unwrap_or(-1);
    // The initial synchronisation arrives.
    let synced = wait(60, || {
        count("SELECT count(DISTINCT key) FROM table_sink") >= 3
    })
    .await;
    assert!(
        synced,
        "initial levels: {}",
        db.sql("SELECT key, qty FROM table_sink")
    );
    // A change in Odoo reaches it through the stream.
    let sku = &info.products[0].sku;
    let before = count(&format!(
        "SELECT count(*) FROM table_sink WHERE key = '{sku}@{wh}'"
    ));
    let (_, _, ready) = sell_one(&mut c, &info, 0).await;
    assert!(ready);
    sell_one(&mut c, &info, 1).await;
    let streamed = wait(30, || {
        count(&format!(
            "SELECT count(*) FROM table_sink WHERE key = '{sku}@{wh}'"
        )) > before
    })
    .await;
    assert!(
        streamed,
        "{}",
        db.sql("SELECT key, lsn, qty FROM table_sink")
    );
    // Its refusals are a dead letter under its own name, with its reason, and nothing of
    // that key was recorded.
    let want = format!("table|{refused}|{refused} is refused by the table sink");
    let dead_lettered = wait(30, || {
        db.sql("SELECT sink, key, reason FROM odoo_cdc.dead_letters WHERE replayed_at IS NULL")
            .contains(&want)
    })
    .await;
    assert!(
        dead_lettered,
        "{}",
        db.sql("SELECT sink, key, reason FROM odoo_cdc.dead_letters")
    );
    assert_eq!(
        count(&format!(
            "SELECT count(*) FROM table_sink WHERE key = '{refused}'"
        )),
        0
    );
    let _ = stop_tx.send(());
    let stopped = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("stops")
        .expect("joins");
    assert!(stopped.is_ok(), "{stopped:?}");
    // Everything it delivered is confirmed: the slot is past the sale.
    let pending = db.sql(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) > 1000000 FROM pg_replication_slots WHERE slot_name = 'odoo_cdc'",
    );
    assert_eq!(pending.trim(), "f");
}

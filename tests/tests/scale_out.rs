//! One reader and two sink workers over a partitioned log (the in-memory log with Fluvio's
//! shape and faults; the same code runs on Fluvio): every ready delivery reaches the WMS and
//! every posted move the books exactly once, although the log client jumps over records
//! while the workers catch up on a backlog (fluvio 0.50.1's `max_bytes` bug), streams are cut,
//! appends are refused for a while, and one worker is killed mid-stream and started again.

use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use fixtures::emulator::accounting::{AccountingConfig as AcctCfg, AccountingEmulator};
use fixtures::emulator::wms::{WmsConfig, WmsEmulator};
use fixtures::odoo::actions::account;
use odoo_cdc_tests::{accounting_section, seeded_and_published, sell_one, Db};
use pipeline::runtime::log::{
    topic_of, Counters, Log, LogPublisher, LogRecord, LogSubscription, Route, Subscribe,
};
use pipeline::runtime::memlog::{LogFaults, MemoryLog};
use pipeline::runtime::{RunOptions, Shared, SinkStats};

const PARTITIONS: u32 = 8;
const SINKS: [&str; 2] = ["wms", "accounting"];

fn config(db: &Db, wms: &WmsEmulator, acct: &AccountingEmulator, acct_cfg: &AcctCfg) -> String {
    format!(
        "[source]\nurl = \"{}\"\n\n[sinks.wms]\nbase_url = \"{}\"\napi_key = \"wms-key\"\n\n{}client_secret = \"{}\"\n",
        db.url(),
        wms.url(),
        accounting_section(&acct.url(), acct_cfg, "79"),
        acct_cfg.client_secret
    )
}

/// A worker process: its own state connection and counters, the WMS and accounting sinks,
/// the given partitions of both topics.
struct Worker {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    counters: Vec<Arc<Counters>>,
    shared: Arc<Shared>,
}

async fn worker(
    cfg: &pipeline::config::Config,
    source: &cdc::SourceConfig,
    log: &MemoryLog,
    partitions: &[u32],
) -> Worker {
    let state = pipeline::state::StateDb::connect(source).await.unwrap();
    let shared = Arc::new(Shared {
        state: Some(state.clone()),
        ..Shared::default()
    });
    let sinks = pipeline::cli::run::build_sinks(cfg, &state)
        .await
        .unwrap()
        .into_runtime(&shared);
    let mut tasks = Vec::new();
    let mut counters = Vec::new();
    for sink in sinks {
        let name = sink.name();
        let stats = Arc::new(SinkStats::new(&shared.metrics, name));
        let sub = LogSubscription::start(
            Arc::new(log.clone()),
            Subscribe {
                topic: topic_of("odoo-cdc", name),
                consumer: format!("odoo-cdc-{name}"),
                partitions: partitions.to_vec(),
                read_ahead: 64,
            },
            stats.clone(),
            shared.progress.clone(),
        )
        .await;
        counters.push(sub.counters.clone());
        tasks.push(pipeline::runtime::worker::spawn_worker(
            sink,
            &shared,
            stats,
            Duration::from_secs(60),
            8,
            Box::new(sub),
        ));
    }
    Worker {
        tasks,
        counters,
        shared,
    }
}

impl Worker {
    fn kill(self) {
        for t in self.tasks {
            t.abort();
        }
    }

    fn sum(&self, f: fn(&Counters) -> u64) -> u64 {
        self.counters.iter().map(|c| f(c)).sum()
    }
}

/// Every record in the log's topics.
fn records(log: &MemoryLog) -> Vec<LogRecord> {
    let mut out = Vec::new();
    for sink in SINKS {
        for p in 0..PARTITIONS {
            for r in log.records(&topic_of("odoo-cdc", sink), p) {
                out.push(LogRecord::decode(&r).unwrap());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_and_two_workers_deliver_everything_once_through_lost_records_and_a_killed_worker()
{
    let db = Db::start();
    let (mut c, info) = seeded_and_published(&db, 12).await;
    let wms = WmsEmulator::start(WmsConfig::default(), 0).await.unwrap();
    let acct_cfg = AcctCfg::default();
    let acct = AccountingEmulator::start(acct_cfg.clone(), 0)
        .await
        .unwrap();
    let cfg: pipeline::config::Config = config(&db, &wms, &acct, &acct_cfg).parse().unwrap();
    cfg.validate().unwrap();
    let source = cdc::SourceConfig::from_str(&db.url()).unwrap();
    let state = pipeline::state::StateDb::connect(&source).await.unwrap();
    pipeline::state::migrate(&state.client().await.unwrap())
        .await
        .unwrap();

    let log = MemoryLog::new();
    for sink in SINKS {
        log.create_topic(&topic_of("odoo-cdc", sink), PARTITIONS);
    }
    // The log client loses a record each time a fetch fills while a worker catches up (a 512-byte fetch here);
    // streams end every 40 records; the first appends are refused.
    log.set_faults(LogFaults {
        fail_appends: 3,
        cut_streams_after: Some(40),
        skip_at_max_bytes: Some(512),
    });

    // The reader: the slot through the transforms into the log, confirming what it holds.
    let reader_shared = Arc::new(Shared {
        state: Some(state.clone()),
        ..Shared::default()
    });
    let routes: Vec<Route> = pipeline::cli::run::build_sinks(&cfg, &state)
        .await
        .unwrap()
        .into_runtime(&reader_shared)
        .into_iter()
        .map(|s| {
            let topic = topic_of("odoo-cdc", s.name());
            Route::new(s, topic, PARTITIONS)
        })
        .collect();
    assert_eq!(routes.len(), 2);
    let snapshot = pipeline::runtime::capture::snapshot(
        &source,
        "odoo_cdc",
        "odoo_cdc",
        transforms::OdooVersion::V18,
    )
    .await
    .unwrap();
    let start = snapshot.lsn;
    let opts = RunOptions {
        source: source.clone(),
        slot: "odoo_cdc".into(),
        publication: "odoo_cdc".into(),
        snapshot: Some(snapshot),
        restore: None,
        restore_is_initial: false,
        bootstrap_key: None,
        queue_capacity: 1000,
        partitions: 8,
        max_hold: Duration::from_secs(60),
        odoo_version: transforms::OdooVersion::V18,
        resync_since: None,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let reader = {
        let shared = reader_shared.clone();
        let log: Arc<dyn Log> = Arc::new(log.clone());
        tokio::spawn(async move {
            pipeline::runtime::run_on(
                opts,
                Box::new(LogPublisher::new(log, routes)),
                shared,
                async {
                    let _ = stop_rx.await;
                },
            )
            .await
        })
    };

    // A backlog builds up with no worker running.
    let mut pickings = Vec::new();
    let mut posted = 0;
    for i in 0..24 {
        let (order, picking, ready) = sell_one(&mut c, &info, i % info.products.len()).await;
        if ready {
            pickings.push(picking);
        }
        if i % 2 == 0 {
            let inv = account::create_invoice(&mut c, &info, order).await.unwrap();
            account::post(&mut c, inv).await.unwrap();
            posted += 1;
        }
    }
    let published = |n: usize| {
        let log = log.clone();
        async move {
            for _ in 0..300 {
                let events = records(&log)
                    .iter()
                    .filter(|r| matches!(r, LogRecord::Event { .. }))
                    .count();
                if events >= n {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        }
    };
    // One WMS order per ready delivery and one entry per posted move, at least.
    assert!(published(pickings.len() + posted).await);
    // Nothing is confirmed beyond what the log acknowledged, and what it holds is confirmed.
    assert!(reader_shared.confirmed.load(Ordering::SeqCst) > start.0);

    // Two workers, four partitions each.
    let a = worker(&cfg, &source, &log, &[0, 1, 2, 3]).await;
    let b = worker(&cfg, &source, &log, &[4, 5, 6, 7]).await;
    let delivered = |pickings: Vec<String>, posted: usize| {
        let wms_orders = wms.orders();
        pickings.iter().all(|p| wms_orders.contains_key(p)) && acct.entries().len() >= posted
    };
    assert!(
        odoo_cdc_tests::wait_until(Duration::from_secs(60), || delivered(
            pickings.clone(),
            posted
        )),
        "WMS has {} of {} orders, the books {} of {} entries",
        wms.orders().len(),
        pickings.len(),
        acct.entries().len(),
        posted
    );
    // The client lost records catching up, and every hole was mended by reading again.
    let sizes: Vec<usize> = (0..PARTITIONS)
        .map(|p| {
            log.records(&topic_of("odoo-cdc", "wms"), p)
                .iter()
                .map(Vec::len)
                .sum()
        })
        .collect();
    assert!(
        log.skipped.load(Ordering::SeqCst) > 0,
        "the bug did not bite: bytes per WMS partition {sizes:?}"
    );
    assert!(
        a.sum(|c| c.holes.load(Ordering::SeqCst)) + b.sum(|c| c.holes.load(Ordering::SeqCst)) > 0
    );
    // Every record in the log arrived, once.
    let total = records(&log).len() as u64;
    let arrived = || {
        a.sum(|c| c.records.load(Ordering::SeqCst)) + b.sum(|c| c.records.load(Ordering::SeqCst))
    };
    if !odoo_cdc_tests::wait_until(Duration::from_secs(10), || arrived() >= total) {
        let mut state = String::new();
        for sink in SINKS {
            let topic = topic_of("odoo-cdc", sink);
            for p in 0..PARTITIONS {
                let recs: Vec<String> = log
                    .records(&topic, p)
                    .iter()
                    .map(|r| match LogRecord::decode(r).unwrap() {
                        LogRecord::Event { lsn, last, .. } => {
                            format!("E{lsn}{}", if last { "!" } else { "" })
                        }
                        LogRecord::Mark { lsn } => format!("M{lsn}"),
                    })
                    .collect();
                let committed = log
                    .committed(&topic, p, &format!("odoo-cdc-{sink}"))
                    .await
                    .unwrap();
                state.push_str(&format!(
                    "{topic}/{p} committed {committed:?}: {}\n",
                    recs.join(" ")
                ));
            }
        }
        panic!("{} of {total} records arrived\n{state}", arrived());
    }

    // Worker A is killed mid-stream; changes go on; it starts again with its consumer's offsets.
    let first_round = pickings.len();
    a.kill();
    for i in 0..12 {
        let (order, picking, ready) = sell_one(&mut c, &info, i % info.products.len()).await;
        if ready {
            pickings.push(picking);
        }
        let inv = account::create_invoice(&mut c, &info, order).await.unwrap();
        account::post(&mut c, inv).await.unwrap();
        posted += 1;
    }
    assert!(pickings.len() > first_round);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a = worker(&cfg, &source, &log, &[0, 1, 2, 3]).await;
    assert!(
        odoo_cdc_tests::wait_until(Duration::from_secs(60), || delivered(
            pickings.clone(),
            posted
        )),
        "after the restart: WMS has {} of {} orders, the books {} of {} entries",
        wms.orders().len(),
        pickings.len(),
        acct.entries().len(),
        posted
    );
    // Nothing twice: one entry per posted move, one WMS order per delivery.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(acct.entries().len(), posted, "{:?}", acct.entries());
    assert_eq!(wms.orders().len(), pickings.len());
    // Both workers owe nothing: everything they took is delivered.
    assert!(odoo_cdc_tests::wait_until(Duration::from_secs(10), || a
        .shared
        .quiet()
        && b.shared.quiet()));

    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), reader).await;
    a.kill();
    b.kill();
}

/// The roles say what they need: a `[fluvio]` section, a binary built with Fluvio, sensible
/// partitions; and they say it before touching the slot (no PostgreSQL listens here).
#[test]
fn the_roles_refuse_clearly_what_they_cannot_run() {
    let dir = odoo_cdc_tests::scratch_dir();
    let without = dir.join("without.toml");
    std::fs::write(
        &without,
        "[source]\nurl = \"postgres://odoo_cdc@127.0.0.1:1/odoo\"\n",
    )
    .unwrap();
    let with = dir.join("with.toml");
    std::fs::write(
        &with,
        "[source]\nurl = \"postgres://odoo_cdc@127.0.0.1:1/odoo\"\n\n[fluvio]\nendpoint = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = odoo_cdc_tests::odoo_cdc(args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = run(&[
        "run",
        "--role",
        "reader",
        "--config",
        without.to_str().unwrap(),
    ]);
    assert_ne!(code, Some(0));
    assert!(err.contains("[fluvio] section"), "{err}");
    let (code, err) = run(&[
        "run",
        "--role",
        "worker",
        "--config",
        with.to_str().unwrap(),
    ]);
    assert_ne!(code, Some(0));
    if cfg!(feature = "fluvio") {
        assert!(err.contains("127.0.0.1:1"), "{err}");
    } else {
        assert!(
            err.contains("built without Fluvio") && err.contains("--features fluvio"),
            "{err}"
        );
    }
    // TLS to the cluster needs its own feature, and says so.
    for f in ["ca.pem", "client.pem", "client.key"] {
        std::fs::write(dir.join(f), "-----BEGIN CERTIFICATE-----\n").unwrap();
    }
    let with_tls = dir.join("with-tls.toml");
    std::fs::write(
        &with_tls,
        format!(
            "[source]\nurl = \"postgres://odoo_cdc@127.0.0.1:1/odoo\"\n\n[fluvio]\nendpoint = \"127.0.0.1:1\"\n\n\
             [fluvio.tls]\ndomain = \"fluvio.internal\"\nca_cert = {:?}\ncert = {:?}\nkey = {:?}\n",
            dir.join("ca.pem"),
            dir.join("client.pem"),
            dir.join("client.key")
        ),
    )
    .unwrap();
    let (code, err) = run(&[
        "run",
        "--role",
        "reader",
        "--config",
        with_tls.to_str().unwrap(),
    ]);
    assert_ne!(code, Some(0));
    if cfg!(feature = "fluvio-tls") {
        assert!(err.contains("127.0.0.1:1"), "{err}");
    } else if cfg!(feature = "fluvio") {
        assert!(
            err.contains("built without TLS") && err.contains("--features fluvio-tls"),
            "{err}"
        );
    } else {
        assert!(err.contains("built without Fluvio"), "{err}");
    }
    let out = odoo_cdc_tests::odoo_cdc(&["check-config", "--config", with_tls.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("scales out on Fluvio at 127.0.0.1:1 (topics odoo-cdc-<sink>, 8 partitions, TLS for fluvio.internal)"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, err) = run(&["run", "--sinks", "wms", "--config", with.to_str().unwrap()]);
    assert_ne!(code, Some(0));
    assert!(err.contains("--role worker"), "{err}");
    let (code, err) = run(&[
        "run",
        "--role",
        "worker",
        "--partitions",
        "3-1",
        "--config",
        with.to_str().unwrap(),
    ]);
    assert_ne!(code, Some(0));
    assert!(err.contains("backwards"), "{err}");
    let (code, err) = run(&["fluvio", "status", "--config", without.to_str().unwrap()]);
    assert_ne!(code, Some(0));
    assert!(err.contains("[fluvio]"), "{err}");
}

/// A reader and its workers start together: their migrations of odoo-cdc's state do not
/// trip over each other (CREATE ... IF NOT EXISTS is not safe against a concurrent CREATE).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_starting_together_migrate_the_state_one_at_a_time() {
    let db = Db::start();
    let source = cdc::SourceConfig::from_str(&db.url()).unwrap();
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(source.sql_client().await.unwrap());
    }
    let runs: Vec<_> = clients
        .into_iter()
        .map(|c| {
            tokio::spawn(async move {
                pipeline::state::migrate(&c)
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    for r in runs {
        r.await.unwrap().unwrap();
    }
    assert_eq!(
        db.sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'odoo_cdc' AND tablename = 'kv'")
            .trim(),
        "1"
    );
}

//! `odoo-cdc run --config odoo-cdc.toml`: the pipeline next to a real Odoo database.
//!
//! On the first start the slot is created with an exported snapshot (unless managed) and every
//! published row is synchronised; on a restart the state is rebuilt from a snapshot of the
//! tables and the stream resumes from the slot's confirmed position. SIGTERM (or Ctrl-C) stops
//! reading, lets the sinks finish what is queued, confirms, and exits 0.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use cdc::conn::ReplicationConnection;
use cdc::SourceConfig;
use transforms::OdooVersion;

use crate::config::Config;
use crate::runtime::{self, RunOptions, Shared};

/// SIGTERM or Ctrl-C.
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The configured sinks, each optional (`dlq replay` uses them directly).
pub struct Sinks {
    /// Shopify inventory.
    pub shopify: Option<sinks::shopify::ShopifySink>,
    /// The WMS.
    pub wms: Option<sinks::wms::WmsSink>,
    /// Accounting.
    pub accounting: Option<sinks::accounting::AccountingSink>,
    /// Shopify fulfillments: the client and whether customers are notified.
    pub fulfillment: Option<(sinks::shopify::ShopifyClient, bool)>,
}

impl Sinks {
    /// The Shopify fulfillment sink over the state database, counting into `stats`.
    pub fn fulfillment_sink(
        &mut self,
        state: Arc<crate::state::StateDb>,
        stats: Arc<crate::runtime::stats::FulfillmentStats>,
    ) -> Option<sinks::shopify::FulfillmentSink> {
        let (client, notify) = self.fulfillment.take()?;
        Some(sinks::shopify::FulfillmentSink::new(
            client,
            notify,
            Arc::new(crate::writeback::deliveries::StateDeliveries::new(
                state, stats,
            )),
        ))
    }
}

impl Sinks {
    /// The sinks the runtime runs: Shopify behind its oversell guard, fed by `shared.guard` and
    /// resumed from the inbox's orders that are received and not settled yet.
    pub fn into_runtime(self, shared: &Shared) -> Vec<Box<dyn sinks::Sink>> {
        let resume = shared.state.clone().map(|state| {
            let resume: sinks::shopify::guard::Resume = Box::new(move || {
                Box::pin(async move { crate::writeback::inbox::held_orders(&state).await })
            });
            resume
        });
        self.assemble(shared, shared.guard.clone(), resume, true)
    }

    /// The sinks as a reader routes events for them (never started in that process: Shopify
    /// behind a guard of its own that nothing feeds, since the real one runs with the Shopify
    /// worker; the fulfillment counters are the worker's too).
    pub fn into_routes(self, shared: &Shared) -> Vec<Box<dyn sinks::Sink>> {
        self.assemble(shared, Arc::default(), None, false)
    }

    fn assemble(
        mut self,
        shared: &Shared,
        guard: Arc<sinks::shopify::GuardChannel>,
        resume: Option<sinks::shopify::guard::Resume>,
        count_fulfillments: bool,
    ) -> Vec<Box<dyn sinks::Sink>> {
        let mut out: Vec<Box<dyn sinks::Sink>> = Vec::new();
        if let Some(state) = shared.state.clone() {
            let stats = Arc::new(crate::runtime::stats::FulfillmentStats::new(
                &shared.metrics,
            ));
            if let Some(s) = self.fulfillment_sink(state, stats.clone()) {
                if count_fulfillments {
                    if let Ok(mut g) = shared.fulfillments.lock() {
                        *g = Some(stats);
                    }
                }
                out.push(Box::new(s));
            }
        }
        if let Some(s) = self.shopify {
            out.push(Box::new(sinks::shopify::GuardedShopify::new(
                s, guard, resume,
            )));
        }
        if let Some(s) = self.wms {
            out.push(Box::new(s));
        }
        if let Some(s) = self.accounting {
            out.push(Box::new(s));
        }
        out
    }
}

/// `/healthz`, `/readyz` and `/metrics` on `runtime.metrics_listen`, when set.
pub async fn serve_health(
    cfg: &Config,
    shared: &Arc<Shared>,
) -> Result<Option<crate::ops::http::Served>> {
    match &cfg.runtime.metrics_listen {
        Some(addr) => Ok(Some(
            crate::ops::health::serve_on(shared.clone(), addr)
                .await
                .with_context(|| format!("runtime.metrics_listen: cannot listen on {addr}"))?,
        )),
        None => Ok(None),
    }
}

/// Builds the configured sinks (the accounting refresh token lives in the state database).
pub async fn build_sinks(cfg: &Config, state: &Arc<crate::state::StateDb>) -> Result<Sinks> {
    let timeout = Duration::from_secs(10);
    // One Shopify configuration for the inventory sink and the fulfillment sink's client.
    let shopify_cfg = cfg
        .sinks
        .shopify
        .as_ref()
        .map(|s| sinks::shopify::ShopifyConfig {
            graphql_url: s.graphql_url.clone(),
            access_token: s.access_token.expose().to_string(),
            location_map: s.location_map.clone(),
            sku_map: s.sku_map.clone(),
            safety_stock: s.safety_stock,
            safety_stock_by_sku: s.safety_stock_by_sku.clone(),
            timeout,
            write_interval: Duration::from_millis(s.write_interval_ms),
            urgent_below: s.urgent_below,
        });
    let shopify = match &shopify_cfg {
        Some(c) => Some(sinks::shopify::ShopifySink::new(c.clone())?),
        None => None,
    };
    let wms = match &cfg.sinks.wms {
        Some(w) => Some(sinks::wms::WmsSink::new(sinks::wms::WmsClient::new(
            sinks::wms::WmsConfig {
                base_url: w.base_url.clone(),
                api_key: w.api_key.expose().to_string(),
                timeout,
            },
        )?)),
        None => None,
    };
    let accounting = accounting_sink(cfg, state, timeout).await?;
    let fulfillment = match (&cfg.sinks.shopify, shopify_cfg) {
        (Some(s), Some(c)) if s.fulfillments => {
            Some((sinks::shopify::ShopifyClient::new(c)?, s.notify_customer))
        }
        _ => None,
    };
    Ok(Sinks {
        shopify,
        wms,
        accounting,
        fulfillment,
    })
}

/// The accounting sink of `[sinks.accounting]` (its refresh token seeded into the state when
/// none is kept there yet), or none when it is not configured.
pub async fn accounting_sink(
    cfg: &Config,
    state: &Arc<crate::state::StateDb>,
    timeout: Duration,
) -> Result<Option<sinks::accounting::AccountingSink>> {
    Ok(match &cfg.sinks.accounting {
        Some(a) => {
            // The configured refresh token only seeds the store; newer ones live in odoo_cdc.kv.
            if crate::state::get(state, crate::state::REFRESH_TOKEN_KEY)
                .await?
                .is_none()
                && !a.refresh_token.expose().is_empty()
            {
                crate::state::put(
                    state,
                    crate::state::REFRESH_TOKEN_KEY,
                    a.refresh_token.expose(),
                )
                .await?;
            }
            let mode = if a.mode == "batch" {
                sinks::accounting::Mode::Batch {
                    size: a.batch_size,
                    interval: Duration::from_millis(a.flush_interval_ms),
                    spacing: Duration::from_secs(60) / a.batches_per_minute.max(1),
                }
            } else {
                sinks::accounting::Mode::RealTime
            };
            let client = sinks::accounting::AccountingClient::new(
                sinks::accounting::AccountingConfig {
                    base_url: a.base_url.clone(),
                    realm_id: a.realm_id.clone(),
                    client_id: a.client_id.clone(),
                    client_secret: a.client_secret.expose().to_string(),
                    account_map: a.account_map.clone(),
                    mode,
                    timeout,
                },
                Box::new(crate::state::PgTokens(state.clone())),
            )?;
            Some(sinks::accounting::AccountingSink::new(
                client,
                a.account_map.clone(),
                mode,
            ))
        }
        None => None,
    })
}

/// Runs until SIGTERM / Ctrl-C.
/// Builds the Odoo write-back from the config.
pub fn build_writeback(
    o: &crate::config::Odoo,
    wms: Option<&crate::config::WmsWebhooks>,
) -> Result<crate::writeback::Writeback> {
    let rpc = sinks::odoo::OdooRpc::new(sinks::odoo::OdooRpcConfig {
        url: o.url.clone(),
        database: o.database.clone(),
        login: o.login.clone(),
        api_key: o.api_key.expose().to_string(),
        protocol: o
            .protocol
            .parse()
            .map_err(|e: String| anyhow!("odoo.protocol: {e}"))?,
        timeout: sinks::odoo::config::DEFAULT_TIMEOUT,
    })?;
    Ok(crate::writeback::Writeback::new(
        rpc,
        crate::writeback::WritebackConfig {
            shipping_sku: o.shipping_sku.clone(),
            rounding_sku: o.rounding_sku.clone(),
            warehouse: o.warehouse.clone(),
            default_customer: o.default_customer.clone(),
            variant_map: o.variant_map.clone(),
            cache_ttl: Duration::from_secs(o.cache_ttl_secs),
            cancel_short_backorders: wms
                .is_some_and(|w| w.backorder == crate::config::Backorder::Cancel),
            tracking_urls: wms.map(|w| w.tracking_urls.clone()).unwrap_or_default(),
        },
    ))
}

/// Starts the webhook receiver and the inbox worker; the server stops when the handle drops.
/// Returns where it listens.
pub async fn start_writeback(
    w: &crate::config::Webhooks,
    o: &crate::config::Odoo,
    wms: Option<&crate::config::WmsWebhooks>,
    source: &SourceConfig,
    shared: &Arc<Shared>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Result<(std::net::SocketAddr, crate::ops::http::Served)> {
    let wake = Arc::new(tokio::sync::Notify::new());
    let receiver_stats = Arc::new(crate::writeback::webhook::ReceiverStats::new(
        &shared.metrics,
    ));
    let inbox_stats = Arc::new(crate::writeback::inbox::InboxStats::new(&shared.metrics));
    if let Ok(mut g) = shared.writeback.lock() {
        *g = Some((receiver_stats.clone(), inbox_stats.clone()));
    }
    let inbox = crate::writeback::inbox::Inbox::new(
        crate::state::StateDb::connect(source)
            .await
            .context("connecting for the inbox")?,
        build_writeback(o, wms)?
            .with_stats(inbox_stats.writeback.clone())
            .with_epochs(shared.epochs.clone()),
        wake.clone(),
        w.workers,
        inbox_stats,
    )
    .with_guard(shared.guard.clone());
    tokio::spawn(inbox.run(stop));
    let receiver = crate::writeback::webhook::Receiver::new(
        crate::writeback::webhook::ReceiverConfig {
            secrets: vec![
                w.secret.expose().to_string(),
                w.previous_secret.expose().to_string(),
            ],
            shop_domain: w.shop_domain.clone(),
            max_body_bytes: w.max_body_bytes,
        },
        crate::state::StateDb::connect(source)
            .await
            .context("connecting for the webhook receiver")?,
        wake.clone(),
        receiver_stats,
    )
    .with_guard(shared.guard.clone());
    let mut routes = crate::writeback::webhook::router(Arc::new(receiver));
    if let Some(wms) = wms {
        let stats = Arc::new(crate::writeback::webhook::ReceiverStats::for_source(
            &shared.metrics,
            "wms",
        ));
        if let Ok(mut g) = shared.wms_receiver.lock() {
            *g = Some(stats.clone());
        }
        let receiver = crate::writeback::wms::WmsReceiver::new(
            vec![
                wms.secret.expose().to_string(),
                wms.previous_secret.expose().to_string(),
            ],
            crate::state::StateDb::connect(source)
                .await
                .context("connecting for the warehouse webhook receiver")?,
            wake.clone(),
            stats,
        );
        routes = routes.merge(crate::writeback::wms::router(
            Arc::new(receiver),
            w.max_body_bytes,
        ));
    }
    let served = crate::ops::http::Served::start(&w.listen, routes, "webhooks")
        .await
        .with_context(|| format!("webhooks.listen: cannot listen on {}", w.listen))?;
    tracing::info!(addr = %served.addr, "receiving Shopify webhooks on /webhooks/shopify");
    if wms.is_some() {
        tracing::info!(addr = %served.addr, "receiving warehouse webhooks on /webhooks/wms");
    }
    Ok((served.addr, served))
}

pub async fn run(cfg: Config, resync: bool) -> Result<()> {
    run_with(cfg, resync, Vec::new(), stop_signal()).await
}

/// [`run`] with sinks of the embedder's own next to the configured ones (each implements
/// [`sinks::Sink`]; the runtime treats them like the built-in ones: ordering per key, retries,
/// `max_hold` and the outbox, dead letters, metrics), stopping when `stop` resolves.
pub async fn run_with(
    cfg: Config,
    resync: bool,
    extra: Vec<Box<dyn sinks::Sink>>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    run_as(cfg, resync, extra, super::scale::Role::All, stop).await
}

/// [`run_with`] as one role of a scaled-out pipeline (`--role`): the reader writes the slot's
/// events to the `[fluvio]` topics (and receives the webhooks); a worker delivers them.
pub async fn run_as(
    mut cfg: Config,
    resync: bool,
    extra: Vec<Box<dyn sinks::Sink>>,
    role: super::scale::Role,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let source = super::dlq::source_of(&mut cfg, false)?;
    // A role of a scaled-out pipeline needs its cluster before it touches the slot.
    let log = match role {
        super::scale::Role::All => None,
        _ => Some(super::scale::connect(&cfg).await?),
    };
    if let (super::scale::Role::Worker { sinks, partitions }, Some(log)) = (&role, &log) {
        let assignment = super::scale::Assignment {
            sinks: sinks.clone(),
            partitions: partitions.clone(),
        };
        return super::scale::run_worker(cfg, source, log.clone(), assignment, stop).await;
    }
    let version = match cfg.source.odoo_version {
        17 => OdooVersion::V17,
        19 => OdooVersion::V19,
        _ => OdooVersion::V18,
    };
    let state = crate::state::StateDb::connect(&source)
        .await
        .context("connecting for odoo-cdc's state")?;
    crate::state::migrate(&*state.client().await?)
        .await
        .context("migrating the odoo_cdc state schema (the role needs CREATE on the database)")?;

    let mut conn = ReplicationConnection::connect(&source).await?;
    if cdc::slot::publication_tables(&mut conn, &cfg.source.publication)
        .await?
        .is_none()
    {
        bail!(
            "publication {:?} does not exist: create it with `odoo-cdc slot create --dry-run` (as a role that owns Odoo's tables)",
            cfg.source.publication
        );
    }
    let slot_status = cdc::slot::status(&mut conn, &cfg.source.slot).await?;
    let bootstrap_key = format!("bootstrap.{}", cfg.source.slot);
    let bootstrapped = crate::state::get(&state, &bootstrap_key).await?.is_some();
    let confirmed_key = format!("confirmed_commit.{}", cfg.source.slot);
    let lost = slot_status
        .as_ref()
        .is_some_and(|s| s.wal_status.as_deref() == Some("lost"));
    let mut resync_since = None;
    if !resync && lost {
        bail!(
            "replication slot {:?} is lost (wal_status lost): PostgreSQL removed WAL it still needed \
             (max_slot_wal_keep_size), so the changes after {} cannot be read from it. odoo-cdc will not silently start over: \
             `odoo-cdc run --config <file> --resync` recreates the slot with a snapshot and delivers again everything the gap may hold \
             (see the runbook, \"An invalidated slot\")",
            cfg.source.slot,
            slot_status
                .as_ref()
                .and_then(|s| s.confirmed_flush_lsn)
                .map_or_else(|| "its last confirmed position".to_string(), |l| l.to_string())
        );
    }
    if !resync && slot_status.is_none() && bootstrapped {
        bail!(
            "replication slot {:?} is gone, but odoo-cdc had streamed from it: whatever changed since it was dropped is not in any slot. \
             odoo-cdc will not silently start over: `odoo-cdc run --config <file> --resync` creates the slot with a snapshot and delivers \
             again everything the gap may hold",
            cfg.source.slot
        );
    }
    if resync {
        if cfg.source.managed {
            bail!(
                "managed mode: --resync creates the slot with a snapshot, which odoo-cdc may not do here; ask the DBA to drop the \
                 lost slot ({:?}), then run --resync without managed mode once",
                cfg.source.slot
            );
        }
        if let Some(st) = &slot_status {
            if let Some(pid) = st.active_pid {
                bail!(
                    "--resync: slot {:?} is in use by pid {pid}; stop the other consumer first",
                    cfg.source.slot
                );
            }
            tracing::warn!(slot = %cfg.source.slot, wal_status = ?st.wal_status, "--resync: dropping the old slot");
            for sql in cdc::slot::drop_sql(&cfg.source.slot, &cfg.source.publication, false) {
                conn.simple_query(&sql).await?;
            }
        }
        // The gap starts at the last confirmed commit (five minutes earlier, for clock skew
        // between Odoo's write_date and the commit time); without one, every posted move.
        let since = match crate::state::get(&state, &confirmed_key).await? {
            Some(us) => {
                let us: f64 = us.parse().unwrap_or(0.0);
                let c = state.client().await?;
                let row = c
                    .query_one(
                        "SELECT to_char(to_timestamp($1::float8 / 1000000 - 300) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')",
                        &[&us],
                    )
                    .await?;
                Some(row.get::<_, String>(0))
            }
            None => None,
        };
        resync_since = Some(since);
    }
    drop(conn);
    let slot_exists = slot_status.is_some() && !resync;
    let (snapshot, restore) = if slot_exists {
        tracing::info!(
            bootstrapped,
            "slot exists: rebuilding state from a snapshot of the published tables"
        );
        (
            None,
            Some(
                crate::runtime::capture::restore_snapshot(
                    &source,
                    &cfg.source.publication,
                    version,
                )
                .await?,
            ),
        )
    } else if cfg.source.managed {
        bail!(
            "managed mode: replication slot {:?} does not exist; ask the DBA to create it (`odoo-cdc slot create --dry-run`)",
            cfg.source.slot
        );
    } else {
        tracing::info!(slot = %cfg.source.slot, "creating the slot with an initial snapshot");
        (
            Some(
                crate::runtime::capture::snapshot(
                    &source,
                    &cfg.source.slot,
                    &cfg.source.publication,
                    version,
                )
                .await?,
            ),
            None,
        )
    };
    let sinks = build_sinks(&cfg, &state).await?;
    let shared = Arc::new(Shared {
        state: Some(state.clone()),
        unready_after_secs: cfg.runtime.unready_after_secs.into(),
        ..Shared::default()
    });
    let _health = serve_health(&cfg, &shared).await?;
    let _workbench = crate::ui::serve(&cfg, shared.clone(), state.clone()).await?;
    let (inbox_stop, _webhook_server) = match (&cfg.webhooks, &cfg.odoo) {
        (Some(w), Some(o)) => {
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (_, server) =
                start_writeback(w, o, cfg.wms.as_ref(), &source, &shared, stop.clone()).await?;
            (Some(stop), Some(server))
        }
        _ => (None, None),
    };
    let opts = RunOptions {
        source,
        slot: cfg.source.slot.clone(),
        publication: cfg.source.publication.clone(),
        snapshot,
        restore,
        restore_is_initial: !bootstrapped,
        bootstrap_key: (!bootstrapped).then_some(bootstrap_key),
        queue_capacity: cfg.runtime.queue_capacity,
        partitions: cfg.runtime.partitions,
        max_hold: Duration::from_secs(cfg.runtime.max_hold_secs),
        odoo_version: version,
        resync_since,
    };
    // Where the gap would start if the slot were ever lost: the newest confirmed commit's time.
    {
        let shared = shared.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let at = shared
                    .confirmed_commit_us
                    .load(std::sync::atomic::Ordering::SeqCst);
                if at > last
                    && crate::state::put(&state, &confirmed_key, &at.to_string())
                        .await
                        .is_ok()
                {
                    last = at;
                }
            }
        });
    }
    if cfg.reconcile.interval_secs > 0 {
        let opts = crate::ops::reconcile::Options {
            sink: None,
            fix: cfg.reconcile.fix,
            settle: Duration::from_secs(cfg.reconcile.settle_secs),
        };
        tokio::spawn(crate::ops::reconcile::schedule(
            cfg.clone(),
            opts,
            Duration::from_secs(cfg.reconcile.interval_secs),
            shared.clone(),
        ));
    }
    tracing::info!("running");
    if let Some(log) = log {
        // The sinks choose topics and partitions here; they deliver in the workers.
        let mut routes = sinks.into_routes(&shared);
        routes.extend(extra);
        let publisher = super::scale::publisher(&cfg, log, routes, shared.clone()).await?;
        runtime::run_on(opts, Box::new(publisher), shared.clone(), stop).await?;
    } else {
        let mut sinks = sinks.into_runtime(&shared);
        sinks.extend(extra);
        runtime::run(opts, sinks, shared.clone(), stop).await?;
    }
    if let Some(stop) = inbox_stop {
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    let confirmed = cdc::Lsn(shared.confirmed.load(std::sync::atomic::Ordering::SeqCst));
    if shared.quiet() {
        tracing::info!(%confirmed, "stopped cleanly");
    } else {
        tracing::warn!(%confirmed, "stopped with events not yet delivered: they stay in the slot (or the outbox) and go out after the next start");
    }
    Ok(())
}

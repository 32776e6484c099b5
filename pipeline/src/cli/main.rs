//! The `odoo-cdc` command.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use cdc::slot::{DEFAULT_PUBLICATION, DEFAULT_SLOT};
use cdc::Lsn;
#[cfg(feature = "emulators")]
use pipeline::cli::fixtures as fixtures_cmd;
use pipeline::cli::slot::{self as slot_cmd, TableChoice};
use pipeline::cli::tail::{self, TailOptions};

#[derive(Parser)]
#[command(
    name = "odoo-cdc",
    version,
    about = "Change data capture from Odoo's PostgreSQL to Shopify, the WMS and accounting"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct SourceArgs {
    /// PostgreSQL URL of the Odoo database (postgres://user:pass@host:port/db?sslmode=require).
    #[arg(long, env = "ODOO_CDC_SOURCE")]
    source: String,
    /// Replication slot.
    #[arg(long, default_value = DEFAULT_SLOT)]
    slot: String,
    /// Publication.
    #[arg(long, default_value = DEFAULT_PUBLICATION)]
    publication: String,
    /// Managed mode: never create or drop a slot or publication; fail clearly when missing.
    #[arg(long, env = "ODOO_CDC_MANAGED", value_parser = clap::builder::BoolishValueParser::new())]
    managed: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Stream decoded changes to stdout as JSON lines, one per row change, in commit order.
    Tail {
        #[command(flatten)]
        src: SourceArgs,
        /// Stop cleanly once this position is reached (like pg_recvlogical -E).
        #[arg(long)]
        endpos: Option<Lsn>,
        /// Create the slot when it does not exist.
        #[arg(long)]
        create_slot: bool,
        /// Never confirm a position to the server (the slot does not move).
        #[arg(long)]
        no_ack: bool,
        /// pgoutput protocol version: 1 (the server spills large transactions) or 2 (streamed).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=2))]
        proto_version: u32,
        /// Milliseconds between status updates to the server.
        #[arg(long, default_value_t = 1000)]
        status_interval_ms: u64,
        /// Seconds between pg_logical_emit_message heartbeats (0: off).
        #[arg(long, default_value_t = 30)]
        heartbeat_secs: u64,
        /// MiB of streamed (protocol 2) transactions held in memory before spilling to disk.
        #[arg(long, default_value_t = 16)]
        spool_memory_mib: usize,
        /// Longest delay between reconnect attempts, in seconds.
        #[arg(long, default_value_t = 30)]
        max_backoff_secs: u64,
        /// Create the slot with an exported snapshot and first print every published row as
        /// `"op":"snapshot"` lines, consistent with the stream that follows.
        #[arg(long)]
        snapshot: bool,
    },
    #[cfg(feature = "emulators")]
    /// Run the whole pipeline on the embedded default: throwaway PostgreSQL, Odoo-shaped data,
    /// emulators, a scripted retail day; prints a summary.
    Demo {
        /// How long the retail day lasts (e.g. 30s, 2m).
        #[arg(long, default_value = "60s", value_parser = pipeline::cli::demo::parse_duration)]
        duration: Duration,
        /// Leave everything up afterwards and print one `service <name> <url>` line each.
        #[arg(long)]
        keep_running: bool,
        /// Run the day scaled out on a Fluvio cluster: one reader and two sink workers (an
        /// odoo-cdc built with `--features fluvio`).
        #[arg(long)]
        scale_out: bool,
        /// The Fluvio cluster's public endpoint for --scale-out.
        #[arg(
            long,
            env = "ODOO_CDC_FLUVIO_ENDPOINT",
            default_value = "127.0.0.1:9003"
        )]
        fluvio_endpoint: String,
    },
    /// Run the pipeline next to Odoo (SIGTERM stops it cleanly).
    Run {
        /// The TOML file.
        #[arg(long, default_value = "odoo-cdc.toml")]
        config: std::path::PathBuf,
        /// After the slot was lost (invalidated or dropped): recreate it with a snapshot and
        /// deliver again, idempotently, everything the gap may hold (levels, open deliveries,
        /// posted moves since the last confirmed commit).
        #[arg(long)]
        resync: bool,
        /// `all` (one process), or one role of a pipeline scaled out on Fluvio: `reader`
        /// (the slot into the [fluvio] topics, and the webhooks) or `worker` (delivers them).
        #[arg(long, default_value = "all", value_parser = ["all", "reader", "worker"])]
        role: String,
        /// The sinks a worker delivers for (comma-separated; default: every configured one).
        #[arg(long, value_delimiter = ',')]
        sinks: Vec<String>,
        /// The partitions a worker owns, e.g. `0-3` or `0,2,4-5` (default: all).
        #[arg(long)]
        partitions: Option<String>,
    },
    /// The Fluvio cluster of a scaled-out pipeline.
    Fluvio {
        #[command(subcommand)]
        action: FluvioAction,
    },
    /// Dead letters: list them, or deliver them again once the cause is fixed.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// The audit trail of a Shopify order: every webhook, RPC call and result, DLQ move and
    /// replay, with the Odoo id and the time.
    Audit {
        /// The TOML file.
        #[arg(long, default_value = "odoo-cdc.toml")]
        config: std::path::PathBuf,
        /// Shopify order id.
        #[arg(long)]
        order: String,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// What needs a person: the slot and its lag, each sink's outbox and dead letters by
    /// reason, the inbox, the running process's readiness. Needs only the source connection.
    /// Exit 0: all well; 1: something needs a person; 2: the state cannot be read.
    Status {
        /// The TOML file.
        #[arg(long, default_value = "odoo-cdc.toml")]
        config: std::path::PathBuf,
        /// One JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Compare Odoo with Shopify (levels vs sellable less holds and safety stock), the WMS
    /// (orders vs ready deliveries) and the books (journal entries vs posted moves), report
    /// each drift with its likely reason, and with --fix heal it through the sinks' idempotent
    /// path and read it back. Exit 0: no drift left; 1: drift remains; 2: cannot run.
    Reconcile {
        /// The TOML file.
        #[arg(long, default_value = "odoo-cdc.toml")]
        config: std::path::PathBuf,
        /// One system: shopify, wms or accounting (default: every configured one).
        #[arg(long)]
        sink: Option<String>,
        /// Heal the drift that delivering Odoo's state again heals.
        #[arg(long)]
        fix: bool,
        /// Longest wait, in seconds, for the running pipeline to pass the first snapshot
        /// before a difference is checked again.
        #[arg(long, default_value_t = 10)]
        settle_secs: u64,
        /// One JSON document.
        #[arg(long)]
        json: bool,
    },
    /// The web workbench (`[ui]` in the config, served by `odoo-cdc run`).
    Ui {
        #[command(subcommand)]
        command: UiCommand,
    },
    /// Validate a configuration file (secrets from the environment); names the bad field.
    CheckConfig {
        /// The TOML file.
        #[arg(long, default_value = "odoo-cdc.toml")]
        config: std::path::PathBuf,
    },
    #[cfg(feature = "emulators")]
    /// Test fixtures: run an emulator standalone.
    Fixtures {
        #[command(subcommand)]
        action: FixturesAction,
    },
    /// Inspect and manage the replication slot and the publication.
    Slot {
        #[command(subcommand)]
        action: SlotAction,
    },
}

#[derive(Subcommand)]
enum UiCommand {
    /// Print an Argon2id hash of the password read from standard input, for
    /// `[[ui.users]] password_hash`.
    HashPassword,
}

#[derive(Subcommand)]
enum FluvioAction {
    /// Topics, partitions, each worker's committed offsets and lag.
    Status {
        /// The TOML file.
        #[arg(long, default_value = "odoo-cdc.toml")]
        config: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum DlqAction {
    /// List dead letters: id, sink, key, source LSN, state, reason.
    List {
        /// The TOML file.
        #[arg(long, default_value = "odoo-cdc.toml")]
        config: std::path::PathBuf,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Deliver pending dead letters again.
    Replay {
        /// The TOML file.
        #[arg(long, default_value = "odoo-cdc.toml")]
        config: std::path::PathBuf,
        /// One dead letter.
        #[arg(long)]
        id: Option<i64>,
        /// All pending dead letters.
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
}

fn load_config(path: &std::path::Path) -> anyhow::Result<pipeline::config::Config> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    text.parse()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

#[cfg(feature = "emulators")]
#[derive(Subcommand)]
enum FixturesAction {
    /// Load the Odoo 18-shaped schema and data into an empty database (one transaction).
    Seed {
        /// PostgreSQL URL of the (empty) database.
        #[arg(long)]
        db: String,
        /// Storable products.
        #[arg(long, default_value_t = 200)]
        products: usize,
        /// Customers.
        #[arg(long, default_value_t = 50)]
        customers: usize,
        /// Warehouses.
        #[arg(long, default_value_t = 2)]
        warehouses: usize,
        /// RNG seed (the same seed writes the same data).
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Serve one emulator on 127.0.0.1 until interrupted.
    Serve {
        /// Which emulator.
        #[arg(value_enum)]
        emulator: fixtures_cmd::Emulator,
        /// Port (0: any free port).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Emulated seconds per wall second (webhook delays, token expiry, retries).
        #[arg(long, default_value_t = 1.0)]
        time_scale: f64,
        /// Where the emulator sends its webhooks.
        #[arg(long)]
        webhook_url: Option<String>,
        /// PostgreSQL URL of the fixture database (the odoo emulator needs it).
        #[arg(long)]
        db: Option<String>,
        /// The shopify emulator's catalogue: a file or an http(s) URL of CSV lines
        /// `sku,available[,location_id]` or a JSON list of `{"sku", "available", "location_id"}`
        /// (for example a real Odoo's SKUs and on-hand levels).
        #[arg(long)]
        catalogue: Option<String>,
    },
}

#[derive(Subcommand)]
enum SlotAction {
    /// Slot, plugin, active pid, confirmed_flush_lsn, lag, wal_status, safe_wal_size, and the
    /// REPLICA IDENTITY of each published table.
    Status {
        #[command(flatten)]
        src: SourceArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Warn when the slot's safe_wal_size falls below this many MB.
        #[arg(long, default_value_t = slot_cmd::DEFAULT_MIN_SAFE_WAL_MB)]
        min_safe_wal_mb: i64,
    },
    /// Create the publication (Odoo's tables) and the pgoutput slot; prints the SQL it runs.
    Create {
        #[command(flatten)]
        src: SourceArgs,
        /// Tables to publish (comma-separated); default: the Odoo tables that exist.
        #[arg(long, value_delimiter = ',')]
        tables: Vec<String>,
        /// Print the SQL without running it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Drop the slot and the publication; prints the SQL it runs.
    Drop {
        #[command(flatten)]
        src: SourceArgs,
        /// Leave the publication in place.
        #[arg(long)]
        keep_publication: bool,
        /// Print the SQL without running it.
        #[arg(long)]
        dry_run: bool,
    },
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: never into a file or a pipe, never with NO_COLOR.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn managed_refusal(what: &str) -> anyhow::Error {
    anyhow::anyhow!("managed mode: odoo-cdc does not {what}; ask the DBA (see `odoo-cdc slot create --dry-run`)")
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    match cli.command {
        Command::Tail {
            src,
            endpos,
            create_slot,
            no_ack,
            proto_version,
            status_interval_ms,
            heartbeat_secs,
            spool_memory_mib,
            max_backoff_secs,
            snapshot,
        } => {
            if src.managed && (create_slot || snapshot) {
                return Err(managed_refusal("create slots"));
            }
            let opts = TailOptions {
                source: src.source,
                slot: src.slot,
                publication: src.publication,
                endpos,
                create_slot,
                no_ack,
                proto_version,
                status_interval: Duration::from_millis(status_interval_ms.max(10)),
                heartbeat: (heartbeat_secs > 0).then(|| Duration::from_secs(heartbeat_secs)),
                spool_memory: spool_memory_mib.max(1) * 1024 * 1024,
                max_backoff: Duration::from_secs(max_backoff_secs.max(1)),
                snapshot,
            };
            let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout);
            let summary = tail::run(&opts, &mut out).await?;
            tracing::info!(
                lines = summary.lines,
                transactions = summary.transactions,
                last_commit_end = %summary.last_commit_end,
                reconnects = summary.reconnects,
                "tail finished"
            );
        }
        #[cfg(feature = "emulators")]
        Command::Demo {
            duration,
            keep_running,
            scale_out,
            fluvio_endpoint,
        } => {
            drop(stdout);
            let ok = pipeline::cli::demo::run(
                duration,
                keep_running,
                scale_out.then_some(fluvio_endpoint),
            )
            .await?;
            return Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Command::Run {
            config,
            resync,
            role,
            sinks,
            partitions,
        } => {
            drop(stdout);
            let text = std::fs::read_to_string(&config)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", config.display()))?;
            let cfg: pipeline::config::Config = text
                .parse()
                .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
            use pipeline::cli::scale::{parse_partitions, Role};
            if role != "worker" && (!sinks.is_empty() || partitions.is_some()) {
                anyhow::bail!("--sinks and --partitions are for --role worker");
            }
            let role = match role.as_str() {
                "reader" => Role::Reader,
                "worker" => Role::Worker {
                    sinks,
                    partitions: partitions.as_deref().map(parse_partitions).transpose()?,
                },
                _ => Role::All,
            };
            pipeline::cli::run::run_as(
                cfg,
                resync,
                Vec::new(),
                role,
                pipeline::cli::run::stop_signal(),
            )
            .await?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Fluvio { action } => match action {
            FluvioAction::Status { config } => {
                pipeline::cli::scale::status(&load_config(&config)?, &mut stdout).await?;
            }
        },
        Command::Dlq { action } => match action {
            DlqAction::List { config, json } => {
                pipeline::cli::dlq::list(load_config(&config)?, json, &mut stdout).await?;
            }
            DlqAction::Replay { config, id, all } => {
                let ok =
                    pipeline::cli::dlq::replay(load_config(&config)?, id, all, &mut stdout).await?;
                if !ok {
                    return Ok(ExitCode::from(3));
                }
            }
        },
        Command::Audit {
            config,
            order,
            json,
        } => {
            let found =
                pipeline::cli::dlq::audit(load_config(&config)?, &order, json, &mut stdout).await?;
            if !found {
                eprintln!("no audit trail for Shopify order {order}");
                return Ok(ExitCode::from(1));
            }
        }
        Command::Status { config, json } => {
            let cfg = match load_config(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("odoo-cdc: {e:#}");
                    return Ok(ExitCode::from(2));
                }
            };
            let code = pipeline::cli::status::run(cfg, json, &mut stdout).await?;
            return Ok(ExitCode::from(code));
        }
        Command::Reconcile {
            config,
            sink,
            fix,
            settle_secs,
            json,
        } => {
            let opts = pipeline::ops::reconcile::Options {
                sink,
                fix,
                settle: Duration::from_secs(settle_secs),
            };
            let result = match load_config(&config) {
                Ok(cfg) => pipeline::ops::reconcile::run(cfg, opts, json, &mut stdout).await,
                Err(e) => Err(e),
            };
            return Ok(match result {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    eprintln!("odoo-cdc: reconcile: {e:#}");
                    ExitCode::from(2)
                }
            });
        }
        Command::Ui {
            command: UiCommand::HashPassword,
        } => {
            // The password from standard input (its first line), never from the command line.
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            let password = line.trim_end_matches(['\n', '\r']);
            if password.chars().count() < 12 {
                eprintln!("odoo-cdc: ui hash-password: a password of at least 12 characters, on standard input");
                return Ok(ExitCode::from(2));
            }
            match pipeline::ui::auth::hash_password(password) {
                Ok(h) => std::io::Write::write_all(&mut stdout, format!("{h}\n").as_bytes())?,
                Err(e) => {
                    eprintln!("odoo-cdc: ui hash-password: {e}");
                    return Ok(ExitCode::from(2));
                }
            }
        }
        Command::CheckConfig { config } => {
            let text = std::fs::read_to_string(&config)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", config.display()))?;
            let mut cfg: pipeline::config::Config = match text.parse() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("odoo-cdc: {}: {e}", config.display());
                    return Ok(ExitCode::from(2));
                }
            };
            cfg.apply_env(&|k| std::env::var(k).ok());
            if let Err(e) = cfg.validate() {
                eprintln!("odoo-cdc: {}: {e}", config.display());
                return Ok(ExitCode::from(2));
            }
            let sinks: Vec<&str> = [
                cfg.sinks.shopify.as_ref().map(|_| "shopify"),
                cfg.sinks.wms.as_ref().map(|_| "wms"),
                cfg.sinks.accounting.as_ref().map(|_| "accounting"),
                cfg.sinks
                    .shopify
                    .as_ref()
                    .filter(|s| s.fulfillments)
                    .map(|_| "shopify_fulfillment"),
            ]
            .into_iter()
            .flatten()
            .collect();
            use std::io::Write;
            let writeback = match (&cfg.webhooks, &cfg.odoo) {
                (Some(w), Some(o)) => format!(
                    ", webhooks on {} written back to {} over {}{}",
                    w.listen,
                    o.url,
                    o.protocol,
                    if cfg.wms.is_some() {
                        " (Shopify's and the warehouse's)"
                    } else {
                        ""
                    }
                ),
                _ => String::new(),
            };
            let workbench = cfg.ui.as_ref().map_or_else(String::new, |u| {
                let mut who = vec![format!(
                    "{} user{}",
                    u.users.len(),
                    if u.users.len() == 1 { "" } else { "s" }
                )];
                if !u.token.expose().is_empty() {
                    who.push("the operator token".into());
                }
                if !u.viewer_token.expose().is_empty() {
                    who.push("the viewer token".into());
                }
                format!(", workbench on {} ({})", u.listen, who.join(", "))
            });
            let scale_out = cfg.fluvio.as_ref().map_or_else(String::new, |f| {
                format!(
                    ", scales out on Fluvio at {} (topics {}-<sink>, {} partitions, {})",
                    f.endpoint,
                    f.topic_prefix,
                    f.partitions,
                    f.tls.as_ref().map_or_else(
                        || "plaintext".to_string(),
                        |t| format!("TLS for {}", t.domain)
                    )
                )
            });
            writeln!(
                stdout,
                "{}: ok (slot {}, publication {}, sinks: {}{writeback}{workbench}{scale_out})",
                config.display(),
                cfg.source.slot,
                cfg.source.publication,
                sinks.join(", ")
            )?;
        }
        #[cfg(feature = "emulators")]
        Command::Fixtures { action } => match action {
            FixturesAction::Seed {
                db,
                products,
                customers,
                warehouses,
                seed,
            } => {
                let cfg = fixtures::odoo::SeedConfig {
                    seed,
                    warehouses: warehouses.max(1),
                    products,
                    customers,
                    ..fixtures::odoo::SeedConfig::default()
                };
                fixtures_cmd::seed(&db, &cfg, &mut stdout).await?;
            }
            FixturesAction::Serve {
                emulator,
                port,
                time_scale,
                webhook_url,
                db,
                catalogue,
            } => {
                drop(stdout);
                fixtures_cmd::serve(emulator, port, time_scale, webhook_url, db, catalogue).await?;
                return Ok(ExitCode::SUCCESS);
            }
        },
        Command::Slot { action } => match action {
            SlotAction::Status {
                src,
                json,
                min_safe_wal_mb,
            } => {
                let code = slot_cmd::status(
                    &src.source,
                    &src.slot,
                    &src.publication,
                    json,
                    min_safe_wal_mb,
                    &mut stdout,
                )
                .await?;
                if code != 0 {
                    return Ok(ExitCode::from(code));
                }
            }
            SlotAction::Create {
                src,
                tables,
                dry_run,
            } => {
                if src.managed && !dry_run {
                    return Err(managed_refusal("create slots or publications"));
                }
                let choice = if tables.is_empty() {
                    TableChoice::Odoo
                } else {
                    TableChoice::List(tables)
                };
                slot_cmd::create(
                    &src.source,
                    &src.slot,
                    &src.publication,
                    choice,
                    dry_run,
                    &mut stdout,
                )
                .await?;
            }
            SlotAction::Drop {
                src,
                keep_publication,
                dry_run,
            } => {
                if src.managed && !dry_run {
                    return Err(managed_refusal("drop slots or publications"));
                }
                slot_cmd::drop(
                    &src.source,
                    &src.slot,
                    &src.publication,
                    keep_publication,
                    dry_run,
                    &mut stdout,
                )
                .await?;
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether an error is only stdout closed by its reader.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        || e.chain().any(|c| {
            c.downcast_ref::<cdc::ReplError>()
                .is_some_and(cdc::ReplError::is_broken_pipe)
                || c.downcast_ref::<pipeline::cli::tail::TailError>()
                    .is_some_and(|t| matches!(t, pipeline::cli::tail::TailError::Output(io) if io.kind() == std::io::ErrorKind::BrokenPipe))
        })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    // One thread: the reader is a single sequential loop, and cross-thread wake-ups per socket
    // read cost more than they give.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("odoo-cdc: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => {
            // `odoo-cdc slot status | head`: the reader left; nothing is wrong with odoo-cdc.
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("odoo-cdc: {e:#}");
            ExitCode::FAILURE
        }
    }
}

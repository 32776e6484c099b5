//! Where the change stream comes from: connection settings parsed from a PostgreSQL URL, and the
//! ordinary SQL connections (tokio-postgres) used beside the replication connection.

use std::fmt;
use std::str::FromStr;

use crate::error::ReplError;
use crate::tls;

/// TLS mode, as libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Use TLS when the server offers it (libpq's default).
    Prefer,
    /// Always use TLS; the certificate is not verified (libpq's `require` without a root cert).
    Require,
}

/// Connection settings for the source database.
#[derive(Clone)]
pub struct SourceConfig {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Role.
    pub user: String,
    /// Password (never printed).
    pub password: Option<String>,
    /// Database holding Odoo's tables.
    pub dbname: String,
    /// TLS mode.
    pub ssl_mode: SslMode,
    /// `application_name` shown in `pg_stat_replication`.
    pub application_name: String,
    url: String,
}

impl fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("dbname", &self.dbname)
            .field("ssl_mode", &self.ssl_mode)
            .finish()
    }
}

impl FromStr for SourceConfig {
    type Err = ReplError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let cfg = tokio_postgres::Config::from_str(url)
            .map_err(|e| ReplError::Config(format!("invalid postgres url: {e}")))?;
        let host = match cfg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(_) => {
                return Err(ReplError::Config(
                    "unix socket hosts are not supported; give a tcp host".into(),
                ))
            }
            None => "localhost".into(),
        };
        let port = cfg.get_ports().first().copied().unwrap_or(5432);
        let user = cfg
            .get_user()
            .map(str::to_string)
            .or_else(|| std::env::var("PGUSER").ok())
            .ok_or_else(|| ReplError::Config("the postgres url names no user".into()))?;
        let password = cfg
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .or_else(|| std::env::var("PGPASSWORD").ok());
        let dbname = cfg.get_dbname().unwrap_or(&user).to_string();
        let ssl_mode = match cfg.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable => SslMode::Disable,
            tokio_postgres::config::SslMode::Require => SslMode::Require,
            _ => SslMode::Prefer,
        };
        let application_name = cfg.get_application_name().unwrap_or("odoo-cdc").to_string();
        Ok(Self {
            host,
            port,
            user,
            password,
            dbname,
            ssl_mode,
            application_name,
            url: url.to_string(),
        })
    }
}

impl SourceConfig {
    /// Opens an ordinary SQL connection (tokio-postgres) with the same settings.
    pub async fn sql_client(&self) -> Result<tokio_postgres::Client, ReplError> {
        self.sql_client_inner(None).await
    }

    /// An SQL connection whose `LISTEN` notifications arrive on the returned channel (the
    /// channel closes when the connection ends).
    pub async fn sql_client_listening(
        &self,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>,
        ),
        ReplError,
    > {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let client = self.sql_client_inner(Some(tx)).await?;
        Ok((client, rx))
    }

    async fn sql_client_inner(
        &self,
        notify: Option<tokio::sync::mpsc::UnboundedSender<tokio_postgres::Notification>>,
    ) -> Result<tokio_postgres::Client, ReplError> {
        self.sql_connect(notify).await.map_err(|e| ReplError::At {
            addr: format!(
                "connection to {}:{} (database {})",
                self.host, self.port, self.dbname
            ),
            source: Box::new(e),
        })
    }

    async fn sql_connect(
        &self,
        notify: Option<tokio::sync::mpsc::UnboundedSender<tokio_postgres::Notification>>,
    ) -> Result<tokio_postgres::Client, ReplError> {
        let mut cfg = tokio_postgres::Config::from_str(&self.url)
            .map_err(|e| ReplError::Config(format!("invalid postgres url: {e}")))?;
        if let Some(p) = &self.password {
            cfg.password(p.as_bytes());
        }
        cfg.user(&self.user);
        cfg.application_name(&self.application_name);
        let client = if self.ssl_mode == SslMode::Disable {
            let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(drive(conn, notify));
            client
        } else {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(
                tls::client_config().map_err(ReplError::Tls)?,
            );
            let (client, conn) = cfg.connect(tls).await?;
            tokio::spawn(drive(conn, notify));
            client
        };
        Ok(client)
    }
}

/// Drives a connection, forwarding notifications.
async fn drive<S, T>(
    mut conn: tokio_postgres::Connection<S, T>,
    notify: Option<tokio::sync::mpsc::UnboundedSender<tokio_postgres::Notification>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                if let Some(tx) = &notify {
                    let _ = tx.send(n);
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::debug!(error = %e, "sql connection ended");
                return;
            }
            None => return,
        }
    }
}

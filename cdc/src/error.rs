//! Errors of the replication client, classified for the retry policy.

use crate::pgoutput::DecodeError;

/// An error from the server (an ErrorResponse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// Severity (`ERROR`, `FATAL`, ...).
    pub severity: String,
    /// SQLSTATE code.
    pub code: String,
    /// Primary message.
    pub message: String,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} ({})", self.severity, self.message, self.code)
    }
}

/// Errors of the replication client.
#[derive(Debug, thiserror::Error)]
pub enum ReplError {
    /// Network I/O failed.
    #[error("replication connection i/o")]
    Io(#[from] std::io::Error),
    /// The server closed the connection.
    #[error("the server closed the replication connection")]
    Closed,
    /// The server answered with an error.
    #[error("server error: {0}")]
    Server(ServerError),
    /// The server sent something the protocol does not allow here.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A replication message could not be decoded.
    #[error("could not decode a replication message")]
    Decode(#[from] DecodeError),
    /// Authentication could not be completed.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// TLS set-up failed.
    #[error("tls")]
    Tls(#[source] rustls::Error),
    /// Bad settings.
    #[error("{0}")]
    Config(String),
    /// An ordinary SQL connection failed.
    #[error("sql")]
    Sql(#[from] tokio_postgres::Error),
    /// The slot or publication does not exist and odoo-cdc may not create it.
    #[error("{0}")]
    Missing(String),
    /// Connecting to the server (or starting the session) failed; names the server.
    #[error("{addr}")]
    At {
        /// `host:port` (and database).
        addr: String,
        /// What failed.
        #[source]
        source: Box<ReplError>,
    },
    /// Writing odoo-cdc's own output (stdout) failed: not the connection's fault.
    #[error("cannot write the output")]
    Output(#[source] std::io::Error),
    /// Spooling a streamed transaction to disk failed.
    #[error("spool file")]
    Spool(#[source] std::io::Error),
}

impl ReplError {
    /// Whether this is a write to a closed stdout pipe (`odoo-cdc slot status | head`).
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, ReplError::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }

    /// Whether reconnecting (with backoff) may succeed: connection loss, server restarts and
    /// shutdowns, a slot still held by a walsender that has not noticed its client died.
    pub fn is_transient(&self) -> bool {
        match self {
            ReplError::Io(_) | ReplError::Closed => true,
            ReplError::At { source, .. } => source.is_transient(),
            ReplError::Server(e) => is_transient_sqlstate(&e.code),
            ReplError::Sql(e) => match e.code() {
                Some(code) => is_transient_sqlstate(code.code()),
                // no SQLSTATE: the connection itself failed
                None => true,
            },
            _ => false,
        }
    }
}

fn is_transient_sqlstate(code: &str) -> bool {
    // 08: connection exception; 57: operator intervention (admin shutdown, cannot connect now);
    // 53: insufficient resources (too many connections); 55006: object in use (slot still active
    // for the pid of a walsender whose client died); 40001/40P01: serialization, deadlock.
    code.starts_with("08")
        || code.starts_with("57")
        || code.starts_with("53")
        || code == "55006"
        || code == "40001"
        || code == "40P01"
}

//! The replication connection: a `replication=database` session over a tokio TcpStream (TLS
//! optional), speaking the frontend/backend protocol with postgres-protocol's helpers.
//!
//! Released tokio-postgres has no CopyBoth support and rejects extended-protocol queries on
//! replication connections, so this module drives the wire itself: startup, SCRAM-SHA-256 (or
//! MD5 / cleartext) authentication, simple queries (`IDENTIFY_SYSTEM`, `CREATE_REPLICATION_SLOT`,
//! `START_REPLICATION`), and the CopyBoth stream. postgres-protocol's `Message::parse` does not
//! know the CopyBothResponse (`W`) message, so message headers are read here first and `W`
//! (and, on the hot path, CopyData) are handled without it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::{ErrorFields, Message};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::error::{ReplError, ServerError};
use crate::lsn::Lsn;
use crate::source::{SourceConfig, SslMode};
use crate::tls;

/// How many bytes a socket read asks for at least: large reads keep syscalls per row low.
pub const READ_CHUNK: usize = 256 * 1024;

/// A plain or TLS socket.
pub(crate) enum Socket {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_flush(cx),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One row of a simple-query result, as text.
pub type Row = Vec<Option<String>>;

/// A replication connection in its command phase.
pub struct ReplicationConnection {
    pub(crate) socket: Socket,
    pub(crate) read_buf: BytesMut,
    pub(crate) write_buf: BytesMut,
    /// Whether the connection is encrypted.
    pub tls: bool,
}

/// Reads a message header at the start of `buf`: (tag, total length including the tag).
pub(crate) fn header(buf: &[u8]) -> Result<Option<(u8, usize)>, ReplError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(ReplError::Protocol(format!("invalid message length {len}")));
    }
    Ok(Some((buf[0], len as usize + 1)))
}

pub(crate) fn server_error(mut fields: ErrorFields<'_>) -> ReplError {
    use fallible_iterator::FallibleIterator;
    let mut e = ServerError {
        severity: String::new(),
        code: String::new(),
        message: String::new(),
    };
    while let Ok(Some(f)) = fields.next() {
        let value = String::from_utf8_lossy(f.value_bytes()).into_owned();
        match f.type_() {
            b'S' => e.severity = value,
            b'C' => e.code = value,
            b'M' => e.message = value,
            _ => {}
        }
    }
    ReplError::Server(e)
}

impl ReplicationConnection {
    /// Connects, authenticates and waits until the server is ready for commands.
    pub async fn connect(cfg: &SourceConfig) -> Result<Self, ReplError> {
        Self::connect_inner(cfg).await.map_err(|e| ReplError::At {
            addr: format!(
                "replication connection to {}:{} (database {})",
                cfg.host, cfg.port, cfg.dbname
            ),
            source: Box::new(e),
        })
    }

    async fn connect_inner(cfg: &SourceConfig) -> Result<Self, ReplError> {
        let tcp = TcpStream::connect((cfg.host.as_str(), cfg.port)).await?;
        tcp.set_nodelay(true)?;
        let (socket, tls) = negotiate_tls(tcp, cfg).await?;
        let mut conn = Self {
            socket,
            read_buf: BytesMut::with_capacity(READ_CHUNK),
            write_buf: BytesMut::with_capacity(1024),
            tls,
        };
        conn.startup(cfg).await?;
        Ok(conn)
    }

    async fn startup(&mut self, cfg: &SourceConfig) -> Result<(), ReplError> {
        let params = [
            ("user", cfg.user.as_str()),
            ("database", cfg.dbname.as_str()),
            ("replication", "database"),
            ("application_name", cfg.application_name.as_str()),
            ("client_encoding", "UTF8"),
        ];
        frontend::startup_message(params.iter().copied(), &mut self.write_buf)?;
        self.flush().await?;
        let password = || {
            cfg.password.as_deref().ok_or_else(|| {
                ReplError::Auth("the server asks for a password and none was given".into())
            })
        };
        let mut scram: Option<ScramSha256> = None;
        loop {
            match self.next_message().await? {
                Message::AuthenticationOk => {}
                Message::AuthenticationCleartextPassword => {
                    frontend::password_message(password()?.as_bytes(), &mut self.write_buf)?;
                    self.flush().await?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let hash = postgres_protocol::authentication::md5_hash(
                        cfg.user.as_bytes(),
                        password()?.as_bytes(),
                        body.salt(),
                    );
                    frontend::password_message(hash.as_bytes(), &mut self.write_buf)?;
                    self.flush().await?;
                }
                Message::AuthenticationSasl(body) => {
                    use fallible_iterator::FallibleIterator;
                    let mut mechanisms = body.mechanisms();
                    let mut has_scram = false;
                    while let Some(m) = mechanisms.next()? {
                        has_scram |= m == postgres_protocol::authentication::sasl::SCRAM_SHA_256;
                    }
                    if !has_scram {
                        return Err(ReplError::Auth(
                            "the server offers no SCRAM-SHA-256 mechanism".into(),
                        ));
                    }
                    let s = ScramSha256::new(password()?.as_bytes(), ChannelBinding::unsupported());
                    frontend::sasl_initial_response(
                        postgres_protocol::authentication::sasl::SCRAM_SHA_256,
                        s.message(),
                        &mut self.write_buf,
                    )?;
                    self.flush().await?;
                    scram = Some(s);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| ReplError::Protocol("sasl continue before sasl".into()))?;
                    s.update(body.data())
                        .map_err(|e| ReplError::Auth(e.to_string()))?;
                    frontend::sasl_response(s.message(), &mut self.write_buf)?;
                    self.flush().await?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let mut s = scram
                        .take()
                        .ok_or_else(|| ReplError::Protocol("sasl final before sasl".into()))?;
                    s.finish(body.data())
                        .map_err(|e| ReplError::Auth(format!("server signature: {e}")))?;
                }
                Message::ErrorResponse(body) => return Err(server_error(body.fields())),
                Message::ReadyForQuery(_) => return Ok(()),
                Message::ParameterStatus(_)
                | Message::BackendKeyData(_)
                | Message::NoticeResponse(_) => {}
                _ => {
                    return Err(ReplError::Protocol(
                        "unexpected message during startup".into(),
                    ))
                }
            }
        }
    }

    pub(crate) async fn flush(&mut self) -> Result<(), ReplError> {
        self.socket.write_all(&self.write_buf).await?;
        self.socket.flush().await?;
        self.write_buf.clear();
        Ok(())
    }

    /// Reads more bytes from the socket into the read buffer; `Closed` at end of stream.
    pub(crate) async fn fill(&mut self) -> Result<(), ReplError> {
        if self.read_buf.capacity() - self.read_buf.len() < READ_CHUNK / 4 {
            self.read_buf.reserve(READ_CHUNK);
        }
        let n = self.socket.read_buf(&mut self.read_buf).await?;
        if n == 0 {
            return Err(ReplError::Closed);
        }
        Ok(())
    }

    /// The next backend message of the command phase (never CopyBothResponse).
    async fn next_message(&mut self) -> Result<Message, ReplError> {
        loop {
            if let Some((tag, len)) = header(&self.read_buf)? {
                if tag == b'W' {
                    return Err(ReplError::Protocol("unexpected CopyBothResponse".into()));
                }
                if self.read_buf.len() >= len {
                    if let Some(msg) = Message::parse(&mut self.read_buf)? {
                        return Ok(msg);
                    }
                }
            }
            self.fill().await?;
        }
    }

    /// Runs a replication command or SQL query with the simple query protocol; returns its rows.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Row>, ReplError> {
        frontend::query(sql, &mut self.write_buf)?;
        self.flush().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.next_message().await? {
                Message::DataRow(body) => {
                    use fallible_iterator::FallibleIterator;
                    let buf = body.buffer();
                    let mut row = Vec::new();
                    let mut ranges = body.ranges();
                    while let Some(r) = ranges.next()? {
                        row.push(r.map(|r| String::from_utf8_lossy(&buf[r]).into_owned()));
                    }
                    rows.push(row);
                }
                Message::ErrorResponse(body) => error = Some(server_error(body.fields())),
                Message::ReadyForQuery(_) => {
                    return match error {
                        Some(e) => Err(e),
                        None => Ok(rows),
                    }
                }
                _ => {}
            }
        }
    }

    /// Sends `START_REPLICATION` and waits for the CopyBothResponse.
    pub async fn start_replication(
        &mut self,
        slot: &str,
        start: Lsn,
        options: &[(&str, String)],
    ) -> Result<(), ReplError> {
        let opts: Vec<String> = options
            .iter()
            .map(|(k, v)| format!("{} {}", quote_ident(k), quote_literal(v)))
            .collect();
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {} ({})",
            quote_ident(slot),
            start,
            opts.join(", ")
        );
        tracing::debug!(%sql, "starting replication");
        frontend::query(&sql, &mut self.write_buf)?;
        self.flush().await?;
        let mut error = None;
        loop {
            if let Some((tag, len)) = header(&self.read_buf)? {
                if self.read_buf.len() >= len {
                    if tag == b'W' {
                        // CopyBothResponse: format and column formats; nothing we need.
                        self.read_buf.advance(len);
                        return Ok(());
                    }
                    match Message::parse(&mut self.read_buf)? {
                        Some(Message::ErrorResponse(body)) => {
                            error = Some(server_error(body.fields()))
                        }
                        Some(Message::ReadyForQuery(_)) => {
                            return Err(error.unwrap_or_else(|| {
                                ReplError::Protocol("START_REPLICATION returned no stream".into())
                            }))
                        }
                        _ => {}
                    }
                    continue;
                }
            }
            self.fill().await?;
        }
    }
}

async fn negotiate_tls(tcp: TcpStream, cfg: &SourceConfig) -> Result<(Socket, bool), ReplError> {
    if cfg.ssl_mode == SslMode::Disable {
        return Ok((Socket::Plain(tcp), false));
    }
    let mut tcp = tcp;
    let mut req = BytesMut::new();
    frontend::ssl_request(&mut req);
    tcp.write_all(&req).await?;
    let answer = tcp.read_u8().await?;
    if answer != b'S' {
        if cfg.ssl_mode == SslMode::Require {
            return Err(ReplError::Config(
                "sslmode=require but the server does not offer tls".into(),
            ));
        }
        return Ok((Socket::Plain(tcp), false));
    }
    let config = tls::client_config().map_err(ReplError::Tls)?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from(cfg.host.clone())
        .map_err(|e| ReplError::Config(format!("invalid tls server name {}: {e}", cfg.host)))?;
    let stream = connector.connect(name, tcp).await?;
    Ok((Socket::Tls(Box::new(stream)), true))
}

/// Quotes an identifier for a replication command or SQL.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes a string literal for a replication command or SQL.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

//! An HTTP server handle: serves an axum router until it is dropped.

use std::net::SocketAddr;

use axum::Router;

/// A running server.
pub struct Served {
    /// Where it listens.
    pub addr: SocketAddr,
    handle: tokio::task::JoinHandle<()>,
}

impl Served {
    /// Serves `router` on `addr` (`host:port`; the host is honoured, port 0 picks a free one).
    /// `what` names the server in the log if it ever stops.
    pub async fn start(addr: &str, router: Router, what: &'static str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let handle = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, server = what, "server stopped");
            }
        });
        Ok(Self { addr, handle })
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

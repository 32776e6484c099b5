//! The one retry policy: which failures are worth retrying (with backoff, honouring
//! `Retry-After`) and which go to the dead-letter queue with their reason.

use std::time::Duration;

/// How the runtime treats a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Retry with backoff: connect errors, timeouts, 408, 429, 5xx except 501, throttling.
    Transient,
    /// Dead-letter with the reason: validation errors, unknown mappings, other 4xx.
    Permanent,
}

/// A delivery failure.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    /// Classification.
    pub class: Class,
    /// What failed, for logs and the DLQ.
    pub message: String,
    /// Server-requested wait before the next attempt.
    pub retry_after: Option<Duration>,
    /// The cause.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl SinkError {
    /// A transient failure.
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            class: Class::Transient,
            message: message.into(),
            retry_after: None,
            source: None,
        }
    }

    /// A permanent failure.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            class: Class::Permanent,
            message: message.into(),
            retry_after: None,
            source: None,
        }
    }

    /// Whether to retry.
    pub fn is_transient(&self) -> bool {
        self.class == Class::Transient
    }
}

/// For a caller that retries in place a few times (a command, not the runtime's queue): on a
/// transient failure and fewer than 5 tries so far, waits what the server asked (else a
/// second, at most 30 s), counts the try and says to go again.
pub async fn pause_before_retry(e: &SinkError, tries: &mut u32) -> bool {
    if !e.is_transient() || *tries >= 5 {
        return false;
    }
    *tries += 1;
    let wait = e
        .retry_after
        .unwrap_or(Duration::from_secs(1))
        .min(Duration::from_secs(30));
    tokio::time::sleep(wait).await;
    true
}

/// Classifies an HTTP status.
pub fn classify_status(status: u16) -> Class {
    match status {
        408 | 429 => Class::Transient,
        501 => Class::Permanent,
        500..=599 => Class::Transient,
        _ => Class::Permanent,
    }
}

/// A failure from an HTTP response (status, `Retry-After`, and the body as the reason).
pub fn from_response(what: &str, status: u16, retry_after: Option<&str>, body: &str) -> SinkError {
    SinkError {
        class: classify_status(status),
        message: format!(
            "{what}: HTTP {status}: {}",
            body.chars().take(500).collect::<String>()
        ),
        retry_after: retry_after
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs),
        source: None,
    }
}

/// A failure to talk to the server at all (connect, timeout, reset): transient.
pub fn from_transport(what: &str, e: reqwest::Error) -> SinkError {
    SinkError {
        class: Class::Transient,
        message: format!("{what}: {e}"),
        retry_after: None,
        source: Some(Box::new(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_once() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(classify_status(s), Class::Transient, "{s}");
        }
        for s in [400, 401, 403, 404, 409, 422, 501] {
            assert_eq!(classify_status(s), Class::Permanent, "{s}");
        }
        let e = from_response("x", 429, Some("7"), "slow down");
        assert!(e.is_transient());
        assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
    }
}

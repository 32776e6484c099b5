//! The WMS sink: fulfillment requests and cancellations, idempotent by picking reference.

use transforms::RetailEvent;

use super::client::{Created, WmsClient};
use crate::policy::SinkError;

/// Delivers fulfillment events to the WMS. At-least-once from the source; the WMS dedupes by
/// reference: a repeated create with the same lines is success, with other lines (the
/// reservation changed) the order is amended, never duplicated; cancelling twice is harmless.
pub struct WmsSink {
    client: WmsClient,
}

impl WmsSink {
    /// A sink over a client.
    pub fn new(client: WmsClient) -> Self {
        Self { client }
    }

    /// Whether this sink wants the event.
    pub fn wants(event: &RetailEvent) -> bool {
        matches!(
            event,
            RetailEvent::FulfillmentRequested { .. } | RetailEvent::FulfillmentCancelled { .. }
        )
    }

    /// Delivers one event; `Ok(true)` when the WMS already had it.
    pub async fn deliver(&self, event: &RetailEvent) -> Result<bool, SinkError> {
        match event {
            RetailEvent::FulfillmentRequested {
                reference,
                lines,
                ship_to,
                carrier,
                ..
            } => {
                let created = self
                    .client
                    .create(reference, lines, ship_to, carrier.as_deref())
                    .await?;
                if created == Created::Shipped {
                    tracing::warn!(%reference, "the WMS order shipped already; what Odoo reserves now cannot change it");
                }
                Ok(matches!(created, Created::AlreadyThere | Created::Shipped))
            }
            RetailEvent::FulfillmentCancelled { reference } => {
                self.client.cancel(reference).await?;
                Ok(false)
            }
            _ => Ok(false),
        }
    }
}

impl crate::sink::Sink for WmsSink {
    fn name(&self) -> &'static str {
        "wms"
    }

    fn wants(&self) -> crate::sink::Wants {
        std::sync::Arc::new(WmsSink::wants)
    }

    fn batching(&self, partitions: usize) -> crate::sink::Batching {
        crate::sink::Batching {
            slice: partitions.max(1) * 4,
            write_interval: std::time::Duration::ZERO,
        }
    }

    fn deliver<'a>(
        &'a mut self,
        batch: &'a [transforms::Sourced],
        partitions: usize,
    ) -> futures_util::future::BoxFuture<'a, Vec<crate::sink::Outcome>> {
        let sink = &*self;
        Box::pin(crate::sink::per_key(
            batch,
            partitions,
            |e| crate::sink::Sink::key(sink, e),
            move |s| async move { sink.deliver(&s.event).await.map(|_| ()) },
        ))
    }
}

//! The WMS sink: fulfillment requests and cancellations, idempotent by picking reference.

use transforms::RetailEvent;

use super::client::{Created, WmsClient};
use crate::policy::SinkError;

/// Delivers fulfillment events to the WMS. At-least-once from the source; the WMS dedupes by
/// reference (409 on a repeated create is success, cancelling twice is harmless).
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
                Ok(created == Created::AlreadyThere)
            }
            RetailEvent::FulfillmentCancelled { reference } => {
                self.client.cancel(reference).await?;
                Ok(false)
            }
            _ => Ok(false),
        }
    }
}

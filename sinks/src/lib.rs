//! Delivery to Shopify inventory, the WMS and accounting (see the pipeline issue).

//! Pure stages that turn Odoo row changes into retail events (see the pipeline issue).

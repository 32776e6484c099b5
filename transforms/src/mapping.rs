//! Odoo's table and column names, in one place, with the differences between Odoo 17, 18 and 19.

/// Odoo major version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OdooVersion {
    /// 17.0.
    V17,
    /// 18.0 (the primary target).
    #[default]
    V18,
    /// 19.0.
    V19,
}

/// Table and column names the transforms read.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// The version.
    pub version: OdooVersion,
}

impl Mapping {
    /// Names for a version.
    pub fn new(version: OdooVersion) -> Self {
        Self { version }
    }

    /// `stock_quant`.
    pub const QUANT: &'static str = "stock_quant";
    /// `stock_location`.
    pub const LOCATION: &'static str = "stock_location";
    /// `stock_warehouse`.
    pub const WAREHOUSE: &'static str = "stock_warehouse";
    /// `product_product`.
    pub const PRODUCT: &'static str = "product_product";
    /// `stock_picking`.
    pub const PICKING: &'static str = "stock_picking";
    /// `stock_picking_type`.
    pub const PICKING_TYPE: &'static str = "stock_picking_type";
    /// `stock_move`.
    pub const MOVE: &'static str = "stock_move";
    /// `res_partner`.
    pub const PARTNER: &'static str = "res_partner";
    /// `res_country`.
    pub const COUNTRY: &'static str = "res_country";
    /// `res_country_state`.
    pub const COUNTRY_STATE: &'static str = "res_country_state";
    /// `account_move`.
    pub const ACCOUNT_MOVE: &'static str = "account_move";
    /// `account_move_line`.
    pub const ACCOUNT_MOVE_LINE: &'static str = "account_move_line";
    /// `account_account`.
    pub const ACCOUNT: &'static str = "account_account";
    /// `res_currency`.
    pub const CURRENCY: &'static str = "res_currency";
    /// `account_journal`.
    pub const JOURNAL: &'static str = "account_journal";

    /// The unit of measure column of a sale order line (`product_uom` until 18, `product_uom_id`
    /// from 19).
    pub fn sale_line_uom(&self) -> &'static str {
        match self.version {
            OdooVersion::V19 => "product_uom_id",
            _ => "product_uom",
        }
    }

    /// The taxes of a sale order line (`tax_id` until 18, `tax_ids` from 19).
    pub fn sale_line_taxes(&self) -> &'static str {
        match self.version {
            OdooVersion::V19 => "tax_ids",
            _ => "tax_id",
        }
    }

    /// Whether a location row carries `warehouse_id` (stored since 17).
    pub fn location_has_warehouse(&self) -> bool {
        true
    }

    /// The account code: `code` until 17, the company-dependent jsonb `code_store` from 18.
    pub fn account_code_column(&self) -> &'static str {
        match self.version {
            OdooVersion::V17 => "code",
            _ => "code_store",
        }
    }
}

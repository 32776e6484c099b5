//! The accounting sink: every posted Odoo move booked exactly once, idempotent through a
//! `requestid` derived from the move and its posting (stable across retries and restarts).

use std::collections::BTreeMap;

use serde_json::{json, Value};
use transforms::events::JournalEntry;
use transforms::RetailEvent;

use super::client::AccountingClient;
use super::config::{Mode, MAX_BATCH};
use crate::policy::SinkError;

/// The `requestid` of an entry: `odoo-move-<id>-p<posting>` (at most 50 characters).
pub fn request_id(e: &JournalEntry) -> String {
    request_id_of(e, 0)
}

/// The `requestid` of an entry's attempt `generation`: generation 0 is the live path
/// (`odoo-move-<id>-p<posting>`); a replay after a permanent refusal is a new attempt,
/// `…-r<generation>`, since QuickBooks answers a repeated `requestid` with its first answer.
pub fn request_id_of(e: &JournalEntry, generation: u32) -> String {
    let id = if generation == 0 {
        format!("odoo-move-{}-p{}", e.move_id, e.posting)
    } else {
        format!("odoo-move-{}-p{}-r{generation}", e.move_id, e.posting)
    };
    id.chars().take(50).collect()
}

/// The `PrivateNote` of an Odoo move's entry: `odoo account.move <id> posting <n>`.
pub fn private_note(e: &JournalEntry) -> String {
    format!("odoo account.move {} posting {}", e.move_id, e.posting)
}

/// The Odoo move and posting of an entry's `PrivateNote` (entries booked before the posting was
/// noted say `odoo account.move <id>`: posting 1); `None` for an entry odoo-cdc did not book.
pub fn parse_private_note(note: &str) -> Option<(i64, u32)> {
    let rest = note.strip_prefix("odoo account.move ")?;
    let mut words = rest.split_whitespace();
    let id = words.next()?.parse().ok()?;
    let posting = match (words.next(), words.next()) {
        (Some("posting"), Some(n)) => n.parse().ok()?,
        (None, _) => 1,
        _ => return None,
    };
    Some((id, posting))
}

/// A journal entry as the books have it, booked by odoo-cdc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booked {
    /// The books' id.
    pub id: String,
    /// `DocNumber`.
    pub doc_number: String,
    /// The Odoo move.
    pub move_id: i64,
    /// Its posting.
    pub posting: u32,
    /// Sum of the debit lines.
    pub debits: rust_decimal::Decimal,
}

/// An Odoo entry's total: the sum of its debit sides.
pub fn debits_of(e: &JournalEntry) -> rust_decimal::Decimal {
    e.lines
        .iter()
        .filter(|l| l.debit > l.credit)
        .map(|l| l.debit - l.credit)
        .sum()
}

/// The accounting sink.
pub struct AccountingSink {
    client: AccountingClient,
    account_map: BTreeMap<String, String>,
    mode: Mode,
    last_batch: Option<std::time::Instant>,
}

/// QuickBooks' batch requests a minute per company.
pub const BATCHES_PER_MINUTE: u32 = 40;

/// The outcome of one entry in a batch.
#[derive(Debug)]
pub struct ItemResult {
    /// The Odoo move.
    pub move_id: i64,
    /// Success, or why not.
    pub result: Result<(), SinkError>,
}

impl AccountingSink {
    /// A sink over a client with an account map.
    pub fn new(
        client: AccountingClient,
        account_map: BTreeMap<String, String>,
        mode: Mode,
    ) -> Self {
        Self {
            client,
            account_map,
            mode,
            last_batch: None,
        }
    }

    /// Whether entries go out in batches.
    pub fn is_batch(&self) -> bool {
        matches!(self.mode, Mode::Batch { .. })
    }

    /// Whether this sink wants the event.
    pub fn wants(event: &RetailEvent) -> bool {
        matches!(event, RetailEvent::JournalEntry(_))
    }

    /// The accounting system's JournalEntry for an Odoo entry; a missing account mapping is
    /// permanent (it goes to the DLQ until the mapping is fixed).
    pub fn to_body(&self, e: &JournalEntry) -> Result<Value, SinkError> {
        let mut lines = Vec::new();
        for l in &e.lines {
            let account = self.account_map.get(&l.account_code).ok_or_else(|| {
                SinkError::permanent(format!(
                    "{}: no account mapping for Odoo account {}",
                    e.name, l.account_code
                ))
            })?;
            let (amount, posting) = if l.debit > l.credit {
                (l.debit - l.credit, "Debit")
            } else {
                (l.credit - l.debit, "Credit")
            };
            let mut detail = json!({"PostingType": posting, "AccountRef": {"value": account}});
            if let Some((id, name)) = &e.customer {
                if l.account_type == "asset_receivable" {
                    detail["Entity"] = json!({"Type": "Customer", "EntityRef": {"value": id.to_string(), "name": name}});
                }
            }
            let amount: Value =
                serde_json::from_str(&amount.normalize().to_string()).map_err(|_| {
                    SinkError::permanent(format!("{}: amount {amount} is not a number", e.name))
                })?;
            lines.push(json!({"Amount": amount, "DetailType": "JournalEntryLineDetail", "Description": l.description, "JournalEntryLineDetail": detail}));
        }
        let mut body = json!({"DocNumber": e.name.chars().take(21).collect::<String>(), "Line": lines, "PrivateNote": private_note(e)});
        if let Some(d) = &e.date {
            body["TxnDate"] = json!(d);
        }
        if let Some(c) = &e.currency {
            body["CurrencyRef"] = json!({"value": c});
        }
        Ok(body)
    }

    /// The entries odoo-cdc booked (by their `PrivateNote`) dated `since` or later, 1,000 to a
    /// query, for reconciliation.
    pub async fn booked(&mut self, since: Option<&str>) -> Result<Vec<Booked>, SinkError> {
        let filter = since
            .filter(|d| d.chars().all(|c| c.is_ascii_digit() || c == '-'))
            .map(|d| format!(" WHERE TxnDate >= '{d}'"))
            .unwrap_or_default();
        self.booked_where(&filter).await
    }

    /// The entries odoo-cdc booked for an Odoo move of this name (its `DocNumber`, the name's
    /// first 21 characters), for the workbench's order trail. A name QuickBooks' query language
    /// cannot quote (one with a quote or a backslash) finds nothing.
    pub async fn booked_as(&mut self, name: &str) -> Result<Vec<Booked>, SinkError> {
        let doc: String = name.chars().take(21).collect();
        if doc.is_empty() || doc.contains(['\'', '\\']) {
            return Ok(Vec::new());
        }
        self.booked_where(&format!(" WHERE DocNumber = '{doc}'"))
            .await
    }

    async fn booked_where(&mut self, filter: &str) -> Result<Vec<Booked>, SinkError> {
        let mut out = Vec::new();
        for page in 0.. {
            let q = format!(
                "SELECT * FROM JournalEntry{filter} STARTPOSITION {} MAXRESULTS 1000",
                page * 1000 + 1
            );
            // Queries count against QuickBooks' 10 requests a second: a throttled page waits
            // (Retry-After, else a second) and is asked again, a few times.
            let mut tries = 0;
            let answer = loop {
                match self.client.query(&q).await {
                    Err(e) if crate::policy::pause_before_retry(&e, &mut tries).await => {}
                    other => break other?,
                }
            };
            let entries = answer["JournalEntry"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for e in &entries {
                let Some((move_id, posting)) =
                    e["PrivateNote"].as_str().and_then(parse_private_note)
                else {
                    continue;
                };
                let debits = e["Line"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|l| l["JournalEntryLineDetail"]["PostingType"] == "Debit")
                    .filter_map(|l| {
                        l["Amount"]
                            .as_number()
                            .and_then(|n| n.to_string().parse::<rust_decimal::Decimal>().ok())
                    })
                    .sum();
                out.push(Booked {
                    id: e["Id"].as_str().unwrap_or("").to_string(),
                    doc_number: e["DocNumber"].as_str().unwrap_or("").to_string(),
                    move_id,
                    posting,
                    debits,
                });
            }
            if entries.len() < 1000 {
                break;
            }
        }
        Ok(out)
    }

    /// Books one entry (real-time mode).
    pub async fn deliver(&mut self, e: &JournalEntry) -> Result<(), SinkError> {
        self.deliver_as(e, 0).await
    }

    /// Books one entry as attempt `generation` (see [`request_id_of`]).
    pub async fn deliver_as(&mut self, e: &JournalEntry, generation: u32) -> Result<(), SinkError> {
        let body = self.to_body(e)?;
        self.client
            .post("journalentry", &request_id_of(e, generation), &body)
            .await
            .map(drop)
    }

    /// Books several entries: one call each in real-time mode, batches of at most 30 otherwise.
    /// Returns one result per entry (a Fault inside a batch concerns only its item).
    pub async fn deliver_all(&mut self, entries: &[JournalEntry]) -> Vec<ItemResult> {
        let mut out = Vec::new();
        match self.mode {
            Mode::RealTime => {
                for e in entries {
                    let result = self.deliver(e).await;
                    out.push(ItemResult {
                        move_id: e.move_id,
                        result,
                    });
                }
            }
            Mode::Batch { size, .. } => {
                for chunk in entries.chunks(size.clamp(1, MAX_BATCH)) {
                    let mut items = Vec::new();
                    for e in chunk {
                        match self.to_body(e) {
                            Ok(b) => items.push((request_id(e), b, e.move_id)),
                            Err(err) => out.push(ItemResult {
                                move_id: e.move_id,
                                result: Err(err),
                            }),
                        }
                    }
                    if items.is_empty() {
                        continue;
                    }
                    let body = AccountingClient::batch_body(
                        &items
                            .iter()
                            .map(|(r, b, _)| (r.clone(), b.clone()))
                            .collect::<Vec<_>>(),
                    );
                    // The batch's own requestid: the first and last item make it stable for a retry of the same chunk.
                    let batch_id = format!("batch-{}-{}", items[0].0, items.len())
                        .chars()
                        .take(50)
                        .collect::<String>();
                    // QuickBooks takes 40 batch requests a minute per company: space them.
                    if let (Some(last), Mode::Batch { spacing, .. }) = (self.last_batch, self.mode)
                    {
                        let wait = spacing.saturating_sub(last.elapsed());
                        if !wait.is_zero() {
                            tokio::time::sleep(wait).await;
                        }
                    }
                    self.last_batch = Some(std::time::Instant::now());
                    match self.client.post("batch", &batch_id, &body).await {
                        Err(e) => {
                            let transient = e.is_transient();
                            for (_, _, move_id) in &items {
                                let err = if transient {
                                    SinkError::transient(e.message.clone())
                                } else {
                                    SinkError::permanent(e.message.clone())
                                };
                                out.push(ItemResult {
                                    move_id: *move_id,
                                    result: Err(err),
                                });
                            }
                        }
                        Ok(v) => {
                            let responses = v["BatchItemResponse"]
                                .as_array()
                                .cloned()
                                .unwrap_or_default();
                            for (rid, _, move_id) in &items {
                                let r = responses
                                    .iter()
                                    .find(|r| r["bId"].as_str() == Some(rid.as_str()));
                                let result = match r {
                                    Some(r) if r.get("JournalEntry").is_some() => Ok(()),
                                    Some(r) => Err(SinkError::permanent(format!(
                                        "move {move_id}: {}",
                                        r.get("Fault").cloned().unwrap_or(Value::Null)
                                    ))),
                                    None => Err(SinkError::transient(format!(
                                        "move {move_id}: missing from the batch answer"
                                    ))),
                                };
                                out.push(ItemResult {
                                    move_id: *move_id,
                                    result,
                                });
                            }
                        }
                    }
                }
            }
        }
        out
    }
}

impl crate::sink::Sink for AccountingSink {
    fn name(&self) -> &'static str {
        "accounting"
    }

    fn wants(&self) -> crate::sink::Wants {
        std::sync::Arc::new(AccountingSink::wants)
    }

    fn batching(&self, _partitions: usize) -> crate::sink::Batching {
        crate::sink::Batching {
            // Two batch calls of 30 (QuickBooks spaces them 1.5 s apart), or 16 single calls.
            slice: if self.is_batch() { 60 } else { 16 },
            write_interval: std::time::Duration::ZERO,
        }
    }

    fn deliver<'a>(
        &'a mut self,
        batch: &'a [transforms::Sourced],
        _partitions: usize,
    ) -> futures_util::future::BoxFuture<'a, Vec<crate::sink::Outcome>> {
        use crate::sink::Outcome;
        Box::pin(async move {
            if self.is_batch() {
                let entries: Vec<JournalEntry> = batch
                    .iter()
                    .filter_map(|s| match &s.event {
                        RetailEvent::JournalEntry(e) => Some(e.clone()),
                        _ => None,
                    })
                    .collect();
                let results = self.deliver_all(&entries).await;
                return batch
                    .iter()
                    .map(|s| {
                        let r = match &s.event {
                            RetailEvent::JournalEntry(e) => {
                                results.iter().find(|r| r.move_id == e.move_id)
                            }
                            _ => None,
                        };
                        match r.map(|r| &r.result) {
                            Some(Err(e)) if e.is_transient() => {
                                let mut copy = SinkError::transient(e.message.clone());
                                copy.retry_after = e.retry_after;
                                Outcome::Retry(Some(copy))
                            }
                            Some(Err(e)) => Outcome::Dead(e.message.clone()),
                            _ => Outcome::Done,
                        }
                    })
                    .collect();
            }
            // The token store is shared state: entries go one at a time, in order.
            let mut out = Vec::with_capacity(batch.len());
            for s in batch {
                let RetailEvent::JournalEntry(entry) = &s.event else {
                    out.push(Outcome::Done);
                    continue;
                };
                if matches!(out.last(), Some(Outcome::Retry(_))) {
                    out.push(Outcome::Retry(None));
                    continue;
                }
                out.push(crate::sink::outcome(
                    AccountingSink::deliver(self, entry).await,
                ));
            }
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::parse_private_note;

    #[test]
    fn private_notes_name_the_move_and_its_posting() {
        assert_eq!(
            parse_private_note("odoo account.move 42 posting 3"),
            Some((42, 3))
        );
        // Booked before the posting was noted.
        assert_eq!(parse_private_note("odoo account.move 42"), Some((42, 1)));
        assert_eq!(parse_private_note("odoo account.move x"), None);
        assert_eq!(parse_private_note("odoo account.move 42 draft"), None);
        assert_eq!(parse_private_note("rent for December"), None);
    }
}

//! `account_move` reaching `posted` (with its lines) becomes a balanced `JournalEntry`: invoices,
//! credit notes (reversing entries) and payments. Only what the books need leaves Odoo: account
//! codes and types, amounts, the customer's id and name (no email, no address).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rust_decimal::Decimal;

use crate::change::{decimal, int, text, translated, Op, RowChange};
use crate::events::{EntryKind, JournalEntry, JournalLine, RetailEvent};
use crate::mapping::Mapping;

#[derive(Debug, Clone, Default)]
struct Move {
    name: String,
    state: String,
    move_type: String,
    partner: Option<i64>,
    currency: Option<i64>,
    date: Option<String>,
    reversed: Option<i64>,
    postings: u32,
    /// Odoo's `write_date` (UTC, `YYYY-MM-DD HH:MM:SS[.ffffff]`).
    write_date: Option<String>,
}

#[derive(Debug, Clone)]
struct Line {
    account: Option<i64>,
    debit: Decimal,
    credit: Decimal,
    name: String,
}

/// The accounting stage's state.
#[derive(Debug, Default)]
pub struct Accounting {
    mapping: Option<Mapping>,
    moves: HashMap<i64, Move>,
    lines: HashMap<i64, BTreeMap<i64, Line>>,
    line_move: HashMap<i64, i64>,
    accounts: HashMap<i64, (String, String)>,
    currencies: HashMap<i64, String>,
    partners: HashMap<i64, String>,
    before: HashMap<i64, String>,
    touched: BTreeSet<i64>,
    /// Moves already re-booked in the current replay window.
    replayed: BTreeSet<i64>,
}

impl Accounting {
    /// A stage reading the given Odoo version's columns.
    pub fn new(mapping: Mapping) -> Self {
        Self {
            mapping: Some(mapping),
            ..Default::default()
        }
    }

    /// Applies one change of the current transaction.
    pub fn apply(&mut self, c: &RowChange) {
        let Some(id) = c.id() else { return };
        let row = c.new.as_ref();
        match c.table.as_str() {
            Mapping::ACCOUNT_MOVE => {
                let prev = self.moves.get(&id).cloned();
                self.before
                    .entry(id)
                    .or_insert_with(|| prev.as_ref().map(|m| m.state.clone()).unwrap_or_default());
                if c.op == Op::Delete {
                    self.moves.remove(&id);
                    self.lines.remove(&id);
                    return;
                }
                let Some(r) = row else { return };
                self.moves.insert(
                    id,
                    Move {
                        name: text(r, "name").unwrap_or("/").to_string(),
                        state: text(r, "state").unwrap_or_default().to_string(),
                        move_type: text(r, "move_type").unwrap_or_default().to_string(),
                        partner: int(r, "partner_id"),
                        currency: int(r, "currency_id"),
                        date: text(r, "date").map(str::to_string),
                        reversed: int(r, "reversed_entry_id"),
                        postings: prev.map_or(0, |m| m.postings),
                        write_date: text(r, "write_date").map(str::to_string),
                    },
                );
                self.touched.insert(id);
            }
            Mapping::ACCOUNT_MOVE_LINE => {
                let move_id = row
                    .and_then(|r| int(r, "move_id"))
                    .or_else(|| self.line_move.get(&id).copied());
                let Some(move_id) = move_id else { return };
                if c.op == Op::Delete {
                    if let Some(ls) = self.lines.get_mut(&move_id) {
                        ls.remove(&id);
                    }
                    self.line_move.remove(&id);
                    return;
                }
                let Some(r) = row else { return };
                self.line_move.insert(id, move_id);
                self.lines.entry(move_id).or_default().insert(
                    id,
                    Line {
                        account: int(r, "account_id"),
                        debit: decimal(r, "debit").unwrap_or_default(),
                        credit: decimal(r, "credit").unwrap_or_default(),
                        name: text(r, "name").unwrap_or_default().to_string(),
                    },
                );
            }
            Mapping::ACCOUNT => {
                if let Some(r) = row {
                    let col = self
                        .mapping
                        .as_ref()
                        .map_or("code_store", Mapping::account_code_column);
                    let code = match translated(r, col) {
                        Some(c) => c,
                        None => text(r, "code").unwrap_or_default().to_string(),
                    };
                    self.accounts.insert(
                        id,
                        (
                            code,
                            text(r, "account_type").unwrap_or_default().to_string(),
                        ),
                    );
                }
            }
            Mapping::CURRENCY => {
                if let Some(name) = row.and_then(|r| text(r, "name")) {
                    self.currencies.insert(id, name.to_string());
                }
            }
            Mapping::PARTNER => {
                if let Some(name) = row.and_then(|r| text(r, "name")) {
                    self.partners.insert(id, name.to_string());
                }
            }
            _ => {}
        }
    }

    /// Ends a restore: nothing is booked and no posting is counted (the replay window books
    /// what it touches).
    pub fn finish_quietly(&mut self) {
        self.before.clear();
        self.touched.clear();
    }

    /// After a lost slot was recreated: a journal entry for every posted move written at or
    /// after `since` (UTC, `YYYY-MM-DD HH:MM:SS`; every posted move when None), under the
    /// posting it already had, so one booked before the gap is a no-op (same `requestid`).
    pub fn resync(&mut self, since: Option<&str>) -> Vec<RetailEvent> {
        let mut ids: Vec<i64> = self
            .moves
            .iter()
            .filter(|(_, m)| m.state == "posted")
            .filter(|(_, m)| match (since, m.write_date.as_deref()) {
                (None, _) => true,
                (Some(s), Some(w)) => w >= s,
                // No write_date: cannot tell, so it is booked again (idempotent).
                (Some(_), None) => true,
            })
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        let mut out = Vec::new();
        for id in ids {
            let Some(m) = self.moves.get_mut(&id) else {
                continue;
            };
            m.postings = m.postings.max(1);
            let m = m.clone();
            out.push(self.entry(id, &m, m.postings));
        }
        out
    }

    /// Ends the transaction: a journal entry for every move that became `posted`. When
    /// `replay` is set (changes re-read after a restart, whose state may already be newer), every
    /// touched posted move is booked again: the accounting system's requestid makes it a no-op
    /// if it was booked before the restart.
    pub fn finish(&mut self, replay: bool) -> Vec<RetailEvent> {
        let before = std::mem::take(&mut self.before);
        let mut out = Vec::new();
        for id in std::mem::take(&mut self.touched) {
            let Some(m) = self.moves.get(&id).cloned() else {
                continue;
            };
            let was = before.get(&id).map(String::as_str).unwrap_or("");
            if m.state != "posted" || (was == "posted" && !replay) {
                continue;
            }
            // A transition counts a new posting; a replayed posted move is booked again once,
            // under the posting it already had (the requestid then dedupes it).
            let postings = if was == "posted" {
                if !self.replayed.insert(id) {
                    continue;
                }
                m.postings.max(1)
            } else {
                m.postings + 1
            };
            if let Some(mm) = self.moves.get_mut(&id) {
                mm.postings = postings;
            }
            out.push(self.entry(id, &m, postings));
        }
        out
    }

    fn entry(&self, id: i64, m: &Move, posting: u32) -> RetailEvent {
        let unmappable = |reason: String| RetailEvent::Unmappable {
            reason,
            table: Mapping::ACCOUNT_MOVE.into(),
            row_id: id,
        };
        let mut lines = Vec::new();
        let (mut debit, mut credit) = (Decimal::ZERO, Decimal::ZERO);
        for l in self
            .lines
            .get(&id)
            .map(|ls| ls.values().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            if l.debit.is_zero() && l.credit.is_zero() {
                continue;
            }
            let Some((code, ty)) = l.account.and_then(|a| self.accounts.get(&a)) else {
                return unmappable(format!(
                    "move {} has a line on an unknown account {:?}",
                    m.name, l.account
                ));
            };
            debit += l.debit;
            credit += l.credit;
            lines.push(JournalLine {
                account_code: code.clone(),
                account_type: ty.clone(),
                debit: l.debit.normalize(),
                credit: l.credit.normalize(),
                description: l.name.clone(),
            });
        }
        if lines.is_empty() {
            return unmappable(format!("posted move {} has no lines", m.name));
        }
        if debit != credit {
            return unmappable(format!(
                "posted move {} is not balanced: debit {debit}, credit {credit}",
                m.name
            ));
        }
        let kind = match m.move_type.as_str() {
            "out_invoice" => EntryKind::Invoice,
            "out_refund" => EntryKind::CreditNote {
                reverses: m
                    .reversed
                    .and_then(|r| self.moves.get(&r))
                    .map(|r| r.name.clone()),
            },
            _ => EntryKind::Entry,
        };
        RetailEvent::JournalEntry(JournalEntry {
            move_id: id,
            posting,
            name: m.name.clone(),
            kind,
            date: m.date.clone(),
            currency: m.currency.and_then(|c| self.currencies.get(&c).cloned()),
            customer: m
                .partner
                .map(|p| (p, self.partners.get(&p).cloned().unwrap_or_default())),
            lines,
        })
    }
}

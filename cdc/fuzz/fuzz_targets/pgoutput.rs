//! Feeds arbitrary bytes to the replication framing, the pgoutput codec, the decoder (relation
//! cache and streamed-transaction spool) and the typed-value parser: none may panic.
#![no_main]

use cdc::decoder::{Decoder, Event, EventHandler};
use cdc::pgoutput::{parse, parse_replication};
use cdc::{Lsn, ReplError};
use libfuzzer_sys::fuzz_target;

struct Sink;

impl EventHandler for Sink {
    type Error = ReplError;

    fn event(&mut self, event: Event<'_>) -> Result<(), ReplError> {
        if let Event::Change(c) = event {
            for t in c.new.into_iter().chain(c.old.map(|o| o.tuple())) {
                for (col, info) in t.columns.iter().zip(&c.relation.columns) {
                    let _ = cdc::value::decode_column(col, info.type_oid);
                }
            }
        }
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = parse_replication(data);
    let _ = parse(data, false);
    let _ = parse(data, true);
    if let Ok(s) = std::str::from_utf8(data) {
        for oid in [16, 17, 20, 700, 701, 1082, 1114, 1184, 1700, 2950, 3802, 1007, 1009, 1231] {
            let _ = cdc::value::decode_text(s, oid);
        }
    }
    // A sequence of messages, each prefixed by a one-byte length.
    let mut decoder = Decoder::new(256);
    let mut rest = data;
    let mut lsn = 0u64;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (msg, next) = tail.split_at(len);
        lsn += 1;
        let _ = decoder.process(Lsn(lsn), msg, &mut Sink);
        rest = next;
    }
});

use super::*;
use bytes::BufMut;

fn cstr(b: &mut BytesMut, s: &str) {
    b.put_slice(s.as_bytes());
    b.put_u8(0);
}

fn tuple(b: &mut BytesMut, cols: &[Option<Option<&str>>]) {
    b.put_i16(cols.len() as i16);
    for c in cols {
        match c {
            None => b.put_u8(b'u'),
            Some(None) => b.put_u8(b'n'),
            Some(Some(v)) => {
                b.put_u8(b't');
                b.put_i32(v.len() as i32);
                b.put_slice(v.as_bytes());
            }
        }
    }
}

#[test]
fn parses_xlogdata_and_keepalive() {
    let mut b = BytesMut::new();
    b.put_u8(b'w');
    b.put_u64(0x10);
    b.put_u64(0x20);
    b.put_i64(7);
    b.put_slice(b"payload");
    assert_eq!(
        parse_replication(&b).unwrap(),
        ReplicationMessage::XLogData {
            wal_start: Lsn(0x10),
            wal_end: Lsn(0x20),
            send_time: 7,
            data: b"payload"
        }
    );
    let mut k = BytesMut::new();
    k.put_u8(b'k');
    k.put_u64(0x30);
    k.put_i64(9);
    k.put_u8(1);
    assert_eq!(
        parse_replication(&k).unwrap(),
        ReplicationMessage::PrimaryKeepalive {
            wal_end: Lsn(0x30),
            send_time: 9,
            reply_requested: true
        }
    );
    assert_eq!(
        parse_replication(&k[..10]),
        Err(DecodeError::Truncated("keepalive send time"))
    );
}

#[test]
fn status_update_has_the_documented_layout() {
    let mut out = BytesMut::new();
    encode_status_update(Lsn(1), Lsn(2), Lsn(3), 4, true, &mut out);
    assert_eq!(out.len(), 1 + 4 + 34);
    assert_eq!(&out[..6], &[b'd', 0, 0, 0, 38, b'r']);
    assert_eq!(&out[6..14], &1u64.to_be_bytes());
    assert_eq!(&out[14..22], &2u64.to_be_bytes());
    assert_eq!(out[38], 1);
}

#[test]
fn parses_begin_relation_update_commit() {
    let mut b = BytesMut::new();
    b.put_u8(b'B');
    b.put_u64(0x100);
    b.put_i64(42);
    b.put_u32(731);
    assert_eq!(
        parse(&b, false).unwrap(),
        LogicalMessage::Begin(Begin {
            final_lsn: Lsn(0x100),
            commit_time: 42,
            xid: 731
        })
    );

    let mut r = BytesMut::new();
    r.put_u8(b'R');
    r.put_u32(16384);
    cstr(&mut r, "public");
    cstr(&mut r, "sale_order");
    r.put_u8(b'd');
    r.put_i16(2);
    r.put_u8(1);
    cstr(&mut r, "id");
    r.put_u32(23);
    r.put_i32(-1);
    r.put_u8(0);
    cstr(&mut r, "name");
    r.put_u32(1043);
    r.put_i32(-1);
    let LogicalMessage::Relation(rel) = parse(&r, false).unwrap() else {
        panic!("not a relation")
    };
    assert_eq!(rel.name, "sale_order");
    assert!(rel.columns[0].is_key());
    assert!(!rel.columns[1].is_key());
    assert_eq!(rel.columns[1].type_oid, 1043);

    let mut u = BytesMut::new();
    u.put_u8(b'U');
    u.put_u32(16384);
    u.put_u8(b'K');
    tuple(&mut u, &[Some(Some("1")), Some(None)]);
    u.put_u8(b'N');
    tuple(&mut u, &[Some(Some("2")), None]);
    let LogicalMessage::Update { old, new, .. } = parse(&u, false).unwrap() else {
        panic!("not an update")
    };
    assert_eq!(
        old,
        Some(OldTuple::Key(TupleData {
            columns: vec![Column::Text(b"1"), Column::Null]
        }))
    );
    assert_eq!(
        new.columns,
        vec![Column::Text(b"2"), Column::UnchangedToast]
    );

    let mut c = BytesMut::new();
    c.put_u8(b'C');
    c.put_u8(0);
    c.put_u64(0x100);
    c.put_u64(0x130);
    c.put_i64(42);
    assert_eq!(
        parse(&c, false).unwrap(),
        LogicalMessage::Commit(Commit {
            flags: 0,
            commit_lsn: Lsn(0x100),
            end_lsn: Lsn(0x130),
            commit_time: 42
        })
    );
}

#[test]
fn streamed_changes_carry_the_xid() {
    let mut i = BytesMut::new();
    i.put_u8(b'I');
    i.put_u32(900);
    i.put_u32(16384);
    i.put_u8(b'N');
    tuple(&mut i, &[Some(Some("x"))]);
    let LogicalMessage::Insert { xid, relation, .. } = parse(&i, true).unwrap() else {
        panic!("not an insert")
    };
    assert_eq!((xid, relation), (Some(900), 16384));
    // The same bytes outside a stream are a different (and here malformed) message.
    assert!(parse(&i, false).is_err());

    let mut a = BytesMut::new();
    a.put_u8(b'A');
    a.put_u32(900);
    a.put_u32(901);
    assert_eq!(
        parse(&a, false).unwrap(),
        LogicalMessage::StreamAbort {
            xid: 900,
            subxid: 901
        }
    );
}

#[test]
fn truncated_and_hostile_input_is_an_error_not_a_panic() {
    let mut i = BytesMut::new();
    i.put_u8(b'I');
    i.put_u32(1);
    i.put_u8(b'N');
    i.put_i16(i16::MAX);
    assert!(parse(&i, false).is_err());

    let mut t = BytesMut::new();
    t.put_u8(b'T');
    t.put_u32(u32::MAX);
    t.put_u8(0);
    assert!(parse(&t, false).is_err());

    let mut neg = BytesMut::new();
    neg.put_u8(b'I');
    neg.put_u32(1);
    neg.put_u8(b'N');
    neg.put_i16(1);
    neg.put_u8(b't');
    neg.put_i32(-5);
    assert!(matches!(
        parse(&neg, false),
        Err(DecodeError::Invalid { .. })
    ));
    assert!(matches!(
        parse(b"Z", false),
        Err(DecodeError::UnknownTag { tag: b'Z', .. })
    ));
    assert!(parse(b"", false).is_err());
}

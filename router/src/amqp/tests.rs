use super::*;
use std::io::{self, Read};

fn round_trip(v: Value) {
    let bytes = v.to_bytes();
    let (back, used) = Value::decode(&bytes).unwrap();
    assert_eq!(used, bytes.len(), "{v:?}");
    assert_eq!(back, v);
}

#[test]
fn scalars_round_trip_in_their_compact_and_wide_forms() {
    for v in [
        Value::Null,
        Value::Bool(true),
        Value::Bool(false),
        Value::Ubyte(7),
        Value::Ushort(65535),
        Value::Uint(0),
        Value::Uint(200),
        Value::Uint(70000),
        Value::Ulong(0),
        Value::Ulong(0x18),
        Value::Ulong(u64::MAX),
        Value::Int(-5),
        Value::Int(-100000),
        Value::Long(100),
        Value::Long(i64::MIN),
        Value::Timestamp(1_700_000_000_000),
        Value::Uuid([9; 16]),
        Value::Binary(vec![1, 2, 3]),
        Value::Binary(vec![0xab; 300]),
        Value::str("svc1"),
        Value::String("x".repeat(1000)),
        Value::Symbol("amqp:internal-error".into()),
    ] {
        round_trip(v);
    }
}

#[test]
fn compact_encodings_are_the_specs() {
    assert_eq!(Value::Uint(0).to_bytes(), [0x43]);
    assert_eq!(Value::Uint(5).to_bytes(), [0x52, 5]);
    assert_eq!(Value::Ulong(0x12).to_bytes(), [0x53, 0x12]);
    assert_eq!(Value::str("ab").to_bytes(), [0xa1, 2, b'a', b'b']);
    assert_eq!(Value::List(vec![]).to_bytes(), [0x45]);
    assert_eq!(
        Value::List(vec![Value::Null, Value::Bool(true)]).to_bytes(),
        [0xc0, 3, 2, 0x40, 0x41]
    );
}

#[test]
fn compound_values_round_trip() {
    round_trip(Value::List(vec![
        Value::Uint(1),
        Value::str("a"),
        Value::List(vec![Value::Null]),
    ]));
    round_trip(Value::List((0..300).map(Value::Uint).collect()));
    round_trip(Value::Map(vec![(Value::Symbol("cost".into()), Value::Uint(3))]));
    round_trip(Value::Array(vec![
        Value::Symbol("a".into()),
        Value::Symbol("bc".into()),
    ]));
    round_trip(Value::Array(vec![Value::Uint(1), Value::Uint(100000)]));
    round_trip(Value::described(0x28, vec![Value::str("svc1")]));
}

#[test]
fn decoding_rejects_garbage() {
    assert!(Value::decode(&[0xa1, 5, b'a']).is_err());
    assert!(Value::decode(&[0xc0, 9, 1, 0x40]).is_err());
    assert!(Value::decode(&[0xff]).is_err());
    assert!(Value::decode(&[0xc1, 2, 1, 0x40]).is_err());
    assert!(Frame::decode(&[0, 0, 0, 8, 2, 1, 0, 0]).is_err());
    assert!(Frame::decode(&[0, 0, 0, 9, 2, 0, 0, 0]).is_err());
}

#[test]
fn performatives_round_trip_through_frames() {
    let ps = vec![
        Performative::Open {
            container_id: "c0".into(),
            max_frame_size: 16384,
            idle_time_out_ms: 3000,
            properties: vec![(Value::Symbol("cost".into()), Value::Uint(2))],
        },
        Performative::Begin {
            remote_channel: None,
            next_outgoing_id: 0,
            incoming_window: 1 << 20,
            outgoing_window: 7,
        },
        Performative::Begin {
            remote_channel: Some(0),
            next_outgoing_id: 1,
            incoming_window: 2,
            outgoing_window: 3,
        },
        Performative::Attach {
            name: "c1/1".into(),
            handle: 1,
            role_receiver: false,
            source: Some("svc1".into()),
            target: Some("svc1".into()),
        },
        Performative::Attach {
            name: "c1/1".into(),
            handle: 4,
            role_receiver: true,
            source: None,
            target: None,
        },
        Performative::Flow {
            handle: Some(3),
            delivery_count: 0,
            link_credit: 64,
        },
        Performative::Flow {
            handle: None,
            delivery_count: 0,
            link_credit: 0,
        },
        Performative::Transfer {
            handle: 3,
            delivery_id: 77,
            settled: true,
            more: false,
        },
        Performative::Transfer {
            handle: 0,
            delivery_id: 78,
            settled: true,
            more: true,
        },
        Performative::Detach {
            handle: 3,
            closed: true,
            error: None,
        },
        Performative::Detach {
            handle: 3,
            closed: true,
            error: Some("connection refused".into()),
        },
        Performative::End,
        Performative::Close { error: None },
        Performative::Close {
            error: Some("bye".into()),
        },
    ];
    for p in ps {
        let mut f = Frame::new(0, p.clone());
        if matches!(p, Performative::Transfer { .. }) {
            f.payload = data_section(b"hello");
        }
        let bytes = f.encode();
        assert_eq!(&bytes[4..6], &[2, 0], "doff 2, type AMQP");
        assert_eq!(u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize, bytes.len());
        let back = Frame::decode(&bytes).unwrap();
        assert_eq!(back, f);
        let mut r = &bytes[..];
        assert_eq!(read_frame(&mut r).unwrap().unwrap(), f);
    }
}

#[test]
fn heartbeat_is_an_empty_eight_byte_frame() {
    let b = Frame::heartbeat().encode();
    assert_eq!(b, [0, 0, 0, 8, 2, 0, 0, 0]);
    assert_eq!(Frame::decode(&b).unwrap(), Frame::heartbeat());
}

#[test]
fn attach_carries_the_address_in_source_and_target() {
    let p = Performative::Attach {
        name: "s".into(),
        handle: 1,
        role_receiver: false,
        source: Some("backend:8080".into()),
        target: Some("backend:8080".into()),
    };
    let bytes = p.to_value().to_bytes();
    // 0x00 0x53 0x12: described by smallulong 0x12 (attach)
    assert_eq!(&bytes[..3], &[0x00, 0x53, 0x12]);
    let hay = String::from_utf8_lossy(&bytes);
    assert!(hay.contains("backend:8080"));
}

#[test]
fn message_data_concatenates_data_sections() {
    let mut p = data_section(b"ab");
    p.extend(data_section(&[7u8; 400]));
    let d = message_data(&p).unwrap();
    assert_eq!(d.len(), 402);
    assert_eq!(&d[..2], b"ab");
}

#[test]
fn fixed_transfer_head_decodes_as_a_transfer_with_one_data_section() {
    let data = b"some stream bytes";
    let mut f = vec![0u8; TRANSFER_HEAD];
    write_transfer_head(&mut f, 7, 300, data.len());
    f.extend(data);
    let back = Frame::decode(&f).unwrap();
    assert_eq!(
        back.body,
        Some(Performative::Transfer {
            handle: 7,
            delivery_id: 300,
            settled: true,
            more: false
        })
    );
    assert_eq!(message_data(&back.payload).unwrap(), data);
    let (h, r) = transfer_data(&f).unwrap();
    assert_eq!((h, &f[r]), (7, &data[..]));
}

#[test]
fn transfer_data_finds_the_data_of_generically_encoded_transfers_only() {
    let mut f = Frame::new(
        0,
        Performative::Transfer {
            handle: 3,
            delivery_id: 1,
            settled: true,
            more: false,
        },
    );
    f.payload = data_section(&[9u8; 300]);
    let bytes = f.encode();
    let (h, r) = transfer_data(&bytes).unwrap();
    assert_eq!((h, r.len()), (3, 300));
    assert!(bytes[r].iter().all(|b| *b == 9));
    // Two data sections, or no transfer at all: decoded in full by the caller.
    f.payload.extend(data_section(b"x"));
    assert_eq!(transfer_data(&f.encode()), None);
    assert_eq!(transfer_data(&Frame::new(0, Performative::End).encode()), None);
    assert_eq!(transfer_data(&Frame::heartbeat().encode()), None);
}

#[test]
fn frame_reader_splits_a_stream_read_in_odd_pieces_into_frames() {
    struct Trickle(Vec<u8>, usize);
    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.1).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0.drain(..n);
            Ok(n)
        }
    }
    let mut wire = PROTOCOL_HEADER.to_vec();
    let mut frames = Vec::new();
    for i in 0..50u32 {
        let mut f = vec![0u8; TRANSFER_HEAD];
        let len = (i as usize * 997) % 20000;
        write_transfer_head(&mut f, i, i, len);
        f.extend(std::iter::repeat_n(i as u8, len));
        frames.push(f);
    }
    frames.push(Frame::heartbeat().encode());
    for f in &frames {
        wire.extend(f);
    }
    for piece in [1, 7, 4096, 1 << 20] {
        let mut r = FrameReader::new(Trickle(wire.clone(), piece), 32 * 1024);
        assert_eq!(r.read_raw(8).unwrap(), PROTOCOL_HEADER);
        for f in &frames {
            let got = r.next_frame().unwrap().unwrap();
            assert_eq!(&r.buf()[got], &f[..], "pieces of {piece}");
        }
        assert!(r.next_frame().unwrap().is_none());
    }
    let mut big = vec![0u8; TRANSFER_HEAD];
    write_transfer_head(&mut big, 1, 1, 40000);
    big.extend(vec![0u8; 40000]);
    let mut r = FrameReader::new(&big[..], 32 * 1024);
    assert!(r.next_frame().is_err(), "a frame over max-frame-size is refused");
}

#[test]
fn read_frame_reports_clean_eof_and_rejects_huge_frames() {
    let mut empty: &[u8] = &[];
    assert!(read_frame(&mut empty).unwrap().is_none());
    let mut huge: &[u8] = &[0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0];
    assert!(read_frame(&mut huge).is_err());
}

//! Inputs found by the fuzz targets (fuzz/, figures in docs/reliability.md) and their
//! neighbours: each must be refused with a clean error, quickly, without a panic.

use knetsim_router::amqp::{Frame, FrameReader, Value};
use std::time::{Duration, Instant};

/// amqp_frames, timeout-401d56b5: an array (0xf0) declaring 0x02000000 elements of the
/// zero-width constructor 0x41 (`true`) in 8 bytes made 33 million values (1 GB, 11 s);
/// a count of 2^32 would have exhausted memory.
#[test]
fn an_array_of_empty_elements_cannot_claim_more_than_its_size() {
    let input = [0xf0, 0, 0, 0, 8, 2, 0, 0, 0, 0x41, 0x42, 0xd1, 0, 0, 0x55, 7];
    let start = Instant::now();
    let e = Value::decode(&input).unwrap_err();
    assert!(e.to_string().contains("empty elements"), "{e}");
    for count in [0xffff_ffffu32, 6] {
        let mut v = vec![0xf0, 0, 0, 0, 5];
        v.extend(count.to_be_bytes());
        v.push(0x40);
        assert!(Value::decode(&v).is_err());
    }
    // As a frame body too.
    let mut frame = vec![0, 0, 0, 0, 2, 0, 0, 0];
    frame.extend(input);
    let size = frame.len() as u32;
    frame[..4].copy_from_slice(&size.to_be_bytes());
    assert!(Frame::decode(&frame).is_err());
    assert!(start.elapsed() < Duration::from_secs(1));
    // Arrays that do fit their size still decode.
    let ok = [0xe0, 6, 4, 0x56, 1, 0, 1, 0];
    assert_eq!(
        Value::decode(&ok).unwrap().0,
        Value::Array(vec![
            Value::Bool(true),
            Value::Bool(false),
            Value::Bool(true),
            Value::Bool(false)
        ])
    );
}

/// Found while fixing the above: every nesting level (a described value 0x00, a list, an
/// array) recursed without bound, so one maximal frame of zero bytes overflowed the
/// reading thread's stack and aborted the router.
#[test]
fn deeply_nested_values_are_refused_not_a_stack_overflow() {
    // Described in described..., lists in lists..., arrays of arrays of ...
    for (head, unit) in [
        (&[][..], &[0x00u8][..]),
        (&[], &[0xc0, 0xff, 0x01]),
        (&[0xe0], &[0xff, 0x01, 0xe0]),
    ] {
        let mut input = head.to_vec();
        input.extend(unit.iter().copied().cycle().take(1 << 20));
        let e = Value::decode(&input).unwrap_err();
        assert!(e.to_string().contains("nested deeper"), "{e}");
    }
    // A frame of the largest size the reader takes, all zeros after the header.
    let mut frame = vec![0u8; 1 << 20];
    frame[..4].copy_from_slice(&(1u32 << 20).to_be_bytes());
    frame[4] = 2;
    assert!(Frame::decode(&frame).is_err());
    let mut reader = FrameReader::new(&frame[..], 1 << 20);
    let range = reader.next_frame().unwrap().unwrap();
    assert!(Frame::decode(&reader.buf()[range]).is_err());
}

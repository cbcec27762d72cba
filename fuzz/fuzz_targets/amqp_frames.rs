//! The router's AMQP 1.0 decoding of what a peer sends: a byte stream cut into frames
//! (`FrameReader`, as the engine reads a connection, and `read_frame`), each frame
//! decoded (`Frame::decode`: header, performative, payload), the fast path's
//! `transfer_data`, and the payload's message sections (`message_data`).
#![no_main]

use knetsim_router::amqp::{message_data, read_frame, transfer_data, Frame, FrameReader, Value};
use libfuzzer_sys::fuzz_target;

fn frame(bytes: &[u8]) {
    let _ = transfer_data(bytes);
    if let Ok(f) = Frame::decode(bytes) {
        let _ = message_data(&f.payload);
        let _ = f.encode();
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = Value::decode(data);
    let _ = message_data(data);
    frame(data);
    let mut reader = FrameReader::new(data, 512);
    while let Ok(Some(range)) = reader.next_frame() {
        frame(&reader.buf()[range]);
    }
    let mut stream = data;
    while let Ok(Some(f)) = read_frame(&mut stream) {
        let _ = message_data(&f.payload);
    }
});

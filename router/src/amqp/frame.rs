//! Frames on the wire: the protocol header, a frame's header and body, reading frames
//! from a stream (one at a time, or many per read through `FrameReader`), and the
//! fixed-layout head of a data transfer that lets the router read data into frame slots.

use super::performative::{Performative, DATA, TRANSFER};
use super::types::{err, DecodeError, Value};
use std::io::{self, Read};

/// `AMQP` 0 1 0 0: the protocol header of plain AMQP 1.0.
pub const PROTOCOL_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";
/// Largest frame this codec accepts from a peer.
pub const MAX_FRAME: u32 = 1 << 20;

/// One AMQP frame: a channel and an optional performative with its payload
/// (an empty frame, used as a heartbeat, has neither).
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub channel: u16,
    pub body: Option<Performative>,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn new(channel: u16, body: Performative) -> Frame {
        Frame {
            channel,
            body: Some(body),
            payload: Vec::new(),
        }
    }

    pub fn heartbeat() -> Frame {
        Frame {
            channel: 0,
            body: None,
            payload: Vec::new(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![0, 0, 0, 0, 2, 0];
        out.extend(self.channel.to_be_bytes());
        if let Some(b) = &self.body {
            b.to_value().encode(&mut out);
            out.extend(&self.payload);
        }
        let size = out.len() as u32;
        out[..4].copy_from_slice(&size.to_be_bytes());
        out
    }

    /// Decodes a whole frame (its 8-byte header included).
    pub fn decode(buf: &[u8]) -> Result<Frame, DecodeError> {
        if buf.len() < 8 {
            return err("frame shorter than its header");
        }
        let size = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
        let doff = buf[4] as usize * 4;
        if size != buf.len() || doff < 8 || doff > size {
            return err(format!("bad frame size {size} or data offset {doff}"));
        }
        if buf[5] != 0 {
            return err(format!("frame type {} is not AMQP", buf[5]));
        }
        let channel = u16::from_be_bytes([buf[6], buf[7]]);
        let rest = &buf[doff..];
        if rest.is_empty() {
            return Ok(Frame::heartbeat_on(channel));
        }
        let (v, used) = Value::decode(rest)?;
        let body = Performative::from_value(&v)?;
        Ok(Frame {
            channel,
            body: Some(body),
            payload: rest[used..].to_vec(),
        })
    }

    fn heartbeat_on(channel: u16) -> Frame {
        Frame {
            channel,
            body: None,
            payload: Vec::new(),
        }
    }
}

/// Reads one frame from a stream: Ok(None) at a clean end of stream.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<Frame>> {
    let mut head = [0u8; 4];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let size = u32::from_be_bytes(head);
    if !(8..=MAX_FRAME).contains(&size) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad AMQP frame size {size}"),
        ));
    }
    let mut buf = vec![0u8; size as usize];
    buf[..4].copy_from_slice(&head);
    r.read_exact(&mut buf[4..])?;
    Frame::decode(&buf)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

/// Bytes before a stream's data in a transfer frame as [`write_transfer_head`] lays it out:
/// the frame header, the transfer performative in fixed-width encodings and the data
/// section's header. A fixed size lets a sender read data straight into frame slots.
pub const TRANSFER_HEAD: usize = 40;

/// Writes the head of a settled transfer on channel 0 carrying one data section of
/// `data_len` bytes (which follow the head) into `out[..TRANSFER_HEAD]`.
pub fn write_transfer_head(out: &mut [u8], handle: u32, delivery_id: u32, data_len: usize) {
    let size = (TRANSFER_HEAD + data_len) as u32;
    let id = delivery_id.to_be_bytes();
    let h = &mut out[..TRANSFER_HEAD];
    h[..4].copy_from_slice(&size.to_be_bytes());
    h[4..8].copy_from_slice(&[2, 0, 0, 0]);
    // transfer: list8 of 19 bytes, 5 fields: handle, delivery-id, delivery-tag (4-byte
    // binary), message-format 0, settled true.
    h[8..14].copy_from_slice(&[0x00, 0x53, TRANSFER as u8, 0xc0, 19, 5]);
    h[14] = 0x70;
    h[15..19].copy_from_slice(&handle.to_be_bytes());
    h[19] = 0x70;
    h[20..24].copy_from_slice(&id);
    h[24..26].copy_from_slice(&[0xa0, 4]);
    h[26..30].copy_from_slice(&id);
    h[30..32].copy_from_slice(&[0x43, 0x41]);
    // data section: described 0x75, binary with a 32-bit length.
    h[32..36].copy_from_slice(&[0x00, 0x53, DATA as u8, 0xb0]);
    h[36..40].copy_from_slice(&(data_len as u32).to_be_bytes());
}

/// The handle of a whole transfer frame (header included) whose payload is exactly one
/// data section, and where that section's bytes are in `frame`; None for any other frame
/// (which the caller decodes in full). Never copies the data.
pub fn transfer_data(frame: &[u8]) -> Option<(u32, std::ops::Range<usize>)> {
    if frame.len() < 8 || frame[5] != 0 {
        return None;
    }
    let doff = frame[4] as usize * 4;
    let body = frame.get(doff..)?;
    let (handle, used) = if body.len() >= 11 && body[..7] == [0x00, 0x53, TRANSFER as u8, 0xc0, 19, 5, 0x70] {
        // The layout of write_transfer_head.
        (u32::from_be_bytes(body[7..11].try_into().ok()?), 24)
    } else {
        if body.get(..3)? != [0x00, 0x53, TRANSFER as u8] {
            return None;
        }
        let (v, used) = Value::decode(body).ok()?;
        match Performative::from_value(&v).ok()? {
            Performative::Transfer {
                handle, more: false, ..
            } => (handle, used),
            _ => return None,
        }
    };
    let payload = body.get(used..)?;
    if payload.get(..3)? != [0x00, 0x53, DATA as u8] {
        return None;
    }
    let (len, start) = match payload.get(3)? {
        0xa0 => (*payload.get(4)? as usize, 5),
        0xb0 => (u32::from_be_bytes(payload.get(4..8)?.try_into().ok()?) as usize, 8),
        _ => return None,
    };
    if start + len != payload.len() {
        return None;
    }
    let at = doff + used + start;
    Some((handle, at..at + len))
}

/// Reads whole frames from a byte stream through one buffer: each read takes as much as
/// the stream has (many frames per system call), and a frame is handed out as a range of
/// the buffer, valid until the next `fill`.
pub struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max_frame: usize,
}

impl<R: Read> FrameReader<R> {
    /// A reader refusing frames larger than `max_frame` bytes.
    pub fn new(inner: R, max_frame: u32) -> FrameReader<R> {
        let max_frame = max_frame.clamp(512, MAX_FRAME) as usize;
        FrameReader {
            inner,
            buf: vec![0; (max_frame + 4096).max(128 * 1024)],
            start: 0,
            end: 0,
            max_frame,
        }
    }

    pub fn buf(&self) -> &[u8] {
        &self.buf
    }

    /// The next whole frame already buffered; never reads.
    pub fn buffered_frame(&mut self) -> io::Result<Option<std::ops::Range<usize>>> {
        let have = &self.buf[self.start..self.end];
        if have.len() < 4 {
            return Ok(None);
        }
        let size = u32::from_be_bytes(have[..4].try_into().unwrap()) as usize;
        if size < 8 || size > self.max_frame {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad AMQP frame size {size} (max-frame-size {})", self.max_frame),
            ));
        }
        if have.len() < size {
            return Ok(None);
        }
        let r = self.start..self.start + size;
        self.start += size;
        Ok(Some(r))
    }

    /// Reads more (once, blocking); false at the end of the stream.
    pub fn fill(&mut self) -> io::Result<bool> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.buf.len() - self.end < self.max_frame.min(64 * 1024) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.end += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The next frame, reading as needed; None at a clean end of stream.
    pub fn next_frame(&mut self) -> io::Result<Option<std::ops::Range<usize>>> {
        loop {
            if let Some(r) = self.buffered_frame()? {
                return Ok(Some(r));
            }
            if !self.fill()? {
                if self.start != self.end {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                return Ok(None);
            }
        }
    }

    /// Exactly `n` raw bytes (the protocol header), reading as needed.
    pub fn read_raw(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.end - self.start < n {
            if !self.fill()? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        let v = self.buf[self.start..self.start + n].to_vec();
        self.start += n;
        Ok(v)
    }
}

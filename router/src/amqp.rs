//! A minimal AMQP 1.0 codec (OASIS AMQP 1.0 part 1 "types" and part 2 "transport"):
//! the protocol header, frames, the type system subset the router needs, and the
//! performatives open/begin/attach/flow/transfer/detach/end/close as typed structs.
//! Enough that `tshark -d tcp.port==PORT,amqp` decodes an inter-router link.

use std::io::{self, Read};

/// `AMQP` 0 1 0 0: the protocol header of plain AMQP 1.0.
pub const PROTOCOL_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";
/// Largest frame this codec accepts from a peer.
pub const MAX_FRAME: u32 = 1 << 20;

pub const OPEN: u64 = 0x10;
pub const BEGIN: u64 = 0x11;
pub const ATTACH: u64 = 0x12;
pub const FLOW: u64 = 0x13;
pub const TRANSFER: u64 = 0x14;
pub const DISPOSITION: u64 = 0x15;
pub const DETACH: u64 = 0x16;
pub const END: u64 = 0x17;
pub const CLOSE: u64 = 0x18;
pub const ERROR: u64 = 0x1d;
pub const SOURCE: u64 = 0x28;
pub const TARGET: u64 = 0x29;
pub const DATA: u64 = 0x75;

/// An AMQP value (the subset of part 1 that the router sends or accepts).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Ubyte(u8),
    Ushort(u16),
    Uint(u32),
    Ulong(u64),
    Int(i32),
    Long(i64),
    Timestamp(i64),
    Uuid([u8; 16]),
    Binary(Vec<u8>),
    String(String),
    Symbol(String),
    List(Vec<Value>),
    Map(Vec<(Value, Value)>),
    Array(Vec<Value>),
    Described(Box<Value>, Box<Value>),
}

#[derive(Debug, PartialEq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AMQP decode error: {}", self.0)
    }
}

fn err<T>(m: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(m.into()))
}

impl Value {
    pub fn described(code: u64, fields: Vec<Value>) -> Value {
        // Trailing nulls may be omitted from a described list (part 1, 1.4).
        let mut fields = fields;
        while fields.last() == Some(&Value::Null) {
            fields.pop();
        }
        Value::Described(Box::new(Value::Ulong(code)), Box::new(Value::List(fields)))
    }

    pub fn str(s: &str) -> Value {
        Value::String(s.to_string())
    }

    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::Ubyte(v) => Some(v as u64),
            Value::Ushort(v) => Some(v as u64),
            Value::Uint(v) => Some(v as u64),
            Value::Ulong(v) => Some(v),
            Value::Int(v) if v >= 0 => Some(v as u64),
            Value::Long(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) | Value::Symbol(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The descriptor code and fields of a described list.
    pub fn as_described_list(&self) -> Option<(u64, &[Value])> {
        match self {
            Value::Described(d, v) => match (d.as_u64(), v.as_ref()) {
                (Some(code), Value::List(items)) => Some((code, items)),
                _ => None,
            },
            _ => None,
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.push(0x40),
            Value::Bool(true) => out.push(0x41),
            Value::Bool(false) => out.push(0x42),
            Value::Ubyte(v) => out.extend([0x50, *v]),
            Value::Ushort(v) => {
                out.push(0x60);
                out.extend(v.to_be_bytes());
            }
            Value::Uint(0) => out.push(0x43),
            Value::Uint(v) if *v < 256 => out.extend([0x52, *v as u8]),
            Value::Uint(v) => {
                out.push(0x70);
                out.extend(v.to_be_bytes());
            }
            Value::Ulong(0) => out.push(0x44),
            Value::Ulong(v) if *v < 256 => out.extend([0x53, *v as u8]),
            Value::Ulong(v) => {
                out.push(0x80);
                out.extend(v.to_be_bytes());
            }
            Value::Int(v) if (-128..128).contains(v) => out.extend([0x54, *v as i8 as u8]),
            Value::Int(v) => {
                out.push(0x71);
                out.extend(v.to_be_bytes());
            }
            Value::Long(v) if (-128..128).contains(v) => out.extend([0x55, *v as i8 as u8]),
            Value::Long(v) => {
                out.push(0x81);
                out.extend(v.to_be_bytes());
            }
            Value::Timestamp(v) => {
                out.push(0x83);
                out.extend(v.to_be_bytes());
            }
            Value::Uuid(u) => {
                out.push(0x98);
                out.extend(u);
            }
            Value::Binary(b) => encode_variable(out, 0xa0, 0xb0, b),
            Value::String(s) => encode_variable(out, 0xa1, 0xb1, s.as_bytes()),
            Value::Symbol(s) => encode_variable(out, 0xa3, 0xb3, s.as_bytes()),
            Value::List(items) if items.is_empty() => out.push(0x45),
            Value::List(items) => {
                let mut body = Vec::new();
                for i in items {
                    i.encode(&mut body);
                }
                encode_compound(out, 0xc0, 0xd0, items.len(), &body);
            }
            Value::Map(pairs) => {
                let mut body = Vec::new();
                for (k, v) in pairs {
                    k.encode(&mut body);
                    v.encode(&mut body);
                }
                encode_compound(out, 0xc1, 0xd1, pairs.len() * 2, &body);
            }
            Value::Array(items) => {
                // Always the 32-bit form with the first element's wide constructor.
                let mut body = Vec::new();
                let mut ctor = Vec::new();
                if let Some(first) = items.first() {
                    first.encode_wide(&mut ctor);
                    body.push(ctor[0]);
                    for i in items {
                        let mut e = Vec::new();
                        i.encode_wide(&mut e);
                        body.extend(&e[1..]);
                    }
                } else {
                    body.push(0x40);
                }
                out.push(0xf0);
                out.extend((body.len() as u32 + 4).to_be_bytes());
                out.extend((items.len() as u32).to_be_bytes());
                out.extend(body);
            }
            Value::Described(d, v) => {
                out.push(0x00);
                d.encode(out);
                v.encode(out);
            }
        }
    }

    /// The encoding with one fixed constructor per type, for array elements.
    fn encode_wide(&self, out: &mut Vec<u8>) {
        match self {
            Value::Bool(b) => out.extend([0x56, *b as u8]),
            Value::Uint(v) => {
                out.push(0x70);
                out.extend(v.to_be_bytes());
            }
            Value::Ulong(v) => {
                out.push(0x80);
                out.extend(v.to_be_bytes());
            }
            Value::Int(v) => {
                out.push(0x71);
                out.extend(v.to_be_bytes());
            }
            Value::Long(v) => {
                out.push(0x81);
                out.extend(v.to_be_bytes());
            }
            Value::Binary(b) => {
                out.push(0xb0);
                out.extend((b.len() as u32).to_be_bytes());
                out.extend(b);
            }
            Value::String(s) => {
                out.push(0xb1);
                out.extend((s.len() as u32).to_be_bytes());
                out.extend(s.as_bytes());
            }
            Value::Symbol(s) => {
                out.push(0xb3);
                out.extend((s.len() as u32).to_be_bytes());
                out.extend(s.as_bytes());
            }
            other => other.encode(out),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }

    /// Decodes one value from the front of `buf`, returning it and the bytes it took.
    pub fn decode(buf: &[u8]) -> Result<(Value, usize), DecodeError> {
        let mut c = Cursor { buf, pos: 0, depth: 0 };
        let v = c.value()?;
        Ok((v, c.pos))
    }
}

fn encode_variable(out: &mut Vec<u8>, short: u8, long: u8, bytes: &[u8]) {
    if bytes.len() < 256 {
        out.extend([short, bytes.len() as u8]);
    } else {
        out.push(long);
        out.extend((bytes.len() as u32).to_be_bytes());
    }
    out.extend(bytes);
}

fn encode_compound(out: &mut Vec<u8>, short: u8, long: u8, count: usize, body: &[u8]) {
    if body.len() + 1 < 256 && count < 256 {
        out.extend([short, (body.len() + 1) as u8, count as u8]);
    } else {
        out.push(long);
        out.extend((body.len() as u32 + 4).to_be_bytes());
        out.extend((count as u32).to_be_bytes());
    }
    out.extend(body);
}

/// How deeply described and compound values may nest: far more than any performative
/// needs, and little enough that a hostile frame cannot exhaust a thread's stack.
const MAX_DEPTH: usize = 64;

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Described and compound values being decoded around the current one.
    depth: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() - self.pos < n {
            return err(format!("truncated: need {n} bytes at offset {}", self.pos));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn arr<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        Ok(self.take(N)?.try_into().unwrap())
    }

    fn utf8(&mut self, n: usize) -> Result<String, DecodeError> {
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError("invalid UTF-8 in string".into()))
    }

    fn value(&mut self) -> Result<Value, DecodeError> {
        let code = self.u8()?;
        if code == 0x00 {
            return self.nested(|c| {
                let d = c.value()?;
                let v = c.value()?;
                Ok(Value::Described(Box::new(d), Box::new(v)))
            });
        }
        self.with_ctor(code)
    }

    /// Runs `f` one nesting level deeper, refusing values nested beyond [`MAX_DEPTH`].
    fn nested(&mut self, f: impl FnOnce(&mut Self) -> Result<Value, DecodeError>) -> Result<Value, DecodeError> {
        if self.depth >= MAX_DEPTH {
            return err(format!("values nested deeper than {MAX_DEPTH}"));
        }
        self.depth += 1;
        let v = f(self);
        self.depth -= 1;
        v
    }

    fn with_ctor(&mut self, code: u8) -> Result<Value, DecodeError> {
        match code {
            0xc0 | 0xc1 | 0xd0 | 0xd1 | 0xe0 | 0xf0 => self.nested(|c| c.scalar_or_compound(code)),
            _ => self.scalar_or_compound(code),
        }
    }

    fn scalar_or_compound(&mut self, code: u8) -> Result<Value, DecodeError> {
        Ok(match code {
            0x40 => Value::Null,
            0x41 => Value::Bool(true),
            0x42 => Value::Bool(false),
            0x56 => Value::Bool(self.u8()? != 0),
            0x50 => Value::Ubyte(self.u8()?),
            0x60 => Value::Ushort(u16::from_be_bytes(self.arr()?)),
            0x43 => Value::Uint(0),
            0x52 => Value::Uint(self.u8()? as u32),
            0x70 => Value::Uint(self.u32()?),
            0x44 => Value::Ulong(0),
            0x53 => Value::Ulong(self.u8()? as u64),
            0x80 => Value::Ulong(u64::from_be_bytes(self.arr()?)),
            0x54 => Value::Int(self.u8()? as i8 as i32),
            0x71 => Value::Int(i32::from_be_bytes(self.arr()?)),
            0x55 => Value::Long(self.u8()? as i8 as i64),
            0x81 => Value::Long(i64::from_be_bytes(self.arr()?)),
            0x83 => Value::Timestamp(i64::from_be_bytes(self.arr()?)),
            0x98 => Value::Uuid(self.arr()?),
            0xa0 => {
                let n = self.u8()? as usize;
                Value::Binary(self.take(n)?.to_vec())
            }
            0xb0 => {
                let n = self.u32()? as usize;
                Value::Binary(self.take(n)?.to_vec())
            }
            0xa1 => {
                let n = self.u8()? as usize;
                Value::String(self.utf8(n)?)
            }
            0xb1 => {
                let n = self.u32()? as usize;
                Value::String(self.utf8(n)?)
            }
            0xa3 => {
                let n = self.u8()? as usize;
                Value::Symbol(self.utf8(n)?)
            }
            0xb3 => {
                let n = self.u32()? as usize;
                Value::Symbol(self.utf8(n)?)
            }
            0x45 => Value::List(Vec::new()),
            0xc0 | 0xc1 | 0xd0 | 0xd1 => {
                let wide = code & 0xf0 == 0xd0;
                let (size, count) = if wide {
                    (self.u32()? as usize, self.u32()? as usize)
                } else {
                    (self.u8()? as usize, self.u8()? as usize)
                };
                let header = if wide { 4 } else { 1 };
                let end = self.pos
                    + size
                        .checked_sub(header)
                        .ok_or(DecodeError("bad compound size".into()))?;
                if end > self.buf.len() {
                    return err("truncated compound value");
                }
                let mut items = Vec::with_capacity(count.min(1024));
                for _ in 0..count {
                    items.push(self.value()?);
                }
                if self.pos != end {
                    return err("compound value size does not match its contents");
                }
                if code & 0x0f == 0x01 {
                    if count % 2 != 0 {
                        return err("map with an odd element count");
                    }
                    let mut pairs = Vec::with_capacity(count / 2);
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        pairs.push((k, v));
                    }
                    Value::Map(pairs)
                } else {
                    Value::List(items)
                }
            }
            0xe0 | 0xf0 => {
                let wide = code == 0xf0;
                let (size, count) = if wide {
                    (self.u32()? as usize, self.u32()? as usize)
                } else {
                    (self.u8()? as usize, self.u8()? as usize)
                };
                let header = if wide { 4 } else { 1 };
                let end = self.pos + size.checked_sub(header).ok_or(DecodeError("bad array size".into()))?;
                if end > self.buf.len() {
                    return err("truncated array");
                }
                let ctor = self.u8()?;
                if ctor == 0x00 {
                    return err("arrays of described values are not supported");
                }
                // Elements of these constructors take no bytes: without this bound a
                // count of 2^32 in a few bytes would make that many values.
                if matches!(ctor, 0x40..=0x45) && count > size {
                    return err(format!("array of {count} empty elements in {size} bytes"));
                }
                let mut items = Vec::with_capacity(count.min(1024));
                for _ in 0..count {
                    items.push(self.with_ctor(ctor)?);
                }
                if self.pos != end {
                    return err("array size does not match its contents");
                }
                Value::Array(items)
            }
            other => return err(format!("unsupported type constructor 0x{other:02x}")),
        })
    }
}

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

/// The transport performatives, with the fields the router uses.
#[derive(Debug, Clone, PartialEq)]
pub enum Performative {
    Open {
        container_id: String,
        max_frame_size: u32,
        idle_time_out_ms: u32,
        properties: Vec<(Value, Value)>,
    },
    Begin {
        remote_channel: Option<u16>,
        next_outgoing_id: u32,
        incoming_window: u32,
        outgoing_window: u32,
    },
    Attach {
        name: String,
        handle: u32,
        role_receiver: bool,
        source: Option<String>,
        target: Option<String>,
    },
    Flow {
        handle: Option<u32>,
        delivery_count: u32,
        link_credit: u32,
    },
    Transfer {
        handle: u32,
        delivery_id: u32,
        settled: bool,
        /// More frames of the same message follow (a message larger than a frame).
        more: bool,
    },
    Detach {
        handle: u32,
        closed: bool,
        error: Option<String>,
    },
    End,
    Close {
        error: Option<String>,
    },
    /// Any other described performative (e.g. disposition), kept as is.
    Other(Value),
}

fn opt_u32(v: Option<u32>) -> Value {
    v.map(Value::Uint).unwrap_or(Value::Null)
}

fn error_value(e: &Option<String>) -> Value {
    match e {
        Some(desc) => Value::described(
            ERROR,
            vec![Value::Symbol("amqp:internal-error".into()), Value::str(desc)],
        ),
        None => Value::Null,
    }
}

fn terminus(code: u64, address: &Option<String>) -> Value {
    match address {
        Some(a) => Value::described(code, vec![Value::str(a)]),
        None => Value::Null,
    }
}

impl Performative {
    pub fn to_value(&self) -> Value {
        match self {
            Performative::Open {
                container_id,
                max_frame_size,
                idle_time_out_ms,
                properties,
            } => Value::described(
                OPEN,
                vec![
                    Value::str(container_id),
                    Value::Null,
                    Value::Uint(*max_frame_size),
                    Value::Ushort(0),
                    Value::Uint(*idle_time_out_ms),
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    if properties.is_empty() {
                        Value::Null
                    } else {
                        Value::Map(properties.clone())
                    },
                ],
            ),
            Performative::Begin {
                remote_channel,
                next_outgoing_id,
                incoming_window,
                outgoing_window,
            } => Value::described(
                BEGIN,
                vec![
                    remote_channel.map(Value::Ushort).unwrap_or(Value::Null),
                    Value::Uint(*next_outgoing_id),
                    Value::Uint(*incoming_window),
                    Value::Uint(*outgoing_window),
                ],
            ),
            Performative::Attach {
                name,
                handle,
                role_receiver,
                source,
                target,
            } => Value::described(
                ATTACH,
                vec![
                    Value::str(name),
                    Value::Uint(*handle),
                    Value::Bool(*role_receiver),
                    Value::Ubyte(1), // snd-settle-mode: settled
                    Value::Ubyte(0), // rcv-settle-mode: first
                    terminus(SOURCE, source),
                    terminus(TARGET, target),
                    Value::Null,
                    Value::Null,
                    if *role_receiver { Value::Null } else { Value::Uint(0) }, // initial-delivery-count
                ],
            ),
            Performative::Flow {
                handle,
                delivery_count,
                link_credit,
            } => Value::described(
                FLOW,
                vec![
                    Value::Uint(0),
                    Value::Uint(u32::MAX),
                    Value::Uint(0),
                    Value::Uint(u32::MAX),
                    opt_u32(*handle),
                    Value::Uint(*delivery_count),
                    Value::Uint(*link_credit),
                ],
            ),
            Performative::Transfer {
                handle,
                delivery_id,
                settled,
                more,
            } => Value::described(
                TRANSFER,
                vec![
                    Value::Uint(*handle),
                    Value::Uint(*delivery_id),
                    Value::Binary(delivery_id.to_be_bytes().to_vec()),
                    Value::Uint(0),
                    Value::Bool(*settled),
                    if *more { Value::Bool(true) } else { Value::Null },
                ],
            ),
            Performative::Detach { handle, closed, error } => Value::described(
                DETACH,
                vec![Value::Uint(*handle), Value::Bool(*closed), error_value(error)],
            ),
            Performative::End => Value::described(END, vec![]),
            Performative::Close { error } => Value::described(CLOSE, vec![error_value(error)]),
            Performative::Other(v) => v.clone(),
        }
    }

    pub fn from_value(v: &Value) -> Result<Performative, DecodeError> {
        let Some((code, f)) = v.as_described_list() else {
            return err("frame body is not a described list");
        };
        let get = |i: usize| f.get(i).unwrap_or(&Value::Null);
        let need_u32 = |i: usize, what: &str| -> Result<u32, DecodeError> {
            match get(i).as_u64() {
                Some(n) if n <= u32::MAX as u64 => Ok(n as u32),
                _ => err(format!("performative 0x{code:02x}: missing or bad {what}")),
            }
        };
        let opt_u32 = |i: usize| get(i).as_u64().map(|n| n as u32);
        let error_of = |v: &Value| -> Option<String> {
            v.as_described_list().map(|(_, e)| {
                let cond = e.first().and_then(|c| c.as_str()).unwrap_or("");
                match e.get(1).and_then(|d| d.as_str()) {
                    Some(d) => d.to_string(),
                    None => cond.to_string(),
                }
            })
        };
        let terminus_address = |v: &Value| {
            v.as_described_list()
                .and_then(|(_, t)| t.first().and_then(|a| a.as_str()).map(String::from))
        };
        Ok(match code {
            OPEN => Performative::Open {
                container_id: get(0)
                    .as_str()
                    .ok_or(DecodeError("open without container-id".into()))?
                    .to_string(),
                max_frame_size: opt_u32(2).unwrap_or(u32::MAX),
                idle_time_out_ms: opt_u32(4).unwrap_or(0),
                properties: match get(9) {
                    Value::Map(m) => m.clone(),
                    _ => Vec::new(),
                },
            },
            BEGIN => Performative::Begin {
                remote_channel: get(0).as_u64().map(|n| n as u16),
                next_outgoing_id: need_u32(1, "next-outgoing-id")?,
                incoming_window: need_u32(2, "incoming-window")?,
                outgoing_window: need_u32(3, "outgoing-window")?,
            },
            ATTACH => Performative::Attach {
                name: get(0)
                    .as_str()
                    .ok_or(DecodeError("attach without name".into()))?
                    .to_string(),
                handle: need_u32(1, "handle")?,
                role_receiver: get(2).as_bool().ok_or(DecodeError("attach without role".into()))?,
                source: terminus_address(get(5)),
                target: terminus_address(get(6)),
            },
            FLOW => Performative::Flow {
                handle: opt_u32(4),
                delivery_count: opt_u32(5).unwrap_or(0),
                link_credit: opt_u32(6).unwrap_or(0),
            },
            TRANSFER => Performative::Transfer {
                handle: need_u32(0, "handle")?,
                delivery_id: opt_u32(1).unwrap_or(0),
                settled: get(4).as_bool().unwrap_or(false),
                more: get(5).as_bool().unwrap_or(false),
            },
            DETACH => Performative::Detach {
                handle: need_u32(0, "handle")?,
                closed: get(1).as_bool().unwrap_or(false),
                error: error_of(get(2)),
            },
            END => Performative::End,
            CLOSE => Performative::Close {
                error: error_of(get(0)),
            },
            _ => Performative::Other(v.clone()),
        })
    }
}

/// A message body of one data section (described 0x75 binary), as the router's transfers carry.
pub fn data_section(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 8);
    out.extend([0x00, 0x53, DATA as u8]);
    encode_variable(&mut out, 0xa0, 0xb0, bytes);
    out
}

/// The concatenated bytes of a message's data sections (other sections are skipped).
pub fn message_data(payload: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < payload.len() {
        let (v, used) = Value::decode(&payload[pos..])?;
        pos += used;
        if let Value::Described(d, body) = v {
            if d.as_u64() == Some(DATA) {
                match *body {
                    Value::Binary(b) => out.extend(b),
                    _ => return err("data section without binary"),
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

//! Decoding values: a cursor over a byte buffer that reads one constructor and its
//! value at a time, refusing truncated, oversized and unsupported encodings.

use super::types::{err, DecodeError};
use super::Value;

impl Value {
    /// Decodes one value from the front of `buf`, returning it and the bytes it took.
    pub fn decode(buf: &[u8]) -> Result<(Value, usize), DecodeError> {
        let mut c = Cursor { buf, pos: 0 };
        let v = c.value()?;
        Ok((v, c.pos))
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
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
            let d = self.value()?;
            let v = self.value()?;
            return Ok(Value::Described(Box::new(d), Box::new(v)));
        }
        self.with_ctor(code)
    }

    fn with_ctor(&mut self, code: u8) -> Result<Value, DecodeError> {
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

//! Decoding values: a cursor over a byte buffer that reads one constructor and its
//! value at a time, refusing truncated, oversized and unsupported encodings.

use super::types::{err, DecodeError};
use super::Value;

impl Value {
    /// Decodes one value from the front of `buf`, returning it and the bytes it took.
    pub fn decode(buf: &[u8]) -> Result<(Value, usize), DecodeError> {
        let mut c = Cursor { buf, pos: 0, depth: 0 };
        let v = c.value()?;
        Ok((v, c.pos))
    }
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

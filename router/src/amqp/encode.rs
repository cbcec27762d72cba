//! Encoding values: each in its most compact form (`encode`) or, where a fixed layout is
//! needed, its wide form; the variable-width and compound encodings they share.

use super::Value;

impl Value {
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
}

pub(super) fn encode_variable(out: &mut Vec<u8>, short: u8, long: u8, bytes: &[u8]) {
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

//! The AMQP 1.0 type system subset the router sends or accepts, as one `Value` enum
//! with its constructors and accessors, and the error every decoder returns.

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

pub(super) fn err<T>(m: impl Into<String>) -> Result<T, DecodeError> {
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
}

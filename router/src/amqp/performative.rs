//! The transport performatives (open, begin, attach, flow, transfer, detach, end,
//! close) as typed values with their descriptor codes, and the data sections of the
//! messages the router's transfers carry.

use super::encode::encode_variable;
use super::types::{err, DecodeError, Value};

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

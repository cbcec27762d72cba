//! A minimal AMQP 1.0 codec (OASIS AMQP 1.0 part 1 "types" and part 2 "transport"):
//! the protocol header, frames, the type system subset the router needs, and the
//! performatives open/begin/attach/flow/transfer/detach/end/close as typed structs.
//! Enough that `tshark -d tcp.port==PORT,amqp` decodes an inter-router link.
//!
//! One file a layer: `types` is the value type and its errors, `encode` and `decode`
//! its wire format, `frame` the protocol header, frames and the buffered frame reader
//! (with the fixed-layout transfer head the router's data path uses), `performative`
//! the transport performatives and message data sections on top of values.

mod decode;
mod encode;
mod frame;
mod performative;
mod types;

pub use frame::{
    read_frame, transfer_data, write_transfer_head, Frame, FrameReader, MAX_FRAME, PROTOCOL_HEADER, TRANSFER_HEAD,
};
pub use performative::{
    data_section, message_data, Performative, ATTACH, BEGIN, CLOSE, DATA, DETACH, DISPOSITION, END, ERROR, FLOW, OPEN,
    SOURCE, TARGET, TRANSFER,
};
pub use types::{DecodeError, Value};

#[cfg(test)]
mod tests;

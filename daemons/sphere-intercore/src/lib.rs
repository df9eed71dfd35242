//! OpenSphere's inter-core protocol: the byte stream between a high-level app on the Cortex-A7 and
//! a real-time app on the Cortex-M4, used unchanged by both sides.
//!
//! Azure Sphere carries inter-core messages through a shared-memory ring set up by mailbox
//! messages. OpenSphere's link is a byte stream (a UART, or QEMU's emulation of one), which can
//! lose, duplicate, truncate or corrupt bytes, and may start mid-frame. This crate turns it into a
//! sequence of whole, checked frames:
//!
//! * [`frame`]: the wire format (see `docs/intercore-protocol.md`): sync bytes, version, flags,
//!   length, source and destination [`ComponentId`]s, sequence number, cumulative ack, credit
//!   limit, a CRC-16 over the header and a CRC-32 over header and payload; and a compact form for
//!   data on an open connection (a one-byte channel instead of the two ids: 12 bytes of overhead
//!   instead of 50). [`Frame::parse`] decodes from a byte slice without copying; [`encode`]
//!   writes into a caller's buffer.
//! * [`decoder`]: an incremental decoder with a fixed buffer that finds frames in a stream and
//!   resynchronises after garbage or corruption.
//! * [`flow`]: the credit-based backpressure state machine (a sender may only send data frames
//!   the receiver has granted room for).
//!
//! Threat model: the peer core is not trusted to be well-formed (it may be buggy or compromised),
//! so nothing here panics on any input, no length from the wire is used before it is bounded by
//! [`MAX_PAYLOAD`], and a frame is only returned when both checksums match. The checksums detect
//! accidental corruption, not forgery: authenticity comes from the link itself (only the app
//! manager can open it, per `AllowedApplicationConnections`).
//!
//! `#![no_std]`, no allocation, no `unsafe`: it builds for the host, the A7 and the M4
//! (`thumbv7em-none-eabihf`) with rustc 1.85.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod component;
pub mod crc;
pub mod decoder;
pub mod flow;
pub mod frame;

pub use component::ComponentId;
pub use decoder::Decoder;
pub use flow::{Flow, RxVerdict};
pub use frame::{
    COMPACT_HEADER_LEN, COMPACT_SYNC, CRC_LEN, EncodeError, Flags, Frame, FrameError, HEADER_LEN, Header, MAX_FRAME,
    MAX_PAYLOAD, SYNC, VERSION, encode,
};

//! CAT_TP (ETSI TS 102 127, Card Application Toolkit Transport Protocol) over UDP, sans-IO.
//!
//! * [`pdu`]: the PDU codec (header, SYN / EAK / RST variable parts, checksum).
//! * [`conn`]: one connection's state machine (client or server side), poll style like quinn-proto:
//!   feed datagrams with [`Connection::handle_pdu`], take datagrams with
//!   [`Connection::poll_transmit`], drive timers with [`Connection::poll_timeout`] and
//!   [`Connection::handle_timeout`]. No sockets and no clock reads: time comes in as [`Instant`]s.
//! * [`server`]: many connections keyed by the peer's address, one datagram socket's worth.
//!
//! [`Instant`]: std::time::Instant

pub mod conn;
pub mod pdu;
pub mod server;

pub use conn::{CloseReason, Config, Connection, Event, Role, SendError, State, Stats};
pub use pdu::{DecodeError, EncodeError, Flags, Pdu, SynParams, VarPart};
pub use server::{Server, ServerStats};

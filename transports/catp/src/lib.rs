//! CAT_TP (ETSI TS 102 127, Card Application Toolkit Transport Protocol) over UDP, sans-IO.
//!
//! * [`pdu`]: the PDU codec (header, SYN / EAK / RST variable parts, checksum).
//! * [`conn`]: one connection's state machine (client or server side), poll style like quinn-proto:
//!   feed datagrams with [`Connection::handle_pdu`], take datagrams with
//!   [`Connection::poll_transmit`], drive timers with [`Connection::poll_timeout`] and
//!   [`Connection::handle_timeout`]. No sockets and no clock reads: time comes in as [`Instant`]s.
//! * [`server`]: many connections keyed by the peer's address, one datagram socket's worth.
//! * [`push`]: the TS 102 226 push commands (BIP channel opening, CAT_TP link establishment).
//! * [`framing`]: SCP80 packets framed for CAT_TP (CPI/RPI and BER lengths).
//! * [`driver`]: the tokio UDP glue (the gateway's endpoint, a card's client link).
//! * [`transport`]: the otagw `Transport` over CAT_TP, with the push over SMS.
//! * [`pcap`]: captured datagrams as a pcap file (for tshark).
//!
//! [`Instant`]: std::time::Instant

pub mod conn;
pub mod driver;
pub mod framing;
pub mod pcap;
pub mod pdu;
pub mod push;
pub mod server;
pub mod transport;

pub use conn::{CloseReason, Config, Connection, Event, Role, SendError, State, Stats};
pub use driver::{ClientLink, Endpoint, Impairment, LinkEvent};
pub use pdu::{DecodeError, EncodeError, Flags, Pdu, SynParams, VarPart};
pub use server::{Server, ServerStats};
pub use transport::{no_refusal, CatpSettings, CatpTransport, LinkPusher, PushRefusal};

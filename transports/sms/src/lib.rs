//! SMS-PP framing for otagw, sans-IO: bytes in, bytes out, no I/O, no clock, no randomness.
//!
//! - [`udh`]: User Data Header (TS 23.040 9.2.3.24) and its information elements;
//! - [`concat`](mod@concat): splitting an SCP80 packet into SMS user data (TS 31.115) and reassembly;
//! - [`tpdu`]: SMS-DELIVER and SMS-SUBMIT (TS 23.040 9.2.2);
//! - [`address`]: TP address fields (TS 23.040 9.1.2.5) and CAT dialling numbers;
//! - [`cat`]: the SMS-PP download ENVELOPE and the proactive SEND SHORT MESSAGE (TS 102 223).
//!
//! Every `parse_*` function takes untrusted `&[u8]` and never panics.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod address;
pub mod cat;
pub mod concat;
mod error;
pub mod gsm7;
mod reader;
pub mod smpp;
pub mod smsc_sim;
pub mod tpdu;
pub mod udh;

pub use address::{
    parse_address, parse_dialling_number, Address, AddressValue, NumberingPlan, TypeOfAddress,
    TypeOfNumber,
};
pub use cat::{parse_send_short_message, parse_sms_pp_download, SendShortMessage, SmsPpDownload};
pub use concat::{
    max_packet_len, parse_segment, segment_count, split_packet, Accepted, PendingMessage,
    ReassembledPacket, Reassembler, MAX_SEGMENTS, MAX_USER_DATA_OCTETS, SINGLE_SMS_PACKET_CAPACITY,
};
pub use error::{Error, Result};
pub use tpdu::{
    parse_sms_deliver, parse_sms_submit, Alphabet, DataCodingScheme, SmsDeliver, SmsSubmit,
    UserData, ValidityPeriod, PID_SIM_DATA_DOWNLOAD,
};
pub use udh::{
    parse_user_data_header, ConcatReference, Concatenation, InformationElement, PacketKind,
    UserDataHeader,
};

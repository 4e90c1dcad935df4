//! PDU framing: command_length-delimited frames read raw, decoded with rusmpp afterwards, so
//! that a PDU whose body rusmpp refuses still has a usable header (for a `generic_nack` or a
//! `deliver_sm_resp`) and does not desynchronise the stream (SMPP 3.4 section 3.2).

use bytes::{Buf, Bytes, BytesMut};
use rusmpp::decode::DecodeWithLength;
use rusmpp::tokio_codec::CommandCodec;
use rusmpp::{Command, CommandStatus, Pdu};
use tokio_util::codec::{Decoder, Encoder};

/// Header length: command_length, command_id, command_status, sequence_number.
pub(crate) const HEADER_LEN: usize = 16;

/// command_id values used by raw handling (SMPP 3.4 section 5.1.2.1).
pub(crate) mod id {
    pub const GENERIC_NACK: u32 = 0x8000_0000;
    pub const BIND_RECEIVER_RESP: u32 = 0x8000_0001;
    pub const BIND_TRANSMITTER_RESP: u32 = 0x8000_0002;
    pub const SUBMIT_SM_RESP: u32 = 0x8000_0004;
    pub const DELIVER_SM: u32 = 0x0000_0005;
    pub const UNBIND: u32 = 0x0000_0006;
    pub const UNBIND_RESP: u32 = 0x8000_0006;
    pub const BIND_TRANSCEIVER_RESP: u32 = 0x8000_0009;
    pub const ENQUIRE_LINK: u32 = 0x0000_0015;
    pub const ENQUIRE_LINK_RESP: u32 = 0x8000_0015;
    pub const RESPONSE_BIT: u32 = 0x8000_0000;
}

/// One PDU as read from the wire, not yet decoded.
#[derive(Debug, Clone)]
pub(crate) struct RawPdu {
    pub command_id: u32,
    pub status: u32,
    pub sequence: u32,
    /// command_id onwards (header without command_length, then the body).
    pub bytes: Bytes,
}

impl RawPdu {
    /// The body after the 16-octet header.
    pub fn body(&self) -> &[u8] {
        self.bytes.get(HEADER_LEN - 4..).unwrap_or(&[])
    }

    pub fn is_response(&self) -> bool {
        self.command_id & id::RESPONSE_BIT != 0
    }

    /// Decodes the PDU with rusmpp.
    pub fn decode(&self) -> Result<Command, String> {
        let mut src = BytesMut::from(&self.bytes[..]);
        let length = src.len();
        <Command as DecodeWithLength>::decode(&mut src, length)
            .map(|(command, _)| command)
            .map_err(|e| e.to_string())
    }
}

/// Why the byte stream cannot be framed any more.
#[derive(Debug)]
pub(crate) enum FrameError {
    Io(std::io::Error),
    BadLength { length: u32, max: usize },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Io(e) => write!(f, "{e}"),
            FrameError::BadLength { length, max } => write!(
                f,
                "command_length {length} outside {HEADER_LEN}..={max}: stream cannot be framed"
            ),
        }
    }
}

impl From<std::io::Error> for FrameError {
    fn from(e: std::io::Error) -> Self {
        FrameError::Io(e)
    }
}

/// Length-delimited SMPP framing.
#[derive(Debug)]
pub(crate) struct RawCodec {
    max_len: usize,
}

impl RawCodec {
    pub fn new(max_len: usize) -> Self {
        Self {
            max_len: max_len.max(HEADER_LEN),
        }
    }
}

impl Decoder for RawCodec {
    type Item = RawPdu;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<RawPdu>, FrameError> {
        let Some(prefix) = src.get(..4) else {
            return Ok(None);
        };
        let length = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        let len = length as usize;
        if len < HEADER_LEN || len > self.max_len {
            return Err(FrameError::BadLength {
                length,
                max: self.max_len,
            });
        }
        if src.len() < len {
            src.reserve(len - src.len());
            return Ok(None);
        }
        let mut frame = src.split_to(len);
        frame.advance(4);
        let word = |at: usize| {
            u32::from_be_bytes([frame[at], frame[at + 1], frame[at + 2], frame[at + 3]])
        };
        let (command_id, status, sequence) = (word(0), word(4), word(8));
        Ok(Some(RawPdu {
            command_id,
            status,
            sequence,
            bytes: frame.freeze(),
        }))
    }
}

/// Encodes one command with rusmpp's codec.
pub(crate) fn encode(command: &Command) -> Bytes {
    let mut dst = BytesMut::new();
    // Encoding into memory cannot fail (the error type only carries I/O errors).
    let _ = CommandCodec::new().encode(command, &mut dst);
    dst.freeze()
}

/// A `generic_nack` (no body, SMPP 3.4 section 4.3).
pub(crate) fn generic_nack(sequence: u32, status: u32) -> Bytes {
    encode(&Command::new(
        CommandStatus::from(status),
        sequence,
        Pdu::GenericNack,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_rejects_bad_lengths() {
        let mut codec = RawCodec::new(1024);
        let mut buf = BytesMut::from(
            &[
                0, 0, 0, 16, 0, 0, 0, 0x15, 0, 0, 0, 0, 0, 0, 0, 7, // enquire_link seq 7
                0, 0, 0, 16, 0x80, 0, 0, 0x15,
            ][..],
        );
        let pdu = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(
            (pdu.command_id, pdu.status, pdu.sequence),
            (id::ENQUIRE_LINK, 0, 7)
        );
        assert!(pdu.body().is_empty());
        assert!(matches!(pdu.decode(), Ok(c) if c.sequence_number() == 7));
        assert!(codec.decode(&mut buf).unwrap().is_none());

        let mut bad = BytesMut::from(&[0, 0, 0, 5, 1, 2, 3, 4][..]);
        assert!(matches!(
            codec.decode(&mut bad),
            Err(FrameError::BadLength { length: 5, .. })
        ));
        let mut huge = BytesMut::from(&[0x7F, 0, 0, 0][..]);
        assert!(codec.decode(&mut huge).is_err());
    }

    #[test]
    fn nack_layout() {
        assert_eq!(
            &generic_nack(9, 3)[..],
            &[0, 0, 0, 16, 0x80, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 9]
        );
    }
}

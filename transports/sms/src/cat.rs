//! Card application toolkit framing around the TPDUs: the SMS-PP data download ENVELOPE
//! (TS 102 223 7.1.1, 3GPP TS 31.111 7.1.1) and the proactive SEND SHORT MESSAGE command
//! (TS 102 223 6.4.10) in which a card sends its PoR as an SMS-SUBMIT.

use crate::address::Address;
use crate::error::{Error, Result};
use crate::reader::Reader;
use crate::tpdu::{SmsDeliver, SmsSubmit};

/// BER-TLV tag of the SMS-PP download ENVELOPE (TS 102 223 9.1).
pub const TAG_SMS_PP_DOWNLOAD: u8 = 0xD1;
/// BER-TLV tag of a proactive command (TS 102 223 9.2).
pub const TAG_PROACTIVE_COMMAND: u8 = 0xD0;

/// Comprehension-TLV tags (TS 102 223 9.3), without the comprehension-required bit.
const TAG_COMMAND_DETAILS: u8 = 0x01;
const TAG_DEVICE_IDENTITIES: u8 = 0x02;
const TAG_ALPHA_IDENTIFIER: u8 = 0x05;
const TAG_ADDRESS: u8 = 0x06;
const TAG_SMS_TPDU: u8 = 0x0B;
const COMPREHENSION_REQUIRED: u8 = 0x80;

/// Device identity: the UICC (TS 102 223 8.7).
pub const DEVICE_UICC: u8 = 0x81;
/// Device identity: the terminal.
pub const DEVICE_TERMINAL: u8 = 0x82;
/// Device identity: the network.
pub const DEVICE_NETWORK: u8 = 0x83;

/// Type of command of SEND SHORT MESSAGE (TS 102 223 9.4).
pub const TYPE_SEND_SHORT_MESSAGE: u8 = 0x13;

/// A BER-TLV length: one octet up to 127, `81 xx` up to 255 (TS 102 223 annex C).
fn encode_length(length: usize, context: &'static str, out: &mut Vec<u8>) -> Result<()> {
    match u8::try_from(length) {
        Ok(l) if l < 0x80 => out.push(l),
        Ok(l) => out.extend_from_slice(&[0x81, l]),
        Err(_) => return Err(Error::TlvTooLong { context, length }),
    }
    Ok(())
}

/// The optional address TLV (86) then the SMS TPDU TLV (8B), as both the SMS-PP download
/// ENVELOPE and SEND SHORT MESSAGE end (TS 102 223 7.1.1 and 6.6.9).
fn push_address_and_tpdu(
    address: Option<&Address>,
    tpdu: &[u8],
    context: &'static str,
    out: &mut Vec<u8>,
) -> Result<()> {
    if let Some(address) = address {
        push_tlv(
            TAG_ADDRESS | COMPREHENSION_REQUIRED,
            &address.encode_dialling_number()?,
            context,
            out,
        )?;
    }
    push_tlv(TAG_SMS_TPDU | COMPREHENSION_REQUIRED, tpdu, context, out)
}

fn push_tlv(tag: u8, value: &[u8], context: &'static str, out: &mut Vec<u8>) -> Result<()> {
    out.push(tag);
    encode_length(value.len(), context, out)?;
    out.extend_from_slice(value);
    Ok(())
}

/// Reads one TLV with a one-octet tag (a three-octet 0x7F tag is read and reported as 0x7F).
fn read_tlv<'a>(reader: &mut Reader<'a>) -> Result<(u8, &'a [u8])> {
    let tag = reader.u8("TLV tag")?;
    if tag == 0x7F {
        // Three-octet comprehension tag (TS 102 223 annex C); none of ours uses it.
        reader.take(2, "three-octet TLV tag")?;
    }
    let first = reader.u8("TLV length")?;
    let length = match first {
        0x00..=0x7F => usize::from(first),
        0x81 => {
            let l = reader.u8("TLV length")?;
            if l < 0x80 {
                // Not minimal: TS 102 223 annex C codes 0..127 in one octet.
                return Err(Error::BadTlvLength {
                    tag,
                    coding: format!("81 {l:02x}"),
                });
            }
            usize::from(l)
        }
        other => {
            return Err(Error::BadTlvLength {
                tag,
                coding: format!("{other:02x}"),
            })
        }
    };
    let available = reader.remaining();
    let value = reader
        .take(length, "TLV value")
        .map_err(|_| Error::TlvOverrun {
            tag,
            length,
            available,
        })?;
    Ok((tag, value))
}

/// Reads the outer BER-TLV `tag`, which must span the whole input, and returns its value.
fn read_outer<'a>(input: &'a [u8], tag: u8, context: &'static str) -> Result<&'a [u8]> {
    let mut reader = Reader::new(input);
    let (found, value) = read_tlv(&mut reader)?;
    if found != tag {
        return Err(Error::UnexpectedTag {
            context,
            expected: tag,
            found,
        });
    }
    reader.finish(context)?;
    Ok(value)
}

/// The simple TLVs inside a proactive command or envelope, first occurrence of each kept.
#[derive(Default)]
struct SimpleTlvs<'a> {
    command_details: Option<&'a [u8]>,
    device_identities: Option<&'a [u8]>,
    alpha_identifier: Option<&'a [u8]>,
    address: Option<&'a [u8]>,
    sms_tpdu: Option<&'a [u8]>,
}

impl<'a> SimpleTlvs<'a> {
    fn parse(body: &'a [u8]) -> Result<Self> {
        let mut out = Self::default();
        let mut reader = Reader::new(body);
        while !reader.is_empty() {
            let (tag, value) = read_tlv(&mut reader)?;
            // Both tag forms (CR bit set or clear) are accepted (TS 102 223 annex C).
            let slot = match tag & !COMPREHENSION_REQUIRED {
                TAG_COMMAND_DETAILS => &mut out.command_details,
                TAG_DEVICE_IDENTITIES => &mut out.device_identities,
                TAG_ALPHA_IDENTIFIER => &mut out.alpha_identifier,
                TAG_ADDRESS => &mut out.address,
                TAG_SMS_TPDU => &mut out.sms_tpdu,
                // Unknown TLVs (icon identifier, frame identifier, ...) carry nothing we need.
                _ => continue,
            };
            slot.get_or_insert(value);
        }
        Ok(out)
    }
}

fn check_device_identities(
    value: Option<&[u8]>,
    context: &'static str,
    expected_source: u8,
    expected_destination: u8,
) -> Result<()> {
    let value = value.ok_or(Error::MissingTlv {
        context,
        tlv: "device identities",
    })?;
    match *value {
        [source, destination]
            if source == expected_source && destination == expected_destination =>
        {
            Ok(())
        }
        [source_device, destination_device] => Err(Error::UnexpectedDeviceIdentities {
            context,
            source_device,
            destination_device,
            expected_source,
            expected_destination,
        }),
        _ => Err(Error::TlvLength {
            tlv: "device identities",
            length: value.len(),
            expected: 2,
        }),
    }
}

/// ENVELOPE (SMS-PP DOWNLOAD): network to UICC, optional SC address, the SMS-DELIVER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsPpDownload {
    /// Address TLV: the service centre address (RP-OA), if given.
    pub address: Option<Address>,
    /// The SMS TPDU TLV: an SMS-DELIVER.
    pub deliver: SmsDeliver,
}

impl SmsPpDownload {
    /// Encodes `D1 len 82 02 83 81 [86 len address] 8B len TPDU`, the ENVELOPE command data.
    pub fn encode(&self) -> Result<Vec<u8>> {
        const CONTEXT: &str = "SMS-PP download ENVELOPE";
        let mut body = vec![
            TAG_DEVICE_IDENTITIES | COMPREHENSION_REQUIRED,
            0x02,
            DEVICE_NETWORK,
            DEVICE_UICC,
        ];
        push_address_and_tpdu(
            self.address.as_ref(),
            &self.deliver.encode()?,
            CONTEXT,
            &mut body,
        )?;
        let mut out = Vec::with_capacity(body.len() + 3);
        push_tlv(TAG_SMS_PP_DOWNLOAD, &body, CONTEXT, &mut out)?;
        // The ENVELOPE command data (Lc) is at most 255 octets.
        if out.len() > 255 {
            return Err(Error::TlvTooLong {
                context: CONTEXT,
                length: out.len(),
            });
        }
        Ok(out)
    }

    /// Decodes ENVELOPE command data; the D1 TLV must span the input.
    pub fn decode(envelope: &[u8]) -> Result<Self> {
        const CONTEXT: &str = "SMS-PP download ENVELOPE";
        let body = read_outer(envelope, TAG_SMS_PP_DOWNLOAD, CONTEXT)?;
        let tlvs = SimpleTlvs::parse(body)?;
        check_device_identities(tlvs.device_identities, CONTEXT, DEVICE_NETWORK, DEVICE_UICC)?;
        let address = tlvs
            .address
            .map(Address::decode_dialling_number)
            .transpose()?;
        let tpdu = tlvs.sms_tpdu.ok_or(Error::MissingTlv {
            context: CONTEXT,
            tlv: "SMS TPDU",
        })?;
        Ok(Self {
            address,
            deliver: SmsDeliver::decode(tpdu)?,
        })
    }
}

/// Proactive SEND SHORT MESSAGE (TS 102 223 6.6.9): how a card sends a PoR by SMS-SUBMIT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendShortMessage {
    /// Command number from the command details.
    pub command_number: u8,
    /// Command qualifier (bit 1: the terminal must pack 7-bit text).
    pub command_qualifier: u8,
    /// Alpha identifier, raw (EF-ADN alpha coding); `Some(vec![])` for an empty one.
    pub alpha_identifier: Option<Vec<u8>>,
    /// Address TLV: the service centre address, if given.
    pub address: Option<Address>,
    /// The SMS TPDU TLV: an SMS-SUBMIT.
    pub submit: SmsSubmit,
}

impl SendShortMessage {
    /// Encodes `D0 len 81 03 nn 13 qq 82 02 81 83 [05 ..] [86 ..] 8B len TPDU`.
    pub fn encode(&self) -> Result<Vec<u8>> {
        const CONTEXT: &str = "SEND SHORT MESSAGE";
        let mut body = vec![
            TAG_COMMAND_DETAILS | COMPREHENSION_REQUIRED,
            0x03,
            self.command_number,
            TYPE_SEND_SHORT_MESSAGE,
            self.command_qualifier,
            TAG_DEVICE_IDENTITIES | COMPREHENSION_REQUIRED,
            0x02,
            DEVICE_UICC,
            DEVICE_NETWORK,
        ];
        if let Some(alpha) = &self.alpha_identifier {
            push_tlv(TAG_ALPHA_IDENTIFIER, alpha, CONTEXT, &mut body)?;
        }
        push_address_and_tpdu(
            self.address.as_ref(),
            &self.submit.encode()?,
            CONTEXT,
            &mut body,
        )?;
        let mut out = Vec::with_capacity(body.len() + 3);
        push_tlv(TAG_PROACTIVE_COMMAND, &body, CONTEXT, &mut out)?;
        Ok(out)
    }

    /// Decodes a proactive command (FETCH response data) that must be SEND SHORT MESSAGE.
    pub fn decode(command: &[u8]) -> Result<Self> {
        const CONTEXT: &str = "SEND SHORT MESSAGE";
        let body = read_outer(command, TAG_PROACTIVE_COMMAND, CONTEXT)?;
        let tlvs = SimpleTlvs::parse(body)?;
        let details = tlvs.command_details.ok_or(Error::MissingTlv {
            context: CONTEXT,
            tlv: "command details",
        })?;
        let (command_number, command_qualifier) = match *details {
            [number, TYPE_SEND_SHORT_MESSAGE, qualifier] => (number, qualifier),
            [_, type_of_command, _] => return Err(Error::NotSendShortMessage { type_of_command }),
            _ => {
                return Err(Error::TlvLength {
                    tlv: "command details",
                    length: details.len(),
                    expected: 3,
                })
            }
        };
        check_device_identities(tlvs.device_identities, CONTEXT, DEVICE_UICC, DEVICE_NETWORK)?;
        let address = tlvs
            .address
            .map(Address::decode_dialling_number)
            .transpose()?;
        let tpdu = tlvs.sms_tpdu.ok_or(Error::MissingTlv {
            context: CONTEXT,
            tlv: "SMS TPDU",
        })?;
        Ok(Self {
            command_number,
            command_qualifier,
            alpha_identifier: tlvs.alpha_identifier.map(<[u8]>::to_vec),
            address,
            submit: SmsSubmit::decode(tpdu)?,
        })
    }
}

/// Parses ENVELOPE (SMS-PP DOWNLOAD) command data.
pub fn parse_sms_pp_download(envelope: &[u8]) -> Result<SmsPpDownload> {
    SmsPpDownload::decode(envelope)
}

/// Parses a proactive SEND SHORT MESSAGE command.
pub fn parse_send_short_message(command: &[u8]) -> Result<SendShortMessage> {
    SendShortMessage::decode(command)
}

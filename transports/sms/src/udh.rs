//! User Data Header (TS 23.040 9.2.3.24): UDHL, then IEI / length / value triplets.

use crate::error::{Error, Result};
use crate::reader::Reader;

/// IEI 0x00: concatenated short messages, 8-bit reference (TS 23.040 9.2.3.24.1).
pub const IEI_CONCATENATION_8BIT: u8 = 0x00;
/// IEI 0x08: concatenated short messages, 16-bit reference (TS 23.040 9.2.3.24.8).
pub const IEI_CONCATENATION_16BIT: u8 = 0x08;
/// IEI 0x70: command packet identifier, CPI (TS 31.115 / TS 102 225 over SMS-PP).
pub const IEI_COMMAND_PACKET: u8 = 0x70;
/// IEI 0x71: response packet identifier, RPI (TS 31.115).
pub const IEI_RESPONSE_PACKET: u8 = 0x71;

/// One information element of a UDH.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InformationElement {
    /// Information element identifier.
    pub iei: u8,
    /// Information element data (0 to 255 octets).
    pub value: Vec<u8>,
}

impl InformationElement {
    /// An element from its identifier and value.
    pub fn new(iei: u8, value: impl Into<Vec<u8>>) -> Self {
        Self {
            iei,
            value: value.into(),
        }
    }

    /// The command packet identifier element `70 00`.
    pub fn command_packet() -> Self {
        Self::new(IEI_COMMAND_PACKET, Vec::new())
    }

    /// The response packet identifier element `71 00`.
    pub fn response_packet() -> Self {
        Self::new(IEI_RESPONSE_PACKET, Vec::new())
    }

    fn encoded_len(&self) -> usize {
        2 + self.value.len()
    }
}

/// Which SCP80 packet a UDH announces (TS 31.115: IEI 0x70 or 0x71).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketKind {
    /// A command packet, IEI 0x70.
    Command,
    /// A response packet (PoR), IEI 0x71.
    Response,
}

impl PacketKind {
    /// The IEI that announces this packet kind.
    pub fn iei(self) -> u8 {
        match self {
            PacketKind::Command => IEI_COMMAND_PACKET,
            PacketKind::Response => IEI_RESPONSE_PACKET,
        }
    }

    /// The element (with empty value) that announces this packet kind.
    pub fn element(self) -> InformationElement {
        InformationElement::new(self.iei(), Vec::new())
    }
}

/// A concatenation reference number and its width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConcatReference {
    /// 8-bit reference, IEI 0x00.
    EightBit(u8),
    /// 16-bit reference, IEI 0x08.
    SixteenBit(u16),
}

impl ConcatReference {
    /// The reference number, widened.
    pub fn number(self) -> u16 {
        match self {
            ConcatReference::EightBit(r) => u16::from(r),
            ConcatReference::SixteenBit(r) => r,
        }
    }

    /// The IEI that carries this reference.
    pub fn iei(self) -> u8 {
        match self {
            ConcatReference::EightBit(_) => IEI_CONCATENATION_8BIT,
            ConcatReference::SixteenBit(_) => IEI_CONCATENATION_16BIT,
        }
    }

    /// "8-bit" or "16-bit", for messages.
    pub fn kind_name(self) -> &'static str {
        match self {
            ConcatReference::EightBit(_) => "8-bit",
            ConcatReference::SixteenBit(_) => "16-bit",
        }
    }

    /// Octets the concatenation IE takes in a UDH (IEI, length and value).
    pub fn element_len(self) -> usize {
        match self {
            ConcatReference::EightBit(_) => 5,
            ConcatReference::SixteenBit(_) => 6,
        }
    }
}

/// The concatenation IE (TS 23.040 9.2.3.24.1 and 9.2.3.24.8), typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Concatenation {
    /// Reference number shared by all segments of the message.
    pub reference: ConcatReference,
    /// Number of segments in the message.
    pub total: u8,
    /// This segment's number, from 1.
    pub sequence: u8,
}

impl Concatenation {
    /// Reads a concatenation IE; `Ok(None)` if `element` is another IE.
    ///
    /// TS 23.040 tells a receiver to ignore an IE with total 0 or sequence out of range;
    /// an OTA gateway rather wants to know, so these are errors.
    pub fn from_element(element: &InformationElement) -> Result<Option<Self>> {
        let (reference, total, sequence) = match element.iei {
            IEI_CONCATENATION_8BIT => match element.value.as_slice() {
                &[r, t, s] => (ConcatReference::EightBit(r), t, s),
                other => {
                    return Err(Error::ConcatenationLength {
                        iei: element.iei,
                        length: other.len(),
                        expected: 3,
                    })
                }
            },
            IEI_CONCATENATION_16BIT => match element.value.as_slice() {
                &[hi, lo, t, s] => (
                    ConcatReference::SixteenBit(u16::from_be_bytes([hi, lo])),
                    t,
                    s,
                ),
                other => {
                    return Err(Error::ConcatenationLength {
                        iei: element.iei,
                        length: other.len(),
                        expected: 4,
                    })
                }
            },
            _ => return Ok(None),
        };
        if total == 0 {
            return Err(Error::ConcatenationTotalZero);
        }
        if sequence == 0 || sequence > total {
            return Err(Error::SequenceOutOfRange { sequence, total });
        }
        Ok(Some(Self {
            reference,
            total,
            sequence,
        }))
    }

    /// The IE that carries this concatenation.
    pub fn to_element(&self) -> InformationElement {
        let value = match self.reference {
            ConcatReference::EightBit(r) => vec![r, self.total, self.sequence],
            ConcatReference::SixteenBit(r) => {
                let [hi, lo] = r.to_be_bytes();
                vec![hi, lo, self.total, self.sequence]
            }
        };
        InformationElement::new(self.reference.iei(), value)
    }
}

/// A parsed User Data Header: its information elements in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct UserDataHeader {
    /// The information elements, in wire order.
    pub elements: Vec<InformationElement>,
}

impl UserDataHeader {
    /// A header holding `elements`.
    pub fn new(elements: Vec<InformationElement>) -> Self {
        Self { elements }
    }

    /// Splits TP-UD that starts with a UDH into the header and the remaining octets.
    pub fn parse(user_data: &[u8]) -> Result<(Self, &[u8])> {
        let mut reader = Reader::new(user_data);
        let udhl = reader.u8("UDHL").map_err(|_| Error::EmptyUserData)?;
        let header =
            reader
                .take(usize::from(udhl), "UDH")
                .map_err(|_| Error::UdhLengthExceedsUserData {
                    udhl,
                    user_data_length: user_data.len(),
                })?;
        let tail = reader.rest();

        let mut elements = Vec::new();
        let mut ies = Reader::new(header);
        while !ies.is_empty() {
            let iei = ies.u8("IEI")?;
            let length = ies.u8("IE length")?;
            let available = ies.remaining();
            let value = ies.take(usize::from(length), "IE value").map_err(|_| {
                Error::InformationElementOverrun {
                    iei,
                    length,
                    available,
                }
            })?;
            elements.push(InformationElement::new(iei, value));
        }
        Ok((Self { elements }, tail))
    }

    /// Octets of the encoded header, UDHL octet included.
    pub fn encoded_len(&self) -> usize {
        1 + self
            .elements
            .iter()
            .map(InformationElement::encoded_len)
            .sum::<usize>()
    }

    /// Encodes UDHL and the elements.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// Encodes the header followed by `tail`, forming TP-UD.
    pub fn encode_user_data(&self, tail: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.encoded_len() + tail.len());
        self.encode_into(&mut out)?;
        out.extend_from_slice(tail);
        Ok(out)
    }

    fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        // The most specific complaint first: an element too long for its length octet.
        if let Some(element) = self.elements.iter().find(|e| e.value.len() > 255) {
            return Err(Error::InformationElementTooLong {
                iei: element.iei,
                length: element.value.len(),
            });
        }
        let body_len = self.encoded_len() - 1;
        let udhl = u8::try_from(body_len).map_err(|_| Error::UdhTooLong { length: body_len })?;
        out.push(udhl);
        for element in &self.elements {
            out.push(element.iei);
            // Checked above: at most 255.
            out.push(element.value.len() as u8);
            out.extend_from_slice(&element.value);
        }
        Ok(())
    }

    /// The first element with identifier `iei`.
    pub fn get(&self, iei: u8) -> Option<&InformationElement> {
        self.elements.iter().find(|e| e.iei == iei)
    }

    /// The concatenation IE, if any; an error if malformed or repeated.
    pub fn concatenation(&self) -> Result<Option<Concatenation>> {
        let mut found = None;
        for element in &self.elements {
            if let Some(c) = Concatenation::from_element(element)? {
                if found.is_some() {
                    return Err(Error::RepeatedConcatenation);
                }
                found = Some(c);
            }
        }
        Ok(found)
    }

    /// The SCP80 packet kind this header announces (IEI 0x70 or 0x71), the first one if both.
    pub fn packet_kind(&self) -> Option<PacketKind> {
        self.elements.iter().find_map(|e| match e.iei {
            IEI_COMMAND_PACKET => Some(PacketKind::Command),
            IEI_RESPONSE_PACKET => Some(PacketKind::Response),
            _ => None,
        })
    }
}

/// Parses TP-UD that starts with a UDH into (header, remaining octets).
pub fn parse_user_data_header(user_data: &[u8]) -> Result<(UserDataHeader, &[u8])> {
    UserDataHeader::parse(user_data)
}

//! Address fields (TS 23.040 9.1.2.5) and the BCD dialling numbers of CAT address TLVs
//! (TS 102 223 8.1).

use crate::error::{Error, Result};
use crate::gsm7;
use crate::reader::Reader;

/// Most semi-octets TP-OA / TP-DA can hold: the field is 2 to 12 octets (TS 23.040 9.1.2.5).
pub const MAX_ADDRESS_SEMI_OCTETS: usize = 20;

/// Type of number, bits 7..5 of the type-of-address octet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TypeOfNumber {
    /// 000 unknown.
    Unknown,
    /// 001 international number.
    International,
    /// 010 national number.
    National,
    /// 011 network specific number.
    NetworkSpecific,
    /// 100 subscriber number.
    Subscriber,
    /// 101 alphanumeric (GSM 7-bit default alphabet, TS 23.038).
    Alphanumeric,
    /// 110 abbreviated number.
    Abbreviated,
    /// 111 reserved for extension.
    Reserved,
}

impl TypeOfNumber {
    /// From the three TON bits.
    pub fn from_bits(bits: u8) -> Self {
        match bits & 0x07 {
            0 => Self::Unknown,
            1 => Self::International,
            2 => Self::National,
            3 => Self::NetworkSpecific,
            4 => Self::Subscriber,
            5 => Self::Alphanumeric,
            6 => Self::Abbreviated,
            _ => Self::Reserved,
        }
    }

    /// The three TON bits.
    pub fn bits(self) -> u8 {
        match self {
            Self::Unknown => 0,
            Self::International => 1,
            Self::National => 2,
            Self::NetworkSpecific => 3,
            Self::Subscriber => 4,
            Self::Alphanumeric => 5,
            Self::Abbreviated => 6,
            Self::Reserved => 7,
        }
    }
}

/// Numbering plan identification, bits 4..1 of the type-of-address octet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NumberingPlan {
    /// 0000 unknown.
    Unknown,
    /// 0001 ISDN / telephone (E.164 / E.163).
    IsdnTelephone,
    /// 0011 data (X.121).
    Data,
    /// 0100 telex.
    Telex,
    /// 0101 service centre specific plan 1.
    ServiceCentreSpecific1,
    /// 0110 service centre specific plan 2.
    ServiceCentreSpecific2,
    /// 1000 national.
    National,
    /// 1001 private.
    Private,
    /// 1010 ERMES.
    Ermes,
    /// Any other (reserved) value, as its four bits.
    Other(u8),
}

impl NumberingPlan {
    /// From the four NPI bits.
    pub fn from_bits(bits: u8) -> Self {
        match bits & 0x0F {
            0x0 => Self::Unknown,
            0x1 => Self::IsdnTelephone,
            0x3 => Self::Data,
            0x4 => Self::Telex,
            0x5 => Self::ServiceCentreSpecific1,
            0x6 => Self::ServiceCentreSpecific2,
            0x8 => Self::National,
            0x9 => Self::Private,
            0xA => Self::Ermes,
            other => Self::Other(other),
        }
    }

    /// The four NPI bits.
    pub fn bits(self) -> u8 {
        match self {
            Self::Unknown => 0x0,
            Self::IsdnTelephone => 0x1,
            Self::Data => 0x3,
            Self::Telex => 0x4,
            Self::ServiceCentreSpecific1 => 0x5,
            Self::ServiceCentreSpecific2 => 0x6,
            Self::National => 0x8,
            Self::Private => 0x9,
            Self::Ermes => 0xA,
            Self::Other(bits) => bits & 0x0F,
        }
    }
}

/// The type-of-address octet, kept raw so that unusual values (bit 8 clear, e.g. 0x50) survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TypeOfAddress(pub u8);

impl TypeOfAddress {
    /// International, ISDN/telephone: 0x91.
    pub const INTERNATIONAL: Self = Self(0x91);
    /// Alphanumeric, unknown plan: 0xD0.
    pub const ALPHANUMERIC: Self = Self(0xD0);

    /// From TON and NPI, with bit 8 set as TS 23.040 9.1.2.5 requires.
    pub fn new(ton: TypeOfNumber, npi: NumberingPlan) -> Self {
        Self(0x80 | (ton.bits() << 4) | npi.bits())
    }

    /// The type of number.
    pub fn ton(self) -> TypeOfNumber {
        TypeOfNumber::from_bits(self.0 >> 4)
    }

    /// The numbering plan.
    pub fn npi(self) -> NumberingPlan {
        NumberingPlan::from_bits(self.0)
    }
}

/// What an address field holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AddressValue {
    /// BCD digits: `0`-`9`, `*`, `#`, `a`, `b`, `c` (TS 23.040 9.1.2.3).
    Digits(String),
    /// Alphanumeric (TON 101): packed GSM 7-bit octets and the length octet as sent.
    Alphanumeric {
        /// The address-length octet: useful semi-octets of `octets`.
        semi_octets: u8,
        /// The packed septets.
        octets: Vec<u8>,
    },
}

/// An SMS address: type of address and value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    /// The type-of-address octet.
    pub type_of_address: TypeOfAddress,
    /// Digits or alphanumeric octets.
    pub value: AddressValue,
}

fn digit_to_nibble(character: char) -> Result<u8> {
    Ok(match character {
        '0'..='9' => character as u8 - b'0',
        '*' => 0xA,
        '#' => 0xB,
        'a' | 'A' => 0xC,
        'b' | 'B' => 0xD,
        'c' | 'C' => 0xE,
        _ => return Err(Error::InvalidDigitCharacter { character }),
    })
}

fn nibble_to_digit(nibble: u8, position: usize) -> Result<char> {
    Ok(match nibble {
        0..=9 => char::from(b'0' + nibble),
        0xA => '*',
        0xB => '#',
        0xC => 'a',
        0xD => 'b',
        0xE => 'c',
        _ => return Err(Error::InvalidAddressSemiOctet { nibble, position }),
    })
}

/// Swapped-nibble BCD with an F filler for an odd count.
fn encode_bcd(digits: &str) -> Result<Vec<u8>> {
    let nibbles = digits
        .chars()
        .map(digit_to_nibble)
        .collect::<Result<Vec<u8>>>()?;
    Ok(nibbles
        .chunks(2)
        .map(|pair| match *pair {
            [lo, hi] => lo | (hi << 4),
            [lo] => lo | 0xF0,
            _ => 0xFF,
        })
        .collect())
}

fn nibbles(octets: &[u8]) -> impl Iterator<Item = u8> + '_ {
    octets.iter().flat_map(|&b| [b & 0x0F, b >> 4])
}

impl Address {
    /// A digit address; checks the digits and the 20-digit limit.
    pub fn digits(ton: TypeOfNumber, npi: NumberingPlan, digits: &str) -> Result<Self> {
        let address = Self {
            type_of_address: TypeOfAddress::new(ton, npi),
            value: AddressValue::Digits(digits.to_ascii_lowercase()),
        };
        address.encode()?;
        Ok(address)
    }

    /// An international E.164 number (type of address 0x91).
    pub fn international(digits: &str) -> Result<Self> {
        Self::digits(
            TypeOfNumber::International,
            NumberingPlan::IsdnTelephone,
            digits,
        )
    }

    /// An alphanumeric address (type of address 0xD0) from text in the GSM 7-bit alphabet.
    pub fn alphanumeric(text: &str) -> Result<Self> {
        let septets = gsm7::encode_text(text)?;
        let octets = gsm7::pack_septets(&septets);
        // Useful semi-octets, so the receiver does not read a spurious '@' from spare bits.
        let semi_octets = (septets.len() * 7).div_ceil(4);
        if semi_octets > MAX_ADDRESS_SEMI_OCTETS {
            return Err(Error::AddressTooLong {
                semi_octets,
                max: MAX_ADDRESS_SEMI_OCTETS,
            });
        }
        Ok(Self {
            type_of_address: TypeOfAddress::ALPHANUMERIC,
            value: AddressValue::Alphanumeric {
                semi_octets: semi_octets as u8,
                octets,
            },
        })
    }

    /// The digits, if this is a digit address.
    pub fn digit_str(&self) -> Option<&str> {
        match &self.value {
            AddressValue::Digits(d) => Some(d),
            AddressValue::Alphanumeric { .. } => None,
        }
    }

    /// The text of an alphanumeric address, decoded from the GSM 7-bit default alphabet.
    pub fn alphanumeric_text(&self) -> Option<String> {
        match &self.value {
            AddressValue::Alphanumeric {
                semi_octets,
                octets,
            } => {
                let count = usize::from(*semi_octets) * 4 / 7;
                Some(gsm7::decode_text(&gsm7::unpack_septets(octets, count)))
            }
            AddressValue::Digits(_) => None,
        }
    }

    /// Encodes as TP-OA / TP-DA: length in semi-octets, type of address, value.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let (length, body) = match &self.value {
            AddressValue::Digits(digits) => (digits.chars().count(), encode_bcd(digits)?),
            AddressValue::Alphanumeric {
                semi_octets,
                octets,
            } => {
                let expected = usize::from(*semi_octets).div_ceil(2);
                if octets.len() != expected {
                    return Err(Error::AlphanumericLength {
                        semi_octets: *semi_octets,
                        expected,
                        actual: octets.len(),
                    });
                }
                (usize::from(*semi_octets), octets.clone())
            }
        };
        if length > MAX_ADDRESS_SEMI_OCTETS {
            return Err(Error::AddressTooLong {
                semi_octets: length,
                max: MAX_ADDRESS_SEMI_OCTETS,
            });
        }
        let mut out = Vec::with_capacity(2 + body.len());
        out.push(length as u8);
        out.push(self.type_of_address.0);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decodes TP-OA / TP-DA from the front of `input`, returning the rest.
    ///
    /// For an odd digit count the filler semi-octet is not checked (TS 23.040 says it is
    /// 1111; nothing is gained by refusing a sender that put something else there).
    pub fn decode(input: &[u8]) -> Result<(Self, &[u8])> {
        let mut reader = Reader::new(input);
        let semi_octets = reader.u8("address length")?;
        let type_of_address = TypeOfAddress(reader.u8("type of address")?);
        if usize::from(semi_octets) > MAX_ADDRESS_SEMI_OCTETS {
            return Err(Error::AddressTooLong {
                semi_octets: usize::from(semi_octets),
                max: MAX_ADDRESS_SEMI_OCTETS,
            });
        }
        let body = reader.take(usize::from(semi_octets).div_ceil(2), "address value")?;
        let value = if type_of_address.ton() == TypeOfNumber::Alphanumeric {
            AddressValue::Alphanumeric {
                semi_octets,
                octets: body.to_vec(),
            }
        } else {
            let digits = nibbles(body)
                .take(usize::from(semi_octets))
                .enumerate()
                .map(|(position, nibble)| nibble_to_digit(nibble, position))
                .collect::<Result<String>>()?;
            AddressValue::Digits(digits)
        };
        Ok((
            Self {
                type_of_address,
                value,
            },
            reader.rest(),
        ))
    }

    /// Encodes as the value of a CAT address TLV: type of address, then BCD digits
    /// (TS 102 223 8.1), an odd count padded with F.
    pub fn encode_dialling_number(&self) -> Result<Vec<u8>> {
        match &self.value {
            AddressValue::Digits(digits) => {
                let mut out = vec![self.type_of_address.0];
                out.extend(encode_bcd(digits)?);
                Ok(out)
            }
            AddressValue::Alphanumeric { .. } => Err(Error::AlphanumericNotAllowed {
                field: "address TLV",
            }),
        }
    }

    /// Decodes the value of a CAT address TLV; digits end at the first F semi-octet,
    /// after which only F may follow.
    pub fn decode_dialling_number(value: &[u8]) -> Result<Self> {
        let mut reader = Reader::new(value);
        let type_of_address = TypeOfAddress(reader.u8("type of address")?);
        let mut digits = String::new();
        let mut filler_at = None;
        for (position, nibble) in nibbles(reader.rest()).enumerate() {
            if nibble == 0xF {
                filler_at.get_or_insert(position);
            } else if let Some(position) = filler_at {
                // A filler inside the number, not at its end.
                return Err(Error::InvalidAddressSemiOctet {
                    nibble: 0xF,
                    position,
                });
            } else {
                digits.push(nibble_to_digit(nibble, position)?);
            }
        }
        Ok(Self {
            type_of_address,
            value: AddressValue::Digits(digits),
        })
    }
}

/// Parses TP-OA / TP-DA from the front of `input`; returns the address and the rest.
pub fn parse_address(input: &[u8]) -> Result<(Address, &[u8])> {
    Address::decode(input)
}

/// Parses the value of a CAT address TLV (type of address, then BCD digits).
pub fn parse_dialling_number(value: &[u8]) -> Result<Address> {
    Address::decode_dialling_number(value)
}

//! SMS-DELIVER and SMS-SUBMIT TPDUs (TS 23.040 9.2.2.1, 9.2.2.2) and their user data.

use crate::address::Address;
use crate::concat::MAX_USER_DATA_OCTETS;
use crate::error::{Error, Result};
use crate::reader::Reader;
use crate::udh::UserDataHeader;

/// TP-PID 0x7F: (U)SIM data download (TS 23.040 9.2.3.9).
pub const PID_SIM_DATA_DOWNLOAD: u8 = 0x7F;

/// Most septets in one SMS of GSM 7-bit data (140 octets).
pub const MAX_USER_DATA_SEPTETS: usize = 160;

const MTI_DELIVER: u8 = 0b00;
const MTI_SUBMIT: u8 = 0b01;

const BIT_MMS_OR_RD: u8 = 1 << 2;
const BIT_LP: u8 = 1 << 3;
const BIT_SRI_OR_SRR: u8 = 1 << 5;
const BIT_UDHI: u8 = 1 << 6;
const BIT_RP: u8 = 1 << 7;
const VPF_MASK: u8 = 0b11 << 3;

/// The character set a DCS announces (TS 23.038 clause 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alphabet {
    /// GSM 7-bit default alphabet: TP-UDL counts septets (unless compressed).
    Gsm7Bit,
    /// 8-bit data: TP-UDL counts octets.
    EightBit,
    /// UCS2: TP-UDL counts octets.
    Ucs2,
}

/// The TP-DCS octet (TS 23.038 clause 4), kept raw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DataCodingScheme(pub u8);

impl DataCodingScheme {
    /// 0xF6: data coding / message class group, 8-bit data, class 2 (SIM specific).
    pub const CLASS2_8BIT: Self = Self(0xF6);
    /// 0x16: general data coding, uncompressed, 8-bit data, class 2.
    pub const GENERAL_CLASS2_8BIT: Self = Self(0x16);
    /// 0x00: general data coding, GSM 7-bit default alphabet, no class.
    pub const GSM7_DEFAULT: Self = Self(0x00);

    /// The alphabet; reserved codings count as GSM 7-bit, as TS 23.038 tells receivers to.
    pub fn alphabet(self) -> Alphabet {
        let dcs = self.0;
        match dcs >> 4 {
            // 00xx general data coding, 01xx marked for automatic deletion: bits 3..2.
            0x0..=0x7 => match (dcs >> 2) & 0b11 {
                0b01 => Alphabet::EightBit,
                0b10 => Alphabet::Ucs2,
                _ => Alphabet::Gsm7Bit,
            },
            // 1110 message waiting indication, store message, UCS2.
            0xE => Alphabet::Ucs2,
            // 1111 data coding / message class: bit 2 selects 8-bit data.
            0xF if dcs & 0x04 != 0 => Alphabet::EightBit,
            // 1000..1011 reserved, 1100/1101 message waiting (GSM 7-bit), 1111 with bit 2 clear.
            _ => Alphabet::Gsm7Bit,
        }
    }

    /// True when bit 5 of a general data coding group says the text is compressed.
    pub fn is_compressed(self) -> bool {
        self.0 >> 6 <= 0b01 && self.0 & 0x20 != 0
    }

    /// True when TP-UDL counts septets (TS 23.040 9.2.3.16): uncompressed GSM 7-bit.
    pub fn udl_counts_septets(self) -> bool {
        self.alphabet() == Alphabet::Gsm7Bit && !self.is_compressed()
    }
}

/// TP-UD together with the unit TP-UDL counts it in (TS 23.040 9.2.3.16).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UserData {
    /// 8-bit, UCS2 or compressed data: TP-UDL is the octet count.
    Octets(Vec<u8>),
    /// Uncompressed GSM 7-bit data: TP-UDL is the septet count (UDH and fill bits included).
    Septets {
        /// Number of septets (TP-UDL).
        count: u8,
        /// The packed octets, `ceil(count * 7 / 8)` of them.
        packed: Vec<u8>,
    },
}

impl UserData {
    /// The octets of TP-UD as sent.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            UserData::Octets(o) => o,
            UserData::Septets { packed, .. } => packed,
        }
    }

    fn unit(&self) -> &'static str {
        match self {
            UserData::Octets(_) => "octets",
            UserData::Septets { .. } => "septets",
        }
    }

    /// Checks the data against the DCS and its limits; returns TP-UDL.
    fn udl(&self, dcs: DataCodingScheme) -> Result<u8> {
        let dcs_unit = if dcs.udl_counts_septets() {
            "septets"
        } else {
            "octets"
        };
        if dcs_unit != self.unit() {
            return Err(Error::UserDataCodingMismatch {
                dcs: dcs.0,
                dcs_unit,
                data_unit: self.unit(),
            });
        }
        match self {
            UserData::Octets(octets) => {
                if octets.len() > MAX_USER_DATA_OCTETS {
                    return Err(Error::UserDataLengthTooLarge {
                        udl: octets.len(),
                        max: MAX_USER_DATA_OCTETS,
                        unit: "octets",
                    });
                }
                Ok(octets.len() as u8)
            }
            UserData::Septets { count, packed } => {
                if usize::from(*count) > MAX_USER_DATA_SEPTETS {
                    return Err(Error::UserDataLengthTooLarge {
                        udl: usize::from(*count),
                        max: MAX_USER_DATA_SEPTETS,
                        unit: "septets",
                    });
                }
                let expected = septet_octets(*count);
                if packed.len() != expected {
                    return Err(Error::SeptetPackingLength {
                        septets: *count,
                        expected,
                        actual: packed.len(),
                    });
                }
                Ok(*count)
            }
        }
    }

    /// Reads TP-UDL and TP-UD; TP-UD must end the TPDU.
    fn decode(
        reader: &mut Reader<'_>,
        dcs: DataCodingScheme,
        context: &'static str,
    ) -> Result<Self> {
        let udl = reader.u8("TP-UDL")?;
        let data = if dcs.udl_counts_septets() {
            if usize::from(udl) > MAX_USER_DATA_SEPTETS {
                return Err(Error::UserDataLengthTooLarge {
                    udl: usize::from(udl),
                    max: MAX_USER_DATA_SEPTETS,
                    unit: "septets",
                });
            }
            let packed = reader.take(septet_octets(udl), "TP-UD")?;
            UserData::Septets {
                count: udl,
                packed: packed.to_vec(),
            }
        } else {
            if usize::from(udl) > MAX_USER_DATA_OCTETS {
                return Err(Error::UserDataLengthTooLarge {
                    udl: usize::from(udl),
                    max: MAX_USER_DATA_OCTETS,
                    unit: "octets",
                });
            }
            UserData::Octets(reader.take(usize::from(udl), "TP-UD")?.to_vec())
        };
        // TP-UDL delimits TP-UD; extra octets mean a wrong TP-UDL (e.g. pySim's UDL 3 quirk).
        reader.finish(context)?;
        Ok(data)
    }

    fn encode_into(&self, dcs: DataCodingScheme, out: &mut Vec<u8>) -> Result<()> {
        let udl = self.udl(dcs)?;
        out.push(udl);
        out.extend_from_slice(self.as_bytes());
        Ok(())
    }

    /// Parses the UDH at the start of TP-UD.
    ///
    /// For 7-bit data the tail still holds the fill bits and packed septets.
    pub fn header(&self) -> Result<(UserDataHeader, &[u8])> {
        UserDataHeader::parse(self.as_bytes())
    }
}

/// Octets that `septets` septets pack into.
fn septet_octets(septets: u8) -> usize {
    (usize::from(septets) * 7).div_ceil(8)
}

/// TP-Validity-Period and its format (TS 23.040 9.2.3.3, 9.2.3.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValidityPeriod {
    /// TP-VPF 00: no TP-VP.
    None,
    /// TP-VPF 10: one octet, relative.
    Relative(u8),
    /// TP-VPF 01: seven octets, enhanced format, raw.
    Enhanced([u8; 7]),
    /// TP-VPF 11: seven octets, absolute time stamp, raw semi-octets.
    Absolute([u8; 7]),
}

impl ValidityPeriod {
    fn vpf_bits(&self) -> u8 {
        match self {
            ValidityPeriod::None => 0b00 << 3,
            ValidityPeriod::Relative(_) => 0b10 << 3,
            ValidityPeriod::Enhanced(_) => 0b01 << 3,
            ValidityPeriod::Absolute(_) => 0b11 << 3,
        }
    }

    fn decode(first_octet: u8, reader: &mut Reader<'_>) -> Result<Self> {
        Ok(match first_octet & VPF_MASK {
            0x00 => ValidityPeriod::None,
            0x10 => ValidityPeriod::Relative(reader.u8("TP-VP (relative)")?),
            0x08 => ValidityPeriod::Enhanced(reader.array("TP-VP (enhanced)")?),
            _ => ValidityPeriod::Absolute(reader.array("TP-VP (absolute)")?),
        })
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            ValidityPeriod::None => {}
            ValidityPeriod::Relative(v) => out.push(*v),
            ValidityPeriod::Enhanced(v) | ValidityPeriod::Absolute(v) => out.extend_from_slice(v),
        }
    }
}

fn check_mti(first_octet: u8, expected_mti: u8, expected: &'static str) -> Result<()> {
    let mti = first_octet & 0b11;
    if mti == expected_mti {
        Ok(())
    } else {
        Err(Error::WrongMessageType { mti, expected })
    }
}

/// SMS-DELIVER, SC to MS (TS 23.040 9.2.2.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SmsDeliver {
    /// TP-MMS bit as sent: set means no more messages are waiting in the SC (9.2.3.2).
    pub no_more_messages: bool,
    /// TP-LP: loop prevention (9.2.3.28).
    pub loop_prevention: bool,
    /// TP-SRI: a status report will be returned to the SME (9.2.3.4).
    pub status_report_indication: bool,
    /// TP-UDHI: TP-UD starts with a UDH (9.2.3.23).
    pub user_data_header_indicator: bool,
    /// TP-RP: reply path (9.2.3.17).
    pub reply_path: bool,
    /// TP-OA.
    pub originating_address: Address,
    /// TP-PID (0x7F for (U)SIM data download).
    pub protocol_identifier: u8,
    /// TP-DCS.
    pub data_coding_scheme: DataCodingScheme,
    /// TP-SCTS, seven raw semi-octet octets.
    pub service_centre_time_stamp: [u8; 7],
    /// TP-UDL and TP-UD.
    pub user_data: UserData,
}

impl SmsDeliver {
    /// An SMS-DELIVER for (U)SIM data download: UDHI set, PID 0x7F, DCS 0xF6, 8-bit user data.
    pub fn sim_data_download(
        originating_address: Address,
        service_centre_time_stamp: [u8; 7],
        user_data: Vec<u8>,
    ) -> Self {
        Self {
            no_more_messages: false,
            loop_prevention: false,
            status_report_indication: false,
            user_data_header_indicator: true,
            reply_path: false,
            originating_address,
            protocol_identifier: PID_SIM_DATA_DOWNLOAD,
            data_coding_scheme: DataCodingScheme::CLASS2_8BIT,
            service_centre_time_stamp,
            user_data: UserData::Octets(user_data),
        }
    }

    /// Encodes the TPDU.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut first = MTI_DELIVER;
        for (flag, bit) in [
            (self.no_more_messages, BIT_MMS_OR_RD),
            (self.loop_prevention, BIT_LP),
            (self.status_report_indication, BIT_SRI_OR_SRR),
            (self.user_data_header_indicator, BIT_UDHI),
            (self.reply_path, BIT_RP),
        ] {
            if flag {
                first |= bit;
            }
        }
        let mut out = vec![first];
        out.extend(self.originating_address.encode()?);
        out.push(self.protocol_identifier);
        out.push(self.data_coding_scheme.0);
        out.extend_from_slice(&self.service_centre_time_stamp);
        self.user_data
            .encode_into(self.data_coding_scheme, &mut out)?;
        Ok(out)
    }

    /// Decodes a whole TPDU; octets after TP-UD are an error.
    pub fn decode(tpdu: &[u8]) -> Result<Self> {
        let mut reader = Reader::new(tpdu);
        let first = reader.u8("SMS-DELIVER first octet")?;
        check_mti(first, MTI_DELIVER, "SMS-DELIVER")?;
        let (originating_address, rest) = Address::decode(reader.rest())?;
        let mut reader = Reader::new(rest);
        let protocol_identifier = reader.u8("TP-PID")?;
        let data_coding_scheme = DataCodingScheme(reader.u8("TP-DCS")?);
        let service_centre_time_stamp = reader.array("TP-SCTS")?;
        let user_data = UserData::decode(&mut reader, data_coding_scheme, "SMS-DELIVER TP-UD")?;
        Ok(Self {
            no_more_messages: first & BIT_MMS_OR_RD != 0,
            loop_prevention: first & BIT_LP != 0,
            status_report_indication: first & BIT_SRI_OR_SRR != 0,
            user_data_header_indicator: first & BIT_UDHI != 0,
            reply_path: first & BIT_RP != 0,
            originating_address,
            protocol_identifier,
            data_coding_scheme,
            service_centre_time_stamp,
            user_data,
        })
    }

    /// The UDH and the rest of TP-UD, when TP-UDHI is set.
    pub fn user_data_header(&self) -> Result<Option<(UserDataHeader, &[u8])>> {
        if self.user_data_header_indicator {
            self.user_data.header().map(Some)
        } else {
            Ok(None)
        }
    }
}

/// SMS-SUBMIT, MS to SC (TS 23.040 9.2.2.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SmsSubmit {
    /// TP-RD: reject duplicates (9.2.3.25).
    pub reject_duplicates: bool,
    /// TP-SRR: status report requested (9.2.3.5).
    pub status_report_request: bool,
    /// TP-UDHI: TP-UD starts with a UDH.
    pub user_data_header_indicator: bool,
    /// TP-RP: reply path.
    pub reply_path: bool,
    /// TP-MR: message reference (9.2.3.6).
    pub message_reference: u8,
    /// TP-DA.
    pub destination_address: Address,
    /// TP-PID.
    pub protocol_identifier: u8,
    /// TP-DCS.
    pub data_coding_scheme: DataCodingScheme,
    /// TP-VPF and TP-VP.
    pub validity_period: ValidityPeriod,
    /// TP-UDL and TP-UD.
    pub user_data: UserData,
}

impl SmsSubmit {
    /// Encodes the TPDU.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut first = MTI_SUBMIT | self.validity_period.vpf_bits();
        for (flag, bit) in [
            (self.reject_duplicates, BIT_MMS_OR_RD),
            (self.status_report_request, BIT_SRI_OR_SRR),
            (self.user_data_header_indicator, BIT_UDHI),
            (self.reply_path, BIT_RP),
        ] {
            if flag {
                first |= bit;
            }
        }
        let mut out = vec![first, self.message_reference];
        out.extend(self.destination_address.encode()?);
        out.push(self.protocol_identifier);
        out.push(self.data_coding_scheme.0);
        self.validity_period.encode_into(&mut out);
        self.user_data
            .encode_into(self.data_coding_scheme, &mut out)?;
        Ok(out)
    }

    /// Decodes a whole TPDU; octets after TP-UD are an error.
    pub fn decode(tpdu: &[u8]) -> Result<Self> {
        let mut reader = Reader::new(tpdu);
        let first = reader.u8("SMS-SUBMIT first octet")?;
        check_mti(first, MTI_SUBMIT, "SMS-SUBMIT")?;
        let message_reference = reader.u8("TP-MR")?;
        let (destination_address, rest) = Address::decode(reader.rest())?;
        let mut reader = Reader::new(rest);
        let protocol_identifier = reader.u8("TP-PID")?;
        let data_coding_scheme = DataCodingScheme(reader.u8("TP-DCS")?);
        let validity_period = ValidityPeriod::decode(first, &mut reader)?;
        let user_data = UserData::decode(&mut reader, data_coding_scheme, "SMS-SUBMIT TP-UD")?;
        Ok(Self {
            reject_duplicates: first & BIT_MMS_OR_RD != 0,
            status_report_request: first & BIT_SRI_OR_SRR != 0,
            user_data_header_indicator: first & BIT_UDHI != 0,
            reply_path: first & BIT_RP != 0,
            message_reference,
            destination_address,
            protocol_identifier,
            data_coding_scheme,
            validity_period,
            user_data,
        })
    }

    /// The UDH and the rest of TP-UD, when TP-UDHI is set.
    ///
    /// A card cannot always make the ME set TP-UDHI on a PoR (GSM 03.48 clause 6.1 says the
    /// receiving entity shall treat a response packet as if it were set); such callers should
    /// use [`UserData::header`] directly.
    pub fn user_data_header(&self) -> Result<Option<(UserDataHeader, &[u8])>> {
        if self.user_data_header_indicator {
            self.user_data.header().map(Some)
        } else {
            Ok(None)
        }
    }
}

/// Parses a whole SMS-DELIVER TPDU.
pub fn parse_sms_deliver(tpdu: &[u8]) -> Result<SmsDeliver> {
    SmsDeliver::decode(tpdu)
}

/// Parses a whole SMS-SUBMIT TPDU.
pub fn parse_sms_submit(tpdu: &[u8]) -> Result<SmsSubmit> {
    SmsSubmit::decode(tpdu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dcs_alphabets() {
        let cases = [
            (0x00, Alphabet::Gsm7Bit, true),
            (0x04, Alphabet::EightBit, false),
            (0x08, Alphabet::Ucs2, false),
            (0x0C, Alphabet::Gsm7Bit, true), // reserved alphabet: read as 7-bit
            (0x16, Alphabet::EightBit, false),
            (0x20, Alphabet::Gsm7Bit, false), // compressed: UDL counts octets
            (0x56, Alphabet::EightBit, false),
            (0x80, Alphabet::Gsm7Bit, true), // reserved group
            (0xC0, Alphabet::Gsm7Bit, true),
            (0xD8, Alphabet::Gsm7Bit, true),
            (0xE0, Alphabet::Ucs2, false),
            (0xF0, Alphabet::Gsm7Bit, true),
            (0xF5, Alphabet::EightBit, false),
            (0xF6, Alphabet::EightBit, false),
        ];
        for (dcs, alphabet, septets) in cases {
            let dcs = DataCodingScheme(dcs);
            assert_eq!(dcs.alphabet(), alphabet, "{dcs:?}");
            assert_eq!(dcs.udl_counts_septets(), septets, "{dcs:?}");
        }
    }

    #[test]
    fn validity_period_formats() {
        use crate::address::Address;
        for (vp, first, extra) in [
            (ValidityPeriod::None, 0x01, 0),
            (ValidityPeriod::Relative(0xA7), 0x11, 1),
            (ValidityPeriod::Enhanced([1; 7]), 0x09, 7),
            (ValidityPeriod::Absolute([2; 7]), 0x19, 7),
        ] {
            let submit = SmsSubmit {
                reject_duplicates: false,
                status_report_request: false,
                user_data_header_indicator: false,
                reply_path: false,
                message_reference: 7,
                destination_address: Address::international("1").unwrap(),
                protocol_identifier: 0,
                data_coding_scheme: DataCodingScheme::CLASS2_8BIT,
                validity_period: vp,
                user_data: UserData::Octets(vec![9]),
            };
            let bytes = submit.encode().unwrap();
            assert_eq!(bytes[0], first);
            assert_eq!(bytes.len(), 1 + 1 + 3 + 2 + extra + 2);
            assert_eq!(SmsSubmit::decode(&bytes).unwrap(), submit);
        }
    }
}

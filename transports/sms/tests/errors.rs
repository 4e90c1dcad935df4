//! One test per error path, checking the variant and, for the ones people read, the message.

use otagw_sms::{
    max_packet_len, parse_address, parse_send_short_message, parse_sms_deliver,
    parse_sms_pp_download, parse_sms_submit, parse_user_data_header, split_packet, Accepted,
    Address, AddressValue, ConcatReference, DataCodingScheme, Error, InformationElement,
    PacketKind, Reassembler, SmsDeliver, SmsPpDownload, TypeOfAddress, UserData, UserDataHeader,
};

fn hx(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).unwrap()
}

fn deliver(ud: UserData, dcs: u8) -> SmsDeliver {
    SmsDeliver {
        data_coding_scheme: DataCodingScheme(dcs),
        user_data: ud,
        ..SmsDeliver::sim_data_download(Address::international("123").unwrap(), [0; 7], vec![])
    }
}

#[test]
fn truncated() {
    let e = parse_sms_deliver(&hx("04")).unwrap_err();
    assert_eq!(
        e,
        Error::Truncated {
            field: "address length",
            needed: 1,
            available: 0
        }
    );
    assert_eq!(
        e.to_string(),
        "address length needs 1 octet(s) but only 0 remain"
    );
    // SCTS cut short.
    assert!(matches!(
        parse_sms_deliver(&hx("04 02 81 21 7f f6 0102")),
        Err(Error::Truncated {
            field: "TP-SCTS",
            needed: 7,
            available: 2
        })
    ));
    // TP-UD shorter than TP-UDL.
    assert!(matches!(
        parse_sms_deliver(&hx("04 02 81 21 7f f6 00000000000000 05 0102")),
        Err(Error::Truncated {
            field: "TP-UD",
            needed: 5,
            available: 2
        })
    ));
}

#[test]
fn trailing_octets() {
    let e = parse_sms_deliver(&hx("04 02 81 21 7f f6 00000000000000 01 aa bb")).unwrap_err();
    assert_eq!(
        e,
        Error::TrailingOctets {
            context: "SMS-DELIVER TP-UD",
            count: 1
        }
    );
    assert!(matches!(
        parse_sms_pp_download(&hx("d1 00 00")),
        Err(Error::TrailingOctets { count: 1, .. })
    ));
}

#[test]
fn empty_user_data() {
    assert_eq!(parse_user_data_header(&[]), Err(Error::EmptyUserData));
}

#[test]
fn udhl_exceeds_user_data() {
    let e = parse_user_data_header(&hx("09 01 02 03 04")).unwrap_err();
    assert_eq!(e.to_string(), "UDHL 9 exceeds user data length 5");
}

#[test]
fn information_element_overrun() {
    let e = parse_user_data_header(&hx("03 70 05 00")).unwrap_err();
    assert_eq!(
        e,
        Error::InformationElementOverrun {
            iei: 0x70,
            length: 5,
            available: 1
        }
    );
    // An IEI with no room for its length octet.
    assert!(matches!(
        parse_user_data_header(&hx("01 70")),
        Err(Error::Truncated {
            field: "IE length",
            ..
        })
    ));
}

#[test]
fn information_element_too_long() {
    let h = UserDataHeader::new(vec![InformationElement::new(0x20, vec![0; 256])]);
    assert!(matches!(
        h.encode(),
        Err(Error::InformationElementTooLong {
            iei: 0x20,
            length: 256
        })
    ));
}

#[test]
fn udh_too_long() {
    let h = UserDataHeader::new(vec![
        InformationElement::new(0x20, vec![0; 200]),
        InformationElement::new(0x21, vec![0; 100]),
    ]);
    assert_eq!(h.encode(), Err(Error::UdhTooLong { length: 304 }));
}

#[test]
fn concatenation_length() {
    let (h, _) = parse_user_data_header(&hx("04 00 02 01 02")).unwrap();
    assert_eq!(
        h.concatenation(),
        Err(Error::ConcatenationLength {
            iei: 0x00,
            length: 2,
            expected: 3
        })
    );
    let (h, _) = parse_user_data_header(&hx("05 08 03 01 02 01")).unwrap();
    assert!(matches!(
        h.concatenation(),
        Err(Error::ConcatenationLength {
            iei: 0x08,
            expected: 4,
            ..
        })
    ));
}

#[test]
fn repeated_concatenation() {
    let (h, _) = parse_user_data_header(&hx("0b 00 03 01 02 01 08 04 00 01 02 01")).unwrap();
    assert_eq!(h.concatenation(), Err(Error::RepeatedConcatenation));
}

#[test]
fn concatenation_total_zero_and_sequence_range() {
    let mut r = Reassembler::new();
    assert_eq!(
        r.accept(1, &hx("05 00 03 01 00 01 aa")),
        Err(Error::ConcatenationTotalZero)
    );
    let e = r.accept(1, &hx("05 00 03 01 02 00 aa")).unwrap_err();
    assert_eq!(
        e,
        Error::SequenceOutOfRange {
            sequence: 0,
            total: 2
        }
    );
    assert_eq!(e.to_string(), "concatenation sequence 0 outside 1..=2");
    assert_eq!(
        r.accept(1, &hx("06 08 04 01 00 02 03 aa")),
        Err(Error::SequenceOutOfRange {
            sequence: 3,
            total: 2
        })
    );
    assert!(r.is_empty());
}

#[test]
fn empty_packet() {
    assert_eq!(
        split_packet(PacketKind::Command, &[], ConcatReference::EightBit(1)),
        Err(Error::EmptyPacket)
    );
}

#[test]
fn packet_too_large() {
    for reference in [ConcatReference::EightBit(7), ConcatReference::SixteenBit(7)] {
        let max = max_packet_len(reference);
        assert_eq!(
            split_packet(PacketKind::Command, &vec![0; max], reference)
                .unwrap()
                .len(),
            255
        );
        let e = split_packet(PacketKind::Command, &vec![0; max + 1], reference).unwrap_err();
        assert!(matches!(e, Error::PacketTooLarge { length, .. } if length == max + 1));
    }
    let e = split_packet(
        PacketKind::Command,
        &[0; 40_000],
        ConcatReference::EightBit(1),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "secured packet of 40000 octets exceeds the 34168 octets that 255 concatenated SMS carry with 8-bit references"
    );
}

#[test]
fn duplicates_and_conflicts() {
    let mut r = Reassembler::new();
    let first = hx("07 00 03 09 02 01 70 00 0102");
    assert!(matches!(
        r.accept("a", &first),
        Ok(Accepted::Pending {
            received: 1,
            total: 2,
            ..
        })
    ));
    assert_eq!(
        r.accept("a", &first),
        Ok(Accepted::Duplicate {
            reference: ConcatReference::EightBit(9),
            sequence: 1
        })
    );
    let e = r
        .accept("a", &hx("07 00 03 09 02 01 70 00 0103"))
        .unwrap_err();
    assert_eq!(
        e,
        Error::ConflictingDuplicate {
            reference: 9,
            sequence: 1
        }
    );
    assert_eq!(
        e.to_string(),
        "segment 1 of concatenated message 9 arrived twice with different contents"
    );
    // Another originator with the same reference is another message.
    assert!(matches!(
        r.accept("b", &first),
        Ok(Accepted::Pending { received: 1, .. })
    ));
    assert_eq!(r.len(), 2);
}

#[test]
fn inconsistent_total() {
    let mut r = Reassembler::new();
    r.accept((), &hx("05 00 03 04 03 01 aa")).unwrap();
    let e = r.accept((), &hx("05 00 03 04 02 02 bb")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "concatenated message 4 announced 3 segments, this segment says 2"
    );
}

#[test]
fn missing_and_drop() {
    let mut r = Reassembler::new();
    let reference = ConcatReference::SixteenBit(0x1234);
    r.accept(5u32, &hx("06 08 04 12 34 04 03 cc")).unwrap();
    r.accept(5u32, &hx("06 08 04 12 34 04 01 aa")).unwrap();
    assert_eq!(r.missing(&5, reference), Some(vec![2, 4]));
    assert_eq!(r.missing(&6, reference), None);
    let pending: Vec<_> = r.pending().collect();
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].received, pending[0].total), (2, 4));
    assert!(r.drop_pending(&5, reference));
    assert!(!r.drop_pending(&5, reference));
    assert!(r.is_empty());
}

#[test]
fn user_data_length_too_large() {
    let e = parse_sms_deliver(&hx("04 02 81 21 7f f6 00000000000000 c8")).unwrap_err();
    assert_eq!(e.to_string(), "TP-UDL 200 above 140 octets");
    let e = parse_sms_deliver(&hx("04 02 81 21 00 00 00000000000000 a1")).unwrap_err();
    assert_eq!(e.to_string(), "TP-UDL 161 above 160 septets");
    let e = deliver(UserData::Octets(vec![0; 141]), 0xF6)
        .encode()
        .unwrap_err();
    assert_eq!(e.to_string(), "TP-UDL 141 above 140 octets");
}

#[test]
fn seven_bit_user_data_is_sliced_by_septets() {
    // 10 septets pack into 9 octets; the TPDU ends exactly there.
    let tpdu = hx("04 02 81 21 00 00 00000000000000 0a e8329bfd4697d9ec37");
    let d = parse_sms_deliver(&tpdu).unwrap();
    assert_eq!(
        d.user_data,
        UserData::Septets {
            count: 10,
            packed: hx("e8329bfd4697d9ec37")
        }
    );
    assert_eq!(d.encode().unwrap(), tpdu);
}

#[test]
fn septet_packing_length() {
    let e = deliver(
        UserData::Septets {
            count: 8,
            packed: vec![0; 3],
        },
        0x00,
    )
    .encode()
    .unwrap_err();
    assert_eq!(
        e,
        Error::SeptetPackingLength {
            septets: 8,
            expected: 7,
            actual: 3
        }
    );
}

#[test]
fn user_data_coding_mismatch() {
    let e = deliver(UserData::Octets(vec![1, 2]), 0x00)
        .encode()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "TP-DCS 0x00 makes TP-UDL count septets, but the user data is given in octets"
    );
}

#[test]
fn wrong_message_type() {
    let e = parse_sms_deliver(&hx("41 00 03 81 19 f0 00 f6 00")).unwrap_err();
    assert_eq!(e.to_string(), "TP-MTI 1 is not SMS-DELIVER");
    assert!(matches!(
        parse_sms_submit(&hx("04 02 81 21")),
        Err(Error::WrongMessageType { mti: 0, .. })
    ));
}

#[test]
fn address_too_long() {
    let e = parse_address(&hx("15 91 0000000000000000000000")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "address length 21 semi-octets exceeds the field (max 20)"
    );
    assert!(matches!(
        Address::international("123456789012345678901"),
        Err(Error::AddressTooLong {
            semi_octets: 21,
            ..
        })
    ));
    assert!(Address::alphanumeric("ABCDEFGHIJKL").is_err());
}

#[test]
fn invalid_address_semi_octet() {
    assert_eq!(
        parse_address(&hx("02 81 f1")).map(|(a, _)| a),
        Err(Error::InvalidAddressSemiOctet {
            nibble: 0xF,
            position: 1
        })
    );
    // Filler in the middle of a CAT dialling number.
    assert_eq!(
        Address::decode_dialling_number(&hx("81 21 f3 45")),
        Err(Error::InvalidAddressSemiOctet {
            nibble: 0xF,
            position: 3
        })
    );
    // Trailing FF padding is fine.
    assert_eq!(
        Address::decode_dialling_number(&hx("81 21 f3 ff"))
            .unwrap()
            .digit_str(),
        Some("123")
    );
}

#[test]
fn invalid_digit_character() {
    assert_eq!(
        Address::international("+4912"),
        Err(Error::InvalidDigitCharacter { character: '+' })
    );
}

#[test]
fn not_gsm7_character() {
    assert_eq!(
        Address::alphanumeric("Ж"),
        Err(Error::NotGsm7Character { character: 'Ж' })
    );
}

#[test]
fn alphanumeric_address_rules() {
    let alnum = Address::alphanumeric("OTA").unwrap();
    let download = SmsPpDownload {
        address: Some(alnum),
        deliver: deliver(UserData::Octets(vec![]), 0xF6),
    };
    assert_eq!(
        download.encode(),
        Err(Error::AlphanumericNotAllowed {
            field: "address TLV"
        })
    );
    let bad = Address {
        type_of_address: TypeOfAddress::ALPHANUMERIC,
        value: AddressValue::Alphanumeric {
            semi_octets: 5,
            octets: vec![1],
        },
    };
    assert_eq!(
        bad.encode(),
        Err(Error::AlphanumericLength {
            semi_octets: 5,
            expected: 3,
            actual: 1
        })
    );
}

#[test]
fn unexpected_tag() {
    assert_eq!(
        parse_sms_pp_download(&hx("d0 00")),
        Err(Error::UnexpectedTag {
            context: "SMS-PP download ENVELOPE",
            expected: 0xD1,
            found: 0xD0
        })
    );
    assert!(matches!(
        parse_send_short_message(&hx("d1 00")),
        Err(Error::UnexpectedTag {
            expected: 0xD0,
            found: 0xD1,
            ..
        })
    ));
}

#[test]
fn bad_tlv_length() {
    let e = parse_sms_pp_download(&hx("d1 82 00 10")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "BER-TLV length of tag 0xd1 is coded 82, which is not allowed (TS 102 223 annex C)"
    );
    assert!(matches!(
        parse_sms_pp_download(&hx("d1 81 04 82 02 83 81")),
        Err(Error::BadTlvLength { tag: 0xD1, .. })
    ));
}

#[test]
fn tlv_overrun() {
    assert_eq!(
        parse_sms_pp_download(&hx("d1 03 82 05 83")),
        Err(Error::TlvOverrun {
            tag: 0x82,
            length: 5,
            available: 1
        })
    );
}

#[test]
fn missing_tlv() {
    let e = parse_sms_pp_download(&hx("d1 04 82 02 83 81")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "SMS-PP download ENVELOPE lacks the mandatory SMS TPDU TLV"
    );
    assert!(matches!(
        parse_sms_pp_download(&hx("d1 02 8b 00")),
        Err(Error::MissingTlv {
            tlv: "device identities",
            ..
        })
    ));
    assert!(matches!(
        parse_send_short_message(&hx("d0 04 82 02 81 83")),
        Err(Error::MissingTlv {
            tlv: "command details",
            ..
        })
    ));
}

#[test]
fn tlv_length() {
    assert!(matches!(
        parse_sms_pp_download(&hx("d1 05 82 03 83 81 00")),
        Err(Error::TlvLength {
            tlv: "device identities",
            length: 3,
            expected: 2
        })
    ));
    assert!(matches!(
        parse_send_short_message(&hx("d0 04 81 02 01 13")),
        Err(Error::TlvLength {
            tlv: "command details",
            length: 2,
            expected: 3
        })
    ));
}

#[test]
fn unexpected_device_identities() {
    let e = parse_sms_pp_download(&hx("d1 04 82 02 81 83")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "device identities 0x81 -> 0x83 do not fit SMS-PP download ENVELOPE (expected 0x83 -> 0x81)"
    );
}

#[test]
fn not_send_short_message() {
    // DISPLAY TEXT (0x21).
    assert_eq!(
        parse_send_short_message(&hx("d0 09 81 03 01 21 00 82 02 81 02")),
        Err(Error::NotSendShortMessage {
            type_of_command: 0x21
        })
    );
}

#[test]
fn tlv_too_long() {
    let long = Address {
        type_of_address: TypeOfAddress(0x81),
        value: AddressValue::Digits("1".repeat(600)),
    };
    let download = SmsPpDownload {
        address: Some(long),
        deliver: deliver(UserData::Octets(vec![]), 0xF6),
    };
    assert!(matches!(
        download.encode(),
        Err(Error::TlvTooLong { length: 301, .. })
    ));
    // Each TLV fits, the whole ENVELOPE does not.
    let download = SmsPpDownload {
        address: Some(Address {
            type_of_address: TypeOfAddress(0x81),
            value: AddressValue::Digits("1".repeat(200)),
        }),
        deliver: deliver(UserData::Octets(vec![0; 140]), 0xF6),
    };
    assert!(matches!(
        download.encode(),
        Err(Error::TlvTooLong {
            context: "SMS-PP download ENVELOPE",
            ..
        })
    ));
}

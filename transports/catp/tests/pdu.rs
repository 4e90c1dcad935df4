//! PDU codec: layout, checksum, variable parts, errors, and "never panics" on any input.

use otagw_catp::pdu::{
    checksum, iccid_to_identification, identification_to_iccid, reason, DecodeError, EncodeError,
    Flags, Pdu, SynParams, VarPart,
};
use proptest::prelude::*;

fn syn() -> Pdu {
    Pdu {
        flags: Flags::SYN,
        src_port: 0x1234,
        dst_port: 0x0050,
        seq: 0xABCD,
        ack: 0,
        window: 4,
        var: VarPart::Syn(SynParams {
            max_pdu_size: 0x0400,
            max_sdu_size: 0x0800,
            identification: iccid_to_identification("8944110063000000017").unwrap(),
        }),
        ..Pdu::default()
    }
}

/// Hand-computed vector: an ACK PDU with two data octets.
/// Words: 4000 0012 0001 0002 0002 0010 0020 0004 [cksum] 4142
/// Sum = 0x4000+0x0012+0x0001+0x0002+0x0002+0x0010+0x0020+0x0004+0x4142 = 0x818D; ~ = 0x7E72.
#[test]
fn ack_with_data_known_bytes() {
    let p = Pdu {
        flags: Flags::ACK,
        src_port: 1,
        dst_port: 2,
        seq: 0x10,
        ack: 0x20,
        window: 4,
        data: b"AB".to_vec(),
        ..Pdu::default()
    };
    let b = p.encode().unwrap();
    assert_eq!(hex::encode(&b), "400000120001000200020010002000047e724142");
    assert_eq!(Pdu::decode(&b).unwrap(), p);
}

#[test]
fn syn_layout() {
    let b = syn().encode().unwrap();
    // 18 fixed + 2 + 2 + 1 + 10 identification
    assert_eq!(b[3] as usize, 33);
    assert_eq!(b.len(), 33);
    assert_eq!(b[0], 0x80);
    assert_eq!(&b[4..8], &[0x12, 0x34, 0x00, 0x50]);
    assert_eq!(&b[8..10], &[0, 0]);
    assert_eq!(&b[10..12], &[0xAB, 0xCD]);
    assert_eq!(&b[18..23], &[0x04, 0x00, 0x08, 0x00, 10]);
    assert_eq!(b[23], 0x98);
    assert_eq!(Pdu::decode(&b).unwrap(), syn());
    let VarPart::Syn(s) = Pdu::decode(&b).unwrap().var else {
        panic!()
    };
    assert_eq!(
        identification_to_iccid(&s.identification),
        "8944110063000000017"
    );
}

#[test]
fn eak_and_rst_layout() {
    let eak = Pdu {
        flags: Flags::ACK | Flags::EAK,
        var: VarPart::Eak(vec![5, 7, 0xFFFF]),
        ..Pdu::default()
    };
    let b = eak.encode().unwrap();
    assert_eq!(b[0], 0x60);
    assert_eq!(b[3], 24);
    assert_eq!(&b[18..], &[0, 5, 0, 7, 0xFF, 0xFF]);
    assert_eq!(Pdu::decode(&b).unwrap(), eak);

    let rst = Pdu {
        flags: Flags::RST,
        var: VarPart::Rst(reason::MAX_RETRIES),
        ..Pdu::default()
    };
    let b = rst.encode().unwrap();
    assert_eq!(b[0], 0x10);
    assert_eq!(b[3], 19);
    assert_eq!(b[18], 5);
    assert_eq!(Pdu::decode(&b).unwrap(), rst);
}

#[test]
fn checksum_verifies() {
    let mut b = syn().encode().unwrap();
    let ck = u16::from_be_bytes([b[16], b[17]]);
    assert_eq!(checksum(&b), ck);
    b[30] ^= 0x01;
    assert!(matches!(
        Pdu::decode(&b),
        Err(DecodeError::Checksum { field, .. }) if field == ck
    ));
    // Unchecked decode still reads it.
    assert!(Pdu::decode_unchecked(&b).is_ok());
}

#[test]
fn errors_name_the_field() {
    assert_eq!(
        Pdu::decode(&[0u8; 5]),
        Err(DecodeError::TooShort { len: 5 })
    );
    let mut b = Pdu::default().encode().unwrap();
    b[3] = 10;
    assert_eq!(
        Pdu::decode(&b),
        Err(DecodeError::HeaderLengthTooSmall { hlen: 10 })
    );
    let mut b = Pdu::default().encode().unwrap();
    b[9] = 3;
    assert!(matches!(
        Pdu::decode(&b),
        Err(DecodeError::LengthMismatch { data_len: 3, .. })
    ));
    // SYN flag with no variable part.
    let mut b = Pdu::default().encode().unwrap();
    b[0] = 0x80;
    assert_eq!(
        Pdu::decode_unchecked(&b),
        Err(DecodeError::SynTooShort { hlen: 18 })
    );
    // RST flag with no reason.
    b[0] = 0x10;
    assert_eq!(
        Pdu::decode_unchecked(&b),
        Err(DecodeError::RstTooShort { hlen: 18 })
    );
    // Version bits.
    let mut p = Pdu {
        version: 1,
        ..Pdu::default()
    };
    let b = p.encode().unwrap();
    assert_eq!(Pdu::decode(&b), Err(DecodeError::Version(1)));
    p.version = 4;
    assert_eq!(p.encode(), Err(EncodeError::Version(4)));
    // Flags and variable part disagree.
    let p = Pdu {
        flags: Flags::ACK,
        var: VarPart::Rst(0),
        ..Pdu::default()
    };
    assert!(matches!(
        p.encode(),
        Err(EncodeError::VarPartMismatch { .. })
    ));
    let p = Pdu {
        flags: Flags::ACK | Flags::EAK,
        var: VarPart::Eak(vec![0; 119]),
        ..Pdu::default()
    };
    assert_eq!(p.encode(), Err(EncodeError::TooManyEaks { count: 119 }));
    let p = Pdu {
        data: vec![0; 70000],
        ..Pdu::default()
    };
    assert_eq!(p.encode(), Err(EncodeError::DataTooLong { len: 70000 }));
}

fn arb_pdu() -> impl Strategy<Value = Pdu> {
    let var = prop_oneof![
        Just(VarPart::None),
        (
            any::<u16>(),
            any::<u16>(),
            proptest::collection::vec(any::<u8>(), 0..=232)
        )
            .prop_map(|(a, b, id)| VarPart::Syn(SynParams {
                max_pdu_size: a,
                max_sdu_size: b,
                identification: id,
            })),
        proptest::collection::vec(any::<u16>(), 0..=118).prop_map(VarPart::Eak),
        any::<u8>().prop_map(VarPart::Rst),
    ];
    (
        var,
        any::<u8>(),
        any::<[u16; 5]>(),
        proptest::collection::vec(any::<u8>(), 0..600),
    )
        .prop_map(|(var, fl, h, data)| {
            let mut flags = Flags::from_bits_truncate(fl);
            // Make the flags select the variable part given.
            let strip = |f: Flags, x: Flags| Flags::from_bits_truncate(f.bits() & !x.bits());
            flags = match var {
                VarPart::None => strip(flags, Flags::SYN | Flags::EAK | Flags::RST),
                VarPart::Syn(_) => flags | Flags::SYN,
                VarPart::Eak(_) => strip(flags, Flags::SYN) | Flags::EAK,
                VarPart::Rst(_) => strip(flags, Flags::SYN | Flags::EAK) | Flags::RST,
            };
            Pdu {
                flags,
                version: 0,
                src_port: h[0],
                dst_port: h[1],
                seq: h[2],
                ack: h[3],
                window: h[4],
                var,
                data,
            }
        })
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = Pdu::decode(&bytes);
        let _ = Pdu::decode_unchecked(&bytes);
        let _ = checksum(&bytes);
    }

    #[test]
    fn random_bytes_with_valid_lengths_and_checksum_never_panic(
        mut bytes in proptest::collection::vec(any::<u8>(), 18..300),
        hlen in 18u8..=255,
    ) {
        // Force the length fields and checksum to agree so the variable-part parsers run.
        let hlen = (hlen as usize).min(bytes.len());
        bytes[3] = hlen as u8;
        let dl = (bytes.len() - hlen) as u16;
        bytes[8..10].copy_from_slice(&dl.to_be_bytes());
        bytes[0] &= 0xFC;
        // RFU octets are sent as zero (and ignored on receipt, so they do not round-trip).
        bytes[1] = 0;
        bytes[2] = 0;
        let ck = checksum(&bytes);
        bytes[16..18].copy_from_slice(&ck.to_be_bytes());
        if let Ok(p) = Pdu::decode(&bytes) {
            prop_assert_eq!(p.encode().unwrap(), bytes);
        }
    }

    #[test]
    fn encode_decode_round_trip(p in arb_pdu()) {
        let b = p.encode().unwrap();
        prop_assert_eq!(b.len(), p.encoded_len());
        prop_assert_eq!(Pdu::decode(&b).unwrap(), p);
    }
}

//! Property tests: segmentation, reassembly, TPDU and address round trips, and no panics.

use otagw_sms::{
    parse_address, parse_segment, parse_send_short_message, parse_sms_deliver,
    parse_sms_pp_download, parse_sms_submit, parse_user_data_header, segment_count, split_packet,
    Accepted, Address, AddressValue, ConcatReference, DataCodingScheme, PacketKind, Reassembler,
    SendShortMessage, SmsDeliver, SmsPpDownload, SmsSubmit, TypeOfAddress, UserData,
    ValidityPeriod, MAX_USER_DATA_OCTETS,
};
use proptest::prelude::*;

fn reference() -> impl Strategy<Value = ConcatReference> {
    prop_oneof![
        any::<u8>().prop_map(ConcatReference::EightBit),
        any::<u16>().prop_map(ConcatReference::SixteenBit),
    ]
}

fn packet_kind() -> impl Strategy<Value = PacketKind> {
    prop_oneof![Just(PacketKind::Command), Just(PacketKind::Response)]
}

/// Packet octets that `segments` SMS can carry, computed from the layout, not from the code.
fn capacity(segments: usize, reference: ConcatReference) -> usize {
    let concat_ie = match reference {
        ConcatReference::EightBit(_) => 5,
        ConcatReference::SixteenBit(_) => 6,
    };
    match segments {
        0 => 0,
        1 => 140 - 3,
        n => (140 - 1 - concat_ie - 2) + (n - 1) * (140 - 1 - concat_ie),
    }
}

/// A permutation of 0..n from a seed (Fisher-Yates with an LCG; test-only).
fn permutation(n: usize, mut seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let j = (seed >> 33) as usize % (i + 1);
        order.swap(i, j);
    }
    order
}

fn digits(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            8 => (0u8..10).prop_map(|d| char::from(b'0' + d)),
            1 => proptest::sample::select(vec!['*', '#', 'a', 'b', 'c']),
        ],
        0..=max,
    )
    .prop_map(|v| v.into_iter().collect())
}

fn digit_toa() -> impl Strategy<Value = TypeOfAddress> {
    // Any type of address except TON 101 (alphanumeric).
    any::<u8>()
        .prop_filter("not alphanumeric", |b| (b >> 4) & 7 != 5)
        .prop_map(TypeOfAddress)
}

fn address() -> impl Strategy<Value = Address> {
    prop_oneof![
        4 => (digit_toa(), digits(20)).prop_map(|(type_of_address, d)| Address {
            type_of_address,
            value: AddressValue::Digits(d),
        }),
        1 => (0u8..=20, prop_oneof![Just(0xD0u8), Just(0x50u8)])
            .prop_flat_map(|(semi, toa)| {
                proptest::collection::vec(any::<u8>(), usize::from(semi).div_ceil(2))
                    .prop_map(move |octets| Address {
                        type_of_address: TypeOfAddress(toa),
                        value: AddressValue::Alphanumeric { semi_octets: semi, octets },
                    })
            }),
    ]
}

fn dcs_and_user_data() -> impl Strategy<Value = (DataCodingScheme, UserData)> {
    any::<u8>().prop_flat_map(|dcs| {
        let dcs = DataCodingScheme(dcs);
        if dcs.udl_counts_septets() {
            (0u8..=160)
                .prop_flat_map(move |count| {
                    proptest::collection::vec(any::<u8>(), (usize::from(count) * 7).div_ceil(8))
                        .prop_map(move |packed| (dcs, UserData::Septets { count, packed }))
                })
                .boxed()
        } else {
            proptest::collection::vec(any::<u8>(), 0..=140)
                .prop_map(move |o| (dcs, UserData::Octets(o)))
                .boxed()
        }
    })
}

fn validity_period() -> impl Strategy<Value = ValidityPeriod> {
    prop_oneof![
        Just(ValidityPeriod::None),
        any::<u8>().prop_map(ValidityPeriod::Relative),
        any::<[u8; 7]>().prop_map(ValidityPeriod::Enhanced),
        any::<[u8; 7]>().prop_map(ValidityPeriod::Absolute),
    ]
}

fn sms_deliver() -> impl Strategy<Value = SmsDeliver> {
    (
        any::<[bool; 5]>(),
        address(),
        any::<u8>(),
        any::<[u8; 7]>(),
        dcs_and_user_data(),
    )
        .prop_map(|(flags, oa, pid, scts, (dcs, ud))| SmsDeliver {
            no_more_messages: flags[0],
            loop_prevention: flags[1],
            status_report_indication: flags[2],
            user_data_header_indicator: flags[3],
            reply_path: flags[4],
            originating_address: oa,
            protocol_identifier: pid,
            data_coding_scheme: dcs,
            service_centre_time_stamp: scts,
            user_data: ud,
        })
}

fn sms_submit() -> impl Strategy<Value = SmsSubmit> {
    (
        any::<[bool; 4]>(),
        any::<u8>(),
        address(),
        any::<u8>(),
        validity_period(),
        dcs_and_user_data(),
    )
        .prop_map(|(flags, mr, da, pid, vp, (dcs, ud))| SmsSubmit {
            reject_duplicates: flags[0],
            status_report_request: flags[1],
            user_data_header_indicator: flags[2],
            reply_path: flags[3],
            message_reference: mr,
            destination_address: da,
            protocol_identifier: pid,
            data_coding_scheme: dcs,
            validity_period: vp,
            user_data: ud,
        })
}

/// Byte strings that sometimes look like the real thing, to get parsers past their first octet.
fn fuzz_input() -> impl Strategy<Value = Vec<u8>> {
    let seeds: Vec<Vec<u8>> = [
        "d13a820283818b3444038119f07ff6151124135822042502700000201115351515c000004d5c2c7f43d3e774316c66ce8e1d5045755bacef5dc83203",
        "d04781030113008202818305008b3a4100038119f000f631027100002c0ec00000888b39c361c66d5f3dc4efcef508cc228021dd34e577b147e54eff18b3922c9176644e2e8aa9a695",
        "0408d0e5759a0e7ff6907090307513000824010101bb400101",
        "0700030102017000aabbcc",
        "05912143f5",
    ]
    .iter()
    .map(|h| hex::decode(h).unwrap())
    .collect();
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        (
            proptest::sample::select(seeds),
            proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
            any::<usize>(),
        )
            .prop_map(|(mut bytes, flips, cut)| {
                for (pos, val) in flips {
                    if !bytes.is_empty() {
                        let i = pos % bytes.len();
                        bytes[i] = val;
                    }
                }
                let keep = cut % (bytes.len() + 1);
                bytes.truncate(if cut % 3 == 0 { keep } else { bytes.len() });
                bytes
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn split_then_reassemble_in_any_order(
        packet in proptest::collection::vec(any::<u8>(), 1..=5000),
        reference in reference(),
        kind in packet_kind(),
        seed in any::<u64>(),
        duplicate in any::<prop::sample::Index>(),
    ) {
        let segments = split_packet(kind, &packet, reference).unwrap();
        let n = segments.len();

        // As few segments as possible, none over 140 octets.
        prop_assert_eq!(n, segment_count(packet.len(), reference).unwrap());
        prop_assert!(capacity(n, reference) >= packet.len());
        prop_assert!(capacity(n - 1, reference) < packet.len());
        for s in &segments {
            prop_assert!(s.len() <= MAX_USER_DATA_OCTETS);
        }
        // Only the first segment names the packet kind (TS 31.115 clause 4).
        for (i, s) in segments.iter().enumerate() {
            let (header, concat, _) = parse_segment(s).unwrap();
            prop_assert_eq!(header.packet_kind(), (i == 0).then_some(kind));
            if n > 1 {
                let c = concat.unwrap();
                prop_assert_eq!(c.reference, reference);
                prop_assert_eq!(usize::from(c.total), n);
                prop_assert_eq!(usize::from(c.sequence), i + 1);
            } else {
                prop_assert!(concat.is_none());
            }
        }

        let mut reassembler = Reassembler::new();
        let order = permutation(n, seed);
        let dup = duplicate.index(n);
        let mut result = None;
        for (step, &i) in order.iter().enumerate() {
            let accepted = reassembler.accept("originator", &segments[i]).unwrap();
            if step + 1 < n {
                let missing = reassembler.missing(&"originator", reference).unwrap();
                prop_assert_eq!(missing.len(), n - step - 1);
                prop_assert!(!missing.contains(&((i + 1) as u8)));
                prop_assert!(
                    matches!(accepted, Accepted::Pending { received, total, .. }
                        if usize::from(received) == step + 1 && usize::from(total) == n),
                    "{:?}", accepted
                );
                // A repeat of a stored segment is reported and changes nothing.
                if i == order[dup.min(step)] {
                    let again = reassembler.accept("originator", &segments[i]).unwrap();
                    prop_assert!(matches!(again, Accepted::Duplicate { sequence, .. }
                        if usize::from(sequence) == i + 1), "{:?}", again);
                }
            } else {
                result = Some(accepted);
            }
        }
        match result {
            Some(Accepted::Complete(p)) => {
                prop_assert_eq!(p.data, packet);
                prop_assert_eq!(p.kind, Some(kind));
                prop_assert_eq!(usize::from(p.segments), n);
            }
            other => prop_assert!(false, "not complete: {:?}", other),
        }
        prop_assert!(reassembler.is_empty());
    }

    #[test]
    fn sms_deliver_roundtrip(deliver in sms_deliver()) {
        let bytes = deliver.encode().unwrap();
        prop_assert_eq!(parse_sms_deliver(&bytes).unwrap(), deliver);
    }

    #[test]
    fn sms_submit_roundtrip(submit in sms_submit()) {
        let bytes = submit.encode().unwrap();
        prop_assert_eq!(parse_sms_submit(&bytes).unwrap(), submit);
    }

    #[test]
    fn address_roundtrip(toa in digit_toa(), d in digits(20).prop_filter("1..=20", |d| !d.is_empty())) {
        let address = Address { type_of_address: toa, value: AddressValue::Digits(d.clone()) };
        let encoded = address.encode().unwrap();
        prop_assert_eq!(usize::from(encoded[0]), d.len());
        prop_assert_eq!(encoded.len(), 2 + d.len().div_ceil(2));
        let (back, rest) = parse_address(&encoded).unwrap();
        prop_assert!(rest.is_empty());
        prop_assert_eq!(&back, &address);
        // The same digits as a CAT address TLV value.
        let tlv = address.encode_dialling_number().unwrap();
        prop_assert_eq!(Address::decode_dialling_number(&tlv).unwrap(), address);
    }

    #[test]
    fn alphanumeric_text_roundtrip(text in "[A-Za-z0-9 @$]{0,11}") {
        let address = Address::alphanumeric(&text).unwrap();
        let (back, _) = parse_address(&address.encode().unwrap()).unwrap();
        prop_assert_eq!(back.alphanumeric_text().unwrap(), text);
    }

    #[test]
    fn envelope_and_send_short_message_roundtrip(
        deliver in sms_deliver(),
        submit in sms_submit(),
        toa in digit_toa(),
        d in digits(20),
        alpha in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
        number in any::<u8>(),
        qualifier in any::<u8>(),
    ) {
        let address = Some(Address { type_of_address: toa, value: AddressValue::Digits(d) });
        let download = SmsPpDownload { address: address.clone(), deliver };
        if let Ok(bytes) = download.encode() {
            prop_assert_eq!(parse_sms_pp_download(&bytes).unwrap(), download);
        }
        let command = SendShortMessage {
            command_number: number,
            command_qualifier: qualifier,
            alpha_identifier: alpha,
            address,
            submit,
        };
        let bytes = command.encode().unwrap();
        prop_assert_eq!(parse_send_short_message(&bytes).unwrap(), command);
    }

    #[test]
    fn parsers_never_panic(bytes in fuzz_input()) {
        let _ = parse_user_data_header(&bytes);
        let _ = parse_segment(&bytes);
        let _ = parse_address(&bytes);
        if let Ok(d) = parse_sms_deliver(&bytes) {
            // Whatever decodes re-encodes to something that decodes the same.
            prop_assert_eq!(parse_sms_deliver(&d.encode().unwrap()).unwrap(), d);
        }
        if let Ok(s) = parse_sms_submit(&bytes) {
            prop_assert_eq!(parse_sms_submit(&s.encode().unwrap()).unwrap(), s);
        }
        if let Ok(e) = parse_sms_pp_download(&bytes) {
            prop_assert_eq!(parse_sms_pp_download(&e.encode().unwrap()).unwrap(), e);
        }
        if let Ok(c) = parse_send_short_message(&bytes) {
            prop_assert_eq!(parse_send_short_message(&c.encode().unwrap()).unwrap(), c);
        }
        let _ = otagw_sms::parse_dialling_number(&bytes);
        let mut reassembler = Reassembler::new();
        for chunk in bytes.chunks(7) {
            let _ = reassembler.accept(0u8, chunk);
        }
    }

    #[test]
    fn reassembler_never_panics_on_random_segments(
        segments in proptest::collection::vec(
            (any::<u8>(), 0u8..4, 0u8..4, proptest::collection::vec(any::<u8>(), 0..3)),
            0..40,
        ),
    ) {
        let mut reassembler = Reassembler::new();
        for (key, total, seq, data) in segments {
            let mut ud = vec![0x05, 0x00, 0x03, 0x01, total, seq];
            ud.extend_from_slice(&data);
            let _ = reassembler.accept(key % 2, &ud);
            for p in reassembler.pending() {
                prop_assert!(p.received < p.total);
            }
        }
    }
}

//! Property tests: for every algorithm, SPI and length combination, gateway encode -> card decode
//! -> card PoR -> gateway decode gives the data back, and a flipped bit is caught.

use otagw::security::command::encode_command_packet;
use otagw::security::response::encode_response_packet;
use otagw::security::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

#[derive(Debug, Clone)]
struct CipherCase {
    algorithm: CipherAlgorithm,
    key: Vec<u8>,
    implicit: bool,
}

#[derive(Debug, Clone)]
struct IntegrityCase {
    algorithm: IntegrityAlgorithm,
    key: Vec<u8>,
    cc_len: Option<usize>,
    implicit: bool,
}

/// Keys of a given length: random, all-zero, or (for 3DES) with K1 == K2, which generic
/// libraries refuse and cards use.
fn key(len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), len),
        1 => Just(vec![0u8; len]),
        1 => proptest::collection::vec(any::<u8>(), 8).prop_map(move |k| k.repeat(len / 8)),
    ]
}

fn cipher_case() -> impl Strategy<Value = Option<CipherCase>> {
    let algos = prop_oneof![
        Just((CipherAlgorithm::DesCbc, 8)),
        Just((CipherAlgorithm::TripleDes2KeyCbc, 16)),
        Just((CipherAlgorithm::TripleDes3KeyCbc, 24)),
        Just((CipherAlgorithm::DesEcb, 8)),
        Just((CipherAlgorithm::TripleDesEcb, 16)),
        Just((CipherAlgorithm::TripleDesEcb, 24)),
        Just((CipherAlgorithm::AesCbc, 16)),
        Just((CipherAlgorithm::AesCbc, 24)),
        Just((CipherAlgorithm::AesCbc, 32)),
    ];
    prop_oneof![
        1 => Just(None),
        6 => (algos, any::<bool>()).prop_flat_map(|((algorithm, len), implicit)| {
            key(len).prop_map(move |key| Some(CipherCase { algorithm, key, implicit }))
        }),
    ]
}

fn integrity_case() -> impl Strategy<Value = Option<IntegrityCase>> {
    let algos = prop_oneof![
        Just((IntegrityAlgorithm::DesCbcMac, 8, None)),
        Just((IntegrityAlgorithm::TripleDes2KeyCbcMac, 16, None)),
        Just((IntegrityAlgorithm::TripleDes3KeyCbcMac, 24, None)),
        Just((IntegrityAlgorithm::AesCmac, 16, None)),
        Just((IntegrityAlgorithm::AesCmac, 16, Some(4))),
        Just((IntegrityAlgorithm::AesCmac, 24, Some(8))),
        Just((IntegrityAlgorithm::AesCmac, 32, None)),
        Just((IntegrityAlgorithm::Crc16, 0, None)),
        Just((IntegrityAlgorithm::Crc32, 0, None)),
    ];
    prop_oneof![
        1 => Just(None),
        6 => (algos, any::<bool>()).prop_flat_map(|((algorithm, len, cc_len), implicit)| {
            key(len).prop_map(move |key| Some(IntegrityCase { algorithm, key, cc_len, implicit }))
        }),
    ]
}

fn counter_mode() -> impl Strategy<Value = CounterMode> {
    prop_oneof![
        Just(CounterMode::NoCounter),
        Just(CounterMode::NotChecked),
        Just(CounterMode::MustBeHigher),
        Just(CounterMode::MustBeOneHigher),
    ]
}

struct Setup {
    header: CommandHeader,
    keys: Scp80Keys,
}

fn setup(
    cipher: &Option<CipherCase>,
    integrity: &Option<IntegrityCase>,
    counter: CounterMode,
    por_protected: bool,
    versions: (u8, u8),
    tar: [u8; 3],
    cntr: u64,
) -> Setup {
    let kind = match integrity {
        None => Integrity::None,
        Some(i) if i.algorithm.is_rc() => Integrity::Rc,
        Some(_) => Integrity::Cc,
    };
    let spi = Spi {
        integrity: kind,
        ciphered: cipher.is_some(),
        counter,
        por: PorRequirement::Always,
        por_integrity: if por_protected { kind } else { Integrity::None },
        por_ciphered: por_protected && cipher.is_some(),
        por_via_submit: false,
        reserved1: 0,
        reserved2: 0,
    };
    let kic_nibble = cipher.as_ref().map_or(0, |c| {
        if c.implicit {
            0
        } else {
            c.algorithm.kic_nibble()
        }
    });
    let kid_nibble = integrity.as_ref().map_or(0, |i| {
        if i.implicit {
            0
        } else {
            i.algorithm.kid_nibble()
        }
    });
    let kic = KeyIdentifier::new(versions.0, kic_nibble);
    let kid = KeyIdentifier::new(versions.1, kid_nibble);
    let cfg = KeyConfig {
        kic_key: cipher.as_ref().map(|c| c.key.as_slice()),
        kid_key: integrity.as_ref().map(|i| i.key.as_slice()),
        kic_algorithm: cipher.as_ref().map(|c| c.algorithm),
        kid_algorithm: integrity.as_ref().map(|i| i.algorithm),
        cc_len: integrity.as_ref().and_then(|i| i.cc_len),
    };
    let keys = Scp80Keys::resolve(&spi, kic.0, kid.0, &cfg).expect("keys resolve");
    Setup {
        header: CommandHeader {
            spi,
            kic,
            kid,
            tar,
            counter: Counter::new(cntr).expect("40-bit counter"),
        },
        keys,
    }
}

fn config() -> Config {
    Config {
        cases: 3000,
        // Fixed seed: CI sees the same cases every run (set PROPTEST_CASES to explore more).
        rng_seed: RngSeed::Fixed(0x07A6_5C80),
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn gateway_card_gateway_round_trip(
        cipher in cipher_case(),
        integrity in integrity_case(),
        counter in counter_mode(),
        por_protected in any::<bool>(),
        versions in (0u8..16, 0u8..16),
        tar in any::<[u8; 3]>(),
        cntr in 0u64..=Counter::MAX,
        data in proptest::collection::vec(any::<u8>(), 0..300),
        status in 0u8..=0x0C,
        por_data in proptest::collection::vec(any::<u8>(), 0..40),
        flip in any::<(prop::sample::Index, u8)>(),
    ) {
        let s = setup(&cipher, &integrity, counter, por_protected, versions, tar, cntr);
        let packet = encode_command_packet(&s.header, &s.keys, &data).expect("encode");

        // Card side.
        let view = CommandPacketView::parse(&packet).expect("parse");
        prop_assert_eq!(view.spi, s.header.spi);
        let decoded = view.open(&s.keys).expect("open");
        prop_assert_eq!(&decoded.data, &data);
        prop_assert_eq!(decoded.header, s.header);
        if let Some(c) = &cipher {
            prop_assert_eq!((packet.len() - 10) % c.algorithm.block_len(), 0);
        }

        // Card builds the PoR, gateway verifies it.
        let reply = ResponseHeader { tar, counter: decoded.header.counter, status: PorStatus::from_byte(status) };
        let por = encode_response_packet(&reply, &s.header.spi, &s.keys, &por_data, CcScope::SmsUdh)
            .expect("card PoR");
        let got = ResponsePacketView::parse(&por)
            .and_then(|v| v.open(&s.header.spi, &s.keys, CcScope::SmsUdh))
            .expect("gateway opens PoR");
        prop_assert_eq!(&got.data, &por_data);
        prop_assert_eq!(got.status.to_byte(), status);
        prop_assert_eq!(got.counter, s.header.counter);
        prop_assert_eq!(got.tar, tar);
        prop_assert_eq!(got.protection, PorProtection::AsRequested);

        // A flipped bit is caught wherever there is an integrity value. A 16-bit CRC under
        // ciphering only catches a garbled block with probability 1 - 2^-16: an RC is not
        // a security mechanism, so that pair is left out.
        let crc16_ciphered = |ciphered: bool| ciphered
            && integrity.as_ref().is_some_and(|i| i.algorithm == IntegrityAlgorithm::Crc16);
        let (at, bit) = flip;
        if integrity.is_some() && !crc16_ciphered(s.header.spi.ciphered) {
            let mut bad = packet.clone();
            let i = at.index(bad.len());
            bad[i] ^= 1 << (bit % 8);
            let r = CommandPacketView::parse(&bad).and_then(|v| v.open(&s.keys));
            prop_assert!(r.is_err(), "flip at {} bit {} accepted: {:?}", i, bit % 8, r);
        }
        if por_protected && integrity.is_some() && !crc16_ciphered(s.header.spi.por_ciphered) {
            let mut bad = por.clone();
            let i = at.index(bad.len());
            bad[i] ^= 1 << (bit % 8);
            let r = ResponsePacketView::parse(&bad)
                .and_then(|v| v.open(&s.header.spi, &s.keys, CcScope::SmsUdh));
            // Never accepted as protected: either refused, or read as an unauthenticated error.
            if let Ok(d) = &r {
                prop_assert_eq!(d.protection, PorProtection::UnprotectedError, "flip at {} accepted", i);
                prop_assert!(d.status != PorStatus::Ok);
            }
        }
    }

    /// Parsing and opening never panic, whatever the bytes.
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        cipher in cipher_case(),
        integrity in integrity_case(),
    ) {
        let s = setup(&cipher, &integrity, CounterMode::MustBeHigher, true, (1, 1), [0xB0, 0, 0x10], 1);
        if let Ok(v) = CommandPacketView::parse(&bytes) {
            let _ = v.open(&s.keys);
        }
        if let Ok(v) = ResponsePacketView::parse(&bytes) {
            let _ = v.open(&s.header.spi, &s.keys, CcScope::SmsUdh);
            let _ = v.open(&s.header.spi, &s.keys, CcScope::FromRpl);
        }
        // With a valid length prefix, the deeper paths run too.
        let mut framed = ((bytes.len()) as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        if let Ok(v) = CommandPacketView::parse(&framed) {
            let _ = v.open(&s.keys);
        }
        if let Ok(v) = ResponsePacketView::parse(&framed) {
            let _ = v.open(&s.header.spi, &s.keys, CcScope::SmsUdh);
        }
    }
}

#[test]
fn degenerate_keys_work_and_match_single_des() {
    // 3DES with K1 == K2 == K3 is single DES: the same CC as DES CBC-MAC with K1.
    let k = [0x01u8; 8];
    let des = IntegrityKey::new(IntegrityAlgorithm::DesCbcMac, &k, None).expect("DES key");
    let tdes = IntegrityKey::new(
        IntegrityAlgorithm::TripleDes2KeyCbcMac,
        &[k, k].concat(),
        None,
    )
    .expect("3DES K1 == K2");
    let zero = IntegrityKey::new(IntegrityAlgorithm::TripleDes3KeyCbcMac, &[0u8; 24], None)
        .expect("all-zero 3DES");
    let input = b"otagw degenerate keys";
    assert_eq!(des.compute(input), tdes.compute(input));
    assert_eq!(zero.compute(input).as_slice().len(), 8);
    let c = CipherKey::new(CipherAlgorithm::AesCbc, &[0u8; 16]).expect("all-zero AES");
    let mut block = [0u8; 16];
    c.encrypt(&mut block).expect("encrypt");
    // FIPS-197 / NIST: AES-128 of the zero block under the zero key.
    assert_eq!(hex::encode(block), "66e94bd4ef8a2c3b884cfa59ca342b2e");
}

#[test]
fn errors_name_the_problem() {
    let e = CipherKey::new(CipherAlgorithm::AesCbc, &[0u8; 15])
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        e.as_deref(),
        Some("KIc key for aes-cbc must be 16, 24 or 32 octets, got 15")
    );
    let e = CipherKey::new(CipherAlgorithm::DesCbc, &[0u8; 8])
        .and_then(|k| k.encrypt(&mut [0u8; 7]))
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        e.as_deref(),
        Some("ciphertext of 7 octets is not a multiple of the 8-octet block")
    );
    let e = IntegrityKey::new(IntegrityAlgorithm::TripleDes2KeyCbcMac, &[0u8; 16], Some(4))
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        e.as_deref(),
        Some("3des-2key gives no 4-octet integrity value")
    );
    let e = CommandPacketView::parse(&[0x00, 0x20, 0x15])
        .err()
        .map(|e| e.to_string());
    assert_eq!(e.as_deref(), Some("CPL says 32 octets follow but 1 do"));
    let e = ResponsePacketView::parse(&[0x00])
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        e.as_deref(),
        Some("packet truncated: RPL needs 2 octets, 1 left")
    );
}

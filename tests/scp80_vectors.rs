//! Every SCP80 vector in `../shared/vectors/scp80-pysim.json` (from Osmocom pySim, partly logs of
//! real sysmoISIM cards), checked in both directions.

use otagw::security::command::encode_command_packet;
use otagw::security::response::encode_response_packet;
use otagw::security::*;
use serde_json::Value;

fn vectors() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/vectors/scp80-pysim.json"
    );
    let text =
        std::fs::read_to_string(path).expect("vector file ../shared/vectors/scp80-pysim.json");
    serde_json::from_str(&text).expect("vector JSON")
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("field {k} in {v}"))
}

fn h(v: &Value, k: &str) -> Vec<u8> {
    hex::decode(s(v, k)).expect("hex")
}

fn byte(v: &Value, k: &str) -> u8 {
    h(v, k)[0]
}

fn cipher_algo(name: &str) -> CipherAlgorithm {
    match name {
        "aes_cbc" => CipherAlgorithm::AesCbc,
        "triple_des_cbc2" => CipherAlgorithm::TripleDes2KeyCbc,
        "des_cbc" => CipherAlgorithm::DesCbc,
        other => panic!("unmapped pySim cipher {other}"),
    }
}

fn integrity_algo(name: &str) -> IntegrityAlgorithm {
    match name {
        "aes_cmac" => IntegrityAlgorithm::AesCmac,
        "triple_des_cbc2" => IntegrityAlgorithm::TripleDes2KeyCbcMac,
        "des_cbc" => IntegrityAlgorithm::DesCbcMac,
        other => panic!("unmapped pySim integrity {other}"),
    }
}

/// Resolves keys from the KIc/KID octets alone, then checks pySim's algorithm names agree.
fn keys_for(inputs: &Value, spi: &Spi) -> Scp80Keys {
    let kic_key = h(inputs, "kic_key");
    let kid_key = h(inputs, "kid_key");
    let cfg = KeyConfig {
        kic_key: Some(&kic_key),
        kid_key: Some(&kid_key),
        ..Default::default()
    };
    let keys = Scp80Keys::resolve(
        spi,
        byte(inputs, "kic_byte"),
        byte(inputs, "kid_byte"),
        &cfg,
    )
    .expect("keys resolve");
    if let Some(c) = keys.cipher() {
        assert_eq!(c.algorithm(), cipher_algo(s(inputs, "kic_algo")));
    }
    if let Some(i) = keys.integrity() {
        assert_eq!(i.algorithm(), integrity_algo(s(inputs, "kid_algo")));
    }
    keys
}

#[test]
fn command_vectors_encode_to_the_byte_and_decode_back() {
    let mut n = 0;
    for v in vectors()
        .iter()
        .filter(|v| v["direction"] == "command_encode")
    {
        let (i, e) = (&v["inputs"], &v["expected"]);
        let spi = Spi::from_hex(s(i, "spi")).expect("spi");
        let keys = keys_for(i, &spi);
        let header = CommandHeader {
            spi,
            kic: KeyIdentifier(byte(i, "kic_byte")),
            kid: KeyIdentifier(byte(i, "kid_byte")),
            tar: h(i, "tar").try_into().expect("tar"),
            counter: Counter::from_bytes(h(i, "cntr").try_into().expect("cntr")),
        };
        let apdu = h(i, "apdu");
        let packet = encode_command_packet(&header, &keys, &apdu).expect("encode");
        assert_eq!(
            hex::encode(&packet),
            s(e, "secured_packet_with_cpl"),
            "{}",
            v["name"]
        );
        // SMS user data is the UDH 02 70 00 then the packet.
        assert_eq!(
            format!("027000{}", hex::encode(&packet)),
            s(e, "sms_user_data")
        );

        let view = CommandPacketView::parse(&packet).expect("parse");
        let decoded = view.open(&keys).expect("card-side open");
        assert_eq!(decoded.data, apdu, "{}", v["name"]);
        assert_eq!(hex::encode(&decoded.rc_cc_ds), s(e, "rc_cc_ds"));
        assert_eq!(
            u64::from(decoded.pcntr),
            e["pcntr"].as_u64().expect("pcntr")
        );
        assert_eq!(decoded.header, header);
        n += 1;
    }
    assert_eq!(n, 10, "command vectors seen");
}

#[test]
fn response_vectors_verify_and_reencode_to_the_byte() {
    let mut n = 0;
    for v in vectors()
        .iter()
        .filter(|v| v["direction"] == "response_decode")
    {
        let (i, e) = (&v["inputs"], &v["expected"]);
        let spi = Spi::from_hex(s(i, "spi")).expect("spi");
        let keys = keys_for(i, &spi);
        let ud = h(i, "sms_user_data");
        let view = ResponsePacketView::parse_sms(&ud).expect("parse");
        let result = view.open(&spi, &keys, CcScope::SmsUdh);
        if let Some(err) = e.get("error") {
            assert_eq!(err, "cc_mismatch");
            assert!(
                matches!(
                    result,
                    Err(SecurityError::IntegrityMismatch { kind: "CC", .. })
                ),
                "{}: {result:?}",
                v["name"]
            );
            n += 1;
            continue;
        }
        let por = result.unwrap_or_else(|err| panic!("{}: {err}", v["name"]));
        assert_eq!(u64::from(por.rpl), e["rpl"].as_u64().expect("rpl"));
        assert_eq!(u64::from(por.rhl), e["rhl"].as_u64().expect("rhl"));
        assert_eq!(hex::encode(por.tar), s(e, "tar"));
        assert_eq!(hex::encode(por.counter.to_bytes()), s(e, "cntr"));
        assert_eq!(u64::from(por.pcntr), e["pcntr"].as_u64().expect("pcntr"));
        assert_eq!(
            format!("{:02x}", por.status.to_byte()),
            s(e, "response_status")
        );
        assert_eq!(por.status_name, s(e, "response_status_name"));
        assert_eq!(hex::encode(por.rc_cc_ds), s(e, "rc_cc_ds"));
        assert_eq!(hex::encode(&por.data), s(e, "additional_response_data"));
        assert_eq!(por.protection, PorProtection::AsRequested);

        // Card side: the same fields build the very same PoR.
        let header = ResponseHeader {
            tar: por.tar,
            counter: por.counter,
            status: por.status,
        };
        let rebuilt = encode_response_packet(&header, &spi, &keys, &por.data, CcScope::SmsUdh)
            .expect("card-side encode");
        assert_eq!(hex::encode(rebuilt), hex::encode(&ud[3..]), "{}", v["name"]);
        n += 1;
    }
    assert_eq!(n, 12, "response vectors seen");
}

/// The SJA2 card answered a replayed counter with a clear PoR without CC although the SPI sent
/// (16 19) asked for a ciphered PoR with CC: it must decode as that error, never as success.
#[test]
fn unprotected_error_por_from_real_card_is_an_error_never_ok() {
    let v = vectors()
        .into_iter()
        .find(|v| v["name"] == "pysim docs smpp-ota-tool: SJA2 error PoR after replayed counter")
        .expect("vector");
    let i = &v["inputs"];
    let sent_spi = Spi::from_bytes([0x16, 0x19]);
    let keys = keys_for(i, &sent_spi);
    let ud = h(i, "sms_user_data");
    let por = ResponsePacketView::parse_sms(&ud)
        .and_then(|view| view.open(&sent_spi, &keys, CcScope::SmsUdh))
        .expect("decodes as an unprotected error");
    assert_eq!(por.status, PorStatus::UndefinedSecurityError);
    assert_eq!(por.protection, PorProtection::UnprotectedError);

    // The same clear packet claiming success is refused.
    let mut forged = ud.clone();
    let last = forged.len() - 1;
    forged[last] = 0x00;
    let r = ResponsePacketView::parse_sms(&forged)
        .and_then(|view| view.open(&sent_spi, &keys, CcScope::SmsUdh));
    assert!(
        matches!(r, Err(SecurityError::MissingIntegrity { .. })),
        "{r:?}"
    );
}

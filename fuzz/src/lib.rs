//! Bodies of otagw's fuzz targets, one plain function per target.
//!
//! `fuzz_targets/<name>.rs` wraps `<name>` in `fuzz_target!`; the root crate's
//! `tests/fuzz_regressions.rs` includes this file with `#[path]` and runs the same functions
//! over `tests/fuzz-regressions/<name>/*`, so a saved input replays exactly what the fuzzer ran.
//!
//! Each body must never panic on any input. Besides "no panic" they assert a few properties that
//! hold for every input the parsers accept: re-encoding a parsed value and parsing it again gives
//! the same value, and an unprotected PoR never decodes as success.

use std::sync::OnceLock;

use otagw::script::cap::{parse_applet_component, parse_header_component};
use otagw::script::{
    parse_ber_length, parse_c_apdu, parse_command_script, parse_compact_response,
    parse_expanded_response, parse_r_apdu, parse_script_response, CapFile, LoadFile, ScriptFormat,
};
use otagw::security::{
    CcScope, CommandPacketView, KeyConfig, PorProtection, PorStatus, ResponsePacketView, Scp80Keys,
    Spi,
};
use otagw_sms::{
    parse_address, parse_dialling_number, parse_segment, parse_send_short_message,
    parse_sms_deliver, parse_sms_pp_download, parse_sms_submit, split_packet, Accepted,
    ConcatReference, PacketKind, Reassembler, UserDataHeader,
};

/// 3DES keys of the pySim SJA5 vectors (KIc/KID 0x15).
const DES3_SJA5: ([u8; 16], [u8; 16]) = (
    *b"\xf0\x9c\x43\xee\x1a\x03\x91\x66\x5c\xc9\xf0\x5a\xf4\xe0\xbd\x10",
    *b"\x01\x98\x1f\x4a\x20\x99\x9f\x62\xaf\x99\x98\x81\x07\xba\xf6\xca",
);
/// 3DES keys of pySim's Test_SMS_3DES (KIc/KID 0x35).
const DES3_PYSIM: ([u8; 16], [u8; 16]) = (
    *b"\xc2\x1d\xd6\x6a\xca\xc1\x3c\xb3\xbc\x8b\x33\x1b\x24\xaf\xb5\x7b",
    *b"\x12\x11\x0c\x78\xe6\x78\xc2\x54\x08\x23\x30\x76\xaa\x03\x36\x15",
);
/// 3DES keys of pySim's SmsOtaTestCase 3DES cases (KIc/KID 0x35).
const DES3_OTA: ([u8; 16], [u8; 16]) = (
    *b"\x30\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f",
    *b"\x30\x11\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f",
);
/// AES-128 keys of pySim's AES vectors (KIc/KID 0x22).
const AES_PYSIM: ([u8; 16], [u8; 16]) = (
    *b"\x20\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f",
    *b"\x20\x11\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f",
);
/// Arbitrary longer keys: 24 octets (3-key 3DES, AES-192) and 32 (AES-256).
const KEY24: [u8; 24] = *b"0123456789abcdefghijklmn";
const KEY32: [u8; 32] = *b"0123456789abcdefghijklmnopqrstuv";
const KEY8: [u8; 8] = *b"\x01\x23\x45\x67\x89\xab\xcd\xef";

/// One way the gateway may have secured a command, and so expects the PoR back.
struct PorKeySet {
    spi: [u8; 2],
    kic: u8,
    kid: u8,
    kic_key: &'static [u8],
    kid_key: &'static [u8],
    cc_len: Option<usize>,
}

/// PoR key sets; the first input octet picks one. The first ones match the shared pySim
/// vectors, so the seeds reach the deciphering and CC checks.
const POR_KEY_SETS: &[PorKeySet] = &[
    // 0-2: SJA5 3DES (vectors 0619/1619/1601 with 0x15).
    set([0x06, 0x19], 0x15, 0x15, &DES3_SJA5.0, &DES3_SJA5.1, None),
    set([0x16, 0x19], 0x15, 0x15, &DES3_SJA5.0, &DES3_SJA5.1, None),
    set([0x16, 0x01], 0x15, 0x15, &DES3_SJA5.0, &DES3_SJA5.1, None),
    // 3-5: Test_SMS_3DES (0619/0609/0601 with 0x35).
    set([0x06, 0x19], 0x35, 0x35, &DES3_PYSIM.0, &DES3_PYSIM.1, None),
    set([0x06, 0x09], 0x35, 0x35, &DES3_PYSIM.0, &DES3_PYSIM.1, None),
    set([0x06, 0x01], 0x35, 0x35, &DES3_PYSIM.0, &DES3_PYSIM.1, None),
    // 6-8: SmsOtaTestCase 3DES (0619/0609/0601 with 0x35).
    set([0x06, 0x19], 0x35, 0x35, &DES3_OTA.0, &DES3_OTA.1, None),
    set([0x06, 0x09], 0x35, 0x35, &DES3_OTA.0, &DES3_OTA.1, None),
    set([0x06, 0x01], 0x35, 0x35, &DES3_OTA.0, &DES3_OTA.1, None),
    // 9: AES-128 vectors (0619 with 0x22).
    set([0x06, 0x19], 0x22, 0x22, &AES_PYSIM.0, &AES_PYSIM.1, None),
    // 10-11: 3DES and AES with PoR by SMS-SUBMIT, ciphered, CC (SPI 16 39).
    set([0x16, 0x39], 0x15, 0x15, &DES3_SJA5.0, &DES3_SJA5.1, None),
    set([0x16, 0x39], 0x12, 0x12, &AES_PYSIM.0, &AES_PYSIM.1, None),
    // 12: AES with a 4-octet CMAC.
    set(
        [0x06, 0x19],
        0x12,
        0x12,
        &AES_PYSIM.0,
        &AES_PYSIM.1,
        Some(4),
    ),
    // 13: RC (CRC16) on command and PoR, PoR ciphered with 3DES.
    set([0x05, 0x15], 0x15, 0x01, &DES3_SJA5.0, &[], None),
    // 14: RC (CRC32), nothing ciphered.
    set([0x01, 0x05], 0x00, 0x05, &[], &[], None),
    // 15: single DES CBC and DES CBC-MAC.
    set([0x06, 0x19], 0x01, 0x01, &KEY8, &KEY8, None),
    // 16: 3-key 3DES.
    set([0x06, 0x19], 0x09, 0x09, &KEY24, &KEY24, None),
    // 17: AES-256.
    set([0x06, 0x19], 0x02, 0x02, &KEY32, &KEY32, None),
    // 18: PoR ciphered but no integrity anywhere.
    set([0x04, 0x11], 0x12, 0x00, &AES_PYSIM.0, &[], None),
    // 19: nothing asked of the PoR.
    set([0x00, 0x01], 0x00, 0x00, &[], &[], None),
];

const fn set(
    spi: [u8; 2],
    kic: u8,
    kid: u8,
    kic_key: &'static [u8],
    kid_key: &'static [u8],
    cc_len: Option<usize>,
) -> PorKeySet {
    PorKeySet {
        spi,
        kic,
        kid,
        kic_key,
        kid_key,
        cc_len,
    }
}

fn some_key(key: &[u8]) -> Option<&[u8]> {
    (!key.is_empty()).then_some(key)
}

/// The PoR key sets, resolved once. A set that does not resolve is a bug in this file.
pub fn por_keys() -> &'static [(Spi, Scp80Keys)] {
    static KEYS: OnceLock<Vec<(Spi, Scp80Keys)>> = OnceLock::new();
    KEYS.get_or_init(|| {
        POR_KEY_SETS
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let spi = Spi::from_bytes(s.spi);
                let cfg = KeyConfig {
                    kic_key: some_key(s.kic_key),
                    kid_key: some_key(s.kid_key),
                    cc_len: s.cc_len,
                    ..Default::default()
                };
                let keys = Scp80Keys::resolve(&spi, s.kic, s.kid, &cfg)
                    .unwrap_or_else(|e| panic!("PoR key set {i} does not resolve: {e}"));
                (spi, keys)
            })
            .collect()
    })
}

/// Key configurations a card might hold, tried on every command packet.
fn command_key_configs() -> Vec<KeyConfig<'static>> {
    let pair = |kic: &'static [u8], kid: &'static [u8]| KeyConfig {
        kic_key: Some(kic),
        kid_key: Some(kid),
        ..Default::default()
    };
    vec![
        pair(&DES3_SJA5.0, &DES3_SJA5.1),
        pair(&DES3_PYSIM.0, &DES3_PYSIM.1),
        pair(&DES3_OTA.0, &DES3_OTA.1),
        pair(&AES_PYSIM.0, &AES_PYSIM.1),
        pair(&KEY8, &KEY8),
        pair(&KEY24, &KEY24),
        pair(&KEY32, &KEY32),
        KeyConfig {
            cc_len: Some(4),
            ..pair(&AES_PYSIM.0, &AES_PYSIM.1)
        },
        // No key values at all: only RC and no-security packets resolve.
        KeyConfig::default(),
    ]
}

/// Target `por_decode`: octet 0 picks a key set, the rest is a PoR, read both from RPL on and as
/// SMS user data (`02 71 00` first), and opened with either CC scope. Returns how many opens
/// succeeded with the protection the SPI asks for (the regression test checks the seeds get there).
pub fn por_decode(data: &[u8]) -> usize {
    let mut verified = 0;
    let Some((&pick, packet)) = data.split_first() else {
        return verified;
    };
    let sets = por_keys();
    let (spi, keys) = &sets[usize::from(pick) % sets.len()];
    for parsed in [
        ResponsePacketView::parse(packet),
        ResponsePacketView::parse_sms(packet),
    ] {
        let view = match parsed {
            Ok(view) => view,
            Err(e) => {
                let _ = e.to_string();
                continue;
            }
        };
        for scope in [CcScope::SmsUdh, CcScope::FromRpl] {
            match view.open(spi, keys, scope) {
                Ok(decoded) => {
                    verified += usize::from(decoded.protection == PorProtection::AsRequested);
                    assert_eq!(decoded.rpl, view.rpl);
                    assert_eq!(decoded.rhl, view.rhl);
                    assert_eq!(decoded.tar, view.tar);
                    assert!(decoded.data.len() <= packet.len());
                    if decoded.protection == PorProtection::UnprotectedError {
                        // An unauthenticated PoR must never read as success.
                        assert_ne!(decoded.status, PorStatus::Ok, "{decoded:?}");
                        assert!(
                            !matches!(decoded.status, PorStatus::Reserved(_)),
                            "{decoded:?}"
                        );
                    }
                }
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        }
    }
    verified
}

/// Target `command_decode`: a command packet from CPL on, opened with keys resolved from its own
/// SPI, KIc and KID against each configuration of [`command_key_configs`]. Returns how many
/// configurations opened it.
pub fn command_decode(data: &[u8]) -> usize {
    let mut opened = 0;
    let view = match CommandPacketView::parse(data) {
        Ok(view) => view,
        Err(e) => {
            let _ = e.to_string();
            return opened;
        }
    };
    for cfg in command_key_configs() {
        let Ok(keys) = Scp80Keys::resolve(&view.spi, view.kic.0, view.kid.0, &cfg) else {
            continue;
        };
        match view.open(&keys) {
            Ok(decoded) => {
                opened += 1;
                assert_eq!(decoded.chl, view.chl);
                assert_eq!(decoded.header.tar, view.tar);
                assert_eq!(decoded.header.spi, view.spi);
                assert!(decoded.data.len() <= data.len());
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    opened
}

/// Target `sms_parse`: every SMS parser on the whole input, then the input cut into segments
/// (`key length octets...` repeated) fed to a [`Reassembler`], then the input split as a packet
/// and reassembled.
pub fn sms_parse(data: &[u8]) {
    if let Ok((header, tail)) = UserDataHeader::parse(data) {
        let _ = header.concatenation();
        let _ = header.packet_kind();
        if let Ok(encoded) = header.encode_user_data(tail) {
            let (again, again_tail) = UserDataHeader::parse(&encoded).expect("re-encoded UDH");
            assert_eq!(again, header);
            assert_eq!(again_tail, tail);
        }
    }
    if let Ok((_, concat, tail)) = parse_segment(data) {
        if let Some(c) = concat {
            assert!(c.sequence >= 1 && c.sequence <= c.total, "{c:?}");
        }
        assert!(tail.len() < data.len());
    }
    if let Ok((address, rest)) = parse_address(data) {
        assert!(rest.len() < data.len());
        if let Ok(encoded) = address.encode() {
            let (again, again_rest) = parse_address(&encoded).expect("re-encoded address");
            assert_eq!(again, address);
            assert!(again_rest.is_empty());
        }
    }
    if let Ok(address) = parse_dialling_number(data) {
        if let Ok(encoded) = address.encode_dialling_number() {
            assert_eq!(
                parse_dialling_number(&encoded).expect("re-encoded dialling number"),
                address
            );
        }
    }
    if let Ok(deliver) = parse_sms_deliver(data) {
        let _ = deliver.user_data_header();
        if let Ok(encoded) = deliver.encode() {
            assert_eq!(
                parse_sms_deliver(&encoded).expect("re-encoded SMS-DELIVER"),
                deliver
            );
        }
    }
    if let Ok(submit) = parse_sms_submit(data) {
        let _ = submit.user_data_header();
        if let Ok(encoded) = submit.encode() {
            assert_eq!(
                parse_sms_submit(&encoded).expect("re-encoded SMS-SUBMIT"),
                submit
            );
        }
    }
    if let Ok(envelope) = parse_sms_pp_download(data) {
        if let Ok(encoded) = envelope.encode() {
            assert_eq!(
                parse_sms_pp_download(&encoded).expect("re-encoded ENVELOPE"),
                envelope
            );
        }
    }
    if let Ok(command) = parse_send_short_message(data) {
        if let Ok(encoded) = command.encode() {
            assert_eq!(
                parse_send_short_message(&encoded).expect("re-encoded SEND SHORT MESSAGE"),
                command
            );
        }
    }
    reassemble_segments(data);
    split_and_reassemble(data);
}

/// Feeds `key length segment` records (the last one possibly short) to one reassembler.
fn reassemble_segments(data: &[u8]) {
    let mut reassembler: Reassembler<u8> = Reassembler::new();
    let mut rest = data;
    while let [key, len, tail @ ..] = rest {
        let (segment, next) = tail.split_at(usize::from(*len).min(tail.len()));
        rest = next;
        match reassembler.accept(key & 0x03, segment) {
            Ok(Accepted::Complete(packet)) => {
                assert!(packet.data.len() <= data.len());
                assert!(packet.segments >= 1);
            }
            Ok(Accepted::Pending {
                reference,
                received,
                total,
            }) => {
                assert!(received < total);
                let missing = reassembler
                    .missing(&(key & 0x03), reference)
                    .expect("a pending message lists what it misses");
                assert_eq!(missing.len(), usize::from(total - received));
                if key & 0x80 != 0 {
                    assert!(reassembler.drop_pending(&(key & 0x03), reference));
                }
            }
            Ok(Accepted::Duplicate { .. }) => {}
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    for pending in reassembler.pending() {
        assert!(pending.received < pending.total);
    }
    assert_eq!(reassembler.len(), reassembler.pending().count());
}

/// Splits the input as a packet (octet 0 picks kind and reference) and reassembles it.
fn split_and_reassemble(data: &[u8]) {
    let Some((&pick, packet)) = data.split_first() else {
        return;
    };
    let kind = if pick & 1 == 0 {
        PacketKind::Command
    } else {
        PacketKind::Response
    };
    let reference = if pick & 2 == 0 {
        ConcatReference::EightBit(pick)
    } else {
        ConcatReference::SixteenBit(u16::from(pick) << 8 | 0x5A)
    };
    let Ok(segments) = split_packet(kind, packet, reference) else {
        return;
    };
    let mut reassembler: Reassembler<()> = Reassembler::new();
    let count = segments.len();
    // Reverse order when octet 0 has b3 set: order must not matter.
    let ordered: Vec<&Vec<u8>> = if pick & 4 == 0 {
        segments.iter().collect()
    } else {
        segments.iter().rev().collect()
    };
    for (i, segment) in ordered.into_iter().enumerate() {
        match reassembler
            .accept((), segment)
            .expect("a segment split_packet made")
        {
            Accepted::Complete(done) => {
                assert_eq!(i + 1, count, "complete before the last segment");
                assert_eq!(done.data, packet);
                assert_eq!(done.kind, Some(kind));
                assert_eq!(usize::from(done.segments), count);
            }
            other => assert!(i + 1 < count, "last segment gave {other:?}"),
        }
    }
    assert!(reassembler.is_empty());
}

const FORMATS: [ScriptFormat; 3] = [
    ScriptFormat::Compact,
    ScriptFormat::ExpandedDefinite,
    ScriptFormat::ExpandedIndefinite,
];

/// Target `script_parse`: every remote-script, APDU, BER and CAP/IJC parser on the whole input.
pub fn script_parse(data: &[u8]) {
    if let Ok(apdu) = parse_c_apdu(data) {
        assert_eq!(apdu.to_bytes(), data, "C-APDU re-encodes as read");
    }
    if let Ok(rapdu) = parse_r_apdu(data) {
        assert_eq!(rapdu.to_bytes(), data, "R-APDU re-encodes as read");
    }
    if let Ok((len, used)) = parse_ber_length(data) {
        assert!(used >= 1 && used <= data.len());
        assert!(len <= 0xFFFF);
    }
    for format in FORMATS {
        if let Ok(script) = parse_command_script(data, format) {
            if format.is_expanded() {
                if let Ok(encoded) = script.encode(format) {
                    let again = parse_command_script(&encoded, format)
                        .unwrap_or_else(|e| panic!("re-encoded {format:?} script: {e}"));
                    assert_eq!(again, script);
                }
            }
        }
        if let Ok(response) = parse_script_response(data, format) {
            // Re-encode in the form the card chose.
            let same = match (format, data.first()) {
                (ScriptFormat::Compact, _) => ScriptFormat::Compact,
                (_, Some(0xAF)) => ScriptFormat::ExpandedIndefinite,
                _ => ScriptFormat::ExpandedDefinite,
            };
            // tests/fuzz-regressions/script_parse/indefinite-other-tag-00.bin (`af 80 00 81 00
            // 00 00`) once parsed a tag-00 TLV that re-encoded as end-of-contents; the parser
            // now refuses tag 00, so the round trip is checked for every response.
            if let Ok(encoded) = response.encode(same) {
                let again = parse_script_response(&encoded, format)
                    .unwrap_or_else(|e| panic!("re-encoded {same:?} response: {e}"));
                assert_eq!(again, response);
            }
        }
    }
    let _ = parse_compact_response(data);
    let _ = parse_expanded_response(data);
    let _ = parse_header_component(data);
    let _ = parse_applet_component(data);
    if let Ok(load) = LoadFile::from_ijc(data) {
        assert_eq!(load.bytes(), data);
    }
    if let Ok(cap) = CapFile::from_zip(data) {
        let _ = cap.header();
        let _ = cap.applet_aids();
        let _ = cap.load_file_with_descriptor(true);
        let _ = cap.load_file();
    }
}

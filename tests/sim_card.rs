//! In-process end to end: the gateway's SCP80 encoder and script builders -> virtual card ->
//! PoR -> the gateway's PoR decoder, with keys shared through a vendor output file.

use std::io::{Cursor, Write};

use otagw::script::ram::{get_status, install_for_install, install_for_load, load_commands};
use otagw::script::rfm::{self, CardClass};
use otagw::script::{
    pack_scripts, parse_compact_response, parse_expanded_response, Aid, CApdu, CapFile,
    CommandScript, GpVersion, InstallParameters, Privileges, ScriptFormat, StatusSubset,
    ToolkitParameters,
};
use otagw::security::command::encode_command_packet;
use otagw::security::{
    CcScope, CommandHeader, Counter, DecodedResponse, KeyConfig, KeyIdentifier, PorProtection,
    PorStatus, ResponsePacketView, Scp80Keys, Spi, Tar,
};
use otagw::sim::{
    CardPolicy, Fleet, FleetDefaults, VirtualCard, TAR_RAM_ISD, TAR_RFM_GSM, TAR_RFM_USIM,
};
use otagw_sms::smsc_sim::{HandsetNetwork, HandsetReply, PorReply};
use proptest::prelude::*;

const KIC: &str = "F09C43EE1A0391665CC9F05AF4E0BD10";
const KID: &str = "01981F4A20999F62AF99988107BAF6CA";
const MSISDN: &str = "491700000001";

fn vendor_file() -> String {
    format!(
        "VAR_OUT:ICCID,IMSI,MSISDN,KIC,KID\n\
         8949000000000000001F,262011234567890,{MSISDN},{KIC},{KID}\n\
         89490000000000000027,262011234567891,491700000002,00112233445566778899AABBCCDDEEFF,FFEEDDCCBBAA99887766554433221100\n"
    )
}

fn fleet() -> Fleet {
    Fleet::from_vendor_file(&vendor_file(), FleetDefaults::default()).unwrap()
}

/// The gateway's view of card 1: keys taken from the vendor row's text, not from the card.
struct Gateway {
    kic: u8,
    kid: u8,
    kic_key: Vec<u8>,
    kid_key: Vec<u8>,
}

impl Gateway {
    fn new(kic: u8, kid: u8) -> Self {
        let row = vendor_file();
        let fields: Vec<&str> = row.lines().nth(1).unwrap().split(',').collect();
        Gateway {
            kic,
            kid,
            kic_key: hex::decode(fields[3]).unwrap(),
            kid_key: hex::decode(fields[4]).unwrap(),
        }
    }

    fn keys(&self, spi: &Spi) -> Scp80Keys {
        let cfg = KeyConfig {
            kic_key: Some(&self.kic_key),
            kid_key: Some(&self.kid_key),
            ..KeyConfig::default()
        };
        Scp80Keys::resolve(spi, self.kic, self.kid, &cfg).unwrap()
    }

    fn packet(&self, spi: [u8; 2], tar: Tar, counter: u64, script: &[u8]) -> Vec<u8> {
        let spi = Spi::from_bytes(spi);
        let header = CommandHeader {
            spi,
            kic: KeyIdentifier(self.kic),
            kid: KeyIdentifier(self.kid),
            tar,
            counter: Counter::new(counter).unwrap(),
        };
        encode_command_packet(&header, &self.keys(&spi), script).unwrap()
    }

    fn open(&self, spi: [u8; 2], por: &PorReply) -> DecodedResponse {
        let spi = Spi::from_bytes(spi);
        ResponsePacketView::parse_sms(&por.user_data)
            .unwrap()
            .open(&spi, &self.keys(&spi), CcScope::SmsUdh)
            .unwrap()
    }
}

fn compact(cmds: Vec<CApdu>) -> Vec<u8> {
    CommandScript::from_commands(cmds)
        .encode(ScriptFormat::Compact)
        .unwrap()
}

fn send(fleet: &Fleet, packet: &[u8]) -> Option<PorReply> {
    match fleet.command_packet(MSISDN, packet) {
        HandsetReply::Delivered { por } => por,
        HandsetReply::UnknownSubscriber => panic!("card not found"),
    }
}

/// SPI 16 39: CC, ciphered, counter must be higher; PoR always, CC, ciphered, by SMS-SUBMIT.
const SPI_FULL: [u8; 2] = [0x16, 0x39];

#[test]
fn update_then_read_spn_3des_and_aes() {
    for (kic, kid) in [(0x15, 0x15), (0x12, 0x12)] {
        let fleet = fleet();
        let gw = Gateway::new(kic, kid);
        let g = CardClass::Gsm;
        let spn = b"\x01otagw SPN\xFF\xFF\xFF\xFF\xFF\xFF\xFF";

        let mut cmds = rfm::select_path(g, &[0x7F20, 0x6F46]);
        cmds.push(rfm::update_binary(g, 0, spn).unwrap());
        let por = send(&fleet, &gw.packet(SPI_FULL, TAR_RFM_GSM, 1, &compact(cmds))).unwrap();
        assert!(por.via_submit);
        let decoded = gw.open(SPI_FULL, &por);
        assert_eq!(decoded.status, PorStatus::Ok);
        assert_eq!(decoded.protection, PorProtection::AsRequested);
        assert_eq!(decoded.tar, TAR_RFM_GSM);
        assert_eq!(decoded.counter.value(), 1);
        let resp = parse_compact_response(&decoded.data).unwrap();
        assert_eq!((resp.executed, resp.last().unwrap().sw), (4, 0x9000));

        // A second command reads it back.
        let mut cmds = rfm::select_path(g, &[0x7F20, 0x6F46]);
        cmds.push(rfm::read_binary(g, 0, 17).unwrap());
        let por = send(&fleet, &gw.packet(SPI_FULL, TAR_RFM_GSM, 2, &compact(cmds))).unwrap();
        let resp = parse_compact_response(&gw.open(SPI_FULL, &por).data).unwrap();
        assert_eq!(resp.executed, 4);
        assert_eq!(resp.last().unwrap().sw, 0x9000);
        assert_eq!(resp.last().unwrap().data, spn);

        // The USIM view (TAR B00011, class 00) sees the same EF SPN content.
        let u = CardClass::Uicc;
        let cmds = vec![
            CApdu::new(0x00, 0xA4, 0x00, 0x0C, vec![0x6F, 0x46], None).unwrap(),
            rfm::read_binary(u, 0, 0).unwrap(),
        ];
        let por = send(
            &fleet,
            &gw.packet(SPI_FULL, TAR_RFM_USIM, 3, &compact(cmds)),
        )
        .unwrap();
        let resp = parse_compact_response(&gw.open(SPI_FULL, &por).data).unwrap();
        assert_eq!(resp.last().unwrap().data, spn);
        assert_eq!(
            fleet.with_card(MSISDN, |c| c.read_file(&[0x7FFF, 0x6F46])),
            Some(Some(spn.to_vec()))
        );
        // The other card is untouched.
        assert_eq!(
            fleet.with_card("491700000002", |c| c.changed_files()),
            Some(0)
        );
    }
}

#[test]
fn expanded_select_with_fcp() {
    let fleet = fleet();
    let gw = Gateway::new(0x12, 0x12);
    let u = CardClass::Uicc;
    let script = CommandScript::from_commands([
        rfm::select_fid(u, 0x7FFF).with_le(0),
        rfm::select_fid(u, 0x6F07).with_le(0),
        rfm::read_binary(u, 0, 9).unwrap(),
        rfm::read_binary(u, 9, 1).unwrap(),
        rfm::read_binary(u, 0, 1).unwrap(),
    ])
    .encode(ScriptFormat::ExpandedIndefinite)
    .unwrap();
    let por = send(&fleet, &gw.packet(SPI_FULL, TAR_RFM_GSM, 1, &script)).unwrap();
    let resp = parse_expanded_response(&gw.open(SPI_FULL, &por).data).unwrap();
    assert_eq!(resp.executed, 4);
    let sws = resp.status_words();
    assert_eq!(sws[0].0, 0x9000);
    assert_eq!(sws[0].1[0], 0x62);
    assert_eq!(&sws[1].1[..4], &[0x62, 0x14, 0x82, 0x02]);
    assert_eq!(hex::encode(&sws[2].1), "082926102143658709");
    assert_eq!(sws[3], (0x6B00, vec![]));
}

fn open_unprotected(por: &PorReply, spi: [u8; 2], gw: &Gateway) -> DecodedResponse {
    let d = gw.open(spi, por);
    assert_eq!(d.protection, PorProtection::UnprotectedError);
    assert!(d.data.is_empty());
    d
}

#[test]
fn counter_modes() {
    let fleet = fleet();
    let gw = Gateway::new(0x15, 0x15);
    let status = compact(vec![rfm::select_fid(CardClass::Gsm, 0x3F00)]);
    let ok = |counter, spi| {
        let por = send(&fleet, &gw.packet(spi, TAR_RFM_GSM, counter, &status)).unwrap();
        gw.open(spi, &por)
    };
    assert_eq!(ok(5, SPI_FULL).status, PorStatus::Ok);
    // Replay: counter low, PoR in clear (no CC, no ciphering).
    let por = send(&fleet, &gw.packet(SPI_FULL, TAR_RFM_GSM, 5, &status)).unwrap();
    let d = open_unprotected(&por, SPI_FULL, &gw);
    assert_eq!((d.status, d.counter.value()), (PorStatus::CounterLow, 5));
    assert_eq!(d.rhl, 10);
    // Lower still: low. Nothing was stored by the refused packets.
    let por = send(&fleet, &gw.packet(SPI_FULL, TAR_RFM_GSM, 4, &status)).unwrap();
    assert_eq!(
        open_unprotected(&por, SPI_FULL, &gw).status,
        PorStatus::CounterLow
    );
    // Must be exactly one higher (SPI 1E..): 7 is too high, 6 is right.
    let one_higher = [0x1E, 0x39];
    let por = send(&fleet, &gw.packet(one_higher, TAR_RFM_GSM, 7, &status)).unwrap();
    assert_eq!(
        open_unprotected(&por, one_higher, &gw).status,
        PorStatus::CounterHigh
    );
    assert_eq!(ok(6, one_higher).status, PorStatus::Ok);
    // Counter present but not checked (SPI 0E..): an old value is fine and not stored.
    assert_eq!(ok(1, [0x0E, 0x39]).status, PorStatus::Ok);
    assert_eq!(
        fleet.with_card(MSISDN, |c| c.key_set(1).unwrap().counter().value()),
        Some(6)
    );
    // Blocked at the top of the counter space.
    fleet.with_card(MSISDN, |c| {
        c.set_counter(1, Counter::new(Counter::MAX).unwrap())
    });
    let por = send(&fleet, &gw.packet(SPI_FULL, TAR_RFM_GSM, 9, &status)).unwrap();
    assert_eq!(
        open_unprotected(&por, SPI_FULL, &gw).status,
        PorStatus::CounterBlocked
    );

    // A card whose policy protects counter-error PoRs.
    let mut card = VirtualCard::new("8949000000000000001", "262011234567890", MSISDN)
        .unwrap()
        .with_policy(CardPolicy {
            protect_counter_errors: true,
            ..CardPolicy::default()
        })
        .with_key_set(
            otagw::sim::KeySet::new(1, &gw.kic_key, &gw.kid_key)
                .unwrap()
                .with_counter(Counter::new(10).unwrap()),
        );
    let por = card
        .process_command_packet(&gw.packet(SPI_FULL, TAR_RFM_GSM, 10, &status))
        .unwrap();
    let d = gw.open(SPI_FULL, &por);
    assert_eq!(
        (d.status, d.protection),
        (PorStatus::CounterLow, PorProtection::AsRequested)
    );
}

#[test]
fn flipped_cc_unknown_tar_and_key_versions() {
    let fleet = fleet();
    let gw = Gateway::new(0x15, 0x15);
    let script = compact(vec![rfm::select_fid(CardClass::Gsm, 0x3F00)]);

    // Not ciphered (SPI 12 29: CC, counter higher; PoR always with CC, by SMS-SUBMIT):
    // the CC sits in clear at offset 16.
    let spi = [0x12, 0x29];
    let mut packet = gw.packet(spi, TAR_RFM_GSM, 1, &script);
    packet[16] ^= 0x01;
    let outcome = fleet.process(MSISDN, &packet).unwrap();
    assert_eq!(outcome.status, Some(PorStatus::RcCcDsFailed));
    assert!(outcome.detail.unwrap().contains("CC mismatch"));
    let d = open_unprotected(&outcome.por.unwrap(), spi, &gw);
    assert_eq!((d.status, d.counter.value()), (PorStatus::RcCcDsFailed, 1));

    // Ciphered: a flipped bit in the last block garbles the data, the CC fails.
    let mut packet = gw.packet(SPI_FULL, TAR_RFM_GSM, 1, &script);
    let last = packet.len() - 1;
    packet[last] ^= 0x80;
    let d = open_unprotected(&send(&fleet, &packet).unwrap(), SPI_FULL, &gw);
    assert_eq!((d.status, d.counter.value()), (PorStatus::RcCcDsFailed, 1));
    // Ciphertext not a whole number of blocks: ciphering error.
    let mut packet = gw.packet(SPI_FULL, TAR_RFM_GSM, 1, &script);
    packet.pop();
    let cpl = u16::from_be_bytes([packet[0], packet[1]]) - 1;
    packet[..2].copy_from_slice(&cpl.to_be_bytes());
    let d = open_unprotected(&send(&fleet, &packet).unwrap(), SPI_FULL, &gw);
    assert_eq!(d.status, PorStatus::CipheringError);
    // The counter was never stored by the failures above.
    assert_eq!(
        fleet.with_card(MSISDN, |c| c.key_set(1).unwrap().counter().value()),
        Some(0)
    );

    // Unknown TAR: 09 in clear, counter echoed.
    let por = send(&fleet, &gw.packet(SPI_FULL, [0xB0, 0x00, 0x99], 3, &script)).unwrap();
    let d = open_unprotected(&por, SPI_FULL, &gw);
    assert_eq!(
        (d.status, d.tar, d.counter.value()),
        (PorStatus::TarUnknown, [0xB0, 0x00, 0x99], 3)
    );

    // Key version 2 does not exist on the card: unidentified security error.
    let gw2 = Gateway::new(0x25, 0x25);
    let por = send(&fleet, &gw2.packet(SPI_FULL, TAR_RFM_GSM, 4, &script)).unwrap();
    assert_eq!(
        open_unprotected(&por, SPI_FULL, &gw2).status,
        PorStatus::UndefinedSecurityError
    );
    // Wrong keys for the right version: the CC fails.
    let mut wrong = Gateway::new(0x15, 0x15);
    // (Not bit 0: DES ignores the parity bits, so that key would still be right.)
    wrong.kid_key[0] ^= 0x10;
    let por = send(&fleet, &wrong.packet([0x12, 0x29], TAR_RFM_GSM, 4, &script)).unwrap();
    assert_eq!(
        open_unprotected(&por, [0x12, 0x29], &wrong).status,
        PorStatus::RcCcDsFailed
    );
    // Broken framing: discarded without a PoR.
    assert_eq!(send(&fleet, &[0x00, 0x05, 0x0D]), None);
}

#[test]
fn por_never_and_on_error() {
    let fleet = fleet();
    let gw = Gateway::new(0x12, 0x12);
    let g = CardClass::Gsm;
    // SPI 16 00: no PoR, but the command runs.
    let mut cmds = rfm::select_path(g, &[0x7F20, 0x6F46]);
    cmds.push(rfm::update_binary(g, 1, b"NOPOR").unwrap());
    assert_eq!(
        send(
            &fleet,
            &gw.packet([0x16, 0x00], TAR_RFM_GSM, 1, &compact(cmds))
        ),
        None
    );
    let spn = fleet.with_card(MSISDN, |c| c.read_file(&[0x7F20, 0x6F46]).unwrap());
    assert_eq!(&spn.unwrap()[1..6], b"NOPOR");
    // No PoR either for a security error.
    let mut packet = gw.packet([0x16, 0x00], TAR_RFM_GSM, 1, &[]);
    packet[20] ^= 1;
    assert_eq!(send(&fleet, &packet), None);

    // SPI 16 3A: PoR on error only.
    let on_error = [0x16, 0x3A];
    let fine = compact(rfm::select_path(g, &[0x7F20, 0x6F46]));
    assert_eq!(
        send(&fleet, &gw.packet(on_error, TAR_RFM_GSM, 2, &fine)),
        None
    );
    let failing = compact(vec![
        rfm::select_fid(g, 0x7F20),
        rfm::select_fid(g, 0x6F99),
        rfm::select_fid(g, 0x6F46),
    ]);
    let por = send(&fleet, &gw.packet(on_error, TAR_RFM_GSM, 3, &failing)).unwrap();
    let d = gw.open(on_error, &por);
    assert_eq!(
        (d.status, d.protection),
        (PorStatus::Ok, PorProtection::AsRequested)
    );
    let resp = parse_compact_response(&d.data).unwrap();
    assert_eq!((resp.executed, resp.last().unwrap().sw), (2, 0x9404));
    // A replay with PoR on error is an error: PoR in clear.
    let por = send(&fleet, &gw.packet(on_error, TAR_RFM_GSM, 3, &fine)).unwrap();
    assert_eq!(
        open_unprotected(&por, on_error, &gw).status,
        PorStatus::CounterLow
    );
    // PoR in the delivery report (SPI 2 b6 = 0), ciphered and RC-protected (b4b3 = 01): with
    // KID 15 the RC is CRC32.
    let gw3 = Gateway::new(0x15, 0x15);
    let rp_ack = [0x16, 0x15];
    let por = send(&fleet, &gw3.packet(rp_ack, TAR_RFM_GSM, 4, &fine)).unwrap();
    assert!(!por.via_submit);
    let d = gw3.open(rp_ack, &por);
    assert_eq!(
        (d.status, d.protection, d.rhl),
        (PorStatus::Ok, PorProtection::AsRequested, 14)
    );
}

/// A small applet package as a CAP zip: realistic Header and Applet components, filler
/// bodies for the rest.
fn cap_zip() -> Vec<u8> {
    let h = |s: &str| hex::decode(s.replace(' ', "")).unwrap();
    let components = [
        (
            "Header",
            h("01 0010 DECAFFED 01 02 04 00 01 06 F00102030405"),
        ),
        ("Directory", h("02 0003 AABBCC")),
        ("Applet", h("03 000B 01 07 F0010203040501 002A")),
        ("Import", h("04 0001 00")),
        ("ConstantPool", h("05 0002 4444")),
        ("Class", h("06 0002 1111")),
        ("Method", h("07 0003 222222")),
        ("StaticField", h("08 0001 33")),
        ("RefLocation", h("09 0001 55")),
        ("Descriptor", h("0B 0001 66")),
    ];
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default();
    for (name, bytes) in components {
        w.start_file(format!("com/example/hello/javacard/{name}.cap"), opts)
            .unwrap();
        w.write_all(&bytes).unwrap();
    }
    w.finish().unwrap().into_inner()
}

#[test]
fn ram_install_and_get_status() {
    let fleet = fleet();
    let gw = Gateway::new(0x15, 0x15);
    let cap = CapFile::from_zip(&cap_zip()).unwrap();
    let lf = cap.load_file().unwrap();
    let format = ScriptFormat::ExpandedIndefinite;
    // 137 octets of SMS user data after the UDH, minus the SCP80 header (CPL..CC, with 3DES
    // padding of at most 7): keep a one-SMS budget of 100 octets of script.
    let budget = 100;
    let module = &lf.applet_aids()[0];
    let instance = Aid::from_hex("F001020304050101").unwrap();
    let params = InstallParameters {
        sim_toolkit: Some(ToolkitParameters {
            access_domain: vec![0x00],
            priority: 1,
            tar_values: vec![[0xC0, 0x00, 0x01]],
            ..ToolkitParameters::default()
        }),
        ..InstallParameters::default()
    };
    let mut cmds = vec![install_for_load(lf.package_aid(), None, &[], &[]).unwrap()];
    cmds.extend(load_commands(lf.bytes(), format, budget).unwrap());
    cmds.push(
        install_for_install(
            GpVersion::default(),
            lf.package_aid(),
            module,
            &instance,
            Privileges::NONE,
            &params,
            true,
        )
        .unwrap(),
    );
    let scripts = pack_scripts(&cmds, format, budget).unwrap();
    assert!(scripts.len() >= 2, "the load spans several packets");
    for (i, s) in scripts.iter().enumerate() {
        let counter = 1 + i as u64;
        let por = send(&fleet, &gw.packet(SPI_FULL, TAR_RAM_ISD, counter, &s.bytes)).unwrap();
        let d = gw.open(SPI_FULL, &por);
        assert_eq!(d.status, PorStatus::Ok);
        let resp = parse_expanded_response(&d.data).unwrap();
        assert_eq!(resp.executed, s.commands.len());
        assert!(
            resp.responses
                .iter()
                .all(|r| r.sw == 0x9000 && r.data == [0x00]),
            "{resp:?}"
        );
    }

    // GET STATUS for applications, expanded (Le present: data straight back).
    let script =
        CommandScript::from_commands([get_status(StatusSubset::Applications, None, false)])
            .encode(format)
            .unwrap();
    let next = 1 + scripts.len() as u64;
    let por = send(&fleet, &gw.packet(SPI_FULL, TAR_RAM_ISD, next, &script)).unwrap();
    let resp = parse_expanded_response(&gw.open(SPI_FULL, &por).data).unwrap();
    let r = resp.last().unwrap();
    assert_eq!(r.sw, 0x9000);
    let mut expected = vec![0xE3, 0x25, 0x4F, 0x08];
    expected.extend_from_slice(instance.as_bytes());
    expected.extend_from_slice(&[0x9F, 0x70, 0x01, 0x07, 0xC5, 0x03, 0, 0, 0, 0xC4, 0x06]);
    expected.extend_from_slice(lf.package_aid().as_bytes());
    expected.extend_from_slice(&hex::decode("CC08A000000151000000").unwrap());
    assert_eq!(r.data, expected);

    // The same in a compact script: 61XX, then GET RESPONSE.
    let script = compact(vec![
        get_status(StatusSubset::LoadFiles, None, false),
        rfm::get_response(CardClass::Uicc, 0),
    ]);
    let por = send(&fleet, &gw.packet(SPI_FULL, TAR_RAM_ISD, next + 1, &script)).unwrap();
    let resp = parse_compact_response(&gw.open(SPI_FULL, &por).data).unwrap();
    assert_eq!(resp.executed, 2);
    assert_eq!(
        &resp.last().unwrap().data[..8],
        &hex::decode("E31A4F06F0010203").unwrap()[..]
    );

    let registry = fleet.with_card(MSISDN, |c| c.registry().clone()).unwrap();
    assert_eq!(registry.applets().len(), 1);
    assert_eq!(registry.applets()[0].parameters, params);
    assert_eq!(registry.load_files()[0].modules, vec![module.clone()]);
}

#[test]
fn vendor_files() {
    let sample = "\
VAR_OUT:ICCID,IMSI,MSISDN,KIC,KID
8991234567788901234F,421234567890123,961234567890,12122343423234234234234234234,56756785675678568678678678678
8991234567788901235F,421234567890124,961234567891,23434564756786846345235345645745,23454576679803454767897890890678
";
    let e = Fleet::from_vendor_file(sample, FleetDefaults::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 2, field KIC: 29 hex digits, but a key is whole octets (16, 32, 48 or 64 hex digits)"
    );
    let text = vendor_file();
    let out = fleet().to_vendor_file();
    assert_eq!(out, text);
    let back = Fleet::from_vendor_file(&out, FleetDefaults::default()).unwrap();
    assert_eq!(back.len(), 2);
    assert_eq!(back.to_vendor_file(), text);
}

#[test]
fn expanded_script_response_encoding_matches_parser() {
    // Sanity: the card's expanded responses parse with the gateway's parser, and a bad
    // template gets the Bad Format TLV.
    let fleet = fleet();
    let gw = Gateway::new(0x12, 0x12);
    let por = send(
        &fleet,
        &gw.packet(SPI_FULL, TAR_RFM_GSM, 1, &[0xAA, 0x02, 0x99, 0x00]),
    )
    .unwrap();
    let resp = parse_expanded_response(&gw.open(SPI_FULL, &por).data).unwrap();
    assert_eq!(resp.executed, 0);
    assert!(resp.bad_format.is_some());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(packet in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut card = fleet_card();
        let _ = card.process(&packet);
    }

    #[test]
    fn random_packets_with_valid_framing_never_panic(
        spi in any::<[u8; 2]>(),
        kic in any::<u8>(),
        kid in any::<u8>(),
        tar in prop_oneof![Just(TAR_RFM_GSM), Just(TAR_RFM_USIM), Just(TAR_RAM_ISD), any::<[u8; 3]>()],
        cc_len in prop_oneof![Just(0usize), Just(4), Just(8), 0usize..20],
        body in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut card = fleet_card();
        let chl = 13 + cc_len;
        let mut packet = Vec::new();
        let cpl = (1 + chl + body.len().saturating_sub(cc_len + 6)) as u16;
        packet.extend_from_slice(&cpl.to_be_bytes());
        packet.push(chl as u8);
        packet.extend_from_slice(&spi);
        packet.push(kic);
        packet.push(kid);
        packet.extend_from_slice(&tar);
        packet.extend_from_slice(&body);
        packet.resize(2 + cpl as usize, 0);
        let outcome = card.process(&packet);
        if let Some(por) = outcome.por {
            prop_assert!(ResponsePacketView::parse_sms(&por.user_data).is_ok());
        }
    }

    #[test]
    fn valid_packets_with_random_scripts_never_panic(
        tar in prop_oneof![Just(TAR_RFM_GSM), Just(TAR_RFM_USIM), Just(TAR_RAM_ISD)],
        script in proptest::collection::vec(any::<u8>(), 0..200),
        prefix in prop_oneof![Just(vec![]), Just(vec![0xA0, 0xA4]), Just(vec![0x00, 0xA4]), Just(vec![0x80, 0xE6]), Just(vec![0xAA]), Just(vec![0xAE, 0x80])],
        counter in 1u64..1000,
    ) {
        let mut card = fleet_card();
        let gw = Gateway::new(0x12, 0x12);
        let mut data = prefix;
        data.extend_from_slice(&script);
        let por = card.process_command_packet(&gw.packet(SPI_FULL, tar, counter, &data));
        let por = por.expect("PoR always");
        let d = gw.open(SPI_FULL, &por);
        prop_assert_eq!(d.status, PorStatus::Ok);
    }

    #[test]
    fn bit_flips_never_pass(flip in 0usize..2000, bit in 0u8..8) {
        let mut card = fleet_card();
        let gw = Gateway::new(0x15, 0x15);
        let mut packet = gw.packet(SPI_FULL, TAR_RFM_GSM, 1, &compact(vec![rfm::select_fid(CardClass::Gsm, 0x7F20)]));
        let at = flip % packet.len();
        packet[at] ^= 1 << bit;
        // The CC covers every octet but itself, and the CC is ciphered: every flip fails.
        prop_assert_ne!(card.process(&packet).status, Some(PorStatus::Ok));
    }
}

fn fleet_card() -> VirtualCard {
    let gw = Gateway::new(0x12, 0x12);
    VirtualCard::new("8949000000000000001", "262011234567890", MSISDN)
        .unwrap()
        .with_key_set(otagw::sim::KeySet::new(1, &gw.kic_key, &gw.kid_key).unwrap())
}

#[test]
fn implicit_codings_use_the_fleet_defaults() {
    use otagw::security::{CipherAlgorithm, IntegrityAlgorithm};
    let defaults = FleetDefaults {
        kic_algorithm: Some(CipherAlgorithm::AesCbc),
        kid_algorithm: Some(IntegrityAlgorithm::AesCmac),
        ..FleetDefaults::default()
    };
    let fleet = Fleet::from_vendor_file(&vendor_file(), defaults).unwrap();
    let gw = Gateway::new(0x10, 0x10);
    let spi = Spi::from_bytes(SPI_FULL);
    let cfg = KeyConfig {
        kic_key: Some(&gw.kic_key),
        kid_key: Some(&gw.kid_key),
        kic_algorithm: defaults.kic_algorithm,
        kid_algorithm: defaults.kid_algorithm,
        cc_len: None,
    };
    let keys = Scp80Keys::resolve(&spi, 0x10, 0x10, &cfg).unwrap();
    let header = CommandHeader {
        spi,
        kic: KeyIdentifier(0x10),
        kid: KeyIdentifier(0x10),
        tar: TAR_RFM_GSM,
        counter: Counter::new(1).unwrap(),
    };
    let script = compact(vec![rfm::select_fid(CardClass::Gsm, 0x7F20)]);
    let packet = encode_command_packet(&header, &keys, &script).unwrap();
    let por = send(&fleet, &packet).unwrap();
    let d = ResponsePacketView::parse_sms(&por.user_data)
        .unwrap()
        .open(&spi, &keys, CcScope::SmsUdh)
        .unwrap();
    assert_eq!(
        (d.status, d.protection),
        (PorStatus::Ok, PorProtection::AsRequested)
    );
    // Without the defaults the card cannot tell the algorithm: 05 in clear.
    let plain = self::fleet();
    let por = send(&plain, &packet).unwrap();
    let d = ResponsePacketView::parse_sms(&por.user_data)
        .unwrap()
        .open(&spi, &keys, CcScope::SmsUdh)
        .unwrap();
    assert_eq!(
        (d.status, d.protection),
        (PorStatus::CipheringError, PorProtection::UnprotectedError)
    );
}

/// The BIP channel opening request of a push (the first PUSH APDU), to `destination`.
fn push_bip_apdu(destination: std::net::SocketAddr) -> Vec<u8> {
    use otagw_catp::push::{Bearer, BipOpenRequest, CatTpLinkRequest, PushRequest};
    let push = PushRequest {
        bip: BipOpenRequest {
            bearer: Bearer::default_bearer(),
            buffer_size: 1400,
            network_access_name: None,
            destination,
        },
        link: CatTpLinkRequest {
            destination_port: 4500,
            max_sdu_size: None,
            identification: Vec::new(),
        },
    };
    let b = push.encode().unwrap();
    b[..5 + usize::from(b[4])].to_vec()
}

/// The card reads the PUSH for CAT_TP link establishment (TS 102 226 clause 9.2.2) as
/// COMPREHENSION-TLVs, as real cards do: the raw octets otagw used to send (port 4500, max SDU
/// 65535) are refused with 6A80 and, with PoR on error (SPI 2 b2b1 = 10), a PoR saying so; the
/// TLV form is taken with or without the CR bit on its tags.
#[test]
fn push_is_read_strictly_as_comprehension_tlvs() {
    let fleet = fleet();
    let gw = Gateway::new(0x12, 0x12);
    let on_error = [0x16, 0x3A];
    let bip = push_bip_apdu("127.0.0.1:4500".parse().unwrap());

    let mut raw = bip.clone();
    raw.extend_from_slice(&hex::decode("80EC0102041194FFFF").unwrap());
    let packet = gw.packet(on_error, TAR_RAM_ISD, 1, &raw);
    let outcome = fleet.process(MSISDN, &packet).unwrap();
    assert!(outcome.push.is_none(), "{outcome:?}");
    assert_eq!((outcome.executed, outcome.last_sw), (2, Some(0x6A80)));
    let por = send(&fleet, &gw.packet(on_error, TAR_RAM_ISD, 2, &raw)).expect("PoR on error");
    let d = gw.open(on_error, &por);
    assert_eq!(d.status, PorStatus::Ok);
    let resp = parse_compact_response(&d.data).unwrap();
    assert_eq!((resp.executed, resp.last().unwrap().sw), (2, 0x6A80));

    // The TLV form, CR bit set on every tag (BC, B9, B6): taken, no PoR (none on success).
    let mut tlv = bip.clone();
    let link = hex::decode("BC03001194B902FFFFB603010203").unwrap();
    tlv.extend_from_slice(&[0x80, 0xEC, 0x01, 0x02, link.len() as u8]);
    tlv.extend_from_slice(&link);
    let outcome = fleet
        .process(MSISDN, &gw.packet(on_error, TAR_RAM_ISD, 3, &tlv))
        .unwrap();
    let push = outcome.push.expect("push taken");
    assert_eq!(push.link.destination_port, 4500);
    assert_eq!(push.link.max_sdu_size, Some(0xFFFF));
    assert_eq!(push.link.identification, vec![1, 2, 3]);
    assert!(outcome.por.is_none());
    // Clear CR bits: the same.
    let mut plain = bip;
    let link = hex::decode("3C030011943902FFFF3603010203").unwrap();
    plain.extend_from_slice(&[0x80, 0xEC, 0x01, 0x02, link.len() as u8]);
    plain.extend_from_slice(&link);
    let outcome = fleet
        .process(MSISDN, &gw.packet(on_error, TAR_RAM_ISD, 4, &plain))
        .unwrap();
    assert_eq!(outcome.push, Some(push));
}

/// The card's terminal opens the link with the identification of the push's `36` object in
/// its SYN (not the ICCID it would send by default).
#[tokio::test]
async fn the_syn_carries_the_pushed_identification() {
    use otagw::sim::catp_client::{CatpTerminals, TerminalSettings};
    use otagw_catp::pdu::{Pdu, VarPart};
    let fleet = std::sync::Arc::new(fleet());
    let terminals = CatpTerminals::new(fleet, TerminalSettings::default());
    let gateway = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let gw = Gateway::new(0x12, 0x12);
    let mut push = push_bip_apdu(gateway.local_addr().unwrap());
    let link = hex::decode("3C03001194360401020304").unwrap();
    push.extend_from_slice(&[0x80, 0xEC, 0x01, 0x02, link.len() as u8]);
    push.extend_from_slice(&link);
    let reply = terminals.command_packet(MSISDN, &gw.packet([0x16, 0x3A], TAR_RAM_ISD, 1, &push));
    assert!(matches!(reply, HandsetReply::Delivered { por: None }));
    let mut buf = [0u8; 1500];
    let (n, _) = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        gateway.recv_from(&mut buf),
    )
    .await
    .expect("a SYN")
    .unwrap();
    let syn = Pdu::decode(&buf[..n]).unwrap();
    assert_eq!(syn.dst_port, 4500);
    let VarPart::Syn(params) = syn.var else {
        panic!("not a SYN: {syn:?}")
    };
    assert_eq!(params.identification, vec![1, 2, 3, 4]);
}

/// The subscription management application (TAR 53 4D 41) through SCP80: a DOWNLOAD with
/// "enable now" and an AUDIT in one secured script; after the card's tick the switch is
/// notified, and EF IMSI (read back over RFM) holds the new IMSI in the TS 31.102 coding,
/// written out here by hand.
#[test]
fn subscription_download_enable_audit_over_scp80() {
    use otagw::sim::subscriptions::{EveryNetwork, SwitchOutcome, TAR_SUBSCRIPTIONS};
    let fleet = fleet();
    let gw = Gateway::new(0x15, 0x15);
    let imsi = "262011234567899";
    let mut download = vec![0x80, 0x01, 0x02, 0x81, 0x0F];
    download.extend_from_slice(imsi.as_bytes());
    download.extend_from_slice(&[0x86, 0x01, 0x01]);
    let cmds = vec![
        CApdu::new(0x80, 0xE2, 0, 0, download, None).unwrap(),
        CApdu::new(0x80, 0xEA, 0, 0, Vec::new(), Some(0)).unwrap(),
    ];
    let por = send(
        &fleet,
        &gw.packet(SPI_FULL, TAR_SUBSCRIPTIONS, 1, &compact(cmds)),
    )
    .unwrap();
    let decoded = gw.open(SPI_FULL, &por);
    assert_eq!(decoded.status, PorStatus::Ok);
    assert_eq!(decoded.tar, TAR_SUBSCRIPTIONS);
    let resp = parse_compact_response(&decoded.data).unwrap();
    assert_eq!((resp.executed, resp.last().unwrap().sw), (2, 0x9000));
    let audit = hex::encode_upper(&resp.last().unwrap().data);
    // The factory subscription 1 (disabled, fallback, bootstrap), then 2 enabled.
    assert!(
        audit.starts_with(&format!(
            "A01A800101810F{}870100860106",
            hex::encode_upper("262011234567890")
        )),
        "{audit}"
    );
    assert!(
        audit.contains(&format!(
            "A01A800102810F{}870101860100",
            hex::encode_upper(imsi)
        )),
        "{audit}"
    );
    assert!(audit.contains("880102890106"), "{audit}");

    let notes = fleet
        .with_card(MSISDN, |c| c.tick_subscriptions(5_000, &EveryNetwork))
        .unwrap();
    assert_eq!(notes.len(), 1);
    assert_eq!(
        (notes[0].seq, notes[0].outcome, notes[0].enabled),
        (1, SwitchOutcome::Switched, 2)
    );

    let g = CardClass::Gsm;
    let mut cmds = rfm::select_path(g, &[0x7F20, 0x6F07]);
    cmds.push(rfm::read_binary(g, 0, 9).unwrap());
    let por = send(&fleet, &gw.packet(SPI_FULL, TAR_RFM_GSM, 2, &compact(cmds))).unwrap();
    let resp = parse_compact_response(&gw.open(SPI_FULL, &por).data).unwrap();
    assert_eq!(resp.last().unwrap().sw, 0x9000);
    // Length 8; parity nibble 9 (odd digit count) then 262011234567899, nibbles swapped.
    assert_eq!(
        hex::encode_upper(&resp.last().unwrap().data),
        "082926102143658799"
    );
}

/// The fleet moves every card's subscription application on: a switch to an IMSI the network
/// refuses rolls back when the attach timeout passes, and the notification comes out with the
/// card's MSISDN; a card that never used the application has nothing to say.
#[test]
fn fleet_ticks_subscriptions_and_a_refused_switch_rolls_back() {
    use otagw::sim::subscriptions::{
        SeededNetwork, SwitchOutcome, DEFAULT_ATTACH_TIMEOUT_MS, TAR_SUBSCRIPTIONS,
    };
    let fleet = fleet();
    let gw = Gateway::new(0x15, 0x15);
    let refused = "262019999999999";
    let mut download = vec![0x80, 0x01, 0x02, 0x81, 0x0F];
    download.extend_from_slice(refused.as_bytes());
    download.extend_from_slice(&[0x86, 0x01, 0x01]);
    let cmds = vec![CApdu::new(0x80, 0xE2, 0, 0, download, None).unwrap()];
    let por = send(
        &fleet,
        &gw.packet(SPI_FULL, TAR_SUBSCRIPTIONS, 1, &compact(cmds)),
    )
    .unwrap();
    assert_eq!(gw.open(SPI_FULL, &por).status, PorStatus::Ok);
    let net = SeededNetwork {
        refused: [refused.to_string()].into_iter().collect(),
        ..SeededNetwork::default()
    };
    assert!(
        fleet.tick_subscriptions(1_000, &net).is_empty(),
        "waiting for the attach"
    );
    let due = fleet.tick_subscriptions(DEFAULT_ATTACH_TIMEOUT_MS, &net);
    assert_eq!(due.len(), 1, "{due:?}");
    assert_eq!(due[0].0, MSISDN);
    assert_eq!(
        (due[0].1.outcome, due[0].1.enabled, due[0].1.imsi.as_str()),
        (SwitchOutcome::RolledBack, 1, "262011234567890")
    );
}

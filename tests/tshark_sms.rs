//! An independent check of the SMS-PP framing: the SMS-DELIVER TPDUs the gateway's command
//! packets travel in (TS 23.040, UDH per TS 31.115) are written into a pcap file (user DLT 147)
//! and tshark's GSM SMS dissector must read every field as we meant it, including the
//! concatenation header of each segment (8-bit and 16-bit references), and must reassemble the
//! segments into our command packet, octet for octet.
//! tshark is installed by `.ci/run` (Debian package `tshark`).

use std::io::Write;
use std::process::Command;

use otagw::security::command::encode_command_packet;
use otagw::security::*;
use otagw_catp::pcap::{write_frames, LINKTYPE_USER0};
use otagw_sms::{
    split_packet, Address, ConcatReference, DataCodingScheme, PacketKind, SmsDeliver, SmsSubmit,
    UserData, ValidityPeriod,
};

/// User DLT 147 handed to tshark's `gsm_sms` dissector (TPDUs from the network to the MS).
const TO_MS: &str = r#"uat:user_dlts:"User 0 (DLT=147)","gsm_sms","0","","0","""#;
/// User DLT 147 handed to `gsm_a_rp`: RP-DATA, whose message type tells the TPDU's direction.
const RP: &str = r#"uat:user_dlts:"User 0 (DLT=147)","gsm_a_rp","0","","0","""#;

/// What tshark prints for `tpdus` with `args`.
fn tshark(tpdus: &[Vec<u8>], args: &[&str]) -> String {
    tshark_as(TO_MS, tpdus, args)
}

fn tshark_as(dlt: &str, tpdus: &[Vec<u8>], args: &[&str]) -> String {
    // One file per call: the tests run in parallel in one process.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("otagw-tshark-sms-{}-{call}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("sms.pcap");
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(&write_frames(LINKTYPE_USER0, tpdus)))
        .expect("pcap written");
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&path)
        .args(["-o", dlt])
        .args(args)
        .output()
        .expect("tshark runs (installed by .ci/run)");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// tshark's `-T fields` output for `tpdus`: a row per frame.
fn fields(tpdus: &[Vec<u8>], fields: &[&str]) -> Vec<Vec<String>> {
    fields_as(TO_MS, tpdus, fields)
}

fn fields_as(dlt: &str, frames: &[Vec<u8>], fields: &[&str]) -> Vec<Vec<String>> {
    let mut args = vec!["-T", "fields", "-E", "separator=|"];
    for f in fields {
        args.extend(["-e", f]);
    }
    tshark_as(dlt, frames, &args)
        .lines()
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect()
}

/// A 3DES-secured RFM command packet of `data_len` octets of APDUs.
fn command_packet(data_len: usize) -> Vec<u8> {
    let kic_key = (0u8..16).collect::<Vec<_>>();
    let kid_key = (16u8..32).collect::<Vec<_>>();
    let spi = Spi::from_bytes([0x16, 0x39]);
    let keys = Scp80Keys::resolve(
        &spi,
        0x15,
        0x15,
        &KeyConfig {
            kic_key: Some(&kic_key),
            kid_key: Some(&kid_key),
            ..Default::default()
        },
    )
    .expect("keys");
    let header = CommandHeader {
        spi,
        kic: KeyIdentifier(0x15),
        kid: KeyIdentifier(0x15),
        tar: [0xB0, 0x00, 0x10],
        counter: Counter::new(0x0102).expect("counter"),
    };
    let data: Vec<u8> = (0..data_len).map(|i| (i * 7) as u8).collect();
    encode_command_packet(&header, &keys, &data).expect("packet")
}

fn deliver_tpdus(packet: &[u8], reference: ConcatReference) -> Vec<Vec<u8>> {
    let oa = Address::international("491720000001").expect("address");
    split_packet(PacketKind::Command, packet, reference)
        .expect("split")
        .into_iter()
        .map(|ud| {
            SmsDeliver::sim_data_download(
                oa.clone(),
                [0x62, 0x11, 0x12, 0x10, 0x00, 0x00, 0x00],
                ud,
            )
            .encode()
            .expect("tpdu")
        })
        .collect()
}

const FIELDS: &[&str] = &[
    "gsm_sms.tp-mti",
    "gsm_sms.tp-udhi",
    "gsm_sms.tp-oa",
    "gsm_sms.tp-pid",
    "gsm_sms.tp-dcs",
    "gsm_sms.udh.mm.msg_id",
    "gsm_sms.udh.mm.msg_parts",
    "gsm_sms.udh.mm.msg_part",
];

#[test]
fn tshark_reads_our_sms_deliver_tpdus_and_reassembles_the_command_packet() {
    let packet = command_packet(400);
    for (reference, id) in [
        (ConcatReference::EightBit(0x5A), "90"),
        (ConcatReference::SixteenBit(0x1234), "4660"),
    ] {
        let tpdus = deliver_tpdus(&packet, reference);
        assert!(tpdus.len() >= 3, "{} segments", tpdus.len());
        let rows = fields(&tpdus, FIELDS);
        assert_eq!(rows.len(), tpdus.len(), "{rows:?}");
        let parts = tpdus.len().to_string();
        for (i, row) in rows.iter().enumerate() {
            let part = (i + 1).to_string();
            // SMS-DELIVER with a UDH, from +491720000001, PID 7F (SIM data download), DCS F6.
            assert_eq!(
                row,
                &vec![
                    "0",
                    "1",
                    "491720000001",
                    "127",
                    "246",
                    id,
                    parts.as_str(),
                    part.as_str()
                ],
                "segment {part} of {reference:?}"
            );
        }

        // Only the first segment carries the command packet IE (70, TS 31.115 clause 4.2).
        let text = tshark(&tpdus, &["-V"]);
        let lines: Vec<&str> = text.lines().collect();
        let frames: Vec<&[&str]> = lines
            .split(|l| l.starts_with("Frame ") && l.contains(" bytes on wire"))
            .skip(1)
            .collect();
        assert_eq!(frames.len(), tpdus.len());
        for (i, frame) in frames.iter().enumerate() {
            let has_cpi = frame
                .iter()
                .any(|l| l.contains("(U)SIM Toolkit Security Headers"));
            assert_eq!(has_cpi, i == 0, "segment {}: {frame:?}", i + 1);
        }

        // tshark's reassembly gives back our packet, octet for octet: the UDH of each segment
        // (70 on the first, the concatenation IE on all) is not part of it.
        let bodies = tshark(&tpdus, &["-T", "fields", "-e", "gsm_sms.sms_body"]);
        let whole = hex::encode(&packet);
        assert!(
            bodies
                .lines()
                .flat_map(|l| l.split(','))
                .any(|b| b == whole),
            "no reassembled body equals the packet ({reference:?}): {bodies}"
        );
    }
}

/// The card's PoR as the handset sends it: SMS-SUBMIT, PID 7F, DCS F6, UDH 02 71 00.
#[test]
fn tshark_reads_our_por_sms_submit() {
    let por = hex::decode("000e0ab000100000000102000090000111").expect("hex");
    let ud = split_packet(PacketKind::Response, &por, ConcatReference::EightBit(1))
        .expect("one SMS")
        .remove(0);
    let tpdu = SmsSubmit {
        reject_duplicates: false,
        status_report_request: false,
        user_data_header_indicator: true,
        reply_path: false,
        message_reference: 0x2A,
        destination_address: Address::international("4930123").expect("address"),
        protocol_identifier: 0x7F,
        data_coding_scheme: DataCodingScheme(0xF6),
        validity_period: ValidityPeriod::None,
        user_data: UserData::Octets(ud),
    }
    .encode()
    .expect("tpdu");
    // RP-DATA from the MS (TS 24.011 clause 7.3.1.2): type 00, RP-MR, no RP-OA, RP-DA (the
    // service centre, +49171), RP-User-Data = the TPDU.
    let mut rp_data = vec![0x00, 0x07, 0x00, 0x04, 0x91, 0x94, 0x71, 0xF1];
    rp_data.push(u8::try_from(tpdu.len()).expect("short TPDU"));
    rp_data.extend_from_slice(&tpdu);
    let rows = fields_as(
        RP,
        &[rp_data],
        &[
            "gsm_sms.tp-mti",
            "gsm_sms.tp-udhi",
            "gsm_sms.tp-mr",
            "gsm_sms.tp-da",
            "gsm_sms.tp-pid",
            "gsm_sms.tp-dcs",
            "gsm_sms.sms_body",
        ],
    );
    let por_hex = hex::encode(&por);
    assert_eq!(
        rows,
        vec![vec![
            "1",
            "1",
            "42",
            "4930123",
            "127",
            "246",
            por_hex.as_str()
        ]]
    );
}

/// A card's subscription notification as its handset sends it (SMS-SUBMIT, UDH `02 70 00`:
/// a card-originated command packet): tshark reads the command packet identifier and gives
/// back our packet from the user data; its clear header fields (SPI, KIc, KID, TAR) are
/// where TS 31.115 / TS 102 225 put them.
#[test]
fn tshark_reads_a_card_notification_sms_submit() {
    use otagw::script::subscription::{Notification, SwitchOutcome};
    let fleet = otagw::sim::Fleet::generate(1, 7, otagw::devkit::fleet_defaults()).expect("fleet");
    let msisdn = fleet.msisdn_at(0).expect("card");
    let n = Notification {
        seq: 3,
        outcome: SwitchOutcome::RolledBack,
        enabled: 1,
        imsi: "262010000000000".into(),
    };
    let ud = fleet
        .with_card(&msisdn, |c| c.notification_user_data(&n))
        .flatten()
        .expect("notification");
    assert_eq!(ud[..3], [0x02, 0x70, 0x00]);
    let packet = &ud[3..];
    let tpdu = SmsSubmit {
        reject_duplicates: false,
        status_report_request: false,
        user_data_header_indicator: true,
        reply_path: false,
        message_reference: 0x2B,
        destination_address: Address::international("4930123").expect("address"),
        protocol_identifier: 0x7F,
        data_coding_scheme: DataCodingScheme(0xF6),
        validity_period: ValidityPeriod::None,
        user_data: UserData::Octets(ud.clone()),
    }
    .encode()
    .expect("tpdu");
    let mut rp_data = vec![0x00, 0x08, 0x00, 0x04, 0x91, 0x94, 0x71, 0xF1];
    rp_data.push(u8::try_from(tpdu.len()).expect("short TPDU"));
    rp_data.extend_from_slice(&tpdu);
    let text = tshark_as(RP, &[rp_data.clone()], &["-V"]);
    assert!(
        text.contains("(U)SIM Toolkit Security Headers"),
        "no command packet IE: {text}"
    );
    let rows = fields_as(
        RP,
        &[rp_data],
        &[
            "gsm_sms.tp-mti",
            "gsm_sms.tp-udhi",
            "gsm_sms.tp-pid",
            "gsm_sms.sms_body",
        ],
    );
    let body = hex::encode(packet);
    assert_eq!(rows, vec![vec!["1", "1", "127", body.as_str()]]);
    // CPL, CHL, SPI 0E 00, KIc 12 / KID 12 (key version 1, AES), TAR 534D41, in the clear.
    assert_eq!(
        usize::from(u16::from_be_bytes([packet[0], packet[1]])),
        packet.len() - 2
    );
    assert_eq!(packet[2], 0x15, "CHL: 13 + an 8-octet CC");
    assert_eq!(packet[3..10], [0x0E, 0x00, 0x12, 0x12, 0x53, 0x4D, 0x41]);
}

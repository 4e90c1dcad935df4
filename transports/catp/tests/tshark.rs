//! An independent check of our bytes: PDUs from a real exchange (and hand-built ones) are written
//! into a pcap file as UDP/IPv4 payloads, and tshark's CAT_TP dissector (heuristic `cattp_udp`)
//! must read every field as we meant it and report every checksum good (and a corrupted one bad).
//! tshark is installed by `.ci/run` (Debian package `tshark`).

use std::io::Write;
use std::process::Command;
use std::time::Instant;

use otagw_catp::pcap::{Captured, LINKTYPE_USER0};
use otagw_catp::pdu::{iccid_to_identification, reason, Flags, Pdu, SynParams, VarPart};
use otagw_catp::{Config, Connection, Event, Server};

/// The pcap file of `packets` (card side 10.0.0.2:40000, gateway 10.0.0.1:45000).
fn pcap(packets: &[(bool, Vec<u8>)]) -> Vec<u8> {
    let card: std::net::SocketAddr = "10.0.0.2:40000".parse().unwrap();
    let gateway: std::net::SocketAddr = "10.0.0.1:45000".parse().unwrap();
    let captured: Vec<Captured> = packets
        .iter()
        .map(|(from_card, payload)| {
            let (from, to) = if *from_card {
                (card, gateway)
            } else {
                (gateway, card)
            };
            Captured {
                from,
                to,
                payload: payload.clone(),
            }
        })
        .collect();
    otagw_catp::pcap::write(&captured)
}

const FIELDS: &[&str] = &[
    "cattp.flags.syn",
    "cattp.flags.ack",
    "cattp.flags.eak",
    "cattp.flags.rst",
    "cattp.flags.nul",
    "cattp.flags.seg",
    "cattp.version",
    "cattp.hlen",
    "cattp.srcport",
    "cattp.dstport",
    "cattp.datalen",
    "cattp.seq",
    "cattp.ack",
    "cattp.windowsize",
    "cattp.checksum",
    "cattp.checksum.status",
    "cattp.maxpdu",
    "cattp.maxsdu",
    "cattp.idlen",
    "cattp.identification",
    "cattp.iccid",
    "cattp.rc",
    "cattp.eaks",
    "cattp.eak",
];

/// What tshark should print for `bytes`, field by field, from our own decoder.
fn expected(bytes: &[u8], checksum_good: bool) -> Vec<String> {
    let p = Pdu::decode_unchecked(bytes).unwrap();
    let flag = |f: Flags| if p.flags.contains(f) { "1" } else { "0" }.to_string();
    let mut v = vec![
        flag(Flags::SYN),
        flag(Flags::ACK),
        flag(Flags::EAK),
        flag(Flags::RST),
        flag(Flags::NUL),
        flag(Flags::SEG),
        // BASE_HEX fields print as 0x.. with -T fields
        format!("0x{:02x}", p.version),
        bytes[3].to_string(),
        p.src_port.to_string(),
        p.dst_port.to_string(),
        p.data.len().to_string(),
        p.seq.to_string(),
        p.ack.to_string(),
        p.window.to_string(),
        format!("0x{:04x}", u16::from_be_bytes([bytes[16], bytes[17]])),
        // proto_checksum_vals: 0 bad, 1 good
        if checksum_good { "1" } else { "0" }.to_string(),
    ];
    match &p.var {
        VarPart::Syn(s) => {
            v.push(s.max_pdu_size.to_string());
            v.push(s.max_sdu_size.to_string());
            v.push(s.identification.len().to_string());
            v.push(hex::encode(&s.identification));
            // The dissector shows a 9 or 10 octet identification starting 0x98 as an ICCID
            // (nibbles swapped, F padding kept).
            let iccid = if (9..=10).contains(&s.identification.len()) && s.identification[0] == 0x98
            {
                s.identification
                    .iter()
                    .map(|b| format!("{:02X}", b.rotate_left(4)))
                    .collect()
            } else {
                String::new()
            };
            v.push(iccid);
            v.extend(["", "", ""].map(String::from));
        }
        VarPart::Eak(list) => {
            v.extend(["", "", "", "", "", ""].map(String::from));
            v.push(list.len().to_string());
            v.push(
                list.iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        VarPart::Rst(r) => {
            v.extend(["", "", "", "", ""].map(String::from));
            v.push(r.to_string());
            v.extend(["", ""].map(String::from));
        }
        VarPart::None => v.extend(["", "", "", "", "", "", "", ""].map(String::from)),
    }
    v
}

/// A real exchange between our client and server: handshake, segmented data both ways,
/// reordering (EAK), NUL keep-alive, RST. Returns (from card?, bytes) in wire order.
fn exchange() -> Vec<(bool, Vec<u8>)> {
    let t0 = Instant::now();
    let card_cfg = Config {
        max_pdu_size: 100,
        max_sdu_size: 4000,
        window: 5,
        identification: iccid_to_identification("8944110063000000017").unwrap(),
        keepalive: None,
        ..Config::default()
    };
    let srv_cfg = Config {
        max_pdu_size: 300,
        window: 7,
        keepalive: Some(std::time::Duration::from_secs(5)),
        ..Config::default()
    };
    let mut card = Connection::connect(card_cfg, 0x1001, 0x0BB8, 65000);
    let mut srv: Server<u8> = Server::new(srv_cfg, 4, 500);
    let mut wire = Vec::new();
    let mut step = |card: &mut Connection, srv: &mut Server<u8>, now, hold: &mut Vec<Vec<u8>>| {
        let mut quiet = false;
        while !quiet {
            quiet = true;
            while let Some(b) = card.poll_transmit(now) {
                quiet = false;
                wire.push((true, b.clone()));
                srv.handle_datagram(now, 1, &b);
            }
            while let Some((_, b)) = srv.poll_transmit(now) {
                quiet = false;
                wire.push((false, b.clone()));
                hold.push(b);
            }
            // Deliver what the server sent to the card, in reverse order (reordering -> EAK).
            // The card answers after each PDU, so the early gaps show up as EAKs.
            while let Some(b) = hold.pop() {
                let _ = card.handle_pdu(now, &b);
                while let Some(b) = card.poll_transmit(now) {
                    wire.push((true, b.clone()));
                    srv.handle_datagram(now, 1, &b);
                }
            }
            while srv.poll_event().is_some() {}
        }
    };
    let mut hold = Vec::new();
    step(&mut card, &mut srv, t0, &mut hold);
    assert!(matches!(card.state(), otagw_catp::State::Open));
    srv.send(&1, &[0x5A; 600]).unwrap();
    card.send(&[0xA5; 150]).unwrap();
    step(&mut card, &mut srv, t0, &mut hold);
    let t1 = srv.poll_timeout().unwrap();
    srv.handle_timeout(t1);
    step(&mut card, &mut srv, t1, &mut hold);
    let ev = card.close(reason::NORMAL);
    assert!(matches!(ev, Some(Event::Closed(_))));
    step(&mut card, &mut srv, t1, &mut hold);
    wire
}

#[test]
fn tshark_dissects_our_pdus_as_meant() {
    let mut packets = exchange();
    let kinds = |f: Flags| {
        packets
            .iter()
            .filter(|(_, b)| Pdu::decode(b).unwrap().flags.contains(f))
            .count()
    };
    for f in [Flags::SYN, Flags::EAK, Flags::NUL, Flags::SEG, Flags::RST] {
        assert!(kinds(f) > 0, "exchange has no {f:?} PDU");
    }
    // Hand-built ones: a SYN with a non-ICCID identification, RST with reason 5, max-size EAK.
    for p in [
        Pdu {
            flags: Flags::SYN,
            src_port: 1,
            dst_port: 2,
            seq: 3,
            window: 1,
            var: VarPart::Syn(SynParams {
                max_pdu_size: 65535,
                max_sdu_size: 1,
                identification: b"abc".to_vec(),
            }),
            ..Pdu::default()
        },
        Pdu {
            flags: Flags::RST,
            var: VarPart::Rst(reason::MAX_RETRIES),
            ..Pdu::default()
        },
        Pdu {
            flags: Flags::ACK | Flags::EAK,
            seq: 65535,
            ack: 65534,
            window: 65535,
            var: VarPart::Eak((0..118).collect()),
            ..Pdu::default()
        },
        Pdu {
            flags: Flags::ACK,
            data: vec![0xFF; 1], // odd length: checksum pads with zero
            ..Pdu::default()
        },
    ] {
        packets.push((true, p.encode().unwrap()));
    }
    // A corrupted PDU: the dissector must call its checksum bad.
    let mut bad = packets[0].1.clone();
    bad[12] ^= 0x01;
    packets.push((true, bad));
    let n = packets.len();

    let dir = std::env::temp_dir().join(format!("otagw-catp-tshark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("catp.pcap");
    std::fs::File::create(&file)
        .unwrap()
        .write_all(&pcap(&packets))
        .unwrap();
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(&file)
        .args(["--enable-heuristic", "cattp_udp", "-T", "fields"])
        .args([
            "-E",
            "separator=|",
            "-E",
            "occurrence=a",
            "-E",
            "aggregator=,",
        ]);
    for f in FIELDS {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("tshark runs (installed by .ci/run)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), n, "one line per packet:\n{stdout}");
    for (i, ((_, bytes), line)) in packets.iter().zip(&lines).enumerate() {
        let got: Vec<&str> = line.split('|').collect();
        let want = expected(bytes, i + 1 != n);
        assert_eq!(
            got,
            want,
            "packet {} ({:?}) as tshark reads it",
            i + 1,
            Pdu::decode_unchecked(bytes).unwrap().flags
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The PUSH for BIP channel opening carries the OPEN CHANNEL data objects the card replays to
/// its terminal (TS 102 226 clause 9.2.1). tshark's CAT dissector (`etsi_cat`, fed through a
/// user DLT) reads them, behind the command details and device identities the card adds, as
/// we meant: bearer, buffer size, APN, transport level and destination address. The PUSH for
/// CAT_TP link establishment (clause 9.2.2) carries COMPREHENSION-TLVs too, which the same
/// dissector reads behind the same header: transport level (the port), buffer size (the max
/// SDU) and channel data (the identification).
#[test]
fn tshark_reads_the_push_open_channel_objects_as_meant() {
    use otagw_catp::push::{apn_labels, Bearer, BipOpenRequest, CatTpLinkRequest, PushRequest};
    let push = |destination: &str| PushRequest {
        bip: BipOpenRequest {
            bearer: Bearer {
                bearer_type: 0x02,
                parameters: vec![0x00, 0x00, 0x03, 0x00, 0x00, 0x02],
            },
            buffer_size: 1400,
            network_access_name: Some(apn_labels("fleet.example").unwrap()),
            destination: destination.parse().unwrap(),
        },
        link: CatTpLinkRequest {
            destination_port: 4500,
            max_sdu_size: Some(4096),
            identification: otagw_catp::pdu::iccid_to_identification("8949000000000000001")
                .unwrap(),
        },
    };
    let mut records = Vec::new();
    let mut links = Vec::new();
    for p in [push("198.51.100.7:4600"), push("[2001:db8::7]:4601")] {
        let script = p.encode().unwrap();
        // The first APDU: 80 EC 01 01 Lc, then its data.
        assert_eq!(&script[..4], &[0x80, 0xEC, 0x01, 0x01]);
        let data = &script[5..5 + usize::from(script[4])];
        // Command details (OPEN CHANNEL, immediate link) and device identities (UICC to terminal).
        let mut open_channel = hex::decode("810301400182028182").unwrap();
        open_channel.extend_from_slice(data);
        records.push(open_channel);
        // The second: 80 EC 01 02 Lc, then its data, behind the same header.
        let second = &script[5 + data.len()..];
        assert_eq!(&second[..4], &[0x80, 0xEC, 0x01, 0x02]);
        assert_eq!(second.len(), 5 + usize::from(second[4]));
        let mut link = hex::decode("810301400182028182").unwrap();
        link.extend_from_slice(&second[5..]);
        links.push(link);
    }
    records.extend(links);
    let f = otagw_catp::pcap::write_frames(LINKTYPE_USER0, &records);
    let dir = std::env::temp_dir().join(format!("otagw-push-tshark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("open_channel.pcap");
    std::fs::File::create(&file).unwrap().write_all(&f).unwrap();
    let user_dlt = r#"uat:user_dlts:"User 0 (DLT=147)","etsi_cat","0","","0","""#;
    let fields = [
        "etsi_cat.comp_tlv.cmd_type",
        "etsi_cat.comp_tlv.bearer.descr",
        "etsi_cat.comp_tlv.bearer.gprs.reliability",
        "etsi_cat.comp_tlv.bearer.gprs.prot_type",
        "etsi_cat.comp_tlv.buffer_size",
        "etsi_cat.comp_tlv.transport.ptype",
        "etsi_cat.comp_tlv.transport.port",
        "etsi_cat.comp_tlv.other_address.coding",
        "etsi_cat.comp_tlv.other_address.ipv4",
        "etsi_cat.comp_tlv.other_address.ipv6",
    ];
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(&file)
        .args(["-o", user_dlt, "-T", "fields", "-E", "separator=|"]);
    for field in fields {
        cmd.args(["-e", field]);
    }
    let out = cmd.output().expect("tshark runs (installed by .ci/run)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        lines,
        vec![
            "0x40|0x02|3|2|1400|0x01|4600|0x21|198.51.100.7|".to_string(),
            "0x40|0x02|3|2|1400|0x01|4601|0x57||2001:db8::7".to_string(),
            // Port 4500 behind protocol type 00 (only the port counts there), max SDU 4096.
            "0x40||||4096|0x00|4500|||".to_string(),
            "0x40||||4096|0x00|4500|||".to_string(),
        ]
    );
    // The APN has no field of its own: the dissector's text.
    let verbose = Command::new("tshark")
        .arg("-r")
        .arg(&file)
        .args(["-o", user_dlt, "-V"])
        .output()
        .expect("tshark runs");
    let text = String::from_utf8_lossy(&verbose.stdout);
    assert_eq!(text.matches("APN: fleet.example").count(), 2, "{text}");
    // Nor has the channel data (the identification, the ICCID as swapped-nibble BCD).
    assert_eq!(
        text.matches("Channel data: 989400000000000000f1").count(),
        2,
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

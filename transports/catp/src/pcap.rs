//! A capture file of CAT_TP datagrams (pcap, LINKTYPE_RAW, IPv4/UDP), so that tools such as
//! tshark (`--enable-heuristic cattp_udp`) can read what went over a link. Sans-IO: bytes out.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// One datagram as captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub payload: Vec<u8>,
}

fn v4(a: &SocketAddr) -> [u8; 4] {
    match a.ip() {
        IpAddr::V4(ip) => ip.octets(),
        // IPv6 peers are written with a placeholder IPv4 address (the UDP ports are kept).
        IpAddr::V6(_) => Ipv4Addr::new(192, 0, 2, 1).octets(),
    }
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

/// LINKTYPE_RAW: each record is an IP packet.
pub const LINKTYPE_RAW: u32 = 101;
/// LINKTYPE_USER0 (DLT 147): records a reader maps to a dissector of its choosing (tshark:
/// `-o uat:user_dlts:...`).
pub const LINKTYPE_USER0: u32 = 147;

/// A pcap file (pcap 2.4, microsecond timestamps one second apart from an arbitrary epoch)
/// whose records are `frames`, as they are, of link type `linktype`.
pub fn write_frames<F: AsRef<[u8]>>(linktype: u32, frames: &[F]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes()); // magic, microsecond timestamps
    f.extend_from_slice(&2u16.to_le_bytes()); // version 2.4
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&0i32.to_le_bytes()); // thiszone
    f.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
    f.extend_from_slice(&65535u32.to_le_bytes()); // snaplen
    f.extend_from_slice(&linktype.to_le_bytes());
    for (i, frame) in frames.iter().enumerate() {
        let frame = frame.as_ref();
        f.extend_from_slice(&(1_700_000_000u32 + i as u32).to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes());
        f.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        f.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        f.extend_from_slice(frame);
    }
    f
}

/// The pcap file (LINKTYPE_RAW) holding `packets` in order, each as an IPv4/UDP packet.
/// Datagrams longer than an IPv4 packet can say are cut.
pub fn write(packets: &[Captured]) -> Vec<u8> {
    let frames: Vec<Vec<u8>> = packets
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let payload = &p.payload[..p.payload.len().min(65_535 - 28)];
            let udp_len = 8 + payload.len();
            let total = 20 + udp_len;
            let mut ip = vec![
                0x45,
                0,
                (total >> 8) as u8,
                total as u8,
                (i >> 8) as u8,
                i as u8,
                0x40,
                0,
                64,
                17,
                0,
                0,
            ];
            ip.extend_from_slice(&v4(&p.from));
            ip.extend_from_slice(&v4(&p.to));
            let ck = ipv4_checksum(&ip);
            ip[10..12].copy_from_slice(&ck.to_be_bytes());
            ip.extend_from_slice(&p.from.port().to_be_bytes());
            ip.extend_from_slice(&p.to.port().to_be_bytes());
            ip.extend_from_slice(&(udp_len as u16).to_be_bytes());
            ip.extend_from_slice(&[0, 0]); // no UDP checksum (allowed over IPv4)
            ip.extend_from_slice(payload);
            ip
        })
        .collect();
    write_frames(LINKTYPE_RAW, &frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_layout() {
        let f = write(&[Captured {
            from: "127.0.0.1:1000".parse().unwrap(),
            to: "127.0.0.2:2000".parse().unwrap(),
            payload: vec![1, 2, 3],
        }]);
        assert_eq!(f.len(), 24 + 16 + 20 + 8 + 3);
        let ip = &f[40..];
        assert_eq!(ip[0], 0x45);
        assert_eq!(&ip[12..16], &[127, 0, 0, 1]);
        assert_eq!(
            ipv4_checksum(&ip[..20]),
            0,
            "header sums to zero with its checksum"
        );
        assert_eq!(&ip[20..22], &1000u16.to_be_bytes());
        assert_eq!(&ip[28..], &[1, 2, 3]);
    }
}

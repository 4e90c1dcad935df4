//! Administration session triggering parameters (GP Amendment B, table 3-3 and section 3.8).
//!
//! ```text
//! 81 L                              administration session triggering parameters
//!    83 L                           administration session parameters
//!       84 L  <OPEN CHANNEL TLVs>   connection parameters (TS 102 223 simple TLVs)
//!       85 L  Lid <PSK identity> 02 <key version> <key id>     security parameters
//!       86 L  <retry counter:2> <timer value TLV 25 03 hh mm ss> [retry report failure]
//!       89 L  8A host, 8B agent id, 8C URI                     HTTP POST parameters
//!    B3 L  ...                      DNS resolution parameters (kept as raw bytes)
//! ```
//!
//! Checked against osmocom pySim `pySim/global_platform/http.py` (tags 81/83/84/85/86/89/8A/8B/8C
//! and B3, the 85 layout `len psk_id 02 kvn kid`, the 86 layout `counter(2) delay(5) [report]`)
//! and a public Java SCP81 session-parameter builder (the retry delay as a CAT timer value TLV
//! `25 03` with swapped-nibble BCD hours/minutes/seconds; the 84 content as OPEN CHANNEL TLVs:
//! bearer description, buffer size, network access name, transport level, other address).

/// Errors decoding trigger parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriggerError {
    #[error("truncated TLV")]
    Truncated,
    #[error("unexpected tag {0:#04x} (expected {1:#04x})")]
    UnexpectedTag(u8, u8),
    #[error("bad length encoding")]
    Length,
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error("{0} is not UTF-8")]
    NotText(&'static str),
    #[error("{0} too long to encode")]
    TooLong(&'static str),
}

/// Tag 85: the PSK-TLS identity and the SCP81 key (key versions 0x40-0x4F).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityParams {
    pub psk_identity: Vec<u8>,
    pub key_version: u8,
    pub key_id: u8,
    /// Optional trailing octet some profiles carry (pySim calls it `sha_type`).
    pub extra: Option<u8>,
}

/// CAT timer value (TS 102 223 section 8.38): hours, minutes, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerValue {
    pub hours: u8,
    pub minutes: u8,
    pub seconds: u8,
}

impl TimerValue {
    pub fn from_secs(secs: u32) -> Option<TimerValue> {
        let hours = secs / 3600;
        (hours <= 99).then_some(TimerValue {
            hours: hours as u8,
            minutes: ((secs / 60) % 60) as u8,
            seconds: (secs % 60) as u8,
        })
    }

    pub fn as_secs(&self) -> u32 {
        u32::from(self.hours) * 3600 + u32::from(self.minutes) * 60 + u32::from(self.seconds)
    }
}

/// Tag 86: how often and how long apart the card retries opening the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub retry_counter: u16,
    pub retry_waiting_delay: TimerValue,
    /// Retry report failure (optional, kept as raw bytes).
    pub report_failure: Option<Vec<u8>>,
}

/// Tag 89: where and as whom the card POSTs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpParams {
    /// 8A administration host (the HTTP `Host` header).
    pub host: Option<String>,
    /// 8B agent id (the card's `X-Admin-From`).
    pub agent_id: Option<String>,
    /// 8C administration URI (the first POST's target).
    pub uri: Option<String>,
}

/// Tag 81 content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerParams {
    /// 84: OPEN CHANNEL simple TLVs, as bytes (build them with [`ConnectionParams`]).
    pub connection: Option<Vec<u8>>,
    pub security: Option<SecurityParams>,
    pub retry: Option<RetryPolicy>,
    pub http: Option<HttpParams>,
    /// B3 DNS resolution parameters, raw content.
    pub dns: Option<Vec<u8>>,
}

/// A helper for the common 84 content: TCP client mode over the default bearer to an IPv4
/// address, as OPEN CHANNEL simple TLVs (TS 102 223 section 6.6.27 and 8.52/8.55/8.59/8.70/8.58).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionParams {
    pub buffer_size: u16,
    pub apn: Option<String>,
    pub port: u16,
    pub ipv4: [u8; 4],
}

impl ConnectionParams {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // 35 bearer description: 03 = default bearer for the requested transport layer.
        out.extend_from_slice(&[0x35, 0x01, 0x03]);
        // 39 buffer size.
        out.extend_from_slice(&[0x39, 0x02]);
        out.extend_from_slice(&self.buffer_size.to_be_bytes());
        // 47 network access name, as DNS labels (TS 23.003).
        if let Some(apn) = &self.apn {
            let mut labels = Vec::new();
            for label in apn.split('.') {
                labels.push(label.len().min(63) as u8);
                labels.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
            }
            out.push(0x47);
            out.push(labels.len().min(255) as u8);
            out.extend_from_slice(&labels[..labels.len().min(255)]);
        }
        // 3C transport level: 02 = TCP, UICC in client mode, remote connection.
        out.extend_from_slice(&[0x3C, 0x03, 0x02]);
        out.extend_from_slice(&self.port.to_be_bytes());
        // 3E other address: 21 = IPv4.
        out.extend_from_slice(&[0x3E, 0x05, 0x21]);
        out.extend_from_slice(&self.ipv4);
        out
    }

    /// Reads the simple TLVs [`ConnectionParams::encode`] writes (comprehension-required bit
    /// ignored, other tags skipped): the buffer size (39), the APN (47), the TCP port (3C) and
    /// an IPv4 other address (3E, type 21). The card side of the trigger uses it.
    pub fn decode(input: &[u8]) -> Result<ConnectionParams, TriggerError> {
        let mut buffer_size = None;
        let mut apn = None;
        let mut port = None;
        let mut ipv4 = None;
        let mut cur = input;
        while !cur.is_empty() {
            let (tag, value, rest) = read_tlv(cur)?;
            match tag & 0x7F {
                0x39 if value.len() == 2 => {
                    buffer_size = Some(u16::from_be_bytes([value[0], value[1]]))
                }
                0x47 => {
                    let mut labels = Vec::new();
                    let mut v = value;
                    while let Some((&n, tail)) = v.split_first() {
                        let n = usize::from(n);
                        if tail.len() < n {
                            return Err(TriggerError::Malformed("network access name"));
                        }
                        labels.push(text(&tail[..n], "network access name")?);
                        v = &tail[n..];
                    }
                    apn = Some(labels.join("."));
                }
                0x3C if value.len() == 3 => port = Some(u16::from_be_bytes([value[1], value[2]])),
                0x3E if value.len() == 5 && value[0] == 0x21 => {
                    ipv4 = Some([value[1], value[2], value[3], value[4]]);
                }
                _ => {}
            }
            cur = rest;
        }
        Ok(ConnectionParams {
            buffer_size: buffer_size.unwrap_or(0),
            apn,
            port: port.ok_or(TriggerError::Missing("transport level (3C)"))?,
            ipv4: ipv4.ok_or(TriggerError::Missing("IPv4 other address (3E)"))?,
        })
    }
}

fn push_tlv(
    out: &mut Vec<u8>,
    tag: u8,
    value: &[u8],
    what: &'static str,
) -> Result<(), TriggerError> {
    out.push(tag);
    match value.len() {
        n @ 0..=0x7F => out.push(n as u8),
        n @ 0x80..=0xFF => out.extend_from_slice(&[0x81, n as u8]),
        n @ 0x100..=0xFFFF => {
            out.push(0x82);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => return Err(TriggerError::TooLong(what)),
    }
    out.extend_from_slice(value);
    Ok(())
}

/// Reads one BER-TLV with a one-octet tag: (tag, value, rest).
fn read_tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), TriggerError> {
    let (&tag, rest) = input.split_first().ok_or(TriggerError::Truncated)?;
    let (&l0, rest) = rest.split_first().ok_or(TriggerError::Truncated)?;
    let (len, rest) = match l0 {
        0..=0x7F => (usize::from(l0), rest),
        0x81 => {
            let (&l, rest) = rest.split_first().ok_or(TriggerError::Truncated)?;
            if l < 0x80 {
                return Err(TriggerError::Length);
            }
            (usize::from(l), rest)
        }
        0x82 => {
            if rest.len() < 2 {
                return Err(TriggerError::Truncated);
            }
            let l = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            if l < 0x100 {
                return Err(TriggerError::Length);
            }
            (l, &rest[2..])
        }
        _ => return Err(TriggerError::Length),
    };
    if rest.len() < len {
        return Err(TriggerError::Truncated);
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

fn to_bcd_swapped(v: u8) -> u8 {
    ((v % 10) << 4) | (v / 10 % 10)
}

fn from_bcd_swapped(b: u8) -> Option<u8> {
    let (lo, hi) = (b & 0x0F, b >> 4);
    (lo <= 9 && hi <= 9).then_some(lo * 10 + hi)
}

fn text(v: &[u8], what: &'static str) -> Result<String, TriggerError> {
    String::from_utf8(v.to_vec()).map_err(|_| TriggerError::NotText(what))
}

impl TriggerParams {
    /// Encodes `81 L 83 L (84 85 86 89) [B3 L ...]`.
    pub fn encode(&self) -> Result<Vec<u8>, TriggerError> {
        let mut session = Vec::new();
        if let Some(c) = &self.connection {
            push_tlv(&mut session, 0x84, c, "connection parameters")?;
        }
        if let Some(s) = &self.security {
            let mut v = Vec::new();
            let id_len = u8::try_from(s.psk_identity.len())
                .map_err(|_| TriggerError::TooLong("PSK identity"))?;
            v.push(id_len);
            v.extend_from_slice(&s.psk_identity);
            v.extend_from_slice(&[0x02, s.key_version, s.key_id]);
            v.extend(s.extra);
            push_tlv(&mut session, 0x85, &v, "security parameters")?;
        }
        if let Some(r) = &self.retry {
            let t = r.retry_waiting_delay;
            if t.hours > 99 || t.minutes > 99 || t.seconds > 99 {
                return Err(TriggerError::Malformed("retry waiting delay"));
            }
            let mut v = r.retry_counter.to_be_bytes().to_vec();
            v.extend_from_slice(&[
                0x25,
                0x03,
                to_bcd_swapped(t.hours),
                to_bcd_swapped(t.minutes),
                to_bcd_swapped(t.seconds),
            ]);
            if let Some(rep) = &r.report_failure {
                v.extend_from_slice(rep);
            }
            push_tlv(&mut session, 0x86, &v, "retry policy")?;
        }
        if let Some(h) = &self.http {
            let mut v = Vec::new();
            if let Some(x) = &h.host {
                push_tlv(&mut v, 0x8A, x.as_bytes(), "host")?;
            }
            if let Some(x) = &h.agent_id {
                push_tlv(&mut v, 0x8B, x.as_bytes(), "agent id")?;
            }
            if let Some(x) = &h.uri {
                push_tlv(&mut v, 0x8C, x.as_bytes(), "URI")?;
            }
            push_tlv(&mut session, 0x89, &v, "HTTP parameters")?;
        }
        let mut inner = Vec::new();
        push_tlv(&mut inner, 0x83, &session, "session parameters")?;
        if let Some(d) = &self.dns {
            push_tlv(&mut inner, 0xB3, d, "DNS parameters")?;
        }
        let mut out = Vec::new();
        push_tlv(&mut out, 0x81, &inner, "trigger parameters")?;
        Ok(out)
    }

    /// Decodes a tag 81 TLV (trailing bytes after it are an error). Unknown tags inside 83 and
    /// 89 are skipped, as a card would.
    pub fn decode(input: &[u8]) -> Result<TriggerParams, TriggerError> {
        let (tag, inner, rest) = read_tlv(input)?;
        if tag != 0x81 {
            return Err(TriggerError::UnexpectedTag(tag, 0x81));
        }
        if !rest.is_empty() {
            return Err(TriggerError::Malformed("trailing bytes after tag 81"));
        }
        let mut params = TriggerParams {
            connection: None,
            security: None,
            retry: None,
            http: None,
            dns: None,
        };
        let mut session = None;
        let mut cur = inner;
        while !cur.is_empty() {
            let (tag, value, rest) = read_tlv(cur)?;
            match tag {
                0x83 => session = Some(value),
                0xB3 => params.dns = Some(value.to_vec()),
                _ => {}
            }
            cur = rest;
        }
        let mut cur = session.ok_or(TriggerError::Missing("tag 83"))?;
        while !cur.is_empty() {
            let (tag, value, rest) = read_tlv(cur)?;
            match tag {
                0x84 => params.connection = Some(value.to_vec()),
                0x85 => params.security = Some(decode_security(value)?),
                0x86 => params.retry = Some(decode_retry(value)?),
                0x89 => params.http = Some(decode_http(value)?),
                _ => {}
            }
            cur = rest;
        }
        Ok(params)
    }
}

fn decode_security(v: &[u8]) -> Result<SecurityParams, TriggerError> {
    let bad = TriggerError::Malformed("security parameters");
    let (&id_len, rest) = v.split_first().ok_or(bad.clone())?;
    let id_len = usize::from(id_len);
    if rest.len() < id_len + 3 || rest[id_len] != 0x02 {
        return Err(bad);
    }
    let tail = &rest[id_len + 3..];
    if tail.len() > 1 {
        return Err(bad);
    }
    Ok(SecurityParams {
        psk_identity: rest[..id_len].to_vec(),
        key_version: rest[id_len + 1],
        key_id: rest[id_len + 2],
        extra: tail.first().copied(),
    })
}

fn decode_retry(v: &[u8]) -> Result<RetryPolicy, TriggerError> {
    let bad = TriggerError::Malformed("retry policy");
    if v.len() < 7 || v[2] & 0x7F != 0x25 || v[3] != 0x03 {
        return Err(bad);
    }
    let digit = |b| from_bcd_swapped(b).ok_or(TriggerError::Malformed("retry waiting delay"));
    Ok(RetryPolicy {
        retry_counter: u16::from_be_bytes([v[0], v[1]]),
        retry_waiting_delay: TimerValue {
            hours: digit(v[4])?,
            minutes: digit(v[5])?,
            seconds: digit(v[6])?,
        },
        report_failure: (v.len() > 7).then(|| v[7..].to_vec()),
    })
}

fn decode_http(v: &[u8]) -> Result<HttpParams, TriggerError> {
    let mut h = HttpParams::default();
    let mut cur = v;
    while !cur.is_empty() {
        let (tag, value, rest) = read_tlv(cur)?;
        match tag {
            0x8A => h.host = Some(text(value, "host")?),
            0x8B => h.agent_id = Some(text(value, "agent id")?),
            0x8C => h.uri = Some(text(value, "URI")?),
            _ => {}
        }
        cur = rest;
    }
    Ok(h)
}

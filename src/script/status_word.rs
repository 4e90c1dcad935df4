//! What a card's status word means (ISO 7816-4, ETSI TS 102 221 10.2, GSM 11.11 9.4,
//! GlobalPlatform 2.3 11.1.3), for people reading a command's answer.

/// The meaning of SW1SW2, or `None` when it is not one of the usual ones.
pub fn meaning(sw: u16) -> Option<String> {
    let [sw1, sw2] = sw.to_be_bytes();
    let fixed = match sw {
        0x9000 => "normal ending",
        0x9100 => "normal ending, proactive command pending",
        0x6200 => "warning: no information given, memory unchanged",
        0x6281 => "warning: part of the data may be corrupted",
        0x6282 => "warning: end of file or record reached before Le",
        0x6283 => "warning: selected file invalidated",
        0x6285 => "warning: selected file in termination state",
        0x6581 => "memory problem",
        0x6700 => "wrong length",
        0x6881 => "logical channel not supported",
        0x6882 => "secure messaging not supported",
        0x6981 => "command incompatible with the file structure",
        0x6982 => "security status not satisfied",
        0x6983 => "authentication method blocked",
        0x6984 => "referenced data invalidated",
        0x6985 => "conditions of use not satisfied",
        0x6986 => "command not allowed (no EF selected)",
        0x6A80 => "incorrect parameters in the data field",
        0x6A81 => "function not supported",
        0x6A82 => "file or application not found",
        0x6A83 => "record not found",
        0x6A84 => "not enough memory space",
        0x6A86 => "incorrect parameters P1-P2",
        0x6A87 => "Lc inconsistent with P1-P2",
        0x6A88 => "referenced data not found",
        0x6B00 => "wrong parameters P1-P2",
        0x6D00 => "instruction not supported",
        0x6E00 => "class not supported",
        0x6F00 => "technical problem, no precise diagnosis",
        0x9400 => "no EF selected",
        0x9402 => "out of range (invalid address)",
        0x9404 => "file ID or pattern not found",
        0x9408 => "file inconsistent with the command",
        0x9802 => "no CHV initialized",
        0x9804 => "access condition not fulfilled",
        0x9808 => "in contradiction with CHV status",
        0x9810 => "in contradiction with invalidation status",
        0x9840 => "CHV blocked",
        0x9850 => "increase cannot be performed, max value reached",
        _ => "",
    };
    if !fixed.is_empty() {
        return Some(fixed.to_string());
    }
    match sw1 {
        0x61 => Some(format!("normal ending, {sw2} octets available")),
        0x9F => Some(format!("normal ending, {sw2} octets to fetch (GSM)")),
        0x91 => Some(format!(
            "normal ending, proactive command of {sw2} octets pending"
        )),
        0x6C => Some(format!("wrong Le: {sw2} octets available")),
        0x63 if sw2 & 0xF0 == 0xC0 => {
            Some(format!("verification failed, {} tries left", sw2 & 0x0F))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usual_status_words_are_named() {
        assert_eq!(meaning(0x9000).as_deref(), Some("normal ending"));
        assert_eq!(
            meaning(0x6A82).as_deref(),
            Some("file or application not found")
        );
        assert_eq!(
            meaning(0x610A).as_deref(),
            Some("normal ending, 10 octets available")
        );
        assert_eq!(
            meaning(0x63C2).as_deref(),
            Some("verification failed, 2 tries left")
        );
        assert_eq!(meaning(0x1234), None);
    }
}

#!/usr/bin/env python3
"""Writes the fuzz seeds and the hand-made regression inputs.

    python3 fuzz/make_seeds.py [VECTORS_DIR]

- fuzz/seeds/<target>/: seeds taken from the shared test vectors (VECTORS_DIR, default
  ../shared/vectors beside the repository) plus a few constructed ones; committed, small.
- tests/fuzz-regressions/<target>/hand-*.bin: hand-made nasty inputs (empty, 300 x FF,
  length fields at their maximum, CPL/RPL claiming 0xFFFF, ...) that tests/fuzz_regressions.rs
  replays. Inputs the fuzzer found are saved there too, under other names; this script never
  removes them.

Deterministic: running it twice writes the same files.
"""

import hashlib
import io
import json
import os
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VECTORS = (
    sys.argv[1]
    if len(sys.argv) > 1
    else os.path.join(os.path.dirname(ROOT), "shared", "vectors")
)
SEEDS = os.path.join(ROOT, "fuzz", "seeds")
REGRESSIONS = os.path.join(ROOT, "tests", "fuzz-regressions")
TARGETS = ["por_decode", "command_decode", "sms_parse", "script_parse"]

# Same order as POR_KEY_SETS in fuzz/src/lib.rs: (SPI, KIc octet, KIc key prefix) -> index.
POR_SET_INDEX = {
    ("0619", "15", "f09c"): 0,
    ("1619", "15", "f09c"): 1,
    ("1601", "15", "f09c"): 2,
    ("0619", "35", "c21d"): 3,
    ("0609", "35", "c21d"): 4,
    ("0601", "35", "c21d"): 5,
    ("0619", "35", "3001"): 6,
    ("0609", "35", "3001"): 7,
    ("0601", "35", "3001"): 8,
    ("0619", "22", "2001"): 9,
}
POR_SET_COUNT = 20


def h(s):
    return bytes.fromhex(s.replace(" ", ""))


def is_hex(s):
    return (
        isinstance(s, str)
        and len(s) >= 4
        and len(s) % 2 == 0
        and all(c in "0123456789abcdefABCDEF" for c in s)
    )


def hex_strings(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from hex_strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from hex_strings(v)
    elif is_hex(obj):
        yield bytes.fromhex(obj)


def write(folder, data, name=None):
    os.makedirs(folder, exist_ok=True)
    name = name or hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def load(name):
    with open(os.path.join(VECTORS, name)) as f:
        return json.load(f)


def concat_records(packet, kind_iei, ref, size, key=0):
    """A packet cut into concatenated SMS segments, as sms_parse's `key len segment` records."""
    chunks = [packet[i : i + size] for i in range(0, len(packet), size)] or [b""]
    out = b""
    for seq, chunk in enumerate(chunks, 1):
        ies = bytes([0x00, 0x03, ref, len(chunks), seq])
        if seq == 1:
            ies += bytes([kind_iei, 0x00])
        segment = bytes([len(ies)]) + ies + chunk
        out += bytes([key, len(segment)]) + segment
    return out


def cap_zip(components, method=zipfile.ZIP_DEFLATED):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        z.writestr(zipfile.ZipInfo("META-INF/MANIFEST.MF", (2000, 1, 1, 0, 0, 0)), b"Manifest-Version: 1.0\r\n")
        for name, data in components:
            info = zipfile.ZipInfo(f"com/example/hello/javacard/{name}.cap", (2000, 1, 1, 0, 0, 0))
            info.compress_type = method
            z.writestr(info, data)
    return buf.getvalue()


CAP_COMPONENTS = [
    ("Header", h("01 0010 DECAFFED 01 02 04 00 01 06 F00102030405")),
    ("Directory", h("02 0003 AABBCC")),
    ("Applet", h("03 000B 01 07 F0010203040501 002A")),
    ("Import", h("04 0001 00")),
    ("ConstantPool", h("05 0002 4444")),
    ("Class", h("06 0002 1111")),
    ("Method", h("07 0003 222222")),
    ("StaticField", h("08 0001 33")),
    ("RefLocation", h("09 0001 55")),
    ("Descriptor", h("0B 0001 66")),
    ("Debug", h("0C 0001 77")),
]
LOAD_ORDER = ["Header", "Directory", "Import", "Applet", "Class", "Method", "StaticField", "ConstantPool", "RefLocation"]


def seeds():
    scp80 = load("scp80-pysim.json")
    sms = load("sms-pysim.json")
    scp81 = load("scp81-trigger-pysim.json")
    out = {t: [] for t in TARGETS}

    for v in scp80:
        i, e = v["inputs"], v["expected"]
        if v["direction"] == "response_decode":
            ud = bytes.fromhex(i["sms_user_data"])
            idx = POR_SET_INDEX[(i["spi"], i["kic_byte"], i["kic_key"][:4])]
            out["por_decode"].append(bytes([idx]) + ud)
            out["por_decode"].append(bytes([idx]) + ud[3:])
        else:
            out["command_decode"].append(bytes.fromhex(e["secured_packet_with_cpl"]))
            apdu = bytes.fromhex(i["apdu"])
            out["script_parse"].append(apdu)
            out["script_parse"].append(apdu[:5])
            out["script_parse"].append(bytes([0xAA, len(apdu) + 2, 0x22, len(apdu)]) + apdu)
            out["script_parse"].append(bytes([0xAE, 0x80, 0x22, len(apdu)]) + apdu + b"\x00\x00")
            crr = e.get("compact_remote_response")
            if crr:
                out["script_parse"].append(
                    bytes([crr["number_of_commands"]]) + h(crr["last_status_word"]) + h(crr["last_response_data"])
                )
        for b in hex_strings(v):
            out["sms_parse"].append(b)
    for v in sms + scp81:
        for b in hex_strings(v):
            out["sms_parse"].append(b)
            # A PoR or command packet carried in a TPDU or ENVELOPE.
            for marker, target in ((b"\x02\x71\x00", "por_decode"), (b"\x02\x70\x00", "command_decode")):
                at = b.find(marker)
                if at >= 0 and target == "por_decode":
                    for idx in (0, 9, 12):
                        out[target].append(bytes([idx]) + b[at:])
                elif at >= 0:
                    out[target].append(b[at + 3 :])

    # Reassembly: a 3DES command packet from the vectors cut in 2 and 3 segments.
    packet = bytes.fromhex(scp80[6]["expected"]["secured_packet_with_cpl"])
    out["sms_parse"].append(concat_records(packet, 0x70, 0x42, 14))
    out["sms_parse"].append(concat_records(packet * 8, 0x70, 0x43, 128, key=1))

    # Scripts and responses (TS 102 226), CAP and IJC.
    out["script_parse"] += [
        h("0290000000ffff7f2002000000000009b106350400838a838a"),
        h("AB 07 80 01 01 23 02 90 00"),
        h("AB 0C 80 01 02 23 02 61 10 23 03 AA 6A 82"),
        h("AF 80 80 01 01 23 02 90 00 81 01 00 83 01 01 90 01 02 00 00"),
        h("AA 0E 22 07 00A40004023F00 81 01 00 82 00 83 00"),
        h("A0A40000023F00 A0C0000016 00B0000010"),
        h("82 01 00"),
        cap_zip(CAP_COMPONENTS),
        cap_zip(CAP_COMPONENTS, zipfile.ZIP_STORED),
        b"".join(dict(CAP_COMPONENTS)[n] for n in LOAD_ORDER),
        dict(CAP_COMPONENTS)["Header"],
        dict(CAP_COMPONENTS)["Applet"],
    ]
    return out


def nasty():
    """Hand-made inputs: edge lengths and fields at their maxima."""
    ff300 = b"\xff" * 300
    zero300 = b"\x00" * 300
    common = {"empty": b"", "ff-300": ff300, "zero-300": zero300, "one-ff": b"\xff", "one-00": b"\x00"}
    out = {t: dict(common) for t in TARGETS}

    # PoR: octet 0 picks the key set (see POR_KEY_SETS in fuzz/src/lib.rs).
    por = out["por_decode"]
    por["rpl-ffff-short"] = b"\x00" + h("FFFF 0A B00011 0000000000 00 00")
    por["rpl-ffff-sms"] = b"\x09" + h("027100 FFFF 12 B00011") + b"\x00" * 20
    por["rpl-0000"] = b"\x00" + h("0000")
    por["rhl-ff"] = b"\x00" + h("0010 FF B00011") + b"\x00" * 13
    por["rhl-below-min"] = b"\x00" + h("000A 09 B00011 0000000000 00 00")
    por["rhl-min-all-sets"] = b"\x13" + h("000A 0A B00011 0000000000 00 00")
    por["rpl-ffff-full"] = b"\x0a" + h("FFFF 12 B00011") + b"\xab" * (0xFFFF - 4)
    for idx in range(POR_SET_COUNT):
        # RHL leaving room for an 8-octet CC, PCNTR 0xFF, a status error, 16 octets of data.
        body = h("0000000001 FF 0A") + b"\x11" * 8 + b"\x22" * 16
        rpl = 1 + 3 + len(body)
        por[f"pcntr-ff-set{idx:02}"] = bytes([idx]) + rpl.to_bytes(2, "big") + b"\x12" + h("B00011") + body
        # No CC at all, clear status 0x0A (unprotected error path), odd length.
        body = h("0000000001 00 0A 99")
        por[f"unprotected-set{idx:02}"] = bytes([idx]) + (4 + len(body)).to_bytes(2, "big") + b"\x0a" + h("B00011") + body
        # Unprotected but "OK" status: must be refused.
        body = h("0000000001 00 00")
        por[f"unprotected-ok-set{idx:02}"] = bytes([idx]) + (4 + len(body)).to_bytes(2, "big") + b"\x0a" + h("B00011") + body
        por[f"ff-300-set{idx:02}"] = bytes([idx]) + ff300

    # Command packets, from CPL on.
    cmd = out["command_decode"]
    cmd["cpl-ffff-short"] = h("FFFF 15 1619 15 15 B00011 0000000001 00")
    cmd["cpl-ffff-full"] = h("FFFF 15 1619 15 15 B00011") + b"\xcd" * (0xFFFF - 8)
    cmd["cpl-0000"] = h("0000")
    cmd["chl-ff"] = h("0011 FF 1619 15 15 B00011 0000000001 00")
    cmd["chl-0"] = h("0011 00 1619 15 15 B00011 0000000001 00")
    cmd["chl-min-cc-spi"] = h("0011 0D 1619 15 15 B00011 0000000001 00")
    for spi in ("0000", "0100", "0200", "0300", "0400", "0600", "1619", "FFFF"):
        for k in ("00", "01", "02", "05", "09", "0D", "12", "15", "1D", "22", "FF"):
            body = h("0000000001 FF") + b"\x5a" * 24
            pkt = h(f"15 {spi} {k} {k} B00011") + body
            cmd[f"pcntr-ff-spi{spi}-k{k}"] = len(pkt).to_bytes(2, "big") + pkt
        pkt = h(f"15 {spi} 15 15 B00011") + h("0000000001 00") + b"\x5a" * 7
        cmd[f"odd-len-spi{spi}"] = len(pkt).to_bytes(2, "big") + pkt

    # SMS.
    s = out["sms_parse"]
    s["udhl-ff"] = b"\xff" + b"\x00" * 10
    s["udhl-ff-full"] = b"\xff" + b"\x70\xfd" + b"\x00" * 0xFD
    s["ie-len-ff"] = h("03 70 FF 00")
    s["concat-total-0"] = h("05 00 03 01 00 00 AA")
    s["concat-seq-gt-total"] = h("05 00 03 01 02 03 AA")
    s["concat16-max"] = h("06 08 04 FFFF FF FF AA")
    s["concat-repeated"] = h("0A 00 03 01 02 01 00 03 01 02 02")
    s["address-len-ff"] = h("FF 91") + b"\x12" * 200
    s["address-len-20-f-nibbles"] = h("14 91 FFFFFFFFFFFFFFFFFFFF")
    s["address-alnum-max"] = h("14 D0") + b"\xff" * 10
    s["deliver-udl-ff-8bit"] = h("44 04 91 2143 7F F6 22705200000000 FF") + b"\x02" * 10
    s["deliver-udl-ff-7bit"] = h("44 04 91 2143 7F 00 22705200000000 FF") + b"\xff" * 223
    s["deliver-udl-a0-7bit-udhi"] = h("44 04 91 2143 00 00 22705200000000 A0 FF") + b"\xff" * 139
    s["deliver-udl-0-udhi"] = h("44 04 91 2143 7F F6 22705200000000 00")
    s["submit-vp-enhanced"] = h("0D 00 04 91 2143 00 F6 FFFFFFFFFFFFFF 02 0000")
    s["submit-vp-absolute"] = h("19 00 04 91 2143 00 F6 FFFFFFFFFFFFFF 01 00")
    s["submit-udl-ff"] = h("51 00 04 91 2143 7F F6 FF FF") + b"\x00" * 20
    s["envelope-d1-81ff"] = h("D1 81 FF 82 02 83 81") + b"\x8b" * 10
    s["envelope-d1-82ffff"] = h("D1 82 FF FF 82 02 83 81")
    s["envelope-d1-83"] = h("D1 83 00 00 04 82 02 83 81")
    s["envelope-tpdu-len-ff"] = h("D1 0A 82 02 83 81 8B 81 FF 44 00 00")
    s["envelope-address-ff"] = h("D1 0B 82 02 83 81 86 05 FF FFFF FF FF")
    s["proactive-d0-81ff"] = h("D0 81 FF 81 03 01 13 00") + b"\x00" * 5
    s["proactive-no-tpdu"] = h("D0 0C 81 03 01 13 00 82 02 81 83 05 00 00")
    s["records-255-segments"] = b"".join(
        bytes([0, 7]) + h("05 00 03 09 FF") + bytes([seq]) + b"\xee" for seq in range(1, 256)
    )
    s["records-dup-conflict"] = h("00 07 05 00 03 09 02 01 AA 00 07 05 00 03 09 02 01 BB 00 07 05 00 03 09 03 01 CC")
    s["records-drop-key80"] = h("80 07 05 00 03 09 02 01 AA 80 07 05 00 03 09 02 02 BB")
    s["split-max-16bit"] = b"\x02" + b"\x77" * 4000

    # Scripts, APDUs, CAP.
    sc = out["script_parse"]
    sc["ber-82-ffff"] = h("82 FF FF")
    sc["ber-81-ff"] = h("81 FF")
    sc["ber-83"] = h("83 FF FF FF")
    sc["ber-84"] = h("84 FF FF FF FF")
    sc["ber-80"] = h("80")
    sc["aa-82-ffff"] = h("AA 82 FF FF 22 05 00 A4 00 04 02")
    sc["aa-empty"] = h("AA 00")
    sc["aa-81-ff-c-apdu"] = h("AA 81 FF 22 81 FC") + b"\x00" * 0xFC
    sc["ae-no-eoc"] = h("AE 80 22 04 00 A4 00 04")
    sc["ae-nested-indef"] = h("AE 80 22 80 00 00 00 00")
    sc["ab-81-ff"] = h("AB 81 FF 80 01 01")
    sc["ab-count-4-ff"] = h("AB 06 80 04 FF FF FF FF")
    sc["ab-count-5"] = h("AB 07 80 05 FF FF FF FF FF")
    sc["ab-bad-format-2"] = h("AB 04 90 02 01 02")
    sc["ab-other-00"] = h("AB 04 00 00 00 00")
    sc["af-no-eoc"] = h("AF 80 80 01 01")
    sc["af-not-80"] = h("AF 81 02 80 01")
    sc["multi-octet-tag"] = h("AA 04 1F 01 01 00")
    sc["c-apdu-lc-ff"] = h("00 D6 00 00 FF") + b"\x01" * 255
    sc["c-apdu-lc-ff-le"] = h("00 D6 00 00 FF") + b"\x01" * 256
    sc["c-apdu-extended"] = h("00 D6 00 00 00 01 00") + b"\x01" * 256
    sc["compact-lc-ff-short"] = h("00 D6 00 00 FF 01")
    sc["compact-le-ins"] = h("00 B0 00 00 FF 00 C0 00 00 00 A0 A4 00")
    sc["ijc-size-ffff"] = h("01 FF FF DE CA FF ED")
    sc["ijc-dup-header"] = h("01 0000 01 0000")
    sc["ijc-unknown-tag"] = h("01 0000 0D 0000")
    sc["ijc-all-empty"] = b"".join(bytes([t, 0, 0]) for t in range(1, 13))
    sc["header-size-ffff"] = h("01 FF FF DECAFFED")
    sc["header-aid-len-ff"] = h("01 000A DECAFFED 01 02 04 00 01 FF")
    sc["header-aid-17"] = h("01 0019 DECAFFED 01 02 04 00 01 11") + b"\xa0" * 17
    sc["applet-count-ff"] = h("03 0001 FF")
    sc["applet-aid-len-ff"] = h("03 0003 01 FF 00")
    big = [(n, d) for n, d in CAP_COMPONENTS]
    big[0] = ("Header", h("01 FFFF DECAFFED") + b"\x00" * (0xFFFF - 4))
    sc["zip-header-size-ffff"] = cap_zip(big, zipfile.ZIP_DEFLATED)
    sc["zip-component-too-big"] = cap_zip(
        [(n, h("07 FFFF") + b"\x00" * 0x10000 if n == "Method" else d) for n, d in CAP_COMPONENTS],
        zipfile.ZIP_DEFLATED,
    )
    z = bytearray(cap_zip(CAP_COMPONENTS, zipfile.ZIP_STORED))
    eocd = z.rfind(b"PK\x05\x06")
    zz = bytearray(z)
    zz[eocd + 8 : eocd + 12] = b"\xff\xff\xff\xff"  # 65535 entries claimed
    sc["zip-eocd-ffff-entries"] = bytes(zz)
    zz = bytearray(z)
    zz[eocd + 12 : eocd + 20] = b"\xff\xff\xff\xff\xff\xff\xff\xff"  # CD size and offset
    sc["zip-eocd-cd-ffffffff"] = bytes(zz)
    sc["zip-eocd-only"] = h("504B0506 0000 0000 FFFF FFFF FFFFFFFF FFFFFFFF 0000")
    sc["zip-dup-header"] = cap_zip(CAP_COMPONENTS + [("HEADER", CAP_COMPONENTS[0][1])], zipfile.ZIP_STORED)
    return out


def main():
    for target, items in seeds().items():
        for data in items:
            write(os.path.join(SEEDS, target), data)
    for target, items in nasty().items():
        for name, data in items.items():
            write(os.path.join(REGRESSIONS, target), data, f"hand-{name}.bin")
    for target in TARGETS:
        for base in (SEEDS, REGRESSIONS):
            folder = os.path.join(base, target)
            files = os.listdir(folder)
            size = sum(os.path.getsize(os.path.join(folder, f)) for f in files)
            print(f"{os.path.relpath(folder, ROOT)}: {len(files)} files, {size} octets")


if __name__ == "__main__":
    main()

//! SCP80 packet cost, with a fresh key schedule per card as a campaign has it.
//!
//! For a one-SMS RFM command (96 octets of APDUs): build the command packet and verify the
//! card's PoR, with AES-128 (CBC + CMAC) and 3DES two-key (CBC + CBC-MAC). In the same run, the
//! raw crypto of the same bytes straight on the libraries (the baseline the README's ratios use),
//! the RustCrypto `des` crate on the same 3DES work (why 3DES runs on OpenSSL), and the
//! segmentation of a 2 KB RAM script into SMS.
//!
//! Run: `cargo bench --bench scp80`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use otagw::security::command::encode_command_packet;
use otagw::security::*;
use otagw_sms::{split_packet, ConcatReference, PacketKind};

#[path = "fixtures/scp80_case.rs"]
mod case;
use case::{cases, header, por, resolve, rfm_apdus, Case};

fn scp80(c: &mut Criterion) {
    let data = rfm_apdus();
    let mut g = c.benchmark_group("scp80_one_sms_rfm");
    g.throughput(Throughput::Elements(1));
    for case in cases() {
        let keys = resolve(&case);
        let header = header(&case);
        let por = por(&case, &header, &keys);
        let packet = encode_command_packet(&header, &keys, &data).expect("packet");
        assert!(packet.len() <= 137, "one SMS: {} octets", packet.len());

        g.bench_function(format!("{}/build+verify_por", case.name), |b| {
            b.iter(|| {
                let keys = resolve(black_box(&case));
                let p = encode_command_packet(black_box(&header), &keys, black_box(&data))
                    .expect("packet");
                let r = ResponsePacketView::parse(black_box(&por))
                    .and_then(|v| v.open(&case.spi, &keys, CcScope::SmsUdh))
                    .expect("por");
                black_box((p, r))
            })
        });

        // The parts of the packet path, to see where the time goes.
        g.bench_function(format!("{}/part_resolve_keys", case.name), |b| {
            b.iter(|| resolve(black_box(&case)))
        });
        g.bench_function(format!("{}/part_build", case.name), |b| {
            b.iter(|| {
                encode_command_packet(black_box(&header), &keys, black_box(&data)).expect("packet")
            })
        });
        g.bench_function(format!("{}/part_verify_por", case.name), |b| {
            b.iter(|| {
                ResponsePacketView::parse(black_box(&por))
                    .and_then(|v| v.open(&case.spi, &keys, CcScope::SmsUdh))
                    .expect("por")
            })
        });

        // The same crypto on the same byte counts, straight on the libraries: key schedules,
        // CBC over the ciphered part, MAC over the CC input, PoR decipher and MAC.
        let ciphered_len = packet.len() - 10;
        let cc_input_len = packet.len() - 8;
        let por_ciphered_len = por.len() - 6;
        let por_cc_input_len = 3 + por.len() - 8;
        g.bench_function(format!("{}/crypto_only_baseline", case.name), |b| {
            let mut buf = vec![0u8; 256];
            b.iter(|| {
                black_box(crypto_only(
                    &case,
                    &mut buf,
                    ciphered_len,
                    cc_input_len,
                    por_ciphered_len,
                    por_cc_input_len,
                ))
            })
        });
        let direct = if case.name == "aes128" {
            "aes128/libs_direct_aes_cmac_crates"
        } else {
            "3des2k/libs_direct_openssl_evp"
        };
        g.bench_function(direct, |b| {
            let mut buf = vec![0u8; 256];
            b.iter(|| {
                black_box(raw_crypto(
                    &case,
                    &mut buf,
                    ciphered_len,
                    cc_input_len,
                    por_ciphered_len,
                    por_cc_input_len,
                ))
            })
        });
        if case.name == "3des2k" {
            g.bench_function("3des2k/libs_direct_rustcrypto_des", |b| {
                let mut buf = vec![0u8; 256];
                b.iter(|| {
                    black_box(rustcrypto_3des(
                        &case,
                        &mut buf,
                        ciphered_len,
                        cc_input_len,
                        por_ciphered_len,
                        por_cc_input_len,
                    ))
                })
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("sms_segmentation");
    let ram = vec![0xC4u8; 2048];
    g.throughput(Throughput::Bytes(ram.len() as u64));
    g.bench_function("split_2kb_ram_script", |b| {
        b.iter(|| {
            split_packet(
                PacketKind::Command,
                black_box(&ram),
                ConcatReference::SixteenBit(7),
            )
            .expect("split")
        })
    });
    g.finish();
}

/// The baseline: the crypto alone behind one build + PoR verify (fresh key schedules, CBC over
/// the ciphered octets, MAC over the CC input, PoR decipher and MAC) through otagw's crypto
/// layer, on the same byte counts and with no packet framing.
fn crypto_only(
    c: &Case,
    buf: &mut [u8],
    enc: usize,
    mac: usize,
    por_dec: usize,
    por_mac: usize,
) -> u8 {
    let (ca, ia) = if c.name == "aes128" {
        (CipherAlgorithm::AesCbc, IntegrityAlgorithm::AesCmac)
    } else {
        (
            CipherAlgorithm::TripleDes2KeyCbc,
            IntegrityAlgorithm::TripleDes2KeyCbcMac,
        )
    };
    let kic = CipherKey::new(ca, &c.kic_key).expect("kic");
    let kid = IntegrityKey::new(ia, &c.kid_key, None).expect("kid");
    let cc = kid.compute(&buf[..mac]);
    kic.encrypt(&mut buf[..enc]).expect("block multiple");
    kic.decrypt(&mut buf[..por_dec]).expect("block multiple");
    let por_cc = kid.compute(&buf[..por_mac]);
    cc.as_slice()[0] ^ por_cc.as_slice()[0]
}

/// The same work straight on the libraries: `aes` + `cmac` crates, or OpenSSL's EVP layer.
fn raw_crypto(
    c: &Case,
    buf: &mut [u8],
    enc: usize,
    mac: usize,
    por_dec: usize,
    por_mac: usize,
) -> u8 {
    use openssl::cipher::Cipher;
    use openssl::cipher_ctx::CipherCtx;
    if c.name == "aes128" {
        use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
        use cmac::Mac;
        let kic = aes::Aes128::new_from_slice(&c.kic_key).expect("key");
        let kid = <cmac::Cmac<aes::Aes128> as Mac>::new_from_slice(&c.kid_key).expect("key");
        let mut m = kid.clone();
        m.update(&buf[..mac]);
        let cc = m.finalize().into_bytes();
        let mut chain = aes::Block::default();
        for blk in buf[..enc].chunks_exact_mut(16) {
            for (x, y) in chain.iter_mut().zip(blk.iter()) {
                *x ^= y;
            }
            kic.encrypt_block(&mut chain);
            blk.copy_from_slice(&chain);
        }
        let mut prev = aes::Block::default();
        for blk in buf[..por_dec].chunks_exact_mut(16) {
            let mut b = aes::Block::clone_from_slice(blk);
            let cur = b;
            kic.decrypt_block(&mut b);
            for ((o, p), q) in blk.iter_mut().zip(b.iter()).zip(prev.iter()) {
                *o = p ^ q;
            }
            prev = cur;
        }
        let mut m = kid;
        m.update(&buf[..por_mac]);
        cc[0] ^ m.finalize().into_bytes()[0]
    } else {
        let mut k1 = [0u8; 24];
        k1[..16].copy_from_slice(&c.kic_key);
        k1[16..].copy_from_slice(&c.kic_key[..8]);
        let mut k2 = [0u8; 24];
        k2[..16].copy_from_slice(&c.kid_key);
        k2[16..].copy_from_slice(&c.kid_key[..8]);
        let iv = [0u8; 8];
        let run = |key: &[u8; 24], encrypt: bool, len: usize| {
            let len = len.div_ceil(8) * 8;
            let mut ctx = CipherCtx::new().expect("ctx");
            if encrypt {
                ctx.encrypt_init(Some(Cipher::des_ede3_cbc()), Some(key), Some(&iv))
            } else {
                ctx.decrypt_init(Some(Cipher::des_ede3_cbc()), Some(key), Some(&iv))
            }
            .expect("init");
            ctx.set_padding(false);
            let mut out = vec![0u8; len + 8];
            ctx.cipher_update(&buf[..len], Some(&mut out))
                .expect("update");
            out[len - 1]
        };
        run(&k2, true, mac)
            ^ run(&k1, true, enc)
            ^ run(&k1, false, por_dec)
            ^ run(&k2, true, por_mac)
    }
}

/// The same 3DES work on RustCrypto's `des` crate, for comparison.
fn rustcrypto_3des(
    c: &Case,
    buf: &mut [u8],
    enc: usize,
    mac: usize,
    por_dec: usize,
    por_mac: usize,
) -> u8 {
    use des::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
    let kic = des::TdesEde2::new_from_slice(&c.kic_key).expect("key");
    let kid = des::TdesEde2::new_from_slice(&c.kid_key).expect("key");
    let cbc = |k: &des::TdesEde2, data: &mut [u8]| {
        let mut chain = des::cipher::Block::<des::TdesEde2>::default();
        for blk in data.chunks_exact_mut(8) {
            for (x, y) in chain.iter_mut().zip(blk.iter()) {
                *x ^= y;
            }
            k.encrypt_block(&mut chain);
            blk.copy_from_slice(&chain);
        }
    };
    let r8 = |n: usize| n.div_ceil(8) * 8;
    cbc(&kid, &mut buf[..r8(mac)]);
    cbc(&kic, &mut buf[..r8(enc)]);
    let mut prev = des::cipher::Block::<des::TdesEde2>::default();
    for blk in buf[..r8(por_dec)].chunks_exact_mut(8) {
        let mut b = des::cipher::Block::<des::TdesEde2>::clone_from_slice(blk);
        let cur = b;
        kic.decrypt_block(&mut b);
        for ((o, p), q) in blk.iter_mut().zip(b.iter()).zip(prev.iter()) {
            *o = p ^ q;
        }
        prev = cur;
    }
    cbc(&kid, &mut buf[..r8(por_mac)]);
    buf[0]
}

criterion_group!(benches, scp80);
criterion_main!(benches);

//! AES-128 on the CPU's AES instructions (AES-NI), keyed inline, chosen at run time.
//!
//! Why not only the `aes` crate: its keyed types are a union of the AES-NI and the software
//! (fixsliced) layouts, 712 octets for AES-128, which the card's key set had to box and carry
//! per card; its AES-NI layout is private. AES-128 set-up was the largest cost after AES itself
//! in `benches/scp80.rs` (a fresh key schedule per card). This holds the 11 round keys only
//! (176 octets, no allocation), and runs whole CBC and CMAC loops inside `#[target_feature]`
//! functions, so the rounds inline whether or not the build enables AES-NI statically.
//!
//! What is written here is the FIPS 197 key expansion (with AESENCLAST doing SubWord, as
//! OpenSSL's AES-NI code does on recent cores) and the calls of the round instructions; the rounds themselves, and
//! their constant time, are the CPU's. It is used only where the CPU reports AES-NI; elsewhere
//! (and for AES-192/256) `crypto.rs` uses the `aes` crate. The tests check it against FIPS 197
//! and SP 800-38A's known answers and against the `aes` crate for many keys; `crypto.rs` checks
//! CMAC on it against RFC 4493 and the `cmac` crate.

use core::arch::x86_64::{
    __m128i, _mm_aesdec_si128, _mm_aesdeclast_si128, _mm_aesenc_si128, _mm_aesenclast_si128,
    _mm_aesimc_si128, _mm_loadu_si128, _mm_set1_epi32, _mm_setzero_si128, _mm_shuffle_epi8,
    _mm_slli_si128, _mm_storeu_si128, _mm_xor_si128,
};

/// An AES-128 encryption key schedule for AES-NI. Only built where the CPU has AES-NI and
/// SSSE3 ([`Aes128Ni::new`] checks), which is what makes calling its `#[target_feature]`
/// functions sound.
#[derive(Clone, Copy)]
pub(crate) struct Aes128Ni {
    rk: [__m128i; 11],
}

impl Aes128Ni {
    /// Expands `key`, or `None` where the CPU lacks AES-NI.
    #[inline]
    pub(crate) fn new(key: &[u8; 16]) -> Option<Self> {
        if !(std::is_x86_feature_detected!("aes") && std::is_x86_feature_detected!("ssse3")) {
            return None;
        }
        // SAFETY: the CPU has AES-NI and SSSE3 (checked above); SSE2 is part of x86-64.
        Some(unsafe { expand(key) })
    }

    /// Enciphers one block.
    pub(crate) fn encrypt_block(&self, block: &mut [u8; 16]) {
        // SAFETY: an `Aes128Ni` exists only where the CPU has AES-NI.
        unsafe { encrypt_block(self, block) }
    }

    /// CBC encryption in place with a zero IV; `data.len()` a multiple of 16.
    pub(crate) fn cbc_encrypt(&self, data: &mut [u8]) {
        // SAFETY: as above.
        unsafe { cbc_encrypt(self, data) }
    }

    /// CBC decryption in place with a zero IV; `data.len()` a multiple of 16. The decryption
    /// schedule is derived here (nine AESIMC): only PoRs are deciphered, a block or two.
    pub(crate) fn cbc_decrypt(&self, data: &mut [u8]) {
        // SAFETY: as above.
        unsafe { cbc_decrypt(self, data) }
    }

    /// AES-CMAC (RFC 4493) over the concatenation of `parts`, with the subkeys `k1`/`k2`.
    pub(crate) fn cmac(&self, k1: &[u8; 16], k2: &[u8; 16], parts: &[&[u8]]) -> [u8; 16] {
        // SAFETY: as above.
        unsafe { cmac(self, k1, k2, parts) }
    }
}

#[inline]
#[target_feature(enable = "aes,ssse3")]
unsafe fn expand(key: &[u8; 16]) -> Aes128Ni {
    // SAFETY (load): 16 octets from a 16-octet array, unaligned load.
    let mut k = unsafe { _mm_loadu_si128(key.as_ptr().cast()) };
    let mut rk = [k; 11];
    // RotWord of the last word, in all four words (OpenSSL's `.Lkey_rotate`).
    let rotate = _mm_set1_epi32(0x0c0f_0e0d);
    macro_rules! round {
        ($i:expr, $rcon:expr) => {
            // FIPS 197 5.2: w[i] = w[i-4] ^ SubWord(RotWord(w[i-1])) ^ Rcon. AESENCLAST on four
            // equal columns is SubBytes (ShiftRows moves nothing) then the XOR of Rcon, the
            // same as AESKEYGENASSIST's result but several times faster on recent cores,
            // where AESKEYGENASSIST made the two key schedules per card the largest part of
            // key set-up (OpenSSL's `aesni_set_encrypt_key` does the same on such cores).
            let t = _mm_aesenclast_si128(_mm_shuffle_epi8(k, rotate), _mm_set1_epi32($rcon));
            k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
            k = _mm_xor_si128(k, _mm_slli_si128::<8>(k));
            k = _mm_xor_si128(k, t);
            rk[$i] = k;
        };
    }
    round!(1, 0x01);
    round!(2, 0x02);
    round!(3, 0x04);
    round!(4, 0x08);
    round!(5, 0x10);
    round!(6, 0x20);
    round!(7, 0x40);
    round!(8, 0x80);
    round!(9, 0x1b);
    round!(10, 0x36);
    Aes128Ni { rk }
}

#[inline]
#[target_feature(enable = "aes")]
fn enc(k: &Aes128Ni, b: __m128i) -> __m128i {
    let rk = &k.rk;
    let mut b = _mm_xor_si128(b, rk[0]);
    for r in &rk[1..10] {
        b = _mm_aesenc_si128(b, *r);
    }
    _mm_aesenclast_si128(b, rk[10])
}

#[inline]
#[target_feature(enable = "aes")]
unsafe fn load(b: &[u8]) -> __m128i {
    debug_assert!(b.len() >= 16);
    // SAFETY: callers pass at least 16 octets; unaligned load.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "aes")]
unsafe fn store(b: &mut [u8], v: __m128i) {
    debug_assert!(b.len() >= 16);
    // SAFETY: callers pass at least 16 octets; unaligned store.
    unsafe { _mm_storeu_si128(b.as_mut_ptr().cast(), v) }
}

#[target_feature(enable = "aes")]
unsafe fn encrypt_block(k: &Aes128Ni, block: &mut [u8; 16]) {
    unsafe {
        let b = enc(k, load(block));
        store(block, b);
    }
}

#[target_feature(enable = "aes")]
unsafe fn cbc_encrypt(k: &Aes128Ni, data: &mut [u8]) {
    let mut chain = _mm_setzero_si128();
    for block in data.chunks_exact_mut(16) {
        unsafe {
            chain = enc(k, _mm_xor_si128(chain, load(block)));
            store(block, chain);
        }
    }
}

#[target_feature(enable = "aes")]
unsafe fn cbc_decrypt(k: &Aes128Ni, data: &mut [u8]) {
    // The equivalent inverse cipher's schedule (FIPS 197 5.3.5): the round keys in reverse
    // order, InvMixColumns applied to all but the first and last.
    let rk = &k.rk;
    let mut dk = [rk[10]; 11];
    for i in 1..10 {
        dk[i] = _mm_aesimc_si128(rk[10 - i]);
    }
    dk[10] = rk[0];
    let mut prev = _mm_setzero_si128();
    for block in data.chunks_exact_mut(16) {
        let c = unsafe { load(block) };
        let mut b = _mm_xor_si128(c, dk[0]);
        for r in &dk[1..10] {
            b = _mm_aesdec_si128(b, *r);
        }
        b = _mm_aesdeclast_si128(b, dk[10]);
        unsafe { store(block, _mm_xor_si128(b, prev)) };
        prev = c;
    }
}

#[target_feature(enable = "aes")]
unsafe fn cmac(k: &Aes128Ni, k1: &[u8; 16], k2: &[u8; 16], parts: &[&[u8]]) -> [u8; 16] {
    let mut x = _mm_setzero_si128();
    let (last, complete) = super::crypto::cmac_blocks(parts, |block| {
        x = enc(k, _mm_xor_si128(x, unsafe { load(block) }));
    });
    let sub = if complete { k1 } else { k2 };
    let last = unsafe { _mm_xor_si128(load(&last), load(sub)) };
    let mut out = [0u8; 16];
    unsafe { store(&mut out, enc(k, _mm_xor_si128(x, last))) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};

    fn h16(s: &str) -> [u8; 16] {
        let v = hex::decode(s).unwrap_or_default();
        v.try_into().unwrap_or([0; 16])
    }

    fn key(k: &[u8; 16]) -> Option<Aes128Ni> {
        let k = Aes128Ni::new(k);
        if k.is_none() {
            eprintln!("no AES-NI on this CPU: nothing to test here");
        }
        k
    }

    #[test]
    fn fips197_appendix_c1() {
        let Some(k) = key(&h16("000102030405060708090a0b0c0d0e0f")) else {
            return;
        };
        let mut b = h16("00112233445566778899aabbccddeeff");
        k.encrypt_block(&mut b);
        assert_eq!(hex::encode(b), "69c4e0d86a7b0430d8cdb78070b4c55a");
        let mut d = b;
        k.cbc_decrypt(&mut d);
        assert_eq!(hex::encode(d), "00112233445566778899aabbccddeeff");
    }

    #[test]
    fn sp800_38a_f21_cbc_aes128() {
        let Some(k) = key(&h16("2b7e151628aed2a6abf7158809cf4f3c")) else {
            return;
        };
        // SP 800-38A F.2.1 uses IV 000102..0f; with our zero IV, XOR it into the first block.
        let iv = h16("000102030405060708090a0b0c0d0e0f");
        let plain = hex::decode(concat!(
            "6bc1bee22e409f96e93d7e117393172a",
            "ae2d8a571e03ac9c9eb76fac45af8e51",
            "30c81c46a35ce411e5fbc1191a0a52ef",
            "f69f2445df4f9b17ad2b417be66c3710",
        ))
        .unwrap_or_default();
        let mut data = plain.clone();
        data.iter_mut().zip(iv.iter()).for_each(|(d, i)| *d ^= i);
        k.cbc_encrypt(&mut data);
        assert_eq!(
            hex::encode(&data),
            concat!(
                "7649abac8119b246cee98e9b12e9197d",
                "5086cb9b507219ee95db113a917678b2",
                "73bed6b8e3c1743b7116e69e22229516",
                "3ff1caa1681fac09120eca307586e1a7",
            )
        );
        k.cbc_decrypt(&mut data);
        data.iter_mut().zip(iv.iter()).for_each(|(d, i)| *d ^= i);
        assert_eq!(data, plain);
    }

    #[test]
    fn agrees_with_the_aes_crate() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            // xorshift64: varied keys and blocks, reproducible.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..500 {
            let mut kb = [0u8; 16];
            kb[..8].copy_from_slice(&next().to_le_bytes());
            kb[8..].copy_from_slice(&next().to_le_bytes());
            let Some(ours) = key(&kb) else { return };
            let theirs = aes::Aes128::new(&kb.into());
            let mut blocks = [0u8; 48];
            for c in blocks.chunks_mut(8) {
                c.copy_from_slice(&next().to_le_bytes());
            }
            let mut a = [0u8; 16];
            a.copy_from_slice(&blocks[..16]);
            let mut b = aes::Block::from(a);
            ours.encrypt_block(&mut a);
            theirs.encrypt_block(&mut b);
            assert_eq!(a.as_slice(), b.as_slice());

            let mut ours_cbc = blocks;
            ours.cbc_encrypt(&mut ours_cbc);
            let mut chain = aes::Block::default();
            let mut theirs_cbc = blocks;
            for blk in theirs_cbc.chunks_exact_mut(16) {
                chain.iter_mut().zip(blk.iter()).for_each(|(c, p)| *c ^= p);
                theirs.encrypt_block(&mut chain);
                blk.copy_from_slice(&chain);
            }
            assert_eq!(ours_cbc, theirs_cbc);

            let mut dec = blocks;
            ours.cbc_decrypt(&mut dec);
            let mut prev = [0u8; 16];
            for (i, blk) in blocks.chunks_exact(16).enumerate() {
                let mut b = aes::Block::clone_from_slice(blk);
                theirs.decrypt_block(&mut b);
                b.iter_mut().zip(prev.iter()).for_each(|(x, p)| *x ^= p);
                assert_eq!(&dec[16 * i..16 * i + 16], b.as_slice());
                prev.copy_from_slice(blk);
            }
        }
    }
}

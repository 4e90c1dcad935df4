//! DES and 3DES on OpenSSL's libcrypto, through its low-level DES API.
//!
//! Why not a crate: RustCrypto's `des` does about half the packets per second of libcrypto here
//! (see `benches/scp80.rs`, `raw_crypto_rustcrypto_des`), and the `openssl` crate only offers
//! the EVP layer, whose per-operation context setup and key schedule cost about a quarter of a
//! 3DES packet. The low-level API keys each card once (`DES_set_key_unchecked`, which, unlike
//! generic libraries, accepts weak, all-zero and K1 == K2 keys, as SIM cards use them) and
//! then runs CBC/ECB on those schedules. libcrypto is linked already through `openssl-sys`; these
//! functions are exported by OpenSSL 1.1 and 3.x (deprecated in 3.0, still built by Debian).

use std::os::raw::{c_int, c_long};

// Ensures libcrypto is on the link line.
use openssl_sys as _;

/// `DES_key_schedule`: sixteen 8-octet subkeys (`DES_LONG` is 32 bits).
#[repr(C)]
#[derive(Clone, Copy)]
struct KeySchedule([u32; 32]);

extern "C" {
    fn DES_set_key_unchecked(key: *const [u8; 8], schedule: *mut KeySchedule);
    fn DES_ncbc_encrypt(
        input: *const u8,
        output: *mut u8,
        length: c_long,
        schedule: *mut KeySchedule,
        ivec: *mut [u8; 8],
        enc: c_int,
    );
    fn DES_ede3_cbc_encrypt(
        input: *const u8,
        output: *mut u8,
        length: c_long,
        ks1: *mut KeySchedule,
        ks2: *mut KeySchedule,
        ks3: *mut KeySchedule,
        ivec: *mut [u8; 8],
        enc: c_int,
    );
}

const ENCRYPT: c_int = 1;
const DECRYPT: c_int = 0;

/// A DES (8-octet key) or 3DES (16 or 24) key, scheduled.
#[derive(Clone)]
pub(crate) struct DesKey {
    // Boxed: 384 octets that would otherwise move with every key set.
    ks: Box<[KeySchedule; 3]>,
    triple: bool,
}

impl DesKey {
    /// Schedules 8 (single DES), 16 (K1 K2 K1) or 24 (K1 K2 K3) octets; `None` otherwise.
    pub(crate) fn new(key: &[u8]) -> Option<Self> {
        let part = |i: usize| -> Option<[u8; 8]> { key.get(8 * i..8 * i + 8)?.try_into().ok() };
        // The distinct keys to schedule; two-key 3DES (K1 K2 K1) copies K1's schedule into the
        // third slot, and single DES leaves slots 2 and 3 unused.
        let (distinct, triple) = match key.len() {
            8 => (1, false),
            16 => (2, true),
            24 => (3, true),
            _ => return None,
        };
        let mut ks = Box::new([KeySchedule([0; 32]); 3]);
        for (i, schedule) in ks.iter_mut().enumerate().take(distinct) {
            let k = part(i)?;
            // SAFETY: `k` is 8 readable octets and `schedule` a writable DES_key_schedule.
            unsafe { DES_set_key_unchecked(&k, schedule) };
        }
        if distinct == 2 {
            ks[2] = ks[0];
        }
        Some(Self { ks, triple })
    }

    /// CBC over `data` in place, chaining from `iv` (updated to the last ciphertext block).
    /// `data.len()` must be a multiple of 8: callers check, and this asserts it before FFI.
    pub(crate) fn cbc(&self, data: &mut [u8], iv: &mut [u8; 8], encrypt: bool) {
        assert!(
            data.len().is_multiple_of(8),
            "DES CBC on {} octets",
            data.len()
        );
        let Ok(len) = c_long::try_from(data.len()) else {
            unreachable!("slice length fits c_long")
        };
        let enc = if encrypt { ENCRYPT } else { DECRYPT };
        // libcrypto takes `DES_key_schedule *` for historical reasons but only reads it, so a
        // pointer to the shared schedules is never written through; CBC works in place
        // (input == output); `len` octets of `data` are readable and writable.
        let ks = self.ks.as_ptr().cast_mut();
        let p = data.as_mut_ptr();
        unsafe {
            if self.triple {
                DES_ede3_cbc_encrypt(p, p, len, ks, ks.add(1), ks.add(2), iv, enc);
            } else {
                DES_ncbc_encrypt(p, p, len, ks, iv, enc);
            }
        }
    }

    /// ECB over `data` in place: each block on its own (zero IV, one block at a time).
    pub(crate) fn ecb(&self, data: &mut [u8], encrypt: bool) {
        for block in data.chunks_exact_mut(8) {
            let mut iv = [0u8; 8];
            self.cbc(block, &mut iv, encrypt);
        }
    }
}

/// Streaming CBC-MAC (zero IV, input zero-padded to 8, last block) over a [`DesKey`].
pub(crate) struct CbcMac<'k> {
    key: &'k DesKey,
    chain: [u8; 8],
    pending: [u8; 64],
    pending_len: usize,
    total: usize,
}

impl<'k> CbcMac<'k> {
    pub(crate) fn new(key: &'k DesKey) -> Self {
        Self {
            key,
            chain: [0; 8],
            pending: [0; 64],
            pending_len: 0,
            total: 0,
        }
    }

    fn flush(&mut self, len: usize) {
        // CBC-encrypting the buffered blocks with the running chain as IV yields the same chain
        // as one CBC pass over the whole input.
        let mut buf = self.pending;
        self.key.cbc(&mut buf[..len], &mut self.chain, true);
        self.pending_len = 0;
    }

    pub(crate) fn update(&mut self, mut input: &[u8]) {
        self.total += input.len();
        while !input.is_empty() {
            let room = self.pending.len() - self.pending_len;
            let n = room.min(input.len());
            self.pending[self.pending_len..self.pending_len + n].copy_from_slice(&input[..n]);
            self.pending_len += n;
            input = &input[n..];
            if self.pending_len == self.pending.len() {
                self.flush(self.pending.len());
            }
        }
    }

    pub(crate) fn finalize(mut self) -> [u8; 8] {
        if !self.pending_len.is_multiple_of(8) || self.total == 0 {
            let padded = (self.pending_len / 8 + 1) * 8;
            self.pending[self.pending_len..padded].fill(0);
            self.pending_len = padded;
        }
        if self.pending_len > 0 {
            self.flush(self.pending_len);
        }
        self.chain
    }
}

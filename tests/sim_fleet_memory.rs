//! Memory and build time of a 100,000-card fleet, measured with a counting allocator (alone in
//! its own test binary so no other test's allocations are counted).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use otagw::sim::{Fleet, FleetDefaults};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn hundred_thousand_cards() {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let start = Instant::now();
    let fleet = Fleet::generate(100_000, 42, FleetDefaults::default()).unwrap();
    let built = start.elapsed();
    let live = LIVE.load(Ordering::Relaxed) - before;
    let peak = PEAK.load(Ordering::Relaxed) - before;
    let start = Instant::now();
    let text = fleet.to_vendor_file();
    let written = start.elapsed();
    let start = Instant::now();
    let back = Fleet::from_vendor_file(&text, FleetDefaults::default()).unwrap();
    let read = start.elapsed();
    println!(
        "100,000 cards: built in {built:?}, {live} bytes live ({} per card), peak {peak} bytes; \
         approximate_bytes() says {}; vendor file {} bytes written in {written:?}, read in {read:?}",
        live / 100_000,
        fleet.approximate_bytes(),
        text.len(),
    );
    assert_eq!(back.len(), 100_000);
    assert!(live / 100_000 < 400, "{} bytes per card", live / 100_000);
    assert!(built.as_secs_f64() < 5.0, "{built:?}");
}

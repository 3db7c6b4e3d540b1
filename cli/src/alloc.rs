//! The process's allocator: mimalloc, asked for plain `mi_malloc` blocks
//! whenever those already satisfy the layout's alignment.
//!
//! Why not `mimalloc::MiMalloc` as is: it passes every request to
//! `mi_malloc_aligned`, whose fast path in mimalloc 3 only serves sizes up
//! to 1 KiB from a page with a free block at hand. Anything else takes
//! the generic aligned path, which (unless the rounded size is a power of
//! two up to 4 KiB) over-allocates `size + align - 1` from the next size
//! class, so the exact class's page is never refilled and the slow path
//! repeats (callgrind, 1,000-peer simulation: 2.85 M of its allocations,
//! 4.2% of all instructions). A plain mimalloc block of 16 bytes or more
//! is 16-aligned: with `MI_MAX_ALIGN_SIZE` 16, every size class from 16
//! bytes up is a multiple of 16 and pages start 16-aligned (mimalloc
//! asserts it in `alloc.c`); the 8-byte class is 8-aligned. So a layout
//! with `align <= 16` and `align <= size` needs nothing more than
//! `mi_malloc` (the rule std's `System` uses for `malloc`).

use libmimalloc_sys as mi;
use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// Alignment every `mi_malloc` block of at least this size has.
const MALLOC_ALIGN: usize = 16;

/// mimalloc behind std's allocation interface (see the module doc).
pub struct Mimalloc;

/// Whether a plain `mi_malloc` block of `size` bytes is aligned enough.
fn plain(align: usize, size: usize) -> bool {
    align <= MALLOC_ALIGN && align <= size
}

// SAFETY: every branch returns a block of at least `layout.size()` bytes
// aligned to `layout.align()` (plain blocks by the argument in the module
// doc, the others by mimalloc's aligned API), or null; `dealloc` and
// `realloc` receive only pointers these functions returned, and
// `mi_free` frees blocks from either API.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain FFI calls; mimalloc accepts any size.
        unsafe {
            if plain(layout.align(), layout.size()) {
                mi::mi_malloc(layout.size()) as *mut u8
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if plain(layout.align(), layout.size()) {
                mi::mi_zalloc(layout.size()) as *mut u8
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (the trait's contract).
        unsafe { mi::mi_free(ptr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout` (the
        // trait's contract); the new block keeps `layout.align()`.
        unsafe {
            if plain(layout.align(), new_size) {
                mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8
            } else {
                mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks deep into a page (many kept alive at once) are aligned as
    /// asked, in classes that are not powers of two.
    #[test]
    fn blocks_kept_alive_stay_aligned() {
        let a = Mimalloc;
        for (size, align) in [(48, 16), (80, 16), (52, 4), (24, 8), (112, 16), (1_040, 16)] {
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: non-zero size; every block freed with its layout.
            unsafe {
                let blocks: Vec<*mut u8> = (0..2_000).map(|_| a.alloc(layout)).collect();
                for &p in &blocks {
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                }
                for p in blocks {
                    a.dealloc(p, layout);
                }
            }
        }
    }

    /// Every layout the plain path takes comes back aligned, across the
    /// size classes (small, medium, over 1 KiB, not powers of two).
    #[test]
    fn plain_blocks_are_aligned_as_asked() {
        let a = Mimalloc;
        for size in (1..=5_000).chain([8_191, 65_537, 300_001]) {
            for align in [1, 2, 4, 8, 16, 32, 64, 4_096] {
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    continue;
                };
                // SAFETY: non-zero size; freed with the same allocator.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    p.write_bytes(0xA5, size);
                    let q = a.realloc(p, layout, size * 2 + 3);
                    assert_eq!(q as usize % align, 0, "realloc size {size} align {align}");
                    assert_eq!(*q.add(size - 1), 0xA5);
                    a.dealloc(q, Layout::from_size_align(size * 2 + 3, align).unwrap());
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0);
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|b| *b == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }
}

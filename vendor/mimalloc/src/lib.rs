// Copyright 2019 Octavian Oncescu

#![no_std]

//! A drop-in global allocator wrapper around the [mimalloc](https://github.com/microsoft/mimalloc) allocator.
//! Mimalloc is a general purpose, performance oriented allocator built by Microsoft.
//!
//! ## Usage
//! ```rust,ignore
//! use mimalloc::MiMalloc;
//!
//! #[global_allocator]
//! static GLOBAL: MiMalloc = MiMalloc;
//! ```
//!
//! ## Usage with secure mode
//! Using secure mode adds guard pages,
//! randomized allocation, encrypted free lists, etc. The performance penalty is usually
//! around 10% according to [mimalloc's](https://github.com/microsoft/mimalloc)
//! own benchmarks.
//!
//! To enable secure mode, put in `Cargo.toml`:
//! ```toml
//! [dependencies]
//! mimalloc = { version = "*", features = ["secure"] }
//! ```

extern crate libmimalloc_sys as ffi;

#[cfg(feature = "extended")]
mod extended;

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;
use ffi::*;

/// Drop-in mimalloc global allocator.
///
/// ## Usage
/// ```rust,ignore
/// use mimalloc::MiMalloc;
///
/// #[global_allocator]
/// static GLOBAL: MiMalloc = MiMalloc;
/// ```
pub struct MiMalloc;

// Patched (see vendor/README.md).
//
// mimalloc's plain calls return memory aligned as `malloc`'s must be: to 16
// bytes (`MI_MAX_ALIGN_SIZE`), or to the size when that is smaller. Rust asks
// every allocation through an alignment, and mimalloc v3's `*_aligned` calls
// take their fast path only for a block that happens to be aligned in a small
// page; otherwise, for every size that is not a power of two, they go through
// the generic aligned path and over-allocate into a larger size class. So the
// plain calls are used whenever they satisfy the layout, with the rule Rust's
// own `System` allocator applies to `malloc`. Padding (the `secure` and debug
// builds) changes what the plain calls guarantee, so those keep the aligned
// calls for everything.
#[cfg(not(any(feature = "secure", feature = "debug", feature = "debug_in_debug")))]
const MIN_ALIGN: usize = 16;
#[cfg(any(feature = "secure", feature = "debug", feature = "debug_in_debug"))]
const MIN_ALIGN: usize = 0;

/// Whether mimalloc's plain calls satisfy `align` for a block of `size`.
#[inline(always)]
fn plain(size: usize, align: usize) -> bool {
    align <= MIN_ALIGN && align <= size
}

unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if plain(layout.size(), layout.align()) {
            mi_malloc(layout.size()) as *mut u8
        } else {
            mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if plain(layout.size(), layout.align()) {
            mi_zalloc(layout.size()) as *mut u8
        } else {
            mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi_free(ptr as *mut c_void);
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain(new_size, layout.align()) {
            mi_realloc(ptr as *mut c_void, new_size) as *mut u8
        } else {
            mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Patched (see vendor/README.md).
    #[test]
    fn every_layout_gets_its_alignment() {
        let alloc = MiMalloc;
        let mut sizes = [0usize; 64];
        for (i, s) in sizes.iter_mut().enumerate() {
            *s = 1 + i * 23;
        }
        for &size in sizes.iter().chain(&[1460, 4000, 5000, 70_000, 300_000]) {
            for align in [1usize, 2, 4, 8, 16, 32, 64, 4096] {
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    continue;
                };
                unsafe {
                    let mut kept = [core::ptr::null_mut(); 8];
                    for p in kept.iter_mut() {
                        *p = alloc.alloc(layout);
                        assert!(!p.is_null());
                        assert_eq!(*p as usize % align, 0, "size {size} align {align}");
                    }
                    let z = alloc.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "zeroed size {size} align {align}");
                    assert!(core::slice::from_raw_parts(z, size).iter().all(|b| *b == 0));
                    let grown = alloc.realloc(z, layout, size * 3);
                    assert_eq!(grown as usize % align, 0, "realloc size {size} align {align}");
                    alloc.dealloc(grown, Layout::from_size_align(size * 3, align).unwrap());
                    for p in kept {
                        alloc.dealloc(p, layout);
                    }
                }
            }
        }
    }

    // Patched (see vendor/README.md).
    #[test]
    fn a_layout_with_room_to_spare_takes_the_plain_calls() {
        assert!(plain(1460, 1));
        assert!(plain(48, 8));
        assert!(plain(16, 16));
        assert!(!plain(8, 16), "a block smaller than its alignment");
        assert!(!plain(64, 32), "more than malloc's alignment");
    }

    #[test]
    fn it_frees_allocated_memory() {
        unsafe {
            let layout = Layout::from_size_align(8, 8).unwrap();
            let alloc = MiMalloc;

            let ptr = alloc.alloc(layout);
            alloc.dealloc(ptr, layout);
        }
    }

    #[test]
    fn it_frees_allocated_big_memory() {
        unsafe {
            let layout = Layout::from_size_align(1 << 20, 32).unwrap();
            let alloc = MiMalloc;

            let ptr = alloc.alloc(layout);
            alloc.dealloc(ptr, layout);
        }
    }

    #[test]
    fn it_frees_zero_allocated_memory() {
        unsafe {
            let layout = Layout::from_size_align(8, 8).unwrap();
            let alloc = MiMalloc;

            let ptr = alloc.alloc_zeroed(layout);
            alloc.dealloc(ptr, layout);
        }
    }

    #[test]
    fn it_frees_zero_allocated_big_memory() {
        unsafe {
            let layout = Layout::from_size_align(1 << 20, 32).unwrap();
            let alloc = MiMalloc;

            let ptr = alloc.alloc_zeroed(layout);
            alloc.dealloc(ptr, layout);
        }
    }

    #[test]
    fn it_frees_reallocated_memory() {
        unsafe {
            let layout = Layout::from_size_align(8, 8).unwrap();
            let alloc = MiMalloc;

            let ptr = alloc.alloc(layout);
            let ptr = alloc.realloc(ptr, layout, 16);
            alloc.dealloc(ptr, layout);
        }
    }

    #[test]
    fn it_frees_reallocated_big_memory() {
        unsafe {
            let layout = Layout::from_size_align(1 << 20, 32).unwrap();
            let alloc = MiMalloc;

            let ptr = alloc.alloc(layout);
            let ptr = alloc.realloc(ptr, layout, 2 << 20);
            alloc.dealloc(ptr, layout);
        }
    }
}

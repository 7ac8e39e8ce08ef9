//! The process's allocator: mimalloc (its v2 line), entered without its aligned path where a
//! block's own alignment suffices.
//!
//! Message-heavy work allocates a payload and an envelope or two per message; mimalloc serves
//! these small allocations markedly faster than the system allocator. Its blocks are whole
//! machine words, so its plain entry points give word alignment: a request asking for no
//! more takes them (about 25 instructions fewer than the aligned entry, which has to check the
//! block it is given), and anything stricter takes the aligned ones.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every mimalloc block has.
const WORD: usize = std::mem::size_of::<usize>();

/// The global allocator of the `cadre` binary.
pub(crate) struct Allocator;

// SAFETY: every path hands the request to mimalloc and returns what it gives: memory of at
// least the size asked for (or null when it has none, which the trait allows), never unwinding.
// Alignment: a request for at most a word goes to mimalloc's plain entry points, whose small
// and medium blocks are whole numbers of words laid out from word-aligned page starts and
// whose large ones start at OS pages, so every block is word-aligned; a stricter request goes
// to its aligned entry points, which honour any power of two. `mi_realloc` keeps the bytes up
// to the smaller size and returns a block of the same kind (word-aligned again); a pointer
// freed or reallocated here came from one of these entry points, as `mi_free` and
// `mi_realloc` require (the aligned ones allocate from the same heap).
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = if layout.align() <= WORD {
            unsafe { mi::mi_malloc(layout.size()) }
        } else {
            unsafe { mi::mi_malloc_aligned(layout.size(), layout.align()) }
        };
        p.cast()
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = if layout.align() <= WORD {
            unsafe { mi::mi_zalloc(layout.size()) }
        } else {
            unsafe { mi::mi_zalloc_aligned(layout.size(), layout.align()) }
        };
        p.cast()
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = if layout.align() <= WORD {
            unsafe { mi::mi_realloc(ptr.cast::<c_void>(), new_size) }
        } else {
            unsafe { mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()) }
        };
        p.cast()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size class a small or medium allocation can fall in, at every alignment up to a
    /// page: the memory is aligned as asked, writable over its whole size, and keeps its bytes
    /// through a reallocation.
    #[test]
    fn blocks_are_aligned_as_asked_and_keep_their_bytes_when_grown() {
        let a = Allocator;
        for align in [1usize, 2, 4, 8, 16, 32, 64, 4096] {
            for size in (1..=1024).step_by(7).chain([4095, 4096, 70_000]) {
                let layout = Layout::from_size_align(size, align).unwrap();
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null(), "{size} bytes at {align}");
                    assert_eq!(p as usize % align, 0, "{size} bytes at {align}");
                    std::ptr::write_bytes(p, 0xA5, size);
                    let q = a.realloc(p, layout, size * 2 + 1);
                    assert_eq!(q as usize % align, 0, "grown from {size} at {align}");
                    assert!(std::slice::from_raw_parts(q, size)
                        .iter()
                        .all(|&b| b == 0xA5));
                    a.dealloc(q, Layout::from_size_align(size * 2 + 1, align).unwrap());
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "zeroed {size} at {align}");
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }
}

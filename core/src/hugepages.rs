//! Transparent huge pages for the biggest vectors a backtest fills: the candles as the loader
//! reads them (`data::Rows`).
//!
//! The CLI's allocator (mimalloc, built with `no_thp`) asks for no huge pages, because a 2 MiB
//! page is zeroed in full at its first touch, and for the small allocations of a starting process
//! that cost more than it saved (a 300-row backtest: 4.35 → 2.86 ms). A vector of megabytes
//! written front to back is the opposite case: one fault per 2 MiB instead of 512. On Linux with
//! THP in `madvise` mode (the common default) the advice below is what makes those pages huge;
//! elsewhere it does nothing.

/// Advise huge pages for the whole 2 MiB-aligned stretches of `v`'s allocated capacity. Call it
/// right after reserving, before the vector is written.
pub(crate) fn advise<T>(v: &Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = v.as_ptr() as usize;
        let end = start + v.capacity() * std::mem::size_of::<T>();
        let from = start.next_multiple_of(HUGE);
        let to = end & !(HUGE - 1);
        if to > from {
            // SAFETY: `from..to` is whole pages inside this vector's own allocation, and
            // MADV_HUGEPAGE changes neither their contents nor the mapping, only how the kernel
            // backs them on the next fault. Its result is advice: a refusal changes nothing.
            unsafe {
                libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// The kernel's flags of the mapping holding `addr` (`VmFlags` in /proc/self/smaps).
    fn vm_flags(addr: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((a, b)) = range.split_once('-') {
                    if let (Ok(a), Ok(b)) =
                        (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                    {
                        inside = (a..b).contains(&addr);
                        continue;
                    }
                }
            }
            if inside {
                if let Some(flags) = line.strip_prefix("VmFlags:") {
                    return flags.trim().to_string();
                }
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    #[test]
    fn the_aligned_stretches_of_a_big_vector_are_advised_and_small_ones_left_alone() {
        const HUGE: usize = 2 << 20;
        let big: Vec<u64> = Vec::with_capacity(5 * HUGE / 8);
        super::advise(&big);
        let first = (big.as_ptr() as usize).next_multiple_of(HUGE);
        let flags = vm_flags(first);
        assert!(flags.split(' ').any(|f| f == "hg"), "{flags}");
        // The advice stops at the allocation's last whole 2 MiB.
        let end = big.as_ptr() as usize + big.capacity() * 8;
        assert!(end & !(HUGE - 1) > first, "at least one whole stretch");

        let small: Vec<u64> = Vec::with_capacity(1024);
        super::advise(&small);
        let flags = vm_flags(small.as_ptr() as usize);
        assert!(!flags.split(' ').any(|f| f == "hg"), "{flags}");
    }
}

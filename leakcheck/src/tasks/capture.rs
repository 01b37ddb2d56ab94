//! Spawn backtraces as raw instruction pointers, cheap enough for the spawn hook.
//!
//! Where frame pointers are available (x86_64 and aarch64 Linux; the workspace builds with
//! `-C force-frame-pointers=yes`) the stack is walked by following saved frame pointers inside the
//! current thread's stack bounds: no locks, no DWARF, a few nanoseconds a frame. Frames compiled
//! without frame pointers are skipped, never misread outside the stack. Elsewhere the `backtrace`
//! crate's unwinder is used. Symbols are resolved later, only for survivors (see `symbols`).

/// At most this many frames are kept per spawn: enough to reach user code through tokio's
/// spawn machinery, small enough to keep the hook cheap.
pub(crate) const MAX_FRAMES: usize = 64;

/// Captures the caller's stack as instruction pointers, innermost first.
#[inline(never)]
pub(crate) fn capture() -> Vec<usize> {
    let mut buf = [0usize; MAX_FRAMES];
    let n = walk(&mut buf);
    buf[..n].to_vec()
}

/// A frame-pointer walk of a spawn with fewer frames than this ran into code built without
/// frame pointers: a spawn inside a runtime is deeper (the hook, tokio's spawn path, the caller,
/// the futures that polled it, the scheduler), 22 frames and more as measured. A shallower
/// spawn (from `main`, outside a runtime) takes the unwinder too, which reaches the same frames.
const SHORT_SPAWN_WALK: usize = 16;

/// A spawn's stack: the frame-pointer walk, or the unwinder when the walk stopped short. A build
/// without `-C force-frame-pointers=yes` walks 0-7 frames (measured: debug 3-7, release 0),
/// never as far as the user's code, so a task a library spawned could not be traced to the
/// user's line; the unwinder costs about 3 us a spawn there in release, 6.5 in debug.
#[inline(never)]
pub(crate) fn capture_spawn() -> Vec<usize> {
    let mut buf = [0usize; MAX_FRAMES];
    let n = walk(&mut buf);
    if n < SHORT_SPAWN_WALK {
        capture_unwound()
    } else {
        buf[..n].to_vec()
    }
}

/// Captures the caller's stack with the DWARF unwinder: slower than the frame-pointer walk, but
/// it goes through C code built without frame pointers (librdkafka starting its threads).
#[inline(never)]
pub(crate) fn capture_unwound() -> Vec<usize> {
    let mut buf = [0usize; MAX_FRAMES];
    let n = walk_unwinder(&mut buf);
    buf[..n].to_vec()
}

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
#[inline(always)] // the walk starts at `capture`'s own frame
fn walk(buf: &mut [usize; MAX_FRAMES]) -> usize {
    let Some((lo, hi)) = stack_bounds() else {
        return walk_unwinder(buf);
    };
    let mut fp: usize;
    // SAFETY: reading the frame pointer register has no side effects.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        std::arch::asm!("mov {}, rbp", out(reg) fp, options(nomem, nostack, preserves_flags));
        #[cfg(target_arch = "aarch64")]
        std::arch::asm!("mov {}, x29", out(reg) fp, options(nomem, nostack, preserves_flags));
    }
    // Anything at or above the current frame and below the top of the stack is mapped memory.
    let lo = lo.max(fp);
    let mut n = 0;
    while n < MAX_FRAMES {
        if fp < lo || fp % std::mem::align_of::<usize>() != 0 || fp + 2 * size_of::<usize>() > hi {
            break;
        }
        // SAFETY: `fp` and `fp + 8` lie inside this thread's live stack (checked above).
        let (next, ret) = unsafe { (*(fp as *const usize), *((fp as *const usize).add(1))) };
        if ret == 0 {
            break;
        }
        buf[n] = ret;
        n += 1;
        if next <= fp {
            break;
        }
        fp = next;
    }
    n
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
fn walk(buf: &mut [usize; MAX_FRAMES]) -> usize {
    walk_unwinder(buf)
}

fn walk_unwinder(buf: &mut [usize; MAX_FRAMES]) -> usize {
    let mut n = 0;
    // SAFETY: no other thread uses the unwinder's shared state through this call path; the
    // `backtrace` crate documents the unsynchronized variant as safe when that holds, and the
    // standard unwinder (libgcc) is itself thread-safe.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            buf[n] = frame.ip() as usize;
            n += 1;
            n < MAX_FRAMES
        });
    }
    n
}

/// This thread's stack as `(lowest, highest)` address, cached per thread.
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
fn stack_bounds() -> Option<(usize, usize)> {
    use std::cell::Cell;
    thread_local! {
        static BOUNDS: Cell<Option<Option<(usize, usize)>>> = const { Cell::new(None) };
    }
    BOUNDS.with(|b| {
        if let Some(v) = b.get() {
            return v;
        }
        let v = query_stack_bounds();
        b.set(Some(v));
        v
    })
}

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
fn query_stack_bounds() -> Option<(usize, usize)> {
    // SAFETY: plain libc calls on a zeroed attribute object owned by this frame.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let rc = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        (rc == 0 && !addr.is_null()).then(|| (addr as usize, addr as usize + size))
    }
}

#[cfg(test)]
mod tests {
    #[inline(never)]
    fn nested() -> Vec<usize> {
        // Work after the call keeps it from becoming a tail call (the test profile optimizes).
        let frames = super::capture();
        std::hint::black_box(&frames);
        frames
    }

    #[inline(never)]
    fn spawning() -> Vec<usize> {
        let frames = super::capture_spawn();
        std::hint::black_box(&frames);
        frames
    }

    /// From a test's thread the frame-pointer walk is short: the unwinder takes over and reaches
    /// the caller and this test.
    #[test]
    fn a_short_walk_falls_back_to_the_unwinder() {
        let frames = spawning();
        let names: Vec<String> = frames
            .iter()
            .flat_map(|ip| crate::tasks::resolve_frames(&[*ip]))
            .map(|f| f.function)
            .collect();
        assert!(names.iter().any(|n| n.contains("spawning")), "{names:?}");
        assert!(
            names.iter().any(|n| n.contains("a_short_walk_falls_back")),
            "{names:?}"
        );
        // The frame-pointer walk took 8 frames here, fewer than a spawn in a runtime: the
        // stack is the unwinder's.
        assert!(super::capture().len() < super::SHORT_SPAWN_WALK);
        assert!(
            names.iter().any(|n| n.contains("capture_unwound")),
            "{names:?}"
        );
    }

    #[test]
    fn captures_several_frames_inside_this_binary() {
        let frames = nested();
        assert!(frames.len() >= 3, "only {} frames", frames.len());
        let mut names = Vec::new();
        backtrace::resolve(frames[0] as *mut _, |s| {
            names.push(s.name().map(|n| n.to_string()).unwrap_or_default())
        });
        assert!(
            names.iter().any(|n| n.contains("nested")),
            "innermost frame is {names:?}"
        );
    }
}

//! Stacks as raw instruction pointers, cheap enough for the hooks: a task spawned, a thread
//! started, a descriptor made.
//!
//! Where frame pointers are available (x86_64 and aarch64 Linux; the workspace builds with
//! `-C force-frame-pointers=yes`) the stack is walked by following saved frame pointers inside the
//! current thread's stack bounds: no locks, no DWARF, a few nanoseconds a frame. Frames compiled
//! without frame pointers are skipped, never misread outside the stack. Elsewhere the `backtrace`
//! crate's unwinder is used. Symbols are resolved later, only for survivors (see `symbols`).

use std::sync::atomic::{AtomicU64, Ordering};

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

/// A frame-pointer walk with at least this many frames went through the hook's caller and the
/// code that called it: a spawn inside a runtime is deeper (the hook, tokio's spawn path, the
/// caller, the futures that polled it, the scheduler), 22 frames and more as measured, and so
/// is a socket opened or a thread started there. A shallower walk either reached the start of
/// its thread (a spawn from `main` or a test's thread, outside a runtime: 8 frames) or ran
/// into code built without frame pointers.
const SHORT_WALK: usize = 16;

/// Whether `walk` follows frame pointers (else it is the unwinder).
const FRAME_POINTER_WALK: bool = cfg!(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
));

/// Hashes of short walks the unwinder found whole (see [`capture_whole`]); empty slots are 0.
/// Once all are taken, a new call path pays the unwinder each time.
static WHOLE_WALKS: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];

/// Frames the unwinder may list beyond a whole walk's last one: the C library's thread start
/// and `clone`, which have no frame pointers.
const OUTERMOST_SLACK: usize = 3;

/// The caller's stack, for the hooks (a spawn, a thread started, a descriptor made): the
/// frame-pointer walk, or the unwinder's when the walk stopped short of the start of its
/// thread. A build without `-C force-frame-pointers=yes` walks 0-7 frames (measured: debug 3-7,
/// release 0), never as far as the user's code, so a task a library spawned (or a socket it
/// opened) could not be traced to the user's line; the unwinder costs about 3 us a call there
/// in release, 6.5 in debug.
///
/// A short walk the unwinder found whole is remembered by its frames, all of them: the same
/// frames again are the same whole stack, so a spawn from outside a runtime pays the unwinder
/// once per call path, not per spawn. Not by where it ends: a walk broken by code without
/// frame pointers can skip to the frames of its thread's start and end where a whole one
/// did (seen in a debug build: hyper-util's spawn lost the user's line).
#[inline(never)]
pub(crate) fn capture_whole() -> Vec<usize> {
    let mut buf = [0usize; MAX_FRAMES];
    let n = walk(&mut buf);
    let walked = &buf[..n];
    // Where the walk is the unwinder's own, it is whole already.
    if n >= SHORT_WALK || !FRAME_POINTER_WALK {
        return walked.to_vec();
    }
    let key = walk_key(walked);
    if WHOLE_WALKS
        .iter()
        .any(|slot| slot.load(Ordering::Relaxed) == key)
    {
        return walked.to_vec();
    }
    let mut frames = [0usize; MAX_FRAMES];
    let (n, spawn_frame) = unwind_marking(&mut frames, Some(capture_whole as *const () as usize));
    let unwound = &frames[..n];
    if spawn_frame.is_some_and(|at| is_whole(walked, unwound, at + 1)) {
        remember(key);
    }
    unwound.to_vec()
}

/// A walk's frames hashed (FNV-1a over the addresses), never 0.
fn walk_key(walked: &[usize]) -> u64 {
    walked
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, ip| {
            (h ^ *ip as u64).wrapping_mul(0x0100_0000_01b3)
        })
        .max(1)
}

fn remember(key: u64) {
    for slot in &WHOLE_WALKS {
        match slot.compare_exchange(0, key, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(seen) if seen == key => return,
            Err(_) => {}
        }
    }
}

/// Whether `walked` is whole: its frames are the unwinder's from `start` (the frame of
/// [`capture_whole`]'s caller) on, in order and with none skipped, and at most
/// [`OUTERMOST_SLACK`] of the unwinder's frames lie beyond its last. A walk that began further
/// out (its frame pointer was an outer function's) skipped the caller, and is not.
fn is_whole(walked: &[usize], unwound: &[usize], start: usize) -> bool {
    !walked.is_empty()
        && unwound.get(start..start + walked.len()) == Some(walked)
        && unwound.len() - (start + walked.len()) <= OUTERMOST_SLACK
}

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
#[inline(always)] // the walk starts at its caller's own frame
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
    unwind_marking(buf, None).0
}

/// The unwinder's stack, and the index of the frame of the function starting at `function`.
#[inline(never)]
fn unwind_marking(
    buf: &mut [usize; MAX_FRAMES],
    function: Option<usize>,
) -> (usize, Option<usize>) {
    let (mut n, mut at) = (0, None);
    // SAFETY: no other thread uses the unwinder's shared state through this call path; the
    // `backtrace` crate documents the unsynchronized variant as safe when that holds, and the
    // standard unwinder (libgcc) is itself thread-safe.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            if at.is_none() && function.is_some_and(|f| frame.symbol_address() as usize == f) {
                at = Some(n);
            }
            buf[n] = frame.ip() as usize;
            n += 1;
            n < MAX_FRAMES
        });
    }
    (n, at)
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
        let frames = super::capture_whole();
        std::hint::black_box(&frames);
        frames
    }

    fn names(frames: &[usize]) -> Vec<String> {
        frames
            .iter()
            .flat_map(|ip| crate::tasks::resolve_frames(&[*ip]))
            .map(|f| f.function)
            .collect()
    }

    /// From a test's thread the frame-pointer walk is short (8 frames, fewer than a spawn in a
    /// runtime) and whole: the unwinder finds it whole once, and the same walk again is kept.
    /// Both stacks reach the caller and this test.
    #[test]
    fn a_short_walk_the_unwinder_found_whole_is_kept() {
        assert!(super::capture().len() < super::SHORT_WALK);
        // One call site: the same frames twice.
        let runs: Vec<Vec<usize>> = (0..2).map(|_| spawning()).collect();
        let (first, second) = (&runs[0], &runs[1]);
        for frames in [first, second] {
            let names = names(frames);
            assert!(names.iter().any(|n| n.contains("spawning")), "{names:?}");
            assert!(
                names
                    .iter()
                    .any(|n| n.contains("a_short_walk_the_unwinder")),
                "{names:?}"
            );
        }
        let (first, second) = (names(first), names(second));
        assert!(
            first.iter().any(|n| n.contains("unwind_marking")),
            "{first:?}"
        );
        assert!(
            !second.iter().any(|n| n.contains("unwind_marking")),
            "{second:?}"
        );
    }

    /// A walk is whole when it is the unwinder's frames from the caller's on, with at most the
    /// C library's thread start beyond it; a walk that began further out, skipped a frame,
    /// stopped early or strayed is not.
    #[test]
    fn only_the_unwinder_s_frames_from_the_caller_to_the_start_are_whole() {
        use super::is_whole;
        // The unwinder's frames: two of its own, then the caller's five, then libc's two.
        let unwound = [90, 91, 10, 11, 12, 13, 14, 80, 81];
        assert!(is_whole(&[10, 11, 12, 13, 14], &unwound, 2));
        // Began further out (skipping the caller), though it ends where a whole walk does.
        assert!(!is_whole(&[12, 13, 14], &unwound, 2));
        // A frame skipped (a function without a frame pointer).
        assert!(!is_whole(&[10, 11, 13, 14], &unwound, 2));
        // Stopped short: more than libc's frames lie beyond.
        assert!(!is_whole(&[10, 11], &unwound, 2));
        // Strayed outside the stack's frames, or walked nothing.
        assert!(!is_whole(&[10, 11, 12, 13, 14, 15], &unwound, 2));
        assert!(!is_whole(&[], &unwound, 2));
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

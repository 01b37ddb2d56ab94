//! Where threads, descriptors and child processes come from.
//!
//! tokio says where each task was spawned; for a thread, a descriptor or a child the OS keeps
//! only a 15-byte name, a number or a command line. So leakcheck defines the C functions that
//! create them (`pthread_create`, `pthread_setname_np`, `socket`, `open`, `opendir`, `pipe2`,
//! `eventfd`, `posix_spawn`, `fork`, ...) in the
//! binary it is linked into. A definition in the executable wins over libc's for every caller
//! linked into it (std, tokio, mio, librdkafka's C code); each hook calls the real function found
//! with `dlsym(RTLD_NEXT)`. While a check of threads, descriptors or children runs, a hook records the
//! caller's stack as raw addresses (the frame-pointer walk of spawn backtraces) and the calling
//! thread; symbols are resolved only for survivors. Outside checks a hook costs an atomic load
//! and an increment: it counts what it made or closed (see [`made`]), recorded or not, and a
//! descriptor's hook stamps its number with that count (see [`fd_stamp`]).
//!
//! Not seen: calls made from inside shared libraries (they bind to libc's functions directly),
//! descriptors made by calls not hooked here (`memfd_create`, `signalfd`, `recvmsg` with `SCM_RIGHTS`, ...),
//! and children started with `vfork` or `clone` (a hook cannot return into a `vfork`ed child).
//! Such a survivor simply has no origin. Off with `default-features = false` (feature `origins`).

/// Where a thread was started, and its name in full (Linux keeps 15 bytes of it).
#[derive(Clone, Debug)]
pub(crate) struct ThreadOrigin {
    pub(crate) name: Option<String>,
    /// The recording generation it was made in.
    pub(crate) gen: u64,
    /// The thread that called `pthread_create`.
    pub(crate) creator: i32,
    pub(crate) frames: Vec<usize>,
}

/// Where a child process was started.
#[derive(Clone, Debug)]
pub(crate) struct ChildOrigin {
    /// The recording generation it was made in.
    pub(crate) gen: u64,
    /// The thread that started it, and that thread's (15-byte) name then.
    pub(crate) creator: i32,
    pub(crate) creator_name: String,
    pub(crate) frames: Vec<usize>,
}

/// Where a descriptor was created.
#[derive(Clone, Debug)]
pub(crate) struct FdOrigin {
    /// The recording generation it was made in.
    pub(crate) gen: u64,
    /// The thread that created it.
    pub(crate) creator: i32,
    pub(crate) frames: Vec<usize>,
}

#[cfg(all(
    feature = "origins",
    target_os = "linux",
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod imp {
    use std::ffi::{c_char, c_int, c_uint, c_void};
    use std::ptr::null_mut;
    use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
    use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize};
    use std::sync::Mutex;

    use rustc_hash::FxHashMap;

    use super::{ChildOrigin, FdOrigin, ThreadOrigin};
    use crate::tasks::capture_whole;

    /// Checks recording now; hooks record only while it is above zero.
    static ACTIVE: AtomicUsize = AtomicUsize::new(0);
    /// The recording generation: an entry of an older one is stale (its descriptor was closed
    /// by a call not hooked here, or its thread started before the check).
    static GEN: AtomicU64 = AtomicU64::new(0);
    /// Recordings of checks running now (a whole-binary check's not counted).
    static CHECKS: AtomicUsize = AtomicUsize::new(0);
    /// Whether a hook ever ran: the binary was linked with them.
    static SEEN: AtomicBool = AtomicBool::new(false);
    /// Descriptors made or closed through the hooks so far, recorded or not, but for
    /// leakcheck's own. Counted after the call, as threads are: a reading of `/proc` taken
    /// after a count saw what it counts.
    static FD_CHANGES: AtomicU64 = AtomicU64::new(0);
    /// Threads started through the hooks so far: by the main thread, and by the others.
    static MAIN_THREADS_MADE: AtomicU64 = AtomicU64::new(0);
    static THREADS_MADE: AtomicU64 = AtomicU64::new(0);

    /// Per descriptor number, the count of [`FD_CHANGES`] when it was last made or closed
    /// through the hooks: a number closed and made again has a new stamp, even where its
    /// `/proc` target reads the same (every epoll or eventfd descriptor is
    /// `anon_inode:[eventpoll]` or `anon_inode:[eventfd]`).
    static FD_STAMPS: [AtomicU64; FD_SLOTS] = [const { AtomicU64::new(0) }; FD_SLOTS];

    /// Counts a change of descriptor `fd` (made, closed or replaced), after the call.
    fn count_fd_change(fd: c_int) {
        let n = FD_CHANGES.fetch_add(1, Relaxed) + 1;
        if let Some(stamp) = FD_STAMPS.get(fd as usize) {
            stamp.store(n, Release);
        }
    }

    /// Counts a descriptor closed (or replaced), after the call.
    fn count_closed(fd: c_int) {
        if fd >= 0 && !QUIET.try_with(|q| q.get()).unwrap_or(false) {
            count_fd_change(fd);
        }
    }

    pub(crate) fn fd_stamp(fd: i32) -> u64 {
        usize::try_from(fd)
            .ok()
            .and_then(|i| FD_STAMPS.get(i))
            .map_or(0, |s| s.load(Acquire))
    }

    /// Counts a thread started, after the call.
    fn count_thread() {
        if on_main_thread() {
            MAIN_THREADS_MADE.fetch_add(1, Relaxed);
        } else {
            THREADS_MADE.fetch_add(1, Relaxed);
        }
    }

    /// Whether this is the process's main thread (whose id is the process's).
    fn on_main_thread() -> bool {
        this_thread().1
    }

    /// Descriptors below this number have a slot; higher ones have no origin.
    const FD_SLOTS: usize = 1 << 16;

    struct FdNode {
        gen: u64,
        creator: i32,
        frames: Box<[usize]>,
        /// The next node on the retired list.
        next: *mut FdNode,
    }

    /// One slot per descriptor number, written by hooks without locks: a hook may run in a
    /// forked child, or while any lock is held.
    static FDS: [AtomicPtr<FdNode>; FD_SLOTS] = [const { AtomicPtr::new(null_mut()) }; FD_SLOTS];
    /// Nodes replaced while a check may read them, freed when the next check begins alone.
    static RETIRED: AtomicPtr<FdNode> = AtomicPtr::new(null_mut());

    struct ThreadEntry {
        gen: u64,
        pthread: libc::pthread_t,
        origin: ThreadOrigin,
    }

    static THREADS: Mutex<Option<FxHashMap<i32, ThreadEntry>>> = Mutex::new(None);

    /// Children started through the hooks while recording, by pid (a pid used again replaces
    /// its entry; an entry of an older generation is stale).
    static CHILDREN: Mutex<Option<FxHashMap<i32, ChildOrigin>>> = Mutex::new(None);

    /// Notes that a hook ran. Read first: a store on every call would bounce the flag's cache
    /// line between every thread that opens or closes a descriptor.
    #[inline]
    fn mark_seen() {
        if !SEEN.load(Relaxed) {
            SEEN.store(true, Relaxed);
        }
    }

    #[inline]
    fn recording() -> bool {
        ACTIVE.load(Relaxed) > 0
    }

    fn tid() -> i32 {
        this_thread().0
    }

    /// This thread's id and whether it is the main thread, asked of the kernel once per thread.
    fn this_thread() -> (i32, bool) {
        use std::cell::Cell;
        thread_local! { static ME: Cell<(i32, bool)> = const { Cell::new((0, false)) } }
        let ask = || {
            // SAFETY: gettid and getpid have no preconditions.
            let tid = unsafe { libc::gettid() };
            (tid, tid == unsafe { libc::getpid() })
        };
        ME.try_with(|me| {
            if me.get().0 == 0 {
                me.set(ask());
            }
            me.get()
        })
        .unwrap_or_else(|_| ask())
    }

    /// The real function behind a hook, looked up once.
    macro_rules! real {
        ($name:expr; $ty:ty) => {{
            static ADDR: AtomicUsize = AtomicUsize::new(0);
            let mut a = ADDR.load(Relaxed);
            if a == 0 {
                // SAFETY: a NUL-terminated name; RTLD_NEXT finds libc's definition.
                a = unsafe { libc::dlsym(libc::RTLD_NEXT, concat!($name, "\0").as_ptr().cast()) }
                    as usize;
                if a == 0 {
                    let msg = concat!("leakcheck: no libc function ", $name, " to call\n");
                    // SAFETY: writes a static buffer to stderr, then aborts.
                    unsafe {
                        libc::write(2, msg.as_ptr().cast(), msg.len());
                        libc::abort();
                    }
                }
                ADDR.store(a, Relaxed);
            }
            // SAFETY: `a` is libc's function of this name, whose C signature `$ty` spells.
            unsafe { std::mem::transmute::<usize, $ty>(a) }
        }};
    }

    fn retire(p: *mut FdNode) {
        if p.is_null() {
            return;
        }
        let mut head = RETIRED.load(Acquire);
        loop {
            // SAFETY: `p` was taken out of its slot by this thread; nobody else writes it.
            unsafe { (*p).next = head };
            match RETIRED.compare_exchange_weak(head, p, Release, Acquire) {
                Ok(_) => return,
                Err(h) => head = h,
            }
        }
    }

    thread_local! {
        /// Set while leakcheck reads `/proc` on this thread: its own descriptors need no origin.
        static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Runs `f` with this thread's descriptors unrecorded.
    pub(crate) fn unrecorded<R>(f: impl FnOnce() -> R) -> R {
        let was = QUIET.with(|q| q.replace(true));
        let out = f();
        QUIET.with(|q| q.set(was));
        out
    }

    #[inline(never)]
    fn record_fd(fd: c_int) {
        mark_seen();
        if fd < 0 || QUIET.try_with(|q| q.get()).unwrap_or(false) {
            return;
        }
        count_fd_change(fd);
        if !recording() {
            return;
        }
        let Some(slot) = FDS.get(fd as usize) else {
            return;
        };
        let node = Box::into_raw(Box::new(FdNode {
            gen: GEN.load(Relaxed),
            creator: tid(),
            frames: stack().into_boxed_slice(),
            next: null_mut(),
        }));
        retire(slot.swap(node, AcqRel));
    }

    /// The caller's stack: the frame-pointer walk when it is whole, else the unwinder's (C code
    /// built without frame pointers, librdkafka's, which starts threads and opens sockets; a
    /// build without them). See `tasks::capture_whole`.
    fn stack() -> Vec<usize> {
        capture_whole()
    }

    fn forget_fd(fd: c_int) {
        mark_seen();
        if fd < 0 || !recording() {
            return;
        }
        if let Some(slot) = FDS.get(fd as usize) {
            if !slot.load(Relaxed).is_null() {
                retire(slot.swap(null_mut(), AcqRel));
            }
        }
    }

    /// Held to read a node out of a slot, and (exclusively) to free retired nodes: a node a
    /// reader holds is never freed under it. Hooks never take it (they may run in a forked
    /// child, or while any lock is held).
    static FREEING: std::sync::RwLock<()> = std::sync::RwLock::new(());

    pub(crate) fn made() -> super::Made {
        super::Made {
            fds: FD_CHANGES.load(Acquire),
            threads: THREADS_MADE.load(Acquire),
            threads_by_main: MAIN_THREADS_MADE.load(Acquire),
        }
    }

    /// Starts recording; returns this recording's generation. Frees the nodes replaced since
    /// the last start (a whole-binary check records for the life of the process, so this
    /// cannot wait for a moment when nothing records).
    pub(crate) fn begin(whole_binary: bool) -> u64 {
        ACTIVE.fetch_add(1, AcqRel);
        if !whole_binary {
            CHECKS.fetch_add(1, AcqRel);
        }
        {
            let _alone = FREEING.write().unwrap_or_else(|e| e.into_inner());
            let mut p = RETIRED.swap(null_mut(), AcqRel);
            while !p.is_null() {
                // SAFETY: retired nodes are in no slot, and no reader holds one: readers hold
                // `FREEING` shared.
                let node = unsafe { Box::from_raw(p) };
                p = node.next;
            }
        }
        GEN.fetch_add(1, AcqRel) + 1
    }

    pub(crate) fn end(whole_binary: bool) {
        ACTIVE.fetch_sub(1, AcqRel);
        // What is made after a check's recording is not its own: a whole-binary check tells
        // them apart by generation. While another check records (it began before this one's
        // recording was dropped), the generation stays: its records must keep its generation.
        if whole_binary || CHECKS.fetch_sub(1, AcqRel) == 1 {
            GEN.fetch_add(1, AcqRel);
        }
    }

    /// Whether the hooks are linked in: a descriptor made now passes through them.
    pub(crate) fn interposed() -> bool {
        if !SEEN.load(Relaxed) {
            // SAFETY: plain calls; the descriptor is closed at once.
            unsafe {
                let fd = libc::eventfd(0, libc::EFD_CLOEXEC);
                if fd >= 0 {
                    libc::close(fd);
                }
            }
        }
        SEEN.load(Relaxed)
    }

    /// Reads what `read` needs of descriptor `fd`'s node, if it has one.
    fn read_fd<R>(fd: i32, read: impl FnOnce(&FdNode) -> R) -> Option<R> {
        let slot = FDS.get(usize::try_from(fd).ok()?)?;
        let _reading = FREEING.read().unwrap_or_else(|e| e.into_inner());
        let p = slot.load(Acquire);
        if p.is_null() {
            return None;
        }
        // SAFETY: nodes are freed only under `FREEING` held exclusively; this holds it shared.
        Some(read(unsafe { &*p }))
    }

    pub(crate) fn fd(fd: i32) -> Option<FdOrigin> {
        read_fd(fd, |n| FdOrigin {
            gen: n.gen,
            creator: n.creator,
            frames: n.frames.to_vec(),
        })
    }

    /// Descriptor `fd`'s generation and creating thread, without copying its stack.
    pub(crate) fn fd_creator(fd: i32) -> Option<(u64, i32)> {
        read_fd(fd, |n| (n.gen, n.creator))
    }

    pub(crate) fn child(pid: i32) -> Option<ChildOrigin> {
        let children = CHILDREN.lock().unwrap_or_else(|e| e.into_inner());
        children.as_ref()?.get(&pid).cloned()
    }

    /// Records child `pid`, started by this thread (in the parent, after the call).
    fn record_child(pid: libc::pid_t) {
        mark_seen();
        if pid <= 0 || !recording() {
            return;
        }
        let origin = ChildOrigin {
            gen: GEN.load(Relaxed),
            creator: tid(),
            creator_name: crate::process::current_thread_name(),
            frames: stack(),
        };
        CHILDREN
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(FxHashMap::default)
            .insert(pid, origin);
    }

    /// Defines hooks for the `posix_spawn` family (std's `Command::spawn` uses `posix_spawnp`
    /// where it can): the child's pid is written to the caller's `pid` on success.
    macro_rules! spawn_hooks {
        ($($name:ident),*) => {$(
            /// # Safety
            /// As libc's function of this name.
            #[no_mangle]
            pub unsafe extern "C" fn $name(
                pid: *mut libc::pid_t,
                path: *const c_char,
                actions: *const libc::posix_spawn_file_actions_t,
                attr: *const libc::posix_spawnattr_t,
                argv: *const *mut c_char,
                envp: *const *mut c_char,
            ) -> c_int {
                let real = real!(stringify!($name); unsafe extern "C" fn(
                    *mut libc::pid_t,
                    *const c_char,
                    *const libc::posix_spawn_file_actions_t,
                    *const libc::posix_spawnattr_t,
                    *const *mut c_char,
                    *const *mut c_char,
                ) -> c_int);
                // SAFETY: the caller's arguments, unchanged.
                let rc = unsafe { real(pid, path, actions, attr, argv, envp) };
                if rc == 0 && !pid.is_null() {
                    // SAFETY: on success the call wrote the child's pid to the caller's `pid`.
                    record_child(unsafe { *pid });
                }
                rc
            }
        )*};
    }

    spawn_hooks!(posix_spawn, posix_spawnp);

    /// # Safety
    /// As libc's `fork` (std's `Command::spawn` falls back to it). The child returns at once:
    /// it may run only async-signal-safe code until it execs.
    #[no_mangle]
    pub unsafe extern "C" fn fork() -> libc::pid_t {
        let real = real!("fork"; unsafe extern "C" fn() -> libc::pid_t);
        // SAFETY: no arguments; the caller's contract is libc's.
        let pid = unsafe { real() };
        if pid > 0 {
            record_child(pid);
        }
        pid
    }

    pub(crate) fn thread(tid: i32) -> Option<ThreadOrigin> {
        let threads = THREADS.lock().unwrap_or_else(|e| e.into_inner());
        let e = threads.as_ref()?.get(&tid)?;
        Some(ThreadOrigin {
            gen: e.gen,
            ..e.origin.clone()
        })
    }

    type StartFn = extern "C" fn(*mut c_void) -> *mut c_void;
    /// C11's `thrd_start_t`.
    type ThrdStartFn = extern "C" fn(*mut c_void) -> c_int;

    /// What a trampoline needs to record the new thread and run its function.
    struct Start<F> {
        start: F,
        arg: *mut c_void,
        gen: u64,
        origin: ThreadOrigin,
    }

    impl<F> Start<F> {
        /// Boxes what the new thread needs, with the creating thread's stack.
        fn boxed(start: F, arg: *mut c_void) -> *mut Self {
            Box::into_raw(Box::new(Start {
                start,
                arg,
                gen: GEN.load(Relaxed),
                origin: ThreadOrigin {
                    name: None,
                    gen: 0,
                    creator: tid(),
                    frames: stack(),
                },
            }))
        }

        /// On the new thread: records it, runs `run(start, arg)`, and forgets it once it returns.
        ///
        /// # Safety
        /// `p` is a `Start<F>` from [`Start::boxed`], handed over once.
        unsafe fn run<R>(p: *mut c_void, run: impl FnOnce(F, *mut c_void) -> R) -> R {
            // SAFETY: as the caller promises.
            let s = unsafe { Box::from_raw(p.cast::<Start<F>>()) };
            let Start {
                start,
                arg,
                gen,
                origin,
            } = *s;
            let me = tid();
            // SAFETY: pthread_self has no preconditions.
            let pthread = unsafe { libc::pthread_self() };
            THREADS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert_with(FxHashMap::default)
                .insert(
                    me,
                    ThreadEntry {
                        gen,
                        pthread,
                        origin,
                    },
                );
            let ret = run(start, arg);
            if let Some(m) = THREADS.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                m.remove(&me);
            }
            ret
        }
    }

    extern "C" fn trampoline(p: *mut c_void) -> *mut c_void {
        // SAFETY: `pthread_create` below passes its boxed `Start<StartFn>`.
        unsafe { Start::<StartFn>::run(p, |f, arg| f(arg)) }
    }

    extern "C" fn thrd_trampoline(p: *mut c_void) -> c_int {
        // SAFETY: `thrd_create` below passes its boxed `Start<ThrdStartFn>`.
        unsafe { Start::<ThrdStartFn>::run(p, |f, arg| f(arg)) }
    }

    /// # Safety
    /// As libc's `pthread_create`.
    #[no_mangle]
    pub unsafe extern "C" fn pthread_create(
        thread: *mut libc::pthread_t,
        attr: *const libc::pthread_attr_t,
        start: StartFn,
        arg: *mut c_void,
    ) -> c_int {
        mark_seen();
        let real = real!("pthread_create"; unsafe extern "C" fn(*mut libc::pthread_t, *const libc::pthread_attr_t, StartFn, *mut c_void) -> c_int);
        if !recording() {
            // SAFETY: the caller's arguments, unchanged.
            let rc = unsafe { real(thread, attr, start, arg) };
            count_thread();
            return rc;
        }
        let s = Start::boxed(start, arg);
        // SAFETY: the trampoline takes `s` back and calls `start(arg)`.
        let rc = unsafe { real(thread, attr, trampoline, s.cast()) };
        count_thread();
        if rc != 0 {
            // SAFETY: no thread started: `s` is still ours.
            drop(unsafe { Box::from_raw(s) });
        }
        rc
    }

    /// C11's `thrd_create`: glibc implements it without going through `pthread_create`, and
    /// librdkafka starts its threads with it.
    ///
    /// # Safety
    /// As libc's `thrd_create`.
    #[no_mangle]
    pub unsafe extern "C" fn thrd_create(
        thread: *mut libc::pthread_t,
        start: ThrdStartFn,
        arg: *mut c_void,
    ) -> c_int {
        mark_seen();
        let real = real!("thrd_create"; unsafe extern "C" fn(*mut libc::pthread_t, ThrdStartFn, *mut c_void) -> c_int);
        if !recording() {
            // SAFETY: the caller's arguments, unchanged.
            let rc = unsafe { real(thread, start, arg) };
            count_thread();
            return rc;
        }
        let s = Start::boxed(start, arg);
        // SAFETY: the trampoline takes `s` back and calls `start(arg)`.
        let rc = unsafe { real(thread, thrd_trampoline, s.cast()) };
        count_thread();
        // thrd_success is 0.
        if rc != 0 {
            // SAFETY: no thread started: `s` is still ours.
            drop(unsafe { Box::from_raw(s) });
        }
        rc
    }

    /// # Safety
    /// As libc's `pthread_setname_np`.
    #[no_mangle]
    pub unsafe extern "C" fn pthread_setname_np(
        thread: libc::pthread_t,
        name: *const c_char,
    ) -> c_int {
        let real = real!("pthread_setname_np"; unsafe extern "C" fn(libc::pthread_t, *const c_char) -> c_int);
        if recording() && !name.is_null() {
            // SAFETY: the caller passes a NUL-terminated name.
            let given = unsafe { std::ffi::CStr::from_ptr(name) }
                .to_string_lossy()
                .into_owned();
            // SAFETY: pthread_self has no preconditions.
            let own = thread == unsafe { libc::pthread_self() };
            // std cuts a long name to 15 bytes before this call, and sets the thread's handle
            // (which keeps the whole name) first, so a Rust thread naming itself has it.
            let full = if own && given.len() >= 15 {
                std::thread::current()
                    .name()
                    .filter(|n| n.starts_with(&given))
                    .map(str::to_string)
            } else {
                None
            };
            let mut threads = THREADS.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(m) = threads.as_mut() {
                let entry = if own {
                    m.get_mut(&tid())
                } else {
                    m.values_mut().find(|e| e.pthread == thread)
                };
                if let Some(e) = entry {
                    e.origin.name = Some(full.unwrap_or(given));
                }
            }
        }
        // SAFETY: the caller's arguments, unchanged.
        let rc = unsafe { real(thread, name) };
        // Counted after the rename: a scan that read the count before it reads the new name
        // only under a newer count.
        // SAFETY: pthread_self has no preconditions.
        if thread == unsafe { libc::pthread_self() } {
            RENAMES[tid() as usize % RENAME_SLOTS].fetch_add(1, AcqRel);
        } else {
            OTHER_RENAMES.fetch_add(1, AcqRel);
        }
        rc
    }

    /// Renames through the hook, per slot of the renamed thread's tid; renames of another
    /// thread (whose tid the hook does not know) in one count for all.
    const RENAME_SLOTS: usize = 1024;
    static RENAMES: [AtomicU64; RENAME_SLOTS] = [const { AtomicU64::new(0) }; RENAME_SLOTS];
    static OTHER_RENAMES: AtomicU64 = AtomicU64::new(0);

    /// A count that changes whenever thread `tid` may have been renamed through
    /// `pthread_setname_np` (it also changes on some renames of other threads).
    pub(crate) fn renames(tid: i32) -> u64 {
        RENAMES[tid as usize % RENAME_SLOTS].load(Acquire) + OTHER_RENAMES.load(Acquire)
    }

    /// Defines hooks that call the real function and record the descriptor it returns.
    macro_rules! fd_hooks {
        ($( fn $name:ident($($arg:ident: $ty:ty),*); )*) => {$(
            /// # Safety
            /// As libc's function of this name.
            #[no_mangle]
            pub unsafe extern "C" fn $name($($arg: $ty),*) -> c_int {
                let real = real!(stringify!($name); unsafe extern "C" fn($($ty),*) -> c_int);
                // SAFETY: the caller's arguments, unchanged.
                let fd = unsafe { real($($arg),*) };
                record_fd(fd);
                fd
            }
        )*};
    }

    fd_hooks! {
        fn socket(domain: c_int, ty: c_int, protocol: c_int);
        fn accept(fd: c_int, addr: *mut libc::sockaddr, len: *mut libc::socklen_t);
        fn accept4(fd: c_int, addr: *mut libc::sockaddr, len: *mut libc::socklen_t, flags: c_int);
        fn eventfd(init: c_uint, flags: c_int);
        fn epoll_create(size: c_int);
        fn epoll_create1(flags: c_int);
        fn timerfd_create(clock: c_int, flags: c_int);
        fn inotify_init1(flags: c_int);
        fn dup(fd: c_int);
    }

    /// Defines hooks for the `open` family. They are variadic in C (the mode comes only with
    /// `O_CREAT` or `O_TMPFILE`); defining a variadic function needs nightly Rust, so the hook
    /// takes the mode as a fixed argument: on x86_64 and aarch64 Linux a variadic integer is
    /// passed where a fixed one is, and the real function reads it only when the flags say so.
    macro_rules! open_hooks {
        ($( fn $name:ident($($arg:ident: $ty:ty),*); )*) => {$(
            /// # Safety
            /// As libc's function of this name.
            #[no_mangle]
            pub unsafe extern "C" fn $name($($arg: $ty,)* mode: c_uint) -> c_int {
                let real = real!(stringify!($name); unsafe extern "C" fn($($ty,)* ...) -> c_int);
                // SAFETY: the caller's arguments, unchanged.
                let fd = unsafe { real($($arg,)* mode) };
                record_fd(fd);
                fd
            }
        )*};
    }

    open_hooks! {
        fn open(path: *const c_char, flags: c_int);
        fn open64(path: *const c_char, flags: c_int);
        fn openat(dir: c_int, path: *const c_char, flags: c_int);
        fn openat64(dir: c_int, path: *const c_char, flags: c_int);
    }

    /// Defines hooks for calls that fill an array of two descriptors.
    macro_rules! pair_hooks {
        ($( fn $name:ident($($arg:ident: $ty:ty),*), $fds:ident; )*) => {$(
            /// # Safety
            /// As libc's function of this name.
            #[no_mangle]
            pub unsafe extern "C" fn $name($($arg: $ty),*) -> c_int {
                let real = real!(stringify!($name); unsafe extern "C" fn($($ty),*) -> c_int);
                // SAFETY: the caller's arguments, unchanged.
                let rc = unsafe { real($($arg),*) };
                if rc == 0 {
                    // SAFETY: on success the call wrote two descriptors to the caller's array.
                    unsafe {
                        record_fd(*$fds);
                        record_fd(*$fds.add(1));
                    }
                }
                rc
            }
        )*};
    }

    pair_hooks! {
        fn pipe(fds: *mut c_int), fds;
        fn pipe2(fds: *mut c_int, flags: c_int), fds;
        fn socketpair(domain: c_int, ty: c_int, protocol: c_int, fds: *mut c_int), fds;
    }

    /// Defines hooks for `fcntl`, variadic like `open` (its third argument is an integer or a
    /// pointer, passed in the same register): only the duplicating commands make a descriptor
    /// (`try_clone` of a socket or of mio's poller).
    macro_rules! fcntl_hooks {
        ($($name:ident),*) => {$(
            /// # Safety
            /// As libc's function of this name.
            #[no_mangle]
            pub unsafe extern "C" fn $name(fd: c_int, cmd: c_int, arg: usize) -> c_int {
                let real = real!(stringify!($name); unsafe extern "C" fn(c_int, c_int, ...) -> c_int);
                // SAFETY: the caller's arguments, unchanged.
                let rc = unsafe { real(fd, cmd, arg) };
                if cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC {
                    record_fd(rc);
                }
                rc
            }
        )*};
    }

    fcntl_hooks!(fcntl, fcntl64);

    /// # Safety
    /// As libc's `opendir`. std's `read_dir` calls it, and libc opens the directory's
    /// descriptor inside itself, where the `open` hooks do not see it.
    #[no_mangle]
    pub unsafe extern "C" fn opendir(path: *const c_char) -> *mut libc::DIR {
        let real = real!("opendir"; unsafe extern "C" fn(*const c_char) -> *mut libc::DIR);
        // SAFETY: the caller's argument.
        let dir = unsafe { real(path) };
        if !dir.is_null() {
            // SAFETY: a directory stream libc just opened.
            record_fd(unsafe { libc::dirfd(dir) });
        }
        dir
    }

    /// # Safety
    /// As libc's `closedir` (it closes the descriptor inside libc: see [`opendir`]).
    #[no_mangle]
    pub unsafe extern "C" fn closedir(dir: *mut libc::DIR) -> c_int {
        let real = real!("closedir"; unsafe extern "C" fn(*mut libc::DIR) -> c_int);
        // SAFETY: the caller's stream, open until the real call.
        let fd = unsafe { libc::dirfd(dir) };
        forget_fd(fd);
        // SAFETY: the caller's argument.
        let rc = unsafe { real(dir) };
        count_closed(fd);
        rc
    }

    /// # Safety
    /// As libc's `close`.
    #[no_mangle]
    pub unsafe extern "C" fn close(fd: c_int) -> c_int {
        let real = real!("close"; unsafe extern "C" fn(c_int) -> c_int);
        forget_fd(fd);
        // SAFETY: the caller's argument.
        let rc = unsafe { real(fd) };
        count_closed(fd);
        rc
    }

    /// # Safety
    /// As libc's `dup2`.
    #[no_mangle]
    pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
        let real = real!("dup2"; unsafe extern "C" fn(c_int, c_int) -> c_int);
        // In a forked child this runs between fork and exec: forget only, allocate nothing.
        forget_fd(new);
        // SAFETY: the caller's arguments.
        let rc = unsafe { real(old, new) };
        count_closed(new);
        rc
    }

    /// # Safety
    /// As libc's `dup3`.
    #[no_mangle]
    pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
        let real = real!("dup3"; unsafe extern "C" fn(c_int, c_int, c_int) -> c_int);
        forget_fd(new);
        // SAFETY: the caller's arguments.
        let rc = unsafe { real(old, new, flags) };
        count_closed(new);
        rc
    }
}

#[cfg(not(all(
    feature = "origins",
    target_os = "linux",
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
mod imp {
    use super::{ChildOrigin, FdOrigin, ThreadOrigin};

    pub(crate) fn begin(_whole_binary: bool) -> u64 {
        0
    }
    pub(crate) fn end(_whole_binary: bool) {}
    pub(crate) fn interposed() -> bool {
        false
    }
    pub(crate) fn made() -> super::Made {
        super::Made::default()
    }
    pub(crate) fn fd(_fd: i32) -> Option<FdOrigin> {
        None
    }
    pub(crate) fn fd_creator(_fd: i32) -> Option<(u64, i32)> {
        None
    }
    pub(crate) fn child(_pid: i32) -> Option<ChildOrigin> {
        None
    }
    pub(crate) fn fd_stamp(_fd: i32) -> u64 {
        0
    }
    pub(crate) fn renames(_tid: i32) -> u64 {
        0
    }
    pub(crate) fn thread(_tid: i32) -> Option<ThreadOrigin> {
        None
    }
    pub(crate) fn unrecorded<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
}

/// A count that changes whenever thread `tid` may have been renamed, or `None` where renames
/// are not seen (the hooks are not in the binary): then a name must be read every time.
pub(crate) fn renames(tid: i32) -> Option<u64> {
    imp::interposed().then(|| imp::renames(tid))
}

/// What the hooks saw made so far; `None` where they are not in the binary. Unchanged between
/// two moments: nothing was made or closed meanwhile but by calls not hooked (see the module
/// docs).
pub(crate) fn made() -> Option<Made> {
    imp::interposed().then(imp::made)
}

/// A stamp that changes whenever descriptor number `fd` is made or closed through the hooks;
/// always 0 without them. Read before the descriptor's target, it tells a descriptor listed
/// twice from one closed and made again under the same number meanwhile.
pub(crate) fn fd_stamp(fd: i32) -> u64 {
    imp::fd_stamp(fd)
}

/// Counts of what the hooks saw made, from the start of the process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Made {
    /// Descriptors made or closed, leakcheck's own left out.
    pub(crate) fds: u64,
    /// Threads started by threads other than the main one.
    pub(crate) threads: u64,
    /// Threads started by the main thread (libtest's, starting tests).
    pub(crate) threads_by_main: u64,
}

/// Runs `f` (leakcheck reading `/proc`, or its own files) without recording or counting the
/// descriptors it opens.
pub(crate) fn unrecorded<R>(f: impl FnOnce() -> R) -> R {
    imp::unrecorded(f)
}

/// Records origins while alive: one per check of threads, descriptors or children.
pub(crate) struct Recording {
    gen: u64,
    /// A whole-binary check's: it sees what is made in later generations too (the checks that
    /// run inside it start new ones).
    later: bool,
}

impl Recording {
    pub(crate) fn start() -> Self {
        Recording {
            gen: imp::begin(false),
            later: false,
        }
    }

    /// A recording for the life of the process: every later generation is its own as well.
    pub(crate) fn start_whole_binary() -> Self {
        Recording {
            gen: imp::begin(true),
            later: true,
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.gen
    }

    fn sees(&self, gen: u64) -> bool {
        gen == self.gen || (self.later && gen > self.gen)
    }

    /// Whether origins are being recorded at all (the hooks are linked into this binary).
    pub(crate) fn works(&self) -> bool {
        imp::interposed()
    }

    pub(crate) fn thread(&self, tid: i32) -> Option<ThreadOrigin> {
        imp::thread(tid).filter(|o| self.sees(o.gen))
    }

    pub(crate) fn fd(&self, fd: i32) -> Option<FdOrigin> {
        imp::fd(fd).filter(|o| self.sees(o.gen))
    }

    /// The thread that created descriptor `fd` (as [`Recording::fd`], without its stack).
    pub(crate) fn fd_creator(&self, fd: i32) -> Option<i32> {
        imp::fd_creator(fd)
            .filter(|(gen, _)| self.sees(*gen))
            .map(|(_, creator)| creator)
    }

    pub(crate) fn child(&self, pid: i32) -> Option<ChildOrigin> {
        imp::child(pid).filter(|o| self.sees(o.gen))
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        imp::end(self.later);
    }
}

#[cfg(all(
    test,
    feature = "origins",
    target_os = "linux",
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod tests {
    use super::Recording;
    use std::os::fd::AsRawFd;

    /// A recording started by another test of this module would take the generation of what
    /// these tests make: they run one at a time.
    fn alone() -> std::sync::MutexGuard<'static, ()> {
        static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
        ALONE.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn made_here(frames: &[usize]) -> bool {
        crate::tasks::resolve_frames(frames).iter().any(|f| {
            f.function
                .contains("records_where_threads_and_descriptors_are_made")
        })
    }

    /// A check's recording dropped after the next check's began (the turn passed on before the
    /// drop) leaves the next one's origins its own.
    #[test]
    fn a_recording_ended_late_keeps_the_next_ones_origins() {
        let _alone = alone();
        let first = Recording::start();
        let second = Recording::start();
        drop(first);
        // SAFETY: a fresh eventfd, closed at once.
        let found = unsafe {
            let fd = libc::eventfd(0, libc::EFD_CLOEXEC);
            let found = second.fd(fd).is_some();
            libc::close(fd);
            found
        };
        assert!(found, "the eventfd's origin was lost");
    }

    #[test]
    fn records_where_children_are_started() {
        let _alone = alone();
        let rec = Recording::start();
        // std spawns through `posix_spawnp` here; `pre_exec` makes it fork instead.
        let plain = std::process::Command::new("true").spawn().unwrap();
        let forked = {
            use std::os::unix::process::CommandExt;
            let mut c = std::process::Command::new("true");
            // SAFETY: the closure does nothing.
            unsafe { c.pre_exec(|| Ok(())) };
            c.spawn().unwrap()
        };
        for mut child in [plain, forked] {
            // Read unfiltered: another test of this binary may start a recording meanwhile,
            // and the child's generation is then that one's.
            let o = super::imp::child(child.id() as i32).expect("the child's origin");
            assert!(o.gen >= rec.generation());
            assert_eq!(o.creator, crate::process::current_tid());
            assert_eq!(o.creator_name, crate::process::current_thread_name());
            assert!(
                crate::tasks::resolve_frames(&o.frames)
                    .iter()
                    .any(|f| f.function.contains("records_where_children_are_started")),
                "{:?}",
                crate::tasks::resolve_frames(&o.frames)
            );
            child.wait().unwrap();
        }
        // A new recording ignores older ones.
        let _next = Recording::start();
        let mut after = std::process::Command::new("true").spawn().unwrap();
        assert!(rec.child(after.id() as i32).is_none());
        after.wait().unwrap();
    }

    #[test]
    fn records_where_threads_and_descriptors_are_made() {
        let _alone = alone();
        let rec = Recording::start();
        assert!(rec.works());
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let worker = std::thread::Builder::new()
            .name("a-name-longer-than-fifteen-bytes".into())
            .spawn(move || {
                tid_tx.send(crate::process::current_tid()).unwrap();
                let _ = stop_rx.recv();
            })
            .unwrap();
        let tid = tid_rx.recv().unwrap();

        let t = rec.thread(tid).expect("the thread's origin");
        assert_eq!(t.name.as_deref(), Some("a-name-longer-than-fifteen-bytes"));
        assert_eq!(t.creator, crate::process::current_tid());
        assert!(
            made_here(&t.frames),
            "{:?}",
            crate::tasks::resolve_frames(&t.frames)
        );
        let fd = sock.as_raw_fd();
        let f = rec.fd(fd).expect("the socket's origin");
        assert!(
            made_here(&f.frames),
            "{:?}",
            crate::tasks::resolve_frames(&f.frames)
        );

        // A closed descriptor forgets its origin; a new recording ignores older ones.
        drop(sock);
        assert!(rec.fd(fd).is_none());
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        assert!(rec.fd(file.as_raw_fd()).is_some());
        let next = Recording::start();
        assert!(next.fd(file.as_raw_fd()).is_none());
        drop(stop_tx);
        worker.join().unwrap();
    }
}

//! Engine benchmark: prints a table and writes `target/bench/leakcheck-engine.json`
//! (`leakcheck-engine-test-profile.json` when run with `--profile dev`, the profile tests use).
//!
//! Run with `cargo bench -p leakcheck --bench engine`. Every ratio is against plain tokio measured
//! in the same run on the same machine. `BENCH_SMOKE=1` runs every figure with a few iterations
//! and checks that each was produced and is finite (CI does this; no timing is judged).

use std::future::pending;
use std::time::{Duration, Instant};

use leakcheck::{Check, Kind, Kinds};

#[derive(serde::Serialize)]
struct Figure {
    name: &'static str,
    value: f64,
    unit: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio: Option<f64>,
    goal: &'static str,
}

impl Figure {
    /// A figure against `baseline` measured in the same run.
    fn against(name: &'static str, value: f64, unit: &'static str, baseline: f64) -> Figure {
        Figure {
            name,
            value,
            unit,
            baseline: Some(baseline),
            ratio: Some(value / baseline),
            goal: "",
        }
    }

    /// A figure of its own (a baseline itself, or a count).
    fn alone(name: &'static str, value: f64, unit: &'static str) -> Figure {
        Figure {
            name,
            value,
            unit,
            baseline: None,
            ratio: None,
            goal: "",
        }
    }
}

/// Whether this is CI's smoke run (`BENCH_SMOKE=1`): few iterations, no figure judged.
fn smoke() -> bool {
    std::env::var_os("BENCH_SMOKE").is_some_and(|v| !v.is_empty() && v != "0")
}

/// `full` iterations, or `quick` in a smoke run.
fn n(full: usize, quick: usize) -> usize {
    if smoke() {
        quick
    } else {
        full
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// ns per spawn+join on `rt`, median of REPEATS batches.
fn spawn_join_ns(rt: &tokio::runtime::Runtime) -> f64 {
    let spawns = n(200_000, 2_000);
    median(
        (0..n(7, 1))
            .map(|_| {
                rt.block_on(async {
                    let t = Instant::now();
                    for _ in 0..spawns {
                        tokio::spawn(async {}).await.unwrap();
                    }
                    t.elapsed().as_nanos() as f64 / spawns as f64
                })
            })
            .collect(),
    )
}

/// ns per call of `f`: the median of `rounds` rounds of `calls` calls.
fn ns_per_call(rounds: usize, calls: usize, mut f: impl FnMut()) -> f64 {
    median(
        (0..rounds)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..calls {
                    f();
                }
                t.elapsed().as_nanos() as f64 / calls as f64
            })
            .collect(),
    )
}

/// Spawns from outside the runtime (`Runtime::spawn` on this thread, a short stack), each
/// joined with `block_on`: ns per pair.
fn spawn_outside_ns(rt: &tokio::runtime::Runtime) -> f64 {
    ns_per_call(n(7, 1), n(50_000, 500), || {
        rt.block_on(rt.spawn(async {})).unwrap();
    })
}

fn tasks_only() -> Kinds {
    Kinds {
        tasks: true,
        threads: false,
        fds: false,
        children: false,
    }
}

/// One failing check with every kind leaking (a task, a thread, a file, a child), settle deadline
/// `deadline`: how long `finish()` takes, in ms.
fn failing_check_ms(deadline: Duration) -> f64 {
    let check = Check::builder()
        .settle_deadline(deadline)
        .start_multi_thread(2)
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("bench-leak".into())
        .spawn(move || {
            let _ = rx.recv();
        })
        .unwrap();
    let file = std::fs::File::open("/proc/self/stat").unwrap();
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    check.handle().spawn(pending::<()>());
    let t = Instant::now();
    let r = check.finish();
    let took = t.elapsed().as_secs_f64() * 1e3;
    for kind in [Kind::Task, Kind::Thread, Kind::Fd, Kind::Child] {
        assert!(
            r.unknown().any(|s| s.kind == kind),
            "{kind:?}: {}",
            r.to_text()
        );
    }
    // This profile has `debug = "line-tables-only"`: the task, the thread and the file still
    // name the line of this function that made them, through inlined frames.
    for kind in [Kind::Task, Kind::Thread, Kind::Fd] {
        assert!(
            r.unknown().any(|s| s.kind == kind
                && s.user_frame.as_ref().is_some_and(|f| {
                    f.function.ends_with("failing_check_ms")
                        && f.file.as_deref() == Some("leakcheck/benches/engine.rs")
                })),
            "{kind:?} without this function as its user frame: {}",
            r.to_text()
        );
    }
    drop(tx);
    thread.join().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    drop(file);
    took
}

fn main() {
    let mut figures = Vec::new();

    // 0. A failing check with every kind leaking pays one deadline (symbols and dump included),
    //    the first of the process as well (it loads debug info) as later ones.
    let deadline = Duration::from_millis(300);
    let first = failing_check_ms(deadline);
    let later = median((0..n(5, 1)).map(|_| failing_check_ms(deadline)).collect());
    for (name, value) in [
        (
            "failing check, every kind leaking, first of the process (deadline 300 ms)",
            first,
        ),
        (
            "failing check, every kind leaking, later ones (deadline 300 ms, median)",
            later,
        ),
    ] {
        figures.push(Figure {
            name,
            value,
            unit: "ms",
            baseline: Some(deadline.as_secs_f64() * 1e3),
            ratio: Some(value / (deadline.as_secs_f64() * 1e3)),
            goal: "<= deadline + 100 ms",
        });
    }

    // 1. Spawn + join: plain tokio vs location tracking vs location + backtraces, interleaved so
    //    that drift in the machine affects all three alike.
    let plain = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tracked = Check::builder()
        .kinds(tasks_only())
        .backtraces(false)
        .start_current_thread()
        .unwrap();
    let traced = Check::builder()
        .kinds(tasks_only())
        .backtraces(true)
        .start_current_thread()
        .unwrap();
    let (mut p, mut l, mut b) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n(3, 1) {
        p.push(spawn_join_ns(&plain));
        l.push(spawn_join_ns(tracked_rt(&tracked)));
        b.push(spawn_join_ns(tracked_rt(&traced)));
    }
    let (p, l, b) = (median(p), median(l), median(b));
    figures.push(Figure::alone("spawn+join, plain tokio", p, "ns"));
    figures.push(Figure {
        name: "spawn+join, location tracking",
        value: l,
        unit: "ns",
        baseline: Some(p),
        ratio: Some(l / p),
        goal: "ratio <= 1.25",
    });
    figures.push(Figure::against(
        "spawn+join, location + backtrace",
        b,
        "ns",
        p,
    ));
    figures.push(Figure {
        name: "backtrace capture added per spawn",
        value: (b - l) / 1000.0,
        unit: "us",
        baseline: None,
        ratio: None,
        goal: "<= 2 us",
    });
    //    The same from outside the runtime: the frame-pointer walk is short there (it ends at
    //    this thread's start), and the unwinder confirms that once, not per spawn.
    let (mut p, mut b) = (Vec::new(), Vec::new());
    for _ in 0..n(3, 1) {
        p.push(spawn_outside_ns(&plain));
        b.push(spawn_outside_ns(tracked_rt(&traced)));
    }
    let (p, b) = (median(p), median(b));
    figures.push(Figure::alone(
        "spawn outside the runtime + join, plain tokio",
        p,
        "ns",
    ));
    figures.push(Figure::against(
        "spawn outside the runtime + join, location + backtrace",
        b,
        "ns",
        p,
    ));
    drop((tracked, traced));
    let depth = leakcheck::__private::capture_backtrace();
    figures.push(Figure::alone(
        "frames per spawn backtrace (in this bench)",
        depth as f64,
        "frames",
    ));

    // 1b. Origins of threads, descriptors and children: the same calls, unrecorded and recorded.
    let fd_ns = || {
        ns_per_call(n(7, 1), n(100_000, 1_000), || {
            // SAFETY: a fresh eventfd, closed at once.
            unsafe { libc::close(libc::eventfd(0, libc::EFD_CLOEXEC)) };
        })
    };
    let thread_ns = || {
        ns_per_call(n(5, 1), n(2_000, 20), || {
            std::thread::spawn(|| {}).join().unwrap();
        })
    };
    let child_ns = || {
        ns_per_call(n(5, 1), n(200, 5), || {
            let status = std::process::Command::new("true").status().unwrap();
            assert!(status.success());
        })
    };
    assert!(
        leakcheck::__private::origins_recorded(),
        "origins are not recorded in this binary"
    );
    let (fd_plain, thread_plain, child_plain) = (fd_ns(), thread_ns(), child_ns());
    let recording = leakcheck::__private::record_origins();
    let (fd_rec, thread_rec, child_rec) = (fd_ns(), thread_ns(), child_ns());
    drop(recording);
    for (name, plain, rec) in [
        ("eventfd+close, origin recorded", fd_plain, fd_rec),
        (
            "thread spawn+join, origin recorded",
            thread_plain,
            thread_rec,
        ),
        (
            "child spawn+wait (`true`), origin recorded",
            child_plain,
            child_rec,
        ),
    ] {
        figures.push(Figure {
            name,
            value: rec,
            unit: "ns",
            baseline: Some(plain),
            ratio: Some(rec / plain),
            goal: "ratio <= 1.5 or < 1 us added",
        });
    }
    figures.push(Figure {
        name: "origin capture added per descriptor",
        value: (fd_rec - fd_plain) / 1000.0,
        unit: "us",
        baseline: None,
        ratio: None,
        goal: "< 1 us",
    });
    figures.push(Figure {
        name: "origin capture added per thread",
        value: (thread_rec - thread_plain) / 1000.0,
        unit: "us",
        baseline: None,
        ratio: None,
        goal: "",
    });

    // 2. Clean verdict latency: body ends with nothing alive -> finish() returns clean. All kinds.
    let mut lat = Vec::new();
    for _ in 0..n(41, 3) {
        let check = Check::builder().start_multi_thread(2).unwrap();
        check.block_on(async {
            let h = tokio::spawn(async { tokio::task::yield_now().await });
            h.await.unwrap();
        });
        let t = Instant::now();
        let r = check.finish();
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(r.is_clean(), "{}", r.to_text());
    }
    figures.push(Figure {
        name: "clean verdict latency (all kinds, median)",
        value: median(lat),
        unit: "ms",
        baseline: None,
        ratio: None,
        goal: "<= 2 ms",
    });

    // 3. A task that exits T ms after the body: the verdict comes at T + overhead.
    for t_ms in [10u64, 50] {
        let mut over = Vec::new();
        for _ in 0..n(11, 2) {
            let check = Check::builder().start_multi_thread(2).unwrap();
            let exit_at = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));
            let e = exit_at.clone();
            let body_end = Instant::now();
            check.handle().spawn(async move {
                tokio::time::sleep(Duration::from_millis(t_ms)).await;
                *e.lock().unwrap() = Some(Instant::now());
            });
            let r = check.finish();
            let verdict = Instant::now();
            assert!(r.is_clean(), "{}", r.to_text());
            let exited = exit_at.lock().unwrap().expect("the task ran to its end");
            assert!(exited.duration_since(body_end) >= Duration::from_millis(t_ms));
            over.push((verdict - exited).as_secs_f64() * 1e3);
        }
        figures.push(Figure {
            name: if t_ms == 10 {
                "task exiting 10 ms after the body: verdict after exit"
            } else {
                "task exiting 50 ms after the body: verdict after exit"
            },
            value: median(over),
            unit: "ms",
            baseline: None,
            ratio: None,
            goal: "<= 2 ms",
        });
    }

    // 4. 100k live tasks: one settling round (snapshot + diff against the baseline).
    let live = n(100_000, 1_000);
    let check = Check::builder()
        .kinds(tasks_only())
        .backtraces(false)
        .start_multi_thread(2)
        .unwrap();
    check.block_on(async {
        for _ in 0..live {
            tokio::spawn(pending::<()>());
        }
    });
    let rounds: Vec<f64> = (0..n(9, 1))
        .map(|_| {
            let t = Instant::now();
            let (found, unknown) = leakcheck::__private::task_round(&check);
            assert!(found == live && unknown);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    figures.push(Figure {
        name: "100k live tasks: snapshot + diff (median)",
        value: median(rounds),
        unit: "ms",
        baseline: None,
        ratio: None,
        goal: "<= 50 ms",
    });
    drop(check);

    // 5. 10k survivors from 10 spawn sites, backtraces on: the full report, symbols included.
    let leaked = n(10_000, 100);
    let check = Check::builder()
        .kinds(tasks_only())
        .settle_deadline(Duration::ZERO)
        .start_multi_thread(2)
        .unwrap();
    check.block_on(async {
        for i in 0..leaked {
            match i % 10 {
                0 => tokio::spawn(pending::<()>()),
                1 => tokio::spawn(async { tokio::time::sleep(Duration::from_secs(3600)).await }),
                2 => tokio::spawn(pending::<()>()),
                3 => tokio::spawn(async { tokio::sync::Notify::new().notified().await }),
                4 => tokio::spawn(pending::<()>()),
                5 => tokio::spawn(pending::<()>()),
                6 => tokio::spawn(pending::<()>()),
                7 => tokio::spawn(pending::<()>()),
                8 => tokio::spawn(pending::<()>()),
                _ => tokio::spawn(pending::<()>()),
            };
        }
    });
    let t = Instant::now();
    let r = check.finish();
    let text = r.to_text();
    let j = Instant::now();
    let json = r.to_json();
    let json_ms = j.elapsed().as_secs_f64() * 1e3;
    let full = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(r.unknown().count(), leaked);
    assert!(text.len() > 100 && json.len() > 100);
    figures.push(Figure {
        name: "10k survivors: full report with symbols",
        value: full,
        unit: "ms",
        baseline: None,
        ratio: None,
        goal: "<= 1000 ms",
    });
    figures.push(Figure {
        name: "10k survivors: JSON report, build time",
        value: json_ms,
        unit: "ms",
        baseline: None,
        ratio: None,
        goal: "<= 50 ms",
    });
    figures.push(Figure {
        name: "10k survivors: JSON report, size",
        value: json.len() as f64 / 1e6,
        unit: "MB",
        baseline: None,
        ratio: None,
        goal: "<= 1 MB",
    });

    // Output. A figure that is not a finite number is a broken benchmark.
    for f in &figures {
        assert!(
            f.value.is_finite() && f.ratio.is_none_or(f64::is_finite),
            "figure `{}` is not a finite number: {} (ratio {:?})",
            f.name,
            f.value,
            f.ratio
        );
    }
    if smoke() {
        println!("smoke run (BENCH_SMOKE): few iterations, figures not comparable");
    }
    println!(
        "{:<76} {:>12} {:>6} {:>12} {:>7}  goal",
        "figure", "value", "unit", "baseline", "ratio"
    );
    for f in &figures {
        println!(
            "{:<76} {:>12.3} {:>6} {:>12} {:>7}  {}",
            f.name,
            f.value,
            f.unit,
            f.baseline.map(|b| format!("{b:.1}")).unwrap_or_default(),
            f.ratio.map(|r| format!("{r:.3}")).unwrap_or_default(),
            f.goal
        );
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    // The test profile (`--profile dev`, unoptimized, full debug info) gets a file of its own.
    let path = dir.join(if cfg!(debug_assertions) {
        "leakcheck-engine-test-profile.json"
    } else {
        "leakcheck-engine.json"
    });
    std::fs::write(&path, serde_json::to_string_pretty(&figures).unwrap()).unwrap();
    println!("wrote {}", path.display());
}

fn tracked_rt(check: &Check) -> &tokio::runtime::Runtime {
    leakcheck::__private::runtime(check)
}

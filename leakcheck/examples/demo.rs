//! A leaky and a clean shutdown of the same small worker pool under leakcheck, both reports
//! printed (the README's "What a report looks like").
//!
//! `cargo run --example demo` (at the workspace root)

use std::time::Duration;

use leakcheck::{Check, Kind, Rule};
use tokio::sync::mpsc;

/// A pool with a dispatcher task feeding worker tasks, and a process-wide "metrics" ticker that a
/// library would start once and never stop.
struct Pool {
    input: mpsc::Sender<u64>,
    dispatcher: tokio::task::JoinHandle<()>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Pool {
    fn start(workers: usize) -> Pool {
        let (input, mut rx) = mpsc::channel::<u64>(64);
        let mut queues = Vec::new();
        let workers = (0..workers)
            .map(|i| {
                let (tx, mut q) = mpsc::channel::<u64>(64);
                queues.push(tx);
                leakcheck::with_task_name(&format!("pool-worker-{i}"), || {
                    tokio::spawn(async move { while q.recv().await.is_some() {} })
                })
            })
            .collect();
        let dispatcher = leakcheck::with_task_name("pool-dispatcher", || {
            tokio::spawn(async move {
                while let Some(job) = rx.recv().await {
                    let _ = queues[job as usize % queues.len()].send(job).await;
                }
            })
        });
        Pool {
            input,
            dispatcher,
            workers,
        }
    }

    /// `join_dispatcher = false` is the classic bug: close() waits for the workers only, and the
    /// dispatcher (with the worker queues it owns) lives on.
    async fn close(self, join_dispatcher: bool) -> Option<mpsc::Sender<u64>> {
        let keep = (!join_dispatcher).then(|| self.input.clone());
        drop(self.input);
        if join_dispatcher {
            self.dispatcher.await.unwrap();
            for w in self.workers {
                w.await.unwrap();
            }
        }
        keep
    }
}

fn start_metrics_ticker() {
    tokio::spawn(async {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
        }
    });
}

fn run(label: &str, join_dispatcher: bool) -> leakcheck::Report {
    let check = Check::builder()
        .label(label)
        .allow(
            Rule::builder(
                "metrics-ticker",
                "a metrics library's global ticker, started once per process",
            )
            .kind(Kind::Task)
            .top_frame("start_metrics_ticker")
            .build()
            .unwrap(),
        )
        .with_env()
        .expect("LEAKCHECK_* settings")
        .start_multi_thread(2)
        .expect("start the check");
    let kept = check.block_on(async {
        start_metrics_ticker();
        let pool = Pool::start(4);
        for job in 0..1000 {
            pool.input.send(job).await.unwrap();
        }
        check.checkpoint("created");
        let kept = pool.close(join_dispatcher).await;
        check.checkpoint("closed");
        kept
    });
    let report = check.finish();
    drop(kept);
    report
}

fn main() {
    let leaky = run("pool close without joining the dispatcher", false);
    println!("{}\n", leaky.to_text());
    let clean = run("pool close that joins every task", true);
    println!("{}", clean.to_text());
    assert!(
        !leaky.is_clean() && clean.is_clean(),
        "the demo's two verdicts changed"
    );
}

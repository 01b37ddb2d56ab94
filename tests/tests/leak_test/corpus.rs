//! Every scenario through `#[leak_test]`. A leaky body is an ignored leak test (it must fail);
//! `leaky` runs it under `leakcheck::__private::capture`, which hands back the report that would
//! have failed it, and asserts the leak is found and classified as the engine tests do. The
//! clean twin is a plain leak test that must pass.

use leakcheck::leak_test;
use leakcheck_tests::expect::assert_detected;
use leakcheck_tests::scenarios::{park, release, run_async, run_sync};

/// Runs an ignored leak test and returns its one report.
fn capture_one(name: &str, test: fn()) -> leakcheck::Report {
    let mut reports = leakcheck::__private::capture(test);
    release(name);
    assert_eq!(reports.len(), 1, "one report for `{name}`");
    reports.pop().unwrap()
}

macro_rules! corpus {
    ($($name:ident: $kind:ident ($($opt:tt)*);)*) => {
        $( corpus!(@one $name $kind ($($opt)*)); )*

        #[test]
        fn every_scenario_runs_through_the_attribute() {
            let tested = [$(stringify!($name)),*];
            for s in leakcheck_tests::scenarios::SCENARIOS {
                assert!(tested.contains(&s.name), "scenario `{}` has no #[leak_test] twin", s.name);
            }
        }
    };
    (@one $name:ident async ($($opt:tt)*)) => {
        mod $name {
            use super::*;

            #[leak_test($($opt)*)]
            #[ignore = "a deliberate leak: `leaky` runs it and expects it to be caught"]
            async fn leaky_body() {
                park(stringify!($name), run_async(stringify!($name), true).await);
            }

            #[test]
            fn leaky() {
                let report = capture_one(stringify!($name), leaky_body);
                assert_detected(stringify!($name), &report);
            }

            #[leak_test($($opt)*)]
            async fn clean() {
                drop(run_async(stringify!($name), false).await);
            }
        }
    };
    (@one $name:ident sync ($($opt:tt)*)) => {
        mod $name {
            use super::*;

            #[leak_test($($opt)*)]
            #[ignore = "a deliberate leak: `leaky` runs it and expects it to be caught"]
            fn leaky_body() {
                park(stringify!($name), run_sync(stringify!($name), true));
            }

            #[test]
            fn leaky() {
                let report = capture_one(stringify!($name), leaky_body);
                assert_detected(stringify!($name), &report);
            }

            #[leak_test($($opt)*)]
            fn clean() {
                drop(run_sync(stringify!($name), false));
            }
        }
    };
}

corpus! {
    infinite_loop_task: async (flavor = "multi_thread", worker_threads = 2);
    channel_sender_kept_alive: async ();
    interval_never_cancelled: async (flavor = "multi_thread", worker_threads = 2);
    pool_close_skips_dispatcher: async (flavor = "multi_thread", worker_threads = 2);
    stuck_spawn_blocking: async (flavor = "multi_thread", worker_threads = 2, shutdown_timeout = "100ms");
    std_thread_never_joined: sync ();
    unnamed_thread_never_joined: sync ();
    tcp_connection_left_open: sync ();
    child_left_running: sync ();
    child_never_waited: sync ();
    file_left_open: sync ();
    task_lingers_50ms: async (flavor = "multi_thread", worker_threads = 2);
    task_exits_after_deadline: async (flavor = "multi_thread", worker_threads = 2, settle = "100ms");
    known_singleton: async (flavor = "multi_thread", worker_threads = 2, allow = ["metrics-ticker"]);
    task_spawned_by_leaked_task: async (flavor = "multi_thread", worker_threads = 2);
    join_handle_dropped_on_pending: async ();
    local_set_forgotten: async ();
    orphaned_grandchild: sync ();
    sync_check_builds_first_runtime: sync ();
    task_blocks_its_worker: async (flavor = "multi_thread", worker_threads = 2, settle = "100ms", shutdown_timeout = "100ms");
    unnamed_thread_from_task: async (flavor = "multi_thread", worker_threads = 2);
    paused_clock_sleeper: async (start_paused = true);
    await_point_rule_allows_watch: async (flavor = "multi_thread", worker_threads = 2, allow = ["config-watcher"]);
    accept_loop_left_running: async (flavor = "multi_thread", worker_threads = 2);
    shared_executor_pool: async (flavor = "multi_thread", worker_threads = 2, settle = "20ms");
}

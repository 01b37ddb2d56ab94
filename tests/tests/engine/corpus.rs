//! Every scenario twice: the leak is found and classified; the clean twin passes.

use crate::support::run;
use leakcheck_tests::expect::{assert_clean, assert_detected};

macro_rules! corpus {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use super::*;

                #[test]
                fn leaky() {
                    let report = run(stringify!($name), true);
                    assert_detected(stringify!($name), &report);
                }

                #[test]
                fn clean() {
                    let report = run(stringify!($name), false);
                    assert_clean(stringify!($name), &report);
                }
            }
        )*

        #[test]
        fn every_scenario_has_tests() {
            let tested = [$(stringify!($name)),*];
            for s in leakcheck_tests::scenarios::SCENARIOS {
                assert!(tested.contains(&s.name), "scenario `{}` has no test", s.name);
            }
        }
    };
}

corpus! {
    infinite_loop_task,
    channel_sender_kept_alive,
    interval_never_cancelled,
    pool_close_skips_dispatcher,
    stuck_spawn_blocking,
    std_thread_never_joined,
    unnamed_thread_never_joined,
    tcp_connection_left_open,
    child_left_running,
    child_never_waited,
    file_left_open,
    task_lingers_50ms,
    task_exits_after_deadline,
    known_singleton,
    task_spawned_by_leaked_task,
    join_handle_dropped_on_pending,
    local_set_forgotten,
    orphaned_grandchild,
    sync_check_builds_first_runtime,
    task_blocks_its_worker,
    unnamed_thread_from_task,
    paused_clock_sleeper,
    await_point_rule_allows_watch,
    accept_loop_left_running,
    shared_executor_pool,
}

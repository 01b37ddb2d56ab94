//! Details of reports beyond detection: await traces, parents, lingering, formats.

use crate::support::run;

#[test]
fn debug_json() {
    let r = run("task_spawned_by_leaked_task", true);
    println!("{}", r.to_json());
    let r = run("channel_sender_kept_alive", true);
    println!("{}", r.to_text());
}

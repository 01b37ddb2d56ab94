//! A running check: baseline, checkpoints, settling, classification, report.
//!
//! The lifecycle is explicit: [`CheckBuilder`] starts a [`Check`] (taking the baseline), the code
//! under test runs on [`Check::block_on`] or [`Check::handle`], [`Check::checkpoint`] records
//! counts, and [`Check::finish`] settles, classifies, shuts the runtime down with a bounded
//! timeout and returns the [`Report`].

mod binary;
mod classify;
mod finish;
mod lifecycle;
mod settle;
mod start;
mod turns;

pub(crate) use binary::check_test_binary;
pub(crate) use finish::judge;
pub(crate) use start::RuntimeSpec;
pub use start::{Check, RUNTIME_THREAD_NAME};

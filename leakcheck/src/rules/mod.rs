//! Rules that file survivors as known (allowed, with a reason). Rules come from code and from
//! `leakcheck.toml`; they add up, and the first one that matches names the survivor.

mod file;
mod rule;

pub use file::FileConfig;
pub(crate) use rule::{unique_names, Subject};
pub use rule::{Rule, RuleBuilder, RuleSet};

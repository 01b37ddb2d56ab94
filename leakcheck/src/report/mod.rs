//! The report: a model (serializable, with a schema version) and its three renderings.

mod file;
mod group;
mod json;
mod model;
mod normalized;
mod text;

pub(crate) use file::{is_report_being_written, write_json};
pub use model::{
    Kind, Lifecycle, LifecycleRow, Lingered, Note, Report, SettleStats, Status, Survivor,
    SCHEMA_VERSION,
};

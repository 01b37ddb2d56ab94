//! The report: a model (serializable, with a schema version) and its three renderings.

mod model;
mod normalized;
mod text;

pub use model::{
    Kind, Lifecycle, LifecycleRow, Lingered, Note, Report, SettleStats, Status, Survivor,
    SCHEMA_VERSION,
};

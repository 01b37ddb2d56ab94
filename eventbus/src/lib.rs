//! The event bus lands with its own issue; the crate exists now so that the workspace layout is
//! final from the first commit.

//! The engine against the scenario corpus and its details. One binary: `support` holds the
//! harness, the other modules the tests.

mod corpus;
mod details;
mod libraries;
mod support;

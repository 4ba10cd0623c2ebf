//! End-to-end tests of the `countersign` binary.

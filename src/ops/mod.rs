//! One file per operation: its steps, bound to the names used in `workflows/`.

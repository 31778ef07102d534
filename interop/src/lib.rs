//! Nothing here: the package holds tests and examples (see `tests/` and `examples/`).

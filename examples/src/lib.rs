//! Nothing here: the examples are in `examples/`, one per crate. Run one with
//! `cargo run -p flyte-examples --example kservice_name -- proj dev MyApp`.

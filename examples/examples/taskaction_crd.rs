//! Print the TaskAction CRD (`flyte.org/v1`, as Flyte's executor declares it), using only
//! `flyte-operator`; pipe it to `kubectl apply -f -`.
//!
//!     cargo run -p flyte-examples --example taskaction_crd
#![allow(clippy::print_stdout)]

fn main() {
    print!("{}", flyte_operator::crd::crd_yaml());
}

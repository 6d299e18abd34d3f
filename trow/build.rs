//! Release builds lay out the code a running Trow executes together at the front of .text
//! (`link/symbol-order.txt`, written by scripts/symbol-order.sh): the kernel maps a binary 64 KiB
//! around each page touched, so scattered start-up and serving code kept ~11 MiB of an idle
//! process resident, packed it keeps a few.
//!
//! Only where the linker is known to be lld, which takes `--symbol-ordering-file`: Rust's
//! default for x86_64-unknown-linux-gnu since 1.90, unless a linker is configured. Elsewhere,
//! and with `TROW_SYMBOL_ORDER=0`, the build links as usual.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=link/symbol-order.txt");
    println!("cargo:rerun-if-env-changed=TROW_SYMBOL_ORDER");
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let release = env("PROFILE") == "release";
    let lld_by_default = env("TARGET") == "x86_64-unknown-linux-gnu"
        && std::env::var_os("RUSTC_LINKER").is_none()
        && !env("CARGO_ENCODED_RUSTFLAGS").contains("link");
    let order = Path::new(&env("CARGO_MANIFEST_DIR")).join("link/symbol-order.txt");
    if release && lld_by_default && env("TROW_SYMBOL_ORDER") != "0" && order.exists() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        // Names of functions that a change inlined or renamed are skipped, not errors.
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

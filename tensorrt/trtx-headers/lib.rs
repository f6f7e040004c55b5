//! Empty: this crate only exists to fetch trtx-sys's headers (see Cargo.toml).

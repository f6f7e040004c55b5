//! One file per subcommand.

pub mod export;
pub mod inspect;
pub mod run;
pub mod synth;

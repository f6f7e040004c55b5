//! One file per subcommand.

pub mod bench;
pub mod checkpoint_path;
pub mod conformance;
pub mod export;
pub mod generate;
pub mod inspect;
pub mod limits;
pub mod model_files;
pub mod run;
pub mod session_args;
pub mod synth;

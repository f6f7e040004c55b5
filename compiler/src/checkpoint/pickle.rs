//! Placeholder (replaced by the allow-listed pickle reader).
#[derive(Debug, thiserror::Error)]
pub enum PickleError {
    #[error("pickle global '{0}' is not allowed")]
    DisallowedGlobal(String),
}

//! The files a deployment needs beside the model: `export` copies the checkpoint's config,
//! generation config and tokenizer files next to the ONNX file, and `generate` reads its EOS
//! ids and tokenizer from there by default.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use mambac_compiler::atomic_file::AtomicFile;

/// Copied from the checkpoint folder when present (the Hugging Face names).
pub const SIDE_FILES: [&str; 9] = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
];

/// The folder a file is in (`.` for a bare name).
pub fn folder_of(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Copies each of [`SIDE_FILES`] that `ckpt_dir` holds into `out_dir` (each written to a
/// temporary file there and renamed into place); returns the names copied. Nothing is copied
/// when both are one folder.
pub fn copy_side_files(ckpt_dir: &Path, out_dir: &Path) -> Result<Vec<&'static str>> {
    let same = |a: &Path, b: &Path| matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y);
    if same(ckpt_dir, out_dir) {
        return Ok(Vec::new());
    }
    let mut copied = Vec::new();
    for name in SIDE_FILES {
        let from = ckpt_dir.join(name);
        if !from.is_file() {
            continue;
        }
        let to = out_dir.join(name);
        let mut src = std::fs::File::open(&from).with_context(|| format!("cannot read {}", from.display()))?;
        let mut dst = AtomicFile::create(&to).with_context(|| format!("cannot write {}", to.display()))?;
        std::io::copy(&mut src, &mut dst)
            .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
        dst.commit().with_context(|| format!("cannot write {}", to.display()))?;
        copied.push(name);
    }
    Ok(copied)
}

/// The EOS ids of the model in `model_dir`: `eos_token_id` (an id or a list) of its
/// generation_config.json, else of its config.json; with the file they came from.
pub fn eos_ids(model_dir: &Path) -> Result<Option<(Vec<i64>, PathBuf)>> {
    for name in ["generation_config.json", "config.json"] {
        let path = model_dir.join(name);
        if !path.is_file() {
            continue;
        }
        let json = mambac_compiler::checkpoint::read_json(&path)?;
        let ids = match json.get("eos_token_id") {
            None | Some(serde_json::Value::Null) => continue,
            Some(serde_json::Value::Array(a)) => a.iter().map(|v| v.as_i64()).collect::<Option<Vec<i64>>>(),
            Some(v) => v.as_i64().map(|id| vec![id]),
        };
        match ids {
            Some(ids) if ids.iter().all(|&id| id >= 0) => return Ok(Some((ids, path))),
            _ => bail!(
                "{}: eos_token_id is {}, expected a token id or a list of them (--stop-id or --ignore-eos overrides)",
                path.display(),
                json["eos_token_id"]
            ),
        }
    }
    Ok(None)
}

/// `tokenizer.json` beside the model, if there is one.
pub fn tokenizer_beside(model: &Path) -> Option<PathBuf> {
    let p = folder_of(model).join("tokenizer.json");
    p.is_file().then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eos_comes_from_generation_config_then_config() {
        let d = tempfile::tempdir().unwrap();
        assert!(eos_ids(d.path()).unwrap().is_none());
        std::fs::write(d.path().join("config.json"), r#"{"eos_token_id": 7}"#).unwrap();
        assert_eq!(eos_ids(d.path()).unwrap(), Some((vec![7], d.path().join("config.json"))));
        let gen = d.path().join("generation_config.json");
        std::fs::write(&gen, r#"{"eos_token_id": [2, 3]}"#).unwrap();
        assert_eq!(eos_ids(d.path()).unwrap(), Some((vec![2, 3], gen.clone())));
        std::fs::write(&gen, r#"{"eos_token_id": null}"#).unwrap();
        assert_eq!(eos_ids(d.path()).unwrap().unwrap().0, vec![7]);
        std::fs::write(&gen, r#"{"eos_token_id": "two"}"#).unwrap();
        assert_eq!(
            eos_ids(d.path()).unwrap_err().to_string(),
            format!(
                "{}: eos_token_id is \"two\", expected a token id or a list of them (--stop-id or --ignore-eos overrides)",
                gen.display()
            )
        );
    }

    #[test]
    fn side_files_are_copied_when_present() {
        let ckpt = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        std::fs::write(ckpt.path().join("config.json"), "{}").unwrap();
        std::fs::write(ckpt.path().join("tokenizer.json"), "tok").unwrap();
        std::fs::write(ckpt.path().join("model.safetensors"), "w").unwrap();
        assert_eq!(copy_side_files(ckpt.path(), out.path()).unwrap(), ["config.json", "tokenizer.json"]);
        assert_eq!(std::fs::read_to_string(out.path().join("tokenizer.json")).unwrap(), "tok");
        assert!(!out.path().join("model.safetensors").exists());
        assert!(copy_side_files(ckpt.path(), ckpt.path()).unwrap().is_empty());
    }
}

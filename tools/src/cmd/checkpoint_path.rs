//! What a CHECKPOINT argument may be: a checkpoint folder, one of its files (`config.json`,
//! `model.safetensors`, ...: the folder is used), or a Hugging Face model id (`org/name`) already
//! in the local Hugging Face cache. mambac never downloads.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// The files of a checkpoint folder that stand for the folder when given as the argument.
const CHECKPOINT_FILES: [&str; 4] =
    ["config.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"];

/// The checkpoint folder `arg` names.
pub fn checkpoint_dir(arg: &Path) -> Result<PathBuf> {
    if arg.is_dir() {
        return Ok(arg.to_path_buf());
    }
    if arg.is_file() {
        let name = arg.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if CHECKPOINT_FILES.contains(&name.as_str()) || is_shard(&name) {
            let dir = arg.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            return Ok(dir.to_path_buf());
        }
        bail!(
            "{} is a file, not a checkpoint: give the folder holding config.json and the weights (or its config.json, \
             model.safetensors or pytorch_model.bin)",
            arg.display()
        );
    }
    if let Some(id) = arg.to_str().filter(|s| is_model_id(s)) {
        return hf_cache_snapshot(id, &hub_cache()?);
    }
    // Not there: Checkpoint::open names it ("checkpoint folder ... does not exist").
    Ok(arg.to_path_buf())
}

/// `model-00001-of-00002.safetensors`: a shard, whose folder holds the index.
fn is_shard(name: &str) -> bool {
    name.starts_with("model-") && name.ends_with(".safetensors") && name.contains("-of-")
}

/// `org/name` as the Hub spells ids: two parts of letters, digits, `-`, `_` and `.`, neither
/// starting with `.` (so `./x` and `../x` stay paths).
fn is_model_id(s: &str) -> bool {
    let mut parts = s.split('/');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

/// The hub cache the Hugging Face libraries use: `HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
pub fn hub_cache() -> Result<PathBuf> {
    hub_cache_from(&|k| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from))
}

/// [`hub_cache`] with the environment given (the tests' own).
fn hub_cache_from(var: &dyn Fn(&str) -> Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = var("HF_HUB_CACHE") {
        return Ok(p);
    }
    if let Some(p) = var("HF_HOME") {
        return Ok(p.join("hub"));
    }
    if let Some(p) = var("XDG_CACHE_HOME") {
        return Ok(p.join("huggingface").join("hub"));
    }
    match var("HOME") {
        Some(home) => Ok(home.join(".cache").join("huggingface").join("hub")),
        None => bail!("cannot find the Hugging Face cache: HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME and HOME are unset"),
    }
}

/// `hub/models--org--name/snapshots/<refs/main>`: the revision the Hugging Face libraries load
/// by default.
fn hf_cache_snapshot(id: &str, hub: &Path) -> Result<PathBuf> {
    let repo = hub.join(format!("models--{}", id.replace('/', "--")));
    let not_cached = |why: String| {
        anyhow::anyhow!(
            "'{id}' is not a folder, and not in the local Hugging Face cache ({why}); mambac never downloads: fetch it \
             first (e.g. `huggingface-cli download {id}`) or give the checkpoint folder"
        )
    };
    let refs = repo.join("refs").join("main");
    let rev = match std::fs::read_to_string(&refs) {
        Ok(r) => r.trim().to_string(),
        Err(_) if !repo.is_dir() => return Err(not_cached(format!("no {}", repo.display()))),
        Err(e) => return Err(not_cached(format!("cannot read {}: {e}", refs.display()))),
    };
    if rev.is_empty() || !rev.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(not_cached(format!("{} holds no revision", refs.display())));
    }
    let snapshot = repo.join("snapshots").join(&rev);
    if !snapshot.is_dir() {
        return Err(not_cached(format!("no {}", snapshot.display())));
    }
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_are_org_slash_name() {
        for id in ["state-spaces/mamba-130m-hf", "a/b", "Org_1/name.v2"] {
            assert!(is_model_id(id), "{id}");
        }
        for p in ["mamba", "./a", "../a/b", "a/b/c", "/a/b", "a/", "a/.b", "a b/c"] {
            assert!(!is_model_id(p), "{p}");
        }
    }

    #[test]
    fn a_cached_model_is_its_main_snapshot() {
        let hub = tempfile::tempdir().unwrap();
        let repo = hub.path().join("models--org--tiny");
        std::fs::create_dir_all(repo.join("snapshots/abc123")).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc123\n").unwrap();
        assert_eq!(hf_cache_snapshot("org/tiny", hub.path()).unwrap(), repo.join("snapshots/abc123"));

        let e = hf_cache_snapshot("org/other", hub.path()).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "'org/other' is not a folder, and not in the local Hugging Face cache (no {}); mambac never downloads: \
                 fetch it first (e.g. `huggingface-cli download org/other`) or give the checkpoint folder",
                hub.path().join("models--org--other").display()
            )
        );
        std::fs::write(repo.join("refs/main"), "def456").unwrap();
        let e = hf_cache_snapshot("org/tiny", hub.path()).unwrap_err().to_string();
        assert!(e.contains(&format!("(no {})", repo.join("snapshots/def456").display())), "{e}");
    }

    #[test]
    fn the_hub_cache_follows_the_hugging_face_variables() {
        fn env<'a>(set: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<PathBuf> + 'a {
            move |k: &str| set.iter().find(|(n, _)| *n == k).map(|(_, v)| PathBuf::from(v))
        }
        let all = [("HF_HUB_CACHE", "/c"), ("HF_HOME", "/h"), ("XDG_CACHE_HOME", "/x"), ("HOME", "/u")];
        assert_eq!(hub_cache_from(&env(&all)).unwrap(), Path::new("/c"));
        assert_eq!(hub_cache_from(&env(&all[1..])).unwrap(), Path::new("/h/hub"));
        assert_eq!(hub_cache_from(&env(&all[2..])).unwrap(), Path::new("/x/huggingface/hub"));
        assert_eq!(hub_cache_from(&env(&all[3..])).unwrap(), Path::new("/u/.cache/huggingface/hub"));
        assert_eq!(
            hub_cache_from(&env(&[])).unwrap_err().to_string(),
            "cannot find the Hugging Face cache: HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME and HOME are unset"
        );
    }

    #[test]
    fn a_checkpoint_file_stands_for_its_folder() {
        let d = tempfile::tempdir().unwrap();
        for f in ["config.json", "model.safetensors", "pytorch_model.bin", "model-00001-of-00002.safetensors"] {
            std::fs::write(d.path().join(f), "").unwrap();
            assert_eq!(checkpoint_dir(&d.path().join(f)).unwrap(), d.path());
        }
        std::fs::write(d.path().join("notes.txt"), "").unwrap();
        let e = checkpoint_dir(&d.path().join("notes.txt")).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{} is a file, not a checkpoint: give the folder holding config.json and the weights (or its \
                 config.json, model.safetensors or pytorch_model.bin)",
                d.path().join("notes.txt").display()
            )
        );
        assert_eq!(checkpoint_dir(d.path()).unwrap(), d.path());
    }
}

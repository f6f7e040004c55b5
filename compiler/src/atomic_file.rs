//! Writing a file so that a reader sees the old content or the new one, never a part of either:
//! the bytes go to a temporary file beside the target (same file system, so the rename is
//! atomic), which is flushed to disk and only then renamed over the target. A write that fails
//! (a full disk, `ulimit -f`) or is never committed removes its temporary file; the target is
//! untouched until [`AtomicFile::commit`].
//!
//! [`check_not_an_input`] is the other half of "never lose a file": an output that is one of the
//! command's inputs is refused before anything is written.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tempfile::TempPath;

/// A file being written; the target changes only on [`commit`](AtomicFile::commit).
pub struct AtomicFile {
    target: PathBuf,
    /// Removes the temporary file when dropped uncommitted.
    tmp: TempPath,
    /// The file itself, not the `NamedTempFile`, whose errors would name the temporary path.
    out: BufWriter<File>,
}

impl AtomicFile {
    /// Starts writing `target` (a hidden `.NAME.XXXXXX.tmp` in its folder holds the bytes).
    pub fn create(target: &Path) -> io::Result<AtomicFile> {
        let name = target
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the output path has no file name"))?;
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        // 0o666 less the umask, as File::create gives: a model is not a secret.
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{}.", name.to_string_lossy()))
            .suffix(".tmp")
            .permissions(std::fs::Permissions::from_mode(0o666))
            .tempfile_in(dir)?;
        let (file, tmp) = tmp.into_parts();
        Ok(AtomicFile { target: target.to_path_buf(), tmp, out: BufWriter::with_capacity(1 << 22, file) })
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Flushes, syncs the bytes to disk, renames over the target and syncs the folder (so the
    /// rename itself survives a crash).
    pub fn commit(self) -> io::Result<()> {
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        self.tmp.persist(&self.target).map_err(|e| e.error)?;
        let dir = match self.target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(dir)?.sync_all()
    }
}

/// Zip archives go back to fill in headers.
impl io::Seek for AtomicFile {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.out.seek(pos)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.out.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Writes `target` atomically with the bytes `write` produces.
pub fn write_atomic(target: &Path, write: impl FnOnce(&mut AtomicFile) -> io::Result<()>) -> io::Result<()> {
    let mut f = AtomicFile::create(target)?;
    write(&mut f)?;
    f.commit()
}

/// An output that is one of the command's inputs.
#[derive(Debug, thiserror::Error)]
#[error("refusing to write {output}: it is the input {input}{how}; choose another output")]
pub struct OutputIsInput {
    pub output: PathBuf,
    pub input: PathBuf,
    /// " (through a symlink)" or " (a hard link to it)" where the paths differ in that way.
    how: &'static str,
}

/// Refuses `output` when it resolves to any of `inputs`: the same path, a symlink to one, or
/// another name of the same file (same device and inode). An output that does not exist yet is
/// no input.
pub fn check_not_an_input(output: &Path, inputs: &[PathBuf]) -> Result<(), OutputIsInput> {
    let Ok(out_meta) = std::fs::metadata(output) else { return Ok(()) };
    let via_symlink = std::fs::symlink_metadata(output).is_ok_and(|m| m.file_type().is_symlink());
    let out_canon = std::fs::canonicalize(output).ok();
    for input in inputs {
        let Ok(in_meta) = std::fs::metadata(input) else { continue };
        let same_inode = in_meta.dev() == out_meta.dev() && in_meta.ino() == out_meta.ino();
        let in_canon = std::fs::canonicalize(input).ok();
        if same_inode || (out_canon.is_some() && out_canon == in_canon) {
            let how = if via_symlink {
                " (through a symlink)"
            } else if out_canon != in_canon {
                " (a hard link to it)"
            } else {
                ""
            };
            return Err(OutputIsInput { output: output.to_path_buf(), input: input.clone(), how });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leftovers(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn commit_replaces_and_drop_keeps_the_old_file() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("m.onnx");
        std::fs::write(&target, b"old").unwrap();
        {
            let mut f = AtomicFile::create(&target).unwrap();
            f.write_all(b"half written").unwrap();
            assert_eq!(leftovers(d.path()).len(), 1);
            assert_eq!(std::fs::read(&target).unwrap(), b"old");
        }
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert!(leftovers(d.path()).is_empty());
        write_atomic(&target, |f| f.write_all(b"new")).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert!(leftovers(d.path()).is_empty());
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("m.onnx");
        std::fs::write(&target, b"old").unwrap();
        let e = write_atomic(&target, |f| {
            f.write_all(b"partial")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "disk full");
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert!(leftovers(d.path()).is_empty());
    }

    #[test]
    fn the_output_may_not_be_an_input() {
        let d = tempfile::tempdir().unwrap();
        let input = d.path().join("model.safetensors");
        std::fs::write(&input, b"weights").unwrap();
        let other = d.path().join("other");
        std::fs::write(&other, b"x").unwrap();
        let inputs = vec![other.clone(), input.clone()];

        let e = check_not_an_input(&input, &inputs).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "refusing to write {}: it is the input {}; choose another output",
                input.display(),
                input.display()
            )
        );
        let link = d.path().join("link.onnx");
        std::os::unix::fs::symlink(&input, &link).unwrap();
        let e = check_not_an_input(&link, &inputs).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "refusing to write {}: it is the input {} (through a symlink); choose another output",
                link.display(),
                input.display()
            )
        );
        let hard = d.path().join("hard.onnx");
        std::fs::hard_link(&input, &hard).unwrap();
        let e = check_not_an_input(&hard, &inputs).unwrap_err();
        assert!(e.to_string().ends_with("(a hard link to it); choose another output"), "{e}");
        // A path spelled differently (`dir/./name`) is the same file.
        let dotted = d.path().join(".").join("model.safetensors");
        assert!(check_not_an_input(&dotted, &inputs).is_err());

        assert!(check_not_an_input(&d.path().join("new.onnx"), &inputs).is_ok());
        let separate = d.path().join("copy.onnx");
        std::fs::write(&separate, b"weights").unwrap();
        assert!(check_not_an_input(&separate, &inputs).is_ok());
    }
}

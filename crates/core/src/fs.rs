//! Atomic file replacement: readers (and a run restarted after a kill) see either
//! the old file or the new one, never half of either.

use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// The temporary sibling a file is written to before it is renamed into place.
pub fn partial_path(path: &Path) -> PathBuf {
    sibling(path, "partial")
}

/// Writes `bytes` to `path.partial`, then renames it over `path`. Creates the
/// parent folder.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    }
    let tmp = partial_path(path);
    std::fs::write(&tmp, bytes).map_err(Error::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(Error::io(path))
}

/// [`atomic_write`] of pretty JSON and a final newline.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("values serialise; this is a bug");
    atomic_write(path, (text + "\n").as_bytes())
}

/// [`atomic_write`] of one JSON line per row.
pub fn write_jsonl<T: serde::Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    let mut s = String::new();
    for r in rows {
        s.push_str(&serde_json::to_string(r).expect("rows serialise; this is a bug"));
        s.push('\n');
    }
    atomic_write(path, s.as_bytes())
}

/// Swaps the complete folder `tmp` in for `dst` (which may not exist): `dst` moves
/// aside to `dst.old`, `tmp` takes its name, the old one is removed. A kill between
/// the two renames leaves no `dst` but a complete `tmp`; [`recover_dir`] finishes the
/// swap on the next start, so no work is lost.
pub fn replace_dir(tmp: &Path, dst: &Path) -> Result<()> {
    let old = sibling(dst, "old");
    let _ = std::fs::remove_dir_all(&old);
    if dst.exists() {
        std::fs::rename(dst, &old).map_err(Error::io(dst))?;
    }
    std::fs::rename(tmp, dst).map_err(Error::io(dst))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Finishes a [`replace_dir`] that a kill interrupted: when `dst` is missing and
/// `tmp` holds `marker` (the file its writer writes last, atomically), `tmp` becomes
/// `dst`. Otherwise nothing changes (an incomplete `tmp` is left to be rewritten).
pub fn recover_dir(tmp: &Path, dst: &Path, marker: &str) -> Result<bool> {
    if dst.exists() || !tmp.join(marker).is_file() {
        return Ok(false);
    }
    std::fs::rename(tmp, dst).map_err(Error::io(dst))?;
    let _ = std::fs::remove_dir_all(sibling(dst, "old"));
    tracing::info!(dir = %dst.display(), "finished a folder swap cut short by a kill");
    Ok(true)
}

/// `dir.EXT` beside `dir` (a sibling, whatever dots its name has).
pub fn sibling(dir: &Path, ext: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(ext);
    dir.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_files_and_leaves_no_partial() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/a.json");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert!(!partial_path(&p).exists());
        assert_eq!(partial_path(&p).file_name().unwrap(), "a.json.partial");
    }
}

#[cfg(test)]
mod dir_tests {
    use super::*;

    fn folder(p: &Path, content: &str) {
        std::fs::create_dir_all(p).unwrap();
        std::fs::write(p.join("state.json"), content).unwrap();
    }

    #[test]
    fn replace_dir_swaps_folders() {
        let d = tempfile::tempdir().unwrap();
        let (tmp, dst) = (d.path().join("ckpt.partial"), d.path().join("ckpt"));
        folder(&tmp, "1");
        replace_dir(&tmp, &dst).unwrap();
        folder(&tmp, "2");
        replace_dir(&tmp, &dst).unwrap();
        assert_eq!(
            std::fs::read_to_string(dst.join("state.json")).unwrap(),
            "2"
        );
        assert!(!tmp.exists() && !sibling(&dst, "old").exists());
    }

    /// A kill after the first rename of a swap: the old folder aside, the new one
    /// complete under its temporary name, none under the real name. Recovery puts
    /// the new one in place; an incomplete temporary folder is never promoted.
    #[test]
    fn recovery_finishes_a_swap_cut_between_its_renames() {
        let d = tempfile::tempdir().unwrap();
        let (tmp, dst) = (d.path().join("ckpt.partial"), d.path().join("ckpt"));
        folder(&sibling(&dst, "old"), "1");
        folder(&tmp, "2");
        assert!(recover_dir(&tmp, &dst, "state.json").unwrap());
        assert_eq!(
            std::fs::read_to_string(dst.join("state.json")).unwrap(),
            "2"
        );
        assert!(!sibling(&dst, "old").exists());
        assert!(
            !recover_dir(&tmp, &dst, "state.json").unwrap(),
            "nothing left to do"
        );
        let other = d.path().join("fresh");
        std::fs::create_dir_all(sibling(&other, "partial")).unwrap();
        assert!(!recover_dir(&sibling(&other, "partial"), &other, "state.json").unwrap());
        assert!(!other.exists());
    }
}

/// An exclusive lock on an output folder, held for the life of the value: an
/// advisory lock (`flock`) on `DIR/.uae.lock`, which the OS releases when the process
/// ends, however it ends (a `kill -9` leaves no stale lock). The file stays; only the
/// lock on it counts.
#[derive(Debug)]
pub struct FolderLock {
    _file: std::fs::File,
}

impl FolderLock {
    pub const FILE: &'static str = ".uae.lock";

    /// Creates `dir` if needed and locks it, or fails at once with
    /// [`Error::Locked`] naming the process that holds it. On a file system without
    /// locks (some network mounts) it warns and goes on unlocked.
    pub fn acquire(dir: &Path) -> Result<FolderLock> {
        use std::io::{Read, Seek, Write};
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let path = dir.join(Self::FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(Error::io(&path))?;
        match file.try_lock() {
            Ok(()) => {
                // Who holds it, for the message another run prints.
                let _ = file.set_len(0);
                let _ = file.rewind();
                let _ = writeln!(file, "pid {}", std::process::id());
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(Error::Locked {
                    dir: dir.to_path_buf(),
                    holder: if holder.is_empty() {
                        String::new()
                    } else {
                        format!(" ({holder})")
                    },
                });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                tracing::warn!(path = %path.display(), "cannot lock the folder ({e}); going on without a lock");
            }
        }
        Ok(FolderLock { _file: file })
    }
}

#[cfg(test)]
mod lock_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_second_lock_on_a_folder_fails_until_the_first_is_dropped() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("out");
        let first = FolderLock::acquire(&dir).unwrap();
        let e = FolderLock::acquire(&dir).unwrap_err().to_string();
        assert!(e.contains("in use by another uae run"), "{e}");
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        drop(first);
        FolderLock::acquire(&dir).unwrap();
    }
}

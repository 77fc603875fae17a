//! Local path globs that read each real file once.
//!
//! `glob` alone follows directory symlinks blindly: a symlink loop under `**` yields
//! the same file dozens of times (until the path grows too long), a symlinked
//! directory yields its files twice, and a file name that is not UTF-8 never matches.
//! This walker:
//!
//! - walks real directories first, then follows directory symlinks, entering each
//!   real directory at most once (device + inode), so loops end and nothing is listed
//!   twice;
//! - lists each real file once, named by the first path that reaches it: a path
//!   through real directories wins over one through a symlink (so adding a link never
//!   renames, and re-reads, a file);
//! - matches names that are not UTF-8 on their lossy form, and names them in keys and
//!   logs with their odd bytes escaped ([`path_text`]).

use std::collections::{HashSet, VecDeque};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::PluginError;

/// The files `pattern` matches, sorted, each real file once.
///
/// # Errors
/// [`PluginError::Option`] for a malformed glob; [`PluginError::Io`] when the glob's
/// literal base directory cannot be read.
pub fn list(pattern: &str) -> Result<Vec<PathBuf>, PluginError> {
    let pat = glob::Pattern::new(pattern).map_err(|e| PluginError::Option {
        key: "path".into(),
        message: format!("`{pattern}` is not a valid glob: {e}"),
    })?;
    // The literal directory the pattern starts in, and how deep its glob reaches.
    let (mut base, mut depth, mut recursive, mut globbing) = (PathBuf::new(), 0usize, false, false);
    for c in Path::new(pattern).components() {
        let s = c.as_os_str().to_string_lossy();
        if !globbing && !s.contains(['*', '?', '[']) {
            base.push(c);
        } else {
            globbing = true;
            depth += 1;
            recursive |= s.contains("**");
        }
    }
    if !globbing {
        return Ok(if base.is_file() {
            vec![base]
        } else {
            Vec::new()
        });
    }
    let start = if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base.clone()
    };
    let mut w = Walk {
        pat,
        max_depth: if recursive { usize::MAX } else { depth },
        strip_dot: base.as_os_str().is_empty(),
        dirs: HashSet::new(),
        files: HashSet::new(),
        linked_dirs: VecDeque::new(),
        linked_files: Vec::new(),
        out: Vec::new(),
    };
    let meta = match std::fs::metadata(&start) {
        Ok(m) if m.is_dir() => m,
        Ok(_) => return Ok(Vec::new()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(PluginError::Io {
                op: "list",
                path: path_text(&start),
                source,
            });
        }
    };
    w.dirs.insert((meta.dev(), meta.ino()));
    w.dir(&start, 1)?;
    // Then what symlinks reach: directories not entered yet, files not listed yet.
    while let Some((dir, d)) = w.linked_dirs.pop_front() {
        if let Ok(m) = std::fs::metadata(&dir)
            && w.dirs.insert((m.dev(), m.ino()))
        {
            w.dir(&dir, d)?;
        }
    }
    for (path, id) in std::mem::take(&mut w.linked_files) {
        if w.files.insert(id) {
            w.out.push(path);
        }
    }
    w.out.sort();
    Ok(w.out)
}

struct Walk {
    pat: glob::Pattern,
    max_depth: usize,
    /// The pattern had no directory: list `a.csv`, not `./a.csv`.
    strip_dot: bool,
    dirs: HashSet<(u64, u64)>,
    files: HashSet<(u64, u64)>,
    linked_dirs: VecDeque<(PathBuf, usize)>,
    linked_files: Vec<(PathBuf, (u64, u64))>,
    out: Vec<PathBuf>,
}

impl Walk {
    /// Lists `dir` (at `depth` below the base), descending into real directories now
    /// and queueing symlinked ones.
    fn dir(&mut self, dir: &Path, depth: usize) -> Result<(), PluginError> {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) => {
                tracing::warn!(dir = %path_text(dir), error = %e, "cannot list a directory under the path glob; skipped");
                return Ok(());
            }
        };
        let mut entries: Vec<_> = rd.filter_map(Result::ok).collect();
        entries.sort_by_key(|e| e.file_name());
        let opts = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: false,
        };
        for e in entries {
            let path = if self.strip_dot && dir == Path::new(".") {
                PathBuf::from(e.file_name())
            } else {
                dir.join(e.file_name())
            };
            let link = e.file_type().is_ok_and(|t| t.is_symlink());
            // Follows links; a dangling link is nothing to read.
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let id = (meta.dev(), meta.ino());
            if meta.is_dir() {
                if depth < self.max_depth {
                    if link {
                        self.linked_dirs.push_back((path, depth + 1));
                    } else if self.dirs.insert(id) {
                        self.dir(&path, depth + 1)?;
                    }
                }
            } else if meta.is_file() && self.pat.matches_with(&path.to_string_lossy(), opts) {
                if link {
                    self.linked_files.push((path, id));
                } else if self.files.insert(id) {
                    self.out.push(path);
                }
            }
        }
        Ok(())
    }
}

/// A path as text for keys, labels and logs: UTF-8 as is, other bytes as `\xNN`, so
/// two different names never look alike.
pub fn path_text(path: &Path) -> String {
    let bytes = path.as_os_str().as_bytes();
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    fn names(dir: &Path, pattern: &str) -> Vec<String> {
        list(&format!("{}/{pattern}", dir.display()))
            .unwrap()
            .iter()
            .map(|p| path_text(p.strip_prefix(dir).unwrap()))
            .collect()
    }

    #[test]
    fn loops_links_and_odd_names() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        std::fs::create_dir_all(d.join("real/sub")).unwrap();
        std::fs::write(d.join("real/a.csv"), "x").unwrap();
        std::fs::write(d.join("real/sub/b.csv"), "x").unwrap();
        // A loop back to the root, a second name for `real`, a file link.
        std::os::unix::fs::symlink(d, d.join("real/sub/loop")).unwrap();
        std::os::unix::fs::symlink(d.join("real"), d.join("alias")).unwrap();
        std::os::unix::fs::symlink(d.join("real/a.csv"), d.join("real/0-link.csv")).unwrap();
        // A name that is not UTF-8.
        let odd = d.join(std::ffi::OsString::from_vec(b"real/caf\xe9.csv".to_vec()));
        std::fs::write(&odd, "x").unwrap();
        assert_eq!(
            names(d, "**/*.csv"),
            vec!["real/a.csv", "real/caf\\xe9.csv", "real/sub/b.csv"]
        );
        assert_eq!(
            names(d, "real/*.csv"),
            vec!["real/a.csv", "real/caf\\xe9.csv"]
        );
        // Only through a link: the link's path names it.
        assert_eq!(
            names(d, "alias/*.csv"),
            vec!["alias/a.csv", "alias/caf\\xe9.csv"]
        );
        assert_eq!(names(d, "nope/*.csv"), Vec::<String>::new());
        assert_eq!(names(d, "real/a.csv"), vec!["real/a.csv"]);
    }
}

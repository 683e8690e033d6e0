//! A repository's file tree as the rules read it: paths of files (with sizes) and directories at
//! one commit, and the path arithmetic the rules need (relative links, parents, names). The GitHub
//! client fills it; tests build it from a list of paths.

use std::collections::{BTreeMap, BTreeSet};

/// A repository's files and directories at one commit.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    /// File path → size in bytes (0 when GitHub did not say).
    pub files: BTreeMap<String, u64>,
    pub dirs: BTreeSet<String>,
    /// GitHub cut the listing short (very large repositories).
    pub truncated: bool,
}

impl Tree {
    pub fn has_file(&self, path: &str) -> bool {
        self.files.contains_key(path)
    }

    /// A file or a directory.
    pub fn exists(&self, path: &str) -> bool {
        path.is_empty() || self.files.contains_key(path) || self.dirs.contains(path)
    }

    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// A tree from file paths (directories derived), for tests and pure checks.
    #[cfg(test)]
    pub fn from_paths<'a>(paths: impl IntoIterator<Item = &'a str>) -> Self {
        let mut tree = Tree::default();
        for path in paths {
            tree.files.insert(path.to_string(), 0);
            let mut dir = path;
            while let Some((parent, _)) = dir.rsplit_once('/') {
                tree.dirs.insert(parent.to_string());
                dir = parent;
            }
        }
        tree
    }
}

/// `path` resolved against the directory `base_dir` (`""` = root): `.` and `..` applied,
/// `None` when it climbs above the root. A leading `/` means the repository root.
pub fn resolve_path(base_dir: &str, path: &str) -> Option<String> {
    let mut parts: Vec<&str> = if path.starts_with('/') || base_dir.is_empty() {
        Vec::new()
    } else {
        base_dir.split('/').filter(|s| !s.is_empty()).collect()
    };
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.join("/"))
}

/// The directory of a file path (`""` at the root).
pub fn parent_dir(path: &str) -> &str {
    path.rsplit_once('/').map(|(dir, _)| dir).unwrap_or("")
}

/// The last part of a file path.
pub fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

pub fn is_markdown(path: &str) -> bool {
    let lower = path.to_lowercase();
    lower.ends_with(".md") || lower.ends_with(".markdown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_like_relative_links() {
        assert_eq!(
            resolve_path("docs", "../README.md").as_deref(),
            Some("README.md")
        );
        assert_eq!(
            resolve_path("docs", "./a/b.md").as_deref(),
            Some("docs/a/b.md")
        );
        assert_eq!(
            resolve_path("docs/x", "/src/lib.rs").as_deref(),
            Some("src/lib.rs")
        );
        assert_eq!(resolve_path("", "../x"), None);
        assert_eq!(parent_dir("docs/a.md"), "docs");
        assert_eq!(parent_dir("a.md"), "");
    }

    #[test]
    fn trees_know_files_and_directories() {
        let tree = Tree::from_paths(["src/a/b.rs", "README.md"]);
        assert!(tree.exists("src") && tree.exists("src/a") && tree.exists("src/a/b.rs"));
        assert!(!tree.exists("src/b"));
        assert!(tree.has_file("README.md") && !tree.has_file("src"));
    }
}

//! The repository rules: pure functions over a repository's file tree and file texts that judge
//! its documentation (`docs`), its architecture (`architecture`) and its reusable components
//! (`component_scan` finds them, `component_scoring` places them), its dependency manifests
//! (`manifests`) and its complexity (`complexity`). No I/O: the skills fetch
//! what the rules ask for and render what they return. The rules themselves are written down
//! in `docs/skill-rules.md`.

pub(crate) mod architecture;
pub(crate) mod complexity;
pub(crate) mod component_graph;
pub(crate) mod component_scan;
pub(crate) mod component_scoring;
pub(crate) mod consolidation;
pub(crate) mod docs;
pub(crate) mod manifests;
mod tree;

pub use tree::Tree;

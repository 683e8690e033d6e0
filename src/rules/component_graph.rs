//! The dependency graph between stored components, from what each imports
//! (`docs/skill-rules.md`, "Component dependencies"): an import refers to a component when one of
//! its path segments is the component's name (`-` read as `_`, any case), or — inside the same
//! repository — the stem of the component's file. Edges are followed from the components asked
//! about up to a depth; cycles are found among the edges followed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A component as the graph sees it.
pub struct Node {
    pub repository: String,
    pub name: String,
    pub location: Option<String>,
    pub imports: Vec<String>,
}

/// One dependency: `source` imports `target` `count` times; found at `level` (1 = direct).
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub source: usize,
    pub target: usize,
    pub count: usize,
    pub level: usize,
}

/// File stems too generic to name a component.
const GENERIC: [&str; 6] = ["mod", "index", "lib", "main", "__init__", "init"];

fn key(text: &str) -> String {
    text.to_lowercase().replace('-', "_")
}

fn stem(location: Option<&str>) -> Option<String> {
    let file = location?.rsplit('/').next()?;
    let stem = file.split('.').next()?;
    let stem = key(stem);
    (!stem.is_empty() && !GENERIC.contains(&stem.as_str())).then_some(stem)
}

fn segments(import: &str) -> BTreeSet<String> {
    import
        .split(['.', '/', ':', '\\', '@'])
        .filter(|s| !s.is_empty())
        .map(key)
        .collect()
}

/// Whether `from`'s import refers to `to`.
fn refers(from: &Node, import: &str, to: &Node) -> bool {
    let parts = segments(import);
    parts.contains(&key(&to.name))
        || (from.repository == to.repository
            && stem(to.location.as_deref()).is_some_and(|s| parts.contains(&s)))
}

/// Direct edges out of `i`.
fn direct(nodes: &[Node], i: usize) -> Vec<(usize, usize)> {
    let from = &nodes[i];
    nodes
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .filter_map(|(j, to)| {
            let count = from
                .imports
                .iter()
                .filter(|imp| refers(from, imp, to))
                .count();
            (count > 0).then_some((j, count))
        })
        .collect()
}

/// The edges reachable from `start` within `depth` steps, each once, breadth first.
pub fn explore(nodes: &[Node], start: &[usize], depth: usize) -> Vec<Edge> {
    let mut seen: BTreeSet<usize> = start.iter().copied().collect();
    let mut queue: VecDeque<(usize, usize)> = start.iter().map(|&s| (s, 1)).collect();
    let mut edges = Vec::new();
    while let Some((i, level)) = queue.pop_front() {
        if level > depth {
            continue;
        }
        for (j, count) in direct(nodes, i) {
            edges.push(Edge {
                source: i,
                target: j,
                count,
                level,
            });
            if seen.insert(j) {
                queue.push_back((j, level + 1));
            }
        }
    }
    edges
}

/// The simple cycles among `edges`, each once (starting at its smallest node), shortest first.
pub fn cycles(edges: &[Edge]) -> Vec<Vec<usize>> {
    let mut next: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    for e in edges {
        next.entry(e.source).or_default().insert(e.target);
    }
    let mut found: BTreeSet<Vec<usize>> = BTreeSet::new();
    for &start in next.keys() {
        let mut stack = vec![(start, vec![start])];
        while let Some((at, path)) = stack.pop() {
            for &to in next.get(&at).into_iter().flatten() {
                if to == start {
                    found.insert(path.clone());
                } else if to > start && !path.contains(&to) && path.len() < 8 {
                    let mut longer = path.clone();
                    longer.push(to);
                    stack.push((to, longer));
                }
            }
        }
    }
    let mut list: Vec<Vec<usize>> = found.into_iter().collect();
    list.sort_by_key(Vec::len);
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(repository: &str, name: &str, location: &str, imports: &[&str]) -> Node {
        Node {
            repository: repository.into(),
            name: name.into(),
            location: Some(location.into()),
            imports: imports.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn imports_name_components_by_name_or_by_file_in_the_same_repository() {
        let nodes = [
            node(
                "a/x",
                "api",
                "src/api.rs",
                &["crate::retry", "billing/invoice-number"],
            ),
            node("a/x", "retry-policy", "src/retry.rs", &["crate::api"]),
            node("a/y", "invoice-number", "src/invoice.rs", &[]),
            node("a/y", "retry", "src/other.rs", &[]),
        ];
        let edges = explore(&nodes, &[0], 3);
        let pairs: Vec<(usize, usize, usize)> = edges
            .iter()
            .map(|e| (e.source, e.target, e.level))
            .collect();
        // api → retry-policy (file stem, same repository), api → invoice-number (name, peer),
        // api → a/y's "retry" (name), retry-policy → api (level 2).
        assert_eq!(pairs, [(0, 1, 1), (0, 2, 1), (0, 3, 1), (1, 0, 2)]);
        assert_eq!(cycles(&edges), [vec![0, 1]]);
        assert!(explore(&nodes, &[2], 3).is_empty());
    }
}

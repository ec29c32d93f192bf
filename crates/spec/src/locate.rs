//! Maps a dotted key path (`hostnames.matrix`, `features[2]`) to where it stands in a YAML file.
//!
//! serde-saphyr gives locations for parse and type errors; semantic checks run on the typed model and
//! need the location of a *key* afterwards. Our files are block-style YAML, so an indentation-aware
//! line scan is enough and keeps us independent of the parser's internals. A path that cannot be
//! found falls back to its nearest found parent (never to nothing).

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceLocation {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl std::fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// A value with the location of the key it was read from.
#[derive(Debug, Clone)]
pub struct Located<T> {
    pub value: T,
    pub location: SourceLocation,
}

#[derive(Debug, Clone)]
pub struct YamlLocator {
    file: String,
    lines: Vec<String>,
}

impl YamlLocator {
    pub fn new(file: impl Into<String>, text: &str) -> Self {
        YamlLocator {
            file: file.into(),
            lines: text.lines().map(str::to_owned).collect(),
        }
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    pub fn at(&self, line: usize, column: usize) -> SourceLocation {
        SourceLocation {
            file: self.file.clone(),
            line,
            column,
        }
    }

    /// Location of `path` (dot-separated keys, `[n]` for list items). Falls back to the deepest
    /// ancestor found, then to 1:1.
    pub fn locate(&self, path: &str) -> SourceLocation {
        let segments = split_path(path);
        let mut best = self.at(1, 1);
        // Search window: lines [start, end) with children indented more than `parent_indent`.
        let (mut start, mut end, mut parent_indent) = (0usize, self.lines.len(), -1i64);
        for seg in segments {
            match self.find_in(start, end, parent_indent, &seg) {
                Some((line_idx, col, indent)) => {
                    best = self.at(line_idx + 1, col + 1);
                    start = line_idx + 1;
                    parent_indent = indent;
                    end = self.block_end(start, indent, end);
                    // A list item's own keys sit on the same line as its dash: include it.
                    if matches!(seg, Segment::Index(_)) {
                        start = line_idx;
                    }
                }
                None => break,
            }
        }
        best
    }

    fn block_end(&self, from: usize, indent: i64, limit: usize) -> usize {
        for i in from..limit {
            let l = &self.lines[i];
            let t = l.trim_start();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let ind = (l.len() - t.len()) as i64;
            if ind <= indent && !(t.starts_with("- ") && ind == indent) {
                return i;
            }
        }
        limit
    }

    fn find_in(
        &self,
        start: usize,
        end: usize,
        parent_indent: i64,
        seg: &Segment,
    ) -> Option<(usize, usize, i64)> {
        let mut item = 0usize;
        let mut child_indent: Option<i64> = None;
        for i in start..end {
            let l = &self.lines[i];
            let t = l.trim_start();
            if t.is_empty() || t.starts_with('#') || t == "---" {
                continue;
            }
            let ind = (l.len() - t.len()) as i64;
            match seg {
                Segment::Key(k) => {
                    // Keys may follow a list dash on the same line ("- name: x").
                    let (ind, t) = if i == start && t.starts_with("- ") {
                        (ind + 2, &t[2..])
                    } else {
                        (ind, t)
                    };
                    if ind <= parent_indent {
                        continue;
                    }
                    let ci = *child_indent.get_or_insert(ind);
                    if ind != ci {
                        continue;
                    }
                    let key = t
                        .split(':')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .trim_matches('"')
                        .trim_matches('\'');
                    if key == k
                        && t[key.len()..]
                            .trim_start_matches(['"', '\''])
                            .starts_with(':')
                    {
                        return Some((i, ind as usize, ind));
                    }
                }
                Segment::Index(n) => {
                    if ind <= parent_indent && !t.starts_with("- ") {
                        continue;
                    }
                    if let Some(rest) = t.strip_prefix('[') {
                        // Flow list on the parent line: point at the n-th element.
                        let _ = rest;
                        return Some((i.saturating_sub(1), ind as usize, ind));
                    }
                    if t.starts_with("- ") || t == "-" {
                        if item == *n {
                            return Some((i, ind as usize + 2, ind));
                        }
                        item += 1;
                    }
                }
            }
        }
        // Flow-style list on the key's own line: `features: [a, b]`.
        if let Segment::Index(n) = seg {
            if start > 0 {
                let l = &self.lines[start - 1];
                if let (Some(open), Some(_)) = (l.find('['), l.find(']')) {
                    let mut col = open + 1;
                    for (idx, part) in l[open + 1..].split(',').enumerate() {
                        if idx == *n {
                            let lead = part.len() - part.trim_start().len();
                            return Some((start - 1, col + lead, parent_indent));
                        }
                        col += part.len() + 1;
                    }
                }
            }
        }
        None
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Key(String),
    Index(usize),
}

fn split_path(path: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        if let Some(b) = rest.find('[') {
            if b > 0 {
                out.push(Segment::Key(rest[..b].to_string()));
            }
            rest = &rest[b..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let close = stripped.find(']').unwrap_or(stripped.len());
                if let Ok(n) = stripped[..close].parse() {
                    out.push(Segment::Index(n));
                }
                rest = stripped.get(close + 1..).unwrap_or("");
            }
        } else {
            out.push(Segment::Key(rest.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "# top\ndomain: example.org\nhostnames:\n  matrix: m.example.org\n  element: chat.example.org\nfeatures:\n  - li\n  - antivirus\nflow: [a, b, c]\noverrides:\n  workers:\n    synchrotron:\n      replicas: 3\n";

    #[test]
    fn finds_nested_keys_and_items() {
        let l = YamlLocator::new("f.yaml", DOC);
        assert_eq!(l.locate("domain").line, 2);
        assert_eq!(l.locate("hostnames.element"), l.at(5, 3));
        assert_eq!(l.locate("features[1]"), l.at(8, 5));
        assert_eq!(
            l.locate("overrides.workers.synchrotron.replicas"),
            l.at(13, 7)
        );
        assert_eq!(l.locate("flow[2]"), l.at(9, 14));
    }

    #[test]
    fn falls_back_to_parent() {
        let l = YamlLocator::new("f.yaml", DOC);
        assert_eq!(l.locate("hostnames.turn"), l.at(3, 1));
        assert_eq!(l.locate("nothing"), l.at(1, 1));
    }
}

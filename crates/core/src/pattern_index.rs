//! Pattern subscriptions, indexed for routing: from a published topic to
//! every value (a subscriber key) whose pattern matches it, without looking at
//! the patterns that cannot.
//!
//! A trie keyed by pattern segments. A node is a pattern prefix; its children
//! are the literal next segments (a hash map) and one `*` child; a pattern
//! ending in `**` is stored on the node of its prefix, in `rest`, since `**`
//! is always last. Matching walks the topic's segments from the root, taking
//! at each node the literal child equal to the segment and, if the segment is
//! non-empty, the `*` child: the work is the number of nodes whose prefix
//! matches the topic's first segments (at most twice as many per segment as
//! the level before, and never more than the nodes there are), not the number
//! of patterns. The semantics are [`Pattern::matches`]'s, which the tests
//! check this against.
//!
//! Nothing is allocated per lookup; the walk recurses once per segment, and
//! only into nodes that exist, so its depth is bounded by the deepest stored
//! pattern: at most 257 segments, since a pattern is at most 256 bytes.
//!
//! Values are a multiset per pattern: one entry per [`PatternIndex::insert`],
//! and [`PatternIndex::for_each_match`] reports each entry whose pattern
//! matches exactly once. A value inserted under several matching patterns is
//! reported once for each; the caller dedups (the fan-out's per-subscriber
//! batch mask makes repeats harmless). Removing the last entry under a node
//! prunes every node left empty, so memory follows the live patterns, not the
//! churn.

use std::collections::HashMap;

use ssehub_protocol::pattern::{Pattern, Segment};

/// Values stored under patterns, found by topic.
#[derive(Debug)]
pub struct PatternIndex<T: Copy + Eq> {
    /// The empty prefix.
    root: Node<T>,
}

/// One pattern prefix.
#[derive(Debug)]
struct Node<T> {
    /// Children by literal next segment.
    literal: HashMap<Box<str>, Node<T>>,
    /// The child for a `*` next segment.
    star: Option<Box<Node<T>>>,
    /// Values whose pattern is exactly this prefix.
    here: Vec<T>,
    /// Values whose pattern is this prefix followed by `**`.
    rest: Vec<T>,
}

impl<T> Node<T> {
    fn new() -> Self {
        Node { literal: HashMap::new(), star: None, here: Vec::new(), rest: Vec::new() }
    }

    fn is_empty(&self) -> bool {
        self.literal.is_empty() && self.star.is_none() && self.here.is_empty() && self.rest.is_empty()
    }
}

impl<T: Copy + Eq> Default for PatternIndex<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy + Eq> PatternIndex<T> {
    /// An empty index.
    pub fn new() -> Self {
        PatternIndex { root: Node::new() }
    }

    /// No value under any pattern (and, since removal prunes, no node either).
    pub fn is_empty(&self) -> bool {
        self.root.is_empty()
    }

    /// Adds one entry of `value` under `pattern`, even if one is already there.
    pub fn insert(&mut self, pattern: &Pattern, value: T) {
        let mut node = &mut self.root;
        for segment in pattern.segments() {
            node = match segment {
                Segment::Literal(literal) => node.literal.entry(literal.clone()).or_insert_with(Node::new),
                Segment::Star => node.star.get_or_insert_with(|| Box::new(Node::new())),
                Segment::DoubleStar => {
                    node.rest.push(value);
                    return;
                }
            };
        }
        node.here.push(value);
    }

    /// Removes one entry of `value` under `pattern`, pruning the nodes left
    /// empty; false if there was none.
    pub fn remove(&mut self, pattern: &Pattern, value: T) -> bool {
        remove_at(&mut self.root, pattern.segments(), value)
    }

    /// Calls `f` once for every entry whose pattern matches `topic`, in no
    /// particular order; see the module doc for the cost and for repeats.
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(T)) {
        visit(&self.root, Some(topic), &mut f);
    }
}

/// Reports the entries under `node` that match `rest`, the topic after
/// `node`'s prefix (`None` once every segment is consumed).
fn visit<T: Copy>(node: &Node<T>, rest: Option<&str>, f: &mut impl FnMut(T)) {
    let Some(rest) = rest else {
        node.here.iter().copied().for_each(f);
        return;
    };
    // One segment or more remain: what `**` needs.
    node.rest.iter().copied().for_each(&mut *f);
    let (segment, after) = match rest.split_once('/') {
        Some((segment, after)) => (segment, Some(after)),
        None => (rest, None),
    };
    if let Some(child) = node.literal.get(segment) {
        visit(child, after, f);
    }
    if let Some(star) = node.star.as_deref().filter(|_| !segment.is_empty()) {
        visit(star, after, f);
    }
}

/// Removes one `value` under `node` + `segments`; the caller prunes `node`.
fn remove_at<T: Copy + Eq>(node: &mut Node<T>, segments: &[Segment], value: T) -> bool {
    let Some((segment, segments)) = segments.split_first() else {
        return take(&mut node.here, value);
    };
    match segment {
        Segment::DoubleStar => take(&mut node.rest, value),
        Segment::Star => {
            let Some(child) = node.star.as_deref_mut() else { return false };
            let removed = remove_at(child, segments, value);
            if child.is_empty() {
                node.star = None;
            }
            removed
        }
        Segment::Literal(literal) => {
            let Some(child) = node.literal.get_mut(&**literal) else { return false };
            let removed = remove_at(child, segments, value);
            if child.is_empty() {
                node.literal.remove(&**literal);
            }
            removed
        }
    }
}

/// Removes one `value` from an unordered list.
fn take<T: Copy + Eq>(values: &mut Vec<T>, value: T) -> bool {
    match values.iter().position(|&v| v == value) {
        Some(at) => {
            values.swap_remove(at);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(pattern: &str) -> Pattern {
        match Pattern::parse(pattern) {
            Ok(parsed) => parsed,
            Err(e) => panic!("{pattern:?}: {e}"),
        }
    }

    fn found(index: &PatternIndex<u32>, topic: &str) -> Vec<u32> {
        let mut values = Vec::new();
        index.for_each_match(topic, |v| values.push(v));
        values.sort_unstable();
        values
    }

    fn nodes<T>(node: &Node<T>) -> usize {
        1 + node.literal.values().map(nodes).sum::<usize>() + node.star.as_deref().map_or(0, nodes)
    }

    const TABLE: [&str; 12] =
        ["orders/*", "orders/1", "team/7/**", "**", "*", "a//b", "*/", "/", "a*b", "*/*/**", "orders/1/items", "*/x"];

    #[test]
    fn routes_table() {
        let mut index = PatternIndex::new();
        for (value, pattern) in TABLE.iter().enumerate() {
            index.insert(&p(pattern), value as u32);
        }
        for (topic, want) in [
            ("orders/1", vec![0, 1, 3]),
            ("orders", vec![3, 4]),
            ("orders/", vec![3, 6]),
            ("orders/1/items", vec![3, 9, 10]),
            ("team/7/chat", vec![2, 3, 9]),
            ("team/7/", vec![2, 3, 9]),
            ("team/7", vec![3]),
            ("a//b", vec![3, 5]),
            ("/", vec![3, 7]),
            ("a*b", vec![3, 4, 8]),
            ("/x", vec![3]),
            ("y/x", vec![3, 11]),
        ] {
            assert_eq!(found(&index, topic), want, "{topic:?}");
            let naive: Vec<u32> = (0..).zip(TABLE).filter(|(_, q)| p(q).matches(topic)).map(|(v, _)| v).collect();
            assert_eq!(naive, want, "the table agrees with Pattern::matches: {topic:?}");
        }
    }

    #[test]
    fn entries_are_a_multiset_and_removal_prunes() {
        let mut index = PatternIndex::new();
        let (a, b) = (p("team/*/chat"), p("team/**"));
        index.insert(&a, 1);
        index.insert(&a, 1);
        index.insert(&b, 1);
        index.insert(&b, 2);
        assert_eq!(found(&index, "team/7/chat"), [1, 1, 1, 2]);
        assert!(!index.remove(&p("team/*"), 1), "a prefix holds no entry");
        assert!(!index.remove(&a, 2));
        assert!(index.remove(&a, 1));
        assert_eq!(found(&index, "team/7/chat"), [1, 1, 2]);
        assert!(index.remove(&a, 1));
        assert!(!index.remove(&a, 1));
        assert_eq!(nodes(&index.root), 2, "root and team/ remain for team/**");
        assert!(index.remove(&b, 2));
        assert!(index.remove(&b, 1));
        assert!(index.is_empty());
        assert_eq!(nodes(&index.root), 1);
    }

    #[test]
    fn churn_does_not_grow_the_trie() {
        let mut index = PatternIndex::new();
        index.insert(&p("keep/*"), 0);
        for round in 0..1000u32 {
            let pattern = p(&format!("user/{round}/*/**"));
            index.insert(&pattern, round);
            assert!(index.remove(&pattern, round));
        }
        assert_eq!(nodes(&index.root), 3);
    }

    /// 1-4 segments over a small alphabet; a pattern may have `*` anywhere
    /// and `**` last, a topic has neither (and may be empty: one empty segment).
    fn text(pattern: bool) -> impl Strategy<Value = String> {
        let pieces = if pattern { vec!["", "a", "b", "*"] } else { vec!["", "a", "b", "ab"] };
        (prop::collection::vec(prop::sample::select(pieces), 1..5), any::<bool>())
            .prop_map(move |(mut pieces, double_star)| {
                if pattern && double_star {
                    pieces.pop();
                    pieces.push("**");
                }
                pieces.join("/")
            })
            .prop_filter("a pattern is not empty", move |text| !pattern || !text.is_empty())
    }

    proptest! {
        #[test]
        fn for_each_match_agrees_with_matches(
            ops in prop::collection::vec((text(true), 0u32..4, any::<bool>()), 1..60),
            topics in prop::collection::vec(text(false), 1..20),
        ) {
            let mut index = PatternIndex::new();
            let mut model: Vec<(Pattern, u32)> = Vec::new();
            for (pattern, value, insert) in ops {
                let pattern = p(&pattern);
                if insert {
                    index.insert(&pattern, value);
                    model.push((pattern, value));
                } else {
                    let at = model.iter().position(|(q, v)| *q == pattern && *v == value);
                    prop_assert_eq!(index.remove(&pattern, value), at.is_some());
                    if let Some(at) = at {
                        model.swap_remove(at);
                    }
                }
            }
            prop_assert_eq!(index.is_empty(), model.is_empty());
            // Wildcard segments in a topic (refused on publish) are plain segments here.
            for topic in topics.iter().map(String::as_str).chain(["**", "*", "a/*", "/"]) {
                let mut want: Vec<u32> = model.iter().filter(|(q, _)| q.matches(topic)).map(|&(_, v)| v).collect();
                want.sort_unstable();
                prop_assert_eq!(found(&index, topic), want, "{:?}", topic);
            }
            for (pattern, value) in model.drain(..) {
                prop_assert!(index.remove(&pattern, value));
            }
            prop_assert!(index.is_empty());
            prop_assert_eq!(nodes(&index.root), 1);
        }
    }
}

//! Topic patterns: parsing never panics and refuses exactly what the module
//! doc says; `matches` agrees with a naive matcher over segment slices;
//! every pattern covers itself, and when `covers(g, s)`, every topic tried
//! that `s` matches, `g` matches too.
//!
//! The input is lines of text (at most 16). Each line is tried as a pattern
//! and as a topic, and each valid pattern adds two topics it matches (its
//! wildcards filled in), so the coverage check is rarely vacuous.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssehub_protocol::pattern::{Pattern, PatternError, covers, is_pattern};
use ssehub_protocol::topic::valid_topic;

/// The specification read literally: `*` one non-empty segment, a last `**`
/// one or more segments, anything else itself.
fn naive(pattern: &[&str], topic: &[&str]) -> bool {
    match (pattern, topic) {
        ([], []) => true,
        (["**"], [_, ..]) => true,
        (["*", pattern @ ..], [part, topic @ ..]) => !part.is_empty() && naive(pattern, topic),
        ([literal, pattern @ ..], [part, topic @ ..]) => literal == part && naive(pattern, topic),
        _ => false,
    }
}

/// A topic `segments` matches: `*` as `star`, `**` as `rest`.
fn fill(segments: &[&str], star: &str, rest: &str) -> String {
    let filled: Vec<&str> = segments
        .iter()
        .map(|&s| match s {
            "*" => star,
            "**" => rest,
            s => s,
        })
        .collect();
    filled.join("/")
}

fuzz_target!(|input: &[u8]| {
    let text = String::from_utf8_lossy(input);
    let lines: Vec<&str> = text.split('\n').take(16).collect();
    let mut topics: Vec<String> = lines.iter().map(|line| line.to_string()).collect();
    let mut patterns = Vec::new();
    for &line in &lines {
        let segments: Vec<&str> = line.split('/').collect();
        let inner_double_star = segments[..segments.len() - 1].contains(&"**");
        match Pattern::parse(line) {
            Err(PatternError::Invalid) => assert!(!valid_topic(line)),
            Err(PatternError::DoubleStarNotLast) => assert!(valid_topic(line) && inner_double_star),
            Ok(pattern) => {
                assert!(valid_topic(line) && !inner_double_star);
                assert_eq!(pattern.to_string(), line);
                assert_eq!(pattern.is_literal(), !is_pattern(line));
                assert!(covers(&pattern, &pattern), "{line:?}");
                for topic in [fill(&segments, "x", ""), fill(&segments, "y", "y//z")] {
                    assert!(pattern.matches(&topic), "{line:?} {topic:?}");
                    topics.push(topic);
                }
                patterns.push((pattern, segments));
            }
        }
    }
    for (pattern, segments) in &patterns {
        for topic in &topics {
            let parts: Vec<&str> = topic.split('/').collect();
            assert_eq!(pattern.matches(topic), naive(segments, &parts), "{pattern} {topic:?}");
        }
    }
    for (grant, _) in &patterns {
        for (sub, _) in &patterns {
            if covers(grant, sub) {
                for topic in topics.iter().filter(|t| sub.matches(t)) {
                    assert!(grant.matches(topic), "grant {grant} covers {sub} but not {topic:?}");
                }
            }
        }
    }
});

//! Topic patterns: the one matcher that subscriptions and grants share, and
//! the coverage test that decides whether a grant allows a subscription.
//!
//! A topic is a sequence of `/`-separated segments, split exactly as
//! `str::split('/')` does: `a//b`, a leading `/` and a trailing `/` hold
//! literal *empty* segments, and every string has at least one segment. A
//! pattern is a topic in which two whole segments mean something else:
//!
//! - `*` matches exactly one **non-empty** segment: `orders/*` matches
//!   `orders/1`, not `orders`, `orders/` or `orders/1/items`.
//! - `**` as the **last** segment matches one or more segments of any content,
//!   empty ones included: `team/7/**` matches `team/7/chat`, `team/7/a/b` and
//!   `team/7/`, not `team/7`. A `**` segment anywhere else is refused
//!   ([`PatternError::DoubleStarNotLast`]) rather than given a meaning.
//! - Any other `*` is a literal character: `a*b`, `**x`, `***` and `x*` are
//!   plain segments, matched byte for byte.
//!
//! A pattern string follows [`valid_topic`] (1-256 bytes, no control
//! character). A topic with a segment exactly `*` or `**` ([`is_pattern`]) is
//! refused by the publish path, so no published topic can be mistaken for a
//! pattern; the matcher itself takes any string.
//!
//! [`covers`] decides exactly, segment by segment, whether every topic a
//! subscription pattern can match is also matched by a grant pattern; the
//! tests check it against a brute force over every topic of a small alphabet.
//!
//! Patterns are parsed once, when a subscription or a grant is made; matching
//! allocates nothing and costs O(segments).

use std::fmt;

use crate::topic::valid_topic;

/// Why a pattern string is refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PatternError {
    /// Empty, longer than 256 bytes, or holding a control character.
    Invalid,
    /// A `**` segment that is not the last one.
    DoubleStarNotLast,
}

impl PatternError {
    /// One line for a response body and the log.
    pub fn detail(self) -> &'static str {
        match self {
            PatternError::Invalid => "patterns are 1-256 bytes of UTF-8 without control characters",
            PatternError::DoubleStarNotLast => "`**` may only be the last segment of a pattern",
        }
    }
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.detail())
    }
}

impl std::error::Error for PatternError {}

/// One segment of a parsed pattern.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Segment {
    /// Matches exactly this segment (possibly empty; never `*` or `**`).
    Literal(Box<str>),
    /// `*`: exactly one non-empty segment.
    Star,
    /// `**`, always the last segment: one or more segments of any content.
    DoubleStar,
}

/// A subscription or grant pattern, parsed once.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pattern {
    /// At least one; a [`Segment::DoubleStar`] only in the last place.
    segments: Box<[Segment]>,
}

impl Pattern {
    /// Parses a pattern; see the module doc for the syntax.
    pub fn parse(pattern: &str) -> Result<Pattern, PatternError> {
        if !valid_topic(pattern) {
            return Err(PatternError::Invalid);
        }
        let count = pattern.split('/').count();
        let mut segments = Vec::with_capacity(count);
        for (i, segment) in pattern.split('/').enumerate() {
            segments.push(match segment {
                "*" => Segment::Star,
                "**" if i + 1 == count => Segment::DoubleStar,
                "**" => return Err(PatternError::DoubleStarNotLast),
                literal => Segment::Literal(literal.into()),
            });
        }
        Ok(Pattern { segments: segments.into_boxed_slice() })
    }

    /// The segments, in order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// No wildcard: the pattern is a plain topic and matches only itself.
    pub fn is_literal(&self) -> bool {
        self.segments.iter().all(|s| matches!(s, Segment::Literal(_)))
    }

    /// Whether `topic` matches; O(segments), no allocation.
    pub fn matches(&self, topic: &str) -> bool {
        let mut parts = topic.split('/');
        for segment in self.segments.iter() {
            match segment {
                // Last by construction: what is left must be one segment or more.
                Segment::DoubleStar => return parts.next().is_some(),
                Segment::Star => match parts.next() {
                    Some(part) if !part.is_empty() => {}
                    _ => return false,
                },
                Segment::Literal(literal) => {
                    if parts.next() != Some(&**literal) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }

    /// The segments before a trailing `**`, and whether there is one.
    fn split_tail(&self) -> (&[Segment], bool) {
        match self.segments.split_last() {
            Some((Segment::DoubleStar, head)) => (head, true),
            _ => (&self.segments, false),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.segments.iter().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            f.write_str(match segment {
                Segment::Literal(literal) => literal,
                Segment::Star => "*",
                Segment::DoubleStar => "**",
            })?;
        }
        Ok(())
    }
}

/// Whether `topic` has a segment exactly `*` or `**`, which a publish refuses.
pub fn is_pattern(topic: &str) -> bool {
    topic.split('/').any(|segment| segment == "*" || segment == "**")
}

/// Whether every topic `sub` matches is also matched by `grant`.
///
/// Write each pattern as fixed segments plus an optional trailing `**`. A
/// pattern's topics, at one length, are the product of what each fixed
/// segment allows (never empty), so inclusion holds position by position:
///
/// - `sub` has `**`, `grant` has not: never covered (`sub` reaches any length,
///   `grant` only one).
/// - neither has `**`: same length, and each grant segment covers the
///   subscription segment in the same place.
/// - `grant` has `**` after `k` fixed segments: `sub` has at least `k + 1`
///   segments counting its own `**` (so each of its topics has more than `k`),
///   and the first `k` are covered; the grant's `**` takes any rest.
///
/// A literal covers only the same literal; `*` covers `*` and any non-empty
/// literal. So `a/*/**` does not cover `a/**` (which matches `a/x`), and
/// `team/7` does not cover `team/*`.
pub fn covers(grant: &Pattern, sub: &Pattern) -> bool {
    let (grant_fixed, grant_tail) = grant.split_tail();
    let (sub_fixed, sub_tail) = sub.split_tail();
    let long_enough = if grant_tail {
        sub.segments.len() > grant_fixed.len()
    } else {
        !sub_tail && sub_fixed.len() == grant_fixed.len()
    };
    long_enough && grant_fixed.iter().zip(sub_fixed).all(|(g, s)| segment_covers(g, s))
}

/// One fixed grant segment against the subscription segment in its place.
fn segment_covers(grant: &Segment, sub: &Segment) -> bool {
    match (grant, sub) {
        (Segment::Literal(g), Segment::Literal(s)) => g == s,
        (Segment::Star, Segment::Star) => true,
        (Segment::Star, Segment::Literal(s)) => !s.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pattern: &str) -> Pattern {
        match Pattern::parse(pattern) {
            Ok(parsed) => parsed,
            Err(e) => panic!("{pattern:?}: {e}"),
        }
    }

    /// The specification read literally, over segment slices.
    fn reference(pattern: &[&str], topic: &[&str]) -> bool {
        match (pattern, topic) {
            ([], []) => true,
            (["**"], [_, ..]) => true,
            (["*", pattern @ ..], [part, topic @ ..]) => !part.is_empty() && reference(pattern, topic),
            ([literal, pattern @ ..], [part, topic @ ..]) => literal == part && reference(pattern, topic),
            _ => false,
        }
    }

    #[test]
    fn parse_refusals() {
        let long = "a".repeat(257);
        for (input, want) in [
            ("", PatternError::Invalid),
            (long.as_str(), PatternError::Invalid),
            ("a\nb", PatternError::Invalid),
            ("a/\u{7f}", PatternError::Invalid),
            ("**/a", PatternError::DoubleStarNotLast),
            ("a/**/b", PatternError::DoubleStarNotLast),
            ("**/**", PatternError::DoubleStarNotLast),
        ] {
            assert_eq!(Pattern::parse(input), Err(want), "{input:?}");
        }
        assert!(Pattern::parse(&"a".repeat(256)).is_ok());
        assert_eq!(PatternError::DoubleStarNotLast.to_string(), PatternError::DoubleStarNotLast.detail());
    }

    #[test]
    fn parse_segments_and_display() {
        use Segment::*;
        let lit = |s: &str| Literal(s.into());
        for (input, want, literal) in [
            ("a", vec![lit("a")], true),
            ("/", vec![lit(""), lit("")], true),
            ("a//b/", vec![lit("a"), lit(""), lit("b"), lit("")], true),
            ("*", vec![Star], false),
            ("**", vec![DoubleStar], false),
            ("a/*/**", vec![lit("a"), Star, DoubleStar], false),
            ("*/*", vec![Star, Star], false),
            ("a*b/**x/***/x*", vec![lit("a*b"), lit("**x"), lit("***"), lit("x*")], true),
            ("*/", vec![Star, lit("")], false),
        ] {
            let parsed = p(input);
            assert_eq!(parsed.segments(), want.as_slice(), "{input:?}");
            assert_eq!(parsed.is_literal(), literal, "{input:?}");
            assert_eq!(parsed.is_literal(), !is_pattern(input), "{input:?}");
            assert_eq!(parsed.to_string(), input);
        }
    }

    #[test]
    fn is_pattern_needs_a_whole_segment() {
        for (topic, want) in [
            ("*", true),
            ("**", true),
            ("a/*", true),
            ("*/a", true),
            ("a/**/b", true),
            ("a*", false),
            ("**x", false),
            ("***", false),
            ("a/b", false),
            ("/", false),
        ] {
            assert_eq!(is_pattern(topic), want, "{topic:?}");
        }
    }

    #[test]
    fn matches_table() {
        for (pattern, topic, want) in [
            ("orders/*", "orders/1", true),
            ("orders/*", "orders/1/items", false),
            ("orders/*", "orders", false),
            ("orders/*", "orders/", false),
            ("team/7/**", "team/7/chat", true),
            ("team/7/**", "team/7/a/b", true),
            ("team/7/**", "team/7/", true),
            ("team/7/**", "team/7//", true),
            ("team/7/**", "team/7", false),
            ("team/7/**", "team/8/chat", false),
            ("**", "a", true),
            ("**", "/", true),
            ("**", "a/b/c", true),
            ("*", "a", true),
            ("*", "/", false),
            ("*/*", "/", false),
            ("*/", "a/", true),
            ("*/", "a", false),
            ("a//b", "a//b", true),
            ("a//b", "a/b", false),
            ("/a", "/a", true),
            ("/a", "a", false),
            ("a*b", "a*b", true),
            ("a*b", "axb", false),
            ("**x", "ax", false),
            ("**x", "**x", true),
            // A topic with a `*` segment is refused on publish; the matcher still
            // sees it as a non-empty segment.
            ("a/*", "a/*", true),
            ("a/b", "a/b/", false),
            ("a/b/", "a/b", false),
        ] {
            assert_eq!(p(pattern).matches(topic), want, "{pattern:?} {topic:?}");
        }
    }

    #[test]
    fn covers_table() {
        for (grant, sub, want) in [
            ("team/*", "team/*", true),
            ("team/**", "team/*", true),
            ("**", "team/*", true),
            ("team/7", "team/*", false),
            ("team/*", "team/7", true),
            ("team/*", "team/", false),
            ("team/*", "team/7/x", false),
            ("a/**", "a/**", true),
            ("**", "a/**", true),
            ("a/*/**", "a/**", false),
            ("a/**", "a/*/**", true),
            ("a/**", "a", false),
            ("a/**", "a/", true),
            ("a/*", "a/**", false),
            ("*/*", "**", false),
            ("**", "**", true),
            ("**", "/", true),
            ("*/**", "**", false),
            ("*/**", "a/b", true),
            ("*/**", "/b", false),
            ("a", "a", true),
            ("a", "b", false),
            ("*", "*", true),
            ("a*", "*", false),
        ] {
            assert_eq!(covers(&p(grant), &p(sub)), want, "grant {grant:?} sub {sub:?}");
        }
    }

    /// Every string over `{a, b, /}` up to `len` bytes (the empty one included:
    /// it is one empty segment).
    fn topics(len: usize) -> Vec<String> {
        let mut all = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..len {
            last = last.iter().flat_map(|t| ["a", "b", "/"].map(|c| format!("{t}{c}"))).collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    /// Every valid pattern of one to three segments from `{"", a, b, *, **}`.
    fn patterns() -> Vec<Pattern> {
        let pieces = ["", "a", "b", "*", "**"];
        let mut texts: Vec<String> = pieces.iter().map(|s| s.to_string()).collect();
        let mut last = texts.clone();
        for _ in 1..3 {
            last = last.iter().flat_map(|t| pieces.map(|s| format!("{t}/{s}"))).collect();
            texts.extend(last.iter().cloned());
        }
        texts.iter().filter_map(|t| Pattern::parse(t).ok()).collect()
    }

    #[test]
    fn matches_agrees_with_reference() {
        let topics = topics(6);
        for pattern in patterns() {
            let text = pattern.to_string();
            let segments: Vec<&str> = text.split('/').collect();
            for topic in &topics {
                let parts: Vec<&str> = topic.split('/').collect();
                assert_eq!(pattern.matches(topic), reference(&segments, &parts), "{text:?} {topic:?}");
            }
        }
    }

    /// Brute force: `covers(g, s)` iff no topic up to 6 bytes over `{a, b, /}`
    /// matches `s` but not `g`. The bound is enough for these patterns (at most
    /// three segments, `**` expanded to at most four): a counterexample, when
    /// there is one, is a short topic built from `s` with `*` as `a` or `b`.
    #[test]
    fn covers_agrees_with_brute_force() {
        let topics = topics(6);
        let patterns = patterns();
        let matched: Vec<Vec<bool>> = patterns.iter().map(|p| topics.iter().map(|t| p.matches(t)).collect()).collect();
        let mut checked = (0, 0);
        for (g, grant) in patterns.iter().enumerate() {
            for (s, sub) in patterns.iter().enumerate() {
                let brute = matched[s].iter().zip(&matched[g]).all(|(&in_s, &in_g)| !in_s || in_g);
                assert_eq!(covers(grant, sub), brute, "grant {grant} sub {sub}");
                if brute {
                    checked.0 += 1;
                } else {
                    checked.1 += 1;
                }
            }
        }
        // Both answers are exercised, many times over.
        assert!(checked.0 > 100 && checked.1 > 100, "{checked:?}");
    }

    #[test]
    fn every_pattern_covers_itself() {
        for pattern in patterns() {
            assert!(covers(&pattern, &pattern), "{pattern}");
        }
    }
}

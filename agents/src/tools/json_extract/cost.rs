//! A worst-case bound on the work of a JSONPath query over one document, computed from the
//! shape of the path and the size and depth of the document before the query runs.
//!
//! `serde_json_path` evaluates a query in one call and materialises every intermediate node
//! list, so a query cannot be stopped half way; and its syntax tree is not reachable from a
//! parsed `JsonPath`. So the structure that matters here is read from the path's text, which
//! the library has already accepted: segments (child or descendant), how many selectors each
//! has and of which kind, and the queries and regular expressions inside filters.
//!
//! The bound is sound, not tight. With `n` nodes and depth `d` in the document, it follows
//! how often one node can occur in the node list after each segment (`mult`) and how many
//! listed nodes one root-to-leaf chain can hold (`chain`):
//! - a child segment with `s` selectors: `mult × s`, chain unchanged;
//! - a descendant segment visits the subtree of every listed node, so a node is visited up
//!   to `mult × chain` times: `mult × chain × s`, and the chain becomes `d + 1`;
//! - a filter runs its expression once per child of every visited node, and the expression
//!   costs the bound of each query in it (over the whole document) plus a regex
//!   compilation per `match`/`search` call (`serde_json_path` compiles it per evaluation).
//!
//! So `$..name` on a document of `n` nodes costs about `2n`, while `$..*..*..*` or a union
//! like `$[*,*,*][*,*,*]…` is priced at what it could really produce.

/// The parts of a path that decide its cost.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Query {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Segment {
    descendant: bool,
    /// Name and index selectors: at most one child each.
    singular: u64,
    /// Wildcard, slice and filter selectors: any number of children each.
    multiple: u64,
    filters: Vec<Filter>,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Filter {
    queries: Vec<Query>,
    regexes: u64,
}

/// What the bound needs to know about the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DocumentSize {
    /// Values in the document, the root and every nested value included.
    pub nodes: u64,
    /// Arrays and objects around the deepest value (`1` is 0 deep, `[[1]]` 2 deep).
    pub depth: u64,
}

/// Work units charged for compiling one regular expression, against one per node visited.
const REGEX_COST: u64 = 1_000;

impl Query {
    /// The shape of `path`, a path `serde_json_path` accepted. `None` when the text does not
    /// read as one, which would be a gap in this reader rather than in the path.
    pub(super) fn read(path: &str) -> Option<Self> {
        let mut reader = Reader { chars: path.chars().collect(), pos: 0 };
        reader.skip_space();
        if !reader.eat('$') {
            return None;
        }
        let query = reader.query()?;
        reader.skip_space();
        (reader.pos == reader.chars.len()).then_some(query)
    }

    /// Descendant (`..`) segments in the whole path, those in filters included.
    pub(super) fn descendant_segments(&self) -> usize {
        self.segments
            .iter()
            .map(|s| {
                usize::from(s.descendant)
                    + s.filters.iter().flat_map(|f| &f.queries).map(Query::descendant_segments).sum::<usize>()
            })
            .sum()
    }

    /// An upper bound of the work of running this query over a document of this size: nodes
    /// visited and listed, filter evaluations and regex compilations.
    pub(super) fn work(&self, doc: DocumentSize) -> u64 {
        let n = doc.nodes.max(1);
        let (mut mult, mut chain, mut len, mut work) = (1_u64, 1_u64, 1_u64, 1_u64);
        for segment in &self.segments {
            let selectors = segment.singular + segment.multiple;
            // How often one node can be visited (its children examined), and how many
            // visits there are in all.
            let (visit_mult, visits) = if segment.descendant {
                let m = mult.saturating_mul(chain);
                (m, n.saturating_mul(m).min(len.saturating_mul(n)))
            } else {
                (mult, len)
            };
            // A child is examined by a multi-child selector as often as its parent is visited.
            let examined = n.saturating_mul(visit_mult);
            let filters: u64 = segment
                .filters
                .iter()
                .map(|f| {
                    let per_evaluation = f
                        .queries
                        .iter()
                        .fold(1_u64, |sum, q| sum.saturating_add(q.work(doc)))
                        .saturating_add(f.regexes.saturating_mul(REGEX_COST));
                    examined.saturating_mul(per_evaluation)
                })
                .fold(0, u64::saturating_add);
            mult = visit_mult.saturating_mul(selectors);
            if segment.descendant {
                chain = doc.depth.saturating_add(1);
            }
            len = n
                .saturating_mul(mult)
                .min(visits.saturating_mul(segment.singular).saturating_add(examined.saturating_mul(segment.multiple)));
            work = work
                .saturating_add(visits)
                .saturating_add(examined.saturating_mul(segment.multiple))
                .saturating_add(len)
                .saturating_add(filters);
        }
        work
    }
}

/// Reads the structure of a path over its characters; every step advances or gives up.
struct Reader {
    chars: Vec<char>,
    pos: usize,
}

impl Reader {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn eat(&mut self, c: char) -> bool {
        let found = self.peek() == Some(c);
        if found {
            self.pos += 1;
        }
        found
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\n' | '\r')) {
            self.pos += 1;
        }
    }

    /// The segments after `$` or `@`, up to the first character that starts none.
    fn query(&mut self) -> Option<Query> {
        let mut segments = Vec::new();
        loop {
            let before = self.pos;
            self.skip_space();
            let segment = if self.eat('.') {
                if self.eat('.') {
                    if self.peek() == Some('[') { self.bracketed(true)? } else { self.dotted(true)? }
                } else {
                    self.dotted(false)?
                }
            } else if self.peek() == Some('[') {
                self.bracketed(false)?
            } else {
                self.pos = before;
                return Some(Query { segments });
            };
            segments.push(segment);
        }
    }

    /// `*` or a member name after `.` or `..`.
    fn dotted(&mut self, descendant: bool) -> Option<Segment> {
        if self.eat('*') {
            return Some(Segment { descendant, multiple: 1, ..Segment::default() });
        }
        let start = self.pos;
        while self.peek().is_some_and(|c| c == '_' || c.is_ascii_alphanumeric() || !c.is_ascii()) {
            self.pos += 1;
        }
        (self.pos > start).then_some(Segment { descendant, singular: 1, ..Segment::default() })
    }

    /// `[selector, …]`.
    fn bracketed(&mut self, descendant: bool) -> Option<Segment> {
        let mut segment = Segment { descendant, ..Segment::default() };
        if !self.eat('[') {
            return None;
        }
        loop {
            self.skip_space();
            match self.peek()? {
                quote @ ('\'' | '"') => {
                    self.string(quote)?;
                    segment.singular += 1;
                }
                '*' => {
                    self.pos += 1;
                    segment.multiple += 1;
                }
                '?' => {
                    self.pos += 1;
                    segment.filters.push(self.filter()?);
                    segment.multiple += 1;
                }
                _ => {
                    let start = self.pos;
                    let mut slice = false;
                    while let Some(c @ ('0'..='9' | '-' | ':' | ' ' | '\t' | '\n' | '\r')) = self.peek() {
                        slice |= c == ':';
                        self.pos += 1;
                    }
                    if self.pos == start {
                        return None;
                    }
                    if slice {
                        segment.multiple += 1;
                    } else {
                        segment.singular += 1;
                    }
                }
            }
            self.skip_space();
            if self.eat(']') {
                return Some(segment);
            }
            if !self.eat(',') {
                return None;
            }
        }
    }

    /// A filter expression after `?`, up to the `,` or `]` that ends the selector.
    fn filter(&mut self) -> Option<Filter> {
        let mut filter = Filter::default();
        let mut parens = 0_usize;
        let mut word = String::new();
        loop {
            let c = self.peek()?;
            match c {
                '\'' | '"' => self.string(c)?,
                '@' | '$' => {
                    self.pos += 1;
                    filter.queries.push(self.query()?);
                }
                ',' | ']' if parens == 0 => return Some(filter),
                '(' => {
                    if word == "match" || word == "search" {
                        filter.regexes += 1;
                    }
                    parens += 1;
                    self.pos += 1;
                }
                ')' => {
                    parens = parens.checked_sub(1)?;
                    self.pos += 1;
                }
                _ => self.pos += 1,
            }
            if c.is_ascii_alphanumeric() || c == '_' {
                word.push(c);
            } else {
                word.clear();
            }
        }
    }

    /// A quoted string, escapes included.
    fn string(&mut self, quote: char) -> Option<()> {
        self.pos += 1;
        loop {
            let c = self.peek()?;
            self.pos += 1;
            if c == '\\' {
                self.pos += 1;
            } else if c == quote {
                return Some(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &str) -> Query {
        assert!(serde_json_path::JsonPath::parse(path).is_ok(), "{path} is not a valid path");
        Query::read(path).unwrap_or_else(|| panic!("{path} was not read"))
    }

    #[test]
    fn every_kind_of_valid_path_is_read() {
        for path in [
            "$",
            "$.a",
            "$.a.b[0]",
            "$ .a [0]",
            "$.*",
            "$..*",
            "$..name",
            "$..[0]",
            "$['a','b'][*]",
            "$[\"a\\\"]\"]",
            "$['it\\'s']",
            "$[1:3]",
            "$[::-1]",
            "$[ 1 : 5 : 2 , 0 ]",
            "$.items[?@.price < 10]",
            "$.items[?@.price < 10 && @.tags[0] == 'x']",
            "$[?(@.a == 1 || !(@.b))]",
            "$[?count(@..x) > 1]",
            "$[?length(@.name) > 3]",
            "$[?match(@.name, '[a-z]+')]",
            "$[?search(@.name, '(]')]",
            "$[?@.a == $.limit]",
            "$[?value(@..a) == 1, 'x']",
            "$.é.日本",
            "$._under_score1",
        ] {
            read(path);
        }
    }

    #[test]
    fn structure_is_read_into_segments_and_filters() {
        let q = read("$..a['b', 'c'][*, 0][?@.x == 'y]' && match(@.n, '$..z')]");
        assert_eq!(q.segments.len(), 4);
        assert!(q.segments[0].descendant && q.segments[0].singular == 1);
        assert_eq!((q.segments[1].singular, q.segments[1].multiple), (2, 0));
        assert_eq!((q.segments[2].singular, q.segments[2].multiple), (1, 1));
        let filter = &q.segments[3].filters[0];
        assert_eq!(filter.queries.len(), 2, "strings are not queries: {filter:?}");
        assert_eq!(filter.regexes, 1);
        assert_eq!(q.descendant_segments(), 1, "`..` inside a string does not count");
        assert_eq!(read("$[?@..a]..b").descendant_segments(), 2);
    }

    fn doc(nodes: u64, depth: u64) -> DocumentSize {
        DocumentSize { nodes, depth }
    }

    #[test]
    fn ordinary_queries_cost_a_few_passes_over_the_document() {
        let big = doc(100_000, 10);
        for path in ["$.items[*].price", "$..name", "$..*", "$..book[?@.price < 10]", "$.a.b.c[0]"] {
            let work = read(path).work(big);
            assert!(work <= 10 * big.nodes, "{path}: {work}");
        }
        assert!(read("$.a.b.c[0]").work(big) < 10);
    }

    #[test]
    fn nested_descents_unions_and_filters_are_priced_at_their_worst() {
        let deep = doc(31, 30);
        let one = read("$..*").work(deep);
        let three = read("$..*..*..*").work(deep);
        assert!(three > 900 * one, "{one} vs {three}");
        // A chain 30 deep, ten copies per level: 10^30 nodes in the end.
        let union = format!("${}", "[*,*,*,*,*,*,*,*,*,*]".repeat(30));
        assert_eq!(read(&union).work(deep), u64::MAX);
        // An absolute query in a filter runs once per candidate.
        let big = doc(100_000, 3);
        assert!(read("$[*][?count($..*) > 0]").work(big) >= 100_000 * 100_000);
        assert!(read("$[?match(@.a, 'x')]").work(doc(10, 1)) >= 10 * REGEX_COST);
    }
}

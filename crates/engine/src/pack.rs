//! What goes into one forward pass. Every caller that batches — the scheduler,
//! [`crate::Reranker::rerank`], `tessera bench`, and the engine when a backend
//! caps one pass's activations — asks [`next_pass`], so a token count means one
//! thing everywhere: **each group's query prefix once, plus every document's
//! tokens** (a document already ends with the prompt suffix). That is what the
//! pass computes when the prefix is not cached, so a budget is never exceeded
//! by a cold prefix.

use std::ops::Range;

/// The default token budget of one forward pass (`--max-batch-tokens`).
pub const DEFAULT_MAX_BATCH_TOKENS: usize = 16_384;

/// One request's work: documents (each already ending with the prompt suffix) that
/// all follow the same query prefix.
#[derive(Clone, Debug, Default)]
pub struct PackedRequest {
    pub prefix: Vec<u32>,
    pub documents: Vec<Vec<u32>>,
}

impl PackedRequest {
    /// Sum of full pair lengths: what the request occupies in the queue (and what
    /// is billed).
    pub fn tokens(&self) -> usize {
        self.documents
            .iter()
            .map(|d| self.prefix.len() + d.len())
            .sum()
    }

    /// The request cut into passes of at most `budget` tokens each (a document
    /// larger than the budget alone): consecutive document ranges, in order.
    pub fn passes(&self, budget: usize) -> Vec<Range<usize>> {
        let mut passes = Vec::new();
        let mut start = 0;
        while start < self.documents.len() {
            let lengths = self.documents[start..].iter().map(Vec::len);
            let taken = next_pass([(self.prefix.len(), lengths)], budget)[0];
            passes.push(start..start + taken);
            start += taken;
        }
        passes
    }
}

/// The next pass over queued groups: each item is a group's prefix length and
/// the lengths of its documents still to score, in queue order. Returns how many
/// leading documents of each leading group go into the pass — every count at
/// least 1 unless the group has no documents left, only the last group possibly
/// cut short — such that the pass costs at
/// most `budget` tokens (each group's prefix once, plus its documents). The first
/// document is always taken, however long, so the queue always advances; an
/// empty queue gives an empty pass.
pub fn next_pass<G, D>(groups: G, budget: usize) -> Vec<usize>
where
    G: IntoIterator<Item = (usize, D)>,
    D: IntoIterator<Item = usize>,
{
    let mut counts = Vec::new();
    let mut used = 0;
    for (prefix, documents) in groups {
        let mut taken = 0;
        let mut whole = true;
        for length in documents {
            let cost = length + if taken == 0 { prefix } else { 0 };
            if used > 0 && used + cost > budget {
                whole = false;
                break;
            }
            used += cost;
            taken += 1;
        }
        if taken > 0 || whole {
            counts.push(taken);
        }
        if !whole || used >= budget {
            break;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(groups: &[(usize, &[usize])], budget: usize) -> Vec<usize> {
        next_pass(groups.iter().map(|(p, d)| (*p, d.iter().copied())), budget)
    }

    #[test]
    fn a_prefix_is_counted_once_per_group() {
        // 4 + 3 + 3 = 10 fits exactly; the fourth document would make 13.
        assert_eq!(pass(&[(4, &[3, 3, 3])], 10), [2]);
        assert_eq!(pass(&[(4, &[3, 3])], 10), [2]);
        // Two groups: 4 + 3 | 2 + 1 = 10.
        assert_eq!(pass(&[(4, &[3]), (2, &[1, 1])], 10), [1, 1]);
        assert_eq!(pass(&[(4, &[3]), (2, &[1, 1])], 11), [1, 2]);
    }

    #[test]
    fn the_first_document_always_goes_even_when_over_budget() {
        assert_eq!(pass(&[(100, &[50, 1])], 10), [1]);
        assert_eq!(pass(&[], 10), Vec::<usize>::new());
        // A group that does not fit stops the pass; later groups wait.
        assert_eq!(pass(&[(4, &[3]), (8, &[8]), (0, &[1])], 12), [1]);
        // A group with nothing left takes its place with a count of 0.
        assert_eq!(pass(&[(4, &[3]), (4, &[]), (1, &[1])], 12), [1, 0, 1]);
    }

    #[test]
    fn passes_cover_every_document_once_in_order() {
        let request = PackedRequest {
            prefix: vec![0; 5],
            documents: [7, 1, 30, 2, 2, 2].iter().map(|&n| vec![0; n]).collect(),
        };
        let passes = request.passes(16);
        assert_eq!(passes, [0..2, 2..3, 3..6]);
        for pass in &passes {
            let cost = 5 + request.documents[pass.clone()]
                .iter()
                .map(Vec::len)
                .sum::<usize>();
            assert!(cost <= 16 || pass.len() == 1, "{pass:?} costs {cost}");
        }
        assert_eq!(request.tokens(), 6 * 5 + 44);
    }
}

//! How packed sequences lie in a batch: no padding, each sequence a contiguous
//! run of token rows.

/// One sequence of a packed batch: its rows `[start, start + len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sequence {
    pub start: usize,
    pub len: usize,
}

/// The sequences of one packed batch, in row order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttentionLayout {
    pub sequences: Vec<Sequence>,
}

impl AttentionLayout {
    /// Packs sequences of the given lengths back to back.
    pub fn packed(lengths: &[usize]) -> AttentionLayout {
        let mut start = 0;
        let sequences = lengths
            .iter()
            .map(|&len| {
                let seq = Sequence { start, len };
                start += len;
                seq
            })
            .collect();
        AttentionLayout { sequences }
    }

    /// Total rows covered.
    pub fn total_tokens(&self) -> usize {
        self.sequences
            .iter()
            .map(|s| s.start + s.len)
            .max()
            .unwrap_or(0)
    }

    /// The row of each sequence's last token (empty sequences are skipped).
    pub fn last_rows(&self) -> Vec<usize> {
        self.sequences
            .iter()
            .filter(|s| s.len > 0)
            .map(|s| s.start + s.len - 1)
            .collect()
    }
}

//! How packed sequences lie in a batch: no padding, each sequence a contiguous
//! run of token rows.

/// One sequence of a packed batch: its rows `[start, start + len)`, optionally
/// preceded by a shared prefix whose K/V were computed earlier (an index into the
/// prefix list given to the attention op). With a prefix of length P, the
/// sequence's tokens sit at positions P.. and attend to all P prefix tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sequence {
    pub start: usize,
    pub len: usize,
    pub prefix: Option<usize>,
}

/// A shared prefix's K and V for one layer: `[len, n_kv_heads·d]` each.
pub struct KvRef<'a, Buffer> {
    pub k: &'a Buffer,
    pub v: &'a Buffer,
    pub len: usize,
}

impl<Buffer> Clone for KvRef<'_, Buffer> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Buffer> Copy for KvRef<'_, Buffer> {}

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
                let seq = Sequence {
                    start,
                    len,
                    prefix: None,
                };
                start += len;
                seq
            })
            .collect();
        AttentionLayout { sequences }
    }

    /// Packs sequences back to back, each with its prefix index.
    pub fn packed_with_prefixes(lengths: &[usize], prefixes: &[Option<usize>]) -> AttentionLayout {
        let mut layout = AttentionLayout::packed(lengths);
        for (seq, &prefix) in layout.sequences.iter_mut().zip(prefixes) {
            seq.prefix = prefix;
        }
        layout
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

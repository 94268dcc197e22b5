//! Parsers for numeric flags: a count outside its sensible range is refused at
//! argument parsing (status 2, the flag named by clap), never later, after the
//! server has started listening or a run has begun.

/// A whole number from `MIN` to `MAX`.
pub fn count<const MIN: usize, const MAX: usize>(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let n: usize = t.parse().map_err(|_| {
        if t.starts_with('-') {
            format!("{t} is negative: give a whole number from {MIN} to {MAX}")
        } else {
            format!("{t:?} is not a whole number from {MIN} to {MAX}")
        }
    })?;
    if n < MIN || n > MAX {
        return Err(format!(
            "{n} is out of range: give a whole number from {MIN} to {MAX}"
        ));
    }
    Ok(n)
}

/// Tokens of one forward pass: the 4B model's activations for 16M tokens are
/// far beyond any device.
pub const MAX_PASS_TOKENS: usize = 1 << 24;
/// CPU worker threads.
pub const MAX_THREADS: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_refused_outside_their_range_with_the_range() {
        assert_eq!(count::<1, 8>("3"), Ok(3));
        assert_eq!(count::<0, 8>(" 0 "), Ok(0));
        for bad in ["0", "9", "-1", "x", "", "99999999999999999999999"] {
            let e = count::<1, 8>(bad).unwrap_err();
            assert!(e.contains("from 1 to 8"), "{bad:?}: {e}");
        }
        assert!(count::<1, 8>("-1").unwrap_err().contains("negative"));
    }
}

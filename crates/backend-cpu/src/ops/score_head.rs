//! The reranker's score head: two rows (yes, no) of a head matrix against the
//! final-normed last token of each sequence.

use tessera_backend::BackendError;

use super::dot;
use crate::CpuWeight;

pub fn score_head(
    x: &[f32],
    rows: usize,
    weight: &CpuWeight,
    head_rows: [usize; 2],
    out: &mut [f32],
) -> Result<(), BackendError> {
    let k = weight.cols();
    BackendError::check_len("score_head", "x", rows * k, x.len())?;
    BackendError::check_len("score_head", "out", rows * 2, out.len())?;
    if let Some(&bad) = head_rows.iter().find(|&&r| r >= weight.rows()) {
        return Err(BackendError::Invalid {
            op: "score_head",
            detail: format!(
                "head row {bad} is outside '{}' ({} rows)",
                weight.name(),
                weight.rows()
            ),
        });
    }
    let mut yes = vec![0.0; k];
    let mut no = vec![0.0; k];
    weight.dequantize_row(head_rows[0], &mut yes);
    weight.dequantize_row(head_rows[1], &mut no);
    for (o, row) in out
        .chunks_exact_mut(2)
        .zip(x.chunks_exact(k.max(1)))
        .take(rows)
    {
        o[0] = dot(row, &yes);
        o[1] = dot(row, &no);
    }
    Ok(())
}

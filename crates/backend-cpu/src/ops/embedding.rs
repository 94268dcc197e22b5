//! Embedding gather: token rows of the (possibly quantised) table as f32.

use rayon::prelude::*;
use tessera_backend::BackendError;

use crate::CpuWeight;

pub fn embedding(table: &CpuWeight, ids: &[u32], out: &mut [f32]) -> Result<(), BackendError> {
    let dim = table.cols();
    BackendError::check_len("embedding", "out", ids.len() * dim, out.len())?;
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= table.rows()) {
        return Err(BackendError::Invalid {
            op: "embedding",
            detail: format!(
                "token id {bad} is outside the table's {} rows",
                table.rows()
            ),
        });
    }
    out[..ids.len() * dim]
        .par_chunks_mut(dim.max(1))
        .zip(ids.par_iter())
        .for_each(|(row, &id)| table.dequantize_row(id as usize, row));
    Ok(())
}

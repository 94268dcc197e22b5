//! Row copies: gathering the last token of each sequence, moving token chunks.

use tessera_backend::BackendError;

pub fn gather_rows(
    x: &[f32],
    rows: &[usize],
    dim: usize,
    out: &mut [f32],
) -> Result<(), BackendError> {
    BackendError::check_len("gather_rows", "out", rows.len() * dim, out.len())?;
    for (dst, &row) in out.chunks_exact_mut(dim.max(1)).zip(rows) {
        BackendError::check_len("gather_rows", "x", (row + 1) * dim, x.len())?;
        dst.copy_from_slice(&x[row * dim..(row + 1) * dim]);
    }
    Ok(())
}

pub fn copy_rows(
    src: &[f32],
    src_row: usize,
    dst: &mut [f32],
    dst_row: usize,
    rows: usize,
    width: usize,
) -> Result<(), BackendError> {
    let n = rows * width;
    BackendError::check_len("copy_rows", "src", (src_row + rows) * width, src.len())?;
    BackendError::check_len("copy_rows", "dst", (dst_row + rows) * width, dst.len())?;
    dst[dst_row * width..dst_row * width + n]
        .copy_from_slice(&src[src_row * width..src_row * width + n]);
    Ok(())
}

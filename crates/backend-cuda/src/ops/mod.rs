//! One module per op family, the stems of `kernels/*.cu`: the entry point checks
//! shapes and sizes, pure plan functions pick the launch configuration.

pub mod add;
pub mod attention;
pub mod copy;
pub mod embedding;
pub mod fused;
pub mod matmul;
pub mod rms_norm;
pub mod rope;
pub mod score_head;
pub mod swiglu;
pub mod w8a16;

use tessera_backend::BackendError;

/// Threads per block of the elementwise (grid-stride) kernels.
pub const ELEMENTWISE_THREADS: u32 = 256;
/// Most blocks an elementwise launch uses: the grid-stride loop covers the rest.
pub const ELEMENTWISE_MAX_BLOCKS: usize = 4096;

/// The grid of an elementwise kernel over `len` elements.
pub fn elementwise_grid(len: usize) -> [u32; 3] {
    let blocks = len
        .div_ceil(ELEMENTWISE_THREADS as usize)
        .clamp(1, ELEMENTWISE_MAX_BLOCKS);
    [blocks as u32, 1, 1]
}

/// Threads of a one-block-per-row kernel over rows of `width`: whole warps, from
/// one warp up to 256 threads.
pub fn row_threads(width: usize) -> u32 {
    (width.div_ceil(32) * 32).clamp(32, 256) as u32
}

/// A size as the u32 a kernel parameter holds, or an error naming it.
pub(crate) fn to_u32(value: usize, op: &'static str, what: &str) -> Result<u32, BackendError> {
    u32::try_from(value).map_err(|_| BackendError::Invalid {
        op,
        detail: format!("{what} = {value} exceeds the kernels' 32-bit sizes"),
    })
}

/// A grid dimension that must stay below the hardware's y/z limit.
pub(crate) fn grid_yz(value: usize, op: &'static str, what: &str) -> Result<u32, BackendError> {
    if value > 65_535 {
        return Err(BackendError::Invalid {
            op,
            detail: format!(
                "{what} needs {value} blocks, more than a grid dimension holds (65,535)"
            ),
        });
    }
    Ok(value as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elementwise_grids_cover_small_and_cap_large() {
        assert_eq!(elementwise_grid(0), [1, 1, 1]);
        assert_eq!(elementwise_grid(1), [1, 1, 1]);
        assert_eq!(elementwise_grid(257), [2, 1, 1]);
        assert_eq!(elementwise_grid(1 << 30), [4096, 1, 1]);
    }

    #[test]
    fn row_threads_are_whole_warps_up_to_256() {
        assert_eq!(row_threads(1), 32);
        assert_eq!(row_threads(33), 64);
        assert_eq!(row_threads(128), 128);
        assert_eq!(row_threads(2560), 256);
    }

    #[test]
    fn oversized_values_are_errors() {
        assert!(to_u32(1 << 33, "op", "n").is_err());
        assert_eq!(to_u32(7, "op", "n").unwrap(), 7);
        assert!(grid_yz(65_536, "op", "rows").is_err());
    }
}

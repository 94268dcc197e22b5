// Row gather: out[r, :] = x[rows[r], :] (the last token of each sequence).
// Contiguous row copies need no shader: they are buffer-to-buffer copies.

struct Params {
    n_rows: u32,
    dim: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> rows: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let i = (wg.y * nwg.x + wg.x) * 256u + tid;
    if (i < p.n_rows * p.dim) {
        let r = i / p.dim;
        let c = i % p.dim;
        out[i] = x[rows[r] * p.dim + c];
    }
}

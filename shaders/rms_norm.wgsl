// RMSNorm over rows: one 64-invocation workgroup per row (rows of the hidden
// state, or of one head for QK-norm). `inplace` normalises x itself.

struct Params {
    rows: u32,
    dim: u32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
//#if inplace
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
//#else
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
//#endif

//#include reduce

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
//#if subgroups
    @builtin(subgroup_id) sg_id: u32,
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(num_subgroups) n_sg: u32,
//#endif
) {
    red_tid = tid;
//#if subgroups
    red_sg_id = sg_id;
    red_sg_lane = sg_lane;
    red_n_sg = n_sg;
//#endif
    let row = wg.y * nwg.x + wg.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.dim;
    var sum_sq = 0.0;
    for (var i = tid; i < p.dim; i += RED_WG) {
        let v = x[base + i];
        sum_sq = fma(v, v, sum_sq);
    }
    let total = wg_sum(sum_sq);
    let scale = 1.0 / sqrt(total / f32(p.dim) + p.eps);
    for (var i = tid; i < p.dim; i += RED_WG) {
        let v = x[base + i] * scale * w[i];
//#if inplace
        x[base + i] = v;
//#else
        out[base + i] = v;
//#endif
    }
}

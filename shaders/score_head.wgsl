// Score head: out[r, j] = x[r, :] · w[head_row, :] for one of the two head rows
// (yes j = 0, no j = 1) per dispatch; one 64-invocation workgroup per token row.

struct Params {
    rows: u32,
    k: u32,
    // The head row inside this weight part.
    w_row: u32,
    j: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
//#if q8_0
@group(0) @binding(3) var<storage, read> wq: array<u32>;
@group(0) @binding(4) var<storage, read> ws: array<u32>;
//#else
@group(0) @binding(3) var<storage, read> wf: array<f32>;
//#endif

//#include reduce

fn weight(c: u32) -> f32 {
//#if q8_0
    let block = p.w_row * (p.k / 32u) + c / 32u;
    let word = wq[block * 8u + (c % 32u) / 4u];
    let q = f32(i32(word << (24u - 8u * (c % 4u))) >> 24u);
    return q * unpack2x16float(ws[block >> 1u])[block & 1u];
//#else
    return wf[p.w_row * p.k + c];
//#endif
}

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
    var acc = 0.0;
    for (var c = tid; c < p.k; c += RED_WG) {
        acc = fma(x[row * p.k + c], weight(c), acc);
    }
    let total = wg_sum(acc);
    if (tid == 0u) {
        out[row * 2u + p.j] = total;
    }
}

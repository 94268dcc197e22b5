// Embedding gather: out[t, :] = table[ids[t], :] as f32. A table split over
// several bindings is gathered by one dispatch per part, each writing the
// tokens whose ids fall in its rows. `q8_0`: the table is Q8_0 repacked as
// 8 quant words and one f16 scale (two per word) per block of 32.

struct Params {
    n_ids: u32,
    dim: u32,
    row0: u32,
    part_rows: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
//#if q8_0
@group(0) @binding(3) var<storage, read> wq: array<u32>;
@group(0) @binding(4) var<storage, read> ws: array<u32>;
//#else
@group(0) @binding(3) var<storage, read> wf: array<f32>;
//#endif

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let i = (wg.y * nwg.x + wg.x) * 256u + tid;
    if (i >= p.n_ids * p.dim) {
        return;
    }
    let t = i / p.dim;
    let c = i % p.dim;
    let id = ids[t];
    if (id < p.row0 || id >= p.row0 + p.part_rows) {
        return;
    }
    let row = id - p.row0;
//#if q8_0
    let block = row * (p.dim / 32u) + c / 32u;
    let word = wq[block * 8u + (c % 32u) / 4u];
    let q = f32(i32(word << (24u - 8u * (c % 4u))) >> 24u);
    let d = unpack2x16float(ws[block >> 1u])[block & 1u];
    out[i] = q * d;
//#else
    out[i] = wf[row * p.dim + c];
//#endif
}

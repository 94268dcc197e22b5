// NeoX rotary embedding in place on [tokens, heads, head_dim]: dimension i
// pairs with i + head_dim/2. The cos/sin of each (token, i) come from a table
// the host computes in f32 exactly as the reference does (GPU sin/cos lose
// accuracy at the large angles of late positions).

struct Params {
    tokens: u32,
    heads: u32,
    half_dim: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
// [tokens, half_dim] pairs (cos, sin).
@group(0) @binding(2) var<storage, read> table: array<vec2<f32>>;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let idx = (wg.y * nwg.x + wg.x) * 256u + tid;
    if (idx >= p.tokens * p.heads * p.half_dim) {
        return;
    }
    let i = idx % p.half_dim;
    let head = idx / p.half_dim;
    let token = head / p.heads;
    let cs = table[token * p.half_dim + i];
    let lo = head * 2u * p.half_dim + i;
    let hi = lo + p.half_dim;
    let a = x[lo];
    let b = x[hi];
    x[lo] = a * cs.x - b * cs.y;
    x[hi] = b * cs.x + a * cs.y;
}

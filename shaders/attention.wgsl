// Causal GQA attention over packed sequences with an optional shared prefix,
// flash style: one 64-invocation workgroup per (query row, head) walks the
// row's keys (prefix first, then its own sequence up to itself) in chunks of
// 64 with an online softmax, so no score matrix is ever stored. Each
// invocation scores one key of the chunk, then accumulates head_dim / 64
// output dimensions. One dispatch per prefix: its K/V are bindings 4 and 5
// (the sequence's own K/V again when there is no prefix, with prefix_len 0).

struct Params {
    n_heads: u32,
    // Query heads per KV head.
    group: u32,
    head_dim: u32,
    q_width: u32,
    kv_width: u32,
    prefix_len: u32,
    scale: f32,
    // First entry of `rows` this dispatch handles (grids are at most 65,535 high).
    row_offset: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> pk: array<f32>;
@group(0) @binding(5) var<storage, read> pv: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;
// Per query row of this dispatch: (row, first row of its sequence).
@group(0) @binding(7) var<storage, read> rows: array<vec2<u32>>;

const MAX_HEAD_DIM: u32 = 256u;
const DIMS_PER_INVOCATION: u32 = 4u;
// exp(NEG_BIG - m) is 0 for any finite score m: a stand-in for -inf.
const NEG_BIG: f32 = -3.0e38;

var<workgroup> q_sh: array<f32, 256>;
var<workgroup> p_sh: array<f32, 64>;
var<workgroup> row_info: vec2<u32>;

//#include reduce

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
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
    let h = wg.x;
    if (tid == 0u) {
        row_info = rows[p.row_offset + wg.y];
    }
    // Loaded through workgroup memory so the key loop bound is uniform.
    let info = workgroupUniformLoad(&row_info);
    let row = info.x;
    let seq_start = info.y;
    let d = p.head_dim;
    let kv_off = (h / p.group) * d;
    for (var i = tid; i < d; i += RED_WG) {
        q_sh[i] = q[row * p.q_width + h * d + i] * p.scale;
    }
    workgroupBarrier();

    let n_keys = p.prefix_len + row - seq_start + 1u;
    var m = NEG_BIG;
    var l = 0.0;
    var acc: array<f32, 4>;
    for (var base = 0u; base < n_keys; base += RED_WG) {
        let j = base + tid;
        var s = NEG_BIG;
        if (j < n_keys) {
            var dot = 0.0;
            if (j < p.prefix_len) {
                let at = j * p.kv_width + kv_off;
                for (var i = 0u; i < d; i++) {
                    dot = fma(q_sh[i], pk[at + i], dot);
                }
            } else {
                let at = (seq_start + j - p.prefix_len) * p.kv_width + kv_off;
                for (var i = 0u; i < d; i++) {
                    dot = fma(q_sh[i], k[at + i], dot);
                }
            }
            s = dot;
        }
        let m_new = max(m, wg_max(s));
        var e = 0.0;
        if (j < n_keys) {
            e = exp(s - m_new);
        }
        p_sh[tid] = e;
        let chunk_sum = wg_sum(e);
        let correction = exp(m - m_new);
        l = l * correction + chunk_sum;
        m = m_new;
        let count = min(RED_WG, n_keys - base);
        for (var c = 0u; c < DIMS_PER_INVOCATION; c++) {
            let dim = tid + c * RED_WG;
            if (dim < d) {
                var a = acc[c] * correction;
                for (var t = 0u; t < count; t++) {
                    let key = base + t;
                    var val: f32;
                    if (key < p.prefix_len) {
                        val = pv[key * p.kv_width + kv_off + dim];
                    } else {
                        val = v[(seq_start + key - p.prefix_len) * p.kv_width + kv_off + dim];
                    }
                    a = fma(p_sh[t], val, a);
                }
                acc[c] = a;
            }
        }
        // p_sh is rewritten by the next chunk.
        workgroupBarrier();
    }
    let inv = 1.0 / l;
    for (var c = 0u; c < DIMS_PER_INVOCATION; c++) {
        let dim = tid + c * RED_WG;
        if (dim < d) {
            out[row * p.q_width + h * d + dim] = acc[c] * inv;
        }
    }
}

// out[rows, n] = x[rows, k] · wᵀ, w = [n, k]: 32×32 output tiles, one per
// 64-invocation workgroup, each invocation a 4×4 micro-tile; k walks in steps
// of 32 (one Q8_0 block) through workgroup memory, the weight tile dequantised
// once on its way in and shared by all 32 token rows.
//
// `q8_0`: w is Q8_0 repacked at upload: 8 little-endian quant words per block
// and the f16 block scales two per word. Otherwise w is f32 (F32/F16/BF16
// tensors are widened at upload). A weight larger than one binding is split by
// rows; each part is one dispatch writing its columns at `out_offset`.

struct Params {
    rows: u32,
    k: u32,
    // Rows of w in this part: output columns [out_offset, out_offset + n).
    n: u32,
    out_stride: u32,
    out_offset: u32,
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

const TILE: u32 = 32u;
// Row pitch of the tiles in workgroup memory (padded against bank conflicts).
const PITCH: u32 = 33u;
var<workgroup> x_tile: array<f32, 1056>;
var<workgroup> w_tile: array<f32, 1056>;

@compute @workgroup_size(8, 8)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let row0 = wg.y * TILE;
    let col0 = wg.x * TILE;
    var acc: array<f32, 16>;
    for (var k0 = 0u; k0 < p.k; k0 += TILE) {
        for (var i = 0u; i < 16u; i++) {
            let e = tid + i * 64u;
            let r = e / TILE;
            let c = e % TILE;
            var v = 0.0;
            if (row0 + r < p.rows && k0 + c < p.k) {
                v = x[(row0 + r) * p.k + k0 + c];
            }
            x_tile[r * PITCH + c] = v;
        }
//#if q8_0
        // 32 weight rows × 8 quant words of this block: 4 words per invocation.
        for (var i = 0u; i < 4u; i++) {
            let e = tid + i * 64u;
            let r = e / 8u;
            let wi = e % 8u;
            let at = r * PITCH + wi * 4u;
            if (col0 + r < p.n) {
                let block = (col0 + r) * (p.k / TILE) + k0 / TILE;
                let word = wq[block * 8u + wi];
                let d = unpack2x16float(ws[block >> 1u])[block & 1u];
                w_tile[at] = f32(i32(word << 24u) >> 24u) * d;
                w_tile[at + 1u] = f32(i32(word << 16u) >> 24u) * d;
                w_tile[at + 2u] = f32(i32(word << 8u) >> 24u) * d;
                w_tile[at + 3u] = f32(i32(word) >> 24u) * d;
            } else {
                w_tile[at] = 0.0;
                w_tile[at + 1u] = 0.0;
                w_tile[at + 2u] = 0.0;
                w_tile[at + 3u] = 0.0;
            }
        }
//#else
        for (var i = 0u; i < 16u; i++) {
            let e = tid + i * 64u;
            let r = e / TILE;
            let c = e % TILE;
            var v = 0.0;
            if (col0 + r < p.n && k0 + c < p.k) {
                v = wf[(col0 + r) * p.k + k0 + c];
            }
            w_tile[r * PITCH + c] = v;
        }
//#endif
        workgroupBarrier();
        for (var kk = 0u; kk < TILE; kk++) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                a[i] = x_tile[(lid.y + 8u * i) * PITCH + kk];
                b[i] = w_tile[(lid.x + 8u * i) * PITCH + kk];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] = fma(a[i], b[j], acc[i * 4u + j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let r = row0 + lid.y + 8u * i;
        for (var j = 0u; j < 4u; j++) {
            let c = col0 + lid.x + 8u * j;
            if (r < p.rows && c < p.n) {
                out[r * p.out_stride + p.out_offset + c] = acc[i * 4u + j];
            }
        }
    }
}

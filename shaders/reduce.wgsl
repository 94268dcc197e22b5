// Reductions over a 64-invocation workgroup, shared by rms_norm, score_head and
// attention (pasted in by their include directive). Every invocation gets the
// result. With subgroups each subgroup reduces in registers and one value per
// subgroup goes through workgroup memory; without, a tree in workgroup memory.
// The entry point calls `red_setup` first with its builtins.

const RED_WG: u32 = 64u;
var<workgroup> red_buf: array<f32, 64>;
var<private> red_tid: u32;
//#if subgroups
var<private> red_sg_id: u32;
var<private> red_sg_lane: u32;
var<private> red_n_sg: u32;
//#endif

fn red_combine(a: f32, b: f32, take_max: bool) -> f32 {
    return select(a + b, max(a, b), take_max);
}

fn red_reduce(v: f32, take_max: bool) -> f32 {
//#if subgroups
    var part = subgroupAdd(v);
    if (take_max) {
        part = subgroupMax(v);
    }
    if (red_sg_lane == 0u) {
        red_buf[red_sg_id] = part;
    }
    workgroupBarrier();
    var total = red_buf[0];
    for (var i = 1u; i < red_n_sg; i++) {
        total = red_combine(total, red_buf[i], take_max);
    }
    workgroupBarrier();
    return total;
//#else
    red_buf[red_tid] = v;
    workgroupBarrier();
    for (var stride = RED_WG / 2u; stride > 0u; stride >>= 1u) {
        if (red_tid < stride) {
            red_buf[red_tid] = red_combine(red_buf[red_tid], red_buf[red_tid + stride], take_max);
        }
        workgroupBarrier();
    }
    let total = red_buf[0];
    workgroupBarrier();
    return total;
//#endif
}

fn wg_sum(v: f32) -> f32 {
    return red_reduce(v, false);
}

fn wg_max(v: f32) -> f32 {
    return red_reduce(v, true);
}

// rope.cu — rotary position embedding, NeoX layout (dimension i pairs with
// i + head_dim/2), in place on [tokens, heads, head_dim]. As Hugging Face's Qwen3:
// inv_freq in f32 (computed once on the host, passed in), angle = f32(pos) · inv_freq.
#include "common.cuh"

static __device__ __forceinline__ void rotate_pair(float* head, u32 i, u32 half, float angle) {
    float s, c;
    sincosf(angle, &s, &c);
    const float a = head[i], b = head[i + half];
    head[i] = a * c - b * s;
    head[i + half] = b * c + a * s;
}

// One block per token; threads over (head, i < half).
TESSERA_KERNEL void rope_neox_f32(float* x, const u32* positions, const float* inv_freq, u32 heads, u32 head_dim) {
    const u32 half = head_dim / 2;
    const float pos = float(positions[blockIdx.x]);
    float* token = x + u64(blockIdx.x) * heads * head_dim;
    for (u32 idx = threadIdx.x; idx < heads * half; idx += blockDim.x) {
        const u32 h = idx / half, i = idx % half;
        rotate_pair(token + h * head_dim, i, half, pos * inv_freq[i]);
    }
}

// QK-norm fused with RoPE: per head, RMSNorm with `weight` then the rotation. One
// warp per (token, head): grid (tokens, ceil(heads / warps per block)).
TESSERA_KERNEL void rms_norm_rope_f32(float* x, const float* weight, const u32* positions, const float* inv_freq,
                                      u32 heads, u32 head_dim, float eps) {
    const u32 lane = threadIdx.x % WARP_SIZE;
    const u32 h = blockIdx.y * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE;
    if (h >= heads) {
        return;  // whole warps only: no lane of this warp reaches a collective
    }
    float* head = x + (u64(blockIdx.x) * heads + h) * head_dim;
    float sum = 0.0f;
    for (u32 c = lane; c < head_dim; c += WARP_SIZE) {
        sum += head[c] * head[c];
    }
    const float scale = rsqrtf(warp_sum(sum) / float(head_dim) + eps);
    for (u32 c = lane; c < head_dim; c += WARP_SIZE) {
        head[c] = head[c] * scale * weight[c];
    }
    __syncwarp();
    const u32 half = head_dim / 2;
    const float pos = float(positions[blockIdx.x]);
    for (u32 i = lane; i < half; i += WARP_SIZE) {
        rotate_pair(head, i, half, pos * inv_freq[i]);
    }
}

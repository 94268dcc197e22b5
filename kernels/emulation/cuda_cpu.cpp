// cuda_cpu.cpp — the emulator's runtime: fibers, the block scheduler, barriers,
// warp collectives, cp.async groups, the lane-exact mma.sync emulation and the C
// entry point `tessera_emu_launch` (the emulated cuLaunchKernel).
#include "cuda_cpu.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <deque>
#include <limits>
#include <string>
#include <unordered_map>
#include <vector>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace cuda_emu {

thread_local ThreadPosition* current_position = nullptr;

namespace {

constexpr size_t kStackBytes = 256 * 1024;
constexpr unsigned kMaxThreads = 1024;
constexpr unsigned kSlotWords = 16;
constexpr uint8_t kPoison = 0xff;  // NaN as f32, -1 as int8: an unwritten read fails parity

enum class State { Runnable, AtBlockBarrier, AtWarpBarrier, AtMbarrier, Done };

struct PendingCopy {
    void* dst;
    std::vector<uint8_t> data;
};

// A wgmma's result: the accumulator registers it writes, and their values;
// and the shared-memory operand it read, (offset, f16 bits) per element this
// lane used, which must be unchanged when the wgmma is waited for.
struct PendingWgmma {
    float* d;
    std::vector<float> values;
    std::vector<std::pair<uint32_t, uint16_t>> read;
};

struct Fiber {
#if defined(__x86_64__)
    void* sp = nullptr;
#else
    ucontext_t context;
#endif
    uint8_t* stack = nullptr;
    ThreadPosition position{};
    State state = State::Done;
    unsigned collectives = 0;  // warp collectives entered so far
    std::vector<PendingCopy> open_group;
    std::deque<std::vector<PendingCopy>> committed;
    // wgmma results in flight: issued since the last commit, then committed
    // groups; each the accumulator array and the values it will hold.
    std::vector<PendingWgmma> wgmma_open;
    std::deque<std::vector<PendingWgmma>> wgmma_committed;
    // AtMbarrier: the barrier (shared offset) and the phase parity awaited.
    uint32_t mbarrier = 0;
    unsigned mbarrier_parity = 0;
};

// An mbarrier's state; `copies` are the tensor copies issued against it that
// have not landed yet, `in_flight` their bytes.
struct Mbarrier {
    unsigned expected = 0, pending = 0, phase = 0;
    int64_t tx = 0, in_flight = 0;
    std::vector<PendingCopy> copies;
};

struct Warp {
    unsigned lanes = 0;    // threads of the block in this warp
    unsigned exited = 0;   // of those, finished
    unsigned arrived = 0;  // waiting at the current collective
    const char* what = nullptr;
    uint32_t slots[2][32 * kSlotWords];
};

using Entry = void (*)(void**);

// Per OS thread: the stacks (kept between launches) and the running block.
struct Scheduler {
    uint8_t* stacks = nullptr;
    unsigned stack_count = 0;
    std::vector<Fiber> fibers;
    std::vector<Warp> warps;
    std::vector<uint8_t> shared;
    unsigned shared_bytes = 0;  // as launched (`shared` is rounded up to 16)
    std::unordered_map<uint32_t, Mbarrier> mbarriers;  // by shared offset, this block's
    unsigned threads = 0;
    unsigned block_arrived = 0;
    unsigned done = 0;
    bool barrier_released = false;  // a __syncthreads let everyone go: restart the pass
    Fiber* running = nullptr;
    Entry entry = nullptr;
    void** args = nullptr;
    std::string error;
#if defined(__x86_64__)
    void* scheduler_sp = nullptr;
#else
    ucontext_t scheduler_context;
#endif
};

thread_local Scheduler* scheduler = nullptr;

Scheduler& the_scheduler() {
    if (scheduler == nullptr) {
        scheduler = new Scheduler();  // lives as long as the OS thread's launches
    }
    return *scheduler;
}

}  // namespace
}  // namespace cuda_emu

#if defined(__x86_64__)
// Saves the callee-saved registers, the SSE control word and the x87 control word on
// the current stack, stores the stack pointer in *save, and resumes the context
// whose stack pointer is `load` (System V AMD64 ABI).
extern "C" void tessera_emu_switch(void** save, void* load);
asm(R"(
    .text
    .globl tessera_emu_switch
    .type tessera_emu_switch, @function
tessera_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size tessera_emu_switch, .-tessera_emu_switch
    .section .note.GNU-stack,"",@progbits
    .text
)");
#endif

namespace cuda_emu {
namespace {

void switch_to_scheduler(Fiber& fiber) {
    Scheduler& s = *scheduler;
#if defined(__x86_64__)
    tessera_emu_switch(&fiber.sp, s.scheduler_sp);
#else
    swapcontext(&fiber.context, &s.scheduler_context);
#endif
}

void resume(Fiber& fiber) {
    Scheduler& s = *scheduler;
    s.running = &fiber;
    current_position = &fiber.position;
#if defined(__x86_64__)
    tessera_emu_switch(&s.scheduler_sp, fiber.sp);
#else
    swapcontext(&s.scheduler_context, &fiber.context);
#endif
    s.running = nullptr;
}

void release_block_barrier(Scheduler& s) {
    for (Fiber& f : s.fibers) {
        if (f.state == State::AtBlockBarrier) {
            f.state = State::Runnable;
        }
    }
    s.block_arrived = 0;
}

[[noreturn]] void fail(std::string message) {
    Scheduler& s = *scheduler;
    if (s.error.empty()) {
        s.error = std::move(message);
    }
    Fiber& fiber = *s.running;
    fiber.state = State::Done;
    switch_to_scheduler(fiber);
    __builtin_unreachable();  // the scheduler never resumes a failed fiber
}

void fiber_main() {
    Scheduler& s = *scheduler;
    Fiber& fiber = *s.running;
    s.entry(s.args);
    // Thread exit: a finished thread no longer holds back block barriers.
    fiber.state = State::Done;
    ++s.done;
    Warp& warp = s.warps[fiber.position.linear_tid / 32];
    ++warp.exited;
    if (warp.arrived > 0) {
        fail("a thread exited while lanes of its warp wait in " + std::string(warp.what));
    }
    if (s.block_arrived > 0 && s.block_arrived + s.done == s.threads) {
        release_block_barrier(s);
        s.barrier_released = true;
    }
    switch_to_scheduler(fiber);
    __builtin_unreachable();
}

#if defined(__x86_64__)
// A fresh stack whose first switch "returns" into fiber_main with the stack aligned
// as at a function entry.
void* prepare_stack(uint8_t* base) {
    auto top = reinterpret_cast<uintptr_t>(base + kStackBytes) & ~uintptr_t(15);
    auto* words = reinterpret_cast<uint64_t*>(top);
    words[-1] = 0;                                             // fiber_main's return address
    words[-2] = reinterpret_cast<uint64_t>(&fiber_main);       // popped by `ret`
    for (int i = 3; i <= 8; ++i) words[-i] = 0;                // rbp rbx r12 r13 r14 r15
    uint32_t control[2];
    asm volatile("stmxcsr %0" : "=m"(control[0]));
    asm volatile("fnstcw %0" : "=m"(control[1]));
    std::memcpy(&words[-9], control, 8);
    return &words[-9];
}
#endif

void ensure_stacks(Scheduler& s, unsigned count) {
    if (count <= s.stack_count) {
        return;
    }
    if (s.stacks != nullptr) {
        munmap(s.stacks, size_t(s.stack_count) * kStackBytes);
    }
    const size_t bytes = size_t(count) * kStackBytes;
    void* memory = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (memory == MAP_FAILED) {
        std::fprintf(stderr, "cuda_cpu: cannot map %zu bytes of fiber stacks\n", bytes);
        std::abort();
    }
    s.stacks = static_cast<uint8_t*>(memory);
    s.stack_count = count;
    // A guard page under each stack turns an overflow into a fault, not corruption.
    const size_t page = size_t(sysconf(_SC_PAGESIZE));
    for (unsigned i = 0; i < count; ++i) {
        mprotect(s.stacks + size_t(i) * kStackBytes, page, PROT_NONE);
    }
}

std::unordered_map<std::string, Entry>& registry() {
    static std::unordered_map<std::string, Entry> kernels;
    return kernels;
}

// Runs one block to completion; false (with s.error set) on a kernel error.
bool run_block(Scheduler& s, uint3 block_idx, dim3 grid, dim3 block) {
    const unsigned n = s.threads;
    s.block_arrived = 0;
    s.done = 0;
    s.barrier_released = false;
    std::memset(s.shared.data(), kPoison, s.shared.size());
    s.mbarriers.clear();
    for (unsigned w = 0; w < s.warps.size(); ++w) {
        Warp& warp = s.warps[w];
        warp.lanes = std::min(32u, n - w * 32);
        warp.exited = 0;
        warp.arrived = 0;
        warp.what = nullptr;
    }
    for (unsigned t = 0; t < n; ++t) {
        Fiber& f = s.fibers[t];
        f.stack = s.stacks + size_t(t) * kStackBytes;
        f.position.thread_idx = uint3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
        f.position.block_idx = block_idx;
        f.position.block_dim = block;
        f.position.grid_dim = grid;
        f.position.linear_tid = t;
        f.state = State::Runnable;
        f.collectives = 0;
        f.open_group.clear();
        f.committed.clear();
        f.wgmma_open.clear();
        f.wgmma_committed.clear();
#if defined(__x86_64__)
        f.sp = prepare_stack(f.stack);
#else
        getcontext(&f.context);
        f.context.uc_stack.ss_sp = f.stack + sysconf(_SC_PAGESIZE);
        f.context.uc_stack.ss_size = kStackBytes - sysconf(_SC_PAGESIZE);
        f.context.uc_link = nullptr;
        makecontext(&f.context, fiber_main, 0);
#endif
    }
    while (s.done < n) {
        bool progressed = false;
        // Highest thread first, and every pass after a block barrier starts again
        // from the top: after each __syncthreads the last warp runs ahead of the
        // others, so a warp that reads shared memory other warps fill without a
        // barrier in between reads it unfilled (running the lowest thread first,
        // or letting the barrier's last arrival run on, hides that race whenever
        // the low warps or that one thread do the filling).
        for (unsigned t = n; t-- > 0;) {
            if (s.fibers[t].state != State::Runnable) {
                continue;
            }
            resume(s.fibers[t]);
            progressed = true;
            if (!s.error.empty()) {
                return false;
            }
            if (s.barrier_released) {
                s.barrier_released = false;
                break;
            }
        }
        if (!progressed) {
            unsigned at_block = 0, at_warp = 0, at_mbarrier = 0;
            for (const Fiber& f : s.fibers) {
                at_block += f.state == State::AtBlockBarrier;
                at_warp += f.state == State::AtWarpBarrier;
                at_mbarrier += f.state == State::AtMbarrier;
            }
            s.error = "deadlock in block (" + std::to_string(block_idx.x) + "," + std::to_string(block_idx.y) + "," +
                      std::to_string(block_idx.z) + "): " + std::to_string(at_block) + " threads wait at __syncthreads, " +
                      std::to_string(at_warp) + " in a warp collective, " + std::to_string(at_mbarrier) +
                      " on an mbarrier, " + std::to_string(s.done) + " exited";
            return false;
        }
    }
    return true;
}

}  // namespace

void sync_threads() {
    Scheduler& s = *scheduler;
    Fiber& fiber = *s.running;
    if (s.warps[fiber.position.linear_tid / 32].arrived > 0) {
        fail("__syncthreads while lanes of the same warp wait in a warp collective");
    }
    ++s.block_arrived;
    if (s.block_arrived + s.done == s.threads) {
        release_block_barrier(s);
        // Back to the scheduler, runnable, which starts its next pass from the
        // highest thread.
        s.barrier_released = true;
        switch_to_scheduler(fiber);
        return;
    }
    fiber.state = State::AtBlockBarrier;
    switch_to_scheduler(fiber);
}

uint32_t* warp_slots_next() {
    Scheduler& s = *scheduler;
    Fiber& fiber = *s.running;
    return s.warps[fiber.position.linear_tid / 32].slots[fiber.collectives & 1u];
}

uint32_t* warp_slots(unsigned buffer) {
    Scheduler& s = *scheduler;
    return s.warps[s.running->position.linear_tid / 32].slots[buffer];
}

unsigned warp_collective(unsigned mask, const char* what) {
    Scheduler& s = *scheduler;
    Fiber& fiber = *s.running;
    Warp& warp = s.warps[fiber.position.linear_tid / 32];
    if (mask != 0xffffffffu) {
        fail(std::string(what) + " with a partial mask: the kernels use full-warp collectives only");
    }
    if (warp.exited > 0) {
        fail(std::string(what) + " after lanes of the warp exited");
    }
    if (warp.arrived > 0 && warp.what != what) {
        fail(std::string("lanes of one warp meet in different collectives: ") + warp.what + " and " + what);
    }
    const unsigned buffer = fiber.collectives & 1u;
    ++fiber.collectives;
    warp.what = what;
    ++warp.arrived;
    if (warp.arrived == warp.lanes) {
        warp.arrived = 0;
        const unsigned first = fiber.position.linear_tid & ~31u;
        for (unsigned lane = 0; lane < warp.lanes; ++lane) {
            Fiber& other = s.fibers[first + lane];
            if (other.state == State::AtWarpBarrier) {
                other.state = State::Runnable;
            }
        }
        return buffer;
    }
    fiber.state = State::AtWarpBarrier;
    switch_to_scheduler(fiber);
    return buffer;
}

void* dynamic_shared() {
    Scheduler& s = *scheduler;
    return s.shared.empty() ? nullptr : s.shared.data();
}

unsigned dynamic_shared_bytes() { return scheduler->shared_bytes; }

// The 16 × 16 f16 A operand of a warp's m16n8k16 (or its share of a wgmma's
// m64k16) from the lanes' four registers in `slots` (words 0-3 of each lane):
// a0..a7 at row groupID (+8 for a2, a3, a6, a7), column threadID_in_group·2 +
// (i & 1) (+8 for i >= 4).
static void f16_a_fragments(const uint32_t* slots, double (&A)[16][16]) {
    for (unsigned lane = 0; lane < 32; ++lane) {
        const uint32_t* frag = slots + lane * kSlotWords;
        const unsigned group = lane >> 2, in_group = lane & 3;
        for (unsigned i = 0; i < 8; ++i) {
            const uint16_t h = uint16_t(frag[i / 2] >> (16 * (i & 1)));
            const unsigned row = (i & 2) ? group + 8 : group;
            const unsigned col = in_group * 2 + (i & 1) + (i >= 4 ? 8 : 0);
            A[row][col] = half_bits_to_float(h);
        }
    }
}

uint32_t shared_address(const void* p) {
    Scheduler& s = *scheduler;
    const auto* byte = static_cast<const uint8_t*>(p);
    if (s.shared.empty() || byte < s.shared.data() || byte >= s.shared.data() + s.shared.size()) {
        fail("a shared-memory address outside the block's dynamic shared memory");
    }
    return uint32_t(byte - s.shared.data());
}

// wgmma.mma_async m64nNk16 .f32.f16.f16, A from registers, B from a shared
// memory descriptor; written from the PTX ISA, section 9.7.15 "Asynchronous
// Warpgroup Level Matrix Multiply-Accumulate Instructions":
//   A (64×16, per warp w of the warpgroup rows 16w..16w+15; four .f16x2
//   registers a0..a7 as mma.m16n8k16's A): row = groupID (+8 for a2, a3, a6,
//   a7), col = threadID_in_group*2 + (i & 1) (+8 for i >= 4).
//   D (64×N, .f32, per warp its 16 rows): d[4j + 2h + e] = (row groupID + 8h,
//   col 8j + threadID_in_group*2 + e).
//   Matrix descriptor (64 bits): start address >> 4 in bits 0-13, leading
//   dimension byte offset >> 4 in 16-29, stride dimension byte offset >> 4 in
//   32-45, base offset in 49-51 (0 here), layout (swizzle) in 62-63: 0 none
//   ("interleave"), 1 128-byte. K-major B (N rows, k contiguous) in core
//   matrices of 8 rows × 16 bytes: without swizzle row n, k-octet c at
//   start + (n%8)·16 + (n/8)·SBO + c·LBO; with the 128-byte swizzle rows are
//   128 bytes (start + (n%8)·128 + (n/8)·SBO + c·16) and the 16-byte chunk
//   index (address bits 4-6) is XORed with the row within the 1,024-byte atom
//   (bits 7-9).
// The products are exact (in double) and summed with D's old value, rounded
// once to f32 per instruction, as mma_m16n8k16_f16 above.
void wgmma_m64nNk16_f16(float* d, unsigned n, const uint32_t (&a)[4], uint64_t desc, bool accumulate) {
    Scheduler& s = *scheduler;
    Fiber& fiber = *s.running;
    if (n % 8 != 0 || n == 0 || n > 256) {
        fail("wgmma: N must be a multiple of 8 from 8 to 256");
    }
    uint32_t* mine = warp_slots_next() + lane_id() * kSlotWords;
    std::memcpy(mine, a, 16);
    const uint32_t* slots = warp_slots(warp_collective(0xffffffffu, "wgmma.mma_async"));
    double A[16][16];
    f16_a_fragments(slots, A);
    const uint32_t start = uint32_t(desc & 0x3fff) << 4;
    const uint32_t lbo = uint32_t((desc >> 16) & 0x3fff) << 4;
    const uint32_t sbo = uint32_t((desc >> 32) & 0x3fff) << 4;
    const unsigned base_offset = unsigned((desc >> 49) & 7), layout = unsigned(desc >> 62);
    if (base_offset != 0 || (layout != 0 && layout != 1)) {
        fail("wgmma: only base offset 0 and the no-swizzle and 128-byte swizzle layouts are emulated");
    }
    const unsigned lane = lane_id(), group = lane >> 2, in_group = lane & 3;
    PendingWgmma op{d, std::vector<float>(n / 2), {}};
    op.read.reserve(n / 4 * 16);
    auto b = [&](unsigned k, unsigned col) -> double {
        uint32_t offset;
        if (layout == 0) {
            offset = start + (col % 8) * 16 + (col / 8) * sbo + (k / 8) * lbo + (k % 8) * 2;
        } else {
            offset = start + (col % 8) * 128 + (col / 8) * sbo + (k / 8) * 16 + (k % 8) * 2;
            offset ^= ((offset >> 7) & 7u) << 4;
        }
        if (offset + 2 > s.shared.size()) {
            fail("wgmma: a B element outside the block's dynamic shared memory");
        }
        uint16_t h;
        std::memcpy(&h, s.shared.data() + offset, 2);
        op.read.emplace_back(offset, h);
        return half_bits_to_float(h);
    };
    // The accumulator's value as the async proxy sees it: the newest pending
    // result for it, else the registers.
    const float* input = d;
    for (auto pending = fiber.wgmma_committed.rbegin(); pending != fiber.wgmma_committed.rend() && input == d;
         ++pending) {
        for (auto earlier = pending->rbegin(); earlier != pending->rend(); ++earlier) {
            if (earlier->d == d) {
                input = earlier->values.data();
                break;
            }
        }
    }
    for (auto open = fiber.wgmma_open.rbegin(); open != fiber.wgmma_open.rend(); ++open) {
        if (open->d == d) {
            input = open->values.data();
            break;
        }
    }
    for (unsigned j = 0; j < n / 8; ++j) {
        for (unsigned e = 0; e < 2; ++e) {
            const unsigned col = 8 * j + 2 * in_group + e;
            double column[16];
            for (unsigned k = 0; k < 16; ++k) {
                column[k] = b(k, col);
            }
            for (unsigned h = 0; h < 2; ++h) {
                const unsigned row = group + 8 * h;
                const unsigned i = 4 * j + 2 * h + e;
                double sum = accumulate ? double(input[i]) : 0.0;
                for (unsigned k = 0; k < 16; ++k) {
                    sum += A[row][k] * column[k];
                }
                op.values[i] = float(sum);
            }
        }
    }
    fiber.wgmma_open.push_back(std::move(op));
    for (unsigned i = 0; i < n / 2; ++i) {
        d[i] = std::numeric_limits<float>::quiet_NaN();  // in flight until waited for
    }
}

void wgmma_fence() {}

void wgmma_commit() {
    Fiber& fiber = *scheduler->running;
    fiber.wgmma_committed.push_back(std::move(fiber.wgmma_open));
    fiber.wgmma_open.clear();
}

// The PTX ISA (wgmma.mma_async) leaves the result undefined when a wgmma's
// shared-memory operand is written before the wgmma_wait that covers it (the
// async proxy may read it at any time until then): the emulator reads it at
// issue, and here, as the wgmma completes, checks that every element it read
// is still there — a ring slot refilled too early is an error, not a lucky pass.
void wgmma_wait(unsigned pending_allowed) {
    Fiber& fiber = *scheduler->running;
    const std::vector<uint8_t>& shared = scheduler->shared;
    while (fiber.wgmma_committed.size() > pending_allowed) {
        for (PendingWgmma& op : fiber.wgmma_committed.front()) {
            for (const auto& [offset, bits] : op.read) {
                uint16_t now;
                std::memcpy(&now, shared.data() + offset, 2);
                if (now != bits) {
                    fail("wgmma: its shared-memory operand was written before wgmma.wait_group covered it");
                }
            }
            std::memcpy(op.d, op.values.data(), op.values.size() * sizeof(float));
        }
        fiber.wgmma_committed.pop_front();
    }
    // .sync.aligned: the warp's lanes leave the wait together, each having
    // retired its share (so what one lane does next, e.g. free a ring slot
    // on an mbarrier, follows every lane's completion).
    warp_collective(0xffffffffu, "wgmma.wait_group");
}

// ------------------------------------------------------------------ mbarrier

namespace {

Mbarrier& mbarrier_at(void* bar, uint32_t* offset_out) {
    Scheduler& s = *scheduler;
    const uint32_t offset = shared_address(bar);
    if (offset % 8 != 0) {
        fail("mbarrier: not 8-byte aligned");
    }
    auto found = s.mbarriers.find(offset);
    if (found == s.mbarriers.end()) {
        fail("mbarrier: used before mbarrier.init");
    }
    *offset_out = offset;
    return found->second;
}

bool mbarrier_waited_on(const Scheduler& s, uint32_t offset) {
    for (const Fiber& f : s.fibers) {
        if (f.state == State::AtMbarrier && f.mbarrier == offset) {
            return true;
        }
    }
    return false;
}

// Lands the barrier's tensor copies (their transactions complete), then
// completes the phase if nothing is pending: the parity flips, the counts
// reset, and the fibers waiting for that phase run again.
void mbarrier_progress(Mbarrier& m, uint32_t offset, bool land) {
    Scheduler& s = *scheduler;
    if (land) {
        for (PendingCopy& copy : m.copies) {
            std::memcpy(copy.dst, copy.data.data(), copy.data.size());
        }
        m.copies.clear();
        m.tx -= m.in_flight;
        m.in_flight = 0;
    }
    if (m.pending == 0 && m.tx == 0 && m.in_flight == 0) {
        const unsigned completed = m.phase;
        m.phase ^= 1u;
        m.pending = m.expected;
        for (Fiber& f : s.fibers) {
            if (f.state == State::AtMbarrier && f.mbarrier == offset && f.mbarrier_parity == completed) {
                f.state = State::Runnable;
            }
        }
    } else if (m.tx < 0 && m.pending == 0) {
        fail("mbarrier: more transaction bytes completed than expected (expect_tx too small)");
    }
}

}  // namespace

void mbarrier_init(void* bar, unsigned count) {
    Scheduler& s = *scheduler;
    const uint32_t offset = shared_address(bar);
    if (offset % 8 != 0 || count == 0) {
        fail("mbarrier.init: not 8-byte aligned, or a count of 0");
    }
    Mbarrier m;
    m.expected = m.pending = count;
    s.mbarriers[offset] = std::move(m);
    std::memset(bar, 0, 8);  // the object's own bytes: not data
}

void mbarrier_arrive(void* bar) {
    uint32_t offset;
    Mbarrier& m = mbarrier_at(bar, &offset);
    if (m.pending == 0) {
        fail("mbarrier.arrive: more arrivals than the barrier's count");
    }
    --m.pending;
    mbarrier_progress(m, offset, mbarrier_waited_on(*scheduler, offset));
}

void mbarrier_arrive_expect_tx(void* bar, unsigned bytes) {
    uint32_t offset;
    Mbarrier& m = mbarrier_at(bar, &offset);
    m.tx += bytes;
    if (m.pending == 0) {
        fail("mbarrier.arrive.expect_tx: more arrivals than the barrier's count");
    }
    --m.pending;
    mbarrier_progress(m, offset, mbarrier_waited_on(*scheduler, offset));
}

void mbarrier_wait(void* bar, unsigned parity) {
    Scheduler& s = *scheduler;
    uint32_t offset;
    Mbarrier& m = mbarrier_at(bar, &offset);
    if (m.phase != (parity & 1u)) {
        return;  // the phase of this parity has completed (copies of the current one stay in flight)
    }
    mbarrier_progress(m, offset, true);
    if (m.phase != (parity & 1u)) {
        return;
    }
    Fiber& fiber = *s.running;
    fiber.state = State::AtMbarrier;
    fiber.mbarrier = offset;
    fiber.mbarrier_parity = parity & 1u;
    switch_to_scheduler(fiber);
}

void tma_load_2d(void* dst, const void* map_bytes, int c0, int c1, void* bar) {
    Scheduler& s = *scheduler;
    EmuTensorMap map;
    std::memcpy(&map, map_bytes, sizeof map);
    if (map.magic != kEmuTensorMapMagic) {
        fail("cp.async.bulk.tensor: not a tensor map of the emulated device");
    }
    const uint32_t dst_offset = shared_address(dst);
    const uint32_t row_bytes = map.box_cols * map.element_bytes;
    const uint32_t bytes = row_bytes * map.box_rows;
    if (dst_offset % (map.swizzle == 128 ? 1024 : 128) != 0 || row_bytes % 16 != 0 ||
        (map.swizzle == 128 && row_bytes != 128) || dst_offset + bytes > s.shared.size()) {
        fail("cp.async.bulk.tensor: misaligned or oversized box");
    }
    uint32_t offset;
    Mbarrier& m = mbarrier_at(bar, &offset);
    PendingCopy copy{dst, std::vector<uint8_t>(bytes, 0)};
    // The source is read at issue (as cp.async here): elements outside the
    // tensor stay zero. With the 128-byte swizzle the 16-byte chunk index
    // (shared address bits 4-6) is XORed with bits 7-9, as wgmma reads it.
    for (uint32_t r = 0; r < map.box_rows; ++r) {
        const int64_t row = int64_t(c1) + r;
        for (uint32_t e = 0; e < map.box_cols; ++e) {
            const int64_t col = int64_t(c0) + e;
            if (row < 0 || col < 0 || uint64_t(row) >= map.rows || uint64_t(col) >= map.cols) {
                continue;
            }
            uint32_t at = dst_offset + r * row_bytes + e * map.element_bytes;
            if (map.swizzle == 128) {
                at ^= ((at >> 7) & 7u) << 4;
            }
            const auto* src = reinterpret_cast<const uint8_t*>(map.base) + uint64_t(row) * map.pitch +
                              uint64_t(col) * map.element_bytes;
            std::memcpy(copy.data.data() + (at - dst_offset), src, map.element_bytes);
        }
    }
    std::memset(dst, kPoison, bytes);
    m.copies.push_back(std::move(copy));
    m.in_flight += bytes;
    mbarrier_progress(m, offset, mbarrier_waited_on(s, offset));
}

void cp_async(void* shared_dst, const void* global_src, unsigned bytes, unsigned src_bytes) {
    Fiber& fiber = *scheduler->running;
    PendingCopy copy{shared_dst, std::vector<uint8_t>(bytes, 0)};
    // The source is read at issue: a later write to it must not change what lands.
    std::memcpy(copy.data.data(), global_src, std::min(bytes, src_bytes));
    std::memset(shared_dst, kPoison, bytes);
    fiber.open_group.push_back(std::move(copy));
}

void cp_async_commit() {
    Fiber& fiber = *scheduler->running;
    fiber.committed.push_back(std::move(fiber.open_group));
    fiber.open_group.clear();
}

void cp_async_wait(unsigned pending_allowed) {
    Fiber& fiber = *scheduler->running;
    while (fiber.committed.size() > pending_allowed) {
        for (PendingCopy& copy : fiber.committed.front()) {
            std::memcpy(copy.dst, copy.data.data(), copy.data.size());
        }
        fiber.committed.pop_front();
    }
}

// mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32, written from the PTX ISA,
// section 9.7.14.5.10 "Matrix Fragments for mma.m16n8k32" (.s8/.u8 multiplicands,
// .s32 accumulators), with groupID = %laneid >> 2, threadID_in_group = %laneid % 4:
//   A (16×32, four .b32 registers holding a0..a15, low byte first):
//     row = groupID        for ai, 0 <= i < 4 or 8 <= i < 12; groupID + 8 otherwise
//     col = threadID_in_group*4 + (i & 3)       for i < 8; + 16 for i >= 8
//   B (32×8, two .b32 registers holding b0..b7):
//     row = threadID_in_group*4 + (i & 3)       for i < 4; + 16 for i >= 4
//     col = groupID
//   C, D (16×8, four .s32 registers c0..c3):
//     row = groupID for i < 2; groupID + 8 otherwise
//     col = threadID_in_group*2 + (i & 1)
// Every lane deposits its fragments, the warp meets, and each lane rebuilds the
// whole A, B and C from all lanes' fragments and computes its own four results.
void mma_m16n8k32_s8(int (&d)[4], const int (&a)[4], const int (&b)[2], const int (&c)[4]) {
    uint32_t* mine = warp_slots_next() + lane_id() * kSlotWords;
    std::memcpy(mine, a, 16);
    std::memcpy(mine + 4, b, 8);
    std::memcpy(mine + 6, c, 16);
    const uint32_t* slots = warp_slots(warp_collective(0xffffffffu, "mma.sync.m16n8k32"));
    int8_t A[16][32];
    int8_t B[32][8];
    int32_t C[16][8];
    for (unsigned lane = 0; lane < 32; ++lane) {
        const uint32_t* frag = slots + lane * kSlotWords;
        const unsigned group = lane >> 2, in_group = lane & 3;
        int8_t a_bytes[16], b_bytes[8];
        std::memcpy(a_bytes, frag, 16);
        std::memcpy(b_bytes, frag + 4, 8);
        for (unsigned i = 0; i < 16; ++i) {
            const unsigned row = (i < 4 || (i >= 8 && i < 12)) ? group : group + 8;
            const unsigned col = in_group * 4 + (i & 3) + (i >= 8 ? 16 : 0);
            A[row][col] = a_bytes[i];
        }
        for (unsigned i = 0; i < 8; ++i) {
            const unsigned row = in_group * 4 + (i & 3) + (i >= 4 ? 16 : 0);
            B[row][group] = b_bytes[i];
        }
        for (unsigned i = 0; i < 4; ++i) {
            const unsigned row = i < 2 ? group : group + 8;
            const unsigned col = in_group * 2 + (i & 1);
            int32_t value;
            std::memcpy(&value, frag + 6 + i, 4);
            C[row][col] = value;
        }
    }
    const unsigned lane = lane_id();
    const unsigned group = lane >> 2, in_group = lane & 3;
    for (unsigned i = 0; i < 4; ++i) {
        const unsigned row = i < 2 ? group : group + 8;
        const unsigned col = in_group * 2 + (i & 1);
        // s32 accumulation wraps (no .satfinite): compute in 64 bits, keep the low 32.
        int64_t sum = C[row][col];
        for (unsigned k = 0; k < 32; ++k) {
            sum += int32_t(A[row][k]) * int32_t(B[k][col]);
        }
        d[i] = int32_t(uint32_t(uint64_t(sum)));
    }
}

// ldmatrix.sync.aligned.m8n8.x4.shared.b16, written from the PTX ISA section
// "ldmatrix": four 8×8 matrices of 16-bit elements, each row 16 contiguous bytes.
// Lanes 8m..8m+7 supply the addresses of rows 0..7 of matrix m (16-byte aligned);
// every lane l then receives, in register m, the 32-bit word l % 4 (elements
// 2(l%4), 2(l%4)+1) of row l / 4 of matrix m.
namespace {

// Both ldmatrix forms: the warp exchanges its row addresses (lanes 8m..8m+7
// give rows 0..7 of matrix m), then `take(row, element)` reads the 16-bit
// element `element` of row `row` of matrix m for register m of this lane.
template <typename Take>
void ldmatrix_collective(int (&d)[4], const void* row, const char* what, Take take) {
    if (reinterpret_cast<uintptr_t>(row) % 16 != 0) {
        fail("ldmatrix: a row address is not 16-byte aligned");
    }
    uint32_t* mine = warp_slots_next() + lane_id() * kSlotWords;
    const uint64_t address = reinterpret_cast<uintptr_t>(row);
    std::memcpy(mine, &address, sizeof address);
    const uint32_t* slots = warp_slots(warp_collective(0xffffffffu, what));
    for (unsigned m = 0; m < 4; ++m) {
        auto element = [&](unsigned r, unsigned column) {
            uint64_t source;
            std::memcpy(&source, slots + (8 * m + r) * kSlotWords, sizeof source);
            uint16_t value;
            std::memcpy(&value, reinterpret_cast<const unsigned char*>(uintptr_t(source)) + 2 * column, 2);
            return uint32_t(value);
        };
        const uint32_t word = take(element);
        std::memcpy(&d[m], &word, 4);
    }
}

}  // namespace

void ldmatrix_x4(int (&d)[4], const void* row) {
    const unsigned lane = lane_id();
    ldmatrix_collective(d, row, "ldmatrix.x4", [lane](auto element) {
        // Row lane / 4, elements 2(lane % 4) and 2(lane % 4) + 1.
        return element(lane / 4, 2 * (lane % 4)) | element(lane / 4, 2 * (lane % 4) + 1) << 16;
    });
}

// mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32, written from the PTX ISA,
// section 9.7.14.5.8 "Matrix Fragments for mma.m16n8k16 with floating point
// type" (.f16 multiplicands, .f32 accumulators), groupID = %laneid >> 2,
// threadID_in_group = %laneid % 4:
//   A (16×16, four .f16x2 registers holding a0..a7, low half first):
//     row = groupID        for a0, a1, a4, a5; groupID + 8 for a2, a3, a6, a7
//     col = threadID_in_group*2 + (i & 1)       for i < 4; + 8 for i >= 4
//   B (16×8, two .f16x2 registers holding b0..b3):
//     row = threadID_in_group*2 + (i & 1)       for i < 2; + 8 for i >= 2
//     col = groupID
//   C, D (16×8, four .f32 registers c0..c3):
//     row = groupID for i < 2; groupID + 8 otherwise
//     col = threadID_in_group*2 + (i & 1)
// Each product of two f16 values (22 significant bits) is exact in a double; the
// sum with c runs in k order in double precision (53 bits: exact unless the terms
// span more than ~30 binary orders of magnitude) and is rounded once to f32. The
// ISA does not specify the tensor core's internal accumulation order or rounding:
// a GPU may differ from these results in the last bits of f32, which the parity
// tolerances allow (docs/kernels.md).
void mma_m16n8k16_f16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4]) {
    uint32_t* mine = warp_slots_next() + lane_id() * kSlotWords;
    std::memcpy(mine, a, 16);
    std::memcpy(mine + 4, b, 8);
    std::memcpy(mine + 6, c, 16);
    const uint32_t* slots = warp_slots(warp_collective(0xffffffffu, "mma.sync.m16n8k16.f16"));
    double A[16][16];
    double B[16][8];
    float C[16][8];
    f16_a_fragments(slots, A);
    for (unsigned lane = 0; lane < 32; ++lane) {
        const uint32_t* frag = slots + lane * kSlotWords;
        const unsigned group = lane >> 2, in_group = lane & 3;
        for (unsigned i = 0; i < 4; ++i) {
            const uint16_t h = uint16_t(frag[4 + i / 2] >> (16 * (i & 1)));
            const unsigned row = in_group * 2 + (i & 1) + (i >= 2 ? 8 : 0);
            B[row][group] = half_bits_to_float(h);
        }
        for (unsigned i = 0; i < 4; ++i) {
            const unsigned row = i < 2 ? group : group + 8;
            const unsigned col = in_group * 2 + (i & 1);
            std::memcpy(&C[row][col], frag + 6 + i, 4);
        }
    }
    const unsigned lane = lane_id();
    const unsigned group = lane >> 2, in_group = lane & 3;
    for (unsigned i = 0; i < 4; ++i) {
        const unsigned row = i < 2 ? group : group + 8;
        const unsigned col = in_group * 2 + (i & 1);
        double sum = C[row][col];
        for (unsigned k = 0; k < 16; ++k) {
            sum += A[row][k] * B[k][col];
        }
        d[i] = float(sum);
    }
}

void load_vector(void* dst, const void* src, unsigned bytes) {
    if (reinterpret_cast<uintptr_t>(src) % bytes != 0) {
        fail("a " + std::to_string(bytes) + "-byte vector load from an address that is not " +
             std::to_string(bytes) + "-byte aligned");
    }
    std::memcpy(dst, src, bytes);
}

// ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16, from the same PTX ISA section:
// the addresses as without .trans (lanes 8m..8m+7: rows 0..7 of matrix m), but
// each matrix is delivered transposed: lane l receives in register m the
// elements (row 2(l % 4), column l / 4) in the low half and (row 2(l % 4) + 1,
// column l / 4) in the high half.
void ldmatrix_x4_trans(int (&d)[4], const void* row) {
    const unsigned lane = lane_id();
    ldmatrix_collective(d, row, "ldmatrix.x4.trans", [lane](auto element) {
        // Column lane / 4 of rows 2(lane % 4) and 2(lane % 4) + 1.
        return element(2 * (lane % 4), lane / 4) | element(2 * (lane % 4) + 1, lane / 4) << 16;
    });
}

void kernel_error(const char* message) { fail(message); }

void register_kernel(const char* name, Entry entry) { registry()[name] = entry; }

}  // namespace cuda_emu

extern "C" void tessera_emu_register_all();

// The emulated cuLaunchKernel: `args[i]` points at the value of the kernel's i-th
// parameter. Returns 0, or non-zero with a message in `error`.
extern "C" int tessera_emu_launch(const char* name, const unsigned* grid, const unsigned* block, unsigned shared_bytes,
                                  void** args, char* error, size_t error_len) {
    using namespace cuda_emu;
    static const bool registered = (tessera_emu_register_all(), true);
    (void)registered;
    auto report = [&](const std::string& message) {
        std::snprintf(error, error_len, "%s", message.c_str());
        return 1;
    };
    auto found = registry().find(name);
    if (found == registry().end()) {
        return report(std::string("no kernel named ") + name);
    }
    const dim3 grid_dim{grid[0], grid[1], grid[2]};
    const dim3 block_dim{block[0], block[1], block[2]};
    const uint64_t threads = uint64_t(block[0]) * block[1] * block[2];
    if (threads == 0 || threads > kMaxThreads) {
        return report(std::string(name) + ": " + std::to_string(threads) + " threads per block");
    }
    if (grid[0] == 0 || grid[1] == 0 || grid[2] == 0 || grid[1] > 65535 || grid[2] > 65535) {
        return report(std::string(name) + ": grid " + std::to_string(grid[0]) + "x" + std::to_string(grid[1]) + "x" +
                      std::to_string(grid[2]) + " is empty or too large");
    }
    // The most any supported GPU lets a block opt in to (sm_90: 227 KiB); the
    // CUDA launcher opts a kernel in above 48 KiB and checks the device's own
    // limit.
    if (shared_bytes > 227 * 1024) {
        return report(std::string(name) + ": " + std::to_string(shared_bytes) + " bytes of dynamic shared memory");
    }
    Scheduler& s = the_scheduler();
    if (s.running != nullptr) {
        return report("a launch from inside a kernel");
    }
    ensure_stacks(s, unsigned(threads));
    s.threads = unsigned(threads);
    s.fibers.resize(threads);
    s.warps.resize((threads + 31) / 32);
    s.shared.assign((shared_bytes + 15) / 16 * 16, kPoison);
    s.shared_bytes = shared_bytes;
    s.entry = found->second;
    s.args = args;
    s.error.clear();
    for (unsigned z = 0; z < grid[2]; ++z) {
        for (unsigned y = 0; y < grid[1]; ++y) {
            for (unsigned x = 0; x < grid[0]; ++x) {
                if (!run_block(s, uint3{x, y, z}, grid_dim, block_dim)) {
                    current_position = nullptr;
                    return report(std::string(name) + ": " + s.error);
                }
            }
        }
    }
    current_position = nullptr;
    return 0;
}

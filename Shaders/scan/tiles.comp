#version 450
//! variant add_f32 -DOP_ADD -DT=float -DT_F32
//! variant add_f32_qf -DOP_ADD -DT=float -DT_F32 -DQUEUE_FAMILY_SCOPE
//! variant add_f32_w64 -DOP_ADD -DT=float -DT_F32 -DWIDE64
//! variant add_f32_w64_qf -DOP_ADD -DT=float -DT_F32 -DWIDE64 -DQUEUE_FAMILY_SCOPE
//! variant add_i32 -DOP_ADD -DT=int -DT_I32
//! variant add_i32_qf -DOP_ADD -DT=int -DT_I32 -DQUEUE_FAMILY_SCOPE
//! variant add_i32_w64 -DOP_ADD -DT=int -DT_I32 -DWIDE64
//! variant add_i32_w64_qf -DOP_ADD -DT=int -DT_I32 -DWIDE64 -DQUEUE_FAMILY_SCOPE
//! variant add_u32 -DOP_ADD -DT=uint -DT_U32
//! variant add_u32_qf -DOP_ADD -DT=uint -DT_U32 -DQUEUE_FAMILY_SCOPE
//! variant add_u32_w64 -DOP_ADD -DT=uint -DT_U32 -DWIDE64
//! variant add_u32_w64_qf -DOP_ADD -DT=uint -DT_U32 -DWIDE64 -DQUEUE_FAMILY_SCOPE
//! variant max_f32 -DOP_MAX -DT=float -DT_F32
//! variant max_f32_qf -DOP_MAX -DT=float -DT_F32 -DQUEUE_FAMILY_SCOPE
//! variant max_f32_w64 -DOP_MAX -DT=float -DT_F32 -DWIDE64
//! variant max_f32_w64_qf -DOP_MAX -DT=float -DT_F32 -DWIDE64 -DQUEUE_FAMILY_SCOPE
//
// Tiled prefix scan of one bindable chunk of a flat array (see ScanPlan.swift). A tile is
// WG * ITEMS consecutive elements; each invocation owns ITEMS consecutive elements (moved as
// 4-word vectors), scans them serially in registers; subgroup scans and one subgroup over the
// subgroup totals finish the tile. Each workgroup handles up to pc.tilesPerGroup tiles, taken
// from an atomic ticket counter (so every smaller ticket is held by a running workgroup):
// lavapipe pays a large setup cost per workgroup.
//
// Lavapipe also caps the loop iterations of an invocation at 65535 in all (over every loop;
// past that, loops exit early and silently). Loops here have constant trip counts (unrolled)
// except the tile loop and the look-back, whose iterations per tile are bounded (polls,
// window steps, fallbacks); the host sizes pc.tilesPerGroup to stay far below the cap.
//
// PASS 0, single pass: subgroup 0 publishes the tile's total, then walks back over its
//   predecessors' descriptors (decoupled look-back, a window of one per lane). A predecessor
//   still unpublished after SPIN polls is reduced from the input by the whole workgroup
//   instead (the fallback of Smith, Levien and Owens): no workgroup ever waits on another
//   without bound, so the kernel cannot hang on devices without forward progress.
// PASS 1, reduce: writes each tile's total to the spine.
// PASS 2, downsweep: reads each tile's exclusive prefix from the (scanned) spine.
//
// Segments (SEG bit 0: rows of pc.rowLen elements; bit 1: head flags) make the operator the
// segmented one on (value, head) pairs: a head restarts the scan at its element.
//
// Descriptor of tile t: two words status[descBase + 2t + {0,1}], each holding 16 bits of the
// value, the head bit (29) and the state (bits 30-31: 0 none, 1 total, 2 inclusive prefix).
// Each word carries the state, so a reader that sees the same state in both has a consistent
// value without any ordering between the two stores (and with 32-bit atomics only).
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_KHR_shader_subgroup_ballot : require
#extension GL_KHR_shader_subgroup_shuffle : require
#extension GL_KHR_shader_subgroup_shuffle_relative : require
#extension GL_KHR_memory_scope_semantics : require
#ifdef WIDE64
#extension GL_EXT_shader_explicit_arithmetic_types_int64 : require
#endif
// Atomics visible to every workgroup: QueueFamily scope where the Vulkan memory model is on
// (Device scope would also need vulkanMemoryModelDeviceScope), Device scope elsewhere.
#ifdef QUEUE_FAMILY_SCOPE
#define SCOPE gl_ScopeQueueFamily
#else
#define SCOPE gl_ScopeDevice
#endif
#include "common/scan_op.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint ITEMS = 16;          // elements per invocation, multiple of 4, <= 32
layout(constant_id = 2) const uint SEG = 0;             // bit 0: rows, bit 1: head flags
layout(constant_id = 3) const bool EXCLUSIVE = false;
layout(constant_id = 4) const uint PASS = 0;            // 0 single pass, 1 reduce, 2 downsweep
layout(constant_id = 5) const uint SPIN = 16;           // polls without progress before the fallback
layout(constant_id = 6) const uint FORCE_FALLBACK = 0;  // tests: reduce this many predecessors from the input
layout(constant_id = 7) const uint MAX_SUBGROUP = 128;  // the device's largest subgroup
layout(constant_id = 8) const uint ROUNDS = 32;         // ceil(subgroups / subgroup size) at the smallest subgroup
// The chunk's last tile (partial, and holding element n - 1) goes to a one-workgroup dispatch
// built with TAIL: lavapipe runs both sides of every branch (masked), so the bounds checks and
// scalar paths stay out of the kernel that does all the other tiles.
layout(constant_id = 9) const bool TAIL = false;

// Vector views move 4 words; lavapipe turns every 32-bit access into a scalar load with a
// bounds check per lane, so the WIDE64 build moves them as two 64-bit words.
#ifdef WIDE64
#define VEC u64vec2
#else
#define VEC uvec4
#endif
layout(std430, binding = 0) readonly buffer InV { VEC in_v[]; };
layout(std430, binding = 1) readonly buffer InS { uint in_s[]; };
layout(std430, binding = 2) writeonly buffer OutV { VEC out_v[]; };
layout(std430, binding = 3) writeonly buffer OutS { uint out_s[]; };
layout(std430, binding = 4) readonly buffer Flags { uint flags[]; };
layout(std430, binding = 5) buffer Status { uint status[]; };
layout(std430, binding = 6) buffer Spine { uint spine[]; };

layout(push_constant) uniform Push {
    uint n;             // elements in this chunk
    uint tileBase;      // global index of the chunk's first tile
    uint tiles;         // tiles in this chunk
    uint rowLen;        // SEG bit 0: row length
    uint rowPhase;      // SEG bit 0: (global index of the chunk's first element) % rowLen
    uint counterIndex;  // status word of this dispatch's ticket counter
    uint statsIndex;    // status word counting fallbacks
    uint descBase;      // PASS 0: status word of tile 0's descriptor
    uint writeTotal;    // 1: out_s[n] = inclusive value of element n - 1
    uint tilesPerGroup; // tiles one workgroup may take
} pc;

#include "common/scan_block.glsl"

const uint TILE = gl_WorkGroupSize.x * ITEMS;

shared uint s_v[gl_WorkGroupSize.x];   // subgroup totals, then their exclusive prefixes
shared uint s_h[gl_WorkGroupSize.x];
shared uint s_tile, s_prefix;

uvec4 load4(uint v) {
#ifdef WIDE64
    const u64vec2 p = in_v[v];
    return uvec4(unpackUint2x32(p.x), unpackUint2x32(p.y));
#else
    return in_v[v];
#endif
}

void store4(uint v, uvec4 w) {
#ifdef WIDE64
    out_v[v] = u64vec2(packUint2x32(w.xy), packUint2x32(w.zw));
#else
    out_v[v] = w;
#endif
}

// ITEMS elements from chunk-local index `first` (identity past n) and their head bits.
void load_items(uint first, out T x[ITEMS], out uint heads) {
    if (!TAIL || first + ITEMS <= pc.n) {
        for (uint v = 0u; v < ITEMS / 4u; ++v) {
            const uvec4 w = load4(first / 4u + v);
            x[4u * v] = T_FROM(w.x);
            x[4u * v + 1u] = T_FROM(w.y);
            x[4u * v + 2u] = T_FROM(w.z);
            x[4u * v + 3u] = T_FROM(w.w);
        }
    } else {
        for (uint k = 0u; k < ITEMS; ++k) {
            x[k] = first + k < pc.n ? T_FROM(in_s[first + k]) : SCAN_IDENTITY;
        }
    }
    heads = 0u;
    if ((SEG & 1u) != 0u) {
        uint p = (pc.rowPhase + first % pc.rowLen) % pc.rowLen;
        for (uint k = 0u; k < ITEMS; ++k) {
            if (p == 0u && (!TAIL || first + k < pc.n)) heads |= 1u << k;
            p = p + 1u == pc.rowLen ? 0u : p + 1u;
        }
    }
    if ((SEG & 2u) != 0u) {
        for (uint k = 0u; k < ITEMS; ++k) {
            if ((!TAIL || first + k < pc.n) && flags[first + k] != 0u) heads |= 1u << k;
        }
    }
}

// Serial inclusive scan of the items in place; returns their total.
void thread_scan(inout T x[ITEMS], uint heads, out T tv, out bool th) {
    T run = SCAN_IDENTITY;
    for (uint k = 0u; k < ITEMS; ++k) {
        run = ((heads >> k) & 1u) != 0u ? x[k] : SCAN_OP(run, x[k]);
        x[k] = run;
    }
    tv = run;
    th = heads != 0u;
}

// Subgroup 0: scans the per-subgroup totals in (sv, sh) over the workgroup's subgroups, in
// rounds of one per lane; writes each subgroup's exclusive prefix back when `store`, and
// returns the workgroup total.
void scan_subgroup_totals(bool store, out T av, out bool ah) {
    av = SCAN_IDENTITY;
    ah = false;
    for (uint r = 0u; r < ROUNDS; ++r) {
        const uint base = r * gl_SubgroupSize;
        if (base < gl_NumSubgroups) {
            const uint i = base + gl_SubgroupInvocationID;
            T v = SCAN_IDENTITY;
            bool h = false;
            if (i < gl_NumSubgroups) {
                v = T_FROM(s_v[i]);
                h = SEG != 0u && s_h[i] != 0u;
            }
            if (SEG == 0u) {
                if (store && i < gl_NumSubgroups) s_v[i] = t_bits(SCAN_OP(av, subgroup_exclusive(v)));
                av = SCAN_OP(av, subgroup_total(v));
                continue;
            }
            subgroup_inclusive(v, h);
            if (store) {
                T pv;
                bool ph;
                subgroup_shift(v, h, pv, ph);
                combine(av, ah, pv, ph);
                if (i < gl_NumSubgroups) { s_v[i] = t_bits(pv); s_h[i] = ph ? 1u : 0u; }
            }
            T tv;
            bool th;
            subgroup_last(v, h, tv, th);
            combine(av, ah, tv, th);
            av = tv;
            ah = th;
        }
    }
}

// Whether chunk-local element i (< n) starts a segment.
bool head_at(uint i) {
    bool h = false;
    if ((SEG & 1u) != 0u) h = (pc.rowPhase + i % pc.rowLen) % pc.rowLen == 0u;
    if ((SEG & 2u) != 0u) h = h || flags[i] != 0u;
    return h;
}

// The total of full chunk-local tile `tile` (only the last tile of a chunk is partial, and it
// is never a predecessor), reduced from the input by the calling subgroup alone (the
// look-back's fallback): rounds of 4 consecutive elements per lane, in order. A loop with a
// small body, because every subgroup runs it (masked) once per tile on lavapipe.
void reduce_tile(uint tile, out T fv, out bool fh) {
    fv = SCAN_IDENTITY;
    fh = false;
    const uint first = tile * TILE;
    for (uint base = first; base < first + TILE; base += 4u * gl_SubgroupSize) {
        const uint e = base + 4u * gl_SubgroupInvocationID;
        T v = SCAN_IDENTITY;
        bool h = false;
        const uvec4 w = load4(e / 4u);
        for (uint c = 0u; c < 4u; ++c) {
            T xc = T_FROM(w[c]);
            bool hc = SEG != 0u && head_at(e + c);
            combine(v, h, xc, hc);
            v = xc;
            h = hc;
        }
        if (SEG == 0u) {
            fv = SCAN_OP(fv, subgroup_total(v));
            continue;
        }
        subgroup_inclusive(v, h);
        T tv;
        bool th;
        subgroup_last(v, h, tv, th);
        combine(fv, fh, tv, th);
        fv = tv;
        fh = th;
    }
}

uint desc_word(uint half_, uint state, T v, bool h) {
    const uint w = t_bits(v);
    return (half_ == 0u ? (w & 0xFFFFu) : (w >> 16)) | (h ? 1u << 29 : 0u) | (state << 30);
}

void publish(uint tile, uint state, T v, bool h) {
    const uint i = pc.descBase + 2u * tile;
    atomicStore(status[i], desc_word(0u, state, v, h), SCOPE, gl_StorageSemanticsNone, gl_SemanticsRelaxed);
    atomicStore(status[i + 1u], desc_word(1u, state, v, h), SCOPE, gl_StorageSemanticsNone, gl_SemanticsRelaxed);
}

// Tile k's descriptor: state 0 while unpublished (or torn between two publications).
void read_desc(uint k, out uint state, out T v, out bool h) {
    const uint i = pc.descBase + 2u * k;
    const uint w0 = atomicLoad(status[i], SCOPE, gl_StorageSemanticsNone, gl_SemanticsRelaxed);
    const uint w1 = atomicLoad(status[i + 1u], SCOPE, gl_StorageSemanticsNone, gl_SemanticsRelaxed);
    state = (w0 >> 30) == (w1 >> 30) ? w0 >> 30 : 0u;
    v = T_FROM((w0 & 0xFFFFu) | (w1 << 16));
    h = ((w0 >> 29) & 1u) != 0u;
}

// Tests force the fallback on the nearest FORCE_FALLBACK predecessors within the chunk.
bool forced(uint tile, uint k) {
    return k >= pc.tileBase && tile - k <= FORCE_FALLBACK;
}

// Subgroup 0: polls the window of predecessors pos, pos - 1, ... (one per lane) and folds the
// ready ones, nearest first, into (acc, acch). Returns 1 when the prefix is complete, 2 when
// tile `pos` stayed unpublished for SPIN polls (or is forced) and must be reduced.
uint poll_window(uint tile, inout int pos, inout T acc, inout bool acch) {
    uint polls = 0u;
    while (true) {
        if (pos < 0 || acch) return 1u;
        const int k = pos - int(gl_SubgroupInvocationID);
        uint st = 2u;  // before tile 0: an empty inclusive prefix
        T v = SCAN_IDENTITY;
        bool h = false;
        if (k >= 0) {
            read_desc(uint(k), st, v, h);
            if (forced(tile, uint(k))) st = 0u;
        }
        const uvec4 notReady = subgroupBallot(st == 0u);
        const uvec4 stops = subgroupBallot(st == 2u || (st == 1u && h));
        const uint f = notReady == uvec4(0u) ? gl_SubgroupSize : subgroupBallotFindLSB(notReady);
        const uint s = stops == uvec4(0u) ? gl_SubgroupSize : subgroupBallotFindLSB(stops);
        const uint m = s < f ? s + 1u : f;  // ready lanes to fold, nearest first
        if (m > 0u && SEG == 0u) {
            // Unsegmented: the order of the fold does not matter.
            acc = SCAN_OP(subgroup_total(gl_SubgroupInvocationID < m ? v : SCAN_IDENTITY), acc);
            pos -= int(m);
            polls = 0u;
        } else if (m > 0u) {
            // Fold lanes [0, m) in time order: reverse the lanes, scan, take the last.
            const uint src = gl_SubgroupSize - 1u - gl_SubgroupInvocationID;
            T rv = subgroupShuffle(v, src);
            bool rh = subgroupShuffle(h, src);
            if (src >= m) { rv = SCAN_IDENTITY; rh = false; }
            subgroup_inclusive(rv, rh);
            T wv;
            bool wh;
            subgroup_last(rv, rh, wv, wh);
            combine(wv, wh, acc, acch);
            pos -= int(m);
            polls = 0u;
        }
        if (s < f) return 1u;  // reached an inclusive prefix or a segment head
        if (m == 0u && (forced(tile, uint(pos)) || ++polls > SPIN)) return 2u;
    }
    return 1u;
}

// Decoupled look-back with fallback for global tile `tile` > 0, run by subgroup 0: returns
// the tile's exclusive prefix. Unpublished predecessors are reduced by this subgroup.
T look_back(uint tile) {
    int pos = int(tile) - 1;
    T acc = SCAN_IDENTITY;
    bool acch = false;
    while (poll_window(tile, pos, acc, acch) == 2u) {
        T fv;
        bool fh;
        reduce_tile(uint(pos) - pc.tileBase, fv, fh);
        combine(fv, fh, acc, acch);
        pos -= 1;
        if (gl_SubgroupInvocationID == 0u) atomicAdd(status[pc.statsIndex], 1u, SCOPE, gl_StorageSemanticsNone, gl_SemanticsRelaxed);
    }
    return acc;
}

void main() {
    const uint sg = gl_SubgroupID;
    const uint lane = gl_SubgroupInvocationID;
    // Tickets: the first here, each next one fetched while the current tile is in flight and
    // broadcast with the tile's last barrier (a held ticket is always being worked on).
    if (gl_LocalInvocationIndex == 0u) {
        s_tile = TAIL ? 0u : atomicAdd(status[pc.counterIndex], 1u, SCOPE, gl_StorageSemanticsNone, gl_SemanticsRelaxed);
    }
    barrier();
    uint tile = s_tile;
    const uint fullTiles = TAIL ? 1u : pc.tiles;
    for (uint j = 0u; j < pc.tilesPerGroup && tile < fullTiles; ++j) {
        if (TAIL) tile = pc.tiles - 1u;  // the last tile of the chunk
        const uint global = pc.tileBase + tile;
        const uint first = tile * TILE + gl_LocalInvocationIndex * ITEMS;

        T x[ITEMS];
        uint heads;
        load_items(first, x, heads);
        T iv;
        bool ih;
        thread_scan(x, heads, iv, ih);
        T ev;
        bool eh = false;
        if (SEG == 0u) {
            ev = subgroup_exclusive(iv);
            const T total = subgroup_total(iv);
            if (lane == 0u) s_v[sg] = t_bits(total);
        } else {
            subgroup_inclusive(iv, ih);
            subgroup_shift(iv, ih, ev, eh);
            if (lane == subgroupMax(lane)) {
                s_v[sg] = t_bits(iv);
                s_h[sg] = ih ? 1u : 0u;
            }
        }
        barrier();

        if (sg == 0u) {
            T av, tilePrefix = SCAN_IDENTITY;
            bool ah;
            scan_subgroup_totals(true, av, ah);
            if (PASS == 1u) {
                if (lane == 0u) {
                    spine[2u * global] = t_bits(av);
                    spine[2u * global + 1u] = ah ? 1u : 0u;
                }
            } else if (PASS == 2u) {
                tilePrefix = T_FROM(spine[2u * global]);
            } else {
                const bool complete = global == 0u || ah;  // nothing before this tile matters
                if (lane == 0u) publish(global, complete ? 2u : 1u, av, ah);
                if (global > 0u) {
                    tilePrefix = look_back(global);
                    if (!complete && lane == 0u) {
                        T incl = av;
                        bool inclH = ah;
                        combine(tilePrefix, false, incl, inclH);
                        publish(global, 2u, incl, ah);
                    }
                }
            }
            if (lane == 0u) {
                s_prefix = t_bits(tilePrefix);
                // No ticket past this workgroup's last tile: a taken ticket must be worked on.
                s_tile = TAIL || j + 1u == pc.tilesPerGroup ? ~0u
                       : atomicAdd(status[pc.counterIndex], 1u, SCOPE, gl_StorageSemanticsNone, gl_SemanticsRelaxed);
            }
        }
        barrier();
        const uint next = s_tile;
        if (PASS == 1u) { tile = next; continue; }

        // This invocation's prefix: the tile's, the subgroups' before it, then the lanes'.
        T sp = T_FROM(s_v[sg]);
        bool sph = SEG != 0u && s_h[sg] != 0u;
        combine(T_FROM(s_prefix), false, sp, sph);
        combine(sp, sph, ev, eh);
        const T pre = ev;
        T y[ITEMS];
        T before = pre;
        for (uint k = 0u; k < ITEMS; ++k) {
            const bool seen = (heads & ((2u << k) - 1u)) != 0u;
            const T incl = seen ? x[k] : SCAN_OP(pre, x[k]);
            y[k] = EXCLUSIVE ? ((((heads >> k) & 1u) != 0u) ? SCAN_IDENTITY : before) : incl;
            before = incl;
            if (TAIL && pc.writeTotal != 0u && first + k + 1u == pc.n) out_s[pc.n] = t_bits(incl);
        }
        if (!TAIL || first + ITEMS <= pc.n) {
            for (uint v = 0u; v < ITEMS / 4u; ++v) {
                store4(first / 4u + v, uvec4(t_bits(y[4u * v]), t_bits(y[4u * v + 1u]),
                                             t_bits(y[4u * v + 2u]), t_bits(y[4u * v + 3u])));
            }
        } else {
            for (uint k = 0u; k < ITEMS; ++k) {
                if (first + k < pc.n) out_s[first + k] = t_bits(y[k]);
            }
        }
        // Nobody reads s_v, s_h, s_prefix of this tile past here; the next tile's first
        // barrier orders their reuse.
        tile = next;
    }
}

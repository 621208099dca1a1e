#!/usr/bin/env python3
"""Communication cost model of the sequence-parallel schemes at 8..256 ranks (docs/MPI.md).

Bytes per rank per step are the papers' formulas, which vkattn-bench checks against the
bytes it measures (`bytes/rank/step` next to `expected`, equal for ring, Ulysses and hybrid);
time per step = latency + bytes / bandwidth (alpha-beta model, one link per rank, no
congestion), and for ring the step is max(compute, communication) since the next K/V block
moves while the current one computes.

  python3 Tools/mpi-cost-model.py                       # defaults: S = 1M tokens, 25 GB/s, 5 us
  python3 Tools/mpi-cost-model.py --bandwidth 50 --seq 262144 --heads 32 --kv-heads 8 --dim 128
  python3 Tools/mpi-cost-model.py --tokens-per-rank 8192  # weak scaling: S grows with N
"""
import argparse
import math

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--seq", type=int, default=1 << 20, help="sequence length S (strong scaling)")
p.add_argument("--tokens-per-rank", type=int, help="weak scaling: S = N * this")
p.add_argument("--heads", type=int, default=32, help="query heads Hq")
p.add_argument("--kv-heads", type=int, default=8, help="key/value heads Hkv")
p.add_argument("--dim", type=int, default=128, help="head dimension D (also d_k = d_v for linear attention)")
p.add_argument("--bytes", type=int, default=2, help="bytes per element b (2: f16/bf16, 4: f32); states are fp32")
p.add_argument("--bandwidth", type=float, default=25.0, help="link bandwidth per rank, GB/s")
p.add_argument("--latency", type=float, default=5.0, help="per-message latency, microseconds")
p.add_argument("--tflops", type=float, default=100.0, help="attention throughput per rank, TFLOP/s (ring overlap)")
p.add_argument("--segments", type=int, default=4, help="ZeCO: state segments pipelined along the chain")
a = p.parse_args()

beta = a.bandwidth * 1e9
alpha = a.latency * 1e-6
hq, hkv, d, b = a.heads, a.kv_heads, a.dim, a.bytes


def ms(seconds):
    return f"{seconds * 1e3:9.3f}"


def mib(n):
    return f"{n / 2**20:9.2f}"


print(f"alpha = {a.latency} us, beta = {a.bandwidth} GB/s per rank, Hq {hq} Hkv {hkv} D {d} b {b}, "
      f"{'S = N x ' + str(a.tokens_per_rank) if a.tokens_per_rank else 'S = ' + str(a.seq)}")
print("MiB = bytes one rank sends; ms = communication time (ring: per step, and the step with compute overlapped)")
header = ["N", "S/N", "ring MiB/step", "ring ms/step", "attn ms/step", "ring step ms",
          "Ulysses MiB", "Ulysses ms", "LASP-2 MiB", "LASP-2 ms", "ZeCO MiB", "ZeCO ms"]
print(" ".join(f"{h:>13}" for h in header))
for n in [8, 16, 32, 64, 128, 256]:
    s = n * a.tokens_per_rank if a.tokens_per_rank else a.seq
    t = s / n
    # Ring (Liu et al. 2023): each of N-1 steps sends one K and one V block of the local tokens.
    ring = 2 * t * hkv * d * b
    ring_comm = alpha + ring / beta
    # One block pair of attention: (S/N)^2 Hq D, 4 flops per multiply-add pair (QK^T and PV);
    # causal zigzag halves it on average.
    attn = 4 * t * t * hq * d / (a.tflops * 1e12)
    ring_step = max(attn, ring_comm)
    # Ulysses (Jacobs et al. 2023): all-to-all of Q, K, V in and O out; each rank sends
    # (N-1)/N of its local tensors: constant when S and N grow together.
    uly = (n - 1) / n * t * (2 * hq + 2 * hkv) * d * b
    uly_time = 2 * alpha * (n - 1) + uly / beta
    # LASP-2 (Sun et al. 2025): one all-gather of the d_k x d_v state (+ decay) per head;
    # a rank receives N-1 states, independent of S (ring all-gather: N-1 steps).
    state = hq * d * (d + 1) * 4
    lasp2 = (n - 1) * state
    lasp2_time = (n - 1) * (alpha + state / beta)
    # ZeCO (2025): all-scan chain, exactly one state per hop, pipelined in k segments:
    # (N - 1 + k - 1) segment steps.
    k = a.segments
    zeco = state
    zeco_time = (n - 1 + k - 1) * (alpha + state / k / beta)
    row = [str(n), str(int(t)), mib(ring), ms(ring_comm), ms(attn), ms(ring_step),
           mib(uly), ms(uly_time), mib(lasp2), ms(lasp2_time), mib(zeco), ms(zeco_time)]
    print(" ".join(f"{c:>13}" for c in row))

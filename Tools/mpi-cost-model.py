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

Linear attention (LASP, LASP-2, ZeCO) moves states, not tokens: one value is the d_k x d_v
state plus the d_k decays per head, B H d_k (d_v + 1) fp32, independent of S. The second
table compares LASP's chain, LASP-2's all-gather (the paper; the in-process point-to-point
all-gather), LASP-2 on MPI_Iexscan (what `--backend mpi` runs: Open MPI's libnbc default is
a linear chain, OMPI_MCA_coll_libnbc_iexscan_algorithm=2 recursive doubling) and ZeCO's
pipelined chain; each pass (forward, backward) runs one such scan. The last table lists the
bytes vkattn-bench measured on this machine next to the same formula.
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
p.add_argument("--batch", type=int, default=1, help="linear attention: sequences B (states are per sequence)")
p.add_argument("--dk", type=int, help="linear attention: key dimension d_k (default --dim)")
p.add_argument("--dv", type=int, help="linear attention: value dimension d_v (default --dim)")
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
NS = [8, 16, 32, 64, 128, 256]
header = ["N", "S/N", "ring MiB/step", "ring ms/step", "attn ms/step", "ring step ms", "Ulysses MiB", "Ulysses ms"]
print(" ".join(f"{h:>13}" for h in header))
for n in NS:
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
    row = [str(n), str(int(t)), mib(ring), ms(ring_comm), ms(attn), ms(ring_step), mib(uly), ms(uly_time)]
    print(" ".join(f"{c:>13}" for c in row))


def state_bytes(batch, heads, dk, dv):
    """One scan value: the d_k x d_v state and the d_k decays per head, fp32."""
    return batch * heads * dk * (dv + 1) * 4


dk = a.dk or d
dv = a.dv or d
state = state_bytes(a.batch, hq, dk, dv)
k = a.segments
print()
print(f"linear attention, one scan (forward or backward): B {a.batch} H {hq} d_k {dk} d_v {dv}: "
      f"one state B H d_k (d_v+1) 4 = {state} B, independent of S")
header = ["N", "LASP MiB", "LASP ms", "LASP-2 MiB", "LASP-2 ms", "Iexscan MiB", "Iexscan ms",
          "rdbl MiB", "rdbl ms", "ZeCO MiB", "ZeCO ms"]
print(" ".join(f"{h:>11}" for h in header))
for n in NS:
    # LASP (Sun et al. 2024): the serial chain; each rank but the last sends one state,
    # N-1 hops one after the other.
    lasp_time = (n - 1) * (alpha + state / beta)
    # LASP-2 (Sun et al. 2025): one all-gather of every rank's state; a rank sends (and
    # receives) N-1 states (ring all-gather: N-1 steps of one state).
    lasp2 = (n - 1) * state
    lasp2_time = (n - 1) * (alpha + state / beta)
    # LASP-2 on MPI_Iexscan, Open MPI libnbc linear (default): a chain, one state per rank,
    # N-1 hops; recursive doubling: ceil(log2 N) rounds of one state each way.
    rounds = math.ceil(math.log2(n))
    rdbl = rounds * state
    rdbl_time = rounds * (alpha + state / beta)
    # ZeCO (2025): all-scan chain, exactly one state per hop, pipelined in k segments:
    # (N - 1 + k - 1) segment steps.
    zeco_time = (n - 1 + k - 1) * (alpha + state / k / beta)
    row = [str(n), mib(state), ms(lasp_time), mib(lasp2), ms(lasp2_time), mib(state), ms(lasp_time),
           mib(rdbl), ms(rdbl_time), mib(state), ms(zeco_time)]
    print(" ".join(f"{c:>11}" for c in row))

# Bytes one rank sent per call, measured by vkattn-bench on lavapipe (docs/MPI.md, 2026-12-03):
# (command, N, B, H, d_k, d_v, states per rank by the formula, measured bytes).
MEASURED = [
    ("lasp2 --ranks 2 (in-process all-gather)", 2, 1, 4, 32, 32, 1, 16896),
    ("lasp2 --ranks 4 (in-process all-gather)", 4, 1, 4, 32, 32, 3, 50688),
    ("mpirun -np 2 lasp2 --backend mpi (MPI_Iexscan)", 2, 1, 4, 32, 32, 1, 16896),
    ("mpirun -np 4 lasp --backend mpi (chain)", 4, 1, 4, 32, 32, 1, 16896),
    ("mpirun -np 4 lasp2 --backend mpi (MPI_Iexscan)", 4, 1, 4, 32, 32, 1, 16896),
    ("mpirun -np 4 zeco --backend mpi (4 segments)", 4, 1, 4, 32, 32, 1, 16896),
    ("mpirun -np 4 lasp2 --backend mpi --heads 8 --dk 64 --dv 64", 4, 1, 8, 64, 64, 1, 133120),
    ("mpirun -np 4 zeco --backend mpi --heads 8 --dk 64 --dv 64", 4, 1, 8, 64, 64, 1, 133120),
]
print()
print("measured by vkattn-bench (bytes one rank sends per call, max over ranks) against the formula:")
for what, n, bb, hh, kk, vv, states, measured in MEASURED:
    formula = states * state_bytes(bb, hh, kk, vv)
    print(f"  {what:<62} N {n}: measured {measured:>7} B, formula {states} x B H d_k (d_v+1) 4 = {formula:>7} B"
          f"  {'ok' if formula == measured else 'MISMATCH'}")

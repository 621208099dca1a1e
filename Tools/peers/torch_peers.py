#!/usr/bin/env python3
"""PyTorch peers for vkattn-bench, measured on CUDA, written in the bench's JSON Lines schema.

Usage on a GPU machine (see ../shared GPU notes):
    vkattn-bench suite --plan-json > plan.json
    python3 Tools/peers/torch_peers.py --plan plan.json > peers.json
    vkattn-bench suite --json > vkattn.json
    vkattn-bench compare vkattn.json peers.json

For each step of the plan it measures the peer of the op with the same shapes:
  attention  torch.nn.functional.scaled_dot_product_attention, flash and cuDNN backends
             (forward, and backward when the step asks for it; GQA through enable_gqa)
  decode     scaled_dot_product_attention with few queries against the cache
  copy       torch.Tensor.copy_ (device to device)
  scan       torch.cumsum
  spmm       torch.sparse CSR @ dense (cuSPARSE)
Timing: CUDA events, warm-up, median/min/max of the timed runs; random data. Config keys and
FLOP/byte counts follow vkattn-bench's so that `vkattn-bench compare` can match the rows.
"""
import argparse
import json
import math
import statistics
import sys


def parse_step(args):
    """The subset of vkattn-bench options the peers need, from a step's argument list."""
    p = argparse.ArgumentParser(add_help=False)
    for name in ["--seq", "--seq-k", "--heads", "--kv-heads", "--dim", "--batch", "--queries", "--cache",
                 "--rows", "--cols", "--n", "--count"]:
        p.add_argument(name, type=int)
    for name in ["--dtype", "--bytes", "--density", "--distribution", "--window", "--format"]:
        p.add_argument(name)
    for name in ["--causal", "--backward", "--exclusive"]:
        p.add_argument(name, action="store_true")
    known, _ = p.parse_known_args(args)
    return known


def parse_bytes(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.upper().rstrip("B")
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def time_ms(torch, fn, warmup=5, iterations=20):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(iterations):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        samples.append(start.elapsed_time(end))
    return statistics.median(samples), min(samples), max(samples), len(samples)


def row(op, device, config, path, timing, **values):
    median, lo, hi, runs = timing
    out = {"op": op, "device": device, "config": config, "path": path, "median_ms": median,
           "min_ms": lo, "max_ms": hi, "check": "skipped", "runs": runs}
    out.update({k: v for k, v in values.items() if v is not None})
    return out


DTYPES = {"f16": "float16", "bf16": "bfloat16", "f32": "float32"}


def attention_rows(torch, F, device_name, o, iterations):
    dtype = getattr(torch, DTYPES[o.dtype or "f32"])
    b, sq, h, d = o.batch or 1, o.seq, o.heads or 8, o.dim or 64
    sk = o.seq_k or sq
    hkv = o.kv_heads or h
    q = torch.randn(b, h, sq, d, device="cuda", dtype=dtype, requires_grad=o.backward)
    k = torch.randn(b, hkv, sk, d, device="cuda", dtype=dtype, requires_grad=o.backward)
    v = torch.randn(b, hkv, sk, d, device="cuda", dtype=dtype, requires_grad=o.backward)
    kept = 0.5 if o.causal and sq == sk else 1.0
    if o.causal and sq != sk:
        kept = sum(max(0, min(sk, i + sk - sq + 1)) for i in range(sq)) / (sq * sk)
    flops = 4 * b * h * sq * sk * d * kept
    config = {"batch": b, "seq_q": sq, "seq_k": sk, "heads": h, "kv_heads": hkv, "dim": d,
              "dtype": o.dtype or "f32", "mask": "causal" if o.causal else "none"}
    backends = {"flash": torch.nn.attention.SDPBackend.FLASH_ATTENTION,
                "cudnn": torch.nn.attention.SDPBackend.CUDNN_ATTENTION}
    rows = []
    for name, backend in backends.items():
        try:
            with torch.nn.attention.sdpa_kernel(backend):
                def forward():
                    return F.scaled_dot_product_attention(q, k, v, is_causal=o.causal, enable_gqa=hkv != h)
                out = forward()
                t = time_ms(torch, forward, iterations=iterations)
                rows.append(row("attention.forward", device_name, config, f"torch-sdpa-{name}", t,
                                tflops=flops / (t[0] * 1e9)))
                if o.backward:
                    grad = torch.randn_like(out)
                    t = time_ms(torch, lambda: torch.autograd.grad(forward(), (q, k, v), grad), iterations=iterations)
                    # The measured call runs the forward again; subtract it as FlashAttention's benchmarks do.
                    fwd_ms = rows[-1]["median_ms"]
                    bwd = (max(t[0] - fwd_ms, 1e-6), max(t[1] - fwd_ms, 1e-6), max(t[2] - fwd_ms, 1e-6), t[3])
                    rows.append(row("attention.backward", device_name, config, f"torch-sdpa-{name}", bwd,
                                    tflops=2.5 * flops / (bwd[0] * 1e9)))
        except RuntimeError as error:  # backend not available for this shape or dtype
            print(f"peers: {name} skipped for {config}: {error}", file=sys.stderr)
    return rows


def decode_rows(torch, F, device_name, o, iterations):
    dtype = getattr(torch, DTYPES[o.dtype or "f32"])
    b, nq, h, d, cache = o.batch or 1, o.queries or 1, o.heads or 8, o.dim or 64, o.cache or 16384
    hkv = o.kv_heads or h
    q = torch.randn(b, h, nq, d, device="cuda", dtype=dtype)
    k = torch.randn(b, hkv, cache, d, device="cuda", dtype=dtype)
    v = torch.randn(b, hkv, cache, d, device="cuda", dtype=dtype)
    t = time_ms(torch, lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=hkv != h), iterations=iterations)
    element = 4 if dtype == torch.float32 else 2
    moved = 2 * k.numel() * element + 2 * q.numel() * element + b * nq * h * 4
    config = {"batch": b, "queries": nq, "cache": cache, "heads": h, "kv_heads": hkv, "dim": d,
              "dtype": o.dtype or "f32", "mask": "causal" if o.causal else "none", "packed": False}
    return [row("attention.decode", device_name, config, "torch-sdpa", t, gbps=moved / (t[0] * 1e6),
                tflops=4 * b * nq * cache * h * d / (t[0] * 1e9))]


def copy_rows(torch, device_name, o, iterations):
    n = parse_bytes(o.bytes or "256M") // 4
    src = torch.rand(n, device="cuda")
    dst = torch.empty_like(src)
    t = time_ms(torch, lambda: dst.copy_(src), iterations=iterations)
    return [row("copy", device_name, {"bytes": n * 4}, "torch-copy", t, gbps=2 * n * 4 / (t[0] * 1e6))]


def scan_rows(torch, device_name, o, iterations):
    n = o.count or (1 << 28)
    x = torch.rand(n, device="cuda")
    t = time_ms(torch, lambda: torch.cumsum(x, 0), iterations=iterations)
    return [row("scan", device_name, {"count": n, "dtype": "f32", "exclusive": bool(o.exclusive)}, "torch-cumsum", t,
                gbps=2 * n * 4 / (t[0] * 1e6))]


def spmm_rows(torch, device_name, o, iterations):
    rows_, cols, n = o.rows or 16384, o.cols or 16384, o.n or 64
    density = float(o.density or "0.01")
    nnz_target = int(rows_ * cols * density)
    if (o.distribution or "uniform") == "power-law":
        weights = torch.arange(1, rows_ + 1, dtype=torch.float64) ** -1.0
        lengths = torch.clamp((weights / weights.sum() * nnz_target).round().long(), max=cols)
    else:
        lengths = torch.full((rows_,), nnz_target // rows_, dtype=torch.long)
    crow = torch.zeros(rows_ + 1, dtype=torch.long)
    crow[1:] = torch.cumsum(lengths, 0)
    columns = torch.cat([torch.randperm(cols)[:int(length)].sort().values for length in lengths])
    values = torch.rand(int(crow[-1]))
    a = torch.sparse_csr_tensor(crow, columns, values, (rows_, cols)).cuda()
    b = torch.rand(cols, n, device="cuda")
    t = time_ms(torch, lambda: a @ b, iterations=iterations)
    config = {"rows": rows_, "cols": cols, "density": density, "distribution": o.distribution or "uniform",
              "n": n, "dtype": "f32", "format": "csr", "alpha": True, "beta": False}
    return [row("spmm", device_name, config, "torch-csr-cusparse", t, tflops=2 * int(crow[-1]) * n / (t[0] * 1e12))]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", required=True, help="output of `vkattn-bench suite --plan-json`")
    parser.add_argument("--iterations", type=int, default=20)
    options = parser.parse_args()
    import torch
    import torch.nn.functional as F
    if not torch.cuda.is_available():
        sys.exit("peers: CUDA is not available")
    device_name = torch.cuda.get_device_name()
    steps = json.load(open(options.plan))
    for index, step in enumerate(steps):
        print(f"[{index + 1}/{len(steps)}] peers {step['command']} {' '.join(step['args'])}", file=sys.stderr)
        o = parse_step(step["args"])
        handlers = {
            "attention": lambda: attention_rows(torch, F, device_name, o, options.iterations),
            "decode": lambda: decode_rows(torch, F, device_name, o, options.iterations),
            "copy": lambda: copy_rows(torch, device_name, o, options.iterations),
            "scan": lambda: scan_rows(torch, device_name, o, options.iterations),
            "spmm": lambda: spmm_rows(torch, device_name, o, options.iterations),
        }
        if step["command"] not in handlers or (step["command"] == "spmm" and o.format == "bsr"):
            print(f"peers: no peer for {step['command']} {' '.join(step['args'])}", file=sys.stderr)
            continue
        for result in handlers[step["command"]]():
            print(json.dumps(result, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()

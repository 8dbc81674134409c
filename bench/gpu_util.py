"""Timing helpers shared by the Python benchmarks (bench/jamba_period.py, bench/blackmamba_2p8b.py)."""
import time

import torch


def on_cuda(device):
    return str(device).startswith('cuda')


def copy_bandwidth(device):
    """Device-to-device copy bandwidth in bytes/s, counting bytes read and written (as the issue's 3.98 TB/s);
    0 off CUDA."""
    if not on_cuda(device):
        return 0.0
    n = 2 * 1024 ** 3
    a = torch.empty(n, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(10):
        b.copy_(a)
    e.record()
    torch.cuda.synchronize()
    del a, b
    return 2 * n * 10 / (s.elapsed_time(e) / 1000)


def timed_ms(fn, repeat, device):
    """The best of `repeat` calls of fn, in ms (CUDA events on CUDA, a clock elsewhere)."""
    best = float('inf')
    if not on_cuda(device):
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            best = min(best, (time.perf_counter() - t) * 1000)
        return best
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(repeat):
        torch.cuda.synchronize()
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        best = min(best, s.elapsed_time(e))
    return best


def decode_row(batch, times_ms):
    """A decode result: the median step of `times_ms` at this batch size."""
    times = sorted(times_ms)
    ms = times[len(times) // 2]
    return dict(batch=batch, msPerStep=ms, tokensPerSecond=batch * 1000 / ms, steps=len(times))

"""CUDA-event timings and the CUPTI per-kernel breakdown shared by the tools/gpu benchmarks."""
import statistics

import torch


def time_us(fn, per_batch=20, batches=11, warm=3):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(batches):
        e0.record()
        for _ in range(per_batch):
            fn()
        e1.record()
        e1.synchronize()
        ts.append(e0.elapsed_time(e1) * 1000.0 / per_batch)
    return statistics.median(ts)


def graph_time_us(fn, per_graph=50, reps=11):
    """Time of one fn() when per_graph of them are replayed as a CUDA graph: what a decode step
    costs inside ORT's captured graph (a launch through ctypes takes longer than a kernel of a few
    microseconds, so time_us would measure the host there)."""
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(per_graph):
            fn()
    g.replay()
    torch.cuda.synchronize()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(reps):
        e0.record()
        g.replay()
        e1.record()
        e1.synchronize()
        ts.append(e0.elapsed_time(e1) * 1000.0 / per_graph)
    return statistics.median(ts)


def kernel_profile(step, log, reps=64):
    """Per-kernel GPU time of step() (CUPTI through torch.profiler), averaged over reps, logged
    longest first; returns the total in us."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            step()
        torch.cuda.synchronize()
    total = 0.0
    for ev in sorted(prof.key_averages(), key=lambda e: -(getattr(e, "device_time_total", 0) or 0)):
        t = getattr(ev, "device_time_total", 0) or 0
        if t:
            total += t / reps
            log(f"      {t / reps:7.2f} us  {ev.count / reps:4.1f}x  {ev.key[:110]}")
    log(f"      {total:7.2f} us  total")
    return total

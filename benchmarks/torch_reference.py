"""The optional reference of ``benchmarks/ops.py``: ``torchvision.ops.deform_conv2d``, timed on the same inputs
when torch and torchvision are importable (not in requirements.txt)."""

from __future__ import annotations

import numpy as np
from timing import Timer


def torchvision_deform(x, w, offsets, mask, threads: int, timer: Timer) -> dict | None:
    """torchvision ``deform_conv2d`` on the same data (NCHW, offsets (dy, dx) per tap), or None without torch."""
    try:
        import torch
        import torchvision
        from torchvision.ops import deform_conv2d
    except ImportError:
        return None
    torch.set_num_threads(threads)
    batch, out_h, out_w = offsets.shape[:3]
    tx = torch.tensor(np.asarray(x)).permute(0, 3, 1, 2).contiguous().requires_grad_()
    tw = torch.tensor(np.asarray(w)).permute(3, 2, 0, 1).contiguous().requires_grad_()
    # (batch, out_h, out_w, groups, kh, kw, 2) -> (batch, groups * kh * kw * 2, out_h, out_w).
    to = torch.tensor(np.asarray(offsets)).reshape(batch, out_h, out_w, -1).permute(0, 3, 1, 2).contiguous()
    tm = torch.tensor(np.asarray(mask)).reshape(batch, out_h, out_w, -1).permute(0, 3, 1, 2).contiguous()
    to, tm = to.requires_grad_(), tm.requires_grad_()

    def forward():
        with torch.no_grad():
            return deform_conv2d(tx, to, tw, padding=1, mask=tm)

    def forward_backward():
        for tensor in (tx, tw, to, tm):
            tensor.grad = None  # as a training step does; accumulating into old gradients would add work
        y = deform_conv2d(tx, to, tw, padding=1, mask=tm)
        y.backward(torch.ones_like(y))
        return y

    y = forward().permute(0, 2, 3, 1).numpy()
    return {
        "version": f"torch {torch.__version__}, torchvision {torchvision.__version__}",
        "threads": torch.get_num_threads(),
        "fwd_ms": 1e3 * timer.host(forward), "fwd_bwd_ms": 1e3 * timer.host(forward_backward), "output": y,
    }

"""Markdown tables of the results of ``benchmarks/ops.py``, one function per section (results in, text out)."""

from __future__ import annotations

from collections.abc import Sequence

from timing import table


def conv_tables(runs: dict[str, dict]) -> str:
    """Throughput per convolution path, then the speedup of Eigen (the flag) over YNNPACK."""
    rows = []
    # The fraction is of the best float32 matmul measured in any of the runs (XLA's or numpy's BLAS).
    peak = max(max(run["matmul_gflops"].values()) for run in runs.values())
    for path, run in runs.items():
        for r in run["layers"]:
            rows.append([
                r["layer"], r["shape"], path, r["gflop"], r["fwd_ms"], r["fwd_gflops"],
                f"{100 * r['fwd_gflops'] / peak:.0f}%", r["fwd_bwd_ms"], r["fwd_bwd_gflops"],
                f"{100 * r['fwd_bwd_gflops'] / peak:.0f}%",
            ])
    text = table(
        ["layer", "x -> out ch.", "conv path", "GFLOP fwd", "fwd ms", "fwd GFLOP/s", "of matmul",
         "fwd+bwd ms", "fwd+bwd GFLOP/s", "of matmul"],
        rows,
    )
    peaks = "; ".join(
        f"{path} process: XLA {run['matmul_gflops']['xla']:.0f}, numpy {run['matmul_gflops']['numpy']:.0f} GFLOP/s"
        for path, run in runs.items()
    )
    text += (f"\n\nfloat32 2048x2048 @ 2048x2048 matmul in the same run ({peaks}); \"of matmul\" is the fraction "
             f"of the best of these, {peak:.0f} GFLOP/s. fwd+bwd counts 3x the forward FLOPs.")
    if len(runs) == 2:
        eigen, ynn = runs["Eigen (flag)"]["layers"], runs["YNNPACK"]["layers"]
        speed = [
            [e["layer"], e["fwd_ms"], y["fwd_ms"], y["fwd_ms"] / e["fwd_ms"], e["fwd_bwd_ms"], y["fwd_bwd_ms"],
             y["fwd_bwd_ms"] / e["fwd_bwd_ms"]]
            for e, y in zip(eigen, ynn, strict=True)
        ]
        total = [sum(r[i] for r in speed) for i in (1, 2, 4, 5)]
        speed.append(["**all layers**", total[0], total[1], total[1] / total[0], total[2], total[3],
                      total[3] / total[2]])
        text += "\n\n" + table(
            ["layer", "Eigen fwd ms", "YNNPACK fwd ms", "flag speedup fwd", "Eigen fwd+bwd ms",
             "YNNPACK fwd+bwd ms", "flag speedup fwd+bwd"],
            speed,
        )
    return text


def crossover(kernels: Sequence[int], fft_ms: Sequence[float], direct_ms: Sequence[float]) -> int | None:
    """Smallest k from which the FFT is faster at every larger measured k (None if it never is at the end)."""
    best = None
    for k, f, d in reversed(list(zip(kernels, fft_ms, direct_ms, strict=True))):
        if f >= d:
            break
        best = k
    return best


def fft_tables(result: dict) -> str:
    parts = []
    ranks = [name for name in ("1D", "2D", "3D") if name in result]  # runs before 3D was measured have 1D, 2D
    for name in ranks:
        r = result[name]
        rows = [
            [k, r["direct_fwd"][i], r["fft_fwd"][i], r["direct_fwd"][i] / r["fft_fwd"][i],
             r["direct_fwd_bwd"][i], r["fft_fwd_bwd"][i], r["direct_fwd_bwd"][i] / r["fft_fwd_bwd"][i]]
            for i, k in enumerate(r["kernels"])
        ]
        parts.append(
            f"{name}, {r['shape']}, padding SAME:\n\n"
            + table(["k", "correlate fwd ms", "fft_conv fwd ms", "FFT speedup", "correlate fwd+bwd ms",
                     "fft_conv fwd+bwd ms", "FFT speedup"], rows)
        )
    lines = [
        f"- **{name}: FFT wins from k = {result[name]['crossover_fwd']} (forward), "
        f"k = {result[name]['crossover_fwd_bwd']} (forward+backward)**"
        for name in ranks
    ]
    return "\n\n".join(parts) + "\n\nCrossover (smallest k from which `fft_conv` is faster at every larger k):\n\n" + (
        "\n".join(lines)
    )


def separable_tables(result: dict) -> str:
    first = [
        [r["k"], r["depthwise_fwd_ms"], r["separable_fwd_ms"], r["depthwise_fwd_ms"] / r["separable_fwd_ms"],
         r["depthwise_fwd_bwd_ms"], r["separable_fwd_bwd_ms"], r["depthwise_fwd_bwd_ms"] / r["separable_fwd_bwd_ms"],
         r["flop_ratio_separable"]]
        for r in result["rows"]
    ]
    second = [
        [r["k"], r["dense_fwd_ms"], r["dw_separable_fwd_ms"], r["dense_fwd_ms"] / r["dw_separable_fwd_ms"],
         r["dense_fwd_bwd_ms"], r["dw_separable_fwd_bwd_ms"], r["dense_fwd_bwd_ms"] / r["dw_separable_fwd_bwd_ms"],
         r["flop_ratio_dw_separable"]]
        for r in result["rows"]
    ]
    c = result["channels"]
    return (
        f"`separable_conv` (two 1D passes) vs `correlate(groups={c})` with the outer-product kxk kernel, "
        f"{result['shape']}, SAME:\n\n"
        + table(["k", "depthwise kxk fwd ms", "separable fwd ms", "speedup", "depthwise fwd+bwd ms",
                 "separable fwd+bwd ms", "speedup", "FLOP ratio"], first)
        + f"\n\n`depthwise_separable` (kxk depthwise + {c}x{c} pointwise) vs dense `correlate` kxk "
        f"{c}->{c}, {result['shape']}, SAME:\n\n"
        + table(["k", "dense fwd ms", "dw-separable fwd ms", "speedup", "dense fwd+bwd ms",
                 "dw-separable fwd+bwd ms", "speedup", "FLOP ratio"], second)
    )


def local_tables(result: dict) -> str:
    base = result["rows"][0]
    rows = [
        [r["op"], f"{r['params']:,}", r["fwd_ms"], r["fwd_bwd_ms"], r["fwd_mb"], r["fwd_bwd_mb"],
         r["fwd_bwd_mb"] / base["fwd_bwd_mb"]]
        for r in result["rows"]
    ]
    return f"{result['shape']}; memory = temp + argument + output bytes of the compiled program:\n\n" + table(
        ["op", "parameters", "fwd ms", "fwd+bwd ms", "fwd MiB", "fwd+bwd MiB", "fwd+bwd memory vs shared"], rows
    )


def _faster(first_ms: float, second_ms: float, first: str, second: str) -> str:
    return first if first_ms < second_ms else second


def tiled_tables(result: dict) -> str:
    rows = [
        [r["tile"], r["overhead"], r["phase_conv_fwd_ms"], r["einsum_fwd_ms"], r["phase_conv_fwd_bwd_ms"],
         r["einsum_fwd_bwd_ms"], r["einsum_fwd_bwd_ms"] / r["phase_conv_fwd_bwd_ms"],
         _faster(r["phase_conv_fwd_bwd_ms"], r["einsum_fwd_bwd_ms"], "sub-pixel", "einsum"),
         "sub-pixel" if r["overhead"] <= result["max_overhead"] else "einsum"]
        for r in result["rows"]
    ]
    return f"{result['shape']}, tile t x t:\n\n" + table(
        ["t", "flop overhead", "sub-pixel fwd ms", "einsum fwd ms", "sub-pixel fwd+bwd ms", "einsum fwd+bwd ms",
         "einsum / sub-pixel fwd+bwd", "faster fwd+bwd", f"chosen (overhead <= {result['max_overhead']:g})"], rows
    )


def grouped_tables(result: dict) -> str:
    rows = [
        [r["per_group"], r["groups"], r["shifted_fwd_ms"], r["block_diagonal_fwd_ms"], r["shifted_fwd_bwd_ms"],
         r["block_diagonal_fwd_bwd_ms"], r["block_diagonal_fwd_bwd_ms"] / r["shifted_fwd_bwd_ms"],
         _faster(r["shifted_fwd_bwd_ms"], r["block_diagonal_fwd_bwd_ms"], "shifted", "block-diagonal"),
         "shifted" if r["per_group"] <= result["max_channels"] else "block-diagonal"]
        for r in result["rows"]
    ]
    return f"{result['shape']}:\n\n" + table(
        ["channels per group", "groups", "shifted fwd ms", "block-diag. fwd ms", "shifted fwd+bwd ms",
         "block-diag. fwd+bwd ms", "block-diag. / shifted fwd+bwd", "faster fwd+bwd",
         f"chosen (<= {result['max_channels']} channels)"], rows
    )


def deformable_tables(result: dict) -> str:
    rows = [
        ["`correlate` (same shape, no offsets)", result["correlate_fwd_ms"], result["correlate_fwd_bwd_ms"], "", ""],
        ["`deformable_conv`", result["jax_fwd_ms"], result["jax_fwd_bwd_ms"], "", ""],
    ]
    torch_result = result.get("torch")
    if torch_result:
        rows.append([
            f"torchvision `deform_conv2d` ({torch_result['threads']} threads)", torch_result["fwd_ms"],
            torch_result["fwd_bwd_ms"], f"{torch_result['fwd_ms'] / result['jax_fwd_ms']:.2f}x",
            f"{torch_result['fwd_bwd_ms'] / result['jax_fwd_bwd_ms']:.2f}x",
        ])
        note = (f"{torch_result['version']}; max |deformable_conv - deform_conv2d| = "
                f"{torch_result['max_abs_diff']:.1e} on these inputs.")
    else:
        note = "torch is not importable here: no torchvision comparison (see the reproduce line above)."
    return f"{result['shape']}:\n\n" + table(
        ["op", "fwd ms", "fwd+bwd ms", "torchvision / ours fwd", "torchvision / ours fwd+bwd"], rows
    ) + f"\n\n{note}"


def depthwise_tables(runs: dict[str, dict]) -> str:
    rows = []
    for path, r in runs.items():
        rows.append([path, r["lax_fwd_ms"], r["correlate_fwd_ms"], r["lax_fwd_ms"] / r["correlate_fwd_ms"],
                     r["lax_fwd_bwd_ms"], r["correlate_fwd_bwd_ms"], r["lax_fwd_bwd_ms"] / r["correlate_fwd_bwd_ms"]])
    shape = next(iter(runs.values()))["shape"]
    return f"{shape}:\n\n" + table(
        ["conv path", "lax fwd ms", "correlate fwd ms", "speedup", "lax fwd+bwd ms", "correlate fwd+bwd ms",
         "speedup"], rows
    )


def pool_tables(result: dict) -> str:
    rows = [[r["pool"], r["fwd_ms"], r["ref_fwd_ms"], r["fwd_bwd_ms"], r["ref_fwd_bwd_ms"]] for r in result["rows"]]
    return f"{result['shape']}:\n\n" + table(
        ["pool", "cnn.ops fwd ms", "reduce_window fwd ms", "cnn.ops fwd+bwd ms", "reduce_window fwd+bwd ms"], rows
    )

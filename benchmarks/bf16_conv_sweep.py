"""Which 3D convolutions get a wrong bf16 weight gradient on this CPU (issue 19, part 2: training in bf16).

    python benchmarks/bf16_conv_sweep.py [--grid full|test] [--threads 1] [--guarded] [--what weight_grad|input_grad|forward]
                                         [--save NAME]

For each case (kernel, stride, channels, batch, input shape) one ``nn.Conv3d`` (or ``ConvTranspose3d``) takes
the float32 weight gradient of ``mean(y^2)`` once and the bf16-autocast one three times, with allocations in
between that move the allocator around. A case is *bad* when the bf16 gradients differ from each other, are not
finite, or differ from float32's by more than 5 % of its largest value (bf16 rounding gives < 2 %). The cases
run in a child process; one that aborts it (oneDNN's bf16 kernel corrupts the heap for some shapes) is reported
as ``crash`` and the sweep goes on in a new child from the next case. ``--guarded`` runs the bf16 passes inside
`medssl.train.bf16_convs.float32_where_bf16_is_unsound`, as training does: then every case must be good.
``--what forward``: the output of an inference-mode forward pass instead (what `--runtime torch` computes in
bf16), ``input_grad``: the input's gradient (what the layer below receives), same criteria. Prints one JSON object (the bad cases, counts, the CPU); ``--save NAME`` writes it to ``results/NAME.json``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

from medssl.train.bf16_convs import conv3d_output_shape

RESULTS = Path(__file__).resolve().parent / "results"
Case = Tuple[bool, object, object, int, int, int, Tuple[int, int, int]]  # transposed, kernel, stride, ic, oc, b, DHW


def grid(name: str) -> List[Case]:
    """``test``: each unsound class of `bf16_convs` and its neighbours (46 cases); ``full``: every side of 1-24
    for eight kernel/stride pairs, two channel/batch settings (all shapes a kernel fits: ~1900 cases)."""
    cases: List[Case] = []
    if name == "test":
        shapes_s1 = [(2, 2, 2), (2, 8, 8), (2, 1, 8), (3, 3, 5), (4, 8, 8), (1, 8, 8), (8, 8, 1)]
        shapes_s2 = [(3, 1, 2), (6, 1, 8), (8, 8, 1), (2, 2, 2), (4, 2, 2), (4, 4, 4), (8, 8, 8), (6, 6, 6)]
        for ic, oc, b in [(16, 16, 2), (32, 64, 1)]:
            cases += [(False, 3, 1, ic, oc, b, s) for s in shapes_s1]
            cases += [(False, 3, 2, ic, oc, b, s) for s in shapes_s2]
            cases += [(False, (3, 3, 1), 1, ic, oc, b, s) for s in [(2, 8, 8), (4, 8, 8)]]
            cases += [(False, (1, 3, 3), (1, 2, 2), ic, oc, b, s) for s in [(2, 8, 8), (4, 1, 8)]]
            cases += [(True, 2, 2, ic, oc, b, s) for s in [(1, 4, 4), (2, 2, 2), (4, 4, 4)]]
        cases += [(False, 3, 1, 1, 16, 2, (16, 16, 16)), (False, 16, 16, 1, 32, 1, (32, 32, 32))]  # stem, patch embed
        return cases
    for transposed, k, s in [(False, 3, 1), (False, 3, 2), (False, (1, 3, 3), 1), (False, (3, 3, 1), 1),
                             (False, (1, 3, 3), (1, 2, 2)), (False, 2, 2), (False, 4, 4), (True, 2, 2)]:
        for ic, oc, b in [(16, 16, 2), (32, 64, 1)]:
            for dhw in itertools.product([1, 2, 3, 4, 5, 6, 8, 12], [1, 2, 3, 8], [1, 2, 8, 24]):
                kernel = (k,) * 3 if isinstance(k, int) else k
                if transposed or min(conv3d_output_shape(dhw, kernel, s, padding(kernel))) >= 1:
                    cases.append((transposed, k, s, ic, oc, b, dhw))  # not: inputs smaller than the kernel
    return cases


def padding(kernel: Tuple[int, int, int]) -> Tuple[int, int, int]:
    """The sweep's padding: 1 along sides of kernel 3 (as the networks' 3x3x3 convolutions), else 0."""
    return tuple(n // 2 if n == 3 else 0 for n in kernel)


def run_cases(cases: List[Case], start: int, guarded: bool, what: str = "weight_grad") -> None:
    """Child: from ``start`` on, a JSON line ``{"i": ...}`` before and a result line after each case; ``what``:
    the weight gradient (training), the input's (``input_grad``) or an inference-mode forward pass (``forward``)."""
    import torch

    from medssl.train.bf16_convs import float32_where_bf16_is_unsound

    def weight_grads(conv, x0, amp: bool, calls: int, of_input: bool = False):
        grads = []
        for r in range(calls):
            _ = [torch.randn(997 * (r + 1)) for _ in range(3)]
            conv.zero_grad(set_to_none=True)
            x = x0.clone().requires_grad_()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp), \
                    float32_where_bf16_is_unsound(amp and guarded):
                y = conv(x)
            loss = y.float().square().mean()
            if of_input:  # the input's gradient alone: the weight-gradient kernel does not run
                grads.append(torch.autograd.grad(loss, x)[0])
            else:
                loss.backward()
                grads.append(conv.weight.grad.clone())
        return grads, tuple(y.shape[2:])

    def input_grads(conv, x0, amp: bool, calls: int):
        return weight_grads(conv, x0, amp, calls, of_input=True)

    def outputs(conv, x0, amp: bool, calls: int):
        ys = []
        for r in range(calls):
            _ = [torch.randn(997 * (r + 1)) for _ in range(3)]
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                ys.append(conv(x0.clone()).float())
        return ys, tuple(ys[0].shape[2:])

    measure = {"forward": outputs, "input_grad": input_grads, "weight_grad": weight_grads}[what]
    for i in range(start, len(cases)):
        transposed, k, s, ic, oc, b, dhw = cases[i]
        print(json.dumps({"i": i}), flush=True)
        torch.manual_seed(0)
        if transposed:
            conv = torch.nn.ConvTranspose3d(ic, oc, k, stride=s)
        else:
            kernel = (k,) * 3 if isinstance(k, int) else k
            conv = torch.nn.Conv3d(ic, oc, k, stride=s, padding=padding(kernel))
        x0 = torch.randn(b, ic, *dhw)
        ref, out = measure(conv, x0, False, 1)
        got, _ = measure(conv, x0, True, 3)
        scale = float(ref[0].abs().max()) + 1e-12
        err = max(float((g.float() - ref[0]).abs().max()) / scale for g in got)
        same = all(torch.equal(g, got[0]) for g in got)
        finite = all(bool(torch.isfinite(g).all()) for g in got)
        print(json.dumps({"i": i, "out": out, "error": err if finite else None, "repeats": same,
                          "ok": bool(finite and same and err <= 0.05)}), flush=True)


def sweep(grid_name: str, threads: int, guarded: bool, what: str = "weight_grad") -> dict:
    cases, results, start = grid(grid_name), {}, 0
    while start < len(cases):
        child = subprocess.run([sys.executable, __file__, "--child", str(start), "--grid", grid_name,
                                "--threads", str(threads), "--what", what] + (["--guarded"] if guarded else []),
                               capture_output=True, text=True)
        last = start
        for line in child.stdout.splitlines():
            rec = json.loads(line)
            last = rec["i"]
            if "ok" in rec:
                results[last] = rec
        if child.returncode == 0:
            break
        results[last] = {"i": last, "ok": False, "crash": child.returncode}
        start = last + 1
    bad = [{"case": describe(cases[i]), **{k: v for k, v in r.items() if k != "i"}}
           for i, r in sorted(results.items()) if not r["ok"]]
    return {"grid": grid_name, "what": what, "threads": threads, "guarded": guarded, "cases": len(cases),
            "bad": len(bad), "crashes": sum("crash" in b for b in bad), "bad_cases": bad}


def describe(case: Case) -> str:
    transposed, k, s, ic, oc, b, dhw = case
    kind = "ConvTranspose3d" if transposed else "Conv3d"
    return f"{kind}({ic}->{oc}, kernel {k}, stride {s}) on ({b}, {ic}, {', '.join(map(str, dhw))})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", default="full", choices=["full", "test"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--guarded", action="store_true")
    ap.add_argument("--what", default="weight_grad", choices=["weight_grad", "input_grad", "forward"])
    ap.add_argument("--save")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.child is not None:
        run_cases(grid(args.grid), args.child, args.guarded, args.what)
        return
    from medssl.inference.runtimes import cpu_description

    report = {"cpu": cpu_description(), "torch": torch.__version__, **sweep(args.grid, args.threads, args.guarded, args.what)}
    print(json.dumps(report, indent=1))
    if args.save:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{args.save}.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()

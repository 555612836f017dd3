"""Model benchmark (`arbbot bench model`): the NumPy LSTM's forward and training speed against `torch.nn.LSTM`.

The measurement runs in a child process started with one BLAS/OpenMP thread (`OPENBLAS_NUM_THREADS=1` must be set
before NumPy loads), and PyTorch, when importable, is timed in the same process with `torch.set_num_threads(1)`.

- `forward_ms.b1`, `forward_ms.b64`: one `LSTM.forward` on (batch, T=32, F=12) inputs, H=32, float32.
- `train_samples_per_s`: batch 64 through `forward_train`, the heads' loss, `backward`, gradient clipping and an
  Adam step, as the trainer does them; torch does the same with `nn.LSTM`, three `nn.Linear` heads and `Adam`.
- `torch_ratio.b1`, `.b64` = our time / torch's time (at most 1 means at least as fast); `.train` = our
  samples/s / torch's samples/s (at least 1 means at least as fast).

OpenBLAS's kernels set the GEMM speed. When the environment forces them (`OPENBLAS_CORETYPE`, as this project's
machines do: `Haswell`, AVX2, on CPUs with AVX-512), the headline figures and goals are for the environment as
given, and a second run without the variable reports the same figures under `detected_kernels`.

Every figure is the best of `repeat` rounds, each the mean over many calls, with NumPy and torch alternating
within a round so that a busy machine slows both alike; the medians are reported beside. The top-level figures are
for one layer; `layers` repeats them for 1 and 2 layers to show that a layer more costs about as much again.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import glob
import importlib.metadata
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from bot.bench.machine import cpu_model

FEATURES = 12
HIDDEN = 32
TIME = 32
TRAIN_BATCH = 64
LAYER_COUNTS = (1, 2)
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
CALLS = {"b1": 300, "b64": 60, "train": 15}  # calls per timed round: ~20-40 ms each
GOALS = {
    "forward_ms.b1": ("max", 0.15),
    "forward_ms.b64": ("max", 0.5),
    "train_samples_per_s": ("min", 30_000.0),
    "torch_ratio.b1": ("max", 1.3),
    "torch_ratio.b64": ("max", 1.0),
    "torch_ratio.train": ("min", 0.8),
}
"""Issue 5's goals for one layer: ("max", x) means the value must be at most x, ("min", x) at least x."""
CORETYPE_VARIABLE = "OPENBLAS_CORETYPE"
DETECTED_KEYS = ("forward_ms", "train_samples_per_s", "torch_ratio", "torch", "goals")
"""What `detected_kernels` repeats from the run with the kernels OpenBLAS picks for the CPU itself."""


def run_model_bench(repeat: int = 7, calls_scale: float = 1.0, torch: bool = True) -> dict[str, Any]:
    """Measure in a one-thread child process and return the JSON-ready result.

    `calls_scale` scales the calls per round (a smoke run uses less than 1); `torch=False` skips PyTorch.
    """
    if repeat < 1 or calls_scale <= 0:
        raise ValueError("repeat must be at least 1 and calls_scale positive")
    env = {**os.environ, **dict.fromkeys(THREAD_VARIABLES, "1")}
    command = [sys.executable, "-m", "bot.bench.model", "--repeat", str(repeat), "--calls-scale", str(calls_scale)]
    if not torch:
        command.append("--no-torch")
    result = _run_child(command, env)
    if CORETYPE_VARIABLE in env:
        env.pop(CORETYPE_VARIABLE)
        detected = _run_child(command, env)
        result["detected_kernels"] = {key: detected[key] for key in DETECTED_KEYS if key in detected}
        result["detected_kernels"]["openblas_core"] = detected["machine"]["openblas_core"]
    return result


def _run_child(command: list[str], env: Mapping[str, str]) -> dict[str, Any]:
    done = subprocess.run(command, env=env, capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"model benchmark failed:\n{done.stderr.decode(errors='replace')}")
    result: dict[str, Any] = orjson.loads(done.stdout)
    return result


def _measure(repeat: int, calls_scale: float, use_torch: bool) -> dict[str, Any]:
    """Run every measurement in this process; it must have started with one BLAS thread."""
    import numpy as np

    machine = _machine(np.__version__)  # before the run: its load average says whether other work shared the machine
    torch_mod = _torch() if use_torch else None
    if torch_mod is not None:
        machine["torch"] = torch_mod.__version__
    calls = {key: max(1, round(count * calls_scale)) for key, count in CALLS.items()}
    layers = {str(n): _measure_layers(n, repeat, calls, torch_mod) for n in LAYER_COUNTS}
    one = layers["1"]
    result: dict[str, Any] = {
        "benchmark": "model",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "config": {
            "features": FEATURES,
            "hidden": HIDDEN,
            "time": TIME,
            "train_batch": TRAIN_BATCH,
            "dtype": "float32",
            "repeat": repeat,
            "calls_per_round": calls,
            "statistic": "best round (medians beside)",
        },
        "forward_ms": one["numpy"]["forward_ms"],
        "train_samples_per_s": one["numpy"]["train_samples_per_s"],
    }
    if "torch" in one:
        result["torch_ratio"] = one["torch_ratio"]
        result["torch"] = {key: one["torch"][key] for key in ("forward_ms", "train_samples_per_s")}
    result["layers"] = layers
    result["goals"] = _goals(result)
    return result


def _torch() -> Any:
    """Import PyTorch with one thread, or return None when it is not installed."""
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    torch.set_num_threads(1)
    return torch


def _measure_layers(num_layers: int, repeat: int, calls: Mapping[str, int], torch_mod: Any) -> dict[str, Any]:
    """Time forward at batch 1 and 64 and training at batch 64, NumPy then torch in every round."""
    import numpy as np

    rng = np.random.default_rng(num_layers)
    ours = _NumpySide(num_layers, rng)
    theirs = _TorchSide(torch_mod, num_layers, ours) if torch_mod is not None else None
    inputs = {
        "b1": rng.normal(size=(1, TIME, FEATURES)).astype(np.float32),
        "b64": rng.normal(size=(64, TIME, FEATURES)).astype(np.float32),
    }
    batch = rng.normal(size=(TRAIN_BATCH, TIME, FEATURES)).astype(np.float32)
    targets = {
        "p_profitable": (rng.random(TRAIN_BATCH) < 0.3).astype(np.float32),
        "lifetime_log_ms": rng.normal(7.0, 1.0, TRAIN_BATCH).astype(np.float32),
        "edge_bps": rng.normal(0.0, 3.0, TRAIN_BATCH).astype(np.float32),
    }
    max_abs_diff = None  # the same weights on both sides, before training moves them apart
    if theirs is not None:
        max_abs_diff = float(np.abs(ours.forward(inputs["b64"]) - theirs.forward(inputs["b64"])).max())
    jobs: dict[str, list[tuple[str, Callable[[], object]]]] = {}
    for key, x in inputs.items():
        jobs[key] = [("numpy", _bind(ours.forward, x))]
        if theirs is not None:
            jobs[key].append(("torch", _bind(theirs.forward, x)))
    jobs["train"] = [("numpy", lambda: ours.train_step(batch, targets))]
    if theirs is not None:
        jobs["train"].append(("torch", lambda: theirs.train_step(batch, targets)))
    seconds: dict[tuple[str, str], list[float]] = {}
    for key, sides in jobs.items():
        for side, job in sides:
            for _ in range(max(2, calls[key] // 10)):  # warm-up: buffers, caches, allocator
                job()
            seconds[(side, key)] = []
    for _ in range(repeat):
        for key, sides in jobs.items():
            for side, job in sides:
                seconds[(side, key)].append(_time_per_call(job, calls[key]))
    out: dict[str, Any] = {"numpy": _figures(seconds, "numpy")}
    if theirs is not None:
        mine, ref = out["numpy"], _figures(seconds, "torch")
        out["torch"] = ref
        out["torch_ratio"] = {
            "b1": round(mine["forward_ms"]["b1"] / ref["forward_ms"]["b1"], 3),
            "b64": round(mine["forward_ms"]["b64"] / ref["forward_ms"]["b64"], 3),
            "train": round(mine["train_samples_per_s"] / ref["train_samples_per_s"], 3),
        }
        out["max_abs_diff_b64"] = max_abs_diff
    return out


def _bind(function: Callable[[Any], object], argument: Any) -> Callable[[], object]:
    return lambda: function(argument)


def _time_per_call(job: Callable[[], object], calls: int) -> float:
    gc.collect()
    start = time.perf_counter_ns()
    for _ in range(calls):
        job()
    return (time.perf_counter_ns() - start) / calls / 1e9


def _figures(seconds: Mapping[tuple[str, str], list[float]], side: str) -> dict[str, Any]:
    def best_ms(key: str) -> float:
        return round(min(seconds[(side, key)]) * 1e3, 4)

    def median_ms(key: str) -> float:
        return round(statistics.median(seconds[(side, key)]) * 1e3, 4)

    train = seconds[(side, "train")]
    return {
        "forward_ms": {"b1": best_ms("b1"), "b64": best_ms("b64")},
        "train_samples_per_s": round(TRAIN_BATCH / min(train), 1),
        "train_step_ms": best_ms("train"),
        "median": {
            "forward_ms": {"b1": median_ms("b1"), "b64": median_ms("b64")},
            "train_samples_per_s": round(TRAIN_BATCH / statistics.median(train), 1),
        },
    }


class _NumpySide:
    """arbbot's LSTM, heads and Adam, stepped as the trainer steps them."""

    def __init__(self, num_layers: int, rng: Any) -> None:
        import numpy as np

        from bot.model import LSTM, Adam, Heads

        self.lstm = LSTM.init(FEATURES, HIDDEN, num_layers, rng, np.float32)
        self.heads = Heads.init(HIDDEN, rng, np.float32)
        self.adam = Adam({**self.lstm.params, **self.heads.params}, lr=1e-3, on_step=self.lstm.parameters_changed)

    def forward(self, x: Any) -> Any:
        return self.lstm.forward(x)

    def train_step(self, x: Any, targets: dict[str, Any]) -> None:
        from bot.model import clip_grad_norm

        outputs, cache = self.lstm.forward_train(x)
        _, head_grads, d_last = self.heads.loss(outputs[:, -1], targets)
        grads = self.lstm.backward_last_step(cache, d_last)
        all_grads = {**grads, **head_grads}
        clip_grad_norm(all_grads, 1.0)
        self.adam.step(all_grads)


class _TorchSide:
    """`torch.nn.LSTM` with our weights, three linear heads and Adam, stepped the same way."""

    def __init__(self, torch: Any, num_layers: int, ours: _NumpySide) -> None:
        self.torch = torch
        self.lstm = torch.nn.LSTM(FEATURES, HIDDEN, num_layers=num_layers, batch_first=True)
        self.lstm.load_state_dict({name: torch.from_numpy(v.copy()) for name, v in ours.lstm.state_dict().items()})
        self.heads = torch.nn.Linear(HIDDEN, 3)
        self.adam = torch.optim.Adam([*self.lstm.parameters(), *self.heads.parameters()], lr=1e-3)
        self.bce = torch.nn.BCEWithLogitsLoss()
        self.huber = torch.nn.HuberLoss(delta=1.0)

    def forward(self, x: Any) -> Any:
        with self.torch.no_grad():
            outputs, _ = self.lstm(self.torch.from_numpy(x))
        return outputs.numpy()

    def train_step(self, x: Any, targets: dict[str, Any]) -> None:
        torch = self.torch
        outputs, _ = self.lstm(torch.from_numpy(x))
        z = self.heads(outputs[:, -1])
        loss = (
            self.bce(z[:, 0], torch.from_numpy(targets["p_profitable"]))
            + self.huber(z[:, 1], torch.from_numpy(targets["lifetime_log_ms"]))
            + self.huber(z[:, 2], torch.from_numpy(targets["edge_bps"]))
        )
        self.adam.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*self.lstm.parameters(), *self.heads.parameters()], 1.0)
        self.adam.step()


def _goals(result: Mapping[str, Any]) -> dict[str, Any]:
    """Return each goal with the measured value and whether it is met (None when torch was not measured)."""
    goals: dict[str, Any] = {}
    for key, (kind, bound) in GOALS.items():
        value: Any = result
        for part in key.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        met = None if value is None else (value <= bound if kind == "max" else value >= bound)
        goals[key] = {kind: bound, "value": value, "met": met}
    return goals


def _machine(numpy_version: str) -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": numpy_version,
        "openblas_core": _openblas_core(),
        "threads": {name: os.environ.get(name) for name in THREAD_VARIABLES},
        "openblas_coretype": os.environ.get(CORETYPE_VARIABLE),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "arbbot": importlib.metadata.version("arbbot"),
    }


def _openblas_core() -> str | None:
    """Return the kernel family OpenBLAS picked for this CPU (it sets the GEMM speed), if NumPy bundles OpenBLAS."""
    import numpy as np

    for path in sorted(glob.glob(os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs", "*openblas*"))):
        library = ctypes.CDLL(path)
        for symbol in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename", "openblas_get_corename"):
            function = getattr(library, symbol, None)
            if function is not None:
                function.restype = ctypes.c_char_p
                name = function()
                return name.decode() if isinstance(name, bytes) else None
    return None


def format_summary(result: Mapping[str, Any]) -> str:
    """Render the one-layer figures, torch's and the goals as a short Markdown table."""
    lines = ["| figure | value | goal | met |", "|---|---:|---:|:---:|"]
    for key, goal in result["goals"].items():
        kind, bound = ("≤", goal["max"]) if "max" in goal else ("≥", goal["min"])
        value = "n/a" if goal["value"] is None else f"{goal['value']:,.3f}"
        met = {True: "yes", False: "no", None: "n/a"}[goal["met"]]
        lines.append(f"| {key} | {value} | {kind} {bound:,} | {met} |")
    for layers, row in result["layers"].items():
        ours = row["numpy"]
        line = (
            f"{layers} layer(s): forward {ours['forward_ms']['b1']:.3f} ms (B=1), {ours['forward_ms']['b64']:.3f} ms "
            f"(B=64), training {ours['train_samples_per_s']:,.0f} samples/s"
        )
        if "torch" in row:
            ref = row["torch"]
            line += (
                f"; torch {ref['forward_ms']['b1']:.3f} / {ref['forward_ms']['b64']:.3f} ms, "
                f"{ref['train_samples_per_s']:,.0f} samples/s"
            )
        lines.append("")
        lines.append(line)
    detected = result.get("detected_kernels")
    if detected is not None:
        line = (
            f"With the kernels OpenBLAS picks for this CPU ({detected['openblas_core']}, "
            f"{CORETYPE_VARIABLE} unset): forward {detected['forward_ms']['b1']:.3f} ms (B=1), "
            f"{detected['forward_ms']['b64']:.3f} ms (B=64), training {detected['train_samples_per_s']:,.0f} samples/s"
        )
        if "torch_ratio" in detected:
            ratio = detected["torch_ratio"]
            line += f"; torch ratios {ratio['b1']} / {ratio['b64']} / {ratio['train']}"
        unmet = [key for key, goal in detected["goals"].items() if goal["met"] is False]
        line += f"; goals not met: {', '.join(unmet) or 'none'}"
        lines += ["", line]
    machine = result["machine"]
    coretype = machine.get("openblas_coretype")
    kernels = str(machine["openblas_core"]) + (f", set by {CORETYPE_VARIABLE}={coretype}" if coretype else "")
    lines += [
        "",
        f"Measured {result['measured_at']} on {machine['cpu']} ({machine['cores']} cores, one thread), "
        f"NumPy {machine['numpy']} (OpenBLAS kernels: {kernels}), "
        f"torch {machine.get('torch', 'absent')}; "
        f"1-minute load average {machine['load_average_1m']} at start.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Measure in this process (started with one BLAS thread) and print the result as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--calls-scale", type=float, default=1.0)
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args(argv)
    unset = [name for name in THREAD_VARIABLES if os.environ.get(name) != "1"]
    if unset:
        raise SystemExit(f"set {', '.join(unset)}=1 before starting: use run_model_bench or `arbbot bench model`")
    result = _measure(args.repeat, args.calls_scale, not args.no_torch)
    sys.stdout.buffer.write(orjson.dumps(result))


if __name__ == "__main__":
    main()

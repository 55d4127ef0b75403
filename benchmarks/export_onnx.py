"""`layerwise export` on the shipped models: how long the export takes, how big the file is, how
close onnxruntime is to PyTorch, and how fast each answers on the CPU, measured in the same run.

For each pretrained model: the export's CPU time (torch.onnx.export(dynamo=True) plus the check),
the file's size, the max |ONNX - PyTorch| over a batch of 64 real-shaped inputs, and the CPU time
per example (a language model's: a whole context of block_size tokens) of PyTorch eager (torch.no_grad, one thread) and of onnxruntime (CPU provider, one
intra-op thread) at batch 1 and batch 64, with their ratio. With --data-root, the accuracy of the
MNIST file on the first --n test digits, preprocessed from its metadata alone (the README's
example), against PyTorch's.

    OMP_NUM_THREADS=1 python benchmarks/export_onnx.py [--data-root DIR] [--n 2000]
        [--out benchmarks/results/export_onnx_<date>.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _env import environment

MODELS = ("mnist-convnet", "cifar10-convnet", "shakespeare-gpt")


def cpu_per_example(fn, batch: int, min_seconds: float = 1.0) -> float:
    """CPU seconds per example of fn() on a batch of ``batch``, after one warm-up call."""
    fn()
    n, t0 = 0, time.process_time()
    while time.process_time() - t0 < min_seconds:
        fn()
        n += 1
    return (time.process_time() - t0) / (n * batch)


def bench(name: str, out_dir: Path) -> dict:
    import onnxruntime as ort
    import torch

    from layerwise.deploy.export import export_run, input_spec
    from layerwise.train.inference import _info
    from layerwise.train.run import load_model
    from layerwise.models.pretrained import resolve_pretrained

    t0 = time.process_time()
    result = export_run(f"pretrained:{name}", out=out_dir / f"{name}.onnx")
    export_cpu = time.process_time() - t0
    model, meta = load_model(resolve_pretrained(f"pretrained:{name}"))
    spec = input_spec(model, meta, _info(meta))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(result.path), opts, providers=["CPUExecutionProvider"])
    row = {"model": name, "export_cpu_s": round(export_cpu, 2), "file_mb": round(result.bytes / 1e6, 3)}
    for batch in (1, 64):
        g = torch.Generator().manual_seed(0)
        if spec.kind == "token_ids":  # a language model: whole contexts of block_size tokens
            x = torch.randint(0, model.config["num_classes"], (batch, model.config["in_shape"][0]), generator=g)
        else:
            (x,) = spec.sample(batch, g)
        feed = {sess.get_inputs()[0].name: x.numpy()}
        with torch.no_grad():
            want = model(x).numpy()
            t_torch = cpu_per_example(lambda: model(x), batch)
        got = sess.run(None, feed)[0]
        t_ort = cpu_per_example(lambda: sess.run(None, feed), batch)
        row[f"max_abs_diff_b{batch}"] = float(np.abs(got - want).max())
        row[f"torch_ms_per_example_b{batch}"] = round(t_torch * 1e3, 4)
        row[f"onnxruntime_ms_per_example_b{batch}"] = round(t_ort * 1e3, 4)
        row[f"speedup_b{batch}"] = round(t_torch / t_ort, 2)
    return row


def mnist_accuracy(path: Path, data_root: str, n: int) -> dict:
    """Top-1 of the exported MNIST file on the first n test digits, fed from its metadata alone."""
    import onnxruntime as ort
    import torch

    from layerwise.insight.runs import open_run

    run = open_run("pretrained:mnist-convnet", device="cpu", data_root=data_root)
    x, y = run.examples("test", n)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = {k: json.loads(v) for k, v in sess.get_modelmeta().custom_metadata_map.items()}
    pre = meta["preprocessing"]
    raw = (x * run.info.scale).numpy()  # the dataset's raw 0..255 pixels
    inp = (raw / pre["scale"] - np.reshape(pre["mean"], (1, -1, 1, 1))) / np.reshape(pre["std"], (1, -1, 1, 1))
    pred = sess.run(None, {"input": inp.astype(np.float32)})[0].argmax(1)
    with torch.no_grad():
        ref = run.pixel_model()(x).argmax(1).numpy()
    return {"n": len(y), "onnx_accuracy": float((pred == y.numpy()).mean()),
            "torch_accuracy": float((ref == y.numpy()).mean()), "same_predictions": int((pred == ref).sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", default="", help="folder holding mnist/ (optional: the accuracy check)")
    ap.add_argument("--n", type=int, default=2000, help="MNIST test digits for the accuracy check")
    ap.add_argument("--out", default="", help="write the results as JSON here")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [bench(name, Path(tmp)) for name in MODELS]
        for r in rows:
            print(json.dumps(r))
        acc = mnist_accuracy(Path(tmp) / "mnist-convnet.onnx", args.data_root, args.n) if args.data_root else None
    if acc:
        print(json.dumps(acc))
    if args.out:
        import onnx
        import onnxruntime
        import onnxscript

        env = environment() | {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                               "onnxscript": onnxscript.__version__}
        Path(args.out).write_text(json.dumps({"env": env, "rows": rows, "mnist": acc}, indent=2) + "\n")


if __name__ == "__main__":
    main()

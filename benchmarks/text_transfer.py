"""Transfer learning for text: a byte-level GPT pretrained on unlabelled text, fine-tuned as the
encoder of a sentence classifier on Movie Review (MR) fold 0, against the same classifier from
scratch with the same fine-tuning budget, in the same run.

  1. pretrain:  `gpt` (n_layer x n_embd, learned positions, context --block-size bytes) on the MR
                sentences of the training folds, one per line, labels dropped (never the test
                fold; --shakespeare appends Tiny Shakespeare), byte tokenizer, --pretrain-steps;
  2. finetune:  `text-transformer` of the same trunk on text-classes movie-reviews, folds 10,
                fold 0, byte tokenizer, max_len --block-size, from the LM
                (--model.init_from=<LM run>: train/adapters.py gpt-to-text-transformer);
  3. scratch:   the same text-transformer, command and budget, from random weights.

GPT-1 (Radford et al. 2018) and ULMFiT (Howard & Ruder 2018) are the recipe; the classifier here
reads the sentence bidirectionally and mean-pools (see train/adapters.py for why).

    python benchmarks/text_transfer.py --data-root DIR [--seeds 0 1 2] [--pretrain-steps N]
        [--epochs E] [--shakespeare] [--out benchmarks/results/text_transfer_<date>.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _env import environment

Q = ["--run.plots=false", "--run.tensorboard=false", "--train.threads=1"]
MR = ["--data.name=text-classes", "--data.path=movie-reviews", "--data.folds=10", "--data.fold=0",
      "--data.tokenizer=byte"]


def unlabelled_training_text(data_root: Path, fold: int = 0, folds: int = 10) -> tuple[str, int]:
    """The MR sentences of the training folds (all but ``fold`` of ``folds``, exactly the split
    text-classes makes), one per line, without their labels; and their count."""
    from layerwise.config import Config, apply_overrides
    from layerwise.data.textclass import read_text_classes, split_text_classes

    opts = apply_overrides(Config(), [f"--data.root={data_root}", *MR, f"--data.folds={folds}",
                                      f"--data.fold={fold}"]).data
    texts, labels, n_train, _ = read_text_classes(data_root / "movie-reviews", opts)
    tr, _, _ = split_text_classes(labels, n_train, opts)
    return "".join(texts[i] + "\n" for i in sorted(tr)), len(tr)


def trunk(args: argparse.Namespace) -> list[str]:
    return [f"--model.n_layer={args.n_layer}", f"--model.n_head={args.n_head}", f"--model.n_embd={args.n_embd}"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", required=True, help="folder holding movie-reviews/rt-polarity.{pos,neg}")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--block-size", type=int, default=128, help="bytes (63%% of MR sentences fit; the longest has 267)")
    p.add_argument("--pretrain-steps", type=int, default=500)
    p.add_argument("--pretrain-batch", type=int, default=32)
    p.add_argument("--epochs", type=float, default=2, help="fine-tuning epochs, the same for scratch")
    p.add_argument("--lr", type=float, default=1e-3, help="fine-tuning AdamW rate, the same for scratch")
    p.add_argument("--shakespeare", action="store_true", help="append Tiny Shakespeare to the unlabelled text")
    p.add_argument("--out", default=f"benchmarks/results/text_transfer_{time.strftime('%Y-%m-%d')}.json")
    args = p.parse_args()
    import layerwise

    root = Path(args.data_root)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        text, n_sentences = unlabelled_training_text(root)
        if args.shakespeare:
            text += (root / "tinyshakespeare/input.txt").read_text(encoding="utf-8")
        (tmp / "unlabelled.txt").write_text(text, encoding="utf-8")
        print(f"unlabelled text: {n_sentences} MR training sentences{' + Tiny Shakespeare' if args.shakespeare else ''}"
              f", {len(text.encode()):,} bytes", flush=True)
        head = [*Q, f"--data.root={root}", f"--run.root={tmp / 'runs'}"]
        classify = [*head, *MR, "--model.name=text-transformer", *trunk(args), f"--data.block_size={args.block_size}",
                    "--data.batch_size=32", "--optim.name=adamw", f"--optim.lr={args.lr}", "--optim.weight_decay=0.1",
                    "--optim.schedule=cosine", "--optim.warmup_fraction=0.05", "--optim.clip_grad_norm=1.0",
                    f"--train.epochs={args.epochs:g}", "--train.eval_every=0"]
        for seed in args.seeds:
            t0 = time.perf_counter()
            lm = layerwise.fit(None, *head, "--model.name=gpt", *trunk(args), "--data.name=text", f"--data.path={tmp / 'unlabelled.txt'}",
                               "--data.tokenizer=byte", f"--data.block_size={args.block_size}",
                               f"--data.batch_size={args.pretrain_batch}", "--data.val_fraction=0.05",
                               "--optim.name=adamw", "--optim.lr=0.002", "--optim.betas=[0.9,0.99]",
                               "--optim.weight_decay=0.1", "--optim.schedule=cosine", "--optim.warmup_fraction=0.03",
                               "--optim.min_lr_ratio=0.1", "--optim.clip_grad_norm=1.0",
                               f"--train.max_steps={args.pretrain_steps}", "--train.eval_every=0",
                               "--train.eval_every_steps=0", f"--train.seed={seed}", show_progress=False)
            pre_s = time.perf_counter() - t0
            bpb = lm.get("test_bits_per_byte", lm.get("test_bpb"))
            print(f"seed {seed}: pretrained {args.pretrain_steps} steps in {pre_s:.0f} s, validation "
                  f"bits/byte {bpb}", flush=True)
            row = {"seed": seed, "pretrain_s": round(pre_s, 1), "pretrain_val_bits_per_byte": bpb,
                   "pretrain_summary": {k: v for k, v in lm.items() if k.startswith("test_")}}
            for name, extra in (("scratch", []), ("finetuned", [f"--model.init_from={lm['run_dir']}"])):
                t0 = time.perf_counter()
                s = layerwise.fit(None, *classify, f"--train.seed={seed}", *extra, show_progress=False)
                row[name] = s["test_accuracy"]
                row[f"{name}_s"] = round(time.perf_counter() - t0, 1)
                print(f"  {name}: test accuracy {s['test_accuracy']:.4f} ({row[f'{name}_s']:.0f} s)", flush=True)
            row["difference"] = row["finetuned"] - row["scratch"]
            rows.append(row)
    mean = {k: statistics.mean(r[k] for r in rows) for k in ("scratch", "finetuned", "difference")}
    print(f"\nMR fold 0 test accuracy, mean of seeds {args.seeds}: scratch {mean['scratch']:.4f}, "
          f"fine-tuned from the LM {mean['finetuned']:.4f}, difference {100 * mean['difference']:+.2f} points")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python", *["<data>" if a == args.data_root else a for a in sys.argv]])
    out.write_text(json.dumps({"environment": environment(), "command": command, "args": vars(args) | {
        "data_root": "<data>"}, "classifier": classify[len(head):], "rows": rows, "mean": mean}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

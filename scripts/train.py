"""Train a model from the command line into a run folder (config.json, metrics.jsonl, checkpoint).

    python scripts/train.py --model one_hidden_layer --dataset mnist --epochs 10 --workdir runs/1hl
    python scripts/train.py --model mlp --model-config '{"widths": [256, 256], "act": "relu"}' \
        --optimizer adam --lr 1e-3 --schedule constant --regularizer weight_decay=5e-4 --workdir runs/mlp

Running the same command again on the same --workdir resumes from its last checkpoint and ends with
the same parameters as an uninterrupted run.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def parse_regularizer(text: str):
    name, _, weight = text.partition("=")
    if not weight:
        raise argparse.ArgumentTypeError(f"regularizer must be NAME=WEIGHT, got {text!r}")
    return (name, float(weight))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="one_hidden_layer")
    p.add_argument("--model-config", default="{}", help="JSON object of model fields")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default=None, help="folder of <name>.npz files (default $ROBUSTJAX_DATA)")
    p.add_argument("--loss", default="cross_entropy")
    p.add_argument("--regularizer", action="append", type=parse_regularizer, default=[],
                   help="NAME=WEIGHT, repeatable (e.g. weight_decay=5e-4)")
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--momentum", type=float, default=0.0)
    p.add_argument("--schedule", default="piecewise", choices=["constant", "piecewise", "cosine"])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--train-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=0, help="also checkpoint every N steps")
    p.add_argument("--workdir", required=True)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        model_config = json.loads(args.model_config)
    except json.JSONDecodeError as e:
        p.error(f"--model-config must be a JSON object: {e}")
    if not isinstance(model_config, dict):
        p.error(f"--model-config must be a JSON object, got {args.model_config!r}")

    from robustjax import data, train

    model_config = {k: train.tuplify(v) for k, v in model_config.items()}
    config = train.TrainConfig(
        model=args.model, model_config=model_config, dataset=args.dataset, loss=args.loss,
        regularizers=tuple(args.regularizer), optimizer=args.optimizer, learning_rate=args.lr,
        momentum=args.momentum, schedule=args.schedule, epochs=args.epochs, batch_size=args.batch_size,
        train_size=args.train_size, seed=args.seed, checkpoint_every=args.checkpoint_every,
        progress=not args.no_progress)
    meta = data.info(args.dataset)
    (xtr, ytr), (xte, yte) = data.load_split_pair(args.dataset, data_dir=args.data_dir)
    state = train.fit(config, (xtr, ytr), (xte, yte), args.workdir, num_classes=meta.num_classes)
    result = train.evaluate(state, xte, yte, loss=args.loss)
    summary = {"workdir": str(Path(args.workdir)), "steps": int(state.step), **{f"test_{k}": v for k, v in result.items()}}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)

"""The `robustjax` command: the main job.

    robustjax --quick            # the one-hidden-layer net of the cross-Lipschitz paper on the embedded MNIST
    robustjax --epochs 30        # longer

It trains the paper's network (784-1024-10, no bias, softplus alpha = 10, SGD lr 0.2, batch 128,
lr x0.1 at 72 % and x0.01 at 88 % of the updates), prints the test accuracy and writes the run
folder (config, metrics, checkpoint). It runs offline: MNIST ships with the package.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="robustjax", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 epochs (about a minute on a 2-core CPU)")
    p.add_argument("--epochs", type=int, default=None, help="default: 3 with --quick, else 30")
    p.add_argument("--out", default="runs/main", help="run folder")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from robustjax import data, train

    epochs = args.epochs or (3 if args.quick else 30)
    config = train.TrainConfig(epochs=epochs, seed=args.seed, progress=sys.stderr.isatty())
    t0 = time.time()
    (xtr, ytr), (xte, yte) = data.load_split_pair("mnist")
    print(f"robustjax: training {config.model} (1024 softplus units) on MNIST, {epochs} epochs, "
          f"SGD lr {config.learning_rate} piecewise, batch {config.batch_size}", flush=True)
    state = train.fit(config, (xtr, ytr), (xte, yte), args.out,
                      log=lambda r: print(f"  epoch {r['epoch']:3d}  train loss {r['train_loss']:.4f}  "
                                          f"test accuracy {r['test_accuracy']:.4f}", flush=True))
    result = train.evaluate(state, xte, yte)
    summary = {"model": config.model, "epochs": epochs, "test_accuracy": result["accuracy"],
               "test_loss": result["loss"], "wall_time_s": round(time.time() - t0, 1),
               "run_folder": str(Path(args.out))}
    print(f"test accuracy: {result['accuracy']:.4f}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The region attack over a process pool (one CPU worker per core) beside DeepFool, Carlini-Wagner and DDN
(on the default JAX device) on the same MNIST test points of the cached mlp1024_plain net.

    python benchmarks/bench_region_pool.py 192        # the number of test points; writes $OUT/region_gpu.json

Run on a lent H100 machine (16 cores) through the device tool (osqp carried as a wheel, see device_run.sh);
results in benchmarks/results/region_pool_h100.json and benchmarks/region_pool.md.
"""
import json, os, sys, time
sys.path.insert(0, "benchmarks")
import jax, numpy as np
import bench_attacks as BA
from robustjax.attacks import cw, ddn, deepfool, region
from robustjax.data import load


def main():
    data = (load("mnist", "train"), load("mnist", "test"))
    out = os.environ.get("OUT", "/tmp")
    f, acc, _ = BA.get_model("mlp1024_plain", data, print)
    N = int(sys.argv[1])
    x, y = data[1][0][:N], data[1][1][:N]
    res = {"model": "mlp1024_plain", "test_accuracy": acc, "n": N, "jax": jax.__version__, "device": str(jax.devices()[0])}
    def save():
        json.dump(res, open(f"{out}/region_gpu.json", "w"))
    for name, fn in [("deepfool", lambda: deepfool(f, x, y, p=2, steps=50, overshoot=0.02)),
                     ("cw_lr0.1_1000x9", lambda: cw(f, x, y, p=2, key=jax.random.key(0), steps=1000, binary_search_steps=9,
                                                   learning_rate=0.1, initial_const=0.1)),
                     ("ddn_1000", lambda: ddn(f, x, y, p=2, key=jax.random.key(0), steps=1000))]:
        fn(); t0 = time.time(); r = fn()
        res[name] = {"distance": np.round(r.distance, 6).tolist(), "success": float(np.mean(r.success)),
                     "s_per_example": (time.time() - t0) / N}
        print(name, np.median(r.distance), res[name]["s_per_example"], flush=True); save()
    t0 = time.time()
    r = region(f, x, y, p=2, key=jax.random.key(0), n_regions=100, x_train=data[0][0], y_train=data[0][1],
               processes=os.cpu_count())
    res["region_100"] = {"distance": np.round(r.distance, 6).tolist(), "success": float(np.mean(r.success)),
                         "wall_s_per_example": (time.time() - t0) / N, "processes": os.cpu_count()}
    print("region", np.median(r.distance), res["region_100"]["wall_s_per_example"], flush=True); save()


if __name__ == "__main__":
    main()

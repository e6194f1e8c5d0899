"""Why training works (Nguyen & Hein; Nguyen, Mukkamala & Hein; methods.md section 3).

    nice -n 10 python scripts/landscape.py --config quick --out runs/landscape    (CPU, reduced scale)
    python scripts/landscape.py --config full --out runs/landscape_full            (needs a GPU, see below)
    python scripts/landscape.py --config test --out /tmp/ls                        (tiny, for tests)

Parts: "widths" (the talk's table "Are practical networks that wide?" computed from models/zoo.py by
shape inference, seconds), "skip" (the CIFAR-10 table: VGG11, VGG16, DenseNet121 plain, -skip rand and
-skip SGD, sigmoid and softplus), "badnews" (a single neuron with many local minima beside a wide net
trained to zero training loss).

What to expect (the talk's numbers, printed beside ours as "talk"): width table VGG 3000K (k=1) yes,
InceptionV3/V4 1300K (k=3) yes, SqueezeNet 1180K, ENet 1000K, GoogLeNet 800K, ResNet 800K, Xception 700K
(k=1) no. CIFAR-10 test accuracy (sigmoid / softplus): VGG11 10 / 78.92, VGG11-skip rand 62.81 / 64.49,
VGG11-skip SGD 72.51 / 80.57, VGG16 10 / 81.33, VGG16-skip rand 61.57 / 61.46, VGG16-skip SGD 70.61 /
81.91, DenseNet121 86.41 / 89.31, DenseNet121-skip rand 52.07 / 55.39, DenseNet121-skip SGD 81.47 / 86.76.
The paper's SGD settings were not retrievable (methods.md); ours are in TRAIN below.

Variants:
- "quick": the CPU scale. N = 1,000 CIFAR-10 training images (the first 1,000), 1,000 test images,
  nets at 1/8 width (VGG conv1 8 channels, classifier 64-64; DenseNet-BC with growth 8 and blocks
  (2, 2, 2, 2) in place of DenseNet-121's (6, 12, 24, 16)), M = 8,192 skip units (all of VGG's
  conv1 = 32*32*8; DenseNet: 8,192 of its 16,384 stem units, evenly spaced), Adam (batch 32) for
  8 (VGG) / 5 (DenseNet) epochs; the three architectures can run as three processes (--archs) and
  be merged (--merge). This small because the 2 CPU cores were shared by ~20 processes when it ran
  (a nice'd job got ~5-10 % of a core); on an idle 2-core machine N = 5,000 with DenseNet-121's
  blocks fits in ~25 min.
- "full": the talk's scale. N = 50,000, all 10,000 test images, full width (VGG conv1 64 channels,
  classifier 512-512, DenseNet growth 32), M = 65,536 skip units (all of VGG's conv1 = 32*32*64;
  DenseNet's stem), 100 SGD epochs. Hardware: one GPU with >= 40 GB (an H100 80 GB is comfortable)
  and >= 64 GB host RAM: the rand fit builds Phi [50,000 x 66,113] float32 (13 GB) and the 50,000^2
  float64 Gram matrix (20 GB) on the host (Cholesky, about 4e14 flops: minutes on 16 cores).
  Estimated time: 12 SGD trainings of 100 epochs each, roughly 6-10 GPU-hours in all. Not run here
  (no GPU was lent to this task).
- "test": tiny (N = 200, 1 epoch), for the test-suite smoke check.
"""
from __future__ import annotations

TRAIN = dict(optimizer="sgd", learning_rate=0.02, momentum=0.9, schedule="cosine", batch_size=128,
             loss="cross_entropy")
# the CPU run trains for a few epochs only, where Adam gets further than SGD; "SGD" in the table means
# "the whole network trained by a stochastic gradient method", as opposed to "rand"
TRAIN_QUICK = dict(optimizer="adam", learning_rate=1e-3, momentum=0.0, schedule="cosine", batch_size=32,
                   loss="cross_entropy")

DEFAULTS = dict(
    seed=0,
    parts=("widths", "skip", "badnews"),
    # --- widths
    widths_models=("vgg11", "vgg13", "vgg16c", "vgg16", "vgg19", "inception_v3", "inception_v4", "squeezenet",
                   "enet", "googlenet", "resnet50", "xception", "densenet121"),
    imagenet_n=1_281_167,
    # --- skip table
    dataset="cifar10",        # the talk's; "mnist" (zero-padded to 32 x 32) for the offline quick report
    n_train=1000,
    n_test=1000,
    archs=("vgg11", "vgg16", "densenet121"),
    acts=("sigmoid", "softplus"),
    variants=("plain", "skip_rand", "skip_sgd"),
    vgg=dict(width_mult=0.125, classifier=(64, 64)),
    densenet=dict(growth=8, stem="cifar", norm="group", blocks=(2, 2, 2, 2)),
    skip_units=8192,
    epochs=dict(vgg11=8, vgg16=8, densenet121=5),
    train=dict(TRAIN_QUICK),
    lstsq_method="cholesky",
    # --- bad news
    neuron=dict(per_dim=6, dim=2, ratio=10.0, n_starts=16),
    wide=dict(n=50, hidden=64, n_starts=3, maxiter=200),
)


def get_config(arg: str = "quick") -> dict:
    """Variants "quick" (CPU, reduced), "full" (the talk's scale, GPU), "test" (tiny)."""
    cfg = dict(DEFAULTS)
    if arg in ("", "quick"):
        return cfg
    if arg == "full":
        cfg.update(n_train=50000, n_test=10000, train=dict(TRAIN), vgg=dict(width_mult=1.0, classifier=(512, 512)),
                   densenet=dict(growth=32, stem="cifar", norm="group", blocks=(6, 12, 24, 16)), skip_units=65536,
                   epochs=dict(vgg11=100, vgg16=100, densenet121=100),
                   wide=dict(n=200, hidden=256, n_starts=10, maxiter=3000))
        return cfg
    if arg == "test":
        cfg.update(n_train=200, n_test=200, archs=("vgg11",), acts=("softplus",),
                   widths_models=("vgg11", "resnet50"), skip_units=None, epochs=dict(vgg11=1),
                   neuron=dict(per_dim=3, dim=2, ratio=10.0, n_starts=4),
                   wide=dict(n=10, hidden=16, n_starts=2, maxiter=50))
        return cfg
    raise ValueError(f"unknown variant {arg!r}; known: quick, full, test")

"""robustjax: why wide networks train to zero error, and how to prove or break their robustness.

Modules follow the talk (M. Hein, "Deep Learning: Why does it work? How to get it robust?"). The floors, each
importing only from the floors below it:

    ground      geometry (Box, norms, margins, halfspace-box steps) · batching (the padded batch loop) ·
                validate (input checks) · losses · vnnlib (VNN-LIB properties)
    data        data/ (MNIST, Fashion-MNIST, CIFAR-10 from npz, the embedded MNIST or tfds)
    models      models/ (MLP, one-hidden-layer, CNNs, skip nets, kernel machine, the ImageNet zoo)
    network     network/ (a typed graph of layers: trace a logits_fn, read ONNX, evaluate in JAX or
                float64, linear regions)
    methods     train (fit, checkpoint) · regularizers (weight decay, cross-Lipschitz) · certify
                (Theorem 2.1 closed forms) · bounds/ (IBP, CROWN, alpha-CROWN, deep Theorem 2.1) ·
                attacks/ (DeepFool, CW, PGD, DDN, region attack, spatial) · verify (exact MILP) ·
                qp (exact l2 QPs in JAX) · lp (l1 / l_inf LPs in JAX) · solvers (OSQP / HiGHS) · landscape/
                (wide-layer theorem) · ood (far from the data) · parallel (devices, process pools)
    top         complete (falsify, bound, branch and bound) · report · cli

One line per module:
    geometry      Box / as_box, l_p norms and duals, class margins, exact l_p steps to a halfspace in a box
    batching      map_batches: one padded, masked batch loop for every jitted per-example function
    validate      ValueErrors that name the argument, what was expected and what came
    losses        training and attack losses by name (cross-entropy, squared, Huber, margin)
    vnnlib        the VNN-LIB local-robustness subset as Property(lo, hi, unsafe disjuncts)
    data          load(name, split), batches(key, x, y, batch_size)
    models        Flax modules and build(name, **config); activations with their derivatives
    network       Graph of Dense/Conv/Affine/ReLU/Activation/MaxPool/Reshape/Add...; trace, from_onnx, evaluate,
                  region_map
    train         TrainConfig, create_train_state, make_train_step, evaluate, fit (resumable run folders)
    checkpoint    checksummed checkpoints with fallback, a run-folder lock, config checks on resume
    regularizers  term(params, x, y, *, apply_fn, key) registry: weight decay, cross-Lipschitz, ...
    certify       Theorem 2.1 certified l2 radii: linear, one-hidden-layer and Gaussian-kernel closed forms
    bounds        sound output bounds of any graph over l_p balls in boxes; certified radii; deep Theorem 2.1
    attacks       minimal and budget attacks in one call shape, returning one AttackResult
    verify        exact minimal adversarial distances of small ReLU nets (MILP; the 2-D region walk)
    qp            min ||z - x||_2 over a polyhedron in a box: jitted, batched dual Newton, exact in float64
    lp            min ||z - x||_1 or _inf over a polyhedron in a box: jitted, batched interior point, certified
    solvers       the region attack's convex problems behind one call (qp / OSQP QP, lp / HiGHS LP)
    landscape     layer widths, the wide-layer check, feature-map ranks, the "rand" least-squares fit
    ood           confidence far from the data: scaled / noise inputs, MMC, AUROC, CEDA and ACET terms
    parallel      data-parallel training, sharded evaluation, map_rows over worker processes
    complete      verify_property: verified / counterexample / unknown / timeout, never a wrong answer
    report        tables, figures and the report folder of the main job
    cli           `robustjax [--quick | --full]` and `robustjax verify NET.onnx PROP.vnnlib`
"""
__version__ = "0.1.0"

"""VNN-LIB parsing: the competition's own files, the subset's semantics, and clear errors outside it."""
from pathlib import Path

import numpy as np
import pytest

from robustjax import vnnlib

ERAN = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "vnncomp2021_eran"


def _spec(body: str, n_in: int = 2, n_out: int = 3) -> str:
    decl = "".join(f"(declare-const X_{i} Real)\n" for i in range(n_in))
    decl += "".join(f"(declare-const Y_{j} Real)\n" for j in range(n_out))
    return decl + body


@pytest.mark.skipif(not ERAN.is_dir(), reason="../shared/benchmarks/vnncomp2021_eran not present")
def test_competition_files_parse_to_a_robustness_property():
    files = sorted((ERAN / "specs" / "mnist").glob("*.vnnlib"))
    assert len(files) >= 36
    for f in files[:6]:
        prop = vnnlib.load(f)
        eps = float(f.stem.split("_eps_")[1])
        assert prop.lo.shape == (784,) and prop.num_outputs == 10
        assert np.all(prop.lo >= 0) and np.all(prop.hi <= 1) and np.all(prop.lo <= prop.hi)
        assert np.max(prop.hi - prop.lo) <= 2 * eps + 1e-7 and np.max(prop.hi - prop.lo) >= eps - 1e-7
        c = prop.robustness_label()
        assert c is not None and len(prop.unsafe) == 9
        y = np.full(10, -1.0)
        y[c] = 1.0
        assert not prop.violated_by(y)
        y[(c + 1) % 10] = 2.0
        assert prop.violated_by(y)


def test_semantics_of_bounds_and_disjunctions():
    text = _spec("""
    (assert (<= X_0 0.5)) (assert (>= X_0 -0.5)) (assert (<= X_0 0.25))
    (assert (<= 0.1 X_1)) (assert (<= X_1 (+ 0.2 0.1)))
    (assert (or (and (>= Y_1 Y_0) (<= Y_2 1.0)) (and (>= (- Y_2 (* 2 Y_0)) 0.5))))
    """)
    prop = vnnlib.parse(text)
    np.testing.assert_allclose(prop.lo, [-0.5, 0.1])
    np.testing.assert_allclose(prop.hi, [0.25, 0.3])
    assert len(prop.unsafe) == 2 and prop.robustness_label() is None
    assert prop.violated_by([0.0, 1.0, 0.0])          # first disjunct
    assert prop.violated_by([0.0, 1.0, 2.0])          # second: Y_2 - 2 Y_0 = 2 >= 0.5
    assert not prop.violated_by([1.0, 1.5, 2.0])      # first fails on Y_2 <= 1, second on 0 >= 0.5
    assert prop.violated_by([1.0, 0.0, 2.6])          # second: 2.6 - 2 >= 0.5
    assert not prop.violated_by([1.0, 0.0, 2.4])
    assert prop.unsafe_margin([1.0, 0.0, 2.6]) == pytest.approx(0.1)
    Y = [[0.0, 1.0, 0.0], [0.0, 1.0, 2.0], [1.0, 1.5, 2.0], [1.0, 0.0, 2.6], [1.0, 0.0, 2.4]]
    np.testing.assert_array_equal(prop.violated_rows(Y), [True, True, False, True, False])


@pytest.mark.parametrize("body, match", [
    ("(assert (<= X_0 1)) (assert (>= X_0 0)) (assert (>= X_1 0)) (assert (>= Y_0 Y_1))", "X_1 has no upper"),
    ("(assert (or (<= X_0 1) (<= X_1 1)))", "inside a disjunction"),
    ("(assert (<= (+ X_0 X_1) 1))", "per-input bounds"),
    ("(assert (<= X_0 Y_0))", "mixing inputs and outputs"),
    ("(assert (<= (* Y_0 Y_1) 1))", "non-linear"),
    ("(assert (=> (<= Y_0 1) (<= Y_1 1)))", "unsupported constraint"),
    ("(check-sat)", "unsupported command"),
    ("(assert (<= X_0 1)", "unclosed"),
    ("(assert (<= X_0 0)) (assert (>= X_0 1)) (assert (<= X_1 1)) (assert (>= X_1 0)) (assert (>= Y_0 Y_1))",
     "lo 1.0 > hi 0.0"),
    ("(assert (<= Y_7 1))", "not declared"),
    ("(assert (<= X_0 1)) (assert (>= X_0 0)) (assert (<= X_0 nan))", "constant 'nan' is not a finite number"),
    ("(assert (<= (- Y_0 Y_1) inf))", "constant 'inf' is not a finite number"),
])
def test_outside_the_subset_is_a_clear_error(body, match):
    with pytest.raises(vnnlib.VnnlibError, match=match):
        vnnlib.parse(_spec(body))


def test_load_names_the_path(tmp_path):
    f = tmp_path / "bad.vnnlib"
    f.write_text(_spec("(check-sat)"))
    with pytest.raises(vnnlib.VnnlibError, match="bad.vnnlib"):
        vnnlib.load(f)
    with pytest.raises(vnnlib.VnnlibError, match="cannot read"):
        vnnlib.load(tmp_path / "missing.vnnlib")

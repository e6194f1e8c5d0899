"""robustjax: why wide networks train to zero error, and how to prove or break their robustness.

Modules follow the talk (M. Hein, "Deep Learning: Why does it work? How to get it robust?"):
data, models, losses, regularizers, train, certify (Theorem 2.1), attacks, verify (exact MILP),
landscape (wide-layer theorem), report.
"""
__version__ = "0.1.0"

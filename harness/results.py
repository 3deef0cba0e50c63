"""`harness.results.load_results(path)` -> the tidy table as a DataFrame (the name the README
and users' notebooks use; the code lives in report/results.py)."""
from report.results import COLUMNS, load_results, tidy  # noqa: F401

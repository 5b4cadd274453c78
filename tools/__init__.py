"""Tools for the project's CI, run from the repository root (`python -m tools.ci_budget`)."""

"""Scoring models: metrics, per-patient evaluation, cross-validation, batch prediction, benchmarks."""

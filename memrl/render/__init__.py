"""Observation images drawn inside JAX: analytic classic-control drawings and MuJoCo ray casting."""

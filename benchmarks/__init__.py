"""Benchmarks for asp-service: the ``asp-bench`` command (:mod:`benchmarks.bench`), its plots
(:mod:`benchmarks.plots`), interleaved step-cost timing (:mod:`benchmarks.step_cost`) and the
script that builds the embedded MNIST subset (:mod:`benchmarks.make_embedded`)."""

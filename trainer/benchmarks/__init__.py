"""Benchmarks of Convoy's training loops, run as modules (`python -m trainer.benchmarks.loops`)."""

"""Benchmarks that print figures (`make bench`). Never part of the test run's pass/fail."""

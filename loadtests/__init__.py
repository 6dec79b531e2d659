"""loadtests: the local stack, the demo, benchmarks, Locust scenarios and the comparison report."""

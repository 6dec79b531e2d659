"""The benchmarks (``python -m loadtests.bench NAME``, dispatched by :mod:`.__main__`).

Each benchmark is one module or subpackage with a ``main(argv) -> int``; none imports
another.  What they share is the harness beside them: process control and run-and-report
(:mod:`.harness`), the wrk driver and its Lua scripts (:mod:`.wrk`), request pools
(:mod:`.pool`) and the servers' own view of a run (:mod:`.probes`).
"""

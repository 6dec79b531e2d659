"""What a load-test run is turned into: analysis, statistics, SLO verdicts, histograms,
plots and the rendered report (``python -m loadtests report``), and two-run comparison."""

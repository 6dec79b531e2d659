"""The Locust load test: the runner (``python -m loadtests run``), the driver process, the
plan and scenarios, seeding, arrivals, push receipt, and the Locust users."""

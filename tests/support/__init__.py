"""Helpers the tests share: running services, tokens, clients, samples and models.

Fixtures live in ``tests/conftest.py``; everything a test imports lives here, never in a
test module or in conftest.
"""

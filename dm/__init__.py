"""dm: the direct-message service, its identity (dev issuer) and the Python client SDK."""

__version__ = "0.1.0"

"""dm: the direct-message service, its identity (dev issuer) and the Python client SDK."""

from cdn_auth import __version__ as __version__  # one version source for the project

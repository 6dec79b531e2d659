"""cdn_auth: media registry, signed pointers and grants, and the edge that authorizes video fetches."""

__version__ = "0.1.0"

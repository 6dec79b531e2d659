"""The service kernel: the plumbing both services run on, and nothing about media or messages.

aiohttp error envelope and route table with its OpenAPI document (``web_errors``,
``openapi``), app lifecycle and the ops routes (``web_lifecycle``, ``web_ops``), the
settings base (``settings_base``), serving with workers and logs (``serving``, ``logs``),
Redis connections, an embedded redis-server and stream tails (``redis_client``,
``redis_process``, ``stream_tail``), files re-read on change (``reloading_file``), caches,
clock, strict base64url and JSON, ids, request body deadlines and per-user rate limits.
It imports neither ``cdn_auth`` nor ``dm``.
"""

"""The edge benchmark: authorization next to serving the same bytes bare (:mod:`.main`)."""

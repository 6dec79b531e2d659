"""The hosts benchmark: revocation to edges on simulated hosts, and a partition (:mod:`.main`)."""

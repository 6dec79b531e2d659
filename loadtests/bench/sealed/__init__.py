"""The sealed benchmark: what end-to-end encryption costs per operation, next to plain (:mod:`.main`)."""

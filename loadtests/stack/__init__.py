"""Starting the system for a run: Redis, the edge, the dm and the nginx front as processes
(:mod:`.processes`, :mod:`.nginx`), the pieces benchmarks assemble their own beds from, and
the in-process stack the demo uses (:mod:`.inprocess`)."""

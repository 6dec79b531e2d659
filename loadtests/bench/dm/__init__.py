"""The dm benchmark: sends one dm process accepts, and how soon they are pushed (:mod:`.main`)."""

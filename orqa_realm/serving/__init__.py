"""A trained system answering questions: opened from its run directory, for `ask` and `serve`."""

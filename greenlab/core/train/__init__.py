"""What a run's child process does: build a model (zoo), load its data (datasets), compress it
(compression), train it (training) and say so as typed events (child_events); the capacity scan (capacity).

Nothing here measures energy, writes the store or knows of a grid: a run's supervisor
(greenlab.core.run) starts the child and reads its events.
"""

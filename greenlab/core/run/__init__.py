"""One run, measured: the child process that trains (launched from a fork server, or spawned), the
supervisor that meters it, opens energy windows on its phase events and turns what it learned into the
run's row (measurement), the sinks its rows go to (the store, or memory on a Ray node), the run's typed
events and the cancel token shared with its grid.

Both grid drivers (greenlab.core.grid) run each run through this one supervisor.
"""

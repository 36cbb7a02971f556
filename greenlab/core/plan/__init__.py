"""What a grid will run and how its verdicts will be judged, all decided before any run starts.

The experiments file is parsed and validated into runs (config, settings), with its analysis plan
(analysis, metrics); preflight checks that the grid can run on this machine, and fetch downloads what it
needs. Nothing here starts a process, measures or touches the store.
"""

"""GreenLab's core: everything but the faces (the TUI, the headless driver, `greenlab report`).

The path of one run, package by package, each importing only those below it (an import-linter layers
contract in pyproject.toml keeps it so):

    plan     the grid file, its settings and analysis plan, checked (preflight) and fetched before any run
    train    what a run's child does: models, datasets, compression, the training loop and its events
    measure  energy meters (NVML, RAPL, labelled estimates), the host's load and its measurement lock
    store    runs.db: the public schema, typed rows, migrations, the write thread, its own errors
    run      one run: its child process, its supervisor and measurement, where its rows go
    report   verdicts: the comparisons under their plan, the statistics, their words and formats
    grid     a grid: the session both faces start, the local and Ray drivers, their rules and events

`errors` holds the errors every face turns into one line and exit code 2. Nothing here imports Textual.
"""

"""GreenLab's core: config, model zoo, data, compression, energy meters, training, runner, store, reports.

Nothing here imports a user interface (Textual or otherwise); tests and import-linter hold that line.
"""

"""A grid, from request to verdicts: the session both faces start (preflight, fetch, lock, store, driver,
energy to target, summary), the driver protocol and its shared rules (resume, retry, stop), the local and
Ray drivers, the grid's typed events and the presenter that folds them into snapshots for the faces.
"""

"""Verdicts: every technique against its matching baselines, judged under the analysis plan its runs
were run under (compare), by one statistical method (stats), after diagnostics (diagnostics), in words
(words) and formats (formats, plot), with energy to a target accuracy (energy_to_target) and the
formatting every face shares (formatting).

Pure functions over stored rows and plans: nothing here writes the store or starts a run.
"""

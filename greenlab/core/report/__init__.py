"""Verdicts: every technique against its matching baselines, judged under the analysis plan its runs
were run under (compare), by one statistical method (stats), after diagnostics (diagnostics), in words
(words), rendered in a report's formats (render) and figure (plot), with energy to a target accuracy
(energy_to_target) and the formatting of figures every face shares (formatting).

Pure functions over stored rows and plans: nothing here writes the store or starts a run.
"""

"""Energy measurement: meters (what can be read), the tracker (windows and sampling), and carbon maths.

Every figure leaves here labelled with how it was obtained: `counter` (a hardware energy counter),
`polled` (integrated power samples), `estimate` (a formula, with its inputs) or `unavailable`.
"""

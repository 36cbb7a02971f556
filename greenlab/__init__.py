"""GreenLab: measure the electricity of fine-tuning pre-trained networks, with and without compression.

`greenlab.core` is the library (no user interface); `greenlab.cli`, `greenlab.headless` and
`greenlab.tui` are the faces on it.
"""

__version__ = "0.1.0"

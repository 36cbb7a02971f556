"""The Textual face of GreenLab: `run_app` (greenlab.tui.app) opens it; nothing in greenlab.core imports it."""

"""Electricity and the machine: meters (NVML counters and polled power, RAPL counters, labelled CPU and
DRAM estimates), the tracker that samples them into windows, the carbon and cost accounting, the host's
load by other processes, and the host-wide measurement lock.

Nothing here knows of runs, grids or the store: a run's supervisor (greenlab.core.run) opens and closes
the windows.
"""

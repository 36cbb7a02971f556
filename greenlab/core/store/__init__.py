"""runs.db, the public interface every face reads: its schema and migrations, the Store that reads and
writes it (one writer per grid), the typed rows it returns, and the thread that writes a run's rows
while it runs. SQL text lives here and nowhere else.
"""

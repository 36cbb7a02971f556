"""runs.db, the public interface every face reads: its schema and migrations (schema), the Store that reads
and writes it (database; one writer per grid), the typed rows it returns (rows), a run's row writes as
typed values (row_writes) and the thread that applies them while it runs (write_thread), the records kept
beside it when it cannot take them (journal), and its own errors (errors). SQL text lives here and nowhere
else, and so does sqlite3: SQLite's exceptions leave as the store's own.
"""

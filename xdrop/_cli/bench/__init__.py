"""bench's timing, cases, rows and table."""

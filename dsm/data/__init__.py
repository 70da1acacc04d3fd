"""Data: the prepared format, preparers, protocols and the fast tensor input path."""

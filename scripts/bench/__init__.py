"""`make bench` and its rows."""

"""The benchmark's machinery, shared by the scripts of `bench/`: work folders and their runs, tables
with bootstrap intervals, the plateau budget, and the diagnostics' helpers."""

"""What every floor uses, and nothing above it: one-line errors and signal handling (errors), atomic outputs
and the output check (atomic), run-directory locks (rundir), progress lines (progress)."""

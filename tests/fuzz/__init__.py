"""Differential fuzzing of user-level NumPy programs: programs.py draws them, check.py runs the
four-way check, campaign.py is `make fuzz`, and the test_* files run in `make test`."""

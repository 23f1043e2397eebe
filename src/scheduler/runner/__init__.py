"""Runner processes: `python -m scheduler.runner` claims and executes due jobs."""

"""The small services beside the runner's cycle that keep its promises, each a round at a time."""

"""Runners own the env loop: they roll out episodes with the controller into episode batches."""

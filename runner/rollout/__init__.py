"""The runners of the ``runner`` config group (``runner=parallel`` / ``runner=episode``): they own
the env loop and roll out episodes with the controller into episode batches. (The package is
``rollout`` so that ``runner.runners`` does not repeat the name of the ``runner`` package.)"""

"""hymarl: a Hydra-configured research runner for cooperative multi-agent RL."""

__version__ = "0.1.0"

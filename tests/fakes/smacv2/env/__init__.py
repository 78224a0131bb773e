"""Fake of ``smacv2.env``: the same three exports as the real package."""

from smacv2.env.multiagentenv import MultiAgentEnv
from smacv2.env.starcraft2.starcraft2 import StarCraft2Env
from smacv2.env.starcraft2.wrapper import StarCraftCapabilityEnvWrapper

__all__ = ["MultiAgentEnv", "StarCraft2Env", "StarCraftCapabilityEnvWrapper"]

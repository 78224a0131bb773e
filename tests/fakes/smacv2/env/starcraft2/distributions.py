"""Fake of ``smacv2.env.starcraft2.distributions``: the scenario distributions, by ``dist_type``.

As in the real module, every distribution gets its config dict (with ``env_key``, ``n_units`` and
``n_enemies`` added by the wrapper), draws from a numpy Generator created *unseeded*
(``default_rng()``) and shuffles teams with python's global ``random``; ``generate()`` returns the
dict the env's ``reset(episode_config)`` reads.
"""

from abc import ABC, abstractmethod
from copy import deepcopy
from itertools import combinations_with_replacement
from math import inf
from random import choice, shuffle

import numpy as np
from numpy.random import default_rng


class Distribution(ABC):
    @abstractmethod
    def generate(self):
        pass

    @property
    @abstractmethod
    def n_tasks(self):
        pass


DISTRIBUTION_MAP = {}


def get_distribution(key):
    return DISTRIBUTION_MAP[key]


def register_distribution(key, cls):
    DISTRIBUTION_MAP[key] = cls


class FixedDistribution(Distribution):
    """Items of a fixed list: in order in test mode, uniformly otherwise."""

    def __init__(self, config):
        self.config = config
        self.env_key = config["env_key"]
        self.test_mode = config["test_mode"]
        self.teams = config["items"]
        self.index = 0

    def generate(self):
        if self.test_mode:
            team_id = self.index
            self.index = (self.index + 1) % len(self.teams)
        else:
            team_id = self.teams.index(choice(self.teams))
        team = self.teams[team_id]
        shuffle(team)
        return {self.env_key: {"item": team, "id": team_id}}

    @property
    def n_tasks(self):
        return len(self.teams)


class AllTeamsDistribution(Distribution):
    """Any multiset of unit types, the same team on both sides."""

    def __init__(self, config):
        self.config = config
        self.units = config["unit_types"]
        self.n_units = config["n_units"]
        self.exceptions = config.get("exception_unit_types", [])
        self.env_key = config["env_key"]
        self.combinations = list(combinations_with_replacement(self.units, self.n_units))

    def generate(self):
        team = []
        while not team or all(u in self.exceptions for u in team):
            team = list(choice(self.combinations))
            team_id = self.combinations.index(tuple(team))
            shuffle(team)
        return {self.env_key: {"ally_team": team, "enemy_team": team, "id": team_id}}

    @property
    def n_tasks(self):
        return len(self.combinations)


class WeightedTeamsDistribution(Distribution):
    """Each unit's type drawn with ``weights``; a team made only of ``exception_unit_types`` is
    redrawn. The enemies mirror the allies (plus extra drawn units when there are more)."""

    def __init__(self, config):
        self.config = config
        self.units = np.array(config["unit_types"])
        self.n_units = config["n_units"]
        self.n_enemies = config["n_enemies"]
        self.weights = np.array(config["weights"])
        self.exceptions = config.get("exception_unit_types", set())
        self.rng = default_rng()
        self.env_key = config["env_key"]

    def _gen_team(self, n_units, use_exceptions):
        team = []
        while not team or (use_exceptions and all(u in self.exceptions for u in team)):
            team = [str(u) for u in self.rng.choice(self.units, size=(n_units,), p=self.weights)]
            shuffle(team)
        return team

    def generate(self):
        team = self._gen_team(self.n_units, use_exceptions=True)
        if self.n_enemies > self.n_units:
            enemy_team = team + self._gen_team(self.n_enemies - self.n_units, use_exceptions=True)
        else:
            enemy_team = team[: self.n_enemies]
        return {self.env_key: {"ally_team": team, "enemy_team": enemy_team, "id": 0}}

    @property
    def n_tasks(self):
        return inf


class PerAgentUniformDistribution(Distribution):
    """Per-unit values drawn uniformly in [lower_bound, upper_bound)."""

    def __init__(self, config):
        self.config = config
        self.lower_bound = config["lower_bound"]
        self.upper_bound = config["upper_bound"]
        self.env_key = config["env_key"]
        self.n_units = config["n_units"]
        self.rng = default_rng()

    def generate(self):
        size = (self.n_units, len(self.lower_bound))
        return {self.env_key: {"item": self.rng.uniform(self.lower_bound, self.upper_bound, size=size), "id": 0}}

    @property
    def n_tasks(self):
        return inf


class MaskDistribution(Distribution):
    """Which enemies each ally cannot see the health and type of (1 = hidden)."""

    def __init__(self, config):
        self.config = config
        self.mask_probability = config["mask_probability"]
        self.n_units = config["n_units"]
        self.n_enemies = config["n_enemies"]
        self.rng = default_rng()

    def generate(self):
        p = self.mask_probability
        mask = self.rng.choice([0, 1], size=(self.n_units, self.n_enemies), p=[p, 1.0 - p])
        return {"enemy_mask": {"item": mask, "id": 0}}

    @property
    def n_tasks(self):
        return inf


class ReflectPositionDistribution(Distribution):
    """Allies uniformly in the left half; the enemies at their mirror images (extra enemies
    uniformly in the right half)."""

    def __init__(self, config):
        self.config = config
        self.n_units = config["n_units"]
        self.n_enemies = config["n_enemies"]
        self.map_x = config["map_x"]
        self.map_y = config["map_y"]
        ally_cfg = deepcopy(config)
        ally_cfg.update(env_key="ally_start_positions", lower_bound=(0, 0), upper_bound=(self.map_x / 2 - 1, self.map_y))
        self.pos_generator = PerAgentUniformDistribution(ally_cfg)
        if self.n_enemies > self.n_units:
            enemy_cfg = deepcopy(config)
            enemy_cfg.update(
                env_key="enemy_start_positions",
                lower_bound=(self.map_x / 2, 0),
                upper_bound=(self.map_x, self.map_y),
                n_units=self.n_enemies - self.n_units,
            )
            self.enemy_pos_generator = PerAgentUniformDistribution(enemy_cfg)

    def generate(self):
        allies = self.pos_generator.generate()["ally_start_positions"]["item"]
        enemies = np.zeros((self.n_enemies, 2))
        k = min(self.n_units, self.n_enemies)
        enemies[:k, 0] = self.map_x - allies[:k, 0]
        enemies[:k, 1] = allies[:k, 1]
        if self.n_enemies > self.n_units:
            enemies[self.n_units :] = self.enemy_pos_generator.generate()["enemy_start_positions"]["item"]
        return {
            "ally_start_positions": {"item": allies, "id": 0},
            "enemy_start_positions": {"item": enemies, "id": 0},
        }

    @property
    def n_tasks(self):
        return inf


class SurroundedPositionDistribution(Distribution):
    """Allies at the centre; 1-4 enemy groups on the diagonals at random distances."""

    def __init__(self, config):
        self.config = config
        self.n_units = config["n_units"]
        self.n_enemies = config["n_enemies"]
        self.map_x = config["map_x"]
        self.map_y = config["map_y"]
        self.rng = default_rng()

    def generate(self):
        cx, cy, off = self.map_x / 2, self.map_y / 2, 2
        near = [np.array([cx - off, cy - off]), np.array([cx - off, cy + off]),
                np.array([cx + off, cy + off]), np.array([cx + off, cy - off])]
        corners = [np.array([0, 0]), np.array([0, self.map_y]), np.array([self.map_x, self.map_y]),
                   np.array([self.map_x, 0])]
        allies = np.tile(np.array([cx, cy]), (self.n_units, 1))
        enemies = np.zeros((self.n_enemies, 2))
        n_groups = self.rng.integers(1, 5)
        sizes = self.rng.multinomial(self.n_enemies, np.ones(n_groups) / n_groups)
        where = self.rng.uniform(size=(n_groups,))
        diagonals = self.rng.choice(np.arange(4), size=(n_groups,), replace=False)
        start = 0
        for g in range(n_groups):
            d, t = diagonals[g], where[g]
            enemies[start : start + sizes[g]] = near[d] * t + corners[d] * (1 - t)
            start += sizes[g]
        return {
            "ally_start_positions": {"item": allies, "id": 0},
            "enemy_start_positions": {"item": enemies, "id": 0},
        }

    @property
    def n_tasks(self):
        return inf


class SurroundedAndReflectPositionDistribution(Distribution):
    """Surrounded with probability 1 - p, reflected otherwise."""

    def __init__(self, config):
        self.p_threshold = config["p"]
        self.surrounded_distribution = SurroundedPositionDistribution(config)
        self.reflect_distribution = ReflectPositionDistribution(config)
        self.rng = default_rng()

    def generate(self):
        if self.rng.random() > self.p_threshold:
            return self.surrounded_distribution.generate()
        return self.reflect_distribution.generate()

    @property
    def n_tasks(self):
        return inf


register_distribution("fixed", FixedDistribution)
register_distribution("all_teams", AllTeamsDistribution)
register_distribution("weighted_teams", WeightedTeamsDistribution)
register_distribution("per_agent_uniform", PerAgentUniformDistribution)
register_distribution("mask", MaskDistribution)
register_distribution("reflect_position", ReflectPositionDistribution)
register_distribution("surrounded", SurroundedPositionDistribution)
register_distribution("surrounded_and_reflect", SurroundedAndReflectPositionDistribution)

"""Fake of ``smacv2.env.starcraft2.starcraft2``: ``StarCraft2Env`` without StarCraft II.

The constructor keywords, attributes, sizes, feature layout, action masks, reward function and the
reset/step contract follow the real env; the battle itself is a small 2D simulation (made-up
damage numbers, distance-based sight) that is deterministic given the ``seed`` keyword, which
seeds the "game" at launch as StarCraft II's game seed does. See tests/fakes/README.md.
"""

import math
import os
import random
from copy import deepcopy

import numpy as np

from smacv2.env.multiagentenv import MultiAgentEnv
from smacv2.env.starcraft2.maps import get_map_params


class CannotResetException(Exception):
    pass


class SC2LaunchError(RuntimeError):
    """What pysc2 raises when StarCraft II cannot be started."""


# name: (health, shield, attack range, sight range, damage per step, max cooldown, speed per step)
UNIT_STATS = {
    "stalker": (80.0, 80.0, 6.0, 10, 9.0, 35, 1.5),
    "zealot": (100.0, 50.0, 0.1, 9, 11.0, 22, 1.5),
    "colossus": (200.0, 150.0, 7.0, 10, 14.0, 24, 1.2),
    "marine": (45.0, 0.0, 5.0, 9, 6.0, 15, 1.3),
    "marauder": (125.0, 0.0, 6.0, 10, 9.0, 25, 1.3),
    "medivac": (150.0, 0.0, 4.0, 11, 0.0, 200, 1.6),
    "zergling": (35.0, 0.0, 0.1, 8, 5.0, 11, 2.0),
    "baneling": (30.0, 0.0, 0.25, 8, 16.0, 1, 1.5),
    "hydralisk": (90.0, 0.0, 5.0, 9, 9.0, 10, 1.3),
}
MEDIVAC_HEAL = 9.0
ENEMY_TYPE_IDS = {  # pysc2.lib.units ids: the enemies are ordinary units
    "baneling": 9, "colossus": 4, "hydralisk": 107, "marauder": 51, "marine": 48,
    "medivac": 54, "stalker": 74, "zealot": 73, "zergling": 105,
}
RL_UNITS = ("baneling", "colossus", "hydralisk", "marauder", "marine", "medivac", "stalker", "zealot", "zergling")
"""The 10gen maps' RL units (allies), in the order of their type ids."""
GAME_UNIT_TYPES = 1979
"""Unit types in the fake game's data; the RL units are the last nine, as the real env assumes."""
GEN_TYPES = {
    "protoss_gen": ("stalker", "zealot", "colossus"),
    "terran_gen": ("marine", "marauder", "medivac"),
    "zerg_gen": ("zergling", "hydralisk", "baneling"),
}
"""Unit-type bit of each unit on the 10gen maps."""
DEFAULT_UNIT = {"marines": "marine"}
"""The units of the maps without team_gen."""


class Point:
    __slots__ = ("x", "y", "z")

    def __init__(self, x, y):
        self.x, self.y, self.z = float(x), float(y), 0.0


class Unit:
    """The fields of an SC2 raw unit that the env reads."""

    def __init__(self, tag, name, unit_type, owner, x, y):
        health, shield = UNIT_STATS[name][:2]
        self.tag, self.name, self.unit_type, self.owner = tag, name, unit_type, owner
        self.health = self.health_max = health
        self.shield = self.shield_max = shield
        self.energy = 50.0 if name == "medivac" else 0.0
        self.weapon_cooldown = 0.0
        self.pos = Point(x, y)


class StarCraft2Env(MultiAgentEnv):
    """Decentralised micromanagement scenarios, with a fake battle in place of StarCraft II."""

    def __init__(
        self,
        map_name="8m",
        step_mul=8,
        move_amount=2,
        difficulty="7",
        game_version=None,
        seed=None,
        continuing_episode=False,
        obs_all_health=True,
        obs_own_health=True,
        obs_last_action=False,
        obs_pathing_grid=False,
        obs_terrain_height=False,
        obs_instead_of_state=False,
        obs_timestep_number=False,
        obs_own_pos=False,
        obs_starcraft=True,
        conic_fov=False,
        num_fov_actions=12,
        state_last_action=True,
        state_timestep_number=False,
        reward_sparse=False,
        reward_only_positive=True,
        reward_death_value=10,
        reward_win=200,
        reward_defeat=0,
        reward_negative_scale=0.5,
        reward_scale=True,
        reward_scale_rate=20,
        use_unit_ranges=False,
        min_attack_range=2,
        kill_unit_step_mul=2,
        fully_observable=False,
        capability_config=None,  # the real default is {}
        replay_dir="",
        replay_prefix="",
        window_size_x=1920,
        window_size_y=1200,
        heuristic_ai=False,
        heuristic_rest=False,
        debug=False,
        prob_obs_enemy=1.0,
        action_mask=True,
    ):
        capability_config = {} if capability_config is None else capability_config
        if heuristic_ai:
            raise NotImplementedError("the fake StarCraft2Env has no heuristic AI")
        self.map_name = map_name
        self.map_params = map_params = get_map_params(map_name)
        self.episode_limit = map_params["limit"]
        self._move_amount = move_amount
        self._step_mul = step_mul
        self._kill_unit_step_mul = kill_unit_step_mul
        self.difficulty = difficulty

        self.obs_own_health = obs_own_health or obs_all_health
        self.obs_all_health = obs_all_health
        self.obs_instead_of_state = obs_instead_of_state
        self.obs_last_action = obs_last_action
        self.obs_pathing_grid = obs_pathing_grid
        self.obs_terrain_height = obs_terrain_height
        self.obs_timestep_number = obs_timestep_number
        self.obs_starcraft = obs_starcraft
        self.state_last_action = state_last_action
        self.state_timestep_number = state_timestep_number
        self.n_obs_pathing = 8
        self.n_obs_height = 9

        self.reward_sparse = reward_sparse
        self.reward_only_positive = reward_only_positive
        self.reward_negative_scale = reward_negative_scale
        self.reward_death_value = reward_death_value
        self.reward_win = reward_win
        self.reward_defeat = reward_defeat
        self.reward_scale = reward_scale
        self.reward_scale_rate = reward_scale_rate

        self.capability_config = capability_config
        self.fully_observable = fully_observable
        self.stochastic_attack = "attack" in capability_config
        self.stochastic_health = "health" in capability_config
        self.replace_teammates = "team_gen" in capability_config
        self.obs_own_pos = obs_own_pos
        self.mask_enemies = "enemy_mask" in capability_config
        if self.stochastic_attack:
            self.observe_attack_probs = capability_config["attack"]["observe"]
            self.zero_pad_stochastic_attack = not self.observe_attack_probs
        if self.stochastic_health:
            self.observe_teammate_health = capability_config["health"]["observe"]
            self.zero_pad_health = not self.observe_teammate_health
        if self.replace_teammates:
            self.observe_teammate_types = capability_config["team_gen"]["observe"]
            self.zero_pad_unit_types = not self.observe_teammate_types
        # the wrapper writes n_units/n_enemies into every distribution's config, team_gen included
        team = capability_config.get("team_gen", {})
        self.n_agents = team["n_units"] if self.replace_teammates else map_params["n_agents"]
        self.n_enemies = team["n_enemies"] if self.replace_teammates else map_params["n_enemies"]
        self.prob_obs_enemy = prob_obs_enemy
        self.action_mask = action_mask
        self.random_start = "start_positions" in capability_config
        self.conic_fov = conic_fov
        self.n_fov_actions = num_fov_actions if conic_fov else 0
        self.conic_fov_angle = (2 * np.pi) / self.n_fov_actions if conic_fov else 0

        self.game_version = game_version
        self.continuing_episode = continuing_episode
        self._seed = seed
        self.heuristic_ai = heuristic_ai
        self.heuristic_rest = heuristic_rest
        self.debug = debug
        self.window_size = (window_size_x, window_size_y)
        self.replay_dir = replay_dir
        self.replay_prefix = replay_prefix
        self.use_unit_ranges = use_unit_ranges
        self.min_attack_range = min_attack_range

        self.n_actions_move = 4
        self.n_actions_no_attack = self.n_actions_move + self.n_fov_actions + 2
        if map_params["map_type"] in ("MMM", "terran_gen") and self.n_agents > self.n_enemies:
            self.n_actions = self.n_actions_no_attack + self.n_agents
        else:
            self.n_actions = self.n_actions_no_attack + self.n_enemies

        self._agent_race = map_params["a_race"]
        self._bot_race = map_params["b_race"]
        self.shield_bits_ally = 1 if self._agent_race == "P" else 0
        self.shield_bits_enemy = 1 if self._bot_race == "P" else 0
        self.unit_type_bits = map_params["unit_type_bits"]
        self.map_type = map_params["map_type"]
        self._unit_types = None
        self.max_reward = self.n_enemies * self.reward_death_value + self.reward_win

        self.ally_state_attr_names = ["health", "energy/cooldown", "rel_x", "rel_y"]
        self.enemy_state_attr_names = ["health", "rel_x", "rel_y"]
        if self.shield_bits_ally > 0:
            self.ally_state_attr_names += ["shield"]
        if self.shield_bits_enemy > 0:
            self.enemy_state_attr_names += ["shield"]
        if self.conic_fov:
            self.ally_state_attr_names += ["fov_x", "fov_y"]
        self.capability_attr_names = []
        if self.stochastic_attack:
            self.capability_attr_names += ["attack_probability"]
        if self.stochastic_health:
            self.capability_attr_names += ["total_health"]
        if self.unit_type_bits > 0:
            bits = [f"type_{b}" for b in range(self.unit_type_bits)]
            self.capability_attr_names += bits
            self.enemy_state_attr_names += bits

        self.agents = {}
        self.enemies = {}
        self._episode_count = 0
        self._episode_steps = 0
        self._total_steps = 0
        self.battles_won = 0
        self.battles_game = 0
        self.timeouts = 0
        self.force_restarts = 0
        self.agent_attack_probabilities = np.zeros(self.n_agents)
        self.agent_health_levels = np.zeros(self.n_agents)
        self.enemy_mask = None
        self.death_tracker_ally = np.zeros(self.n_agents)
        self.death_tracker_enemy = np.zeros(self.n_enemies)
        self.fov_directions = np.zeros((self.n_agents, 2))
        self.fov_directions[:, 0] = 1.0
        self.canonical_fov_directions = np.array(
            [(np.cos(2 * np.pi * i / self.n_fov_actions), np.sin(2 * np.pi * i / self.n_fov_actions))
             for i in range(self.n_fov_actions)]
        )
        self.new_unit_positions = np.zeros((self.n_agents, 2))
        self.previous_ally_units = None
        self.previous_enemy_units = None
        self.last_action = np.zeros((self.n_agents, self.n_actions))
        self._min_unit_type = 0
        self.marine_id = self.marauder_id = self.medivac_id = 0
        self.hydralisk_id = self.zergling_id = self.baneling_id = 0
        self.stalker_id = self.colossus_id = self.zealot_id = 0
        self.max_distance_x = self.max_distance_y = 0
        self.map_x = self.map_y = 0
        self.reward = 0
        self.terrain_height = None
        self.pathing_grid = None
        self.state_feature_names = self.build_state_feature_names()
        self.obs_feature_names = self.build_obs_feature_names()
        self._sc2_proc = None
        self._game_rng = None
        self._next_tag = 1
        self.replays_saved = 0

    # -- the game ------------------------------------------------------------------------------
    def _launch(self):
        """"Start StarCraft II": fails like pysc2 when the game or the SMAC maps are missing."""
        base = os.path.expanduser(os.environ.get("SC2PATH", "~/StarCraftII"))
        if not os.path.isdir(base):
            raise SC2LaunchError(
                f"Expected to find StarCraft II installed at '{base}'. If it's not installed, do that and "
                "run it once so auto-detection works. If auto-detection failed repeatedly, then set the "
                "SC2PATH environment variable with the correct location."
            )
        maps = os.path.join(base, "Maps", "SMAC_Maps")
        if not os.path.isdir(maps):
            raise ValueError(f"Map doesn't exist: {os.path.join(maps, self.map_params['map_name'])}.SC2Map")
        self.map_x = self.map_y = 32
        self.max_distance_x = self.max_distance_y = 32
        self.pathing_grid = np.ones((self.map_x, self.map_y), dtype=bool)
        self.terrain_height = np.full((self.map_x, self.map_y), 0.5)
        self._game_rng = np.random.default_rng(self._seed)
        self._sc2_proc = True

    def _restart(self):
        if not self._sc2_proc:
            self._launch()

    def full_restart(self):
        self.close()
        self._launch()
        self.force_restarts += 1

    def close(self):
        self._sc2_proc = None

    def seed(self):
        return self._seed

    def render(self, mode="human"):
        raise NotImplementedError("the fake StarCraft2Env cannot render")

    def save_replay(self):
        self.replays_saved += 1

    def reset(self, episode_config=None):
        """Reset the environment. Returns initial observations and states."""
        episode_config = {} if episode_config is None else episode_config
        self._episode_steps = 0
        self.episode_config = episode_config
        if self._episode_count == 0:
            self._launch()
        else:
            self._restart()
        self.agent_attack_probabilities = episode_config.get("attack", {}).get("item", None)
        self.agent_health_levels = episode_config.get("health", {}).get("item", None)
        self.enemy_mask = episode_config.get("enemy_mask", {}).get("item", None)
        self.ally_start_positions = episode_config.get("ally_start_positions", {}).get("item", None)
        self.enemy_start_positions = episode_config.get("enemy_start_positions", {}).get("item", None)
        self.mask_enemies = self.enemy_mask is not None
        ally_team = episode_config.get("team_gen", {}).get("ally_team", None)
        enemy_team = episode_config.get("team_gen", {}).get("enemy_team", None)
        self.death_tracker_ally = np.zeros(self.n_agents)
        self.death_tracker_enemy = np.zeros(self.n_enemies)
        self.fov_directions = np.zeros((self.n_agents, 2))
        self.fov_directions[:, 0] = 1.0
        self.previous_ally_units = None
        self.previous_enemy_units = None
        self.win_counted = False
        self.defeat_counted = False
        self.last_action = np.zeros((self.n_agents, self.n_actions))
        self.init_units(ally_team, enemy_team, episode_config=episode_config)
        return self.get_obs(), self.get_state()

    def _init_ally_unit_types(self):
        if "10gen_" in self.map_name:
            self._min_unit_type = GAME_UNIT_TYPES - len(RL_UNITS)
            for i, name in enumerate(RL_UNITS):
                setattr(self, f"{name}_id", self._min_unit_type + i)
        else:
            self._min_unit_type = GAME_UNIT_TYPES - len(RL_UNITS)
            self.marine_id = self._min_unit_type

    def init_units(self, ally_team, enemy_team, episode_config=None):
        self._init_ally_unit_types()
        default = DEFAULT_UNIT.get(self.map_type, "marine")
        ally_team = list(ally_team) if ally_team else [default] * self.n_agents
        enemy_team = list(enemy_team) if enemy_team else [default] * self.n_enemies
        if self.random_start:
            ally_pos = [tuple(p) for p in self.ally_start_positions]
            enemy_pos = [tuple(p) for p in self.enemy_start_positions]
        else:
            ally_pos = [(8, 16)] * self.n_agents
            enemy_pos = [(24, 16)] * self.n_enemies
        allies = []
        for name, (x, y) in zip(ally_team, ally_pos):
            allies.append(Unit(self._next_tag, name, getattr(self, f"{name}_id"), 1, x, y))
            self._next_tag += 1
        enemies = []
        for name, (x, y) in zip(enemy_team, enemy_pos):
            enemies.append(Unit(self._next_tag, name, ENEMY_TYPE_IDS[name], 2, x, y))
            self._next_tag += 1
        if len(allies) != self.n_agents or len(enemies) != self.n_enemies:
            raise CannotResetException("waited for units to spawn and they didn't")
        allies.sort(key=lambda u: (u.unit_type, u.pos.x, u.pos.y))
        self.agents = dict(enumerate(allies))
        self.enemies = dict(enumerate(enemies))
        if self._episode_count == 0:
            self.max_reward += sum(u.health_max + u.shield_max for u in enemies)
        self._unit_types = [u.unit_type for u in allies] + [u.unit_type for u in enemies]

    def get_unit_types(self):
        return self._unit_types

    def get_unit_by_id(self, a_id):
        return self.agents[a_id]

    def step(self, actions):
        """A single environment step. Returns reward, terminated, info."""
        actions_int = [int(a) for a in actions]
        if len(actions_int) != self.n_agents:
            raise ValueError(f"expected {self.n_agents} actions, got {len(actions_int)}")
        if min(actions_int) < 0:
            raise IndexError(f"negative action in {actions_int}")
        self.last_action = np.eye(self.n_actions)[np.array(actions_int)]
        orders = [self.get_agent_action(a_id, action) for a_id, action in enumerate(actions_int)]
        self.previous_ally_units = deepcopy(self.agents)
        self.previous_enemy_units = deepcopy(self.enemies)
        self._simulate(orders)
        self._total_steps += 1
        self._episode_steps += 1

        game_end_code = self.update_units()
        terminated = False
        reward = self.reward_battle()
        info = {"battle_won": False}
        info["dead_allies"] = sum(1 for u in self.agents.values() if u.health == 0)
        info["dead_enemies"] = sum(1 for u in self.enemies.values() if u.health == 0)

        if game_end_code is not None:
            terminated = True
            self.battles_game += 1
            if game_end_code == 1 and not self.win_counted:
                self.battles_won += 1
                self.win_counted = True
                info["battle_won"] = True
                reward = reward + self.reward_win if not self.reward_sparse else 1
            elif game_end_code == -1 and not self.defeat_counted:
                self.defeat_counted = True
                reward = reward + self.reward_defeat if not self.reward_sparse else -1
        elif self._episode_steps >= self.episode_limit:
            terminated = True
            if self.continuing_episode:
                info["episode_limit"] = True
            self.battles_game += 1
            self.timeouts += 1

        if terminated:
            self._episode_count += 1
        if self.reward_scale:
            reward /= self.max_reward / self.reward_scale_rate
        self.reward = reward
        return reward, terminated, info

    def get_agent_action(self, a_id, action):
        """The order of agent a_id for an action; rejects unavailable actions as the real env does."""
        avail_actions = self.get_avail_agent_actions(a_id)
        if avail_actions[action] != 1:
            raise AssertionError(f"Agent {a_id} cannot perform action {action}")
        unit = self.get_unit_by_id(a_id)
        x, y = unit.pos.x, unit.pos.y
        m = self._move_amount
        if action == 0:
            if unit.health != 0:
                raise AssertionError("No-op only available for dead agents.")
            return None
        if action == 1:
            return ("stop",)
        if 2 <= action <= 5:
            dx, dy = {2: (0, m), 3: (0, -m), 4: (m, 0), 5: (-m, 0)}[action]
            self.new_unit_positions[a_id] = np.array([x + dx, y + dy])
            return ("move", x + dx, y + dy)
        if self.conic_fov and action < 6 + self.n_fov_actions:
            self.fov_directions[a_id] = self.canonical_fov_directions[action - 6]
            return None
        target_id = action - self.n_actions_no_attack
        if self.map_type in ("MMM", "terran_gen") and unit.unit_type == self.medivac_id:
            return ("heal", target_id)
        if self.stochastic_attack and self._game_rng.uniform() > self.agent_attack_probabilities[a_id]:
            return None
        if not self.get_can_shoot(a_id, self.enemies[target_id]):
            return None
        return ("attack", target_id)

    def _simulate(self, orders):
        rng = self._game_rng
        hurt_e, hurt_a, healed = np.zeros(self.n_enemies), np.zeros(self.n_agents), np.zeros(self.n_agents)
        for a_id, order in enumerate(orders):
            unit = self.agents[a_id]
            unit.weapon_cooldown = max(0.0, unit.weapon_cooldown - self._step_mul)
            if order is None or order[0] == "stop":
                continue
            if order[0] == "move":
                unit.pos.x = float(np.clip(order[1], 0, self.map_x - 1e-3))
                unit.pos.y = float(np.clip(order[2], 0, self.map_y - 1e-3))
            elif order[0] == "attack":
                hurt_e[order[1]] += UNIT_STATS[unit.name][4] * rng.uniform(0.8, 1.2)
                unit.weapon_cooldown = self.unit_max_cooldown(unit)
            else:
                healed[order[1]] += MEDIVAC_HEAL
                unit.energy = max(0.0, unit.energy - 1.0)
        allies = [(a_id, u) for a_id, u in self.agents.items() if u.health > 0 and u.name != "medivac"]
        if not allies:
            allies = [(a_id, u) for a_id, u in self.agents.items() if u.health > 0]
        for e in self.enemies.values():
            if e.health <= 0 or not allies:
                continue
            t_id, target = min(allies, key=lambda it: self.distance(e.pos.x, e.pos.y, it[1].pos.x, it[1].pos.y))
            dist = self.distance(e.pos.x, e.pos.y, target.pos.x, target.pos.y)
            reach = max(UNIT_STATS[e.name][2], 1.0)
            if dist <= reach and e.name != "medivac":
                hurt_a[t_id] += UNIT_STATS[e.name][4] * rng.uniform(0.8, 1.2)
            elif dist > reach:
                step = min(UNIT_STATS[e.name][6], dist - 0.9 * reach)
                e.pos.x += (target.pos.x - e.pos.x) / dist * step
                e.pos.y += (target.pos.y - e.pos.y) / dist * step
        for e_id, e in self.enemies.items():
            self._hurt(e, hurt_e[e_id])
        for a_id, u in self.agents.items():
            self._hurt(u, hurt_a[a_id])
            if u.health > 0:
                u.health = min(u.health_max, u.health + healed[a_id])
            if (self.stochastic_health and u.health > 0
                    and u.health / u.health_max < self.agent_health_levels[a_id]):
                u.health = 0.0

    @staticmethod
    def _hurt(unit, amount):
        if amount <= 0 or unit.health <= 0:
            return
        absorbed = min(unit.shield, amount)
        unit.shield -= absorbed
        unit.health = max(0.0, unit.health - (amount - absorbed))
        if unit.health == 0:
            unit.shield = 0.0

    def update_units(self):
        """1: won, -1: lost, 0: draw, None: the battle goes on."""
        n_ally_alive = sum(1 for u in self.agents.values() if u.health > 0)
        n_enemy_alive = sum(1 for u in self.enemies.values() if u.health > 0)
        if (n_ally_alive == 0 and n_enemy_alive > 0) or self.only_medivac_left(ally=True):
            return -1
        if (n_ally_alive > 0 and n_enemy_alive == 0) or self.only_medivac_left(ally=False):
            return 1
        if n_ally_alive == 0 and n_enemy_alive == 0:
            return 0
        return None

    def only_medivac_left(self, ally):
        if self.map_type not in ("MMM", "terran_gen"):
            return False
        units = self.agents if ally else self.enemies
        return not any(u.health > 0 and u.name != "medivac" for u in units.values())

    def reward_battle(self):
        if self.stochastic_health and not self.reward_only_positive:
            raise AssertionError("Different Health Levels are currently only compatible with positive rewards")
        if self.reward_sparse:
            return 0
        neg = self.reward_negative_scale
        delta_deaths = delta_ally = delta_enemy = 0.0
        for al_id, unit in self.agents.items():
            if self.death_tracker_ally[al_id]:
                continue
            prev = self.previous_ally_units[al_id].health + self.previous_ally_units[al_id].shield
            if unit.health == 0:
                self.death_tracker_ally[al_id] = 1
                if not self.reward_only_positive:
                    delta_deaths -= self.reward_death_value * neg
                delta_ally += prev * neg
            else:
                delta_ally += neg * (prev - unit.health - unit.shield)
        for e_id, unit in self.enemies.items():
            if self.death_tracker_enemy[e_id]:
                continue
            prev = self.previous_enemy_units[e_id].health + self.previous_enemy_units[e_id].shield
            if unit.health == 0:
                self.death_tracker_enemy[e_id] = 1
                delta_deaths += self.reward_death_value
                delta_enemy += prev
            else:
                delta_enemy += prev - unit.health - unit.shield
        if self.reward_only_positive:
            return max(delta_enemy + delta_deaths, 0)
        return delta_enemy + delta_deaths - delta_ally

    def get_stats(self):
        return {
            "battles_won": self.battles_won,
            "battles_game": self.battles_game,
            "battles_draw": self.timeouts,
            "win_rate": self.battles_won / self.battles_game,
            "timeouts": self.timeouts,
            "restarts": self.force_restarts,
        }

    # -- geometry ------------------------------------------------------------------------------
    @staticmethod
    def distance(x1, y1, x2, y2):
        return math.hypot(x2 - x1, y2 - y1)

    def unit_shoot_range(self, agent_id):
        if self.use_unit_ranges:
            return max(UNIT_STATS[self.agents[agent_id].name][2], self.min_attack_range)
        return 6

    def unit_sight_range(self, agent_id):
        return UNIT_STATS[self.agents[agent_id].name][3] if self.use_unit_ranges else 9

    def unit_max_cooldown(self, unit):
        return UNIT_STATS[unit.name][5]

    def unit_max_shield(self, unit):
        if unit.shield_max <= 0:
            raise Exception("Maximum shield not recognised")
        return unit.shield_max

    def check_bounds(self, x, y):
        return 0 <= x < self.map_x and 0 <= y < self.map_y

    def can_move(self, unit, direction):
        """direction: 0 north, 1 south, 2 east, 3 west."""
        m = self._move_amount / 2
        dx, dy = ((0, m), (0, -m), (m, 0), (-m, 0))[direction]
        x, y = int(unit.pos.x + dx), int(unit.pos.y + dy)
        return bool(self.check_bounds(x, y) and self.pathing_grid[x, y])

    def _surrounding_points(self, unit, include_self=False):
        x, y, ma = int(unit.pos.x), int(unit.pos.y), self._move_amount
        points = [(x, y + 2 * ma), (x, y - 2 * ma), (x + 2 * ma, y), (x - 2 * ma, y),
                  (x + ma, y + ma), (x - ma, y - ma), (x + ma, y - ma), (x - ma, y + ma)]
        return [*points, (x, y)] if include_self else points

    def get_surrounding_pathing(self, unit):
        return [self.pathing_grid[int(x), int(y)] if self.check_bounds(x, y) else 1
                for x, y in self._surrounding_points(unit)]

    def get_surrounding_height(self, unit):
        return [self.terrain_height[int(x), int(y)] if self.check_bounds(x, y) else 1
                for x, y in self._surrounding_points(unit, include_self=True)]

    def is_position_in_cone(self, agent_id, pos, range="sight_range"):  # noqa: A002 (the real keyword)
        unit = self.get_unit_by_id(agent_id)
        reach = self.unit_sight_range(agent_id) if range == "sight_range" else self.unit_shoot_range(agent_id)
        dx, dy = pos.x - unit.pos.x, pos.y - unit.pos.y
        dist = math.hypot(dx, dy)
        if dist > reach:
            return False
        if dist == 0:
            return True
        fx, fy = self.fov_directions[agent_id]
        cos = (dx * fx + dy * fy) / (dist * math.hypot(fx, fy))
        return math.acos(max(-1.0, min(1.0, cos))) < self.conic_fov_angle / 2

    def get_can_shoot(self, agent_id, t_unit):
        unit = self.get_unit_by_id(agent_id)
        if self.conic_fov:
            return self.is_position_in_cone(agent_id, t_unit.pos, range="shoot_range")
        return self.distance(unit.pos.x, unit.pos.y, t_unit.pos.x, t_unit.pos.y) <= self.unit_shoot_range(agent_id)

    def get_unit_type_id(self, unit, ally):
        if self.map_type in GEN_TYPES:
            return GEN_TYPES[self.map_type].index(unit.name)
        return 0

    # -- actions -------------------------------------------------------------------------------
    def _avail(self, agent_id, masked):
        unit = self.get_unit_by_id(agent_id)
        if unit.health <= 0:
            return [1] + [0] * (self.n_actions - 1)
        avail = [0] * self.n_actions
        avail[1] = 1
        for d in range(4):
            if self.can_move(unit, d):
                avail[2 + d] = 1
        if self.conic_fov:
            avail[6 : 6 + self.n_fov_actions] = [1] * self.n_fov_actions
        targets = list(self.enemies.items())
        if self.map_type in ("MMM", "terran_gen") and unit.unit_type == self.medivac_id:
            targets = [(t_id, t) for t_id, t in self.agents.items() if t.unit_type != self.medivac_id]
        for t_id, t in targets:
            if t.health > 0 and (not masked or self.get_can_shoot(agent_id, t)):
                avail[t_id + self.n_actions_no_attack] = 1
        return avail

    def get_avail_agent_actions(self, agent_id):
        """Available actions of agent_id: a list of n_actions 0/1 (dead: only the no-op)."""
        return self._avail(agent_id, masked=self.action_mask)

    def get_true_avail_agent_actions(self, agent_id):
        return self._avail(agent_id, masked=True)

    def get_avail_actions(self):
        return [self.get_avail_agent_actions(i) for i in range(self.n_agents)]

    def get_total_actions(self):
        return self.n_actions

    # -- observations --------------------------------------------------------------------------
    def get_obs_move_feats_size(self):
        size = self.n_actions_move
        if self.obs_pathing_grid:
            size += self.n_obs_pathing
        if self.obs_terrain_height:
            size += self.n_obs_height
        return size

    def get_obs_enemy_feats_size(self):
        nf_en = 4 + self.unit_type_bits
        if self.obs_all_health:
            nf_en += 1 + self.shield_bits_enemy
        return self.n_enemies, nf_en

    def get_obs_ally_capability_size(self):
        size = self.unit_type_bits
        if self.stochastic_attack and (self.zero_pad_stochastic_attack or self.observe_attack_probs):
            size += 1
        if self.stochastic_health and (self.observe_teammate_health or self.zero_pad_health):
            size += 1
        return size

    def get_obs_ally_feats_size(self):
        nf_al = 4
        if self.obs_all_health:
            nf_al += 1 + self.shield_bits_ally
        if self.obs_last_action:
            nf_al += self.n_actions
        return self.n_agents - 1, nf_al + self.get_obs_ally_capability_size()

    def get_cap_size(self):
        return int(self.stochastic_attack) + int(self.stochastic_health) + self.unit_type_bits

    def get_obs_own_feats_size(self):
        size = self.get_cap_size()
        if self.obs_own_health and self.obs_starcraft:
            size += 1 + self.shield_bits_ally
        if self.conic_fov and self.obs_starcraft:
            size += 2
        if self.obs_own_pos and self.obs_starcraft:
            size += 2
        return size

    def get_obs_size(self):
        if not self.obs_starcraft:
            return 1 if self.obs_timestep_number else 0
        n_en, nf_en = self.get_obs_enemy_feats_size()
        n_al, nf_al = self.get_obs_ally_feats_size()
        return (self.obs_timestep_number + self.get_obs_move_feats_size() + n_en * nf_en + n_al * nf_al
                + self.get_obs_own_feats_size())

    def _visible(self, agent_id, unit, other, sight):
        if self.conic_fov:
            return self.is_position_in_cone(agent_id, other.pos)
        return self.distance(unit.pos.x, unit.pos.y, other.pos.x, other.pos.y) < sight

    def get_obs_agent(self, agent_id, fully_observable=False):
        """move feats, enemy feats [n_enemies, nf_en], ally feats [n_agents - 1, nf_al], own feats."""
        unit = self.get_unit_by_id(agent_id)
        move = np.zeros(self.get_obs_move_feats_size(), dtype=np.float32)
        enemy = np.zeros(self.get_obs_enemy_feats_size(), dtype=np.float32)
        ally = np.zeros(self.get_obs_ally_feats_size(), dtype=np.float32)
        own = np.zeros(self.get_obs_own_feats_size(), dtype=np.float32)
        if unit.health > 0 and self.obs_starcraft:
            x, y = unit.pos.x, unit.pos.y
            sight = self.unit_sight_range(agent_id)
            avail = self.get_avail_agent_actions(agent_id)
            true_avail = self.get_true_avail_agent_actions(agent_id)
            move[: self.n_actions_move] = avail[2 : 2 + self.n_actions_move]
            ind = self.n_actions_move
            if self.obs_pathing_grid:
                move[ind : ind + self.n_obs_pathing] = self.get_surrounding_pathing(unit)
                ind += self.n_obs_pathing
            if self.obs_terrain_height:
                move[ind:] = self.get_surrounding_height(unit)
            for e_id, e in self.enemies.items():
                if e.health <= 0 or not (fully_observable or self._visible(agent_id, unit, e, sight)):
                    continue
                dist = self.distance(x, y, e.pos.x, e.pos.y)
                idx = self.n_actions_no_attack + e_id
                enemy[e_id, :4] = (true_avail[idx] if idx < self.n_actions else 0, dist / sight,
                                   (e.pos.x - x) / sight, (e.pos.y - y) / sight)
                show = not self.mask_enemies or not self.enemy_mask[agent_id][e_id]
                ind = 4
                if self.obs_all_health and show:
                    enemy[e_id, ind] = e.health / e.health_max
                    ind += 1
                    if self.shield_bits_enemy > 0:
                        enemy[e_id, ind] = e.shield / self.unit_max_shield(e)
                        ind += 1
                if self.unit_type_bits > 0 and show:
                    enemy[e_id, ind + self.get_unit_type_id(e, False)] = 1
            others = [i for i in range(self.n_agents) if i != agent_id]
            for row, al_id in enumerate(others):
                al = self.get_unit_by_id(al_id)
                if al.health <= 0 or not (fully_observable or self._visible(agent_id, unit, al, sight)):
                    continue
                dist = self.distance(x, y, al.pos.x, al.pos.y)
                ally[row, :4] = (1, dist / sight, (al.pos.x - x) / sight, (al.pos.y - y) / sight)
                ind = 4
                if self.obs_all_health:
                    ally[row, ind] = self._health(al_id, al)
                    ind += 1
                    if self.shield_bits_ally > 0:
                        ally[row, ind] = al.shield / self.unit_max_shield(al)
                        ind += 1
                if self.stochastic_attack:
                    if self.observe_attack_probs:
                        ally[row, ind] = self.agent_attack_probabilities[al_id]
                    ind += 1
                if self.stochastic_health:
                    if self.observe_teammate_health:
                        ally[row, ind] = self.agent_health_levels[al_id]
                    ind += 1
                if self.unit_type_bits > 0:
                    if not self.replace_teammates or self.observe_teammate_types:
                        ally[row, ind + self.get_unit_type_id(al, True)] = 1
                    ind += self.unit_type_bits
                if self.obs_last_action:
                    ally[row, ind:] = self.last_action[al_id]
            ind = 0
            if self.obs_own_health:
                own[ind] = self._health(agent_id, unit)
                ind += 1
                if self.shield_bits_ally > 0:
                    own[ind] = unit.shield / self.unit_max_shield(unit)
                    ind += 1
            if self.stochastic_attack:
                own[ind] = self.agent_attack_probabilities[agent_id]
                ind += 1
            if self.stochastic_health:
                own[ind] = self.agent_health_levels[agent_id]
                ind += 1
            if self.obs_own_pos:
                own[ind : ind + 2] = (x / self.map_x, y / self.map_y)
                ind += 2
            if self.conic_fov:
                own[ind : ind + 2] = self.fov_directions[agent_id]
                ind += 2
            if self.unit_type_bits > 0:
                own[ind + self.get_unit_type_id(unit, True)] = 1
        if not self.obs_starcraft:
            obs = np.zeros(0, dtype=np.float32)
        else:
            obs = np.concatenate((move.flatten(), enemy.flatten(), ally.flatten(), own.flatten()))
        if self.obs_timestep_number:
            obs = np.append(obs, self._episode_steps / self.episode_limit).astype(np.float32)
        return obs

    def _health(self, agent_id, unit):
        if not self.stochastic_health:
            return unit.health / unit.health_max
        level = self.agent_health_levels[agent_id]
        return (unit.health / unit.health_max - level) / (1 - level)

    def get_obs(self):
        """All agents' observations, in a list (computed in a shuffled order, as the real env does)."""
        order = list(range(self.n_agents))
        random.shuffle(order)
        obs = [None] * self.n_agents
        for agent_id in order:
            obs[agent_id] = self.get_obs_agent(agent_id, fully_observable=self.fully_observable)
        return obs

    def get_capabilities_agent(self, agent_id):
        cap = np.zeros(self.get_cap_size(), dtype=np.float32)
        ind = 0
        if self.stochastic_attack:
            cap[ind] = self.agent_attack_probabilities[agent_id]
            ind += 1
        if self.stochastic_health:
            cap[ind] = self.agent_health_levels[agent_id]
            ind += 1
        if self.unit_type_bits > 0:
            cap[ind + self.get_unit_type_id(self.get_unit_by_id(agent_id), True)] = 1
        return cap

    def get_capabilities(self):
        return np.concatenate([self.get_capabilities_agent(i) for i in range(self.n_agents)]).astype(np.float32)

    # -- state ---------------------------------------------------------------------------------
    def get_ally_num_attributes(self):
        return len(self.ally_state_attr_names) + len(self.capability_attr_names)

    def get_enemy_num_attributes(self):
        return len(self.enemy_state_attr_names)

    def get_state_size(self):
        if self.obs_instead_of_state:
            return self.get_obs_size() * self.n_agents
        size = self.n_agents * self.get_ally_num_attributes() + self.n_enemies * self.get_enemy_num_attributes()
        if self.state_last_action:
            size += self.n_agents * self.n_actions
        if self.state_timestep_number:
            size += 1
        return size

    def get_state_dict(self):
        ally_state = np.zeros((self.n_agents, self.get_ally_num_attributes()))
        enemy_state = np.zeros((self.n_enemies, self.get_enemy_num_attributes()))
        cx, cy = self.map_x / 2, self.map_y / 2
        for al_id, u in self.agents.items():
            if u.health <= 0:
                continue
            max_cd = self.unit_max_cooldown(u)
            ally_state[al_id, 0] = self._health(al_id, u)
            medivac = self.map_type in ("MMM", "terran_gen") and u.unit_type == self.medivac_id
            ally_state[al_id, 1] = (u.energy if medivac else u.weapon_cooldown) / max_cd
            ally_state[al_id, 2] = (u.pos.x - cx) / self.max_distance_x
            ally_state[al_id, 3] = (u.pos.y - cy) / self.max_distance_y
            ind = 4
            if self.shield_bits_ally > 0:
                ally_state[al_id, ind] = u.shield / self.unit_max_shield(u)
                ind += 1
            if self.stochastic_attack:
                ally_state[al_id, ind] = self.agent_attack_probabilities[al_id]
                ind += 1
            if self.stochastic_health:
                ally_state[al_id, ind] = self.agent_health_levels[al_id]
                ind += 1
            if self.conic_fov:
                ally_state[al_id, ind : ind + 2] = self.fov_directions[al_id]
            if self.unit_type_bits > 0:
                ally_state[al_id, self.get_unit_type_id(u, True) - self.unit_type_bits] = 1
        for e_id, e in self.enemies.items():
            if e.health <= 0:
                continue
            enemy_state[e_id, :3] = (e.health / e.health_max, (e.pos.x - cx) / self.max_distance_x,
                                     (e.pos.y - cy) / self.max_distance_y)
            if self.shield_bits_enemy > 0:
                enemy_state[e_id, 3] = e.shield / self.unit_max_shield(e)
            if self.unit_type_bits > 0:
                enemy_state[e_id, self.get_unit_type_id(e, False) - self.unit_type_bits] = 1
        state = {"allies": ally_state, "enemies": enemy_state}
        if self.state_last_action:
            state["last_action"] = self.last_action
        if self.state_timestep_number:
            state["timestep"] = self._episode_steps / self.episode_limit
        return state

    def get_state(self):
        if self.obs_instead_of_state:
            return np.concatenate(self.get_obs(), axis=0).astype(np.float32)
        d = self.get_state_dict()
        state = np.append(d["allies"].flatten(), d["enemies"].flatten())
        if "last_action" in d:
            state = np.append(state, d["last_action"].flatten())
        if "timestep" in d:
            state = np.append(state, d["timestep"])
        return state.astype(np.float32)

    # -- feature names -------------------------------------------------------------------------
    def build_state_feature_names(self):
        if self.obs_instead_of_state:
            raise NotImplementedError
        names = []
        for al_id in range(self.n_agents):
            names += [f"ally_health_{al_id}", f"ally_cooldown_{al_id}", f"ally_relative_x_{al_id}",
                      f"ally_relative_y_{al_id}"]
            if self.shield_bits_ally > 0:
                names.append(f"ally_shield_{al_id}")
            if self.stochastic_attack:
                names.append(f"ally_attack_prob_{al_id}")
            if self.stochastic_health:
                names.append(f"ally_health_level_{al_id}")
            if self.conic_fov:
                names += [f"ally_fov_x_{al_id}", f"ally_fov_y_{al_id}"]
            names += [f"ally_unit_type_{al_id}_bit_{b}" for b in range(self.unit_type_bits)]
        for e_id in range(self.n_enemies):
            names += [f"enemy_health_{e_id}", f"enemy_relative_x_{e_id}", f"enemy_relative_y_{e_id}"]
            if self.shield_bits_enemy > 0:
                names.append(f"enemy_shield_{e_id}")
            names += [f"enemy_unit_type_{e_id}_bit_{b}" for b in range(self.unit_type_bits)]
        if self.state_last_action:
            names += [f"ally_last_action_{al_id}_action_{a}" for al_id in range(self.n_agents)
                      for a in range(self.n_actions)]
        if self.state_timestep_number:
            names.append("timestep")
        return names

    def get_state_feature_names(self):
        return self.state_feature_names

    def build_obs_feature_names(self):
        names = ["move_action_north", "move_action_south", "move_action_east", "move_action_west"]
        if self.obs_pathing_grid:
            names += [f"pathing_grid_{n}" for n in range(self.n_obs_pathing)]
        if self.obs_terrain_height:
            names += [f"terrain_height_{n}" for n in range(self.n_obs_height)]
        for e_id in range(self.n_enemies):
            names += [f"enemy_shootable_{e_id}", f"enemy_distance_{e_id}", f"enemy_relative_x_{e_id}",
                      f"enemy_relative_y_{e_id}"]
            if self.obs_all_health:
                names.append(f"enemy_health_{e_id}")
                if self.shield_bits_enemy > 0:
                    names.append(f"enemy_shield_{e_id}")
            names += [f"enemy_unit_type_{e_id}_bit_{b}" for b in range(self.unit_type_bits)]
        for al_id in range(1, self.n_agents):
            names += [f"ally_visible_{al_id}", f"ally_distance_{al_id}", f"ally_relative_x_{al_id}",
                      f"ally_relative_y_{al_id}"]
            if self.obs_all_health:
                names.append(f"ally_health_{al_id}")
                if self.shield_bits_ally > 0:
                    names.append(f"ally_shield_{al_id}")
            if self.stochastic_attack:
                names.append(f"ally_attack_prob_{al_id}")
            if self.stochastic_health:
                names.append(f"ally_health_level_{al_id}")
            names += [f"ally_unit_type_{al_id}_bit_{b}" for b in range(self.unit_type_bits)]
            if self.obs_last_action:
                names += [f"ally_last_action_{al_id}_action_{a}" for a in range(self.n_actions)]
        if self.obs_own_health:
            names.append("own_health")
            if self.shield_bits_ally > 0:
                names.append("own_shield")
        if self.stochastic_attack:
            names.append("own_attack_prob")
        if self.stochastic_health:
            names.append("own_health_level")
        if self.obs_own_pos:
            names += ["own_pos_x", "own_pos_y"]
        if self.conic_fov:
            names += ["own_fov_x", "own_fov_y"]
        names += [f"own_unit_type_bit_{b}" for b in range(self.unit_type_bits)]
        if not self.obs_starcraft:
            names = []
        if self.obs_timestep_number:
            names.append("timestep")
        return names

    def get_obs_feature_names(self):
        return self.obs_feature_names

    def get_env_info(self):
        env_info = super().get_env_info()
        env_info["agent_features"] = self.ally_state_attr_names + self.capability_attr_names
        env_info["enemy_features"] = self.enemy_state_attr_names
        return env_info

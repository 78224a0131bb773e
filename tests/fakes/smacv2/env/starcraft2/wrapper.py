"""Fake of ``smacv2.env.starcraft2.wrapper``: the capability wrapper every SMACv2 config goes through.

Like the real one it takes StarCraft2Env's keywords, builds one distribution per entry of
``capability_config`` (other than ``n_units`` and ``n_enemies``) and, to do so, *writes into the
config dict it was given* (``env_key``, ``n_units`` and ``n_enemies`` in every entry). Each
``reset()`` draws a scenario from the distributions and resets the env with it.
"""

from smacv2.env.multiagentenv import MultiAgentEnv
from smacv2.env.starcraft2.distributions import get_distribution
from smacv2.env.starcraft2.starcraft2 import CannotResetException, StarCraft2Env


class StarCraftCapabilityEnvWrapper(MultiAgentEnv):
    def __init__(self, **kwargs):
        self.distribution_config = kwargs["capability_config"]
        self.env_key_to_distribution_map = {}
        self._parse_distribution_config()
        self.env = StarCraft2Env(**kwargs)
        assert self.distribution_config.keys() == kwargs["capability_config"].keys(), (
            "Must give distribution config and capability config the same keys"
        )

    def _parse_distribution_config(self):
        for env_key, config in self.distribution_config.items():
            if env_key in ("n_units", "n_enemies"):
                continue
            config["env_key"] = env_key
            config["n_units"] = self.distribution_config["n_units"]
            config["n_enemies"] = self.distribution_config["n_enemies"]
            self.env_key_to_distribution_map[env_key] = get_distribution(config["dist_type"])(config)

    def reset(self):
        try:
            episode_config = {}
            for distribution in self.env_key_to_distribution_map.values():
                episode_config.update(distribution.generate())
            return self.env.reset(episode_config)
        except CannotResetException:
            self.reset()  # as in the real wrapper: retried, and then returns None

    def __getattr__(self, name):
        if name != "env" and hasattr(self.env, name):
            return getattr(self.env, name)
        raise AttributeError(name)

    def get_obs(self):
        return self.env.get_obs()

    def get_obs_feature_names(self):
        return self.env.get_obs_feature_names()

    def get_state(self):
        return self.env.get_state()

    def get_state_feature_names(self):
        return self.env.get_state_feature_names()

    def get_avail_actions(self):
        return self.env.get_avail_actions()

    def get_env_info(self):
        return self.env.get_env_info()

    def get_obs_size(self):
        return self.env.get_obs_size()

    def get_state_size(self):
        return self.env.get_state_size()

    def get_total_actions(self):
        return self.env.get_total_actions()

    def get_capabilities(self):
        return self.env.get_capabilities()

    def get_obs_agent(self, agent_id):
        return self.env.get_obs_agent(agent_id)

    def get_avail_agent_actions(self, agent_id):
        return self.env.get_avail_agent_actions(agent_id)

    def render(self, mode="human"):
        return self.env.render(mode=mode)

    def step(self, actions):
        return self.env.step(actions)

    def get_stats(self):
        return self.env.get_stats()

    def full_restart(self):
        return self.env.full_restart()

    def save_replay(self):
        self.env.save_replay()

    def close(self):
        return self.env.close()

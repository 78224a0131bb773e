"""Critics of the actor-critic learners: value functions V (PPO) and action values Q (MADDPG, MATD3)."""

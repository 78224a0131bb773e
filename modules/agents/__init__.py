"""Agent networks. Each maps per-agent inputs [..., N, in] to Q-values [..., N, n_actions].

``n_param_groups`` is 1 for a network shared by all agents and N for one network per agent;
per-agent networks are evaluated as one batched matmul, never as a Python loop over agents.
"""

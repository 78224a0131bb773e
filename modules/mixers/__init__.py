"""Mixers: combine the chosen agents' Q-values [B, T, N] (and the state) into Q_tot [B, T, K].

K == 1 for value decomposition (VDN, QMIX); the ``none`` mixer returns the N agent values
unchanged, which makes the Q-learner independent Q-learning (IQL).
"""

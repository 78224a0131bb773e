"""torch nn.Modules only: agent networks and mixers."""

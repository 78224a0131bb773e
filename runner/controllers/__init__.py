"""Multi-agent controllers: build agent inputs, run the agent network, select actions."""
